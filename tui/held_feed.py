"""Held commits on the dashboard: the pending panel's marks, and ``u`` to release one.

Like :mod:`tui.line_feed`, not a widget: the reads and the write that feed what shows held
commits (:mod:`backend.held`).

* :class:`HeldFeed` reads the commits held in the environment shown (one SQLite read, no git)
  in a thread worker, after the first frame, when another environment is shown, and when
  another program writes a ``commit.*`` event or a rollback ends (a rollback holds commits);
  :class:`HeldLoaded` hands them to the pending panel, which marks them
  (:meth:`~tui.widgets.commits.CommitTable.mark_held`).
* ``u`` releases one: the selected pending commit when it is held, else the newest held; or,
  when several are held, all of them (the form's last choice, :func:`backend.held.release_all`:
  one event). A :class:`~tui.widgets.release_form.ReleaseForm` names the held commits and asks
  why; the release (:func:`backend.held.release`) runs in a thread worker and its one line comes back as
  :class:`HeldReleased` (a toast). A ``--read-only`` dashboard does not offer ``u``.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Literal

from textual.message import Message

from backend import AndonError

if TYPE_CHECKING:
    from backend.held import HeldCommit
    from backend.store import Changes
    from backend.world import World
    from tui.screens.main import MainScreen
    from tui.widgets.commits import CommitTable

HELD_EVENTS = ("commit.", "rollback.finished")


class HeldLoaded(Message):
    """The commits held in ``env``, or why they could not be read."""

    def __init__(self, env: str, commits: list[HeldCommit], error: str = "") -> None:
        super().__init__()
        self.env = env
        self.commits = commits
        self.error = error


class HeldReleased(Message):
    """A release ended: what to say, and how loudly."""

    def __init__(self, text: str, severity: Literal["information", "warning", "error"] = "information") -> None:
        super().__init__()
        self.text = text
        self.severity = severity


def load(world: World, env: str, post: object) -> None:
    """Read the held commits of ``env`` and post :class:`HeldLoaded` (a thread worker's body)."""
    from backend.held import held

    try:
        message = HeldLoaded(env, held(world, env))
    except AndonError as error:
        message = HeldLoaded(env, [], str(error))
    post(message)  # type: ignore[operator]


def release(world: World, env: str, sha: str | None, reason: str) -> HeldReleased:
    """The release of ``sha`` (None: every commit held in ``env``), written (blocking); a refusal is one line."""
    from backend.held import release as release_commit
    from backend.held import release_all

    try:
        if sha is None:
            return HeldReleased(release_all(world, env, world.who(), reason))
        return HeldReleased(release_commit(world, env, sha, world.who(), reason))
    except AndonError as error:
        return HeldReleased(str(error), "error")


class HeldFeed:
    """See the module docstring. Every method runs on the screen's loop."""

    def __init__(self, screen: MainScreen, *, read_only: bool = False) -> None:
        self.screen = screen
        self.world = screen.world
        self.read_only = read_only
        self.commits: list[HeldCommit] = []
        self.started = False

    @property
    def table(self) -> CommitTable:
        from tui.widgets.commits import CommitTable

        return self.screen.query_one("#pending", CommitTable)

    def start(self) -> None:
        self.started = True
        self.read()

    def env_shown(self, env: str) -> None:
        self.commits = []
        self.table.mark_held(())
        if self.started:
            self.read()

    def events_arrived(self, changes: Changes) -> None:
        env = self.screen.env
        if self.started and any(kind.startswith(HELD_EVENTS) and where == env for kind, where in changes.kinds):
            self.read()

    def read(self) -> None:
        env = self.screen.env
        if env is None:
            return
        self.screen.run_worker(partial(load, self.world, env, self.screen.post_message), thread=True,
                               exclusive=True, group="held", exit_on_error=False)

    def loaded(self, message: HeldLoaded) -> None:
        if message.error:
            self.screen.log.warning(f"held commits: {message.error}")
            return
        if message.env != self.screen.env:
            return
        self.commits = message.commits
        self.table.mark_held(commit.sha for commit in message.commits)

    def released(self, message: HeldReleased) -> None:
        self.screen.notify(message.text, title="Held commits", severity=message.severity, markup=False)
        self.read()

    # -- u -----------------------------------------------------------------------------------

    def release(self) -> None:
        """``u``: ask which held commit (or all) and why, then release in a thread."""
        screen = self.screen
        env = screen.env
        if self.read_only:
            screen.notify("This dashboard is read-only: it cannot release held commits.", title="Held commits",
                          severity="warning", markup=False)
            return
        if env is None:
            return
        if not self.commits:
            screen.notify(f"No commit is held in {env}.", title="Held commits", markup=False)
            return
        from tui.widgets.release_form import Release, ReleaseForm

        selected = self.table.cursor_key
        chosen = selected if any(commit.sha == selected for commit in self.commits) else None

        def answered(answer: Release | None) -> None:
            if answer is None:
                return
            screen.run_worker(partial(self._release, env, None if answer.every_held else answer.sha, answer.reason),
                              thread=True,
                              group="held-release", exit_on_error=False)

        screen.app.push_screen(ReleaseForm(env, self.commits, chosen), answered)

    def _release(self, env: str, sha: str | None, reason: str) -> None:
        self.screen.post_message(release(self.world, env, sha, reason))
