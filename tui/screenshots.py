"""The main screens of the demo world with a fixed clock, as SVG: ``make screenshots``.

The scenes here are also what the snapshot tests capture, so the README's pictures
and the tests show the same thing.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from textual.pilot import Pilot
from textual.worker import WorkerCancelled

from backend.demo import build
from backend.world import World, resolve_world
from tui.app import AndonApp, make_app
from tui.first_screen import load_first_screen

DEMO_NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
SIZE = (120, 40)


def fixed_clock() -> datetime:
    return DEMO_NOW


async def settle(pilot: Pilot[None]) -> None:
    """Wait until every worker has finished and its messages have been handled."""
    for _ in range(3):
        try:
            await pilot.app.workers.wait_for_complete()
        except WorkerCancelled:  # an exclusive worker replaced by a newer one: fine
            pass
        await pilot.pause()


async def main_screen(pilot: Pilot[None]) -> None:
    await settle(pilot)


async def rollback_detail(pilot: Pilot[None]) -> None:
    """Production, with the demo's rollback deploy selected."""
    await settle(pilot)
    await pilot.press("right_square_bracket")
    await settle(pilot)
    screen = pilot.app.screen
    rollback = next(d for d in screen.deploys if d.trigger == "rollback")  # type: ignore[attr-defined]
    table = screen.query_one("#deploys")
    table.move_cursor(row=table.get_row_index(str(rollback.id)))  # type: ignore[attr-defined]
    await settle(pilot)


async def help_screen(pilot: Pilot[None]) -> None:
    await settle(pilot)
    await pilot.press("question_mark")
    await settle(pilot)


SCENES: dict[str, Callable[[Pilot[None]], Awaitable[None]]] = {
    "main": main_screen,
    "deploy-detail": rollback_detail,
    "help": help_screen,
}


def demo_world(root: Path) -> World:
    files = build(root, DEMO_NOW)
    return resolve_world(files.repo, files.db, None, clock=fixed_clock)


def empty_world(root: Path) -> World:
    """A repository with commits and a configured environment, but no deploys yet."""
    files = build(root, DEMO_NOW)
    return resolve_world(files.repo, root / "empty.db", None, clock=fixed_clock)


def dashboard(world: World) -> AndonApp:
    """The app as ``andon`` opens it: the first screen read before the app starts."""
    return make_app(world, first=load_first_screen(world))


async def _capture(world: World, scene: Callable[[Pilot[None]], Awaitable[None]], path: Path) -> None:
    app = dashboard(world)
    async with app.run_test(size=SIZE) as pilot:
        await scene(pilot)
        app.save_screenshot(filename=path.name, path=str(path.parent))
    world.close()


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="andon-shots-") as temp:
        for name, scene in SCENES.items():
            world = demo_world(Path(temp) / name)
            asyncio.run(_capture(world, scene, out / f"{name}.svg"))
            print(f"wrote {out / name}.svg")
        world = empty_world(Path(temp) / "empty")
        asyncio.run(_capture(world, main_screen, out / "empty.svg"))
        print(f"wrote {out / 'empty'}.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
