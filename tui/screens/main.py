"""The main screen: environment names, deploy history, the selected deploy, pending commits.

The screen composes the widgets and answers keys; what it shows is read by a
:class:`~tui.loading.Loader` in thread workers and arrives as messages named in the
past tense (``DeploysLoaded``), dropped if the user has moved on meanwhile. A poller
asks twice a second whether anyone else wrote to the log and, if so, which events:
only a deploy to the shown environment reloads the list.

Health is :class:`~tui.health_feed.HealthFeed`'s: the panel, mounted after the first
frame, its reads, the toasts, and this dashboard's own probing, which runs on a thread of
its own and never on this screen's event loop. The line (the stop-the-line banner and
the keys that stop, roll back, cancel and resume) is :class:`~tui.line_feed.LineFeed`'s,
in the same way. The screen calls into them and hands them their messages.
"""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Static

from backend.history import Range
from backend.models import Deploy
from backend.world import World
from tui.chat_feed import ChatDelivered, ChatFeed
from tui.commands import bindings, offered
from tui.first_screen import PAGE, FirstScreen
from tui.format import when
from tui.health_feed import HealthFeed, HealthProbed
from tui.held_feed import HeldFeed, HeldLoaded, HeldReleased
from tui.line_feed import HoldsFound, LineActed, LineFeed, LineLoaded
from tui.loading import (
    DeploysLoaded,
    EnvironmentsLoaded,
    EventsArrived,
    HealthLoaded,
    Loader,
    LoadFailed,
    OutputLoaded,
    PendingLoaded,
    RangesLoaded,
    VerificationLoaded,
)
from tui.migration_feed import BacklogLoaded, MigrationFeed
from tui.screens.help import HelpScreen
from tui.widgets.commits import CommitTable
from tui.widgets.deploy_detail import DeployDetail
from tui.widgets.deploys import DeploySearch, DeployTable
from tui.widgets.envbar import EnvBar
from tui.widgets.freeze_line import FreezeLine
from tui.widgets.keybar import KeyBar
from tui.widgets.rowlist import RowList

DEPLOY_EVENT = "deploy."  # deploy.started, .finished, .recorded, .imported


class MainScreen(Screen[None]):
    BINDINGS = bindings()
    # Below 110 columns the selected deploy goes under the list instead of beside it
    # (the list needs 70 columns; beside it the deploy would get a sliver).
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]

    env: reactive[str | None] = reactive(None)
    filter_text: reactive[str] = reactive("")

    def __init__(self, world: World, poll_interval: float = 0.5, first: FirstScreen | None = None, *,
                 read_only: bool = False) -> None:
        super().__init__()
        self.read_only = read_only
        self.world = world
        self.first = first
        self.poll_interval = poll_interval
        self.loader = Loader(world, self.post_message)
        self.search = DeploySearch()
        self.envs: list[str] = []
        self.deploys: list[Deploy] = []
        self.total = 0
        self.live: Deploy | None = None
        self.ranges: dict[tuple[str | None, str], Range] = {}
        self.selected: Deploy | None = None
        self._loading_more = False
        self.health = HealthFeed(self)
        self.line = LineFeed(self, read_only=read_only)
        self.chat = ChatFeed(self)
        self.migrations = MigrationFeed(self)  # the overdue cleanups' count (tui/migration_feed.py)
        self.held = HeldFeed(self, read_only=read_only)  # held commits: the pending panel's marks, u

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
            yield DeployDetail(self.world.clock, id="detail")
        yield CommitTable(id="pending")
        yield KeyBar([(a.key_display or a.key, a.title, a.action) for a in offered(self.read_only) if a.footer],
                     id="keys")

    def on_mount(self) -> None:
        self.query_one("#history").border_title = "Deploys"
        self.query_one("#pending").border_title = "Pending"
        self.query_one(DeployTable).focus()
        if self.first is None:
            self.load_first(None, PAGE, self.loader.generation)
        else:
            self.show_first_screen(self.first)
        self.set_interval(self.poll_interval, self.poll)
        self.call_after_refresh(self.health.start, "#pending")  # the panel goes above Pending
        self.call_after_refresh(self.line.start, "#title")  # the banner goes right under the title
        self.call_after_refresh(self.chat.start)
        self.call_after_refresh(self.migrations.start, "#envs")
        self.call_after_refresh(self.held.start)
        self.call_after_refresh(FreezeLine.start, self, "#envs")  # a freeze in force, or the next one

    def on_unmount(self) -> None:
        self.health.stop()  # stops probing and frees the leases now: another andon takes over

    @property
    def colours(self) -> dict[str, str]:
        return self.app.get_css_variables()

    @property
    def detail(self) -> DeployDetail:
        return self.query_one(DeployDetail)

    # -- workers: the Loader's reading, in threads (never on the event loop) ------------

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def load_first(self, select: str | None, limit: int, generation: int) -> None:
        self.loader.first_screen(select, limit, generation)

    @work(thread=True, exclusive=True, group="names", exit_on_error=False)
    def load_environments(self, generation: int) -> None:
        self.loader.environments(generation)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def load_deploys(self, env: str, limit: int, generation: int) -> None:
        """The newest ``limit`` deploys of ``env``, replacing those shown."""
        self.loader.deploys(env, 0, generation, limit=limit)

    @work(thread=True, group="page", exit_on_error=False)
    def load_page(self, env: str, offset: int, generation: int) -> None:
        """The next page of older deploys, added below the ones shown."""
        self.loader.deploys(env, offset, generation)

    @work(thread=True, exclusive=True, group="details", exit_on_error=False)
    def load_details(self, env: str, deploys: list[Deploy], live: Deploy | None, generation: int) -> None:
        self.loader.details(env, deploys, live, generation, pending=True)

    @work(thread=True, exclusive=True, group="output", exit_on_error=False)
    def load_output(self, deploy_id: int, since: int = 0) -> None:
        self.loader.output(deploy_id, since)

    @work(thread=True, exclusive=True, group="poll", exit_on_error=False)
    def poll(self) -> None:
        self.loader.poll()

    def show_first_screen(self, first: FirstScreen) -> None:
        """Fill the screen from data read before it existed; git's part follows in a worker."""
        self.loader.seen(first.version, first.last_event)
        self.on_environments_loaded(EnvironmentsLoaded(first.names, first.env))
        if not first.names:
            self._show_empty(None)
        if first.env is not None:
            self.ranges.update(first.ranges)  # the kept commit counts go into the first rows
            self.on_deploys_loaded(DeploysLoaded(first.env, first.deploys, first.total, first.live))
            # git starts after the first frame: its subprocesses would compete with it.
            self.call_after_refresh(self.load_details, first.env, first.deploys, first.live, self.loader.generation)

    def reload(self) -> None:
        """Read everything shown again (`r`)."""
        self.load_first(self.env, max(PAGE, len(self.deploys)), self.loader.new_generation())

    def reload_deploys(self) -> None:
        """Read the shown environment's deploys again (another program deployed there)."""
        if self.env is not None:
            self._loading_more = False
            self.load_deploys(self.env, max(PAGE, len(self.deploys)), self.loader.new_generation())

    # -- results --------------------------------------------------------------------------

    def on_environments_loaded(self, message: EnvironmentsLoaded) -> None:
        # Environments only ever appear (deploy rows are never deleted): new ones are
        # added at the end, and the one shown stays shown.
        bar = self.query_one(EnvBar)
        for name in message.names:
            if name not in self.envs:
                bar.add(name)
                self.envs.append(name)
        if self.env is None and message.env is not None and not self.loader.stale(message):
            # The deploys of this environment come next from the same worker: choosing
            # it quietly (no watcher) keeps them from being loaded twice.
            self.set_reactive(MainScreen.env, message.env)
            bar.show(message.env)

    def on_deploys_loaded(self, message: DeploysLoaded) -> None:
        if self.loader.stale(message) or message.env != self.env:
            if message.append:
                self._loading_more = False
            return
        self.total = message.total
        live_changed = (self.live.sha if self.live else None) != (message.live.sha if message.live else None)
        self.live = message.live
        if live_changed:
            self.health.live_changed()
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
        if self.loader.stale(message) or message.env != self.env:
            return
        self.ranges.update(message.ranges)
        self.query_one(DeployTable).set_counts(self.deploys, self.ranges)
        if self.filter_text:
            self.render_deploys()
        self._show_selected()

    def on_pending_loaded(self, message: PendingLoaded) -> None:
        if self.loader.stale(message) or message.env != self.env:
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

    async def on_output_loaded(self, message: OutputLoaded) -> None:
        await self.detail.show_output(message.deploy, message.streamed)

    def on_deploy_detail_output_wanted(self, message: DeployDetail.OutputWanted) -> None:
        self.load_output(message.deploy_id, message.since)  # a running deploy's output, as it comes

    async def on_health_loaded(self, message: HealthLoaded) -> None:
        await self.health.loaded(message)

    def on_verification_loaded(self, message: VerificationLoaded) -> None:
        self.health.verification_loaded(message)

    def on_health_probed(self, message: HealthProbed) -> None:
        self.health.probed(message)

    def on_line_loaded(self, message: LineLoaded) -> None:
        self.line.loaded(message)

    def on_line_acted(self, message: LineActed) -> None:
        self.line.acted(message)
        self.chat.deliver()  # the news this key wrote goes out now, not at the next look

    def on_holds_found(self, message: HoldsFound) -> None:
        self.line.held(message)  # ! would break a migration: the line asks first

    def on_held_loaded(self, message: HeldLoaded) -> None:
        self.held.loaded(message)

    def on_held_released(self, message: HeldReleased) -> None:
        self.held.released(message)
        self.chat.deliver()  # the release's news goes out now

    def on_chat_delivered(self, message: ChatDelivered) -> None:
        self.chat.delivered(message)

    def on_backlog_loaded(self, message: BacklogLoaded) -> None:
        self.migrations.loaded(message)

    def on_events_arrived(self, message: EventsArrived) -> None:
        """Other programs wrote to the log. A deploy to the shown environment reloads the
        list; a deploy to one not in the bar adds it; health and verification events go to
        the health feed, line and rollback events to the line feed. Hand other kinds on
        here to whatever shows them."""
        self.health.events_arrived(message.changes)
        self.line.events_arrived(message.changes)
        self.migrations.events_arrived(message.changes)
        self.held.events_arrived(message.changes)
        deployed = {env for kind, env in message.changes.kinds if kind.startswith(DEPLOY_EVENT)}
        if self.env is None and deployed:  # the very first deploy: show its environment
            self.reload()
            return
        if self.env in deployed:
            self.reload_deploys()
        if any(env not in self.envs for env in deployed if env):
            self.load_environments(self.loader.generation)

    def on_load_failed(self, message: LoadFailed) -> None:
        self._loading_more = False  # a failed page may be asked for again
        problem = self.query_one("#problem", Static)
        problem.update(Content(message.reason))
        problem.display = True
        if self.loader.last_event is None:
            # Nothing read yet, so nothing to watch for changes: try again in a while.
            self.set_timer(2, self.reload)

    # -- rendering ------------------------------------------------------------------------

    def visible_deploys(self) -> list[Deploy]:
        return self.search.matching(self.filter_text, self.deploys, self.ranges)

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
        self.detail.show(deploy, None if deploy is None else self.ranges.get((deploy.prev_sha, deploy.sha)))

    # -- events ---------------------------------------------------------------------------

    @on(EnvBar.Chosen, "#envs")
    def _env_chosen(self, event: EnvBar.Chosen) -> None:
        self.switch_to(event.name)

    def watch_env(self, env: str | None) -> None:
        if env is None:
            return
        self.query_one(EnvBar).show(env)
        generation = self.loader.new_generation()
        self.deploys = []
        self.total = 0
        self.live = None
        self.selected = None
        self.ranges = {}
        self.search.clear()
        self._loading_more = False
        self.query_one(DeployTable).clear()
        pending = self.query_one("#pending", CommitTable)
        pending.clear()
        pending.border_title = "Pending"
        self.detail.clear_output()
        self._show_selected()
        self._update_titles()
        self.load_deploys(env, PAGE, generation)
        self.health.env_shown(env)
        self.line.env_shown(env)
        self.held.env_shown(env)

    @on(RowList.RowHighlighted, "#deploys")
    def _deploy_highlighted(self, event: RowList.RowHighlighted) -> None:
        key = event.key
        deploy = next((d for d in self.deploys if str(d.id) == key), None)
        if deploy is None:
            return
        if self.selected is None or deploy.id != self.selected.id:
            self.selected = deploy
            self.detail.clear_output()
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
            self.load_page(self.env, len(self.deploys), self.loader.generation)

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
        if self.line.cancel():  # a rollback in its grace: esc cancels it before anything else
            event.stop()
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
        self.app.push_screen(HelpScreen(read_only=self.read_only))

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

    def action_events(self) -> None:
        from tui.screens.events import EventsScreen

        self.app.push_screen(EventsScreen(self.world))

    def action_messages(self) -> None:
        from tui.screens.messages import MessagesScreen

        self.app.push_screen(MessagesScreen(self.world, read_only=self.read_only))

    def action_backlog(self) -> None:
        from tui.screens.migrations import MigrationsScreen

        self.app.push_screen(MigrationsScreen(self.world, read_only=self.read_only), lambda _: self.migrations.read())

    def action_stop_and_roll_back(self) -> None:
        self.line.rollback()

    def action_cancel_rollback(self) -> None:
        if not self.line.cancel():
            self.notify("No rollback is waiting to start.", title="Line", markup=False)

    def action_resume_line(self) -> None:
        self.line.resume()

    def action_stop_line(self) -> None:
        self.line.stop()

    def action_release_held(self) -> None:
        self.held.release()

    def switch_to(self, env: str) -> None:
        if env in self.envs and env != self.env:
            self.env = env
