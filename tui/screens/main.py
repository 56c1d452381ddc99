"""The main screen: environment names, deploy history, the selected deploy, pending commits.

All git and SQLite work happens in thread workers; results come back as messages
named in the past tense and are dropped if the user has moved to another
environment meanwhile. A poller asks SQLite's ``data_version`` twice a second
whether anyone else wrote to the log, and reloads only then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Static

from backend import AndonError
from backend.history import Range
from backend.models import Deploy
from backend.text import short
from backend.world import World
from tui.commands import ACTIONS, bindings
from tui.first_screen import PAGE, FirstScreen, load_first_screen
from tui.format import age, duration, status_text, when
from tui.screens.help import HelpScreen
from tui.widgets.commits import CommitTable
from tui.widgets.deploys import DeployTable
from tui.widgets.envbar import EnvBar
from tui.widgets.keybar import KeyBar
from tui.widgets.rowlist import RowList

if TYPE_CHECKING:
    from textual.widgets import Log


# Every message from a loading worker carries the generation it was started in. A
# new environment or a reload starts a new generation; results of an older one (a
# worker that was still running, or a page that arrived late) are dropped, so stale
# data can never overwrite newer data. (Plain classes, not dataclasses, which compile
# their methods at import: see backend/models.py.)


class EnvironmentsLoaded(Message):
    def __init__(self, names: list[str], env: str | None, generation: int = 0) -> None:
        super().__init__()
        self.names = names
        self.env = env  # the environment whose deploys come next
        self.generation = generation


class DeploysLoaded(Message):
    def __init__(self, env: str, deploys: list[Deploy], total: int, live: Deploy | None, *,
                 append: bool = False, generation: int = 0) -> None:
        super().__init__()
        self.env = env
        self.deploys = deploys
        self.total = total
        self.live = live
        self.append = append
        self.generation = generation


class RangesLoaded(Message):
    def __init__(self, env: str, ranges: dict[tuple[str | None, str], Range], generation: int = 0) -> None:
        super().__init__()
        self.env = env
        self.ranges = ranges
        self.generation = generation


class PendingLoaded(Message):
    def __init__(self, env: str, pending: Range, branch: str | None, generation: int = 0) -> None:
        super().__init__()
        self.env = env
        self.pending = pending
        self.branch = branch
        self.generation = generation


class OutputLoaded(Message):
    def __init__(self, deploy: Deploy) -> None:
        super().__init__()
        self.deploy = deploy


class LogChanged(Message):
    pass


class LoadFailed(Message):
    def __init__(self, reason: str, generation: int = 0) -> None:
        super().__init__()
        self.reason = reason
        self.generation = generation


class MainScreen(Screen[None]):
    BINDINGS = bindings()
    # Below 110 columns the selected deploy goes under the list instead of beside it
    # (the list needs 70 columns; beside it the deploy would get a sliver).
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]

    env: reactive[str | None] = reactive(None)
    filter_text: reactive[str] = reactive("")

    def __init__(self, world: World, poll_interval: float = 0.5, first: FirstScreen | None = None) -> None:
        super().__init__()
        self.world = world
        self.first = first
        self.poll_interval = poll_interval
        self.envs: list[str] = []
        self.deploys: list[Deploy] = []
        self.total = 0
        self.live: Deploy | None = None
        self.ranges: dict[tuple[str | None, str], Range] = {}
        self.selected: Deploy | None = None
        self._version: int | None = None
        self._generation = 0
        self._loading_more = False

    # -- layout ------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        # A one-line title bar (Textual's Header costs a clock and three widgets).
        yield Static(Content(f"▲ andon — {self.app.sub_title}"), id="title")
        if self.first is not None and self.first.names:
            # The names are drawn with the screen: adding them after mounting costs a layout pass.
            self.envs = list(self.first.names)
            self.set_reactive(MainScreen.env, self.first.env)
            yield EnvBar(self.first.names, self.first.env, id="envs")
        else:
            yield EnvBar(id="envs")
        yield Static(id="problem")
        with Horizontal(id="body"):
            with Vertical(id="history"):
                yield DeployTable(id="deploys")
                yield Static(id="empty")
            with Vertical(id="detail"):
                yield Static(id="summary")
                yield CommitTable(dates=False, id="commits")
                yield Vertical(id="output-box")  # the Log is created with the first output
        yield CommitTable(id="pending")
        yield KeyBar([(a.key_display or a.key, a.title, a.action) for a in ACTIONS if a.footer], id="keys")

    def on_mount(self) -> None:
        self.query_one("#history").border_title = "Deploys"
        self.query_one("#detail").border_title = "Deploy"
        self.query_one("#pending").border_title = "Pending"
        self.query_one("#commits").border_title = "Commits"
        self.query_one("#output-box").border_title = "Output"
        self.query_one(DeployTable).focus()
        if self.first is None:
            self.load_environments(None, PAGE, self._generation)
        else:
            self.show_first_screen(self.first)
        self.set_interval(self.poll_interval, self.poll)
        self.set_interval(60, self._show_selected)  # "(3h ago)" moves on with the clock

    @property
    def colours(self) -> dict[str, str]:
        return self.app.get_css_variables()

    # -- workers (never on the event loop) ----------------------------------------------

    def show_first_screen(self, first: FirstScreen) -> None:
        """Fill the screen from data read before it existed; git's part follows in a worker."""
        self._version = first.version
        self.on_environments_loaded(EnvironmentsLoaded(first.names, first.env))
        if not first.names:
            self._show_empty(None)
        if first.env is not None:
            self.ranges.update(first.ranges)  # the kept commit counts go into the first rows
            self.on_deploys_loaded(DeploysLoaded(first.env, first.deploys, first.total, first.live))
            # git starts after the first frame: its subprocesses would compete with it.
            self.call_after_refresh(self.load_details, first.env, first.deploys, first.live, self._generation)

    def reload(self) -> None:
        """Read everything shown again (someone wrote to the log, or `r`)."""
        self._generation += 1
        self.load_environments(self.env, max(PAGE, len(self.deploys)), self._generation)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def load_environments(self, select: str | None, limit: int, generation: int) -> None:
        try:
            first = load_first_screen(self.world, select, limit=limit)
        except AndonError as error:
            self.post_message(LoadFailed(str(error), generation))
            return
        self._version = first.version
        self.post_message(EnvironmentsLoaded(first.names, first.env, generation))
        if first.env is not None:
            self.post_message(DeploysLoaded(first.env, first.deploys, first.total, first.live,
                                            generation=generation))
            self._load_details(first.env, first.deploys, first.live, generation, pending=True)

    @work(thread=True, exclusive=True, group="details", exit_on_error=False)
    def load_details(self, env: str, deploys: list[Deploy], live: Deploy | None, generation: int) -> None:
        self._load_details(env, deploys, live, generation, pending=True)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def load_deploys(self, env: str, generation: int) -> None:
        """The first page of a newly chosen environment."""
        self._load_deploys(env, 0, PAGE, generation)

    @work(thread=True, group="page", exit_on_error=False)
    def load_page(self, env: str, offset: int, generation: int) -> None:
        """The next page of older deploys, added below the ones shown."""
        self._load_deploys(env, offset, PAGE, generation)

    def _load_deploys(self, env: str, offset: int, limit: int, generation: int) -> None:
        try:
            deploys = self.world.log.deploys(env, limit=limit, offset=offset)
            total = self.world.log.count(env)
            live = self.world.log.live(env)
        except AndonError as error:
            self.post_message(LoadFailed(str(error), generation))
            return
        self.post_message(DeploysLoaded(env, deploys, total, live, append=offset > 0, generation=generation))
        self._load_details(env, deploys, live, generation, pending=offset == 0)

    def _load_details(self, env: str, deploys: list[Deploy], live: Deploy | None, generation: int,
                      *, pending: bool) -> None:
        # Commits second: the deploys are on screen before git is asked anything.
        found = self.world.history.ranges([(d.prev_sha, d.sha) for d in deploys])
        self.post_message(RangesLoaded(env, found, generation))
        if pending:
            branch = self.world.history.branch(self.world.config.branch)
            waiting = self.world.history.pending(branch, live.sha if live else None, self.world.config.branch)
            self.post_message(PendingLoaded(env, waiting, branch, generation))

    @work(thread=True, exclusive=True, group="output", exit_on_error=False)
    def load_output(self, deploy_id: int) -> None:
        try:
            self.post_message(OutputLoaded(self.world.log.get(deploy_id)))
        except AndonError as error:
            self.post_message(LoadFailed(str(error)))

    @work(thread=True, exclusive=True, group="poll", exit_on_error=False)
    def poll(self) -> None:
        try:
            version = self.world.log.data_version()
        except AndonError as error:
            self.post_message(LoadFailed(str(error), self._generation))
            return
        if version != self._version:
            self._version = version
            self.post_message(LogChanged())

    # -- results --------------------------------------------------------------------------

    def on_environments_loaded(self, message: EnvironmentsLoaded) -> None:
        if message.generation != self._generation:
            return
        # Environments only ever appear (deploy rows are never deleted): new ones are
        # added at the end, and the one shown stays shown.
        new = [name for name in message.names if name not in self.envs]
        if not new:
            return
        bar = self.query_one(EnvBar)
        for name in new:
            bar.add(name)
            self.envs.append(name)
        if self.env is None and message.env is not None:
            # The deploys of this environment come next from the same worker: choosing
            # it quietly (no watcher) keeps them from being loaded twice.
            self.set_reactive(MainScreen.env, message.env)
            bar.show(message.env)

    def on_deploys_loaded(self, message: DeploysLoaded) -> None:
        if message.generation != self._generation or message.env != self.env:
            if message.append:
                self._loading_more = False
            return
        self.total = message.total
        self.live = message.live
        self._loading_more = False
        self.query_one("#problem").display = False  # whatever went wrong before is over
        if message.append:
            known = {d.id for d in self.deploys}
            new = [d for d in message.deploys if d.id not in known]
            self.deploys += new
            if not self.filter_text:
                self.query_one(DeployTable).append(new, self.ranges, self.colours)
            else:
                self.render_deploys()
        else:
            self.deploys = message.deploys
            self.render_deploys()
        self._update_titles()

    def on_ranges_loaded(self, message: RangesLoaded) -> None:
        if message.generation != self._generation or message.env != self.env:
            return
        self.ranges.update(message.ranges)
        self.query_one(DeployTable).set_counts(self.deploys, self.ranges)
        if self.filter_text:
            self.render_deploys()
        self._show_selected()

    def on_pending_loaded(self, message: PendingLoaded) -> None:
        if message.generation != self._generation or message.env != self.env:
            return
        table = self.query_one("#pending", CommitTable)
        table.show(message.pending)
        branch = (message.branch or "?").removeprefix("refs/heads/")
        if message.pending.error:
            table.border_title = Content(f"Pending: {message.pending.error}")
        else:
            count = message.pending.count or 0
            listed = f" (newest {len(message.pending.commits)} listed)" if message.pending.truncated else ""
            table.border_title = Content(
                f"Pending: {count} commit{'s' if count != 1 else ''} on {branch} not yet live in {message.env}{listed}"
            )

    def _output(self) -> Log | None:
        found = self.query("#output")
        return found.first() if found else None  # type: ignore[return-value]

    async def on_output_loaded(self, message: OutputLoaded) -> None:
        if self.selected is None or message.deploy.id != self.selected.id:
            return
        output = self._output()
        if output is None:
            from textual.widgets import Log

            output = Log(id="output", highlight=False)
            await self.query_one("#output-box").mount(output)
        output.clear()
        output.write(message.deploy.output or "(no output recorded)")
        output.scroll_end(animate=False)

    def on_log_changed(self, _: LogChanged) -> None:
        self.reload()

    def on_load_failed(self, message: LoadFailed) -> None:
        self._loading_more = False  # a failed page may be asked for again
        problem = self.query_one("#problem", Static)
        problem.update(Content(message.reason))
        problem.display = True

    # -- rendering ------------------------------------------------------------------------

    def app_clock(self):  # type: ignore[no-untyped-def]
        return self.world.clock()

    def visible_deploys(self) -> list[Deploy]:
        needle = self.filter_text.strip().lower()
        if not needle:
            return self.deploys
        return [d for d in self.deploys if needle in self._haystack(d)]

    def _haystack(self, deploy: Deploy) -> str:
        parts = [f"#{deploy.id}", deploy.sha, deploy.status, deploy.who, deploy.trigger, deploy.reason]
        found = self.ranges.get((deploy.prev_sha, deploy.sha))
        if found:
            parts += [f"{c.sha} {c.author} {c.subject}" for c in found.commits]
        return " ".join(parts).lower()

    def render_deploys(self) -> None:
        table = self.query_one(DeployTable)
        keep = self.selected.id if self.selected else None
        shown = self.visible_deploys()
        table.show(shown, self.ranges, self.colours, keep)
        if self.selected is not None:
            # The same deploy, as just read (a running one may have finished).
            self.selected = next((d for d in shown if d.id == self.selected.id), self.selected)
            self._show_selected()
        if not self.deploys:
            self._show_empty(self.env)
        else:
            self.remove_class("-empty")
        self._update_titles(len(shown))

    def _show_empty(self, env: str | None) -> None:
        self.add_class("-empty")
        self.selected = None
        if env is None:
            text = ("No environments yet.\n\nConfigure them in andon.toml ([environments.NAME] with a deploy "
                    "command), or record a deploy:\n\n  andon record --env staging --sha HEAD --status succeeded")
        else:
            text = (f"No deploys to {env} yet.\n\nRun one with\n  andon deploy --env {env}\nor record one "
                    f"that CI ran with\n  andon record --env {env} --sha HEAD --status succeeded\nor import "
                    "your history with andon import (JSON lines on standard input).")
        self.query_one("#empty", Static).update(Content(text))

    def _update_titles(self, shown: int | None = None) -> None:
        history = self.query_one("#history")
        env = self.env or ""
        loaded = len(self.deploys)
        title = f"Deploys to {env}" if env else "Deploys"
        if self.filter_text:
            matches = len(self.visible_deploys()) if shown is None else shown
            title += f" · {matches} match “{self.filter_text}”"
        history.border_title = Content(title)  # the filter text is the user's: never markup
        history.border_subtitle = f"{loaded} of {self.total}" if loaded < self.total else f"{self.total}"
        if self.live:
            self.sub_title = f"{self.app.sub_title} · {env}: live {self.live.short_sha} since {when(self.live.started_at)}"
        else:
            self.sub_title = f"{self.app.sub_title} · {env}: nothing live yet" if env else self.app.sub_title
        self.query_one("#title", Static).update(Content(f"▲ andon — {self.sub_title}"))

    def _show_selected(self) -> None:
        deploy = self.selected
        summary = self.query_one("#summary", Static)
        commits = self.query_one("#commits", CommitTable)
        detail = self.query_one("#detail")
        if deploy is None:
            summary.update("")
            commits.clear()
            detail.border_title = "Deploy"
            return
        detail.border_title = Content(f"Deploy #{deploy.id}")
        found = self.ranges.get((deploy.prev_sha, deploy.sha))
        took = duration(deploy.started_at, deploy.finished_at)
        lines = [
            Content.assemble(
                (deploy.short_sha, "bold"), " → ", (deploy.env, "bold"), "  ",
                Content.from_rich_text(status_text(deploy.status, deploy.trigger, self.colours)),
                f"  exit {deploy.exit_code}" if deploy.exit_code is not None else "",
            ),
            Content.assemble(
                "by ", (deploy.who or "unknown", "bold"), f" · {deploy.trigger} · {when(deploy.started_at)} UTC",
                f" ({age(deploy.started_at, self.app_clock())} ago)",
            ),
            Content(
                (f"previous: {short(deploy.prev_sha)}" if deploy.prev_sha else "previous: none (first deploy here)")
                + (f" · took {took}" if deploy.finished_at and deploy.finished_at != deploy.started_at else "")
            ),
        ]
        if deploy.reverts:
            lines.append(Content(f"rolls back deploy #{deploy.reverts}"))
        if deploy.reason:
            lines.append(Content.assemble("reason: ", Content(deploy.reason)))
        summary.update(Content("\n").join(lines))
        commits.show(found)
        if found is None:
            commits.border_title = "Commits: loading…"
        elif found.error:
            commits.border_title = Content(found.error)
        elif found.first:
            commits.border_title = "Commits: first deploy here, only its own commit is shown"
        else:
            count = found.count or 0
            commits.border_title = f"Commits shipped: {count}" if count else "Commits shipped: none (a rollback or a redeploy)"

    # -- events ---------------------------------------------------------------------------

    @on(EnvBar.Chosen, "#envs")
    def _env_chosen(self, event: EnvBar.Chosen) -> None:
        self.switch_to(event.name)

    def watch_env(self, env: str | None) -> None:
        if env is None:
            return
        self.query_one(EnvBar).show(env)
        self._generation += 1
        self.deploys = []
        self.total = 0
        self.live = None
        self.selected = None
        self.ranges = {}
        self._loading_more = False
        self.query_one(DeployTable).clear()
        pending = self.query_one("#pending", CommitTable)
        pending.clear()
        pending.border_title = "Pending"
        if output := self._output():
            output.clear()
        self._show_selected()
        self._update_titles()
        self.load_deploys(env, self._generation)

    @on(RowList.RowHighlighted, "#deploys")
    def _deploy_highlighted(self, event: RowList.RowHighlighted) -> None:
        key = event.key
        deploy = next((d for d in self.deploys if str(d.id) == key), None)
        if deploy is None:
            return
        if self.selected is None or deploy.id != self.selected.id:
            self.selected = deploy
            if output := self._output():
                output.clear()
            self.load_output(deploy.id)
        else:
            self.selected = deploy
        self._show_selected()
        table = self.query_one(DeployTable)
        near_end = event.cursor_row >= table.row_count - 5
        # While filtering, a few matches are "near the end": paging then would load the
        # whole log page by page, so only the unfiltered list pages.
        if (near_end and not self.filter_text and len(self.deploys) < self.total
                and not self._loading_more and self.env):
            self._loading_more = True
            self.load_page(self.env, len(self.deploys), self._generation)

    def watch_filter_text(self, _: str) -> None:
        if self.is_mounted:
            self.render_deploys()

    # The filter input is created the first time `/` is pressed: nobody needs it for
    # the first frame. Its messages are handled by name, so Input is imported then too.

    def on_input_changed(self, event) -> None:  # type: ignore[no-untyped-def]
        if event.input.id == "filter":
            self.filter_text = event.value

    def on_input_submitted(self, event) -> None:  # type: ignore[no-untyped-def]
        if event.input.id == "filter":
            self.query_one(DeployTable).focus()

    def on_key(self, event) -> None:  # type: ignore[no-untyped-def]
        if event.key != "escape":
            return
        found = self.query("#filter")
        filter_input = found.first() if found else None
        if (filter_input is not None and filter_input.has_focus) or self.filter_text:
            event.stop()
            if filter_input is not None:
                filter_input.value = ""  # type: ignore[attr-defined]
            self.filter_text = ""
            self.remove_class("-filtering")
            self.query_one(DeployTable).focus()

    # -- actions ---------------------------------------------------------------------------

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen())

    async def action_filter(self) -> None:
        if not self.query("#filter"):
            from textual.widgets import Input

            await self.mount(
                Input(placeholder="filter deploys: sha, status, person, commit text — enter to keep, esc to clear",
                      id="filter"),
                before=self.query_one(KeyBar),
            )
        self.add_class("-filtering")
        self.query_one("#filter").focus()

    def action_next_env(self) -> None:
        if (name := self.query_one(EnvBar).neighbour(1)) is not None:
            self.switch_to(name)

    def action_previous_env(self) -> None:
        if (name := self.query_one(EnvBar).neighbour(-1)) is not None:
            self.switch_to(name)

    def action_refresh(self) -> None:
        self.reload()

    def action_toggle_output(self) -> None:
        self.toggle_class("-no-output")

    def switch_to(self, env: str) -> None:
        if env in self.envs and env != self.env:
            self.env = env
