"""The help screen: every key and what it does, from the one action table."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.commands import ACTIONS

ABOUT = (
    "andon shows what is live in each environment, every deploy with the commits it "
    "shipped, and the commits still waiting to go out. Times are UTC. The screen follows "
    "the deploy log by itself: CI deploys and teammates' changes appear within a second."
)


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

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body") as body:
            body.border_title = "andon — help"
            body.border_subtitle = "esc to close"
            yield Static(Content(ABOUT), id="help-about")
            keys = [("ctrl+p", "Command palette: every action, searchable")]
            keys += [(a.key_display or a.key, f"{a.title}: {a.help}") for a in ACTIONS]
            keys += [("esc", "Back: close the filter or this screen"), ("↑ ↓ pgup pgdn end", "Move through deploys (more load at the end)")]
            lines = [Content.from_markup("[b]$key[/b]  $what", key=f"{key:>18}", what=what) for key, what in keys]
            yield Static(Content("\n").join(lines), id="help-keys")

    def action_dismiss(self, result: None = None) -> None:  # type: ignore[override]
        self.dismiss(None)
