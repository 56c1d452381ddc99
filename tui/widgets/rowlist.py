"""A fast, read-only table: fixed columns, one row per line, a row cursor.

Textual's DataTable renders every cell through Rich (padding, wrapping, measuring);
on the dashboard's first frame that was the largest single cost. A deploy list needs
none of it: each row is turned into segments once, when it is set, and a line is
drawn by slicing them. Cells are plain ``Text`` (never markup), so untrusted text
stays literal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

# A row's cells, or a function that makes them: called when the row is first drawn
# or read, so a long list costs little until it is scrolled through.
Cells = Sequence[Text] | Callable[[], Sequence[Text]]


class Column(NamedTuple):
    key: str
    label: str
    width: int
    justify: str = "left"  # or "right"


class RowList(ScrollView, can_focus=True):
    """Rows of ``Text`` cells under a fixed header; ``RowHighlighted`` when the cursor moves."""

    DEFAULT_CSS = """
    RowList {
        background: $surface;
        overflow-x: hidden;
    }
    RowList > .rowlist--header { background: $panel; text-style: bold; }
    RowList > .rowlist--odd { background: $surface-lighten-1 20%; }
    RowList > .rowlist--cursor { background: $block-cursor-blurred-background; text-style: bold; }
    RowList:focus > .rowlist--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
        text-style: bold;
    }
    """
    COMPONENT_CLASSES = {"rowlist--header", "rowlist--odd", "rowlist--cursor"}
    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,ctrl+home", "first", "First", show=False),
        Binding("end,ctrl+end", "last", "Last", show=False),
    ]

    cursor_row: reactive[int] = reactive(0, always_update=True)

    class RowHighlighted(Message):
        def __init__(self, row_list: RowList, cursor_row: int, key: str) -> None:
            super().__init__()
            self.row_list = row_list
            self.cursor_row = cursor_row
            self.key = key

        @property
        def control(self) -> RowList:
            return self.row_list

    def __init__(self, columns: Sequence[Column], *, zebra: bool = False, id: str | None = None) -> None:
        super().__init__(id=id)
        self.columns = list(columns)
        self.zebra = zebra
        self._keys: list[str] = []
        self._cells: list[list[Text] | Callable[[], Sequence[Text]]] = []
        self._lines: list[list[Segment] | None] = []  # built when a row is first drawn
        self._index: dict[str, int] = {}
        self._highlighted: str | None = None  # the row last announced with RowHighlighted
        self._row_width = sum(c.width + 2 for c in self.columns)
        self._header = self._segments([Text(c.label) for c in self.columns])
        self._drawing: tuple[Style, int] | None = None  # (style, width) while lines are drawn

    # -- content ---------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self._keys)

    @property
    def rows(self) -> dict[str, int]:
        return self._index

    def clear(self) -> None:
        self._keys, self._cells, self._lines, self._index = [], [], [], {}
        self._highlighted = None
        self.set_reactive(RowList.cursor_row, 0)
        self._resized()

    def replace(self, rows: Sequence[tuple[str, Cells]], *, keep: str | None = None) -> None:
        """New rows, the cursor on ``keep`` if it is among them (else the first row).

        The cursor's row is announced only if it is another row than before, so
        redrawing the same list does not look like the user moving.
        """
        self._keys, self._cells, self._lines, self._index = [], [], [], {}
        self.set_reactive(RowList.cursor_row, 0)
        self.add_rows(rows, announce=False)
        if self._keys:
            self.cursor_row = self._index.get(keep, 0) if keep is not None else 0

    def add_rows(self, rows: Sequence[tuple[str, Cells]], *, announce: bool = True) -> None:
        first = not self._keys and bool(rows)
        for key, cells in rows:
            self._index[key] = len(self._keys)
            self._keys.append(key)
            self._cells.append(cells if callable(cells) else list(cells))
            self._lines.append(None)
        self._resized()
        if first and announce:
            self.cursor_row = 0

    def get_row_at(self, index: int) -> list[Text]:
        cells = self._cells[index]
        if callable(cells):
            cells = self._cells[index] = list(cells())
        return cells

    def get_row_index(self, key: str) -> int:
        return self._index[key]

    def update_cell(self, key: str, column: str, value: Text) -> None:
        index = self._index[key]
        position = next(i for i, c in enumerate(self.columns) if c.key == column)
        cells = self.get_row_at(index)
        if cells[position] == value:
            return
        cells[position] = value
        self._lines[index] = None
        self.refresh_line(index + 1)  # refresh_line takes the scroll offset into account

    def move_cursor(self, *, row: int) -> None:
        self.cursor_row = max(0, min(row, self.row_count - 1))

    def row_component(self, index: int) -> str | None:
        """A component class that styles row ``index`` (a subclass marks rows through CSS); None: plain."""
        return None

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor (None when the list is empty)."""
        return self._keys[self.cursor_row] if 0 <= self.cursor_row < len(self._keys) else None

    def _segments(self, cells: Sequence[Text]) -> list[Segment]:
        """One row as segments: each cell cut or padded to its column, one space between."""
        segments: list[Segment] = []
        for column, cell in zip(self.columns, cells, strict=False):
            if not cell.spans:  # one style for the whole cell (most cells): no need for Rich's render
                value = cell.plain
                if cell_len(value) > column.width:
                    value = set_cell_size(value, column.width - 1) + "…"
                pad = column.width - cell_len(value)
                style = _CONSOLE.get_style(cell.style, default="none") if isinstance(cell.style, str) else cell.style
                segments.append(Segment(" " * (pad + 1) if column.justify == "right" else " "))
                segments.append(Segment(value, style or None))
                if column.justify != "right":
                    segments.append(Segment(" " * pad))
                segments.append(Segment(" "))
                continue
            text = cell.copy()
            text.no_wrap = True
            text.end = ""
            if text.style:  # Text.render applies spans only; the base style becomes one
                text.stylize_before(text.style)
            if cell_len(text.plain) > column.width:
                text.truncate(column.width, overflow="ellipsis")
            pad = column.width - cell_len(text.plain)
            if column.justify == "right":
                segments.append(Segment(" " * (pad + 1)))
            else:
                segments.append(Segment(" "))
            segments.extend(text.render(_CONSOLE))
            if column.justify != "right":
                segments.append(Segment(" " * pad))
            segments.append(Segment(" "))
        # Every cell is exactly its column's width: a row's width is known, not measured.
        return [s for s in segments if s.text]

    def _resized(self) -> None:
        self.virtual_size = Size(self._row_width, self.row_count + 1)
        self.refresh()

    # -- drawing -----------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        # The widget's style and width, worked out once for all the lines drawn now
        # (rich_style walks every ancestor's styles: per line, it was a third of
        # drawing the list).
        self._drawing = (self.rich_style, self.size.width)
        try:
            return super().render_lines(crop)
        finally:
            self._drawing = None

    def render_line(self, y: int) -> Strip:
        base, width = self._drawing or (self.rich_style, self.size.width)
        if y == 0:
            return self._strip(self._header, base + self.get_component_rich_style("rowlist--header"), width)
        index = y - 1 + self.scroll_offset.y
        if index >= self.row_count:
            return Strip.blank(width, base)
        style = base
        marked = self.row_component(index)
        if marked is not None:
            style = base + self.get_component_rich_style(marked)
        if index == self.cursor_row:
            style = style + self.get_component_rich_style("rowlist--cursor")
        elif self.zebra and index % 2 and marked is None:
            style = base + self.get_component_rich_style("rowlist--odd")
        line = self._lines[index]
        if line is None:
            line = self._lines[index] = self._segments(self.get_row_at(index))
        return self._strip(line, style, width)

    def _strip(self, segments: list[Segment], style: Style, width: int) -> Strip:
        line = [Segment(s.text, style + s.style if s.style else style) for s in segments]
        used = self._row_width
        if used < width:
            line.append(Segment(" " * (width - used), style))
        elif used > width:
            kept: list[Segment] = []
            room = width
            for segment in line:
                size = cell_len(segment.text)
                if size <= room:
                    kept.append(segment)
                    room -= size
                else:
                    if room:
                        kept.append(Segment(set_cell_size(segment.text, room), segment.style))
                    break
            line = kept
        return Strip(line, width)

    # -- the cursor --------------------------------------------------------------------

    def watch_cursor_row(self, old: int, new: int) -> None:
        if not self.row_count:
            return
        self.refresh()
        # Keep the cursor's row in view; line 0 of the view is always the header.
        top, rows = self.scroll_offset.y, max(1, self.size.height - 1)
        if new < top:
            self.scroll_to(y=new, animate=False, immediate=True)
        elif new >= top + rows:
            self.scroll_to(y=new - rows + 1, animate=False, immediate=True)
        key = self._keys[new]
        if key != self._highlighted:
            self._highlighted = key
            self.post_message(self.RowHighlighted(self, new, key))

    def action_cursor(self, step: int) -> None:
        if self.row_count:
            self.cursor_row = max(0, min(self.cursor_row + step, self.row_count - 1))

    def action_page(self, direction: int) -> None:
        self.action_cursor(direction * max(1, self.size.height - 2))

    def action_first(self) -> None:
        self.action_cursor(-self.row_count)

    def action_last(self) -> None:
        self.action_cursor(self.row_count)

    def on_click(self, event: events.Click) -> None:
        index = event.y - 1 + self.scroll_offset.y
        if event.y >= 1 and 0 <= index < self.row_count:
            self.cursor_row = index


def _make_console():  # type: ignore[no-untyped-def]
    """Only used to turn ``Text`` into styled segments (never written to)."""
    import io

    from rich.console import Console

    return Console(file=io.StringIO(), width=1000, color_system="truecolor", force_terminal=True,
                   legacy_windows=False)


_CONSOLE = _make_console()
