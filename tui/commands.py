"""Every dashboard action in one table: the key bindings, the key bar and the command palette
are all built from it (as dolphie does), so the palette always offers every action."""

from __future__ import annotations

from typing import NamedTuple

from textual.binding import Binding, BindingType


class Action(NamedTuple):
    key: str
    action: str
    title: str
    help: str
    footer: bool = False
    key_display: str | None = None
    writes: bool = False  # changes the line: not offered on a --read-only dashboard


ACTIONS: tuple[Action, ...] = (
    Action("question_mark", "help", "Help", "Show the keys and what each one does", True, "?"),
    Action("slash", "filter", "Filter", "Filter the loaded deploys: sha, status, person, commits", True, "/"),
    Action("right_square_bracket", "next_env", "Next environment", "Show the next environment", True, "]"),
    Action("left_square_bracket", "previous_env", "Previous environment", "Show the previous environment", False, "["),
    Action("r", "refresh", "Refresh", "Reload deploys and commits now", False),
    Action("o", "toggle_output", "Output", "Show or hide the selected deploy's output", False),
    Action("e", "events", "Events", "Who did what: deploys, stops, rollbacks, cancels, resumes, health", True),
    Action("m", "messages", "Messages", "Chat messages: what went out, what waits, what could not be delivered",
           False),
    Action("exclamation_mark", "stop_and_roll_back", "Stop & roll back",
           "Stop the line and roll back to the last good deploy (esc or c cancels it during the grace)",
           True, "!", writes=True),
    Action("c", "cancel_rollback", "Cancel rollback", "Cancel the rollback while it waits out its grace "
           "(the line stays stopped)", False, writes=True),
    Action("R", "resume_line", "Resume line", "Resume the stopped line: deploys may go out again", False, "R",
           writes=True),
    Action("S", "stop_line", "Stop line", "Stop the line without rolling back: deploys are refused", False, "S",
           writes=True),
    Action("q", "app.quit", "Quit", "Leave andon", True),
)


def bindings() -> list[BindingType]:
    return [
        Binding(a.key, a.action, a.title, show=a.footer, key_display=a.key_display, id=a.action.split(".")[-1])
        for a in ACTIONS
    ]


def offered(read_only: bool) -> tuple[Action, ...]:
    """The actions a dashboard offers (key bar, palette, help): none that change the line when read-only."""
    return tuple(a for a in ACTIONS if not (read_only and a.writes))
