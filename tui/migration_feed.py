"""The migration backlog on the dashboard: reading it in threads, the main screen's overdue count, the writes.

Like :mod:`tui.health_feed` and :mod:`tui.line_feed`, not a widget: the reads and writes
that feed what shows migrations.

* :func:`read_backlog` evaluates the backlog (:func:`backend.migrations.evaluate`: git and
  SQLite, so always in a thread worker). ``backend.migrations`` is imported there, never on
  the way to the first frame.
* :class:`MigrationFeed` is the main screen's part: after the first frame it mounts the
  :class:`~tui.widgets.overdue.OverdueCount` line (hidden at 0) and reads the backlog without
  evidence (no ``git grep``: the count needs none), again when another program writes a
  ``migration.*``, ``deploy.*`` or ``rollback.*`` event (a deploy or a rollback moves phases),
  and every :data:`RECOUNT` seconds (a cleanup becomes overdue with time alone).
* :func:`apply_step` is a screen's write (note, snooze, waive, finish) through
  :func:`backend.migrations.apply`, in a thread worker; its one line (or the refusal's) comes
  back as :class:`StepApplied`.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from textual.message import Message

from backend import AndonError

if TYPE_CHECKING:
    from backend.migrations import Backlog
    from backend.store import Changes
    from backend.world import World
    from tui.screens.main import MainScreen
    from tui.widgets.overdue import OverdueCount

MIGRATION_EVENTS = ("migration.", "deploy.", "rollback.")
RECOUNT = 60.0  # seconds between two counts of the overdue cleanups with nothing written


class BacklogLoaded(Message):
    """A read of the backlog ended: the backlog as of ``now``, or why it could not be read.
    ``seq`` orders reads: one that ends after a newer one is not shown."""

    def __init__(self, backlog: Backlog | None, now: datetime | None, seq: int, error: str = "") -> None:
        super().__init__()
        self.backlog = backlog
        self.now = now
        self.seq = seq
        self.error = error


class StepApplied(Message):
    """A write ended: what to say, and how loudly."""

    def __init__(self, text: str, severity: Literal["information", "warning", "error"] = "information") -> None:
        super().__init__()
        self.text = text
        self.severity = severity


def read_backlog(world: World, *, evidence: bool = True) -> tuple[Backlog, datetime]:
    """The backlog now, and the now it was judged at (blocking: git and SQLite)."""
    from backend.migrations import evaluate

    now = world.clock()
    return evaluate(world, now=now, evidence=evidence), now


def load(world: World, post: Any, seq: int, *, evidence: bool = True) -> None:
    """Read the backlog and post :class:`BacklogLoaded` (a thread worker's body)."""
    try:
        backlog, now = read_backlog(world, evidence=evidence)
    except AndonError as error:
        post(BacklogLoaded(None, None, seq, str(error)))
        return
    post(BacklogLoaded(backlog, now, seq))


def apply_step(world: World, action: str, name: str, env: str, **fields: Any) -> StepApplied:
    """One step (note, snooze, waive, finish) written to the log; a refusal is one line (blocking)."""
    from backend.migrations import StepRefused, apply

    try:
        said = apply(world, action, name, env, who=world.who(), **fields)
    except StepRefused as error:
        return StepApplied(str(error), "warning")
    except AndonError as error:
        return StepApplied(str(error), "error")
    return StepApplied(said)


def overdue_counts(backlog: Backlog) -> tuple[int, int]:
    """(overdue or critical, critical) over every environment."""
    critical = sum(1 for status in backlog.statuses if status.severity == "critical")
    return backlog.overdue(), critical


class MigrationFeed:
    """The main screen's overdue count: see the module docstring. Every method runs on the screen's loop."""

    def __init__(self, screen: MainScreen) -> None:
        self.screen = screen
        self.world = screen.world
        self.widget: OverdueCount | None = None
        self._seq = 0
        self._shown = 0

    async def start(self, after: str) -> None:
        """After the first frame: the count line (right after ``after``, hidden at 0) and a first read."""
        from tui.widgets.overdue import OverdueCount

        widget = OverdueCount(id="overdue")
        await self.screen.mount(widget, after=self.screen.query_one(after))
        self.widget = widget
        self.screen.set_interval(RECOUNT, self.read)
        self.read()

    def events_arrived(self, changes: Changes) -> None:
        if self.widget is not None and any(kind.startswith(MIGRATION_EVENTS) for kind, _ in changes.kinds):
            self.read()

    def read(self) -> None:
        self._seq += 1
        self.screen.run_worker(partial(load, self.world, self.screen.post_message, self._seq, evidence=False),
                               thread=True, exclusive=True, group="migrations", exit_on_error=False)

    def loaded(self, message: BacklogLoaded) -> None:
        if message.seq < self._shown or self.widget is None:
            return
        self._shown = message.seq
        if message.backlog is None:
            self.screen.log.warning(f"migrations: {message.error}")
            return
        self.widget.show(*overdue_counts(message.backlog))
