"""Deploying end to end through a real World (repository, andon.toml, SQLite log, subprocess),
and the pieces that compose it: world resolution, identity, reports and the demo world."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import backend.identity as identity_module
from backend import AndonError
from backend.config import ConfigError, load_file
from backend.demo import NASTY_SUBJECTS, build
from backend.deployer import deploy
from backend.history import GitError
from backend.models import FAILED, INTERRUPTED, SUCCEEDED
from backend.report import log_entries, status
from backend.runner import RunError, Runner
from backend.store import DeployLog, StoreError
from backend.world import World, resolve_world
from tests.conftest import Repo, one_line

PY = json.dumps(sys.executable)  # a TOML basic string

DEPLOY_SCRIPT = """\
import os, sys
sha, mode = sys.argv[1], sys.argv[2]
print(f"deploying {sha} to {os.environ['ANDON_ENV']}", flush=True)
print(f"prev={os.environ['ANDON_PREV_SHA'] or '-'} id={os.environ['ANDON_DEPLOY_ID']} "
      f"sha={os.environ['ANDON_SHA']}", flush=True)
print(f"cwd={os.getcwd()}", flush=True)
if mode == "fail":
    print("smoke test failed", flush=True)
    sys.exit(3)
if mode == "hang":
    import time
    time.sleep(120)
"""

CONFIG = f"""\
branch = "main"

[environments.staging]
deploy = [{PY}, "deploy.py", "{{sha}}", "ok"]

[environments.broken]
deploy = [{PY}, "deploy.py", "{{sha}}", "fail"]

[environments.slow]
deploy = [{PY}, "deploy.py", "{{sha}}", "hang"]
timeout = 1

[environments.docs]
timeout = 5
"""


@pytest.fixture
def shas(repo: Repo) -> list[str]:
    (repo.path / "deploy.py").write_text(DEPLOY_SCRIPT)
    (repo.path / "andon.toml").write_text(CONFIG)
    return [repo.commit(f"change {n}") for n in range(4)]


@pytest.fixture
def world(repo: Repo, shas: list[str], tmp_path: Path) -> Iterator[World]:
    made = resolve_world(repo.path, tmp_path / "deploys.db", None)
    yield made
    made.close()


# -- deploy() ---------------------------------------------------------------------------------


def test_a_successful_deploy_is_recorded_with_its_output(world: World, repo: Repo, shas: list[str]) -> None:
    seen: list[str] = []
    outcome = deploy(world, "staging", "HEAD~1", runner=Runner(), on_output=seen.append)
    assert outcome.exit_code == 0
    recorded = world.log.get(outcome.deploy.id)
    assert recorded.status == SUCCEEDED and recorded.exit_code == 0
    assert recorded.sha == shas[-2]  # resolved to the full SHA
    assert recorded.prev_sha is None
    assert recorded.output == (
        f"deploying {shas[-2]} to staging\nprev=- id={recorded.id} sha={shas[-2]}\ncwd={repo.path}\n"
    )
    assert "".join(seen) == recorded.output
    assert recorded.who == "Test Author" and recorded.trigger == "manual"
    assert [e.kind for e in world.log.events()] == ["deploy.finished", "deploy.started"]
    assert world.log.live("staging").sha == shas[-2]  # type: ignore[union-attr]


def test_the_next_deploy_knows_the_previous_sha(world: World, shas: list[str]) -> None:
    first = deploy(world, "staging", shas[1], runner=Runner())
    second = deploy(world, "staging", shas[3], runner=Runner())
    assert second.deploy.prev_sha == shas[1]
    assert f"prev={shas[1]} id={second.deploy.id} " in world.log.get(second.deploy.id).output
    assert first.deploy.id != second.deploy.id


def test_a_failed_deploy_keeps_its_exit_code_and_output_and_changes_nothing_live(
    world: World, shas: list[str]
) -> None:
    outcome = deploy(world, "broken", "HEAD", runner=Runner())
    assert outcome.exit_code == 3
    recorded = world.log.get(outcome.deploy.id)
    assert (recorded.status, recorded.exit_code) == (FAILED, 3)
    assert recorded.output.endswith("smoke test failed\n")
    assert world.log.live("broken") is None


def test_a_deploy_past_its_timeout_is_interrupted_with_exit_124(world: World, shas: list[str]) -> None:
    outcome = deploy(world, "slow", "HEAD", runner=Runner())
    recorded = world.log.get(outcome.deploy.id)
    assert (recorded.status, recorded.exit_code, outcome.exit_code) == (INTERRUPTED, 124, 124)
    assert recorded.output.endswith("\n[andon: stopped after the 1s timeout]\n")
    assert recorded.output.startswith(f"deploying {shas[-1]} to slow\n")


def test_a_deploy_stopped_by_ctrl_c_is_interrupted(world: World, shas: list[str]) -> None:
    runner = Runner()
    started = threading.Event()

    def on_output(text: str) -> None:
        if "deploying" in text:
            started.set()

    threading.Thread(target=lambda: started.wait(60) and runner.stop("SIGINT"), daemon=True).start()
    # An environment without a timeout of its own: the command given explicitly hangs.
    outcome = deploy(world, "staging", "HEAD", runner=runner, on_output=on_output,
                     command=[sys.executable, "deploy.py", "{sha}", "hang"])
    recorded = world.log.get(outcome.deploy.id)
    assert (recorded.status, recorded.exit_code) == (INTERRUPTED, 130)
    assert recorded.output.endswith("\n[andon: stopped by Ctrl-C]\n")


def test_an_unknown_revision_is_an_error_and_writes_no_deploy(world: World, shas: list[str]) -> None:
    with pytest.raises(GitError) as caught:
        deploy(world, "staging", "no-such-revision", runner=Runner())
    assert one_line(caught.value) == "'no-such-revision' is not a commit in this clone"
    assert world.log.count() == 0 and world.log.events() == []


def test_an_environment_without_a_deploy_action_is_an_error_and_writes_nothing(
    world: World, shas: list[str]
) -> None:
    with pytest.raises(AndonError) as caught:
        deploy(world, "docs", "HEAD", runner=Runner())
    assert one_line(caught.value) == (
        "environment 'docs' has no deploy action in andon.toml: configure "
        "environments.docs.deploy or give the command after --"
    )
    with pytest.raises(AndonError) as caught:
        deploy(world, "qa", "HEAD", runner=Runner())  # not configured at all
    assert "environments.qa.deploy" in one_line(caught.value)
    assert world.log.count() == 0


def test_an_invalid_environment_name_is_refused_before_anything_runs(world: World, shas: list[str]) -> None:
    for name in ("bad name", "prod\n", "../etc"):
        with pytest.raises(ConfigError) as caught:
            deploy(world, name, "HEAD", runner=Runner(), command=["true"])
        one_line(caught.value)
    assert world.log.count() == 0


def test_an_explicit_command_deploys_an_unconfigured_environment(
    world: World, shas: list[str], tmp_path: Path
) -> None:
    outcome = deploy(world, "qa", shas[0], runner=Runner(),
                     command=[sys.executable, "-c", "import sys; print(sys.argv[1:])", "{sha}", "{env}"])
    assert world.log.get(outcome.deploy.id).output == f"['{shas[0]}', 'qa']\n"
    assert outcome.deploy.status == SUCCEEDED


def test_a_command_that_cannot_start_is_recorded_as_failed_and_raised(world: World, shas: list[str]) -> None:
    with pytest.raises(RunError) as caught:
        deploy(world, "qa", "HEAD", runner=Runner(), command=["andon-no-such-deploy-command"])
    message = one_line(caught.value)
    (recorded,) = world.log.deploys(with_output=True)
    assert (recorded.status, recorded.exit_code) == (FAILED, 127)
    assert recorded.output == message + "\n"


def test_trigger_who_and_reason(world: World, shas: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("ANDON_USER", "  release-bot  ")
    in_ci = deploy(world, "staging", "HEAD", runner=Runner(), reason="nightly")
    assert (in_ci.deploy.trigger, in_ci.deploy.who, in_ci.deploy.reason) == ("ci", "release-bot", "nightly")
    rollback = deploy(world, "staging", shas[0], runner=Runner(), trigger="rollback")
    assert rollback.deploy.trigger == "rollback"


# -- the world --------------------------------------------------------------------------------


def test_the_default_log_lives_in_the_git_directory_and_is_created_on_first_use(repo: Repo) -> None:
    repo.commit("first")
    made = resolve_world(repo.path)
    try:
        assert made.db_path == repo.path / ".git" / "andon" / "deploys.db"
        assert not made.db_path.parent.exists()  # nothing written just by looking
        assert made.log.count() == 0
        assert made.db_path.is_file()
    finally:
        made.close()


def test_a_db_in_a_missing_directory_is_refused_and_not_created(repo: Repo, tmp_path: Path) -> None:
    repo.commit("first")
    target = tmp_path / "missing" / "deploys.db"
    made = resolve_world(repo.path, target)
    with pytest.raises(StoreError) as caught:
        made.log  # noqa: B018 - opening is the point
    assert "does not exist" in one_line(caught.value)
    assert not target.parent.exists()


def test_db_comes_from_the_option_then_andon_db_then_the_config(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.commit("first")
    (repo.path / "andon.toml").write_text('db = "var/log.db"\n')
    sub = repo.path / "sub"
    sub.mkdir()
    assert resolve_world(sub).db_path == repo.path / "var" / "log.db"  # relative to the root
    monkeypatch.setenv("ANDON_DB", str(tmp_path / "env.db"))
    assert resolve_world(repo.path).db_path == tmp_path / "env.db"
    assert resolve_world(repo.path, tmp_path / "option.db").db_path == tmp_path / "option.db"


def test_outside_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.chdir(plain)
    with pytest.raises(AndonError) as caught:
        resolve_world()
    assert "is not inside a git repository" in one_line(caught.value)
    with pytest.raises(GitError):
        resolve_world(plain)  # an explicit --repo must be a repository
    made = resolve_world(None, tmp_path / "deploys.db")  # with --db it still works
    try:
        assert made.history.root is None
        assert made.log.count() == 0
    finally:
        made.close()


def test_a_bad_config_stops_resolve_world(repo: Repo) -> None:
    repo.commit("first")
    (repo.path / "andon.toml").write_text("[environments.prod]\ntimeout = -1\n")
    with pytest.raises(ConfigError) as caught:
        resolve_world(repo.path)
    assert one_line(caught.value).startswith("andon.toml:2: ")


def test_environments_are_configured_ones_in_order_then_ones_from_the_log(world: World, shas: list[str]) -> None:
    world.log.record("adhoc", shas[0], SUCCEEDED, who="ci")
    world.log.record("a-first", shas[0], SUCCEEDED, who="ci")
    assert world.environments() == ["staging", "broken", "slow", "docs", "a-first", "adhoc"]


# -- identity ---------------------------------------------------------------------------------


def test_who_prefers_andon_user_then_git_then_login(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    assert world.who() == "Test Author"
    monkeypatch.setenv("ANDON_USER", "\x1b[31mmallory\x1b[0m" + "x" * 200)
    assert world.who() == "mallory" + "x" * 93  # cleaned, then cut to 100
    monkeypatch.setenv("ANDON_USER", "   ")
    assert identity_module.who(lambda: None) == getpass.getuser()


def test_who_without_any_name_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_user() -> str:
        raise KeyError("getpwuid(): uid not found")  # a container uid with no passwd entry

    monkeypatch.setattr(getpass, "getuser", no_user)
    assert identity_module.who(lambda: "") == "unknown"


# -- reports ------------------------------------------------------------------------------------


def test_log_entries_list_deploys_newest_first_with_their_commits(world: World, repo: Repo,
                                                                  shas: list[str]) -> None:
    deploy(world, "staging", shas[0], runner=Runner())
    deploy(world, "staging", shas[3], runner=Runner())
    world.log.record("staging", "f" * 40, FAILED, who="ci")  # a SHA this clone never had
    entries = log_entries(world, "staging")
    assert [e["sha"] for e in entries] == ["f" * 40, shas[3], shas[0]]
    assert entries[0]["commits_error"] == "commits unavailable: fffffff is not in this clone"
    assert [c["sha"] for c in entries[1]["commits"]] == repo.git("rev-list", shas[3], f"^{shas[0]}").split()
    assert entries[2]["first_deploy"] is True and [c["sha"] for c in entries[2]["commits"]] == [shas[0]]
    assert all("output" not in e for e in entries)
    json.dumps(entries)  # JSON-ready
    assert len(log_entries(world, limit=1)) == 1


def test_status_reports_live_latest_and_pending_per_environment(world: World, shas: list[str]) -> None:
    deploy(world, "staging", shas[1], runner=Runner())
    deploy(world, "broken", shas[2], runner=Runner())
    report = {entry["env"]: entry for entry in status(world)}
    assert list(report) == ["staging", "broken", "slow", "docs"]
    staging = report["staging"]
    assert staging["live"]["sha"] == shas[1] and staging["latest"]["sha"] == shas[1]
    assert staging["branch"] == "main"
    assert [c["sha"] for c in staging["pending"]] == [shas[3], shas[2]]
    assert staging["pending_count"] == 2 and staging["pending_error"] is None
    broken = report["broken"]
    assert broken["live"] is None and broken["latest"]["status"] == FAILED
    assert broken["pending_count"] == 4  # nothing live: the whole branch waits
    assert report["docs"]["latest"] is None
    json.dumps(report)


# -- the demo world -------------------------------------------------------------------------------

NOW = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)


def deploy_rows(db: Path) -> list[tuple[str, str, str, str, str | None]]:
    log = DeployLog.open(db)
    try:
        return [(d.env, d.sha, d.status, d.started_at, d.prev_sha) for d in log.deploys()]
    finally:
        log.close()


def test_the_demo_world_is_deterministic_and_consistent(tmp_path: Path) -> None:
    one = build(tmp_path / "one", NOW)
    two = build(tmp_path / "two", NOW)
    rows = deploy_rows(one.db)
    assert rows == deploy_rows(two.db)  # same now: same history, same SHAs, same log
    assert {env for env, *_ in rows} == {"staging", "production"}
    assert {status for _, _, status, _, _ in rows} >= {SUCCEEDED, FAILED}
    config = load_file(one.config)
    assert list(config.environments) == ["staging", "production"]
    made = resolve_world(one.repo, one.db)
    try:
        entries = log_entries(made)
        assert entries and all(entry["commits_error"] is None for entry in entries)
        assert any(entry["trigger"] == "rollback" for entry in entries)
        subjects = {c.subject for c in made.history.pending(made.history.branch("main"), None).commits}
        # The nasty subjects are there, literally, minus their escape sequences.
        assert "fix [/] parsing of [section] headers" in subjects
        assert "[bold red]hello[/] from the markup parser" in subjects
        assert "strip red escapes from logs" in subjects
        assert len(NASTY_SUBJECTS) == 3
    finally:
        made.close()


def test_deploying_in_the_demo_world_runs_its_deploy_script(tmp_path: Path) -> None:
    demo = build(tmp_path / "demo", NOW)
    made = resolve_world(demo.repo, demo.db)
    try:
        before = made.log.count()
        outcome = deploy(made, "staging", "main", runner=Runner())
        head = subprocess.run(["git", "-C", str(demo.repo), "rev-parse", "main"], capture_output=True,
                              text=True, check=True).stdout.strip()
        assert outcome.exit_code == 0 and outcome.deploy.sha == head
        assert made.log.get(outcome.deploy.id).output.endswith(f"deployed {head[:7]} to staging\n")
        assert made.log.count() == before + 1
    finally:
        made.close()
