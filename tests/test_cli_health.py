"""``andon health`` and ``andon watch``, run as real processes against real local services.

Each test starts health endpoints on 127.0.0.1 (:class:`tests.test_watcher.Service`), writes
an andon.toml pointing at them into a real git repository, and runs ``python -m tui.cli``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.models import DOWN, HEALTHY, UP
from backend.store import DeployLog
from backend.watcher import HealthWatcher, lease_name
from backend.world import resolve_world
from tests.conftest import Repo
from tests.test_cli import andon, fails, finish, ok, start
from tests.test_watcher import Service, health_config, health_events, wait_for


@pytest.fixture
def services() -> Iterator[list[Service]]:
    made = [Service(), Service()]
    yield made
    for service in made:
        service.close()


@pytest.fixture
def shas(repo: Repo) -> list[str]:
    return [repo.commit(f"change {n}") for n in range(3)]


def configure(repo: Repo, text: str) -> None:
    (repo.path / "andon.toml").write_text(text)


def two_environments(repo: Repo, services: list[Service], interval: float = 5) -> None:
    production, staging = services
    configure(repo, health_config({"production": [("api", production.url)], "staging": [("web", staging.url)]},
                                  interval=interval) + "[environments.docs]\ntimeout = 5\n")


def health_json(repo: Repo, *args: Any, code: int = 0) -> dict[str, Any]:
    result = andon("health", "--json", *args, cwd=repo.path)
    assert result.code == code, (result.code, result.err)
    data: dict[str, Any] = json.loads(result.out)
    return data


def db(repo: Repo) -> Path:
    return repo.path / ".git" / "andon" / "deploys.db"


# -- andon health ---------------------------------------------------------------------------------


def test_health_exits_zero_when_every_checked_environment_is_healthy(
    repo: Repo, services: list[Service], shas: list[str]
) -> None:
    two_environments(repo, services)
    result = ok("health", cwd=repo.path)
    lines = result.out.splitlines()
    assert lines[0] == "production: healthy"
    assert lines[1].split()[:3] == ["api", "up", "200"] and "ms" in lines[1] and "version v1" in lines[1]
    assert lines[2] == "staging: healthy"
    assert lines[-1] == "docs: no health checks"
    assert [service.count() for service in services] == [1, 1]  # one round, one probe each


def test_health_exits_three_when_an_environment_is_down(
    repo: Repo, services: list[Service], shas: list[str]
) -> None:
    two_environments(repo, services)
    services[1].status = 503
    result = andon("health", cwd=repo.path)
    assert result.code == 3, result.err
    assert "staging: down" in result.out.splitlines()
    (web,) = [line for line in result.out.splitlines() if line.strip().startswith("web")]
    assert web.split()[:3] == ["web", "down", "503"] and web.endswith("HTTP 503")
    assert andon("health", "--env", "production", cwd=repo.path).code == 0  # only the one asked for
    services[1].close()  # nothing listening at all: still down, still exit 3
    data = health_json(repo, "--env", "staging", code=3)
    (check,) = data["environments"][0]["checks"]
    assert check["state"] == DOWN and check["status_code"] is None and "refused" in check["error"]


def test_health_json_has_the_model_and_the_drift_against_the_live_deploy(
    repo: Repo, services: list[Service], shas: list[str]
) -> None:
    two_environments(repo, services)
    ok("record", "--env", "production", "--sha", shas[2], "--status", "succeeded", cwd=repo.path)
    ok("record", "--env", "staging", "--sha", shas[2], "--status", "succeeded", cwd=repo.path)
    services[0].version = shas[2]  # production runs what is live
    services[1].version = shas[0][:7]  # staging still runs an older build
    data = health_json(repo)
    production, staging, docs = data["environments"]
    assert production["env"] == "production" and production["state"] == HEALTHY
    assert production["live_sha"] == shas[2] and production["recorded"] is True
    (api,) = production["checks"]
    assert set(api) == {"env", "check", "at", "state", "status_code", "latency_ms", "version", "error", "drift"}
    assert (api["check"], api["state"], api["status_code"], api["version"], api["drift"], api["error"]) == (
        "api", UP, 200, shas[2], "match", "")
    assert isinstance(api["latency_ms"], float) and api["latency_ms"] >= 0
    assert staging["checks"][0]["drift"] == "behind"
    assert docs == {"env": "docs", "state": None, "live_sha": None, "recorded": False, "checks": []}
    result = ok("health", cwd=repo.path)
    assert f"version {shas[2][:7]} (live)" in result.out
    assert f"version {shas[0][:7]} (behind: live is {shas[2][:7]})" in result.out
    services[1].version = "f" * 40  # a build of a commit this clone never had
    assert health_json(repo, "--env", "staging")["environments"][0]["checks"][0]["drift"] == "unknown"


def test_health_with_a_bad_environment_says_so_in_one_line(repo: Repo, services: list[Service],
                                                          shas: list[str]) -> None:
    two_environments(repo, services)
    assert fails("health", "--env", "docs", cwd=repo.path) == (
        "andon: error: environment 'docs' has no health checks: add [[environments.docs.health]] "
        "with a name and a url to andon.toml")
    assert "has no health checks" in fails("health", "--env", "qa", cwd=repo.path)
    assert "is not allowed" in fails("health", "--env", "bad name", cwd=repo.path)
    configure(repo, 'branch = "main"\n[environments.docs]\ntimeout = 5\n')
    assert fails("health", cwd=repo.path) == (
        "andon: error: no health checks configured: add [[environments.NAME.health]] with a name and a url "
        "to andon.toml")


def test_health_records_the_round_only_when_nobody_else_probes(
    repo: Repo, services: list[Service], shas: list[str]
) -> None:
    two_environments(repo, services, interval=1)
    services[0].status = 500
    assert health_json(repo, code=3)["environments"][0]["recorded"] is True
    log = DeployLog.open(db(repo))
    try:
        assert log.health_state("production")[0] == DOWN  # type: ignore[index]
        assert [s.state for s in log.health_samples("production")["api"]] == [DOWN]
        assert log.lease(lease_name("production")) is None  # taken for the round, released at once
        world = resolve_world(repo.path)
        watcher = HealthWatcher(world, ["production"])
        try:
            asyncio.run(watcher.round())  # a watcher probes production now
            data = health_json(repo, code=3)
            assert [env["recorded"] for env in data["environments"]] == [False, True, False]
            assert len(log.health_samples("production")["api"]) == 2  # the watcher's, not andon health's
        finally:
            watcher.close()
            world.close()
    finally:
        log.close()
    assert [(e["env"], e["state"]) for e in health_events(db(repo))] == [("production", DOWN),
                                                                          ("staging", HEALTHY)]


# -- andon watch -------------------------------------------------------------------------------------


def test_watch_prints_each_change_records_it_and_stops_cleanly_on_sigterm(
    repo: Repo, services: list[Service], shas: list[str]
) -> None:
    two_environments(repo, services, interval=0.3)
    process = start("watch", "--env", "production", cwd=repo.path)
    try:
        assert process.stdout is not None
        first = process.stdout.readline().decode()
        assert first.rstrip().endswith(" production: healthy"), first
        services[0].status = 503
        second = process.stdout.readline().decode()
        assert second.rstrip().endswith(" production: down (api: HTTP 503)"), second
        lease = wait_for(lambda: _lease(repo), what="the lease")
        assert lease.pid == process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        result = finish(process)
    assert result.code == 0, result.err
    assert result.err.splitlines() == ["andon: watching production (Ctrl-C or SIGTERM to stop)"]
    assert _lease(repo) is None  # released: another andon takes over at once
    assert [(e["previous"], e["state"]) for e in health_events(db(repo))] == [(None, HEALTHY), (HEALTHY, DOWN)]
    assert services[1].count() == 0  # staging was not asked for


def test_watch_stops_on_ctrl_c_too_and_watches_every_environment_with_checks(
    repo: Repo, services: list[Service], shas: list[str]
) -> None:
    two_environments(repo, services, interval=0.3)
    process = start("watch", cwd=repo.path)
    try:
        assert process.stdout is not None
        seen = {process.stdout.readline().decode().split()[-2] for _ in range(2)}
        assert seen == {"production:", "staging:"}
    finally:
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        result = finish(process)
    assert result.code == 0, result.err
    assert "watching production, staging" in result.err


def test_watch_of_an_environment_without_checks_is_one_line(repo: Repo, services: list[Service],
                                                           shas: list[str]) -> None:
    two_environments(repo, services)
    assert "'docs' has no health checks" in fails("watch", "--env", "docs", cwd=repo.path)
    configure(repo, 'branch = "main"\n')
    assert "no health checks configured" in fails("watch", cwd=repo.path)


def _lease(repo: Repo) -> Any:
    log = DeployLog.open(db(repo))
    try:
        return log.lease(lease_name("production"))
    finally:
        log.close()
