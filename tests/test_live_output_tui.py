"""Pilot tests: every dashboard shows a running deploy's output, and a running rollback's latest line, as they come.

Real repositories and log files, ``andon deploy`` and the detached rollback runner as real
processes, their commands printing a line and waiting for a gate file before the next: the
test opens each gate once it has seen on the dashboard what came before it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from textual.widgets import Log

from backend.models import RUNNING, SUCCEEDED
from backend.store import DeployLog
from backend.world import resolve_world
from tests.conftest import Repo, wait_for
from tests.test_live_output import gated, open_gate, until
from tui.app import make_app
from tui.screenshots import settle
from tui.widgets.deploy_detail import DeployDetail
from tui.widgets.line_banner import LineBanner


def output_text(app) -> str:  # type: ignore[no-untyped-def]
    found = app.screen.query("#output")
    return "\n".join(found.first(Log).lines) if found else ""


def output_title(app) -> str:  # type: ignore[no-untyped-def]
    return str(app.screen.query_one(DeployDetail).query_one("#output-box").border_title)


def banner_text(app) -> str:  # type: ignore[no-untyped-def]
    found = app.screen.query(LineBanner)
    return str(found.first().render()) if found and found.first().shown else ""


async def test_a_running_deploy_shows_its_output_as_it_comes_then_its_final_output(repo: Repo, tmp_path: Path) -> None:
    repo.commit("first")
    db = tmp_path / "deploys.db"
    watcher = DeployLog.open(db)
    command = gated(tmp_path, "\x1b[1m[red]first[/red] line", "second line", "done")
    process = subprocess.Popen([sys.executable, "-m", "tui.cli", "--repo", str(repo.path), "--db", str(db),
                                "deploy", "--env", "staging", "--", *command],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        until(lambda: watcher.count() == 1 and watcher.streamed(1).text, what="the deploy never printed")
        app = make_app(resolve_world(repo.path, db, None))
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            assert app.screen.selected is not None and app.screen.selected.status == RUNNING
            # Its first line, before it finishes: cleaned, and literal (never markup).
            assert await wait_for(pilot, lambda: "[red]first[/red] line" in output_text(app))
            assert "\x1b" not in output_text(app) and "running" in output_title(app)
            assert process.poll() is None
            open_gate(tmp_path, 1)
            assert await wait_for(pilot, lambda: "second line" in output_text(app))  # growing
            assert process.poll() is None and watcher.get(1).status == RUNNING
            assert output_text(app).count("first") == 1  # added at the end, not read again
            open_gate(tmp_path, 2)
            assert process.wait(timeout=30) == 0
            # Its final output once it ended, and the row as it ended.
            assert await wait_for(pilot, lambda: output_title(app) == "Output" and "done" in output_text(app))
            assert await wait_for(pilot, lambda: app.screen.selected.status == SUCCEEDED)
            assert output_text(app) == "[red]first[/red] line\nsecond line\ndone\n"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        watcher.close()


@pytest.fixture
def rolling_world(repo: Repo, tmp_path: Path) -> tuple[Repo, Path]:
    """Production got commit 1 (good), then commit 3; its deploy action prints three lines, gated."""
    shas = [repo.commit(f"change {n}") for n in range(4)]
    action = gated(tmp_path, "step one", "step \x1b[31mtwo\x1b[0m [b]x[/b]", "done")
    (repo.path / "andon.toml").write_text(
        "[environments.production]\n"
        f"deploy = [{', '.join(json.dumps(part) for part in action)}]\n"  # JSON strings are TOML strings
        "rollback_grace_seconds = 0\n")
    db = tmp_path / "deploys.db"
    log = DeployLog.open(db)
    log.record("production", shas[1], "succeeded", who="ci")
    log.record("production", shas[3], "succeeded", who="ci")
    log.close()
    return repo, db


async def test_the_banner_shows_a_running_rollbacks_latest_line(rolling_world: tuple[Repo, Path],
                                                                tmp_path: Path) -> None:
    repo, db = rolling_world
    app = make_app(resolve_world(repo.path, db, None))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("exclamation_mark")
        assert await wait_for(pilot, lambda: ": running" in banner_text(app) and "· step one" in banner_text(app),
                              15.0), banner_text(app)
        open_gate(tmp_path, 1)
        # The latest line, cleaned and literal.
        assert await wait_for(pilot, lambda: "· step two [b]x[/b]" in banner_text(app), 5.0), banner_text(app)
        assert ": running" in banner_text(app) and "\x1b" not in banner_text(app)
        open_gate(tmp_path, 2)
        assert await wait_for(pilot, lambda: "Rolled back to" in banner_text(app), 10.0), banner_text(app)
