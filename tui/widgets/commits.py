"""A list of commits (a deploy's release range, or the pending commits)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from backend.history import Range
from tui.format import plain


class CommitTable(DataTable[Text]):
    def __init__(self, *, dates: bool = True, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row")
        self.dates = dates
        self.add_column("sha", key="sha", width=7)
        if self.dates:
            self.add_column("date", key="date", width=10)
        self.add_column("author", key="author", width=14)
        self.add_column("subject", key="subject", width=200)

    def show(self, found: Range | None) -> None:
        self.clear()
        if found is None or found.error:
            return
        for commit in found.commits:
            cells = [Text(commit.sha[:7], style="bold")]
            if self.dates:
                cells.append(Text(commit.date[:10], style="dim"))
            self.add_row(*cells, plain(commit.author), plain(commit.subject), key=commit.sha)
