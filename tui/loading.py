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

from collections.abc import Callable
from typing import TYPE_CHECKING

from textual.message import Message

from backend import AndonError
from backend.history import Range
from backend.models import Deploy
from backend.world import World
from tui.first_screen import PAGE, load_first_screen

if TYPE_CHECKING:
    from backend.store import Changes


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
    def __init__(self, deploy: Deploy) -> None:
        super().__init__()
        self.deploy = deploy


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

    def output(self, deploy_id: int) -> None:
        try:
            self.post(OutputLoaded(self.world.log.get(deploy_id)))
        except AndonError as error:
            self.post(LoadFailed(str(error)))

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
