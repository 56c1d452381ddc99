"""The gate (backend/gate.py) at fixed clock times: a stopped line, a freeze, held commits, and the
deploy's side of it (refused, forced, waiting for the line or a freeze to open)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.deployer import deploy
from backend.gate import EXIT_FROZEN, EXIT_LINE_STOPPED, Frozen, admit, check, freeze_json, freeze_lines, span
from backend.runner import Runner
from backend.store.line import LineStopped
from backend.world import World, resolve_world
from tests.conftest import Repo, one_line

# Production is frozen every weekend, Friday 18:00 to Monday 08:00 in Berlin (UTC+1 in November).
CONFIG = f"""\
[environments.production]
deploy = [{json.dumps(sys.executable)}, "-c", "pass"]

[[environments.production.freeze]]
reason = "weekend"
timezone = "Europe/Berlin"
cron = "0 18 * * fri"
duration = "62h"

[environments.staging]
deploy = [{json.dumps(sys.executable)}, "-c", "pass"]
"""
FRIDAY_BEFORE = datetime(2026, 11, 20, 16, 59, tzinfo=UTC)  # 17:59 in Berlin
SATURDAY = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
OPENS = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)  # Monday 08:00 in Berlin


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(SATURDAY)


@pytest.fixture
def world(repo: Repo, tmp_path: Path, clock: Clock) -> Iterator[World]:
    (repo.path / "andon.toml").write_text(CONFIG)
    repo.commit("first")
    made = resolve_world(repo.path, tmp_path / "deploys.db", None, clock=clock)
    yield made
    made.close()


def test_the_gate_before_inside_and_after_a_weekend_freeze(world: World, clock: Clock) -> None:
    assert check(world, "production", now=FRIDAY_BEFORE).code == 0
    inside = check(world, "production", now=SATURDAY)
    assert (inside.ok, inside.code, [r.kind for r in inside.refusals]) == (False, EXIT_FROZEN, ["frozen"])
    [refusal] = inside.refusals
    assert refusal.message == "production is frozen: weekend, opens 2026-11-23 07:00 UTC (in 1 d 19 h)"
    assert refusal.detail == {"reason": "weekend", "since": "2026-11-20T17:00:00.000000Z",
                              "opens": "2026-11-23T07:00:00.000000Z"}
    assert check(world, "production", now=OPENS - timedelta(seconds=1)).code == EXIT_FROZEN
    assert check(world, "production", now=OPENS).ok
    assert check(world, "staging", now=SATURDAY).ok  # no freeze configured there
    clock.now = OPENS + timedelta(days=4, hours=10)  # Friday 18:00 Berlin again: the clock is the world's
    assert check(world, "production").code == EXIT_FROZEN


def test_a_stopped_line_comes_first_and_json_lists_every_reason(world: World, clock: Clock) -> None:
    world.log.stop_line("production", who="alice", reason="api down")
    clock.now = SATURDAY + timedelta(hours=2, minutes=14)
    gate = check(world, "production")
    assert gate.code == EXIT_LINE_STOPPED
    data = gate.to_json()
    assert (data["env"], data["ok"], data["code"], data["sha"]) == ("production", False, 5, None)
    stopped, frozen = data["reasons"]
    assert (stopped["kind"], stopped["code"], stopped["who"], stopped["reason"]) == ("stopped", 5, "alice", "api down")
    assert (stopped["since"], stopped["seconds"]) == ("2026-11-21T12:00:00.000000Z", 2 * 3600 + 14 * 60)
    assert stopped["message"] == ("the line of production is stopped by alice since 2026-11-21 12:00:00 UTC "
                                  "(2 h 14 min ago): api down")
    assert (frozen["kind"], frozen["code"], frozen["opens"]) == ("frozen", 12, "2026-11-23T07:00:00.000000Z")
    world.log.resume_line("production", who="alice")
    assert check(world, "production").code == EXIT_FROZEN


def test_span_and_the_freeze_facts_for_people(world: World) -> None:
    assert [span(s) for s in (0, 45, 14 * 60, 2 * 3600 + 14 * 60, 3600, 3 * 86400 + 2 * 3600, 86400)] == [
        "0 s", "45 s", "14 min", "2 h 14 min", "1 h", "3 d 2 h", "1 d"]
    monday = OPENS + timedelta(hours=1)
    facts = freeze_json(world, "production", monday)
    assert facts == {"frozen": None, "next": {"reason": "weekend", "starts": "2026-11-27T17:00:00.000000Z",
                                              "opens": "2026-11-30T07:00:00.000000Z"}}
    assert freeze_lines(facts, monday) == [
        "freeze   next: weekend from 2026-11-27 17:00 UTC (in 4 d 9 h) until 2026-11-30 07:00 UTC"]
    assert freeze_lines(freeze_json(world, "production", SATURDAY), SATURDAY) == [
        "FROZEN   since 2026-11-20 17:00 UTC: weekend, opens 2026-11-23 07:00 UTC (in 1 d 19 h)"]
    assert freeze_json(world, "staging", SATURDAY) == {"frozen": None, "next": None}


def test_a_deploy_in_a_freeze_is_refused_and_forcing_it_is_recorded(world: World) -> None:
    with pytest.raises(Frozen) as refused:
        deploy(world, "production", "HEAD", runner=Runner())
    assert one_line(refused.value).startswith("production is frozen: weekend, opens 2026-11-23 07:00 UTC")
    assert refused.value.exit_code == EXIT_FROZEN
    assert world.log.deploys("production") == []
    outcome = deploy(world, "production", "HEAD", runner=Runner(), force=True, reason="security fix")
    assert outcome.deploy.status == "succeeded" and [r.kind for r in outcome.overrode] == ["frozen"]
    assert outcome.forced is None  # the line itself was running
    [forced] = [event for event in world.log.events() if event.kind == "deploy.forced"]
    assert json.loads(forced.detail) == {"reason": "security fix", "frozen": {
        "reason": "weekend", "opens": "2026-11-23T07:00:00.000000Z"}}


def test_forcing_a_stop_and_a_freeze_at_once_records_both(world: World) -> None:
    world.log.stop_line("production", who="alice", reason="api down")
    outcome = deploy(world, "production", "HEAD", runner=Runner(), force=True, reason="the fix")
    assert [r.kind for r in outcome.overrode] == ["stopped", "frozen"] and outcome.forced is not None
    [forced] = [event for event in world.log.events() if event.kind == "deploy.forced"]
    assert json.loads(forced.detail) == {"reason": "the fix", "stopped_by": "alice", "stopped_reason": "api down",
                                         "frozen": {"reason": "weekend", "opens": "2026-11-23T07:00:00.000000Z"}}
    from tui.screens.events import describe

    assert describe(forced) == "FORCED deploy #1 through the stopped line and a freeze: the fix"


def test_waiting_for_a_freeze_that_opens_within_the_wait(world: World, clock: Clock) -> None:
    clock.now = OPENS - timedelta(seconds=3)
    head = world.history.resolve("HEAD")
    waited: list[tuple[str, float]] = []
    slept: list[float] = []
    ticks = [0.0]

    def sleep(seconds: float) -> None:  # time passes for the clock and the deadline alike
        slept.append(seconds)
        ticks[0] += seconds
        clock.now += timedelta(seconds=seconds)

    gate = admit(world, "production", head, force=False, wait=10, monotonic=lambda: ticks[0], sleep=sleep,
                 on_wait=lambda refusal, seconds: waited.append((refusal.kind, seconds)))
    assert gate.ok and waited == [("frozen", 10)]
    assert slept == [0.5] * 6  # looked again every half second until it opened
    # A freeze that opens after the wait would end is refused at once, saying when it opens.
    clock.now = SATURDAY
    slept.clear()
    with pytest.raises(Frozen) as refused:
        admit(world, "production", head, force=False, wait=60, monotonic=lambda: ticks[0], sleep=sleep)
    assert slept == [] and "--wait-line 60 would not reach it" in one_line(refused.value)


def test_waiting_for_a_stopped_line_gives_up_with_exit_5_or_goes_when_it_resumes(world: World) -> None:
    world.log.stop_line("staging", who="alice", reason="api down")
    head = world.history.resolve("HEAD")
    ticks = [0.0]
    looks: list[float] = []

    def sleep(seconds: float) -> None:
        ticks[0] += seconds
        looks.append(seconds)
        if len(looks) == 4:
            world.log.resume_line("staging", who="bob")  # someone resumes it while we wait

    assert admit(world, "staging", head, force=False, wait=30, monotonic=lambda: ticks[0], sleep=sleep).ok
    assert len(looks) == 4
    world.log.stop_line("staging", who="alice", reason="again")
    with pytest.raises(LineStopped) as stopped:
        admit(world, "staging", head, force=False, wait=2, monotonic=lambda: ticks[0],
              sleep=lambda s: ticks.__setitem__(0, ticks[0] + s))
    assert one_line(stopped.value).startswith("after 2s of waiting, the line of staging is stopped by alice")


# -- the dashboard ---------------------------------------------------------------------------


async def test_the_dashboard_shows_the_freeze_in_force_and_when_it_opens(world: World, clock: Clock) -> None:
    from tests.conftest import wait_for
    from tui.app import make_app
    from tui.widgets.freeze_line import FreezeLine

    world.log.record("production", world.history.resolve("HEAD"), "succeeded", who="ci")
    app = make_app(world)

    def shown() -> str:
        found = app.screen.query(FreezeLine)
        return str(found.first().render()) if found and found.first().display else ""

    async with app.run_test(size=(120, 30)) as pilot:
        assert await wait_for(pilot, lambda: shown() != "")
        line = app.screen.query_one(FreezeLine)
        assert shown() == "❄ production is frozen: weekend, opens 2026-11-23 07:00 UTC (in 1 d 19 h)"
        assert line.has_class("-frozen")
        app.screen.env = "staging"  # type: ignore[attr-defined]
        assert await wait_for(pilot, lambda: shown() == "also frozen: production (weekend)")
        assert not line.has_class("-frozen")
        app.screen.env = "production"  # type: ignore[attr-defined]
        clock.now = OPENS + timedelta(hours=1)  # Monday: open again, the next weekend comes
        line.read()  # what the half-minute timer does
        assert await wait_for(pilot, lambda: shown().startswith("next freeze of production: weekend from "
                                                                "2026-11-27 17:00 UTC (in 4 d 9 h)"))
        assert not line.has_class("-frozen")


async def test_the_dashboard_has_no_freeze_line_without_freezes(repo: Repo, tmp_path: Path) -> None:
    from tests.conftest import wait_for
    from tui.app import make_app
    from tui.widgets.freeze_line import FreezeLine

    (repo.path / "andon.toml").write_text(f"[environments.staging]\ndeploy = {json.dumps([sys.executable])}\n")
    repo.commit("first")
    world = resolve_world(repo.path, tmp_path / "deploys.db", None)
    try:
        app = make_app(world)
        async with app.run_test(size=(120, 30)) as pilot:
            assert await wait_for(pilot, lambda: bool(app.screen.query("#overdue")))  # after the first frame
            await pilot.pause(0.2)
            assert not app.screen.query(FreezeLine)
    finally:
        world.close()
