"""The main screens of the demo world with a fixed clock, as SVG: ``make screenshots``.

The scenes here are also what the snapshot tests capture, so the README's pictures
and the tests show the same thing. The demo's health service is not started, and every
environment's health lease is held by "another andon" for good (the clock is fixed), so
the dashboard never probes: its health panel shows exactly the samples the world holds.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.worker import WorkerCancelled

from backend.demo import ENVIRONMENTS, build
from backend.models import DEGRADED, DOWN, UP, HealthSample, to_iso
from backend.store import DeployLog
from backend.world import World, resolve_world
from tui.app import AndonApp, make_app
from tui.first_screen import load_first_screen

DEMO_NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
SIZE = (120, 40)


def fixed_clock() -> datetime:
    return DEMO_NOW


async def settle(pilot: Pilot[None]) -> None:
    """Wait until every worker has finished and its messages have been handled."""
    for _ in range(4):
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


async def production(pilot: Pilot[None]) -> None:
    """Production (its health panel), the second environment of the demo."""
    await settle(pilot)
    await pilot.press("right_square_bracket")
    await settle(pilot)


async def help_screen(pilot: Pilot[None]) -> None:
    await settle(pilot)
    await pilot.press("question_mark")
    await settle(pilot)


async def migrations_screen(pilot: Pilot[None]) -> None:
    """The cleanup backlog (b), the most urgent row selected."""
    await settle(pilot)
    await pilot.press("b")
    await settle(pilot)


async def rollback_held(pilot: Pilot[None]) -> None:
    """Production, ! pressed: users-email-split's expand is in the live deploy only, so the rollback asks first."""
    await production(pilot)
    await pilot.press("exclamation_mark")
    await settle(pilot)


SCENES: dict[str, Callable[[Pilot[None]], Awaitable[None]]] = {
    "main": main_screen,
    "deploy-detail": rollback_detail,
    "help": help_screen,
    "migrations": migrations_screen,
    "rollback-held": rollback_held,
}


def probed_elsewhere(db: Path) -> None:
    """Every environment's health lease taken by another andon: the dashboard shown never probes."""
    log = DeployLog.open(db, clock=fixed_clock)
    try:
        for env in ENVIRONMENTS:
            log.take_lease(f"health:{env}", "andon watch (screenshots)", 3600)
    finally:
        log.close()


def demo_world(root: Path, health: str | None = None, line: str | None = None) -> World:
    """The demo world; ``health`` names a last round of production's probes from :data:`HEALTH`,
    ``line`` what happened to production's line from :data:`LINE`."""
    files = build(root, DEMO_NOW, service=False)
    probed_elsewhere(files.db)
    for name, table in ((health, HEALTH), (line, LINE)):
        if name is None:
            continue
        log = DeployLog.open(files.db, clock=fixed_clock)
        try:
            table[name](log)
        finally:
            log.close()
    return resolve_world(files.repo, files.db, None, clock=fixed_clock)


def empty_world(root: Path) -> World:
    """A repository with commits and a configured environment, but no deploys yet."""
    files = build(root, DEMO_NOW, service=False)
    probed_elsewhere(root / "empty.db")
    return resolve_world(files.repo, root / "empty.db", None, clock=fixed_clock)


# -- production's health in a few states: the last probes, written as the prober would ----


Fields = dict[str, Any]


def _round(log: DeployLog, state: str, rounds: Sequence[tuple[Fields, Fields]]) -> None:
    """``rounds`` of (api, web) sample fields, two seconds apart after the demo's own probes
    (which end at the fixed clock: these are a few seconds ahead of it, still fresh)."""
    live = log.live("production")
    samples = []
    for number, (api, web) in enumerate(rounds):
        at = to_iso(DEMO_NOW + timedelta(seconds=2 * (number + 1)))
        up = HealthSample("production", "api", at, UP, 200, 12.0, live.sha if live else None)
        samples += [up._replace(**api), up._replace(check="web", version=None)._replace(**web)]
    log.record_health(samples, state, who="andon watch", env="production")


def degraded(log: DeployLog) -> None:
    slow: Fields = {"state": DEGRADED, "latency_ms": 412.5}
    _round(log, DEGRADED, [({"latency_ms": 180.0}, {})] + [(slow, {})] * 4)


def down(log: DeployLog) -> None:
    broken: Fields = {"state": DOWN, "status_code": 503, "latency_ms": 9.0, "error": "HTTP 503"}
    refused: Fields = {"state": DOWN, "status_code": None, "latency_ms": None, "version": None,
                       "error": "connection refused"}
    _round(log, DOWN, [(broken, broken)] * 3 + [(refused, refused)] * 2)


def drifting(log: DeployLog) -> None:
    """The api reports the build before the live one: an older build is still running."""
    deploys = [d for d in log.deploys("production", limit=20) if d.status == "succeeded" and d.trigger != "rollback"]
    older = deploys[2].sha
    _round(log, "healthy", [({"version": older}, {})] * 5)


HEALTH: dict[str, Callable[[DeployLog], None]] = {"degraded": degraded, "down": down, "drifting": drifting}


# -- production's line: stopped by a person, a rollback counting down its grace (no runner:
# nothing runs, and the fixed clock keeps the countdown where it is) ----------------------


def rolling_back(log: DeployLog) -> None:
    log.request_rollback("production", who="Grace Hopper", reason="checkout answers 503 since the last deploy",
                         grace=4)


LINE: dict[str, Callable[[DeployLog], None]] = {"rolling-back": rolling_back}


async def events_screen(pilot: Pilot[None]) -> None:
    await settle(pilot)
    await pilot.press("e")
    await settle(pilot)
    await pilot.pause(0.1)


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
        world = empty_world(Path(temp) / "empty")  # the SCENES above include migrations and rollback-held
        asyncio.run(_capture(world, main_screen, out / "empty.svg"))
        print(f"wrote {out / 'empty'}.svg")
        world = demo_world(Path(temp) / "health-down", "down")
        asyncio.run(_capture(world, production, out / "health-down.svg"))
        print(f"wrote {out / 'health-down'}.svg")
        world = demo_world(Path(temp) / "line-stopped", line="rolling-back")
        asyncio.run(_capture(world, production, out / "line-stopped.svg"))
        print(f"wrote {out / 'line-stopped'}.svg")
        world = demo_world(Path(temp) / "events", line="rolling-back")
        asyncio.run(_capture(world, events_screen, out / "events.svg"))
        print(f"wrote {out / 'events'}.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
