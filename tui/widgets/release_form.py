"""The form behind ``u``: which held commit may ship again, and why.

It lists the commits held in the environment (the selected pending commit first chosen when it
is one of them), newest first, then, when several are held, "all N held commits" (a rollback of
a deploy whose build broke, not its code, is one decision: ``andon release --all``); it takes a
reason; enter releases, esc changes nothing. Nothing is written here: the screen writes the
:class:`Release` in a thread worker. Subjects are data: shown as plain ``Content``, never markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

if TYPE_CHECKING:
    from backend.held import HeldCommit


ALL = "all-held"  # the option releasing every held commit (a SHA is hex: never this)


class Release(NamedTuple):
    sha: str  # "" when every_held
    reason: str
    every_held: bool = False


class ReleaseForm(ModalScreen[Release | None]):
    """A :class:`Release`, or None (esc)."""

    DEFAULT_CSS = """
    ReleaseForm {
        align: center middle;
        background: $background 60%;
    }
    ReleaseForm > Vertical {
        width: 84;
        height: auto;
        max-height: 90%;
        border: round $error;
        padding: 1 2;
        background: $surface;
    }
    ReleaseForm .form-about { margin-bottom: 1; }
    ReleaseForm OptionList { height: auto; max-height: 10; margin-bottom: 1; }
    ReleaseForm .form-problem { color: $error; height: auto; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="release-cancel")]

    def __init__(self, env: str, commits: Sequence[HeldCommit], chosen: str | None = None) -> None:
        super().__init__()
        self.env = env
        self.commits = list(commits)
        self.chosen = chosen

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = Content(f"Release a held commit · {self.env}")
            box.border_subtitle = "enter to release · esc to cancel"
            yield Static(Content(f"A rollback took these commits out of {self.env}; deploys containing one are "
                                 "refused until it is reverted or released. A fix on top is not enough by itself: "
                                 "you decide."), classes="form-about")
            options: list[Option | None] = [
                Option(Content.assemble((commit.short_sha, "bold"), "  ", commit.subject), id=commit.sha)
                for commit in self.commits]
            if len(self.commits) > 1:
                options += [None, Option(Content.assemble((f"all {len(self.commits)} held commits", "bold"),
                                                          "  the build broke, not the code"), id=ALL)]
            yield OptionList(*options, id="release-commit")
            yield Input(placeholder="why it may ship again (kept in the log)", id="release-reason")
            yield Static("", classes="form-problem")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        index = next((n for n, commit in enumerate(self.commits) if commit.sha == self.chosen), 0)
        options.highlighted = index
        self.query_one(Input).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        reason = event.value.strip()
        if not reason:
            self.query_one(".form-problem", Static).update(Content("Say why it may ship again (esc cancels)."))
            return
        options = self.query_one(OptionList)
        index = options.highlighted if options.highlighted is not None else 0
        if options.get_option_at_index(index).id == ALL:
            self.dismiss(Release("", reason, every_held=True))
            return
        self.dismiss(Release(self.commits[index].sha, reason))

    def action_cancel(self) -> None:
        self.dismiss(None)
