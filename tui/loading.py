"""Reading what the main screen shows: SQLite and git, off the event loop.

Every method of :class:`Loader` blocks; the screen calls them from its thread workers
(``@work(thread=True, exit_on_error=False)``) and they hand their results back as
messages named in the past tense. Messages are plain classes, not dataclasses, which
compile their methods at import (see backend/models.py).

Generations: every loading message carries the generation it was started in. A new
environment or a reload starts a new one (:meth:`Loader.new_generation`); results of
an older one (a worker that was still running, a page that arrived late) are dropped
(:meth:`Loader.stale`), so stale data never overwrites newer data.

Change detection: twice a second :meth:`Loader.poll` asks SQLite's ``data_version``
whether another connection has written (cheap), and only then which events were
written since the last one seen. They reach the screen as one :class:`EventsArrived`
of (kind, environment) pairs; what each kind means to the screen is decided there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from textual.message import Message

from backend import AndonError
from backend.history import Range
from backend.models import DEGRADED, DOWN, HEALTHY, RUNNING, UNKNOWN, Deploy, HealthSample, to_iso
from backend.world import World
from tui.first_screen import PAGE, load_first_screen
from tui.format import moment

if TYPE_CHECKING:
    from backend.config import HealthCheck
    from backend.store import Changes, Streamed

HEALTH_WINDOW = 60  # samples per check shown (and read): the sparkline and the availability
VERIFY_EVENTS = 200  # the newest events looked through for a verification running


class EnvironmentsLoaded(Message):
    def __init__(self, names: list[str], env: str | None, generation: int = 0) -> None:
        super().__init__()
        self.names = names
        self.env = env  # the environment whose deploys come next (None: only the names)
        self.generation = generation


class DeploysLoaded(Message):
    def __init__(self, env: str, deploys: list[Deploy], total: int, live: Deploy | None, *,
                 append: bool = False, generation: int = 0) -> None:
        super().__init__()
        self.env = env
        self.deploys = deploys
        self.total = total
        self.live = live
        self.append = append
        self.generation = generation


class RangesLoaded(Message):
    def __init__(self, env: str, ranges: dict[tuple[str | None, str], Range], generation: int = 0) -> None:
        super().__init__()
        self.env = env
        self.ranges = ranges
        self.generation = generation


class PendingLoaded(Message):
    def __init__(self, env: str, pending: Range, branch: str | None, generation: int = 0) -> None:
        super().__init__()
        self.env = env
        self.pending = pending
        self.branch = branch
        self.generation = generation


class OutputLoaded(Message):
    """A deploy as read with its output; while it runs, ``streamed`` holds its output so far from
    the position asked for (backend.store.output), else None."""

    def __init__(self, deploy: Deploy, streamed: Streamed | None = None) -> None:
        super().__init__()
        self.deploy = deploy
        self.streamed = streamed


class LoadFailed(Message):
    def __init__(self, reason: str, generation: int = 0) -> None:
        super().__init__()
        self.reason = reason
        self.generation = generation


class EventsArrived(Message):
    """Another program wrote events to the log: ``changes.kinds`` holds each
    (kind, environment) once, e.g. ("deploy.finished", "staging").

    Posted to the screen, which reloads its deploys for the ``deploy.*`` kinds that
    concern them. Other kinds ("line.stopped", "health.changed", ...) are for the
    widgets and screens that will show them: they handle this message too.
    """

    def __init__(self, changes: Changes) -> None:
        super().__init__()
        self.changes = changes


class CheckHealth:
    """One check of the shown environment, as the health panel draws it.

    ``samples``: the newest HEALTH_WINDOW, oldest first. ``drift``: how the newest
    reported version stands to the live SHA (backend.health.version_drift: "match",
    "behind", "drift", "unknown"; None when there is nothing to compare).
    """

    __slots__ = ("name", "samples", "drift")

    def __init__(self, name: str, samples: list[HealthSample], drift: str | None = None) -> None:
        self.name = name
        self.samples = samples
        self.drift = drift


class HealthView:
    """The shown environment's health: its checks (the configured ones in their order,
    then any others found in the log), its state (healthy, degraded, down, unknown) and
    since when, the live SHA they are compared with, or why the log could not be read."""

    __slots__ = ("env", "checks", "state", "since", "live_sha", "error")

    def __init__(self, env: str, checks: list[CheckHealth], state: str, since: str | None,
                 live_sha: str | None, error: str = "") -> None:
        self.env = env
        self.checks = checks
        self.state = state
        self.since = since
        self.live_sha = live_sha
        self.error = error


class HealthLoaded(Message):
    """Health as just read: the shown environment's (``view``), every environment's state
    for the environment bar (``states``: only those with checks or a recorded state; None
    when the log could not be read), and ``news``: one line for each environment whose
    recorded state changed since the last read ("production is down: api timed out after
    2s"), with its new state. ``seq`` orders the reads: a read that ends after a newer one
    (the worker of an earlier one still running) brings only its news."""

    def __init__(self, view: HealthView | None, states: dict[str, str] | None,
                 news: list[tuple[str, str, str]], seq: int = 0) -> None:
        super().__init__()
        self.view = view
        self.states = states
        self.news = news
        self.seq = seq


class VerificationLoaded(Message):
    """Whether a deploy to ``env`` is being verified now: its id, when the watching began
    and until when (``deploy_id`` None: no verification running)."""

    def __init__(self, env: str, deploy_id: int | None = None, started: str | None = None,
                 until: str | None = None) -> None:
        super().__init__()
        self.env = env
        self.deploy_id = deploy_id
        self.started = started
        self.until = until


class Loader:
    """The screen's reading: the blocking half of its workers, and the marks they share.

    ``post`` hands a message to the screen (``Screen.post_message``: thread-safe).
    """

    def __init__(self, world: World, post: Callable[[Message], object]) -> None:
        self.world = world
        self.post = post
        self.generation = 0
        self.version: int | None = None  # SQLite's data_version when last looked
        self.last_event: int | None = None  # the newest event id seen; None until the first read
        self._health_seen: dict[str, tuple[str, str]] | None = None  # recorded states at the last read
        self._health_lock = threading.Lock()
        self._health_seq = 0  # reads of health started
        self._drift: dict[tuple[str, str], str | None] = {}  # (version, live sha) -> drift: git asked once

    # -- generations -------------------------------------------------------------------

    def new_generation(self) -> int:
        self.generation += 1
        return self.generation

    def stale(self, message: EnvironmentsLoaded | DeploysLoaded | RangesLoaded | PendingLoaded) -> bool:
        return message.generation != self.generation

    def seen(self, version: int | None, last_event: int | None) -> None:
        """Where change detection starts: the marks read before the first screen's data."""
        if self.last_event is None:
            self.version, self.last_event = version, last_event

    # -- reading (each in a thread worker) ----------------------------------------------

    def first_screen(self, select: str | None, limit: int, generation: int) -> None:
        """Environments, then the first ``limit`` deploys of ``select`` (or the first one)."""
        try:
            first = load_first_screen(self.world, select, limit=limit)
        except AndonError as error:
            self.post(LoadFailed(str(error), generation))
            return
        self.seen(first.version, first.last_event)
        self.post(EnvironmentsLoaded(first.names, first.env, generation))
        if first.env is not None:
            self.post(DeploysLoaded(first.env, first.deploys, first.total, first.live, generation=generation))
            self.details(first.env, first.deploys, first.live, generation, pending=True)

    def environments(self, generation: int) -> None:
        """Only the names (a deploy to an environment not shown yet)."""
        try:
            names = self.world.environments()
        except AndonError as error:
            self.post(LoadFailed(str(error), generation))
            return
        self.post(EnvironmentsLoaded(names, None, generation))

    def deploys(self, env: str, offset: int, generation: int, *, limit: int = PAGE) -> None:
        """``limit`` deploys of ``env`` from ``offset`` (0: the list anew; else older ones to append)."""
        try:
            deploys = self.world.log.deploys(env, limit=limit, offset=offset)
            total = self.world.log.count(env)
            live = self.world.log.live(env)
        except AndonError as error:
            self.post(LoadFailed(str(error), generation))
            return
        self.post(DeploysLoaded(env, deploys, total, live, append=offset > 0, generation=generation))
        self.details(env, deploys, live, generation, pending=offset == 0)

    def details(self, env: str, deploys: list[Deploy], live: Deploy | None, generation: int,
                *, pending: bool) -> None:
        """git's part: the deploys' commits, then (``pending``) the commits not live yet."""
        # Commits second: the deploys are on screen before git is asked anything.
        found = self.world.history.ranges([(d.prev_sha, d.sha) for d in deploys])
        self.post(RangesLoaded(env, found, generation))
        if pending:
            branch = self.world.history.branch(self.world.config.branch)
            waiting = self.world.history.pending(branch, live.sha if live else None, self.world.config.branch)
            self.post(PendingLoaded(env, waiting, branch, generation))

    def output(self, deploy_id: int, since: int = 0) -> None:
        """The deploy with its output: the final one, or while it runs what it streamed from ``since``."""
        try:
            deploy = self.world.log.get(deploy_id)
            streamed = self.world.log.streamed(deploy_id, since) if deploy.status == RUNNING else None
            self.post(OutputLoaded(deploy, streamed))
        except AndonError as error:
            self.post(LoadFailed(str(error)))

    def health(self, env: str | None, live_sha: str | None) -> None:
        """Post :class:`HealthLoaded`: the newest samples of ``env``'s checks and every
        environment's state (a few indexed reads; the deploys are not touched)."""
        config = self.world.config
        with self._health_lock:
            self._health_seq += 1
            seq = self._health_seq
        try:
            recorded = self.world.log.health_states()
            states: dict[str, str] = {name: state for name, (state, _) in recorded.items()}
            latest: dict[str, dict[str, HealthSample]] = {}
            for name, environment in config.environments.items():
                if environment.health and name != env:
                    newest = self.world.log.health_samples(name, per_check=1)
                    latest[name] = {check: samples[-1] for check, samples in newest.items() if samples}
                    states[name] = self._state(environment.health, latest[name])
            view = None
            if env is not None:
                view = self._view(env, live_sha, recorded.get(env))
                if view.checks or config.environment(env).health:
                    states[env] = view.state
                latest[env] = {check.name: check.samples[-1] for check in view.checks if check.samples}
        except AndonError as error:
            view = None if env is None else HealthView(env, [], UNKNOWN, None, live_sha, str(error))
            self.post(HealthLoaded(view, None, [], seq))
            return
        self.post(HealthLoaded(view, states, self._news(recorded, latest), seq))

    def verification(self, env: str) -> None:
        """Post :class:`VerificationLoaded`: is ``andon deploy`` watching a deploy to ``env`` now?

        Read when the screen opens an environment and when a ``deploy.verifying`` or
        ``deploy.verified`` event arrives: the newest deploy event of ``env`` says.
        """
        import json

        try:
            events = self.world.log.events(limit=VERIFY_EVENTS)
        except AndonError:
            return
        for event in events:  # newest first
            if event.env != env or not event.kind.startswith("deploy."):
                continue
            if event.kind == "deploy.verifying":
                try:
                    detail = json.loads(event.detail)
                except ValueError:
                    detail = {}
                until, seconds = detail.get("until"), detail.get("seconds")
                started = event.at
                if isinstance(until, str) and isinstance(seconds, int | float) and (ends := moment(until)):
                    # The window as andon deploy counts it: its last `seconds` before `until`.
                    started = to_iso(ends - timedelta(seconds=min(float(seconds), 86400.0)))
                if isinstance(until, str):
                    self.post(VerificationLoaded(env, event.deploy_id, started, until))
                    return
            break
        self.post(VerificationLoaded(env))

    def _view(self, env: str, live_sha: str | None, recorded: tuple[str, str] | None) -> HealthView:
        checks = self.world.config.environment(env).health
        samples = self.world.log.health_samples(env, per_check=HEALTH_WINDOW)
        names = [check.name for check in checks] + [name for name in samples if name not in {c.name for c in checks}]
        found = [CheckHealth(name, samples.get(name, [])) for name in names]
        for check in found:
            check.drift = self._drift_of(check.samples, live_sha)
        newest = {check.name: check.samples[-1] for check in found if check.samples}
        state = self._state(checks, newest) if checks else (recorded[0] if recorded else UNKNOWN)
        since = recorded[1] if recorded and recorded[0] == state else None
        return HealthView(env, found, state, since, live_sha)

    def _state(self, checks: tuple[HealthCheck, ...], latest: dict[str, HealthSample]) -> str:
        """The environment's state now: from its checks' newest samples (old ones are unknown)."""
        from backend.health import environment_state

        return environment_state(latest, checks, self.world.clock())

    def _drift_of(self, samples: list[HealthSample], live_sha: str | None) -> str | None:
        """How the newest reported version stands to the live SHA (git asked once per pair)."""
        version = samples[-1].version if samples else None
        if version is None or live_sha is None:
            return None
        key = (version, live_sha)
        if key not in self._drift:
            from backend.health import version_drift

            if len(self._drift) > 256:
                self._drift.clear()
            history = self.world.history
            self._drift[key] = version_drift(version, live_sha, lambda a, d: history.contains([(a, d)])[(a, d)])
        return self._drift[key]

    def _news(self, recorded: dict[str, tuple[str, str]],
              latest: dict[str, dict[str, HealthSample]]) -> list[tuple[str, str, str]]:
        """A line for each environment whose recorded state changed since the last read."""
        with self._health_lock:
            before, self._health_seen = self._health_seen, recorded
        if before is None:  # the states found when the dashboard opened are not news
            return []
        news = []
        for env, (state, _since) in recorded.items():
            previous = before.get(env, (None, None))[0]
            if previous != state:
                news.append((env, state, health_news(env, state, latest.get(env) or self._newest(env), previous)))
        return news

    def _newest(self, env: str) -> dict[str, HealthSample]:
        try:
            found = self.world.log.health_samples(env, per_check=1)
        except AndonError:
            return {}
        return {check: samples[-1] for check, samples in found.items() if samples}

    # -- change detection ------------------------------------------------------------------

    def poll(self) -> None:
        """Post :class:`EventsArrived` if another program wrote events since the last look."""
        if self.last_event is None:  # the first read has not finished: it will be fresh anyway
            return
        try:
            version = self.world.log.data_version()
            if version == self.version:
                return
            changes = self.world.log.changes(self.last_event)
        except AndonError as error:
            self.post(LoadFailed(str(error), self.generation))
            return
        # A write between the two reads is in `changes` and moves data_version again:
        # the next look finds no newer event and posts nothing.
        self.version, self.last_event = version, changes.last
        if changes.kinds:
            self.post(EventsArrived(changes))


def health_news(env: str, state: str, latest: dict[str, HealthSample], previous: str | None = None) -> str:
    """What a toast says when ``env``'s health changes: "production is down: api timed out after 2s"."""
    if state == HEALTHY:
        return f"{env} is healthy again" if previous in (DEGRADED, DOWN) else f"{env} is healthy"
    if state == UNKNOWN:
        return f"{env}'s health is unknown: no recent probes"
    worst = [s for s in latest.values() if s.state == DOWN] or [s for s in latest.values() if s.state == DEGRADED]
    reasons = [f"{s.check} {s.error}" if s.error else s.check for s in worst[:2]]
    return f"{env} is {state}" + (f": {'; '.join(reasons)}" if reasons else "")
