"""Watching the health of every environment for everyone on the log: one prober per environment.

Ten dashboards open on one log must not probe ten times, nor write ten "down" events.
Before each of an environment's rounds a :class:`HealthWatcher` takes (or renews) the
environment's lease in the log, ``health:<env>`` (:mod:`backend.store.leases`); only
the holder probes that environment's checks and records the round
(:meth:`~backend.store.health.HealthMixin.record_health`: the samples, and one
``health.changed`` event when the environment's state changed). Everyone else asks for
the lease once per interval and otherwise does nothing, so a watcher that does not hold
a lease costs one small write transaction per environment per interval (the holder
renews it twice a round: before probing, and again just before recording, so that a
round that outlasted the lease is dropped rather than recorded beside the new holder's). A holder that
closes releases its leases (another watcher takes over at its next tick); one that is
killed stops renewing, and is taken over within one interval when it ran on the same
host (the store sees its pid is gone), else when its lease expires
(``LEASE_INTERVALS`` intervals after its last round).

Each check is probed on its own interval; an environment's round probes the checks that
are due (all of them when it has just taken the lease), and its state is worked out
from the newest sample of every check (:func:`backend.health.environment_state`).

The same object serves ``andon watch`` (:meth:`HealthWatcher.run_forever`, until a stop
event is set) and the dashboard, which runs it in a :class:`WatcherThread`: a thread with
an event loop of its own, so that the probes' CPU (hundreds of checks a round) is never
spent on the dashboard's loop, told after each round that recorded samples
(``on_round``) and stopped within a fraction of a second when the dashboard closes. By
default it writes through a log connection of its own, so an open dashboard's change
detection (``PRAGMA data_version``, which ignores a connection's own writes) sees its
samples as it sees anyone else's; the dashboard passes its own connection instead and
reads the samples back when told a round was recorded.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from backend import AndonError
from backend.config import check_environment_name
from backend.models import DOWN, UP, HealthSample, to_iso

if TYPE_CHECKING:
    from backend.config import HealthCheck
    from backend.store import DeployLog
    from backend.world import World

LEASE_INTERVALS = 3  # a health lease lasts this many of its environment's shortest interval
IDLE_WAIT = 60.0  # seconds run_forever waits when it has nothing to probe (never, in practice)

_OPENING = threading.Lock()

Probe = Callable[[Mapping[str, Sequence["HealthCheck"]]], Awaitable[list[HealthSample]]]
OnRound = Callable[[frozenset[str]], None]  # the environments whose samples a round recorded


def lease_name(env: str) -> str:
    """The lease whoever probes ``env`` holds."""
    return f"health:{env}"


def shortest_interval(checks: Iterable[HealthCheck]) -> float:
    return min(check.interval for check in checks)


def lease_seconds(checks: Iterable[HealthCheck]) -> float:
    """How long a health lease lasts: ``LEASE_INTERVALS`` of the shortest interval.

    The holder renews it every shortest interval (a probe never lasts longer than its
    check's interval: the configuration refuses a timeout above it), so it expires only
    when the holder has missed two rounds.
    """
    return LEASE_INTERVALS * shortest_interval(checks)


def checked_environments(world: World, envs: Sequence[str] | None = None) -> dict[str, tuple[HealthCheck, ...]]:
    """The environments to probe and their checks: the named ones, or every configured one with checks.

    A named environment without checks is an error (one line): asking to watch it is a mistake.
    """
    config = world.config
    if envs:
        found = {}
        for env in dict.fromkeys(envs):
            check_environment_name(env)
            checks = config.environment(env).health
            if not checks:
                where = config.source.name if config.source else "andon.toml"
                raise AndonError(f"environment {env!r} has no health checks: add [[environments.{env}.health]] "
                                 f"with a name and a url to {where}")
            found[env] = tuple(checks)
        return found
    return {name: tuple(env.health) for name, env in config.environments.items() if env.health}


def contains(world: World) -> Callable[[str, str], bool | None]:
    """``contains(ancestor, descendant)`` for :func:`backend.health.version_drift`, asked of the world's git."""

    def ask(ancestor: str, descendant: str) -> bool | None:
        return world.history.contains([(ancestor, descendant)]).get((ancestor, descendant))

    return ask


def problems(samples: Iterable[HealthSample]) -> str:
    """The checks that are not up, as ``api: connection refused; web: 812 ms`` ("" if none)."""
    parts = []
    for sample in samples:
        if sample.state == UP:
            continue
        if sample.error:
            why = sample.error
        elif sample.state == DOWN and sample.status_code is not None:
            why = f"HTTP {sample.status_code}"
        elif sample.latency_ms is not None:
            why = f"{sample.latency_ms:.0f} ms"
        else:
            why = sample.state
        parts.append(f"{sample.check}: {why}")
    return "; ".join(parts)


class StateChange(NamedTuple):
    """An environment's health changed (this watcher recorded the change, and its event)."""

    at: str  # to_iso() time it was recorded
    env: str
    state: str
    samples: tuple[HealthSample, ...]  # the newest sample of each check

    def describe(self) -> str:
        """One line: ``production: down (api: connection refused)``."""
        why = problems(self.samples)
        return f"{self.env}: {self.state}" + (f" ({why})" if why else "")


class HealthWatcher:
    """Probes ``envs`` (default: every configured environment with health checks) while it holds their leases.

    ``holder`` names this watcher in the leases (default: a new :func:`holder_id`);
    ``log`` is the log to write to (default: a connection of its own to the world's log,
    closed by :meth:`close`); ``probe`` replaces :func:`backend.health.probe_all`;
    ``clock`` stamps the samples and the state (default: the world's); ``monotonic``
    schedules the rounds.
    """

    def __init__(
        self,
        world: World,
        envs: Sequence[str] | None = None,
        *,
        holder: str | None = None,
        clock: Callable[[], datetime] | None = None,
        log: DeployLog | None = None,
        probe: Probe | None = None,
        who: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        from backend.store import holder_id

        self.checks = checked_environments(world, envs)
        self.holder = holder or holder_id()
        self.clock = clock or world.clock
        self._world = world
        self._log = log
        self._own_log = log is None
        self._probe = probe
        self._who = who
        self._monotonic = monotonic
        self._due: dict[tuple[str, str], float] = {
            (env, check.name): -math.inf for env, checks in self.checks.items() for check in checks}
        self._held: set[str] = set()
        self._latest: dict[str, dict[str, HealthSample]] = {}
        self.states: dict[str, str] = {}  # the state of each environment this watcher probes
        self.recorded: frozenset[str] = frozenset()  # the environments whose samples the last round recorded
        self._closed = False
        self._lock = threading.Lock()  # close() may come from another thread than round()

    # -- what it does -------------------------------------------------------------

    @property
    def held(self) -> frozenset[str]:
        """The environments whose lease this watcher held at its last round for them."""
        return frozenset(self._held)

    def latest(self, env: str) -> dict[str, HealthSample]:
        """The newest sample of each of ``env``'s checks that this watcher probed."""
        return dict(self._latest.get(env, {}))

    def seconds_until_due(self) -> float:
        """How long until the next round has something to do (0: now)."""
        if not self._due:
            return IDLE_WAIT
        return max(0.0, min(self._due.values()) - self._monotonic())

    async def round(self) -> list[StateChange]:
        """One tick: take or renew the lease of each environment that is due, probe those held, record.

        The log work runs in a thread (``asyncio.to_thread``): a dashboard awaiting this
        never blocks its event loop on SQLite. Returns the changes of state it recorded.
        """
        self.recorded = frozenset()
        if self._closed:
            return []
        start = self._monotonic()
        due: dict[str, list[HealthCheck]] = {}
        for env, checks in self.checks.items():
            ready = [check for check in checks if self._due[(env, check.name)] <= start]
            if ready:
                due[env] = ready
        if not due:
            return []
        held = await asyncio.to_thread(self._take, list(due))
        probe_now: dict[str, Sequence[HealthCheck]] = {}
        for env, ready in due.items():
            if env in held:
                # Just taken: probe every check, so the state is worked out from fresh samples only.
                probe_now[env] = ready if env in self._held else self.checks[env]
                for check in probe_now[env]:
                    self._due[(env, check.name)] = start + check.interval
            else:
                # Someone else probes it: ask again in an interval, forget what we knew.
                self._latest.pop(env, None)
                self.states.pop(env, None)
                again = start + shortest_interval(self.checks[env])
                for check in self.checks[env]:
                    self._due[(env, check.name)] = again
        self._held = (self._held - due.keys()) | held
        if not probe_now:
            return []
        samples = await self._run_probe(probe_now)
        return await asyncio.to_thread(self._record, probe_now, samples)

    def run_forever(
        self,
        stop: threading.Event,
        *,
        on_change: Callable[[StateChange], None] | None = None,
        on_error: Callable[[AndonError], None] | None = None,
        on_round: OnRound | None = None,
    ) -> None:
        """Run rounds on their intervals until ``stop`` is set (a signal handler may set it).

        A round that fails with an :class:`AndonError` (the log busy for longer than its
        timeout, say) goes to ``on_error`` and is tried again an interval later; without
        ``on_error`` it is raised. After each round that recorded samples, ``on_round`` is
        given the environments it recorded (after ``on_change``, once per change). The
        leases stay held: :meth:`close` releases them.
        """
        from backend.health import run

        run(self.run(stop, on_change=on_change, on_error=on_error, on_round=on_round))  # on the prober's loop

    async def run(
        self,
        stop: threading.Event,
        *,
        on_change: Callable[[StateChange], None] | None = None,
        on_error: Callable[[AndonError], None] | None = None,
        on_round: OnRound | None = None,
    ) -> None:
        """:meth:`run_forever` on the running event loop (which it occupies: give it one of its own)."""
        while not stop.is_set():
            try:
                changes = await self.round()
            except AndonError as error:
                if on_error is None:
                    raise
                on_error(error)
                self._postpone()
                changes = []
            for change in changes:
                if on_change is not None:
                    on_change(change)
            if on_round is not None and self.recorded:
                on_round(self.recorded)
            delay = self.seconds_until_due()
            if delay > 0 and not stop.is_set():
                await asyncio.to_thread(stop.wait, delay)

    def close(self) -> None:
        """Release the leases this watcher holds and close its own log connection (safe to call twice)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._held or self._log is not None:
                    log = self.log
                    for env in sorted(self._held):
                        log.release_lease(lease_name(env), self.holder)
                self._held.clear()
            finally:
                if self._own_log and self._log is not None:
                    self._log.close()
                    self._log = None

    # -- the parts ------------------------------------------------------------------

    @property
    def log(self) -> DeployLog:
        """The log this watcher writes to (its own connection, opened on first use)."""
        if self._log is None:
            from backend.store import DeployLog

            with _OPENING:  # several watchers of one world may open at once: World.log is not thread-safe
                self._world.open()  # the world's rules: create the default log, refuse a missing named one's folder
            self._log = DeployLog.open(self._world.db_path, clock=self.clock)
        return self._log

    @property
    def who(self) -> str:
        if self._who is None:
            self._who = self._world.who()
        return self._who

    def _take(self, envs: list[str]) -> set[str]:
        """One lease write per environment: the ones this watcher holds now."""
        with self._lock:
            if self._closed:
                return set()
            log = self.log
            return {env for env in envs
                    if log.take_lease(lease_name(env), self.holder, lease_seconds(self.checks[env]))}

    async def _run_probe(self, env_checks: Mapping[str, Sequence[HealthCheck]]) -> list[HealthSample]:
        if self._probe is not None:
            return await self._probe(env_checks)
        from backend.health import probe_all

        return await probe_all(env_checks, clock=self.clock)

    def _record(self, probed: Mapping[str, Sequence[HealthCheck]], samples: list[HealthSample]) -> list[StateChange]:
        from backend.health import environment_state

        by_env: dict[str, list[HealthSample]] = {env: [] for env in probed}
        for sample in samples:
            if sample.env in by_env:
                by_env[sample.env].append(sample)
        changes = []
        recorded = set()
        with self._lock:
            if self._closed:
                return []
            log = self.log
            for env, got in by_env.items():
                # A round may outlast the lease (a process stalled for longer than its time to
                # live): renewing it now tells whether another andon has taken over meanwhile,
                # and then this round is dropped, never recorded beside the new holder's.
                if not log.take_lease(lease_name(env), self.holder, lease_seconds(self.checks[env])):
                    self._held.discard(env)
                    self._latest.pop(env, None)
                    self.states.pop(env, None)
                    continue
                latest = self._latest.setdefault(env, {})
                for sample in got:
                    if sample.check not in latest or latest[sample.check].at <= sample.at:
                        latest[sample.check] = sample
                checks = self.checks[env]
                now = self.clock()
                state = environment_state({check.name: latest.get(check.name) for check in checks}, checks, now)
                self.states[env] = state
                recorded.add(env)
                if log.record_health(got, state, who=self.who, env=env):
                    newest = tuple(latest[check.name] for check in checks if check.name in latest)
                    changes.append(StateChange(to_iso(now), env, state, newest))
        self.recorded = frozenset(recorded)
        return changes

    def _postpone(self) -> None:
        """After a failed round: try each environment again in its interval."""
        now = self._monotonic()
        for env, checks in self.checks.items():
            again = now + shortest_interval(checks)
            for check in checks:
                self._due[(env, check.name)] = max(self._due[(env, check.name)], again)


class WatcherThread:
    """A watcher's rounds on a thread of its own, with an event loop of its own (the dashboard's prober).

    ``make`` builds the watcher in that thread, so what it imports and prepares (httpx,
    the TLS context) costs the caller's thread nothing. Then the rounds run on their
    intervals (:meth:`HealthWatcher.run`); after each one that recorded samples,
    ``on_round`` is called in that thread with the environments recorded (a dashboard
    posts itself a message: it reads the samples at once). ``on_error`` is given a
    round's :class:`AndonError` (the round is tried again an interval later) and any
    other exception, after which the thread ends (it never prints a traceback over a
    screen).

    :meth:`stop` sets the stop event, cancels the thread's task from outside
    (``call_soon_threadsafe``: a round in the middle of its probes is abandoned), waits a
    short while for the thread and closes the watcher, which releases its leases.
    """

    def __init__(
        self,
        make: Callable[[], HealthWatcher],
        *,
        on_round: OnRound | None = None,
        on_change: Callable[[StateChange], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        name: str = "andon-health",
    ) -> None:
        self._make = make
        self._on_round = on_round
        self._on_change = on_change
        self._on_error = on_error
        self.watcher: HealthWatcher | None = None  # once made, in the thread
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the rounds, wait up to ``timeout`` seconds for the thread, release the leases.

        Returns whether the thread has ended (it is a daemon: one stuck in a log write
        longer than that does not keep the process alive). Safe to call twice, or before
        :meth:`start`.
        """
        self._stop.set()  # first: the thread checks it before each round, and after making the watcher
        with self._lock:
            loop, task = self._loop, self._task
        if loop is not None and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # its loop has closed: the thread is ending by itself
                pass
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self.watcher is not None:
            self.watcher.close()
        return not self._thread.is_alive()

    def _main(self) -> None:
        try:
            watcher = self.watcher = self._make()
            if self._stop.is_set():  # stopped while it was being made (stop() may not have seen it)
                watcher.close()
                return
            from backend.health import run

            run(self._rounds(watcher))  # a new event loop, the prober's (backend.health.new_event_loop)
        except Exception as error:  # noqa: BLE001 - a bug or a broken log: said, not printed over a screen
            if self._on_error is not None:
                self._on_error(error)
            else:
                raise

    async def _rounds(self, watcher: HealthWatcher) -> None:
        with self._lock:
            self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        if self._stop.is_set():
            return
        try:
            await watcher.run(self._stop, on_change=self._on_change, on_error=self._on_error, on_round=self._on_round)
        except asyncio.CancelledError:
            pass  # stop(): this task is the thread's own, nothing awaits it
