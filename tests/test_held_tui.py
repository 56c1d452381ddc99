"""Pilot tests of held commits on the dashboard: the pending panel's marks, ``u`` to release one,
read-only dashboards. A real rollback (``andon rollback`` and its runner) holds the commits; the log
is the real file the dashboards and the ``andon`` processes share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import OptionList

from backend.world import resolve_world
from tests.conftest import Repo, wait_for
from tests.test_cli import ok
from tests.test_held import ENV, Line
from tui.app import make_app
from tui.commands import offered
from tui.screens.events import describe
from tui.screenshots import settle
from tui.widgets.commits import HELD_MARK, CommitTable
from tui.widgets.release_form import ALL, ReleaseForm


@pytest.fixture
def rolled(repo: Repo, tmp_path: Path) -> Line:
    """production had good, then bad (bad one, bad two); rolled back and resumed; one more commit on top."""
    line = Line(repo, tmp_path)
    line.record(line.good, line.bad2)
    line.roll_back()
    line.later = line.change("later", "a fix on top")  # type: ignore[attr-defined]
    return line


def pending(app) -> CommitTable:  # type: ignore[no-untyped-def]
    return app.screen.query_one("#pending", CommitTable)


def marked(table: CommitTable) -> dict[str, bool]:
    """Each pending commit's SHA: whether its row is drawn held (component class and mark)."""
    found = {}
    for sha, index in table.rows.items():
        subject = table.get_row_at(index)[-1].plain
        found[sha] = table.row_component(index) == "commits--held" and subject.startswith(HELD_MARK)
    return found


def released(line: Line) -> list[tuple[str, dict]]:
    return line.events("commit.released")


async def test_the_pending_panel_marks_the_held_commits_and_only_them(rolled: Line) -> None:
    app = make_app(resolve_world(rolled.path))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = pending(app)
        assert await wait_for(pilot, lambda: len(table.rows) == 3 and table.held, seconds=10)
        assert marked(table) == {rolled.later: False, rolled.bad2: True, rolled.bad1: True}  # type: ignore[attr-defined]
        assert table.has_class("-held")
        held_style = table.get_component_rich_style("commits--held")
        assert held_style.color is not None and held_style.bold
        # Another program releases one: the mark goes within a poll or two.
        ok("release", rolled.bad2, "--env", ENV, "--reason", "fine after all", cwd=rolled.path)
        assert await wait_for(pilot, lambda: rolled.bad2 not in table.held, seconds=10)
        assert marked(table)[rolled.bad2] is False and marked(table)[rolled.bad1] is True


async def test_u_releases_the_selected_held_commit_with_a_reason(rolled: Line) -> None:
    app = make_app(resolve_world(rolled.path))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = pending(app)
        assert await wait_for(pilot, lambda: len(table.rows) == 3 and table.held, seconds=10)
        table.focus()
        table.move_cursor(row=table.rows[rolled.bad1])
        await pilot.pause()
        await pilot.press("u")
        assert await wait_for(pilot, lambda: isinstance(app.screen, ReleaseForm))
        form = app.screen
        assert isinstance(form, ReleaseForm)
        options = form.query_one("#release-commit")
        assert options.highlighted == 1  # bad two, then bad one: the selected one is chosen
        await pilot.press("enter")  # no reason yet: refused in the form, nothing written
        await pilot.pause()
        assert isinstance(app.screen, ReleaseForm) and released(rolled) == []
        await pilot.press(*"tested in staging")
        await pilot.press("enter")
        assert await wait_for(pilot, lambda: rolled.bad1 not in table.held, seconds=10)
        assert not isinstance(app.screen, ReleaseForm)
        [(who, detail)] = released(rolled)
        assert detail == {"sha": rolled.bad1, "reason": "tested in staging"}
        assert rolled.bad2 in table.held
    assert rolled.blocking(rolled.bad2) == [rolled.bad2]


async def test_u_offers_all_held_commits_and_releases_them_with_one_event(rolled: Line) -> None:
    app = make_app(resolve_world(rolled.path))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = pending(app)
        assert await wait_for(pilot, lambda: len(table.held) == 2, seconds=10)
        await pilot.press("u")
        assert await wait_for(pilot, lambda: isinstance(app.screen, ReleaseForm))
        options = app.screen.query_one("#release-commit", OptionList)
        assert [options.get_option_at_index(n).id for n in range(options.option_count)] == [
            rolled.bad2, rolled.bad1, ALL]
        assert "all 2 held commits" in str(options.get_option(ALL).prompt)
        options.highlighted = options.get_option_index(ALL)
        await pilot.press(*"the build broke", "enter")
        assert await wait_for(pilot, lambda: not table.held, seconds=10)
        assert not isinstance(app.screen, ReleaseForm)
        assert await wait_for(pilot, lambda: any("released 2 commits held in production" in str(n.message)
                                                 for n in app._notifications))
    [(who, detail)] = released(rolled)
    assert detail == {"shas": [rolled.bad2, rolled.bad1], "subjects": ["bad two", "bad one"], "count": 2,
                      "reason": "the build broke"}
    assert rolled.blocking(rolled.bad2) == []


async def test_esc_in_the_release_form_writes_nothing_and_u_with_nothing_held_says_so(rolled: Line) -> None:
    app = make_app(resolve_world(rolled.path))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = pending(app)
        assert await wait_for(pilot, lambda: table.held, seconds=10)
        await pilot.press("u")
        assert await wait_for(pilot, lambda: isinstance(app.screen, ReleaseForm))
        assert app.screen.query_one("#release-commit").highlighted == 0  # nothing held selected: the newest
        await pilot.press(*"x", "escape")
        assert await wait_for(pilot, lambda: not isinstance(app.screen, ReleaseForm))
        await pilot.pause(0.3)
        assert released(rolled) == [] and len(table.held) == 2
        await pilot.press("right_square_bracket")  # staging: nothing held there
        assert await wait_for(pilot, lambda: app.screen.env == "staging" and not table.held)
        await pilot.pause(0.3)
        await pilot.press("u")
        await pilot.pause()
        assert not isinstance(app.screen, ReleaseForm)
        assert any("No commit is held in staging" in str(n.message) for n in app._notifications)


async def test_a_read_only_dashboard_marks_held_commits_but_offers_no_release(rolled: Line) -> None:
    assert "release_held" in {action.action for action in offered(False)}
    assert "release_held" not in {action.action for action in offered(True)}
    app = make_app(resolve_world(rolled.path), read_only=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = pending(app)
        assert await wait_for(pilot, lambda: len(table.held) == 2, seconds=10)
        table.focus()
        await pilot.press("u")
        await pilot.pause(0.3)
        assert not isinstance(app.screen, ReleaseForm)
        assert any("read-only" in str(n.message) for n in app._notifications)
    assert released(rolled) == []
    assert [detail["count"] for _, detail in rolled.events("commit.held")] == [2]
    assert json.dumps(rolled.blocking(rolled.bad2)) == json.dumps([rolled.bad2, rolled.bad1])


def test_the_events_screen_tells_of_holds_and_releases(rolled: Line) -> None:
    ok("release", rolled.bad1, "--env", ENV, "--reason", "tested", cwd=rolled.path)
    ok("release", "--all", "--env", ENV, "--reason", "the build broke", cwd=rolled.path)
    log = rolled.log()
    try:
        said = [describe(event) for event in reversed(log.events(1000)) if event.kind.startswith("commit.")]
    finally:
        log.close()
    assert said == [f"held 2 commits after a rollback: {rolled.bad2[:7]}, {rolled.bad1[:7]}",
                    f"released held commit {rolled.bad1[:7]}: tested",
                    f"released 1 held commit ({rolled.bad2[:7]}): the build broke"]
