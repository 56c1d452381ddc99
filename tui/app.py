"""The dashboard application. :func:`make_app` is the one factory the CLI, the demo and tests use."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from textual.app import App, SystemCommand
from textual.markup import escape
from textual.screen import Screen

from backend.text import clean_line
from backend.world import World
from tui.commands import offered
from tui.first_screen import FirstScreen
from tui.screens.main import MainScreen


class AndonApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "andon"

    def __init__(self, world: World, *, poll_interval: float = 0.5, first: FirstScreen | None = None,
                 read_only: bool = False, greeting: str = "") -> None:
        super().__init__()
        self.world = world
        self.read_only = read_only  # a wall display: cannot stop, roll back or resume
        self.greeting = greeting  # plain text for a toast once the dashboard is up (andon demo: where things are)
        self.poll_interval = poll_interval
        self.first = first
        root = world.history.root
        self.sub_title = clean_line(root.name if root else str(world.db_path))

    def get_default_screen(self) -> MainScreen:
        # The dashboard is the first screen itself: no blank default screen to build first.
        return MainScreen(self.world, self.poll_interval, self.first, read_only=self.read_only)

    def on_mount(self) -> None:
        if self.greeting:
            self.notify(self.greeting, title="andon", timeout=30, markup=False)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if isinstance(screen, MainScreen):
            for action in offered(self.read_only):
                if not action.action.startswith("app."):  # the app's own commands cover quitting
                    yield SystemCommand(action.title, action.help, partial(screen.run_action, action.action))
            for env in screen.envs:
                # The palette reads titles as markup; a name from the log is data.
                name = escape(env)
                yield SystemCommand(f"Show {name}", f"Switch to the {name} environment", partial(screen.switch_to, env))


def make_app(world: World, *, poll_interval: float = 0.5, first: FirstScreen | None = None,
             read_only: bool = False, greeting: str = "") -> AndonApp:
    """The dashboard for ``world``; ``first`` (from :func:`load_first_screen`) fills its first frame.
    ``read_only``: a dashboard that cannot stop the line, roll back or resume (a wall display).
    ``greeting``: plain text shown in a toast once it is up (the demo says where its files are)."""
    return AndonApp(world, poll_interval=poll_interval, first=first, read_only=read_only, greeting=greeting)
