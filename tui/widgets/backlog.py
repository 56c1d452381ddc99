"""The migration backlog as rows and the selected row in full: what the migrations screen draws.

A row per (migration, environment), in the order :class:`backend.migrations.Backlog` keeps
them (most urgent first): severity, name, environment, phase, progress (share done, rate,
time left), age in the phase, due date, snoozes, evidence and the next thing to do. The
detail under the list says everything about the selected row, a contract shipped before
its migration finished in a loud line of its own. Every name, note, reason and grep line
came from git or the log: plain ``Text``/``Content``, cleaned once more here, never markup.

The functions take the time to measure ages against (the screen's clock), so a fixed
clock draws the same rows every time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from rich.text import Text
from textual.content import Content
from textual.widgets import Static

from backend.text import clean_line
from tui.format import theme_colour
from tui.widgets.rowlist import Column, RowList

if TYPE_CHECKING:
    from backend.migrations import Progress, Status

COLUMNS = (
    Column("severity", "severity", 11),
    Column("name", "migration", 21),
    Column("env", "env", 10),
    Column("phase", "phase", 16),
    Column("progress", "progress", 16),
    Column("age", "age", 4, "right"),
    Column("due", "due", 5),
    Column("snoozes", "zz", 2, "right"),
    Column("evidence", "evidence", 8),
    Column("next", "next", 80),
)
# (mark and word, theme variable) of each severity, and of what outranks "ok" without one.
SEVERITY = {
    "critical": ("!! critical", "error"),
    "overdue": ("! overdue", "error"),
    "due_soon": ("◔ due soon", "warning"),
    "ok": ("· ok", ""),
}
STALLED = ("◷ stalled", "warning")
FLAGGED = ("⚠ flagged", "error")
ENDED = {"done": ("✔ done", "success"), "aborted": ("– ended", ""), "waived": ("– ended", "")}
FLAG_TEXT = {
    "contract_before_finish": "CONTRACT LIVE BEFORE THE MIGRATION FINISHED: the old-shape code was removed "
                              "while data was still moving",
    "expand_rolled_back": "EXPAND ROLLED BACK: progress was reported here, but the live deploy no longer "
                          "contains the expand: old code runs against the new shape",
}


# The keys worth trying in each phase (the log has the last word: a refused step says why).
KEYS = {
    "expand_pending": "n note · w waive",
    "expanded": "n note · f finish · z snooze · w waive",
    "migrating": "n note · f finish · z snooze · w waive",
    "cleanup_due": "n note · z snooze · w waive",
}


def key(status: Status) -> str:
    """A row's key: the migration and its environment."""
    return f"{status.name}\x00{status.env}"


def severity_word(status: Status) -> tuple[str, str]:
    """The severity cell's text and theme variable: the severity, else stalled or flagged, else ok."""
    if status.severity != "ok" and status.severity in SEVERITY:
        return SEVERITY[status.severity]
    if status.stalled:
        return STALLED
    if status.flags:
        return FLAGGED
    if status.phase in ENDED:
        return ENDED[status.phase]
    return SEVERITY.get(status.severity, (status.severity, ""))


def count(number: float) -> str:
    """``950``, ``2.1k``, ``1.2M``: a count or a rate in a few columns."""
    size = abs(number)
    if size >= 1e6:
        return f"{number / 1e6:.1f}M"
    if size >= 1e4:
        return f"{number / 1e3:.0f}k"
    if size >= 1e3:
        return f"{number / 1e3:.1f}k"
    return f"{number:.0f}" if number == int(number) or size >= 10 else f"{number:.1f}"


def span(seconds: float) -> str:
    """A length of time in the unit that reads best: ``45s``, ``12m``, ``5h``, ``3d``, ``2w``."""
    seconds = max(0, int(seconds))
    for size, unit in ((86400 * 7, "w"), (86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def share(progress: Progress, *, fine: bool = False) -> str:
    """``34%`` of a known total (``34.2%`` when ``fine``: a running migration moves visibly), else the count done."""
    if progress.total:
        part = min(1.0, progress.done / progress.total)
        return f"{int(1000 * part) / 10:.1f}%" if fine and part < 1 else f"{int(100 * part)}%"
    return count(progress.done)


def progress_cell(status: Status, now: datetime) -> str:
    """``34% 2.1k/h 5h``: done, the rate and the time left; ``—`` before any progress."""
    progress = status.progress
    if progress is None:
        return "—"
    parts = [share(progress, fine=status.phase == "migrating")]
    if status.stalled:
        return f"{parts[0]} stalled"
    if progress.rate is not None:
        parts.append(f"{count(progress.rate)}/h")
    if progress.eta is not None and status.phase == "migrating":
        parts.append(span((progress.eta - now).total_seconds()))
    return " ".join(parts)


def evidence_cell(status: Status) -> str:
    evidence = status.evidence
    if evidence is None:
        return "—"
    return f"{evidence.count} ref{'s' if evidence.count != 1 else ''}" if evidence.count else "clean"


def date(moment: datetime | None) -> str:
    """``11-14``: the year goes without saying (the detail has it)."""
    return moment.strftime("%m-%d") if moment is not None else "—"


def cells(status: Status, now: datetime, colours: dict[str, str]) -> list[Text]:
    word, variable = severity_word(status)
    loud = "bold " if status.severity == "critical" or status.flags else ""
    since = status.since
    return [
        Text(word, style=(loud + theme_colour(colours, variable)).strip() if variable else "dim"),
        Text(clean_line(status.name), style="bold"),
        Text(clean_line(status.env)),
        Text(status.phase.replace("_", " ") + (" ⚠" if status.flags else "")),
        Text(progress_cell(status, now)),
        Text(span((now - since).total_seconds()) if since is not None else "—", style="dim"),
        Text(date(status.due)),
        Text(str(status.snoozes) if status.snoozes else "", style="dim"),
        Text(evidence_cell(status)),
        Text(clean_line(status.next_step)),
    ]


class BacklogList(RowList):
    """Rows keyed by (migration, environment), most urgent first."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(COLUMNS, zebra=True, id=id)

    def show(self, statuses: Sequence[Status], now: datetime, colours: dict[str, str], keep: str | None) -> None:
        self.replace([(key(status), cells(status, now, colours)) for status in statuses], keep=keep)


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else "—"


def detail(status: Status, now: datetime, *, read_only: bool = False) -> Content:
    """Everything about one row, a line a fact; flags first, loudly."""
    lines: list[Content] = []
    name, env = clean_line(status.name), clean_line(status.env)
    since = f" since {when(status.since)} ({span((now - status.since).total_seconds())})" if status.since else ""
    phase = status.phase.replace("_", " ")
    lines.append(Content.assemble((name, "bold"), f" · {status.kind} · {env} — ", (phase, "bold"), since))
    for flag in status.flags:
        lines.append(Content.assemble((f" ⚠ {FLAG_TEXT.get(flag, clean_line(flag))} ", "bold reverse $error")))
    word, variable = severity_word(status)
    due = f"due {when(status.due)}" if status.due else "no due date yet"
    if status.due is not None and status.due <= now:
        due += f" ({span((now - status.due).total_seconds())} ago)"
    elif status.due is not None:
        due += f" (in {span((status.due - now).total_seconds())})"
    snoozed = ""
    if status.snoozes:
        snoozed = f" · snoozed {status.snoozes}×" + (f", reminders wait until {when(status.snoozed_until)}"
                                                      if status.snoozed_until and status.snoozed_until > now else "")
    lines.append(Content.assemble((word, f"bold ${variable}" if variable else "dim"), f" · {due}{snoozed}"))
    progress = status.progress
    if progress is not None:
        fine = status.phase == "migrating"
        done = f"{progress.done:,}" + (f" of {progress.total:,} ({share(progress, fine=fine)})" if progress.total
                                       else " done")
        rate = f" · {count(progress.rate)}/h" if progress.rate is not None else ""
        eta = f" · done about {when(progress.eta)}" if progress.eta is not None and status.phase == "migrating" else ""
        heard = f" · last report {span((now - progress.at).total_seconds())} ago" if progress.at else ""
        stalled = ("  STALLED", "bold $warning") if status.stalled else ""
        lines.append(Content.assemble(f"Progress: {done}{rate}{eta}{heard}", stalled))
    commits = f"Expand: {status.expand[:7] if status.expand else '— (added by hand)'}"
    commits += f" · Contract: {status.contract[:7]}" if status.contract else " · Contract: not yet"
    lines.append(Content(commits))
    evidence = status.evidence
    if evidence is not None:
        lines.append(Content.assemble(("Evidence: ", "bold"), clean_line(evidence.text)))
        for place in evidence.places[:3]:
            lines.append(Content(f"  ◦ {clean_line(place.path)}:{place.line}: {clean_line(place.text).strip()}"))
    if status.reason:
        lines.append(Content.assemble(("Reason: ", "bold"), clean_line(status.reason)))
    if status.note:
        lines.append(Content.assemble(("Note: ", "bold"), clean_line(status.note)))
    lines.append(Content.assemble(("Next: ", "bold $accent"), clean_line(status.next_step)))
    if not read_only:
        lines.append(Content.styled(KEYS.get(status.phase, "n note"), "dim"))
    return Content("\n").join(lines)


class BacklogDetail(Static):
    """The selected row in full (or a word about an empty backlog)."""

    def show(self, status: Status | None, now: datetime, *, read_only: bool = False, empty: str = "") -> None:
        self.update(detail(status, now, read_only=read_only) if status is not None else Content(empty))
