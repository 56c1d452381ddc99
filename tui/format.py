"""Turning backend data into terminal text. Data always goes in as plain ``Text``, never markup."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text

from backend.models import FAILED, INTERRUPTED, RUNNING, SUCCEEDED, UNHEALTHY, from_iso

# Theme variable for each status (colours only through the theme).
STATUS_VARIABLE = {
    SUCCEEDED: "success",
    FAILED: "error",
    INTERRUPTED: "warning",
    UNHEALTHY: "error",
    RUNNING: "accent",
}
STATUS_ICON = {SUCCEEDED: "✔", FAILED: "✘", INTERRUPTED: "■", UNHEALTHY: "✚", RUNNING: "▶"}


def when(stamp: str | None) -> str:
    """A log time as ``2026-11-18 11:54`` (UTC, as everywhere in andon)."""
    return stamp[:16].replace("T", " ") if stamp else "-"


def age(stamp: str | None, now: datetime) -> str:
    if not stamp:
        return ""
    seconds = max(0, int((now - from_iso(stamp)).total_seconds()))
    for size, unit in ((86400 * 7, "w"), (86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def duration(start: str | None, end: str | None) -> str:
    if not start or not end:
        return ""
    seconds = max(0, int((from_iso(end) - from_iso(start)).total_seconds()))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds}s"


def status_text(status: str, trigger: str, colours: dict[str, str]) -> Text:
    # The ANSI themes name colours "ansi_green"; Rich knows them as "green".
    style = colours.get(STATUS_VARIABLE.get(status, ""), "").removeprefix("ansi_")
    text = Text(f"{STATUS_ICON.get(status, '?')} {status}", style=style)
    if trigger in ("rollback", "auto-rollback"):
        text.append(" ↩", style="bold")
    return text


def plain(value: str | None) -> Text:
    """Untrusted text for a cell: literal, never markup."""
    return Text(value or "", no_wrap=True, overflow="ellipsis")
