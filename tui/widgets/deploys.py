"""The deploy history of one environment, newest first."""

from __future__ import annotations

from functools import partial

from rich.text import Text

from backend.history import Range
from backend.models import Deploy
from tui.format import plain, status_text, when
from tui.widgets.rowlist import Column, RowList

COLUMNS = (
    Column("id", "#", 5),
    Column("when", "when (UTC)", 11),
    Column("sha", "sha", 7),
    Column("status", "status", 13),
    Column("who", "who", 11),
    Column("commits", "commits", 7, "right"),
)


class DeployTable(RowList):
    """Rows keyed by deploy id; commit counts fill in when their ranges arrive."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(COLUMNS, zebra=True, id=id)

    def show(self, deploys: list[Deploy], ranges: dict[tuple[str | None, str], Range],
             colours: dict[str, str], keep: int | None) -> None:
        """Replace the rows, keeping the cursor on deploy ``keep`` when it is still shown."""
        self.replace([(str(d.id), partial(self._row, d, ranges.get((d.prev_sha, d.sha)), colours)) for d in deploys],
                     keep=None if keep is None else str(keep))

    def append(self, deploys: list[Deploy], ranges: dict[tuple[str | None, str], Range],
               colours: dict[str, str]) -> None:
        self.add_rows([(str(d.id), partial(self._row, d, ranges.get((d.prev_sha, d.sha)), colours)) for d in deploys])

    def set_counts(self, deploys: list[Deploy], ranges: dict[tuple[str | None, str], Range]) -> None:
        for deploy in deploys:
            key = str(deploy.id)
            if key in self.rows:
                self.update_cell(key, "commits", commit_count(ranges.get((deploy.prev_sha, deploy.sha))))

    @staticmethod
    def _row(deploy: Deploy, found: Range | None, colours: dict[str, str]) -> list[Text]:
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
        return Text("…", style="dim")
    if found.error:
        return Text("n/a", style="dim")
    return Text(str(found.count))
