"""The migrations screen (``b``): the cleanup backlog, most urgent first, and the selected row in full.

One row per migration and environment, in :class:`backend.migrations.Backlog`'s order
(critical, overdue, due soon, stalled, flagged, then by due date); under it, the selected
row: flags loudly, progress with rate and ETA, due date and snoozes, the expand and
contract commits, the evidence ``git grep`` found, the reason, the note and the next thing
to do. Malformed ``Migration:`` trailers, and git failing to answer, are a line at the bottom.

Live: twice a second a thread asks SQLite's ``data_version`` whether another program wrote
(a job reporting progress, a deploy, a teammate's note) and, if so, evaluates again; every
:data:`REFRESH` seconds it evaluates anyway (ages, severities and stalls move with time,
evidence with the branch). Evaluation is git and SQLite: always in a thread worker, one at
a time, the newest shown.

Keys (:data:`tui.commands.BACKLOG_ACTIONS`, also in the command palette): ``n`` note,
``z`` snooze (until and why), ``w`` waive (why), ``f`` finish (a yes or no), each through a
small form (:mod:`tui.widgets.migration_forms`) and written by
:func:`backend.migrations.apply` in a thread worker; a refusal (a step the phase does not
allow) is a one-line toast. A ``--read-only`` dashboard offers none of them.
"""

from __future__ import annotations

import time
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from textual.app import ComposeResult
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Static

from backend import AndonError
from backend.text import clean_line
from backend.world import World
from tui.commands import BACKLOG_ACTIONS, Action, bindings, offered
from tui.migration_feed import BacklogLoaded, StepApplied, apply_step, load
from tui.widgets.backlog import BacklogDetail, BacklogList, key
from tui.widgets.keybar import KeyBar
from tui.widgets.migration_forms import ConfirmForm, Snooze, SnoozeForm, TextForm
from tui.widgets.rowlist import RowList

if TYPE_CHECKING:
    from backend.migrations import Backlog, Status

POLL = 0.5  # seconds between two looks at data_version
REFRESH = 5.0  # seconds after which the backlog is evaluated again with nothing written
EMPTY = ("No migrations yet.\n\nMark them in commit messages with trailers:\n"
         "  Migration: users-email-split expand\n  Migration-Kind: database\n  Migration-Refs: users.email_old\n"
         "and later\n  Migration: users-email-split contract\n\n"
         "or add one that has no trailer: andon migration add NAME --kind config")


class BacklogCommands(Provider):
    """The migrations screen's actions in the command palette, from the one table."""

    def _offered(self) -> list[tuple[Action, Any]]:
        screen = self.screen
        if not isinstance(screen, MigrationsScreen):
            return []
        return [(action, partial(screen.run_action, action.action)) for action in offered(screen.read_only,
                                                                                         BACKLOG_ACTIONS)]

    async def discover(self) -> Hits:
        for action, run in self._offered():
            yield DiscoveryHit(action.title, run, help=action.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for action, run in self._offered():
            if (score := matcher.match(action.title)) > 0:
                yield Hit(score, matcher.highlight(action.title), run, help=action.help)


class MigrationsScreen(Screen[None]):
    DEFAULT_CSS = """
    MigrationsScreen #backlog-title {
        height: 1;
        background: $panel;
        text-align: center;
    }
    MigrationsScreen #backlog {
        height: 1fr;
        min-height: 5;
    }
    MigrationsScreen #backlog-detail-box {
        height: auto;
        max-height: 45%;
        border-top: solid $primary 40%;
        border-title-color: $text;
    }
    MigrationsScreen #backlog-detail {
        padding: 0 1;
    }
    MigrationsScreen #backlog-problems {
        display: none;
        height: auto;
        max-height: 4;
        padding: 0 1;
        background: $warning 20%;
    }
    """
    BINDINGS = bindings(BACKLOG_ACTIONS)
    COMMANDS = {BacklogCommands}

    def __init__(self, world: World, *, read_only: bool = False, poll_interval: float = POLL,
                 refresh_every: float = REFRESH) -> None:
        super().__init__()
        self.world = world
        self.read_only = read_only
        self.poll_interval = poll_interval
        self.refresh_every = refresh_every
        self.statuses: tuple[Status, ...] = ()
        self.now: datetime | None = None
        self.selected: str | None = None  # the row's key: migration and environment
        self._seq = 0  # reads started
        self._shown = 0  # the newest read shown
        self._reading = False  # one evaluation at a time
        self._version: int | None = None  # data_version when last evaluated
        self._read_at = -float("inf")  # time.monotonic() of the last evaluation started

    def compose(self) -> ComposeResult:
        yield Static(Content(self._title()), id="backlog-title")
        yield BacklogList(id="backlog")
        with VerticalScroll(id="backlog-detail-box"):
            yield BacklogDetail(Content("Reading the backlog…"), id="backlog-detail")
        yield Static(id="backlog-problems")
        yield KeyBar([(a.key_display or a.key, a.title, a.action)
                      for a in offered(self.read_only, BACKLOG_ACTIONS) if a.footer], id="backlog-keys")

    def on_mount(self) -> None:
        self.query_one(BacklogList).focus()
        self.read(force=True)
        self.set_interval(self.poll_interval, self.read)

    # -- reading ---------------------------------------------------------------------------

    def read(self, force: bool = False) -> None:
        """Evaluate again, in a thread: now (``force``), else if another program wrote or
        :data:`REFRESH` seconds have passed. One evaluation runs at a time."""
        if self._reading:
            return
        force = force or time.monotonic() - self._read_at >= self.refresh_every
        self._reading = True
        self._seq += 1
        self.run_worker(partial(self._read, self._seq, force), thread=True, group="backlog", exit_on_error=False)

    def _read(self, seq: int, force: bool) -> None:
        try:
            version = self.world.log.data_version()
        except AndonError as error:
            self.post_message(BacklogLoaded(None, None, seq, str(error)))
            return
        if not force and version == self._version:
            self.post_message(BacklogLoaded(None, None, seq))  # nothing new: no evaluation
            return
        self._version = version
        self._read_at = time.monotonic()
        load(self.world, self.post_message, seq)

    def on_backlog_loaded(self, message: BacklogLoaded) -> None:
        self._reading = False
        if message.seq < self._shown:
            return
        self._shown = message.seq
        problems = self.query_one("#backlog-problems", Static)
        if message.error:
            problems.update(Content(f"The backlog could not be read: {message.error}"))
            problems.display = True
            return
        if message.backlog is None or message.now is None:
            return  # nothing changed
        self.show(message.backlog, message.now)

    def show(self, backlog: Backlog, now: datetime) -> None:
        self.statuses, self.now = backlog.statuses, now
        colours = self.app.get_css_variables()
        self.query_one(BacklogList).show(backlog.statuses, now, colours, self.selected)
        if not backlog.statuses:
            self.selected = None
        elif self.selected not in {key(status) for status in backlog.statuses}:
            self.selected = key(backlog.statuses[0])
        self._show_selected()
        self.query_one("#backlog-title", Static).update(Content(self._title(backlog)))
        problems = self.query_one("#backlog-problems", Static)
        lines = [f"git: {clean_line(backlog.error)}"] if backlog.error else []
        for problem in backlog.problems[:3]:
            lines.append(f"{problem.sha[:7]}: “{clean_line(problem.text)}” — {clean_line(problem.problem)}")
        if len(backlog.problems) > 3:
            lines.append(f"… and {len(backlog.problems) - 3} more malformed Migration trailers")
        problems.update(Content("\n".join(lines)))
        problems.display = bool(lines)

    def _title(self, backlog: Backlog | None = None) -> str:
        title = "Migrations — the cleanup backlog, most urgent first"
        if backlog is not None:
            rows, overdue = len(backlog.statuses), backlog.overdue()
            title += f" · {rows} row{'s' if rows != 1 else ''}" + (f" · {overdue} overdue" if overdue else "")
        return title + (" · read-only" if self.read_only else "")

    def _show_selected(self) -> None:
        status = self.status()
        box = self.query_one("#backlog-detail-box")
        box.border_title = (Content(f"{clean_line(status.name)} in {clean_line(status.env)}")
                            if status is not None else None)
        self.query_one(BacklogDetail).show(status, self.now or self.world.clock(), read_only=self.read_only,
                                           empty=EMPTY)

    def status(self) -> Status | None:
        return next((status for status in self.statuses if key(status) == self.selected), None)

    def on_row_list_row_highlighted(self, event: RowList.RowHighlighted) -> None:
        self.selected = event.key
        self._show_selected()

    # -- actions ----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.read_only and any(a.writes and a.action == action for a in BACKLOG_ACTIONS):
            return False
        return True

    def _target(self) -> Status | None:
        status = self.status()
        if status is None:
            self.notify("No migration is selected.", title="Migrations", severity="warning", markup=False)
        return status

    def action_note(self) -> None:
        if (status := self._target()) is None:
            return
        form = TextForm(f"Note on {clean_line(status.name)} in {clean_line(status.env)}",
                        "A line for whoever looks next: who is on it, what it waits for. It replaces the last note.",
                        "note", value=clean_line(status.note or ""))
        self.app.push_screen(form, partial(self._noted, status))

    def _noted(self, status: Status, text: str | None) -> None:
        if text is not None:
            self.write(status, "note", text=text)

    def action_snooze(self) -> None:
        if (status := self._target()) is None:
            return
        form = SnoozeForm(f"Snooze {clean_line(status.name)} in {clean_line(status.env)}",
                          "Reminders about this cleanup wait until then. The due date stays where it is, "
                          "and the snooze is counted.", self.now or self.world.clock())
        self.app.push_screen(form, partial(self._snoozed, status))

    def _snoozed(self, status: Status, snooze: Snooze | None) -> None:
        if snooze is not None:
            self.write(status, "snooze", until=snooze.until, reason=snooze.reason)

    def action_waive(self) -> None:
        if (status := self._target()) is None:
            return
        form = TextForm(f"Waive {clean_line(status.name)} in {clean_line(status.env)}",
                        "The migration leaves the backlog in this environment for good, with your reason.",
                        "why it needs no cleanup here")
        self.app.push_screen(form, partial(self._waived, status))

    def _waived(self, status: Status, reason: str | None) -> None:
        if reason is not None:
            self.write(status, "waive", reason=reason)

    def action_finish(self) -> None:
        if (status := self._target()) is None:
            return
        form = ConfirmForm(f"Finish {clean_line(status.name)} in {clean_line(status.env)}?",
                           "Record that the migration has moved all its data here. Its cleanup (the contract "
                           "commit) is due from now.")
        self.app.push_screen(form, partial(self._finished, status))

    def _finished(self, status: Status, yes: bool | None) -> None:
        if yes:
            self.write(status, "finish")

    def write(self, status: Status, action: str, **fields: Any) -> None:
        if self.read_only:  # the keys are not offered; a stray call writes nothing either
            return
        job = partial(apply_step, self.world, action, status.name, status.env, **fields)
        self.run_worker(lambda: self.post_message(job()), thread=True, group="backlog-write", exit_on_error=False)

    def on_step_applied(self, message: StepApplied) -> None:
        self.notify(message.text, title="Migrations", severity=message.severity, markup=False)
        self._reading = False  # our own write moves no data_version: read now, whatever runs
        self.read(force=True)

    def action_refresh(self) -> None:
        self._reading = False
        self.read(force=True)

    def action_close(self) -> None:
        self.dismiss(None)
