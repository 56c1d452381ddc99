"""The bottom line of key hints, drawn from the one action table.

Textual's Footer is a container with a widget per key (and 600 tokens of CSS to
parse on every start); the dashboard's keys never change while it runs, so one
widget drawing one line does, for 12M fewer instructions (1%) before the first frame
(callgrind, main thread). A click on a hint runs its action, as a click on a Footer
key does.
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

    def _spans(self) -> tuple[list[tuple[str, str, str, int, int]], tuple[str, str, str, int, int]]:
        """(key, title, action, first column, column after) of each hint, and of the palette's,
        which keeps the right end of the line: on a narrow terminal the hints are cut before it."""
        spans, x = [], 0
        for key, title, action in self.hints:
            width = cell_len(key) + cell_len(title) + 3  # " key " then "title "
            spans.append((key, title, action, x, x + width))
            x += width
        key, title, action = PALETTE
        width = cell_len(key) + cell_len(title) + 4  # "▏" " key " "title "
        start = max(0, self.size.width - width)
        return spans, (key, title, action, start, start + width)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        key_style = base + self.get_component_rich_style("keybar--key")
        title_style = base + self.get_component_rich_style("keybar--title")
        hints, (key, title, _action, start, _stop) = self._spans()
        left: list[Segment] = []
        for hint_key, hint_title, _, _, _ in hints:
            left += [Segment(f" {hint_key} ", key_style), Segment(f"{hint_title} ", title_style)]
        palette = [Segment("▏", base + self.get_component_rich_style("keybar--rule")),
                   Segment(f" {key} ", key_style), Segment(f"{title} ", title_style)]
        line = Strip(left).extend_cell_length(start, base).crop(0, start)
        return Strip([*line, *palette]).crop(0, width)

    async def on_click(self, event: events.Click) -> None:
        hints, palette = self._spans()
        for _key, _title, action, start, stop in [palette, *hints]:  # the palette's is on top
            if start <= event.x < stop:
                event.stop()
                await self.app.run_action(action, self.screen)
                return
