"""Pilot tests of the line on the dashboard: the banner, the ! key, cancel, resume, read-only, events.

Real repositories, a real log file shared by the dashboards and by ``andon`` processes, real
rollback runners (the detached ``andon run-rollback``) running a real script. The clock is
the real one: a rollback's grace is counted by the runner, another process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backend.store import DeployLog
from backend.world import World, resolve_world
from tests.conftest import Repo, wait_for
from tui.app import make_app
from tui.screens.events import EventsScreen, describe
from tui.screenshots import settle
from tui.widgets.keybar import KeyBar
from tui.widgets.line_banner import LineBanner

ROLLBACK_SCRIPT = """\
import sys, time
from pathlib import Path
Path(sys.argv[1]).open("a").write(sys.argv[2] + "\\n")
print("rolled back to", sys.argv[2][:7], flush=True)
"""


@pytest.fixture
def line_world(repo: Repo, tmp_path: Path) -> tuple[Repo, Path, list[str], Path]:
    """Production got commit 1 (good), then commit 3 (the bad one); a rollback appends its SHA to ran.txt."""
    shas = [repo.commit(f"change {n}") for n in range(4)]
    script = tmp_path / "rollback.py"
    script.write_text(ROLLBACK_SCRIPT)
    ran = tmp_path / "ran.txt"
    (repo.path / "andon.toml").write_text(
        "[environments.production]\n"
        f'deploy = ["{sys.executable}", "{script}", "{ran}", "{{sha}}"]\n'
        "rollback_grace_seconds = 3\n")
    db = tmp_path / "deploys.db"
    log = DeployLog.open(db)
    log.record("production", shas[1], "succeeded", who="ci")
    log.record("production", shas[3], "succeeded", who="ci")
    log.close()
    return repo, db, shas, ran


def world_of(repo: Repo, db: Path) -> World:
    return resolve_world(repo.path, db, None)


def banner(app) -> LineBanner:  # type: ignore[no-untyped-def]
    return app.screen.query_one(LineBanner)


def banner_text(app) -> str:  # type: ignore[no-untyped-def]
    found = app.screen.query(LineBanner)
    return str(found.first().render()) if found and found.first().shown else ""


def andon(repo: Repo, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tui.cli", "--repo", str(repo.path), "--db", str(db), *args],
                          capture_output=True, text=True, timeout=60)


async def test_a_stop_anywhere_shows_the_banner_rings_once_and_resume_clears_it(line_world) -> None:
    repo, db, _, _ = line_world
    app = make_app(world_of(repo, db))
    bells: list[int] = []
    app.bell = lambda: bells.append(1)  # type: ignore[method-assign]
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert await wait_for(pilot, lambda: app.screen.query(LineBanner))
        assert banner_text(app) == ""
        done = andon(repo, db, "stop", "--env", "production", "--reason", "api \x1b[31mdown\x1b[0m [b]x[/b]")
        assert done.returncode == 0, done.stderr
        assert await wait_for(pilot, lambda: "LINE STOPPED" in banner_text(app), 2.0)
        text = banner_text(app)
        assert "production" in text and "api down [b]x[/b]" in text  # cleaned, and literal: no markup
        assert "\x1b" not in text
        assert "Nothing is rolling back" in text
        assert bells == [1]
        await pilot.pause(1.2)
        assert bells == [1]  # once
        done = andon(repo, db, "resume", "--env", "production")
        assert done.returncode == 0, done.stderr
        assert await wait_for(pilot, lambda: banner_text(app) == "", 2.0)
        assert not banner(app).display


async def test_a_line_already_stopped_when_the_dashboard_opens_shows_without_a_bell(line_world) -> None:
    repo, db, _, _ = line_world
    assert andon(repo, db, "stop", "--env", "production", "--reason", "frozen").returncode == 0
    app = make_app(world_of(repo, db))
    bells: list[int] = []
    app.bell = lambda: bells.append(1)  # type: ignore[method-assign]
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert await wait_for(pilot, lambda: "frozen" in banner_text(app), 2.0)
        assert bells == []


async def test_the_key_stops_rolls_back_and_cancel_from_a_second_dashboard_runs_nothing(line_world) -> None:
    repo, db, shas, ran = line_world
    first, second = make_app(world_of(repo, db)), make_app(world_of(repo, db))
    async with first.run_test(size=(120, 40)) as one, second.run_test(size=(120, 40)) as two:
        await settle(one)
        await settle(two)
        await one.press("exclamation_mark")
        # The banner shows the target at once, in both dashboards.
        target = shas[1][:7]
        assert await wait_for(one, lambda: f"Rolling back to {target}" in banner_text(first), 2.0)
        assert await wait_for(two, lambda: f"Rolling back to {target}" in banner_text(second), 2.0)
        assert "esc or c cancels it" in banner_text(second)
        await two.press("c")
        assert await wait_for(two, lambda: "cancelled" in banner_text(second), 2.0)
        assert await wait_for(one, lambda: "cancelled" in banner_text(first), 2.0)
        await one.pause(4.0)  # past the grace: the runner saw the cancel and ran nothing
        assert not ran.exists()
        log = DeployLog.open(db)
        try:
            assert log.line("production").stopped
            assert [r.status for r in log.rollbacks("production")] == ["cancelled"]
        finally:
            log.close()


async def test_the_key_rolls_back_to_the_last_good_deploy(line_world) -> None:
    repo, db, shas, ran = line_world
    app = make_app(world_of(repo, db))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("exclamation_mark")
        assert await wait_for(pilot, lambda: "Rolled back to" in banner_text(app), 15.0), banner_text(app)
        assert ran.read_text().split() == [shas[1]]  # ran once, with the last good SHA
        assert "stays stopped" in banner_text(app)
        await pilot.press("R")
        assert await wait_for(pilot, lambda: banner_text(app) == "", 3.0)


async def test_esc_cancels_a_rollback_in_its_grace(line_world) -> None:
    repo, db, _, ran = line_world
    app = make_app(world_of(repo, db))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("exclamation_mark")
        assert await wait_for(pilot, lambda: "Rolling back" in banner_text(app), 2.0)
        await pilot.press("escape")
        assert await wait_for(pilot, lambda: "cancelled" in banner_text(app), 2.0)
        await pilot.pause(3.5)
        assert not ran.exists()


async def test_a_read_only_dashboard_cannot_stop_roll_back_or_resume(line_world) -> None:
    repo, db, _, ran = line_world
    app = make_app(world_of(repo, db), read_only=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        keys = [action for _, _, action in app.screen.query_one(KeyBar).hints]
        assert "stop_and_roll_back" not in keys
        await pilot.press("exclamation_mark")
        await pilot.press("S")
        await pilot.pause(0.5)
        log = DeployLog.open(db)
        try:
            assert not log.line("production").stopped
            assert log.rollbacks("production") == []
        finally:
            log.close()
        assert andon(repo, db, "stop", "--env", "production", "--reason", "x").returncode == 0
        assert await wait_for(pilot, lambda: "LINE STOPPED" in banner_text(app), 2.0)
        assert "R resumes" not in banner_text(app)  # no key offered
        await pilot.press("R")
        await pilot.pause(0.5)
        log = DeployLog.open(db)
        try:
            assert log.line("production").stopped
        finally:
            log.close()


async def test_the_events_screen_shows_who_did_what(line_world) -> None:
    repo, db, _, _ = line_world
    assert andon(repo, db, "stop", "--env", "production", "--reason", "[red]db on fire[/]").returncode == 0
    assert andon(repo, db, "resume", "--env", "production", "--reason", "fixed").returncode == 0
    app = make_app(world_of(repo, db))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("e")
        assert await wait_for(pilot, lambda: isinstance(app.screen, EventsScreen))
        screen = app.screen
        table = screen.query_one("#events")
        assert await wait_for(pilot, lambda: table.row_count >= 4)  # type: ignore[attr-defined]
        whats = [str(table.get_row_at(i)[3]) for i in range(table.row_count)]  # type: ignore[attr-defined]
        assert whats[:2] == ["resumed the line: fixed", "stopped the line: [red]db on fire[/]"]
        await pilot.press("escape")
        assert await wait_for(pilot, lambda: not isinstance(app.screen, EventsScreen))


def test_describe_survives_detail_that_is_not_what_andon_writes() -> None:
    from backend.models import Event

    assert describe(Event(1, "", "line.stopped", "p", None, "x", "[1, 2]")) == "stopped the line"
    assert describe(Event(1, "", "deploy.finished", "p", 3, "x", '{"status": 5}')) == "deploy #3 finished: ?"
    assert describe(Event(1, "", "something.new", "p", None, "x", "{}")) == "something.new"


@pytest.mark.parametrize(("argv", "read_only"), [([], False), (["--read-only"], True), (["dashboard"], False),
                                                 (["dashboard", "--read-only"], True),
                                                 (["--read-only", "dashboard"], True)])
def test_read_only_on_the_command_line(argv: list[str], read_only: bool) -> None:
    from tui.cli import build_parser

    assert build_parser().parse_args(argv).read_only is read_only


async def test_the_banner_follows_the_environment_shown(line_world) -> None:
    repo, db, shas, _ = line_world
    log = DeployLog.open(db)
    log.record("staging", shas[2], "succeeded", who="ci")
    log.stop_line("staging", who="bob", reason="staging db migration")
    log.close()
    app = make_app(world_of(repo, db))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.screen.env == "production"
        assert await wait_for(pilot, lambda: app.screen.query(LineBanner))
        # Another environment's stop is news here too: which, and how to show it.
        assert await wait_for(pilot, lambda: "Not the environment shown (production)" in banner_text(app), 2.0)
        assert "■ LINE STOPPED · staging · by bob" in banner_text(app)
        await pilot.press("right_square_bracket")
        assert await wait_for(pilot, lambda: "Nothing is rolling back" in banner_text(app), 2.0)
        assert banner_text(app).startswith("■ LINE STOPPED · staging · by bob") and "staging db migration" in banner_text(app)
        assert "Also stopped" not in banner_text(app)
        log = DeployLog.open(db)
        log.stop_line("production", who="carol", reason="api down")
        log.close()
        assert await wait_for(pilot, lambda: "Also stopped: production (by carol)." in banner_text(app), 2.0)
        await pilot.press("left_square_bracket")
        assert await wait_for(pilot, lambda: "api down" in banner_text(app) and "Also stopped: staging (by bob)."
                              in banner_text(app), 2.0)
