"""The migration backlog on the dashboard: the screen (b), its writes, read-only, live progress,
the overdue count on the main screen, the rollback hold on !, and the demo that shows them all.

Real demo worlds (a real repository with Migration trailers, a real deploy log); the steps
are written through the screen's keys and checked in the log; another connection plays
the migration job. The demo is built once per module (a fixed clock) and copied per test.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.demo import build
from backend.migrations import apply, evaluate
from backend.models import utc_now
from backend.rollback import cancel_rollback
from backend.world import World, resolve_world
from tests.conftest import Repo, wait_for
from tui.app import make_app
from tui.commands import BACKLOG_ACTIONS, offered
from tui.screens.migrations import MigrationsScreen
from tui.screenshots import DEMO_NOW, fixed_clock, probed_elsewhere, settle
from tui.widgets.backlog import BacklogDetail, BacklogList, key
from tui.widgets.keybar import KeyBar
from tui.widgets.migration_forms import ConfirmForm, SnoozeForm, TextForm, parse_until
from tui.widgets.overdue import OverdueCount
from tui.widgets.rollback_hold import RollbackHoldModal

SIZE = (120, 40)
PHASES = {"expand_pending", "expanded", "migrating", "cleanup_due", "done", "aborted", "waived"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "world"
    build(root, DEMO_NOW, service=False)
    probed_elsewhere(root / "deploys.db")  # the dashboards never probe the demo's (absent) service
    return root


@pytest.fixture
def world(built: Path, tmp_path: Path) -> World:
    root = tmp_path / "world"
    shutil.copytree(built, root)
    opened = resolve_world(root / "repo", root / "deploys.db", None, clock=fixed_clock)
    yield opened
    opened.close()


def other(world: World) -> World:
    """Another program on the same log (its own connection), at the same fixed time."""
    return resolve_world(world.history.root, world.db_path, None, clock=fixed_clock)


def shown(app) -> MigrationsScreen:  # type: ignore[no-untyped-def]
    screen = app.screen
    assert isinstance(screen, MigrationsScreen), screen
    return screen


def detail_text(app) -> str:  # type: ignore[no-untyped-def]
    return str(app.screen.query_one(BacklogDetail).render())


async def select(pilot, name: str, env: str) -> None:  # type: ignore[no-untyped-def]
    rows = pilot.app.screen.query_one(BacklogList)
    rows.move_cursor(row=rows.get_row_index(f"{name}\x00{env}"))
    await pilot.pause()


async def open_backlog(pilot) -> MigrationsScreen:  # type: ignore[no-untyped-def]
    await settle(pilot)
    await pilot.press("b")
    await settle(pilot)
    assert await wait_for(pilot, lambda: bool(shown(pilot.app).statuses))
    return shown(pilot.app)


def state(world: World, name: str, env: str):  # type: ignore[no-untyped-def]
    with_other = other(world)
    try:
        return with_other.log.migration_state(name, env)
    finally:
        with_other.close()


# -- the demo: every phase, one overdue, a stall, a flag, a malformed trailer ------------------------


def test_the_demo_has_every_phase_an_overdue_cleanup_and_a_malformed_trailer(world: World) -> None:
    backlog = evaluate(world, now=DEMO_NOW)
    assert {status.phase for status in backlog.statuses} == PHASES
    severities = {(s.name, s.env): s.severity for s in backlog.statuses}
    assert severities[("orders-amount-cents", "production")] == "overdue"
    assert severities[("orders-amount-cents", "staging")] == "critical"
    assert backlog.overdue() == 2
    moving = backlog.find("users-email-split", "production")
    assert moving is not None and moving.phase == "migrating" and moving.progress is not None
    assert not moving.stalled and moving.progress.total == 2_000_000
    assert any(s.stalled for s in backlog.statuses)
    assert any("contract_before_finish" in s.flags for s in backlog.statuses)
    assert [p.text for p in backlog.problems] == ["Migration: [bold]cache warm-up[/bold] expand"]


def test_the_demo_job_moves_the_running_migration_while_you_watch(tmp_path: Path) -> None:
    from backend.demo_migrations import TICK

    files = build(tmp_path / "w", utc_now(), service=True)
    try:
        opened = resolve_world(files.repo, files.db, None)
        try:
            def done() -> int:
                status = evaluate(opened, evidence=False).find("users-email-split", "production")
                assert status is not None and status.progress is not None
                return status.progress.done

            first = done()
            deadline = time.monotonic() + 4 * TICK + 2
            while done() == first and time.monotonic() < deadline:
                time.sleep(0.2)
            assert done() > first
        finally:
            opened.close()
    finally:
        assert files.migration is not None
        files.migration.stop()
        assert files.service is not None and files.chat is not None
        files.service.stop()
        files.chat.stop()


# -- the screen ----------------------------------------------------------------------------------


async def test_b_opens_the_backlog_most_urgent_first_and_esc_closes_it(world: World) -> None:
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_backlog(pilot)
        expected = [key(s) for s in evaluate(world, now=DEMO_NOW).statuses]
        rows = screen.query_one(BacklogList)
        assert [rows._keys[i] for i in range(rows.row_count)] == expected
        assert expected[0] == "orders-amount-cents\x00staging"
        assert "!! critical" in str(rows.get_row_at(0)[0])
        assert "critical" in detail_text(app) and "old code still referenced in 3 places" in detail_text(app)
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, MigrationsScreen)


async def test_a_flag_is_loud_and_untrusted_text_stays_literal(world: World) -> None:
    job = other(world)
    apply(job, "note", "search-index-v2", "staging", who="x", text="see [red]this[/] \x1b[31mnow")
    job.close()
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        await open_backlog(pilot)
        await select(pilot, "search-index-v2", "staging")
        text = detail_text(app)
        assert "CONTRACT LIVE BEFORE THE MIGRATION FINISHED" in text
        assert "see [red]this[/]" in text and "\x1b" not in text


async def test_note_snooze_waive_and_finish_write_to_the_log(world: World) -> None:
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        await open_backlog(pilot)
        # note
        await select(pilot, "sessions-redis", "staging")
        await pilot.press("n")
        assert await wait_for(pilot, lambda: isinstance(app.screen, TextForm))
        await pilot.press(*"on call: Ada")
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: state(world, "sessions-redis", "staging").note == "on call: Ada")
        # snooze: a bad date is refused in the form, then a span
        await settle(pilot)
        await select(pilot, "orders-amount-cents", "staging")
        await pilot.press("z")
        assert await wait_for(pilot, lambda: isinstance(app.screen, SnoozeForm))
        await pilot.press(*"yesterday", "enter", *"export first", "enter")
        await pilot.pause()
        assert isinstance(app.screen, SnoozeForm)  # not a date: the form stays, nothing written
        assert state(world, "orders-amount-cents", "staging").snoozes == 0
        app.screen.query_one("#form-until").value = "3d"  # type: ignore[attr-defined]
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: state(world, "orders-amount-cents", "staging").snoozes == 1)
        assert state(world, "orders-amount-cents", "staging").snoozed_until.startswith("2026-11-23")
        # waive
        await settle(pilot)
        await select(pilot, "feature-flags-v2", "staging")
        await pilot.press("w")
        assert await wait_for(pilot, lambda: isinstance(app.screen, TextForm))
        await pilot.press(*"flags v1 never shipped here", "enter")
        assert await wait_for(pilot, lambda: state(world, "feature-flags-v2", "staging") is not None
                              and state(world, "feature-flags-v2", "staging").ended == "waived")
        # finish: n answers no and writes nothing, y finishes
        await settle(pilot)
        await select(pilot, "users-email-split", "production")
        await pilot.press("f")
        assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmForm))
        await pilot.press("n")
        await settle(pilot)
        assert state(world, "users-email-split", "production").finished_at is None
        await pilot.press("f")
        assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmForm))
        await pilot.press("y")
        assert await wait_for(pilot, lambda: state(world, "users-email-split", "production").finished_at is not None)
        # the screen shows what was written (its own writes move no data_version: it reads again itself)
        assert await wait_for(pilot, lambda: "cleanup due" in detail_text(app))


async def test_a_refused_step_is_a_one_line_toast(world: World) -> None:
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        await open_backlog(pilot)
        await select(pilot, "payments-ledger-split", "production")  # aborted: only a note is allowed
        await pilot.press("f")
        assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmForm))
        await pilot.press("y")
        assert await wait_for(pilot, lambda: bool(app._notifications))
        toast = list(app._notifications)[-1]
        assert toast.severity == "warning" and "\n" not in str(toast.message) and "note" in str(toast.message)
        assert state(world, "payments-ledger-split", "production").finished_at is None


async def test_a_read_only_dashboard_offers_no_writes(world: World) -> None:
    app = make_app(world, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_backlog(pilot)
        await select(pilot, "sessions-redis", "staging")
        for letter in "nzwf":
            await pilot.press(letter)
            await pilot.pause()
            assert app.screen is screen, letter  # no form opened
        hints = {title for _, title, _ in screen.query_one(KeyBar).hints}
        assert hints == {"Close"}
        assert [a.action for a in offered(True, BACKLOG_ACTIONS)] == ["refresh", "close"]
        screen.write(screen.status(), "note", text="sneaky")  # type: ignore[arg-type]
        await settle(pilot)
        assert state(world, "sessions-redis", "staging").note == ""


async def test_progress_reported_by_another_program_shows_within_a_second_or_two(world: World) -> None:
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        await open_backlog(pilot)
        await select(pilot, "users-email-split", "production")
        assert "40.5%" in detail_text(app)
        job = other(world)
        try:
            apply(job, "progress", "users-email-split", "production", who="migrate-job", done=1_500_000,
                  total=2_000_000)
        finally:
            job.close()
        assert await wait_for(pilot, lambda: "1,500,000 of 2,000,000 (75.0%)" in detail_text(app), 3.0)


# -- the main screen's count ---------------------------------------------------------------------


async def test_the_main_screen_counts_the_overdue_cleanups_and_b_opens_them(world: World) -> None:
    app = make_app(world)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        count = app.screen.query_one(OverdueCount)
        assert await wait_for(pilot, lambda: count.display and count.count == 2)
        assert "2 overdue cleanups (1 critical) — b shows the backlog" in str(count.render())
        # Waived elsewhere: the count follows (another program's event).
        job = other(world)
        try:
            apply(job, "waive", "orders-amount-cents", "staging", who="x", reason="staging is rebuilt nightly")
        finally:
            job.close()
        assert await wait_for(pilot, lambda: count.count == 1, 3.0)
        assert "1 overdue cleanup —" in str(count.render())


async def test_no_overdue_cleanup_no_line(repo: Repo, tmp_path: Path) -> None:
    repo.commit("first")
    (repo.path / "andon.toml").write_text('[environments.staging]\ndeploy = ["true"]\n')
    opened = resolve_world(repo.path, tmp_path / "deploys.db", None)
    opened.log.record("staging", repo.head(), "succeeded", who="ci")
    app = make_app(opened)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert await wait_for(pilot, lambda: bool(app.screen.query(OverdueCount)))
            await settle(pilot)
            assert not app.screen.query_one(OverdueCount).display
    finally:
        opened.close()


# -- the rollback hold on ! -----------------------------------------------------------------------


@pytest.fixture
def live_world(tmp_path: Path) -> World:
    """The demo at the real time: a rollback requested here is pending for its real grace."""
    files = build(tmp_path / "w", utc_now(), service=False)
    probed_elsewhere(files.db)
    opened = resolve_world(files.repo, files.db, None)
    yield opened
    opened.close()


async def production(pilot) -> None:  # type: ignore[no-untyped-def]
    await settle(pilot)
    await pilot.press("right_square_bracket")
    await settle(pilot)


async def test_bang_on_a_held_rollback_asks_and_neither_bang_nor_esc_rolls_back(live_world: World) -> None:
    app = make_app(live_world)
    async with app.run_test(size=SIZE) as pilot:
        await production(pilot)
        await pilot.press("exclamation_mark")
        assert await wait_for(pilot, lambda: isinstance(app.screen, RollbackHoldModal))
        text = str(app.screen.query_one("#hold-text").render())
        assert "users-email-split — migrating — expand" in text
        await pilot.press("exclamation_mark")  # habit: ! again answers nothing
        await settle(pilot)
        assert isinstance(app.screen, RollbackHoldModal)
        assert "! does not answer this" in str(app.screen.query_one("#hold-hint").render())
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, RollbackHoldModal)
        assert live_world.log.rollbacks("production") == []
        assert not live_world.log.line("production").stopped


async def test_y_on_a_held_rollback_rolls_back_despite_the_migration(live_world: World) -> None:
    app = make_app(live_world)
    async with app.run_test(size=SIZE) as pilot:
        await production(pilot)
        await pilot.press("exclamation_mark")
        assert await wait_for(pilot, lambda: isinstance(app.screen, RollbackHoldModal))
        await pilot.press("y")
        try:
            assert await wait_for(pilot, lambda: bool(live_world.log.rollbacks("production")), 5.0)
            assert live_world.log.line("production").stopped
        finally:
            if live_world.log.rollbacks("production"):
                cancel_rollback(live_world, "production", "test")  # its runner ends; nothing runs


# -- the forms ------------------------------------------------------------------------------------


def test_until_reads_a_date_a_time_or_a_span_and_refuses_the_past() -> None:
    assert parse_until("2026-12-01", DEMO_NOW) == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_until("2026-12-01 09:30", DEMO_NOW) == datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    assert parse_until("3d", DEMO_NOW) == DEMO_NOW + timedelta(days=3)
    assert parse_until(" 12h ", DEMO_NOW) == DEMO_NOW + timedelta(hours=12)
    for bad in ("2026-11-01", "soon", "", "0d"):
        with pytest.raises(ValueError):
            parse_until(bad, DEMO_NOW)
