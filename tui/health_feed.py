"""The main screen's health: the panel, the reads that feed it, the toasts, and this dashboard's probing.

Why a module of its own, beside :mod:`tui.loading` rather than in ``tui/widgets/``: it is
not a widget. It is the main screen's part that keeps the health panel
(:class:`~tui.widgets.health.HealthPanel`) and the environment bar's marks fed, and decides
when this dashboard probes; the screen creates one :class:`HealthFeed` and calls into it
(when it mounts and unmounts, shows another environment, sees a new live deploy, or hears
of other programs' events) and hands it the messages meant for it.

* After the first frame :meth:`HealthFeed.start` mounts the panel (its module and
  ``Sparkline`` are not on the path to the first frame) and reads the samples and any
  deploy being verified. With checks configured, it reads them every probe interval (a
  sample write writes no event, so the poller hears nothing) and, ``PROBE_DELAY`` later,
  starts probing.
* Reads are :class:`~tui.loading.Loader` calls in thread workers; a ``health.changed``
  event reads at once, and a change of state is a toast. A read that ends after a newer
  one brings only its news; one made for another environment or live deploy is dropped.
* Probing runs on a thread of its own with its own event loop
  (:class:`backend.watcher.WatcherThread`), never on the screen's loop: with hundreds of
  checks a round's CPU held up every key press (``benchmarks.health_dashboard``). Its
  :class:`~backend.watcher.HealthWatcher` probes only the environments whose lease it
  holds, so a dashboard probes only when nothing else (``andon watch``, another
  dashboard) does. It writes through the dashboard's own log connection, whose writes
  the poller does not see (``data_version`` ignores them): after each round that
  recorded samples the thread posts :class:`HealthProbed` to the screen and the feed
  reads them at once.
* :meth:`HealthFeed.stop`, when the screen unmounts, stops the thread (its task is
  cancelled; a short wait) and releases the leases: another andon takes over at its next
  round.
"""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING, Literal

from textual.message import Message

from tui.loading import HealthLoaded, VerificationLoaded
from tui.widgets.envbar import EnvBar

if TYPE_CHECKING:
    from backend.store import Changes
    from backend.watcher import HealthWatcher, WatcherThread
    from tui.screens.main import MainScreen
    from tui.widgets.health import HealthPanel

HEALTH_EVENT = "health.changed"
VERIFY_EVENTS = ("deploy.verifying", "deploy.verified")  # andon deploy watching a deploy's health
PROBE_DELAY = 1.0  # seconds after the first frame before this dashboard's first probe
STOP_WAIT = 1.0  # seconds the screen waits for the probing thread when it closes
SEVERITY: dict[str, Literal["information", "warning", "error"]] = {
    "down": "error", "degraded": "warning", "unknown": "warning", "healthy": "information"}


class HealthProbed(Message):
    """This dashboard's watcher finished a round: it recorded the samples of ``envs``, or
    failed with ``error`` (tried again an interval later). Posted from the probing thread."""

    def __init__(self, envs: frozenset[str], error: str = "") -> None:
        super().__init__()
        self.envs = envs
        self.error = error


class HealthFeed:
    """The health of ``screen``: see the module docstring. Every method runs on the screen's loop."""

    def __init__(self, screen: MainScreen) -> None:
        self.screen = screen
        self.world = screen.world
        self.loader = screen.loader
        self.panel: HealthPanel | None = None  # mounted after the first frame
        self.probing: WatcherThread | None = None  # once probing has started
        self._shown_seq = 0  # the newest read shown
        self._read_at = -float("inf")  # time.monotonic() when the last read started
        self._stopped = False
        # Samples are read this often (the shortest interval of any configured check).
        intervals = [check.interval for e in self.world.config.environments.values() for check in e.health]
        self.interval = max(0.5, min(intervals)) if intervals else None

    @property
    def watcher(self) -> HealthWatcher | None:
        """This dashboard's watcher (None until the probing thread has made it)."""
        return self.probing.watcher if self.probing is not None else None

    # -- what the screen calls ------------------------------------------------------------

    async def start(self, before: str) -> None:
        """After the first frame: the panel (mounted before ``before``), its reads and probing."""
        from tui.widgets.health import HealthPanel

        if self._stopped:
            return
        screen = self.screen
        panel = HealthPanel(self.world.clock, id="health")
        await screen.mount(panel, before=screen.query_one(before))
        self.panel = panel
        self.read()
        if screen.env is not None:
            self.read_verification(screen.env)
        if self.interval is not None:
            screen.set_interval(self.interval, self._timed_read)
            # Probing starts once the first reads are done: a probe timed while the
            # screen is still busy filling itself would look slow (falsely degraded).
            screen.set_timer(PROBE_DELAY, self.start_probing)

    def stop(self) -> None:
        """The screen is closing: stop probing and release the leases now."""
        self._stopped = True
        if self.probing is not None and not self.probing.stop(STOP_WAIT):
            self.screen.log.warning(f"health probing did not stop within {STOP_WAIT:g}s; left to end by itself")

    def env_shown(self, env: str) -> None:
        """The screen shows ``env`` now: its samples, and whether a deploy there is being verified."""
        if self.panel is not None:
            self.panel.verifying(None, None, None)
            self.read()
            self.read_verification(env)

    def live_changed(self) -> None:
        """The live deploy changed: drift is worked out against its SHA."""
        if self.panel is not None:
            self.read()

    def events_arrived(self, changes: Changes) -> None:
        """Other programs wrote events: a change of health is read now (panel, bar, toast),
        and a verification starting or ending in the environment shown is read too."""
        if self.panel is None:
            return
        if any(kind == HEALTH_EVENT for kind, _ in changes.kinds):
            self.read()
        env = self.screen.env
        if env is not None and any(kind in VERIFY_EVENTS and where == env for kind, where in changes.kinds):
            self.read_verification(env)

    # -- reading (thread workers through the screen's Loader) -------------------------------

    def read(self) -> None:
        """Read the samples of the environment shown and every environment's state, in a thread."""
        screen = self.screen
        self._read_at = time.monotonic()
        live = screen.live.sha if screen.live else None
        screen.run_worker(partial(self.loader.health, screen.env, live), thread=True, exclusive=True,
                          group="health", exit_on_error=False)

    def read_verification(self, env: str) -> None:
        self.screen.run_worker(partial(self.loader.verification, env), thread=True, exclusive=True,
                               group="verification", exit_on_error=False)

    def _timed_read(self) -> None:
        # A read started less than half an interval ago (after this dashboard's own
        # round, say) is fresh enough: reading again would only redraw the same rows.
        if self.interval is not None and time.monotonic() - self._read_at >= self.interval / 2:
            self.read()

    # -- the messages the screen hands on --------------------------------------------------

    async def loaded(self, message: HealthLoaded) -> None:
        screen = self.screen
        for _env, state, text in message.news:
            screen.notify(text, title="Health", severity=SEVERITY.get(state, "information"), markup=False)
        if message.seq < self._shown_seq:
            return  # a newer read is already shown
        self._shown_seq = message.seq
        if message.states is not None:
            screen.query_one(EnvBar).set_health(message.states)
        panel, view = self.panel, message.view
        live = screen.live.sha if screen.live else None
        # Drift is worked out against the live SHA: a read made before the live deploy
        # changed is dropped (the change started another read).
        if panel is not None and view is not None and view.env == screen.env and view.live_sha == live:
            await panel.show(view)

    def verification_loaded(self, message: VerificationLoaded) -> None:
        if self.panel is not None and message.env == self.screen.env:
            self.panel.verifying(message.deploy_id, message.started, message.until)

    def probed(self, message: HealthProbed) -> None:
        if message.error:
            self.screen.log.warning(f"health round: {message.error}")
        elif self.panel is not None and not self._stopped:
            self.read()  # what this dashboard just recorded, without waiting for the next read

    # -- probing -------------------------------------------------------------------------------

    def start_probing(self) -> None:
        """Start this dashboard's watcher on its own thread (it probes only the environments nobody else does)."""
        from backend.watcher import WatcherThread

        if self._stopped or self.probing is not None or not self.screen.is_mounted:
            return
        world = self.world
        screen = self.screen

        def make() -> HealthWatcher:
            # In the probing thread: httpx, the prober and its TLS context (the CA bundle:
            # ~60 ms) are made ready there, never on the screen's loop.
            from backend.health import tls_context
            from backend.watcher import HealthWatcher

            tls_context()
            # The dashboard's own connection, not a second one: one connection a process
            # is enough, and what this watcher records is read back after each round.
            return HealthWatcher(world, log=world.log)

        def tell(message: HealthProbed) -> None:
            try:
                screen.post_message(message)  # thread-safe; dropped once the screen is closing
            except RuntimeError:  # the app's loop has closed: nobody left to tell
                pass

        self.probing = WatcherThread(make, on_round=lambda envs: tell(HealthProbed(envs)),
                                     on_error=lambda error: tell(HealthProbed(frozenset(), str(error) or repr(error))))
        self.probing.start()
