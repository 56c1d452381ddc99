"""The main screen's line: the stop-the-line banner, the reads that feed it, and the keys that act on it.

Like :mod:`tui.health_feed`, not a widget: the part of the main screen that keeps the
banner (:class:`~tui.widgets.line_banner.LineBanner`) fed and turns the line's keys into
calls of :mod:`backend.rollback` and the log. The screen creates one :class:`LineFeed`,
calls into it (mounted, another environment shown, other programs' events) and hands it
the messages meant for it.

* Reads run in thread workers (:func:`read_line`) and arrive as :class:`LineLoaded`. A
  ``line.*`` or ``rollback.*`` event, or a deploy event of the environment shown, reads
  at once; the poller hears other programs within half a second, so a stop anywhere
  reaches every dashboard's banner within a second. While a rollback counts down or runs
  the line is read again every half second: the runner streams its output into the log
  without an event (:mod:`backend.store.output`), and the banner shows its latest line.
  A read also notices a runner that died (:func:`backend.deployer.reap`), so the log
  never says ``running`` for a rollback nobody runs.
* Every dashboard hears of every line: a stop of another environment than the one shown
  is a banner too (which environment, by whom, why, and how to show it), and the terminal
  bell rings once for each stop this dashboard saw happen (not for a line that was already
  stopped when it opened).
* Keys: ``!`` stops the line and rolls back to the last good deploy
  (:func:`backend.rollback.request_rollback`: its runner is a process of its own, so
  closing this dashboard does not stop it). First, in the same thread, it asks
  :func:`backend.migrations.rollback_holds` whether that deploy predates the expand of a
  migration that is migrating or further along there: if so nothing is requested, and
  :class:`~tui.widgets.rollback_hold.RollbackHoldModal` says which and waits for ``y`` (roll
  back anyway: requested with ``despite`` those names) or ``n``/esc (nothing happens);
  ``esc``/``c`` cancel a rollback in its grace;
  ``R`` resumes the line; ``S`` stops it without rolling back. Each runs in a thread
  worker and says what happened in a toast. A dashboard opened with ``--read-only`` does
  none of them and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Literal, NamedTuple

from textual.message import Message

from backend import AndonError
from backend.models import RUNNING, SUCCEEDED

if TYPE_CHECKING:
    from backend.migrations import Hold
    from backend.models import Deploy
    from backend.store import Changes
    from backend.store.line import LineState, Rollback
    from backend.world import World
    from tui.screens.main import MainScreen
    from tui.widgets.line_banner import LineBanner

LINE_EVENTS = ("line.", "rollback.")
DEPLOY_EVENTS = "deploy."
KEY_REASON = "pressed ! on the dashboard"
ROLLING_READS = 0.5  # seconds between two reads of the line while a rollback counts down or runs


class LineView(NamedTuple):
    """An environment's line as the banner draws it: the line, the rollback of this stop (the
    active one, or the newest one requested since the line stopped) and that rollback's deploy
    row, output included (None until it runs; while it runs, its output is the end of what it
    has streamed so far)."""

    env: str
    line: LineState
    rollback: Rollback | None = None
    progress: Deploy | None = None
    elsewhere: tuple[LineState, ...] = ()  # the other environments whose line is stopped
    unhealthy: str | None = None  # the rollback succeeded but health did not come back: why (rollback.unhealthy)

    @property
    def stopped(self) -> frozenset[str]:
        """Every environment whose line is stopped, this one included."""
        return frozenset(line.env for line in (self.line, *self.elsewhere) if line.stopped)


class LineLoaded(Message):
    def __init__(self, view: LineView | None, error: str = "") -> None:
        super().__init__()
        self.view = view
        self.error = error


class HoldsFound(Message):
    """``!`` found migrations that a rollback of ``env`` to ``target`` would break: ask first."""

    def __init__(self, env: str, target: str, holds: list[Hold]) -> None:
        super().__init__()
        self.env = env
        self.target = target
        self.holds = holds


class LineActed(Message):
    """A key's action ended: what to say, and how loudly."""

    def __init__(self, text: str, severity: Literal["information", "warning", "error"] = "information") -> None:
        super().__init__()
        self.text = text
        self.severity = severity


def read_line(world: World, env: str) -> LineView:
    """The line of ``env`` now (blocking: SQLite, and stopping what a dead runner left running)."""
    from backend.deployer import reap

    log = world.log
    reap(log, env)
    line = log.line(env)
    newest = log.rollbacks(env, limit=1)
    rollback = newest[0] if newest else None
    if rollback is not None and not rollback.active and not (line.stopped and rollback.requested_at >= line.since):
        rollback = None  # one of an earlier stop
    progress = log.get(rollback.deploy_id) if rollback is not None and rollback.deploy_id is not None else None
    if progress is not None and progress.status == RUNNING:
        progress = progress._replace(output=log.streamed_tail(progress.id))
    elsewhere = tuple(other for name, other in log.lines().items() if name != env and other.stopped)
    unhealthy = log.still_unhealthy(progress.id) if progress is not None and progress.status == SUCCEEDED else None
    return LineView(env, line, rollback, progress, elsewhere, unhealthy)


class LineFeed:
    """The line of ``screen``'s environment: see the module docstring. Every method runs on the screen's loop."""

    def __init__(self, screen: MainScreen, *, read_only: bool = False) -> None:
        self.screen = screen
        self.world = screen.world
        self.read_only = read_only
        self.banner: LineBanner | None = None
        self.view: LineView | None = None

    # -- what the screen calls ------------------------------------------------------------

    async def start(self, after: str) -> None:
        """After the first frame: the banner, mounted right after ``after`` (full width), and a first read."""
        from tui.widgets.line_banner import LineBanner

        screen = self.screen
        banner = LineBanner(self.world.clock, read_only=self.read_only, id="line")
        await screen.mount(banner, after=screen.query_one(after))
        self.banner = banner
        screen.set_interval(ROLLING_READS, self._while_rolling)
        self.read()

    def env_shown(self, env: str) -> None:
        if self.banner is not None:
            self.banner.show(None)
            self.read()

    def events_arrived(self, changes: Changes) -> None:
        env = self.screen.env
        if self.banner is None or env is None:
            return
        # A stop or a rollback anywhere (every dashboard hears of every line), a deploy here.
        if any(kind.startswith(LINE_EVENTS) or (where == env and kind.startswith(DEPLOY_EVENTS))
               for kind, where in changes.kinds):
            self.read()

    def read(self) -> None:
        env = self.screen.env
        if env is None:
            return
        self.screen.run_worker(partial(self._read, env), thread=True, exclusive=True, group="line",
                               exit_on_error=False)

    def _read(self, env: str) -> None:
        try:
            view = read_line(self.world, env)
        except AndonError as error:
            self.screen.post_message(LineLoaded(None, str(error)))
            return
        self.screen.post_message(LineLoaded(view))

    def _while_rolling(self) -> None:
        rollback = self.view.rollback if self.view else None
        if rollback is not None and rollback.active:
            self.read()

    # -- messages --------------------------------------------------------------------------

    def loaded(self, message: LineLoaded) -> None:
        screen = self.screen
        if message.error:
            screen.log.warning(f"line: {message.error}")
            return
        view = message.view
        if view is None or view.env != screen.env or self.banner is None:
            return
        before = self.view
        if before is not None and view.stopped - before.stopped:
            screen.app.bell()  # once: a stop (of any environment) this dashboard saw happen
        self.view = view
        self.banner.show(view)

    def acted(self, message: LineActed) -> None:
        self.screen.notify(message.text, title="Line", severity=message.severity, markup=False)
        self.read()

    # -- keys --------------------------------------------------------------------------------

    def _act(self) -> bool:
        if self.read_only:
            self.screen.notify("This dashboard is read-only: it cannot stop, roll back or resume.",
                               title="Line", severity="warning", markup=False)
            return False
        if self.screen.env is None:
            self.screen.notify("No environment is shown.", title="Line", severity="warning", markup=False)
            return False
        return True

    def _run(self, job: Callable[[], LineActed | HoldsFound]) -> None:
        def work() -> None:
            try:
                message = job()
            except AndonError as error:
                message = LineActed(str(error), "error")
            self.screen.post_message(message)

        self.screen.run_worker(work, thread=True, group="line-act", exit_on_error=False)

    def rollback(self) -> None:
        """``!``: stop the line and roll back to the last good deploy."""
        if self._act():
            self._run(partial(_rollback, self.world, self.screen.env or ""))

    def held(self, message: HoldsFound) -> None:
        """The rollback ``!`` asked for would break migrations: ask, and roll back only on ``y``."""
        from tui.widgets.rollback_hold import RollbackHoldModal

        def answered(despite: bool | None) -> None:
            if despite and self._act():
                names = tuple(hold.name for hold in message.holds)
                self._run(partial(_rollback, self.world, message.env, names))
            elif not despite:
                self.screen.notify(f"{message.env}: nothing rolled back; the line keeps running", title="Line",
                                   markup=False)

        self.screen.app.push_screen(RollbackHoldModal(message.env, message.target, message.holds), answered)

    def cancel(self) -> bool:
        """``esc``/``c``: cancel the rollback in its grace. False when there is none to cancel (the key does its usual thing)."""
        rollback = self.view.rollback if self.view else None
        if rollback is None or rollback.status != "pending":
            return False
        if self._act():
            self._run(partial(_cancel, self.world, self.screen.env or ""))
        return True

    def resume(self) -> None:
        if self._act():
            self._run(partial(_resume, self.world, self.screen.env or ""))

    def stop(self) -> None:
        if self._act():
            self._run(partial(_stop, self.world, self.screen.env or ""))


# -- the actions, in thread workers -------------------------------------------------------------


def _rollback(world: World, env: str, despite: tuple[str, ...] = ()) -> LineActed | HoldsFound:
    """Request the rollback, unless it would break a migration that ``despite`` does not name."""
    from backend.migrations import rollback_holds
    from backend.rollback import MigrationHold, request_rollback
    from backend.store.line import RollbackUnderWay

    good = world.log.last_good(env)
    if good is not None:  # with nothing to roll back to, request_rollback says so
        holds = [hold for hold in rollback_holds(world, env, good.sha) if hold.name not in despite]
        if holds:
            return HoldsFound(env, good.sha, holds)
    try:
        requested = request_rollback(world, env, world.who(), KEY_REASON, despite=despite)
    except RollbackUnderWay as error:
        return LineActed(str(error), "warning")
    except MigrationHold as error:  # a migration got further along since the look above
        return HoldsFound(env, error.target.sha, list(error.holds))
    target = requested.rollback
    return LineActed(f"{env}: the line is stopped; rolling back to {target.target_sha[:7]}"
                     + (f" (deploy #{target.target_deploy_id})" if target.target_deploy_id else ""), "warning")


def _cancel(world: World, env: str) -> LineActed:
    from backend.rollback import cancel_rollback
    from backend.store.line import RollbackUnderWay

    try:
        cancel_rollback(world, env, world.who())
    except RollbackUnderWay as error:
        return LineActed(str(error), "warning")
    return LineActed(f"{env}: rollback cancelled; the line stays stopped")


def _resume(world: World, env: str) -> LineActed:
    from backend.store.line import RollbackUnderWay

    try:
        resumed, state = world.log.resume_line(env, who=world.who())
    except RollbackUnderWay as error:
        return LineActed(str(error), "warning")
    if not resumed:
        return LineActed(f"{env}: the line is running already")
    return LineActed(f"{env}: the line is running again")


def _stop(world: World, env: str) -> LineActed:
    stopped, state = world.log.stop_line(env, who=world.who(), reason="stopped from the dashboard")
    if not stopped:
        return LineActed(f"{env}: the line was already {state.describe()}", "warning")
    return LineActed(f"{env}: the line is stopped; nothing is rolling back", "warning")
