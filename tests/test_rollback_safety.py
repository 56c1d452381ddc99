"""Rollbacks are never blocked by what they fix, and roll back at most once per stop: a real service
(127.0.0.1), a real deploy script, the detached rollback runner as a real process, a real SQLite log."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.deployer import deploy
from backend.models import SUCCEEDED, UNHEALTHY
from backend.rollback import request_rollback, run_rollback, stop_after_unhealthy
from backend.runner import Runner
from backend.store import DeployLog
from backend.world import World, resolve_world
from tests.conftest import Repo
from tests.test_cli import toml_list
from tests.test_deployer import VERIFY_SCRIPT
from tests.test_watcher import Service
from tui.line_feed import read_line
from tui.widgets.line_banner import describe


def events(log: DeployLog, kind: str) -> list[tuple[int | None, dict[str, object]]]:
    return [(event.deploy_id, json.loads(event.detail)) for event in reversed(log.events(1000)) if event.kind == kind]


class Broken:
    """production: deploys write the SHA the service reports; ``break`` in the deploy action breaks
    the service for good (the rollback's action, in ``ok`` mode, does not mend it)."""

    def __init__(self, repo: Repo, tmp_path: Path, *, extra: str = "") -> None:
        running = tmp_path / "running-version"
        self.broken = Path(f"{running}.broken")
        self.service = Service(version_file=running, broken_file=self.broken)
        (tmp_path / "deploy.sh").write_text(VERIFY_SCRIPT)
        script = str(tmp_path / "deploy.sh")
        (repo.path / "andon.toml").write_text(
            'branch = "main"\n[environments.production]\n'
            f"deploy = {toml_list('sh', script, '{sha}', str(running), 'break')}\n"
            f"rollback = {toml_list('sh', script, '{sha}', str(running), 'ok')}\n"
            "verify_seconds = 1.5\nverify_failures = 2\nrollback_grace_seconds = 0\n"
            "auto_stop = true\nauto_rollback = true\n"
            f'[[environments.production.health]]\nname = "api"\nurl = "{self.service.url}"\ninterval = 0.2\n'
            f'timeout = 0.2\nversion = "build.sha"\n{extra}')
        self.shas = [repo.commit(f"change {n}") for n in range(3)]
        self.world = resolve_world(repo.path, None, None)
        self.world.log.record("production", self.shas[0], SUCCEEDED, who="alice")  # the last good deploy

    def close(self) -> None:
        self.world.close()
        self.service.close()


@pytest.fixture
def broken(repo: Repo, tmp_path: Path) -> Iterator[Broken]:
    made = Broken(repo, tmp_path)
    yield made
    made.close()


def wait_for_rollback(log: DeployLog, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        rollbacks = log.rollbacks("production")
        if rollbacks and not rollbacks[0].active:
            return
        time.sleep(0.1)
    raise AssertionError("the rollback did not end")


def test_an_automatic_rollback_that_stays_unhealthy_is_said_loudly_and_never_rolled_back_again(
        broken: Broken) -> None:
    world, log = broken.world, broken.world.log
    outcome = deploy(world, "production", broken.shas[1], runner=Runner())
    assert outcome.deploy.status == UNHEALTHY
    assert outcome.auto is not None and outcome.auto.rollback is not None  # stopped, and rolled back by itself
    wait_for_rollback(log)
    [rollback] = log.rollbacks("production")
    assert (rollback.status, rollback.target_sha) == (SUCCEEDED, broken.shas[0])
    row = log.get(rollback.deploy_id)  # type: ignore[arg-type]
    # The rollback was verified like a deploy, every check counted (no state before for a rollback).
    assert "[andon: verifying production for 1.5s (api)" in row.output
    assert "already down before" not in row.output
    assert row.output.endswith("[andon: unhealthy: 2 failed rounds in a row (api: HTTP 503)]\n")
    [(deploy_id, detail)] = events(log, "rollback.unhealthy")
    assert deploy_id == row.id
    assert detail == {"why": "2 failed rounds in a row (api: HTTP 503)", "checks": ["api"],
                      "rollback_id": rollback.id, "target_sha": broken.shas[0]}
    # It went past the stopped line and the red health, and says so.
    [(_, started)] = events(log, "rollback.started")
    assert started["ignored"] == ["line stopped", "unhealthy"]
    assert log.line("production").stopped
    # The banner says it loudly, and that a person decides.
    view = read_line(world, "production")
    first, second, tone = describe(view, datetime.now(UTC))
    assert tone == "failed"
    assert "STILL UNHEALTHY (2 failed rounds in a row (api: HTTP 503))" in second
    assert "andon will not roll back again: a person decides" in second
    # A fix forced through the stop is not judged by the check that was down before it (the state before)...
    again = deploy(world, "production", broken.shas[2], runner=Runner(), force=True, reason="try a fix")
    assert "[andon: api was already down before this deploy: not counted]" in again.deploy.output
    # ...and were it found unhealthy, the automatic stop would not roll back a second time in this stop.
    auto = stop_after_unhealthy(world, again.deploy, "still down", world.config.environment("production"))
    assert auto.rollback is None and not auto.stopped
    assert "already rolled back since its line stopped" in auto.error
    time.sleep(1.0)  # a runner spawned by mistake would have claimed its rollback by now
    assert len(log.rollbacks("production")) == 1
    assert len(events(log, "rollback.started")) == 1


def test_a_rollback_whose_service_comes_back_is_healthy_and_says_nothing_more(broken: Broken) -> None:
    world, log = broken.world, broken.world.log
    deploy(world, "production", broken.shas[1], runner=Runner())
    broken.broken.unlink()  # mended by hand while the rollback counts down: the rollback brings health back
    wait_for_rollback(log)
    [rollback] = log.rollbacks("production")
    assert rollback.status == SUCCEEDED
    assert log.get(rollback.deploy_id).output.endswith("[andon: succeeded: healthy for 1.5s]\n")  # type: ignore[arg-type]
    assert events(log, "rollback.unhealthy") == []
    assert "STILL UNHEALTHY" not in describe(read_line(world, "production"), datetime.now(UTC))[1]


def test_a_rollback_goes_past_a_freeze_a_stopped_line_and_red_health_and_records_it(
        repo: Repo, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    freeze = (f'[[environments.production.freeze]]\nreason = "year end"\n'
              f"from = {(now - timedelta(hours=1)).strftime('%Y-%m-%dT%H:%M:%SZ')}\n"
              f"until = {(now + timedelta(hours=1)).strftime('%Y-%m-%dT%H:%M:%SZ')}\n")
    made = Broken(repo, tmp_path, extra=freeze)
    try:
        world: World = made.world
        log = world.log
        log.record("production", made.shas[1], SUCCEEDED, who="bob")  # the deploy to take out
        made.broken.touch()
        with log.immediate() as conn:  # what a watcher saw: production down
            conn.execute("INSERT INTO health_state (env, state, since) VALUES ('production', 'down', ?)",
                         (log.now(),))
        log.stop_line("production", who="carol", reason="api down")
        made.broken.unlink()
        requested = request_rollback(world, "production", "carol", "api down", spawn=False)
        [(_, asked)] = events(log, "rollback.requested")
        assert asked["ignored"] == ["line stopped", "freeze: year end", "unhealthy"]
        ended = run_rollback(world, requested.rollback.id, runner=Runner())
        assert ended.status == SUCCEEDED  # nothing refused it
        assert made.service.current_version() == made.shas[0]
        [(_, started)] = events(log, "rollback.started")
        assert started["ignored"][:2] == ["line stopped", "freeze: year end"]
    finally:
        made.close()
