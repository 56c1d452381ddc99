"""The bottom line of key hints, drawn from the one action table.

Textual's Footer is a container with a widget per key (and 600 tokens of CSS to
parse on every start); the dashboard's keys never change while it runs, so one
widget drawing one line does, for about 4 ms less of the first frame. A click on a
hint runs its action, as a click on a Footer key does.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from rich.segment import Segment
from textual import events
from textual.strip import Strip
from textual.widget import Widget

PALETTE = ("^p", "palette", "app.command_palette")


class KeyBar(Widget):
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        background: $footer-background;
    }
    KeyBar > .keybar--key {
        color: $footer-key-foreground;
        background: $footer-key-background;
        text-style: bold;
    }
    KeyBar > .keybar--title { color: $footer-description-foreground; }
    KeyBar > .keybar--rule { color: $foreground 20%; }
    """
    COMPONENT_CLASSES = {"keybar--key", "keybar--title", "keybar--rule"}
    ALLOW_SELECT = False

    def __init__(self, hints: Sequence[tuple[str, str, str]], *, id: str | None = None) -> None:
        """``hints``: (key as shown, title, action) each, left to right; the palette goes right."""
        super().__init__(id=id)
        self.hints = list(hints)

    def _spans(self) -> list[tuple[str, str, str, int, int]]:
        """(key, title, action, first column, column after) of each hint, the palette last."""
        spans, x = [], 0
        for key, title, action in self.hints:
            width = cell_len(key) + cell_len(title) + 3  # " key " then "title "
            spans.append((key, title, action, x, x + width))
            x += width
        key, title, action = PALETTE
        width = cell_len(key) + cell_len(title) + 4  # "▏" " key " "title "
        start = max(x, self.size.width - width)
        spans.append((key, title, action, start, start + width))
        return spans

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        key_style = base + self.get_component_rich_style("keybar--key")
        title_style = base + self.get_component_rich_style("keybar--title")
        segments: list[Segment] = []
        x = 0
        for key, title, _action, start, _stop in self._spans():
            if start > x:
                segments.append(Segment(" " * (start - x), base))
                segments.append(Segment("▏", base + self.get_component_rich_style("keybar--rule")))
                start += 1
            segments += [Segment(f" {key} ", key_style), Segment(f"{title} ", title_style)]
            x = start + cell_len(key) + cell_len(title) + 3
        return Strip(segments).extend_cell_length(width, base).crop(0, width)

    async def on_click(self, event: events.Click) -> None:
        for _key, _title, action, start, stop in self._spans():
            if start <= event.x < stop:
                event.stop()
                await self.app.run_action(action, self.screen)
                return
