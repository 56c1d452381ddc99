"""The main screen: environment names, deploy history, the selected deploy, pending commits.

The screen composes the widgets and answers keys; what it shows is read by a
:class:`~tui.loading.Loader` in thread workers and arrives as messages named in the
past tense (``DeploysLoaded``), dropped if the user has moved on meanwhile. A poller
asks twice a second whether anyone else wrote to the log and, if so, which events:
only a deploy to the shown environment reloads the list.

Health: the panel (:class:`~tui.widgets.health.HealthPanel`) is mounted after the first
frame. Its samples are read in a thread worker every probe interval (a sample write
writes no event and reloads nothing else); a ``health.changed`` event reads them at once
and the change is a toast. When checks are configured the screen also runs a
:class:`~backend.watcher.HealthWatcher` round in an async worker whenever one is due: it
probes only the environments whose lease it holds, so a dashboard probes only when
nothing else (``andon watch``, another dashboard) does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

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
from tui.commands import ACTIONS, bindings
from tui.first_screen import PAGE, FirstScreen
from tui.format import when
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
from tui.screens.help import HelpScreen
from tui.widgets.commits import CommitTable
from tui.widgets.deploy_detail import DeployDetail
from tui.widgets.deploys import DeploySearch, DeployTable
from tui.widgets.envbar import EnvBar
from tui.widgets.keybar import KeyBar
from tui.widgets.rowlist import RowList

if TYPE_CHECKING:
    from backend.watcher import HealthWatcher
    from tui.widgets.health import HealthPanel

DEPLOY_EVENT = "deploy."  # deploy.started, .finished, .recorded, .imported
HEALTH_EVENT = "health.changed"
VERIFY_EVENTS = ("deploy.verifying", "deploy.verified")  # andon deploy watching a deploy's health
PROBE_DELAY = 1.0  # seconds after the first frame before this dashboard's first probe
SEVERITY: dict[str, Literal["information", "warning", "error"]] = {
    "down": "error", "degraded": "warning", "unknown": "warning", "healthy": "information"}


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
        self.loader = Loader(world, self.post_message)
        self.search = DeploySearch()
        self.envs: list[str] = []
        self.deploys: list[Deploy] = []
        self.total = 0
        self.live: Deploy | None = None
        self.ranges: dict[tuple[str | None, str], Range] = {}
        self.selected: Deploy | None = None
        self._loading_more = False
        self.watcher: HealthWatcher | None = None
        self._health_seq = 0  # the newest health read shown
        # Health is read this often (the shortest interval of any configured check).
        intervals = [check.interval for e in world.config.environments.values() for check in e.health]
        self.health_interval = max(0.5, min(intervals)) if intervals else None

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
        yield KeyBar([(a.key_display or a.key, a.title, a.action) for a in ACTIONS if a.footer], id="keys")

    def on_mount(self) -> None:
        self.query_one("#history").border_title = "Deploys"
        self.query_one("#pending").border_title = "Pending"
        self.query_one(DeployTable).focus()
        if self.first is None:
            self.load_first(None, PAGE, self.loader.generation)
        else:
            self.show_first_screen(self.first)
        self.set_interval(self.poll_interval, self.poll)
        self.call_after_refresh(self.start_health)

    def on_unmount(self) -> None:
        if self.watcher is not None:
            self.watcher.close()  # frees its leases now: another andon takes over at its next round

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
    def load_output(self, deploy_id: int) -> None:
        self.loader.output(deploy_id)

    @work(thread=True, exclusive=True, group="poll", exit_on_error=False)
    def poll(self) -> None:
        self.loader.poll()

    @work(thread=True, exclusive=True, group="health", exit_on_error=False)
    def load_health(self) -> None:
        self.loader.health(self.env, self.live.sha if self.live else None)

    @work(thread=True, exclusive=True, group="verification", exit_on_error=False)
    def load_verification(self, env: str) -> None:
        self.loader.verification(env)

    @work(group="probe", exit_on_error=False)
    async def probe(self) -> None:
        """One round of the watcher (a no-op for environments someone else probes), then the next."""
        from backend import AndonError

        watcher = self.watcher
        if watcher is None:
            return
        try:
            await watcher.round()
        except AndonError as error:  # the log busy for longer than its timeout, say: next round
            self.log.warning(f"health round: {error}")
        if watcher.held:
            self.load_health()  # what this dashboard just probed, without waiting for the next read
        self.set_timer(max(0.1, watcher.seconds_until_due()), self.probe)

    async def start_health(self) -> None:
        """After the first frame: the health panel, its reads and (when checks are configured) probing."""
        from tui.widgets.health import HealthPanel

        await self.mount(HealthPanel(self.world.clock, id="health"), before=self.query_one("#pending"))
        self.load_health()
        if self.env is not None:
            self.load_verification(self.env)
        if self.health_interval is not None:
            self.set_interval(self.health_interval, self.load_health)
            # Probing starts once the first reads are done: a probe timed while the
            # screen is still busy filling itself would look slow (falsely degraded).
            self.set_timer(PROBE_DELAY, self.start_watcher)

    @work(group="probe-start", exit_on_error=False)
    async def start_watcher(self) -> None:
        import asyncio

        def prepare() -> HealthWatcher:
            # httpx, the prober and its TLS context (the CA bundle: ~60 ms) are made ready
            # here, in a thread, so the first round does not do it on the event loop.
            from backend.health import _tls_context
            from backend.watcher import HealthWatcher

            _tls_context()
            # The dashboard's own connection, not a second one: one connection a process
            # is enough, and what this watcher records is read back right after each round
            # it probed (below), so the poller need not see its own writes.
            return HealthWatcher(self.world, log=self.world.log)

        self.watcher = await asyncio.to_thread(prepare)
        if not self.is_mounted:
            self.watcher.close()
            return
        self.probe()

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
        if live_changed and self.health_panel is not None:
            self.load_health()  # the drift is worked out against the live SHA
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
        await self.detail.show_output(message.deploy)

    async def on_health_loaded(self, message: HealthLoaded) -> None:
        for _env, state, text in message.news:
            severity = SEVERITY.get(state, "information")
            self.notify(text, title="Health", severity=severity, markup=False)
        if message.seq < self._health_seq:
            return  # a newer read is already shown
        self._health_seq = message.seq
        if message.states is not None:
            self.query_one(EnvBar).set_health(message.states)
        panel, view = self.health_panel, message.view
        live = self.live.sha if self.live else None
        # Drift is worked out against the live SHA: a read made before the live deploy
        # changed is dropped (the change started another read).
        if panel is not None and view is not None and view.env == self.env and view.live_sha == live:
            await panel.show(view)

    def on_verification_loaded(self, message: VerificationLoaded) -> None:
        panel = self.health_panel
        if panel is not None and message.env == self.env:
            panel.verifying(message.deploy_id, message.started, message.until)

    @property
    def health_panel(self) -> HealthPanel | None:
        found = self.query("#health")
        return found.first() if found else None  # type: ignore[return-value]

    def on_events_arrived(self, message: EventsArrived) -> None:
        """Other programs wrote to the log. A deploy to the shown environment reloads the
        list; a deploy to one not in the bar adds it; a change of health reads the health
        again now (the panel, the marks in the bar, a toast). Other kinds (``line.stopped``)
        are for the panels that will show them: hand them on here."""
        if any(kind == HEALTH_EVENT for kind, _ in message.changes.kinds) and self.health_panel is not None:
            self.load_health()
        if self.env is not None and self.health_panel is not None and any(
                kind in VERIFY_EVENTS and env == self.env for kind, env in message.changes.kinds):
            self.load_verification(self.env)
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
        if (panel := self.health_panel) is not None:
            panel.verifying(None, None, None)
            self.load_health()
            self.load_verification(env)

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
