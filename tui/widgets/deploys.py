"""The deploy history of one environment: a windowed table, newest first."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.widgets import DataTable

from backend.history import Range
from backend.models import Deploy
from tui.format import plain, status_text, when


class DeployTable(DataTable[Text]):
    """Rows keyed by deploy id; commit counts fill in when their ranges arrive."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        # Columns exist from the start, so the first screen can be filled before mounting.
        self.add_column("#", key="id", width=5)
        self.add_column("when (UTC)", key="when", width=11)
        self.add_column("sha", key="sha", width=7)
        self.add_column("status", key="status", width=13)
        self.add_column("who", key="who", width=11)
        self.add_column("commits", key="commits", width=7)

    def show(self, deploys: list[Deploy], ranges: dict[tuple[str | None, str], Range],
             now: datetime, colours: dict[str, str], keep: int | None) -> None:
        """Replace the rows, keeping the cursor on deploy ``keep`` when it is still shown."""
        self.clear()
        rows = [self._cells(d, ranges.get((d.prev_sha, d.sha)), now, colours) for d in deploys]
        for deploy, cells in zip(deploys, rows, strict=False):
            self.add_row(*cells, key=str(deploy.id))
        if keep is not None:
            try:
                self.move_cursor(row=self.get_row_index(str(keep)), scroll=True)
            except Exception:  # the row is filtered out or gone: stay at the top
                pass

    def append(self, deploys: list[Deploy], ranges: dict[tuple[str | None, str], Range],
               now: datetime, colours: dict[str, str]) -> None:
        for deploy in deploys:
            self.add_row(*self._cells(deploy, ranges.get((deploy.prev_sha, deploy.sha)), now, colours),
                         key=str(deploy.id))

    def set_counts(self, deploys: list[Deploy], ranges: dict[tuple[str | None, str], Range]) -> None:
        for deploy in deploys:
            key = str(deploy.id)
            if key in self.rows:
                self.update_cell(key, "commits", commit_count(ranges.get((deploy.prev_sha, deploy.sha))))

    @staticmethod
    def _cells(deploy: Deploy, found: Range | None, now: datetime, colours: dict[str, str]) -> list[Text]:
        return [
            Text(str(deploy.id), style="dim"),
            Text(when(deploy.started_at)[5:]),
            Text(deploy.short_sha, style="bold"),
            status_text(deploy.status, deploy.trigger, colours),
            plain(deploy.who),
            commit_count(found),
        ]


def commit_count(found: Range | None) -> Text:
    if found is None:
        return Text("…", style="dim", justify="right")
    if found.error:
        return Text("n/a", style="dim", justify="right")
    return Text(str(found.count), justify="right")
