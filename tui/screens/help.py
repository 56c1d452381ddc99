"""The help screen: every key and what it does, from the one action table."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.commands import offered

ABOUT = (
    "andon shows what is live in each environment, every deploy with the commits it "
    "shipped, and the commits still waiting to go out. Times are UTC. The screen follows "
    "the deploy log by itself: CI deploys and teammates' changes appear within a second. "
    "When something goes wrong, ! stops the line for the environment shown, tells everyone, and "
    "rolls back to the last good deploy; the rollback waits out a short grace first, in which esc "
    "or c cancels it (from any dashboard). Resuming the line (R) is always a person's decision."
)
READ_ONLY = "This dashboard is read-only: it cannot stop the line, roll back or resume."


class HelpScreen(ModalScreen[None]):
    # Here rather than in app.tcss: parsed when help first opens, not before the first frame.
    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    #help-body {
        width: 96;
        max-height: 80%;
        height: auto;
        border: round $primary;
        padding: 1 2;
        background: $surface;
    }
    #help-about {
        margin-bottom: 1;
    }
    """
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close", id="close-help")]

    def __init__(self, *, read_only: bool = False) -> None:
        super().__init__()
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body") as body:
            body.border_title = "andon — help"
            body.border_subtitle = "esc to close"
            yield Static(Content(ABOUT + (f"\n\n{READ_ONLY}" if self.read_only else "")), id="help-about")
            keys = [("ctrl+p", "Command palette: every action, searchable")]
            keys += [(a.key_display or a.key, f"{a.title}: {a.help}") for a in offered(self.read_only)]
            keys += [("esc", "Back: close the filter or this screen"), ("↑ ↓ pgup pgdn end", "Move through deploys (more load at the end)")]
            lines = [Content.from_markup("[b]$key[/b]  $what", key=f"{key:>18}", what=what) for key, what in keys]
            yield Static(Content("\n").join(lines), id="help-keys")

    def action_dismiss(self, result: None = None) -> None:  # type: ignore[override]
        self.dismiss(None)
