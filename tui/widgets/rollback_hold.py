"""The question ``!`` asks when a rollback would take an expand back out: roll back anyway, or not.

A rollback to a deploy that predates the expand commit of a migration that is migrating or
further along in that environment puts code live that cannot read the data's new shape
(:func:`backend.migrations.rollback_holds`). Nothing has run or been written when this opens.
It names each migration, its phase and its expand commit, and takes an explicit answer with
a key other than the one that opened it: ``y`` rolls back anyway, ``n`` or esc keeps the
line running. ``!`` again (a second press out of habit) answers nothing and says so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from backend.text import clean_line

if TYPE_CHECKING:
    from backend.migrations import Hold

CLI_HINT = re.compile(r"\s*\(--despite-migration [^)]*\)\s*\Z")  # the command line's way out; here it is y


def explain(env: str, target: str, holds: Sequence[Hold]) -> Content:
    many = len(holds) > 1
    lines = [
        Content.assemble(f"Rolling {env} back to ", (target[:7], "bold"), " would put code live that predates "
                         + ("these migrations' expand commits" if many else "a migration's expand commit")
                         + ". The data has moved to the new shape already, and the old code cannot read it."),
        Content(""),
    ]
    for hold in holds:
        lines.append(Content.assemble("• ", (clean_line(hold.name), "bold"),
                                      f" — {hold.phase.replace('_', ' ')} — expand {hold.expand[:7]}"))
        if hold.message:
            lines.append(Content.styled(f"  {CLI_HINT.sub('', clean_line(hold.message))}", "dim"))
    lines += [
        Content(""),
        Content("Nothing runs until you choose. The line keeps running meanwhile."),
        Content(""),
        Content.assemble(("  y ", "bold reverse $error"), "  roll back anyway"),
        Content.assemble(("  n ", "bold reverse $success"), "  or esc: keep running, roll nothing back"),
    ]
    return Content("\n").join(lines)


class RollbackHoldModal(ModalScreen[bool]):
    """True: roll back anyway (despite these holds); False: keep running."""

    DEFAULT_CSS = """
    RollbackHoldModal {
        align: center middle;
        background: $background 60%;
    }
    RollbackHoldModal > Vertical {
        width: 84;
        height: auto;
        max-height: 90%;
        border: thick $error;
        padding: 1 2;
        background: $surface;
    }
    RollbackHoldModal #hold-hint {
        height: auto;
        color: $warning;
    }
    """
    BINDINGS = [
        Binding("y", "answer(True)", "Roll back anyway", id="hold-despite"),
        Binding("n,escape", "answer(False)", "Keep running", id="hold-keep"),
        Binding("exclamation_mark", "not_this_key", show=False, id="hold-not-bang"),
    ]

    def __init__(self, env: str, target: str, holds: Sequence[Hold]) -> None:
        super().__init__()
        self.env = env
        self.target = target
        self.holds = tuple(holds)

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            names = ", ".join(clean_line(hold.name) for hold in self.holds)
            box.border_title = Content(f"Rollback of {clean_line(self.env)} held: {names}")
            box.border_subtitle = "y: roll back anyway · n or esc: keep running"
            yield Static(explain(clean_line(self.env), self.target, self.holds), id="hold-text")
            yield Static("", id="hold-hint")

    def action_answer(self, despite: bool) -> None:
        self.dismiss(despite)

    def action_not_this_key(self) -> None:
        self.query_one("#hold-hint", Static).update(
            Content("! does not answer this: y rolls back anyway, n or esc keeps running."))
