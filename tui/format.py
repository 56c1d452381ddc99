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


def moment(stamp: object) -> datetime | None:
    """A log time as a datetime, or None if it is not one (another program may write anything)."""
    if not stamp or not isinstance(stamp, str):
        return None
    try:
        return from_iso(stamp)
    except (ValueError, OverflowError):
        return None


def when(stamp: str | None) -> str:
    """A log time as ``2026-11-18 11:54`` (UTC, as everywhere in andon); "?" if it is not a time."""
    if not stamp:
        return "-"
    if isinstance(stamp, str) and len(stamp) == 27 and stamp[10] == "T" and stamp[26] == "Z":
        # As andon writes it (to_iso), UTC already: checked, then cut (5x faster than formatting).
        try:
            datetime.fromisoformat(stamp)
        except ValueError:
            return "?"
        return stamp[:16].replace("T", " ")
    parsed = moment(stamp)
    return parsed.strftime("%Y-%m-%d %H:%M") if parsed else "?"


def age(stamp: str | None, now: datetime) -> str:
    """How long ago ``stamp`` was ("3h"); "?" if it is not a time."""
    if not stamp:
        return ""
    parsed = moment(stamp)
    if parsed is None:
        return "?"
    seconds = max(0, int((now - parsed).total_seconds()))
    for size, unit in ((86400 * 7, "w"), (86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def duration(start: str | None, end: str | None) -> str:
    """From ``start`` to ``end`` ("2m 5s"); "" unless both are times."""
    begun, ended = moment(start), moment(end)
    if begun is None or ended is None:
        return ""
    seconds = max(0, int((ended - begun).total_seconds()))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds}s"


def status_text(status: str, trigger: str, colours: dict[str, str], damaged: str = "") -> Text:
    """The status with its icon and colour; a row another program wrote badly is "⚠ damaged"."""
    if damaged:
        return Text("⚠ damaged", style=theme_colour(colours, "warning"))
    text = Text(f"{STATUS_ICON.get(status, '?')} {status}", style=theme_colour(colours, STATUS_VARIABLE.get(status, "")))
    if trigger in ("rollback", "auto-rollback"):
        text.append(" ↩", style="bold")
    return text


def theme_colour(colours: dict[str, str], variable: str) -> str:
    """A theme variable's colour as a Rich style (the ANSI themes' "ansi_green" is Rich's "green")."""
    return colours.get(variable, "").removeprefix("ansi_")


def plain(value: str | None) -> Text:
    """Untrusted text for a cell: literal, never markup."""
    return Text(value or "", no_wrap=True, overflow="ellipsis")
