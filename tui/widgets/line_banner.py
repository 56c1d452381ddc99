"""The stop-the-line banner: full width, above everything, while the shown environment's line is stopped.

Two lines for the environment shown. The first says that the line is stopped, by whom,
since when and why; the second what the rollback is doing: counting down its grace (with the keys that cancel
it), running (for how long, and the last line of its output), or how it ended; the line
stays stopped until a person resumes it. A rollback that succeeded but did not bring health
back (``rollback.unhealthy``) says so in capitals: andon will not roll back again in this
stop, a person decides. A stopped line of another environment adds a
line ("Also stopped: ..."); when only other environments' lines are stopped, the banner
says which, and how to show them. Everything that came from the log (names,
reasons, output) is plain ``Content``, never markup.

The screen hands it a :class:`~tui.loading.LineView` whenever a worker has read the line
(:meth:`LineBanner.show`); while it is shown a timer redraws it once a second (the
countdown, and how long ago the line stopped). A dashboard opened with ``--read-only`` shows no keys.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from textual.content import Content
from textual.widgets import Static

from backend.models import FAILED, INTERRUPTED, RUNNING, SUCCEEDED
from tui.format import age, moment, when
from tui.line_feed import LineView

if TYPE_CHECKING:
    from backend.store.line import LineState

PENDING = "pending"
CANCELLED = "cancelled"


def clock_text(seconds: float) -> str:
    """``83.4`` as ``1:23``."""
    whole = max(0, int(seconds + 0.5))
    return f"{whole // 60}:{whole % 60:02d}"


def _last_line(output: str) -> str:
    for line in reversed(output.splitlines()):
        if line.strip():
            return line.strip()
    return ""


def stopped_line(line: LineState, now: datetime) -> str:
    """``■ LINE STOPPED · production · by alice · 2m ago · api down``."""
    first = f"■ LINE STOPPED · {line.env} · by {line.who or 'someone'}" + (" (automatic)" if line.automatic else "")
    since = age(line.since, now)
    first += f" · {since} ago" if since and since != "?" else f" · since {when(line.since)}"
    return first + (f" · {line.reason}" if line.reason else "")


def elsewhere_lines(view: LineView, now: datetime) -> list[str]:
    """The stopped lines of the environments not shown, for a banner about another one."""
    if not view.elsewhere:
        return []
    if view.line.stopped:
        names = ", ".join(f"{other.env} (by {other.who or 'someone'})" for other in view.elsewhere)
        return [f"Also stopped: {names}."]
    lines = [stopped_line(other, now) for other in view.elsewhere]
    shown = view.elsewhere[0].env
    return [*lines, f"Not the environment shown ({view.env}): ] or the command palette shows {shown}."]


def describe(view: LineView, now: datetime, *, read_only: bool = False) -> tuple[str, str, str]:
    """(first line, second line, the banner's tone: ``stopped``, ``rolling`` or ``failed``) for the
    environment shown, whose line is stopped."""
    first = stopped_line(view.line, now)
    resume = " until someone resumes it" + ("" if read_only else " (R)")
    rollback = view.rollback
    if rollback is None:
        return first, f"Nothing is rolling back. Deploys are refused{resume}.", "stopped"
    target = rollback.target_sha[:7] + (f" (deploy #{rollback.target_deploy_id})" if rollback.target_deploy_id else "")
    if rollback.status == PENDING:
        run_at = moment(rollback.run_at)
        left = max(0.0, (run_at - now).total_seconds()) if run_at else 0.0
        cancel = "" if read_only else " — esc or c cancels it"
        if left > 0:
            return first, f"↺ Rolling back to {target} in {clock_text(left)}{cancel}", "rolling"
        return first, f"↺ Rolling back to {target}: starting…", "rolling"
    if rollback.status == RUNNING:
        progress = view.progress
        started = moment(progress.started_at) if progress else None
        took = f" {clock_text((now - started).total_seconds())}" if started else ""
        tail = _last_line(progress.output) if progress else ""
        second = f"↺ Rolling back to {target}: running{took}" + (f" · {tail}" if tail else "")
        return first, second, "rolling"
    ended = when(rollback.finished_at) if rollback.finished_at else ""
    at = f" at {ended[11:]}" if len(ended) == 16 else ""  # the time of day: the first line says which day
    if rollback.status == SUCCEEDED and view.unhealthy is not None:
        why = f" ({view.unhealthy})" if view.unhealthy else ""
        return first, (f"✘ ROLLED BACK to {target}{at} — STILL UNHEALTHY{why}. andon will not roll back again: "
                       f"a person decides (roll back further, fix forward, or resume{'' if read_only else ' (R)'})."), \
            "failed"
    if rollback.status == SUCCEEDED:
        return first, f"✔ Rolled back to {target}{at}. The line stays stopped{resume}.", "stopped"
    if rollback.status == CANCELLED:
        by = rollback.ended_by or "someone"
        return first, f"Rollback to {target} cancelled by {by}{at}: nothing ran. The line stays stopped{resume}.", "stopped"
    word = {FAILED: "failed", INTERRUPTED: "was interrupted"}.get(rollback.status, rollback.status)
    tail = _last_line(view.progress.output) if view.progress else ""
    why = f" ({tail})" if tail else ""
    return first, f"✘ Rollback to {target} {word}{at}{why}. The line stays stopped{resume}.", "failed"


class LineBanner(Static):
    """Hidden while the line runs; two full-width lines while it is stopped."""

    DEFAULT_CSS = """
    LineBanner {
        display: none;
        height: auto;
        padding: 0 1;
        background: $error 70%;
        color: $text;
        text-style: bold;
    }
    LineBanner.-shown {
        display: block;
    }
    LineBanner.-rolling {
        background: $warning 70%;
    }
    """

    def __init__(self, clock: Callable[[], datetime], *, read_only: bool = False, id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.read_only = read_only
        self.view: LineView | None = None
        self._ticking = False

    def on_mount(self) -> None:
        self.set_interval(1.0, self._tick)

    @property
    def shown(self) -> bool:
        return self.view is not None and bool(self.view.stopped)

    def show(self, view: LineView | None) -> None:
        """Show ``view`` (None or a running line: hide)."""
        self.view = view
        self.set_class(self.shown, "-shown")
        self._draw()

    def _tick(self) -> None:
        if self.shown:  # the countdown, and how long ago the line stopped
            self._draw()

    def _draw(self) -> None:
        view = self.view
        if view is None or not view.stopped:
            self.update("")
            return
        now = self.clock()
        if not view.line.stopped:  # only other environments' lines are stopped
            self.set_class(False, "-rolling")
            self.update(Content("\n".join(elsewhere_lines(view, now))))
            return
        first, second, tone = describe(view, now, read_only=self.read_only)
        self.set_class(tone == "rolling", "-rolling")
        self.update(Content("\n".join([first, second, *elsewhere_lines(view, now)])))
