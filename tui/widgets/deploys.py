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
        started = when(deploy.started_at)
        return [
            Text(str(deploy.id), style="dim"),
            Text(started[5:] if len(started) > 5 else started),  # the year goes without saying
            Text(deploy.short_sha, style="bold"),
            status_text(deploy.status, deploy.trigger, colours, deploy.damaged),
            plain(deploy.who),
            commit_count(found),
        ]


def commit_count(found: Range | None) -> Text:
    if found is None:
        return Text("…", style="dim")
    if found.error:
        return Text("n/a", style="dim")
    return Text(str(found.count))


class DeploySearch:
    """What the filter matches each deploy against, built once per deploy.

    A deploy's text is its id, sha, status, person, trigger, reason and the commits it
    shipped; it is built again only when that deploy's commit range arrives or changes
    (or the deploy itself does), not on every keystroke.
    """

    def __init__(self) -> None:
        self._texts: dict[int, tuple[Deploy, Range | None, str]] = {}

    def clear(self) -> None:
        self._texts.clear()

    def matching(self, needle: str, deploys: list[Deploy],
                 ranges: dict[tuple[str | None, str], Range]) -> list[Deploy]:
        """The deploys whose text holds ``needle`` (ignoring case and the spaces around it)."""
        needle = needle.strip().lower()
        if not needle:
            return deploys
        return [d for d in deploys if needle in self.text(d, ranges.get((d.prev_sha, d.sha)))]

    def text(self, deploy: Deploy, found: Range | None) -> str:
        kept = self._texts.get(deploy.id)
        if kept is not None and kept[1] is found:
            if kept[0] is deploy:
                return kept[2]
            if kept[0] == deploy:  # the same deploy read again: compared by identity from now on
                self._texts[deploy.id] = (deploy, found, kept[2])
                return kept[2]
        text = search_text(deploy, found)
        self._texts[deploy.id] = (deploy, found, text)
        return text


def search_text(deploy: Deploy, found: Range | None) -> str:
    parts = [f"#{deploy.id}", deploy.sha, deploy.status, deploy.who, deploy.trigger, deploy.reason]
    if deploy.damaged:
        parts += ["damaged", deploy.damaged]
    if found is not None:
        parts += [f"{c.sha} {c.author} {c.subject}" for c in found.commits]
    return " ".join(parts).lower()
