"""A list of commits (a deploy's release range, or the pending commits)."""

from __future__ import annotations

from rich.text import Text

from backend.history import Range
from tui.format import plain
from tui.widgets.rowlist import Column, RowList


class CommitTable(RowList):
    def __init__(self, *, dates: bool = True, id: str | None = None) -> None:
        columns = [Column("sha", "sha", 7)]
        if dates:
            columns.append(Column("date", "date", 10))
        columns += [Column("author", "author", 14), Column("subject", "subject", 200)]
        super().__init__(columns, id=id)
        self.dates = dates

    def show(self, found: Range | None) -> None:
        self.clear()
        if found is None or found.error:
            return
        rows = []
        for commit in found.commits:
            cells = [Text(commit.sha[:7], style="bold")]
            if self.dates:
                cells.append(Text(commit.date[:10], style="dim"))
            rows.append((commit.sha, [*cells, plain(commit.author), plain(commit.subject)]))
        self.add_rows(rows)
