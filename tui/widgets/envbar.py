"""The environments as a row of names over an underline, the one shown highlighted.

It looks like Textual's Tabs, but Tabs is a dozen widgets (a scroll container, one
widget per tab, an animated underline) and cost about 12 ms of the dashboard's first
frame; this is one widget that draws two lines of segments. It takes no focus: `[`
and `]` (and the command palette) switch environments, a click chooses one. Names
come from the deploy log: they are drawn as plain segments, never read as markup.

Each environment with health checks has its health before its name, as a mark that
reads without colour too (● healthy, ▲ degraded, ✘ down, ? unknown) in its theme colour;
one without checks has no mark (:meth:`EnvBar.set_health`).
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.cells import cell_len
from rich.segment import Segment
from textual import events
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from backend.text import clean_line


class EnvBar(Widget):
    DEFAULT_CSS = """
    EnvBar {
        height: 2;
    }
    EnvBar > .envbar--name { color: $foreground 50%; }
    EnvBar > .envbar--active { color: $foreground; text-style: bold; }
    EnvBar > .envbar--bar { color: $foreground 10%; }
    EnvBar > .envbar--bar-active { color: $block-cursor-background; }
    EnvBar > .envbar--healthy { color: $success; }
    EnvBar > .envbar--degraded { color: $warning; text-style: bold; }
    EnvBar > .envbar--down { color: $error; text-style: bold; }
    EnvBar > .envbar--unknown { color: $foreground 50%; }
    """
    COMPONENT_CLASSES = {"envbar--name", "envbar--active", "envbar--bar", "envbar--bar-active",
                         "envbar--healthy", "envbar--degraded", "envbar--down", "envbar--unknown"}
    MARKS = {"healthy": "●", "degraded": "▲", "down": "✘", "unknown": "?"}
    ALLOW_SELECT = False

    class Chosen(Message):
        """A name was clicked."""

        def __init__(self, bar: EnvBar, name: str) -> None:
            super().__init__()
            self.bar = bar
            self.name = name

        @property
        def control(self) -> EnvBar:
            return self.bar

    def __init__(self, names: Iterable[str] = (), active: str | None = None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.names: list[str] = list(names)
        self.active = active
        self.health: dict[str, str] = {}  # environment -> healthy, degraded, down, unknown

    def add(self, name: str) -> None:
        if name not in self.names:
            self.names.append(name)
            self.refresh()

    def show(self, name: str | None) -> None:
        """Highlight ``name`` (the environment the screen now shows)."""
        if name != self.active:
            self.active = name
            self.refresh()

    def set_health(self, states: dict[str, str]) -> None:
        """Each environment's health (those not in ``states`` have no checks: no mark)."""
        states = {name: state for name, state in states.items() if state in self.MARKS}
        if states != self.health:
            self.health = states
            self.refresh()

    def mark(self, name: str) -> str:
        """The health mark drawn before ``name`` ("" when it has no checks)."""
        state = self.health.get(name)
        return self.MARKS[state] if state else ""

    def neighbour(self, step: int) -> str | None:
        """The name ``step`` places after the highlighted one, going round."""
        if not self.names:
            return None
        here = self.names.index(self.active) if self.active in self.names else -step
        return self.names[(here + step) % len(self.names)]

    # -- drawing -----------------------------------------------------------------------

    def _labels(self) -> list[tuple[str, int, int]]:
        """(name, first column, column after it) for each name, drawn as " name " (" ● name ")."""
        spans, x = [], 0
        for name in self.names:
            width = cell_len(clean_line(name)) + 2 + (2 if self.mark(name) else 0)
            spans.append((name, x, x + width))
            x += width
        return spans

    def _scroll(self, spans: list[tuple[str, int, int]]) -> int:
        """How many columns to leave out on the left so the highlighted name is in view."""
        width = self.size.width
        end = next((stop for name, _, stop in spans if name == self.active), 0)
        return max(0, end - width)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        spans = self._labels()
        segments: list[Segment] = []
        for name, start, stop in spans:
            active = name == self.active
            if y == 0:
                style = self.get_component_rich_style("envbar--active" if active else "envbar--name")
                if mark := self.mark(name):
                    colour = self.get_component_rich_style(f"envbar--{self.health[name]}")
                    segments += [Segment(" ", base + style), Segment(mark, base + style + colour)]
                segments.append(Segment(f" {clean_line(name)} ", base + style))
            elif y == 1:
                style = self.get_component_rich_style("envbar--bar-active" if active else "envbar--bar")
                segments.append(Segment("━" * (stop - start), base + style))
        used = spans[-1][2] if spans else 0
        if y == 1:
            segments.append(Segment("━" * max(0, width - used), base + self.get_component_rich_style("envbar--bar")))
        else:
            segments.append(Segment(" " * max(0, width - used), base))
        offset = self._scroll(spans)
        return Strip(segments).crop(offset, offset + width)

    def on_click(self, event: events.Click) -> None:
        spans = self._labels()
        x = event.x + self._scroll(spans)
        for name, start, stop in spans:
            if start <= x < stop:
                event.stop()
                self.post_message(self.Chosen(self, name))
                return
