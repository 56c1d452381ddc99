"""A list of commits (a deploy's release range, or the pending commits).

The pending panel marks the commits held after a rollback (:mod:`backend.held`): the row
takes the ``commits--held`` component class (its colour from the theme, through CSS) and
its subject starts with ``held ·``; the table itself gets the ``-held`` class while it
shows any.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text

from backend.history import Range
from tui.format import plain
from tui.widgets.rowlist import Column, RowList

HELD_MARK = "held · "


class CommitTable(RowList):
    DEFAULT_CSS = """
    CommitTable > .commits--held {
        color: $error;
        text-style: bold;
    }
    """
    COMPONENT_CLASSES = RowList.COMPONENT_CLASSES | {"commits--held"}

    def __init__(self, *, dates: bool = True, id: str | None = None) -> None:
        columns = [Column("sha", "sha", 7)]
        if dates:
            columns.append(Column("date", "date", 10))
        columns += [Column("author", "author", 14), Column("subject", "subject", 200)]
        super().__init__(columns, id=id)
        self.dates = dates
        self.held: frozenset[str] = frozenset()
        self._found: Range | None = None

    def show(self, found: Range | None) -> None:
        self._found = found
        keep = self.cursor_key
        self.clear()
        if found is None or found.error:
            self.set_class(False, "-held")
            return
        rows = []
        for commit in found.commits:
            cells = [Text(commit.sha[:7], style="bold")]
            if self.dates:
                cells.append(Text(commit.date[:10], style="dim"))
            subject = plain(commit.subject)
            if commit.sha in self.held:
                subject = Text.assemble(HELD_MARK, subject)
            rows.append((commit.sha, [*cells, plain(commit.author), subject]))
        self.replace(rows, keep=keep)
        self.set_class(any(commit.sha in self.held for commit in found.commits), "-held")

    def mark_held(self, shas: Iterable[str]) -> None:
        """Mark these commits held (the others not), redrawing the rows shown."""
        held = frozenset(shas)
        if held != self.held:
            self.held = held
            self.show(self._found)

    def held_shown(self) -> list[str]:
        """The held commits among the rows, in their order."""
        found = self._found
        return [] if found is None or found.error else [c.sha for c in found.commits if c.sha in self.held]

    def row_component(self, index: int) -> str | None:
        key = self._keys[index] if index < len(self._keys) else None
        return "commits--held" if key in self.held else None
