"""Pilot tests: the dashboard on real repositories and real deploy logs, driven by keys."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from textual.message import Message
from textual.widgets import Log, Static

from backend.history import Range
from backend.models import Commit
from backend.store import Changes, DeployLog, StoreError
from backend.world import World, resolve_world
from tests.conftest import Repo, wait_for
from tui.app import make_app
from tui.commands import ACTIONS
from tui.first_screen import load_first_screen
from tui.loading import EventsArrived, RangesLoaded
from tui.screens.help import HelpScreen
from tui.screens.main import PAGE, MainScreen
from tui.screenshots import settle
from tui.widgets.commits import CommitTable
from tui.widgets.deploys import DeployTable
from tui.widgets.envbar import EnvBar
from tui.widgets.keybar import KeyBar

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def world_for(repo: Path, db: Path) -> World:
    return resolve_world(repo, db, None, clock=lambda: NOW)


@pytest.fixture
def history(repo: Repo, tmp_path: Path) -> tuple[Repo, Path, list[str]]:
    """Six commits; staging got commits 2 and 5, production got commit 2."""
    shas = [repo.commit(f"change {n}", author=f"Author {n % 2}") for n in range(6)]
    db = tmp_path / "deploys.db"
    log = DeployLog.open(db)
    log.record("staging", shas[1], "succeeded", who="ci", at=NOW - timedelta(hours=5))
    log.record("staging", shas[4], "succeeded", who="ci", at=NOW - timedelta(hours=2))
    log.record("production", shas[1], "succeeded", who="alice", at=NOW - timedelta(hours=4))
    log.close()
    return repo, db, shas


def rows(app) -> list[str]:  # type: ignore[no-untyped-def]
    table = app.screen.query_one(DeployTable)
    return [str(table.get_row_at(i)[2]) for i in range(table.row_count)]


def commit_subjects(table: CommitTable) -> list[str]:
    return [str(table.get_row_at(i)[-1]) for i in range(table.row_count)]


async def test_opens_on_the_first_environment_with_its_deploys(history) -> None:
    repo, db, shas = history
    app = make_app(world_for(repo.path, db))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, MainScreen)
        assert screen.envs == ["production", "staging"]
        assert screen.env == "production"
        assert rows(app) == [shas[1][:7]]


async def test_bracket_switches_environment_and_shows_release_range(history) -> None:
    repo, db, shas = history
    app = make_app(world_for(repo.path, db))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert app.screen.env == "staging"
        assert rows(app) == [shas[4][:7], shas[1][:7]]
        # The newest staging deploy shipped commits 3, 4 and 5 (shas[2..4]).
        commits = app.screen.query_one("#commits", CommitTable)
        assert commit_subjects(commits) == ["change 4", "change 3", "change 2"]
        assert "Commits shipped: 3" in str(commits.border_title)
        # The pending list: commit 6 is on main but not live in staging.
        pending = app.screen.query_one("#pending", CommitTable)
        assert commit_subjects(pending) == ["change 5"]


async def test_moving_the_cursor_shows_that_deploys_commits_and_output(repo: Repo, tmp_path: Path) -> None:
    shas = [repo.commit(f"c{n}") for n in range(3)]
    log = DeployLog.open(tmp_path / "d.db")
    first = log.record("prod", shas[0], "succeeded", who="ci", at=NOW - timedelta(hours=3), output="first output\n")
    log.record("prod", shas[2], "failed", who="ci", at=NOW - timedelta(hours=1), output="boom\n")
    log.close()
    app = make_app(world_for(repo.path, tmp_path / "d.db"))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert "boom" in "\n".join(app.screen.query_one("#output", Log).lines)
        await pilot.press("down")
        await settle(pilot)
        assert app.screen.selected.id == first.id
        assert commit_subjects(app.screen.query_one("#commits", CommitTable)) == ["c0"]
        assert "first deploy here" in str(app.screen.query_one("#commits", CommitTable).border_title)
        assert "first output" in "\n".join(app.screen.query_one("#output", Log).lines)


async def test_a_deploy_written_by_another_process_appears_without_a_key_press(history) -> None:
    repo, db, shas = history
    app = make_app(world_for(repo.path, db), poll_interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert rows(app) == [shas[1][:7]]
        other = DeployLog.open(db)  # another writer, as CI would be
        other.record("production", shas[5], "succeeded", who="ci", at=NOW)
        other.close()
        for _ in range(100):  # the poller runs every 0.05 s; give it up to ~5 s on a busy machine
            await pilot.pause(0.05)
            await settle(pilot)
            if len(rows(app)) == 2:
                break
        assert rows(app) == [shas[5][:7], shas[1][:7]]


async def test_only_a_deploy_to_the_shown_environment_reloads_its_list(history) -> None:
    repo, db, shas = history
    arrived: list[Changes] = []

    def hook(message: Message) -> None:
        if isinstance(message, EventsArrived):
            arrived.append(message.changes)

    app = make_app(world_for(repo.path, db))  # polling twice a second, as andon does
    async with app.run_test(size=(120, 40), message_hook=hook) as pilot:
        await settle(pilot)
        screen = app.screen
        assert screen.env == "production" and rows(app) == [shas[1][:7]]
        reloads: list[str] = []
        loader = screen.loader
        deploys, first_screen = loader.deploys, loader.first_screen
        loader.deploys = lambda *args, **kwargs: (reloads.append("deploys"), deploys(*args, **kwargs))[-1]
        loader.first_screen = lambda *args: (reloads.append("all"), first_screen(*args))[-1]

        # Another andon keeps a range it worked out: a write, but no event.
        other = DeployLog.open(db)
        version = loader.version
        other.cache_ranges({(None, shas[0]): (True, 1, "[]")})
        assert await wait_for(pilot, lambda: loader.version != version)
        # Another program writes an event of a kind the list does not show, and CI
        # deploys to an environment that is not the one shown.
        with sqlite3.connect(db) as raw:
            raw.execute("INSERT INTO events (at, kind, env, who, detail) "
                        "VALUES ('2026-11-20T15:00:00.000000Z', 'health.changed', 'production', 'probe', '{}')")
        other.record("staging", shas[5], "succeeded", who="ci", at=NOW)
        seen = lambda: {kind for changes in arrived for kind in changes.kinds}  # noqa: E731
        assert await wait_for(pilot, lambda: {("health.changed", "production"), ("deploy.recorded", "staging")}
                              <= seen())
        await pilot.pause(0.6)  # a poll more
        await settle(pilot)
        assert reloads == [] and rows(app) == [shas[1][:7]]

        # A deploy to the shown environment is on screen within a second.
        other.record("production", shas[5], "succeeded", who="ci", at=NOW)
        written = time.monotonic()
        assert await wait_for(pilot, lambda: rows(app) == [shas[5][:7], shas[1][:7]], seconds=1.0)
        assert time.monotonic() - written < 1.0
        assert reloads == ["deploys"]
        other.close()


async def test_the_first_deploy_ever_shows_on_a_dashboard_opened_before_it(repo: Repo, tmp_path: Path) -> None:
    sha = repo.commit("only")
    world = world_for(repo.path, tmp_path / "new.db")
    app = make_app(world, first=load_first_screen(world), poll_interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.screen.has_class("-empty") and app.screen.envs == []
        other = DeployLog.open(tmp_path / "new.db")
        other.record("staging", sha, "succeeded", who="ci", at=NOW)
        other.close()
        assert await wait_for(pilot, lambda: rows(app) == [sha[:7]])
        assert app.screen.env == "staging" and not app.screen.has_class("-empty")


async def test_a_first_read_that_fails_is_shown_and_tried_again(history, monkeypatch) -> None:
    repo, db, shas = history
    world = world_for(repo.path, db)
    real = world.log.deploys
    calls: list[int] = []

    def locked_once(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:
            raise StoreError("deploy log: the database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(world.log, "deploys", locked_once)
    app = make_app(world)  # no first screen: the first read is a worker's
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        problem = app.screen.query_one("#problem", Static)
        assert problem.display and "locked" in str(problem.render())
        # Nothing was read, so no change will ever come to say "read again": it tries by itself.
        assert await wait_for(pilot, lambda: rows(app) == [shas[1][:7]])
        assert not problem.display


async def test_filter_narrows_the_history_and_escape_restores_it(history) -> None:
    repo, db, shas = history
    app = make_app(world_for(repo.path, db))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("right_square_bracket")
        await settle(pilot)
        await pilot.press("slash")
        await pilot.press(*"change 3")  # a commit subject shipped only by the newest staging deploy
        await settle(pilot)
        assert rows(app) == [shas[4][:7]]
        await pilot.press("escape")
        await settle(pilot)
        assert rows(app) == [shas[4][:7], shas[1][:7]]
        assert app.screen.filter_text == ""


async def test_the_filter_builds_each_deploys_search_text_once(history, monkeypatch) -> None:
    import tui.widgets.deploys as deploys_module

    built: list[int] = []
    real = deploys_module.search_text

    def counting(deploy, found):  # type: ignore[no-untyped-def]
        built.append(deploy.id)
        return real(deploy, found)

    monkeypatch.setattr(deploys_module, "search_text", counting)
    repo, db, shas = history
    app = make_app(world_for(repo.path, db))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("right_square_bracket")
        await settle(pilot)
        screen = app.screen
        staging = sorted(d.id for d in screen.deploys)
        await pilot.press("slash")
        for key in "change 3":  # eight keystrokes, each filtering the list anew
            await pilot.press(key)
            await pilot.pause()
        await settle(pilot)
        assert rows(app) == [shas[4][:7]]
        assert sorted(built) == staging  # each deploy's text built once, not once a keystroke
        # A range that arrives anew makes that deploy's text again, and only that one.
        newest = screen.deploys[0]
        arrived = Range([Commit(shas[5], "Someone", "2026-11-20T14:00:00Z", "brand new subject")])
        built.clear()
        screen.post_message(RangesLoaded("staging", {(newest.prev_sha, newest.sha): arrived},
                                         screen.loader.generation))
        await settle(pilot)
        await pilot.press(*["backspace"] * len("change 3"), *"brand new")
        await settle(pilot)
        assert built == [newest.id]
        assert rows(app) == [shas[4][:7]]


async def test_untrusted_commit_text_and_names_show_literally(repo: Repo, tmp_path: Path) -> None:
    nasty = ["fix [/] parsing", "[bold red]hello", "[link=https://evil.example]click[/link]"]
    shas = [repo.commit(subject) for subject in nasty]
    message = tmp_path / "msg"
    message.write_bytes(b"red \x1b[31malert\x1b[0m and bad \xff byte")
    repo.git("commit", "--allow-empty", "-q", "-F", str(message))
    shas.append(repo.head())
    log = DeployLog.open(tmp_path / "d.db")
    log.record("prod", shas[0], "succeeded", who="ci", at=NOW - timedelta(hours=2))
    log.record("prod", shas[-1], "succeeded", who="[b]mallory[/b] \x1b]0;pwned\x07", at=NOW)
    log.close()
    app = make_app(world_for(repo.path, tmp_path / "d.db"))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        subjects = commit_subjects(app.screen.query_one("#commits", CommitTable))
        assert subjects[1:] == ["[link=https://evil.example]click[/link]", "[bold red]hello"]
        # git re-encodes a non-UTF-8 message as it sees fit; what matters is no escape and no crash
        assert subjects[0].startswith("red alert and bad ") and "\x1b" not in subjects[0]
        who = str(app.screen.query_one(DeployTable).get_row_at(0)[4])
        assert who == "[b]mallory[/b] "
        summary = str(app.screen.query_one("#summary", Static).render())
        assert "[b]mallory[/b]" in summary and "\x1b" not in summary


async def test_a_sha_missing_from_the_clone_is_explained_not_fatal(repo: Repo, tmp_path: Path) -> None:
    repo.commit("real")
    gone = "0123456789abcdef0123456789abcdef01234567"
    log = DeployLog.open(tmp_path / "d.db")
    log.record("prod", repo.head(), "succeeded", who="ci", at=NOW - timedelta(hours=2))
    log.record("prod", gone, "succeeded", who="ci", at=NOW)
    log.close()
    app = make_app(world_for(repo.path, tmp_path / "d.db"))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        commits = app.screen.query_one("#commits", CommitTable)
        assert commits.border_title == "commits unavailable: 0123456 is not in this clone"
        assert str(app.screen.query_one(DeployTable).get_row_at(0)[5]) == "n/a"


async def test_rows_another_program_damaged_are_listed_marked_and_explained(repo: Repo, tmp_path: Path) -> None:
    shas = [repo.commit(f"c{n}") for n in range(4)]
    db = tmp_path / "d.db"
    log = DeployLog.open(db)
    good = log.record("prod", shas[0], "succeeded", who="ci", at=NOW - timedelta(hours=4))
    yesterday = log.record("prod", shas[1], "failed", who="ci", at=NOW - timedelta(hours=3))
    no_such_day = log.record("prod", shas[2], "succeeded", who="ci", at=NOW - timedelta(hours=2))
    log.close()
    with sqlite3.connect(db) as raw:  # another program, which may do anything
        raw.execute("DROP TRIGGER IF EXISTS deploys_finish_once")
        raw.execute("UPDATE deploys SET started_at = 'yesterday' WHERE id = ?", (yesterday.id,))
        # Shaped like a time, but there is no 30 February.
        raw.execute("UPDATE deploys SET started_at = '2026-02-30T10:00:00.000000Z', finished_at = '2026-02-30T10:05:00.000000Z'"
                    " WHERE id = ?", (no_such_day.id,))
        inserted = raw.execute(
            "INSERT INTO deploys (env, sha, status, who, trigger, started_at, finished_at, exit_code)"
            " VALUES ('prod', ?, 'succeeded', 'script', 'ci', '2026-11-20T14:30:00.000000Z', 42, 'boom')",
            (shas[3],)).lastrowid
    world = world_for(repo.path, db)
    app = make_app(world, first=load_first_screen(world))  # as andon opens: the rows are in the first frame
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        table = screen.query_one(DeployTable)
        by_id = {d.id: d for d in screen.deploys}
        assert set(by_id) == {good.id, yesterday.id, no_such_day.id, inserted}
        status = {int(str(table.get_row_at(i)[0])): table.get_row_at(i)[3] for i in range(table.row_count)}
        for damaged in (yesterday.id, inserted):
            assert by_id[damaged].damaged
            assert str(status[damaged]) == "⚠ damaged"
            assert status[damaged].style == screen.colours["warning"]
        assert str(status[no_such_day.id]) == "✔ succeeded" and not by_id[no_such_day.id].damaged
        for deploy_id in by_id:  # each drawn, then selected: its summary says what is wrong
            table.move_cursor(row=table.get_row_index(str(deploy_id)))
            table.render_line(1 + table.get_row_index(str(deploy_id)))
            await settle(pilot)
            assert app.is_running and screen.selected.id == deploy_id
            summary = str(screen.query_one("#summary", Static).render())
            reason = by_id[deploy_id].damaged
            assert (reason in summary) if reason else ("damaged" not in summary)
        assert "started_at 'yesterday' is not a time" in by_id[yesterday.id].damaged
        # 30 February is shown as an unknown time.
        table.move_cursor(row=table.get_row_index(str(no_such_day.id)))
        await settle(pilot)
        assert "? UTC (? ago)" in str(screen.query_one("#summary", Static).render())
        assert str(table.get_row_at(table.get_row_index(str(no_such_day.id)))[1]) == "?"


async def test_help_opens_and_escape_closes_it(history) -> None:
    repo, db, _ = history
    app = make_app(world_for(repo.path, db))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)


async def test_the_palette_offers_every_screen_action_and_running_one_does_it(history) -> None:
    repo, db, shas = history
    app = make_app(world_for(repo.path, db))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        titles = {command.title for command in app.get_system_commands(app.screen)}
        screen_actions = {a.title for a in ACTIONS if not a.action.startswith("app.")}
        assert {"Help", "Filter", "Next environment", "Refresh", "Output"} <= screen_actions
        assert screen_actions <= titles
        assert {"Show production", "Show staging", "Quit"} <= titles  # Quit: the app's own command
        # Chosen in the palette, an action runs on the dashboard.
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert type(app.screen).__name__ == "CommandPalette"
        await pilot.press(*"Next environment")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, MainScreen)
        assert app.screen.env == "staging" and rows(app) == [shas[4][:7], shas[1][:7]]
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Output")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen.has_class("-no-output")


async def test_the_key_bar_shows_the_footer_actions_and_runs_them_on_click(history) -> None:
    repo, db, _ = history
    app = make_app(world_for(repo.path, db))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        bar = app.screen.query_one(KeyBar)
        line = bar.render_line(0).text
        assert line.startswith(" ? Help  / Filter  ] Next environment  e Events  ! Stop & roll back  q Quit ")
        assert line.endswith("▏ ^p palette ") and len(line) == 120
        assert await pilot.click(KeyBar, offset=(1, 0))  # "?"
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert await pilot.click(KeyBar, offset=(11, 0))  # "Filter"
        await pilot.pause()
        assert app.screen.has_class("-filtering") and app.focused is not None and app.focused.id == "filter"
        await pilot.press("escape")
        assert await pilot.click(KeyBar, offset=(115, 0))  # "palette"
        await pilot.pause()
        assert type(app.screen).__name__ == "CommandPalette"


async def test_on_a_narrow_terminal_the_key_bar_keeps_the_palette_hint(history) -> None:
    repo, db, _ = history
    app = make_app(world_for(repo.path, db))
    async with app.run_test(size=(40, 20)) as pilot:
        await settle(pilot)
        line = app.screen.query_one(KeyBar).render_line(0).text
        assert line == " ? Help  / Filter  ] Next e▏ ^p palette "
        assert await pilot.click(KeyBar, offset=(30, 0))  # "^p": the palette's, though a hint ran there
        await pilot.pause()
        assert type(app.screen).__name__ == "CommandPalette"


async def test_on_a_narrow_terminal_the_deploy_goes_under_the_list(history) -> None:
    repo, db, _ = history
    app = make_app(world_for(repo.path, db))
    async with app.run_test(size=(90, 30)) as pilot:
        await settle(pilot)
        history_pane, detail = app.screen.query_one("#history"), app.screen.query_one("#detail")
        assert app.screen.has_class("-narrow")
        assert detail.region.y >= history_pane.region.bottom and detail.region.width == history_pane.region.width == 90
        await pilot.resize_terminal(120, 40)
        await settle(pilot)
        assert app.screen.has_class("-wide")
        assert detail.region.y == history_pane.region.y and detail.region.x >= history_pane.region.right


async def test_q_quits(history) -> None:
    repo, db, _ = history
    app = make_app(world_for(repo.path, db))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running


async def test_empty_log_shows_how_to_start(repo: Repo, tmp_path: Path) -> None:
    repo.commit("only")
    (repo.path / "andon.toml").write_text('[environments.staging]\ndeploy = ["true"]\n')
    app = make_app(world_for(repo.path, tmp_path / "new.db"))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.screen.has_class("-empty")
        text = str(app.screen.query_one("#empty", Static).render())
        assert "No deploys to staging yet" in text
        assert "andon record --env staging" in text


async def test_big_history_loads_a_page_then_more_at_the_end(repo: Repo, tmp_path: Path) -> None:
    sha = repo.commit("one")
    log = DeployLog.open(tmp_path / "d.db")
    rows_in = [{"env": "prod", "sha": sha, "status": "succeeded", "who": "ci",
                "at": (NOW - timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")}
               for n in range(PAGE + 200)]
    log.import_many(rows_in, who="test")
    log.close()
    app = make_app(world_for(repo.path, tmp_path / "d.db"))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(DeployTable)
        assert table.row_count == PAGE
        seen = [table.row_count]
        for _ in range(10):  # each trip to the end loads one more page
            await pilot.press("ctrl+end")
            await settle(pilot)
            seen.append(table.row_count)
            if table.row_count == PAGE + 200:
                break
        assert seen[1] == 2 * PAGE and seen[-1] == PAGE + 200
        assert len({str(table.get_row_at(i)[0]) for i in range(table.row_count)}) == PAGE + 200


async def test_no_repository_still_shows_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = tmp_path / "not-a-repo"
    plain.mkdir()
    monkeypatch.chdir(plain)
    log = DeployLog.open(tmp_path / "d.db")
    log.record("prod", "a" * 40, "succeeded", who="ci", at=NOW)
    log.close()
    world = resolve_world(None, tmp_path / "d.db", None, clock=lambda: NOW)
    app = make_app(world)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert rows(app) == ["aaaaaaa"]
        assert "not in a git repository" in str(app.screen.query_one("#commits", CommitTable).border_title)


async def test_the_first_frame_already_shows_the_deploys(history) -> None:
    """As andon opens it: the first page is read before the app starts, no worker needed."""
    repo, db, shas = history
    world = world_for(repo.path, db)
    app = make_app(world, first=load_first_screen(world))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()  # one turn of the event loop: no worker has finished yet
        assert rows(app) == [shas[1][:7]]
        assert app.screen.envs == ["production", "staging"]
        await settle(pilot)
        # git's part (pending commits) follows from a worker.
        assert commit_subjects(app.screen.query_one("#pending", CommitTable)) == [
            "change 5", "change 4", "change 3", "change 2"]


async def test_a_new_environment_gets_a_tab_and_the_current_one_stays(history) -> None:
    repo, db, shas = history
    app = make_app(world_for(repo.path, db), poll_interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert app.screen.env == "staging"
        other = DeployLog.open(db)
        other.record("canary", shas[5], "succeeded", who="ci", at=NOW)
        other.close()
        for _ in range(100):
            await pilot.pause(0.05)
            await settle(pilot)
            if "canary" in app.screen.envs:
                break
        assert app.screen.envs == ["production", "staging", "canary"]
        assert app.screen.env == "staging"
        assert rows(app) == [shas[4][:7], shas[1][:7]]
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert app.screen.env == "canary" and rows(app) == [shas[5][:7]]


async def test_the_environment_bar_follows_keys_and_clicks(history) -> None:
    repo, db, shas = history
    app = make_app(world_for(repo.path, db))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        bar = app.screen.query_one(EnvBar)
        assert (bar.names, bar.active) == (["production", "staging"], "production")
        # Drawn as " production  staging ": a click on "staging" (column 14) shows it.
        assert bar.render_line(0).text.startswith(" production  staging ")
        assert await pilot.click(EnvBar, offset=(14, 0))
        await settle(pilot)
        assert (app.screen.env, bar.active) == ("staging", "staging")
        assert rows(app) == [shas[4][:7], shas[1][:7]]
        # Going round: past the last name comes the first; before the first, the last.
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert (app.screen.env, bar.active) == ("production", "production")
        await pilot.press("left_square_bracket")
        await settle(pilot)
        assert (app.screen.env, bar.active) == ("staging", "staging")
        # A click beside the names changes nothing.
        assert await pilot.click(EnvBar, offset=(60, 0))
        await settle(pilot)
        assert app.screen.env == "staging"


async def test_the_environment_bar_keeps_the_shown_name_in_view(history) -> None:
    repo, db, shas = history
    log = DeployLog.open(db)
    names = [f"region-{n:02d}-{'x' * 20}" for n in range(8)]  # 8 x 32 columns: wider than 120
    for name in names:
        log.record(name, shas[5], "succeeded", who="ci", at=NOW)
    log.close()
    app = make_app(world_for(repo.path, db))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        bar = app.screen.query_one(EnvBar)
        assert names[-1] not in bar.render_line(0).text
        app.screen.switch_to(names[-1])
        await settle(pilot)
        line = bar.render_line(0).text
        assert line.rstrip().endswith(names[-1]) and len(line) == bar.size.width


async def test_the_ansi_themes_colour_the_statuses(history) -> None:
    # Their colours are names Rich does not know ("ansi_green"): read as Rich's own.
    repo, db, shas = history
    app = make_app(world_for(repo.path, db))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.theme = "ansi-dark"
        await pilot.press("right_square_bracket")
        await settle(pilot)
        table = app.screen.query_one(DeployTable)
        assert rows(app) == [shas[4][:7], shas[1][:7]]
        assert str(table.get_row_at(0)[3].style) == "green"
        line = table.render_line(1)  # drawn, not just built
        assert any(seg.style and seg.style.color and seg.style.color.name == "green" for seg in line)


def test_an_unexpected_error_finding_the_world_is_raised_as_itself() -> None:
    from tui.cli import open_dashboard

    def find_world() -> World:
        raise PermissionError("denied")

    with pytest.raises(PermissionError, match="denied"):
        open_dashboard(find_world)


async def test_filter_text_is_never_markup(history) -> None:
    repo, db, _ = history
    app = make_app(world_for(repo.path, db))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        await pilot.press(*"[/]")
        await settle(pilot)
        assert app.is_running
        title = app.screen.query_one("#history").border_title
        assert "[/]" in str(title)
        assert rows(app) == []


async def test_results_of_an_older_load_are_dropped(history) -> None:
    repo, db, shas = history
    app = make_app(world_for(repo.path, db))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        stale = screen.loader.generation - 1
        from tui.loading import DeploysLoaded

        screen.post_message(DeploysLoaded("production", [], 0, None, generation=stale))
        await settle(pilot)
        assert rows(app) == [shas[1][:7]]


async def test_redrawing_the_list_does_not_reload_the_selected_output(history, monkeypatch) -> None:
    repo, db, _ = history
    app = make_app(world_for(repo.path, db))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        asked: list[int] = []
        monkeypatch.setattr(screen, "load_output", lambda deploy_id: asked.append(deploy_id))
        screen.render_deploys()
        screen.reload()
        await settle(pilot)
        assert asked == []


async def test_no_environments_at_all_shows_how_to_start(repo: Repo, tmp_path: Path) -> None:
    repo.commit("only")
    world = world_for(repo.path, tmp_path / "new.db")
    app = make_app(world, first=load_first_screen(world))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.screen.has_class("-empty")
        assert "No environments yet" in str(app.screen.query_one("#empty", Static).render())
