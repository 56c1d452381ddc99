"""Every dashboard action in one table: the key bindings, the key bar and the command palette
are all built from it (as dolphie does), so the palette always offers every action.

:data:`ACTIONS` are the main screen's; :data:`BACKLOG_ACTIONS` the migrations screen's (``b``).
A ``writes`` action is not offered on a ``--read-only`` dashboard: not bound, not in the key
bar, the palette or help."""

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
    writes: bool = False  # changes the line or the log: not offered on a --read-only dashboard


ACTIONS: tuple[Action, ...] = (
    Action("question_mark", "help", "Help", "Show the keys and what each one does", True, "?"),
    Action("slash", "filter", "Filter", "Filter the loaded deploys: sha, status, person, commits", True, "/"),
    Action("right_square_bracket", "next_env", "Next environment", "Show the next environment", True, "]"),
    Action("left_square_bracket", "previous_env", "Previous environment", "Show the previous environment", False, "["),
    Action("r", "refresh", "Refresh", "Reload deploys and commits now", False),
    Action("o", "toggle_output", "Output", "Show or hide the selected deploy's output", False),
    Action("e", "events", "Events", "Who did what: deploys, stops, rollbacks, cancels, resumes, health", True),
    # Not in the key bar (! must stay visible at 90 columns): the overdue line names b when it matters.
    Action("b", "backlog", "Backlog", "Migrations: the cleanup backlog, most urgent first, per environment "
           "(note, snooze, waive, finish)", False),
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
    Action("u", "release_held", "Release held commit", "Release a commit held after a rollback (the selected "
           "pending one, or choose; or all of them), with a reason: deploys may ship it again", False, writes=True),
    Action("q", "app.quit", "Quit", "Leave andon", True),
)


BACKLOG_ACTIONS: tuple[Action, ...] = (
    Action("n", "note", "Note", "Write a note on the selected migration (its environment): who is on it, what "
           "it waits for", True, writes=True),
    Action("z", "snooze", "Snooze", "Quiet the selected cleanup's reminders until a date, with a reason "
           "(the due date stays)", True, writes=True),
    Action("w", "waive", "Waive", "Waive the selected migration in its environment, with a reason: it leaves "
           "the backlog", True, writes=True),
    Action("f", "finish", "Finish", "Record the selected migration as finished in its environment: its "
           "cleanup (the contract) is due", True, writes=True),
    Action("r", "refresh", "Refresh", "Read the backlog again now (git and the log)", False),
    Action("escape,q,b", "close", "Close", "Back to the deploys", True, "esc"),
)


def bindings(actions: tuple[Action, ...] = ACTIONS) -> list[BindingType]:
    return [
        Binding(a.key, a.action, a.title, show=a.footer, key_display=a.key_display, id=a.action.split(".")[-1])
        for a in actions
    ]


def offered(read_only: bool, actions: tuple[Action, ...] = ACTIONS) -> tuple[Action, ...]:
    """The actions a dashboard offers (key bar, palette, help): none that write when read-only."""
    return tuple(a for a in actions if not (read_only and a.writes))
