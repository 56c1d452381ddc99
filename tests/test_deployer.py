"""Deploying end to end through a real World (repository, andon.toml, SQLite log, subprocess),
and the pieces that compose it: world resolution, identity, reports and the demo world."""

from __future__ import annotations

import getpass
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import backend.identity as identity_module
from backend import AndonError
from backend.config import ConfigError, load_file
from backend.demo import NASTY_SUBJECTS, build
from backend.deployer import deploy
from backend.history import GitError
from backend.models import DOWN, FAILED, HEALTHY, INTERRUPTED, RUNNING, SUCCEEDED, UNHEALTHY
from backend.report import log_entries, status
from backend.runner import RunError, Runner
from backend.store import DeployLog, StoreError
from backend.world import World, resolve_world
from tests.conftest import Repo, one_line
from tests.test_watcher import Service

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


# -- health verification after the deploy ---------------------------------------------------------

# A real deploy script: "deploys" SHA by writing it where the service reads the version it
# reports; "break" also breaks the service, "stale" leaves the old version running.
VERIFY_SCRIPT = """\
#!/bin/sh
echo "deploying $1 ($3)"
if [ "$3" != stale ]; then printf '%s' "$1" > "$2.tmp" && mv "$2.tmp" "$2"; fi
if [ "$3" = break ]; then touch "$2.broken"; fi
exit 0
"""
VERIFY_SECONDS = 1.5


@pytest.fixture
def served(repo: Repo, tmp_path: Path) -> Iterator[tuple[Service, list[str]]]:
    """A service whose version is what the deploy script last deployed, and andon.toml for it:
    environments ``ok``, ``break`` and ``stale`` deploy with the script in that mode."""
    running = tmp_path / "running-version"
    service = Service(version_file=running, broken_file=Path(f"{running}.broken"))
    (tmp_path / "deploy.sh").write_text(VERIFY_SCRIPT)
    config = 'branch = "main"\n'
    for mode in ("ok", "break", "stale"):
        config += (f"[environments.{mode}]\ndeploy = {toml_list('sh', str(tmp_path / 'deploy.sh'), '{sha}', str(running), mode)}\n"
                   f"verify_seconds = {VERIFY_SECONDS}\nverify_failures = 3\n"
                   f'[[environments.{mode}.health]]\nname = "api"\nurl = "{service.url}"\ninterval = 0.2\n'
                   'timeout = 0.2\nversion = "build.sha"\n')
    (repo.path / "andon.toml").write_text(config)
    shas = [repo.commit(f"change {n}") for n in range(3)]
    yield service, shas
    service.close()


@pytest.fixture
def vworld(repo: Repo, served: tuple[Service, list[str]], tmp_path: Path) -> Iterator[World]:
    made = resolve_world(repo.path, None, None)
    yield made
    made.close()


def toml_list(*parts: str) -> str:
    return "[" + ", ".join(json.dumps(part) for part in parts) + "]"


def verify_events(log: DeployLog, deploy_id: int) -> list[tuple[str, dict[str, object]]]:
    return [(e.kind, json.loads(e.detail)) for e in reversed(log.events(1000))
            if e.deploy_id == deploy_id and e.kind.startswith("deploy.")]


def test_a_deploy_that_stays_healthy_and_reports_its_sha_is_verified_succeeded(
    vworld: World, served: tuple[Service, list[str]]
) -> None:
    service, shas = served
    seen: list[str] = []
    began = time.monotonic()
    outcome = deploy(vworld, "ok", shas[1], runner=Runner(), on_output=seen.append)
    assert time.monotonic() - began >= VERIFY_SECONDS  # it watched the whole window
    assert outcome.exit_code == 0
    assert outcome.verdict is not None and outcome.verdict.status == SUCCEEDED
    assert outcome.verdict.reason == "healthy for 1.5s" and outcome.verdict.rounds >= 5
    recorded = vworld.log.get(outcome.deploy.id)
    assert (recorded.status, recorded.exit_code) == (SUCCEEDED, 0)
    assert recorded.output.startswith(f"deploying {shas[1]} (ok)\n[andon: verifying ok for 1.5s (api): ")
    assert f"the new version {shas[1][:7]} is reported]" in recorded.output
    assert recorded.output.endswith("[andon: succeeded: healthy for 1.5s]\n")
    assert "".join(seen) == recorded.output
    kinds = verify_events(vworld.log, recorded.id)
    assert [kind for kind, _ in kinds] == ["deploy.started", "deploy.verifying", "deploy.verified", "deploy.finished"]
    verifying, verified = kinds[1][1], kinds[2][1]
    assert (verifying["seconds"], verifying["failures"], verifying["checks"]) == (1.5, 3, ["api"])
    assert isinstance(verifying["until"], str)
    assert (verified["status"], verified["reason"]) == (SUCCEEDED, "healthy for 1.5s")
    assert vworld.log.live("ok").id == recorded.id  # type: ignore[union-attr]
    # The probes were recorded for everyone, and the lease given back.
    assert vworld.log.health_state("ok")[0] == HEALTHY  # type: ignore[index]
    assert len(vworld.log.health_samples("ok")["api"]) == outcome.verdict.rounds
    assert vworld.log.lease("health:ok") is None


def test_a_deploy_that_breaks_the_service_is_unhealthy_after_three_failed_rounds(
    vworld: World, served: tuple[Service, list[str]]
) -> None:
    service, shas = served
    began = time.monotonic()
    outcome = deploy(vworld, "break", shas[2], runner=Runner())
    assert time.monotonic() - began < VERIFY_SECONDS  # three failed rounds: no need to watch longer
    assert outcome.verdict is not None and outcome.verdict.rounds == 3
    recorded = vworld.log.get(outcome.deploy.id)
    assert (recorded.status, recorded.exit_code) == (UNHEALTHY, 0)  # the command itself succeeded
    reason = "3 failed rounds in a row (api: HTTP 503)"
    assert outcome.verdict.reason == reason
    assert "\n[andon: 0:00 / 0:02 down (api: HTTP 503)]\n" in recorded.output
    assert recorded.output.endswith(f"[andon: unhealthy: {reason}]\n")
    kinds = verify_events(vworld.log, recorded.id)
    assert kinds[2] == ("deploy.verified", {"status": UNHEALTHY, "reason": reason, "rounds": 3})
    assert kinds[3] == ("deploy.finished", {"status": UNHEALTHY, "exit_code": 0})
    assert vworld.log.live("break") is None  # an unhealthy deploy is not what is live
    assert vworld.log.health_state("break")[0] == DOWN  # type: ignore[index]


def test_a_deploy_whose_service_never_reports_the_new_sha_is_unhealthy(
    vworld: World, served: tuple[Service, list[str]]
) -> None:
    service, shas = served
    deploy(vworld, "ok", shas[0], runner=Runner())  # the service now runs shas[0]
    outcome = deploy(vworld, "stale", shas[2], runner=Runner())
    recorded = vworld.log.get(outcome.deploy.id)
    assert recorded.status == UNHEALTHY
    reason = f"the new version {shas[2][:7]} was not reported within 1.5s (api reports {shas[0][:7]} (behind))"
    assert outcome.verdict is not None and outcome.verdict.reason == reason
    assert outcome.verdict.rounds >= 5  # the whole window, in case it came late
    assert recorded.output.endswith(f"[andon: unhealthy: {reason}]\n")
    assert verify_events(vworld.log, recorded.id)[2][1]["reason"] == reason


def test_no_verification_without_checks_or_after_a_failed_command(
    vworld: World, served: tuple[Service, list[str]], tmp_path: Path
) -> None:
    service, shas = served
    failed = deploy(vworld, "ok", shas[0], runner=Runner(), command=["sh", "-c", "exit 3"])
    assert failed.verdict is None and failed.deploy.status == FAILED
    plain = deploy(vworld, "qa", shas[0], runner=Runner(), command=["true"])  # no checks configured
    assert plain.verdict is None and plain.deploy.status == SUCCEEDED
    for done in (failed, plain):
        assert "deploy.verifying" not in [kind for kind, _ in verify_events(vworld.log, done.deploy.id)]
    assert service.count() == 1  # only the round before the failed command (the state before: backend.verify)


def test_the_row_stays_running_while_verifying_and_a_stop_records_interrupted(
    vworld: World, served: tuple[Service, list[str]]
) -> None:
    service, shas = served
    asked: list[str] = []
    watched: dict[str, object] = {}

    def interrupted() -> str | None:
        if service.count() >= 2 and not asked:
            (running,) = vworld.log.deploys("ok")
            watched["status"] = running.status
            watched["events"] = [kind for kind, _ in verify_events(vworld.log, running.id)]
            asked.append("SIGINT")
        return asked[0] if asked else None

    outcome = deploy(vworld, "ok", shas[1], runner=Runner(), interrupted=interrupted)
    assert watched == {"status": RUNNING, "events": ["deploy.started", "deploy.verifying"]}
    recorded = vworld.log.get(outcome.deploy.id)
    assert (recorded.status, recorded.exit_code, outcome.exit_code) == (INTERRUPTED, 0, 130)
    assert recorded.output.endswith("[andon: interrupted: verification stopped by Ctrl-C]\n")
    assert verify_events(vworld.log, recorded.id)[2][1]["status"] == INTERRUPTED
    assert vworld.log.lease("health:ok") is None


def test_andon_deploy_exits_4_with_one_line_when_verification_fails(
    repo: Repo, served: tuple[Service, list[str]]
) -> None:
    service, shas = served
    done = subprocess.run([sys.executable, "-m", "tui.cli", "deploy", "--env", "ok", "--sha", shas[0]],
                          cwd=repo.path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"andon: deploy #1 of {shas[0][:7]} to ok: succeeded (exit code 0; healthy for 1.5s)"]
    assert "[andon: verifying ok for 1.5s" in done.stdout
    done = subprocess.run([sys.executable, "-m", "tui.cli", "deploy", "--env", "break", "--sha", shas[1]],
                          cwd=repo.path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 4
    assert done.stderr.splitlines() == [
        f"andon: deploy #2 of {shas[1][:7]} to break: unhealthy: 3 failed rounds in a row (api: HTTP 503); "
        "the line is stopped (andon resume --env break)"]


def test_ctrl_c_during_verification_stops_andon_deploy_as_interrupted(
    repo: Repo, served: tuple[Service, list[str]]
) -> None:
    service, shas = served
    config = (repo.path / "andon.toml").read_text().replace(f"verify_seconds = {VERIFY_SECONDS}", "verify_seconds = 60")
    (repo.path / "andon.toml").write_text(config)
    process = subprocess.Popen([sys.executable, "-m", "tui.cli", "deploy", "--env", "ok", "--sha", shas[0]],
                               cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        while "[andon: verifying" not in process.stdout.readline():
            pass
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert err.splitlines() == [f"andon: deploy #1 of {shas[0][:7]} to ok: interrupted "
                                "(exit code 130; verification stopped by Ctrl-C)"]
    log = DeployLog.open(repo.path / ".git" / "andon" / "deploys.db")
    try:
        (recorded,) = log.deploys(with_output=True)
        assert recorded.status == INTERRUPTED
        assert recorded.output.endswith("[andon: interrupted: verification stopped by Ctrl-C]\n")
    finally:
        log.close()


# -- HTTP actions (issue 8) -----------------------------------------------------------------------


class Receiver:
    """A CI system's API on 127.0.0.1: records each request (method, path, headers, JSON body) and
    answers ``status`` with ``body``; ``delay`` seconds before answering."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.status = 201
        self.body = b'{"id": 42, "state": "queued"}'
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else b""
                receiver.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                          "body": json.loads(data) if data else None})
                time.sleep(receiver.delay)
                self.send_response(receiver.status)
                self.send_header("Content-Length", str(len(receiver.body)))
                self.end_headers()
                self.wfile.write(receiver.body)

            do_POST = do_PUT = do_PATCH = answer  # noqa: N815 - the http.server names

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 64

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/deploy?token=s3cret"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


HTTP_CONFIG = """\
[environments.production]
deploy = { url_env = "CI_URL", method = "POST", headers = { Authorization = "CI_TOKEN" }, body = { ref = "main", inputs = { sha = "{sha}", target = "{env}", "{env}-list" = ["at {sha}", 3, true] } } }
rollback = { url_env = "CI_URL", method = "PUT", body = { rollback_to = "{sha}" } }
rollback_grace_seconds = 0
timeout = 2
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


@pytest.fixture
def hworld(repo: Repo, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    (repo.path / "andon.toml").write_text(HTTP_CONFIG)
    repo.commit("first")
    repo.commit("second")
    monkeypatch.setenv("CI_URL", receiver.url)
    monkeypatch.setenv("CI_TOKEN", "Bearer abc")
    made = resolve_world(repo.path, tmp_path / "deploys.db", None)
    yield made
    made.close()


def test_an_http_deploy_action_succeeds_on_2xx_with_variables_and_placeholders_substituted(
        hworld: World, receiver: Receiver, repo: Repo) -> None:
    seen: list[str] = []
    outcome = deploy(hworld, "production", "HEAD", runner=Runner(), on_output=seen.append)
    head = repo.head()
    assert (outcome.exit_code, outcome.deploy.status) == (0, SUCCEEDED)
    [request] = receiver.requests
    assert (request["method"], request["path"]) == ("POST", "/api/deploy?token=s3cret")
    assert request["headers"]["Authorization"] == "Bearer abc"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["body"] == {"ref": "main", "inputs": {"sha": head, "target": "production",
                                                         "production-list": [f"at {head}", 3, True]}}
    recorded = hworld.log.get(outcome.deploy.id)
    port = receiver.server.server_address[1]
    assert recorded.output == (f"[andon: POST http://127.0.0.1:{port}/… ($CI_URL)]\n[andon: HTTP 201 Created]\n"
                               '{"id": 42, "state": "queued"}\n')
    assert "s3cret" not in recorded.output and "abc" not in recorded.output  # no secrets in the log
    assert "".join(seen) == recorded.output


def test_an_http_action_answered_500_fails_with_the_status_and_a_clean_excerpt(
        hworld: World, receiver: Receiver) -> None:
    receiver.status = 500
    receiver.body = b"\x1b[31mboom\x1b[0m\n  stack\ttrace\n" + b"x" * 5000
    outcome = deploy(hworld, "production", "HEAD", runner=Runner())
    recorded = hworld.log.get(outcome.deploy.id)
    assert (outcome.exit_code, recorded.status, recorded.exit_code) == (1, FAILED, 1)
    lines = recorded.output.splitlines()
    assert lines[1] == "[andon: HTTP 500 Internal Server Error]"
    assert lines[2].startswith("boom stack trace xxx") and lines[2].endswith("…") and len(lines[2]) == 301
    assert len(lines) == 3


@pytest.mark.parametrize("missing, expected", [
    ("CI_URL", "environment variable CI_URL is not set (it holds the URL to POST)"),
    ("CI_TOKEN", "environment variable CI_TOKEN is not set (it holds the Authorization header of POST "),
])
def test_a_missing_variable_is_a_one_line_failure_recorded_failed(
        hworld: World, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, missing: str, expected: str) -> None:
    monkeypatch.delenv(missing)
    with pytest.raises(RunError) as caught:
        deploy(hworld, "production", "HEAD", runner=Runner())
    assert one_line(caught.value).startswith(expected)
    [recorded] = hworld.log.deploys(with_output=True)
    assert recorded.status == FAILED and recorded.output == str(caught.value) + "\n"
    assert receiver.requests == []


def test_an_unreachable_url_is_a_one_line_failure_recorded_failed(
        hworld: World, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    monkeypatch.setenv("CI_URL", f"http://127.0.0.1:{port}/deploy")
    with pytest.raises(RunError) as caught:
        deploy(hworld, "production", "HEAD", runner=Runner())
    assert one_line(caught.value) == f"POST http://127.0.0.1:{port}/… ($CI_URL): cannot connect to 127.0.0.1: connection refused"
    assert hworld.log.deploys()[0].status == FAILED
    monkeypatch.setenv("CI_URL", "ftp://example.com/x")
    with pytest.raises(RunError, match="does not hold an http:// or https:// URL"):
        deploy(hworld, "production", "HEAD", runner=Runner())


def test_an_http_action_with_no_answer_is_stopped_at_the_timeout_and_says_it_may_have_been_received(
        hworld: World, receiver: Receiver) -> None:
    receiver.delay = 5
    began = time.monotonic()
    outcome = deploy(hworld, "production", "HEAD", runner=Runner())
    assert time.monotonic() - began < 4.5  # timeout = 2
    recorded = hworld.log.get(outcome.deploy.id)
    assert (recorded.status, outcome.exit_code) == (INTERRUPTED, 124)
    assert "no answer within the 2s timeout while waiting for the answer; the request may have been received" \
        in recorded.output


def test_an_http_rollback_action_runs_with_the_target_sha(hworld: World, receiver: Receiver, repo: Repo) -> None:
    from backend.rollback import request_rollback, run_rollback

    first = repo.git("rev-parse", "HEAD~1")
    deploy(hworld, "production", "HEAD~1", runner=Runner())
    deploy(hworld, "production", "HEAD", runner=Runner())
    requested = request_rollback(hworld, "production", "alice", "bad", spawn=False)
    ended = run_rollback(hworld, requested.rollback.id, runner=Runner())
    assert ended.status == SUCCEEDED
    assert (receiver.requests[-1]["method"], receiver.requests[-1]["body"]) == ("PUT", {"rollback_to": first})
    assert hworld.log.get(ended.deploy_id or 0).output.startswith("[andon: rolling production back to ")


# -- the automatic stop (issue 8) ---------------------------------------------------------------


def test_an_unhealthy_deploy_stops_the_line_by_itself_and_the_next_deploy_is_refused(
    vworld: World, served: tuple[Service, list[str]]
) -> None:
    from backend.store.line import LineStopped

    service, shas = served
    outcome = deploy(vworld, "break", shas[2], runner=Runner())
    assert outcome.deploy.status == UNHEALTHY
    assert outcome.auto is not None and outcome.auto.stopped and outcome.auto.rollback is None
    line = vworld.log.line("break")
    assert (line.stopped, line.who, line.automatic, line.deploy_id) == (True, "andon", True, outcome.deploy.id)
    assert line.reason == (f"deploy #{outcome.deploy.id} of {shas[2][:7]} is unhealthy: "
                           "3 failed rounds in a row (api: HTTP 503)")
    [stopped] = [event for event in vworld.log.events() if event.kind == "line.stopped"]
    assert (stopped.who, stopped.deploy_id, json.loads(stopped.detail)["automatic"]) == (
        "andon", outcome.deploy.id, True)
    with pytest.raises(LineStopped):
        deploy(vworld, "break", shas[1], runner=Runner())
    assert not vworld.log.line("ok").stopped


def test_without_auto_stop_an_unhealthy_deploy_leaves_the_line_running(
    repo: Repo, served: tuple[Service, list[str]], tmp_path: Path
) -> None:
    service, shas = served
    config = (repo.path / "andon.toml").read_text().replace("[environments.break]\n",
                                                             "[environments.break]\nauto_stop = false\n")
    (repo.path / "andon.toml").write_text(config)
    world = resolve_world(repo.path, None, None)
    try:
        outcome = deploy(world, "break", shas[2], runner=Runner())
        assert outcome.deploy.status == UNHEALTHY and outcome.auto is None
        assert not world.log.line("break").stopped
    finally:
        world.close()


ROLLBACK_RECORDER = """\
import sys
with open(sys.argv[2], "a") as handle:
    handle.write(sys.argv[1] + "\\n")
"""


def test_auto_rollback_requests_a_rollback_that_runs_without_a_person_after_the_grace(
    repo: Repo, served: tuple[Service, list[str]], tmp_path: Path
) -> None:
    service, shas = served
    ran = tmp_path / "rolled-back"
    (tmp_path / "record.py").write_text(ROLLBACK_RECORDER)
    config = (repo.path / "andon.toml").read_text().replace(
        "[environments.break]\n",
        f"[environments.break]\nauto_rollback = true\nrollback_grace_seconds = 1\n"
        f"rollback = {toml_list(sys.executable, str(tmp_path / 'record.py'), '{sha}', str(ran))}\n")
    (repo.path / "andon.toml").write_text(config)
    good = subprocess.run([sys.executable, "-m", "tui.cli", "deploy", "--env", "break", "--sha", shas[0], "--",
                           "sh", str(tmp_path / "deploy.sh"), "{sha}", str(tmp_path / "running-version"), "ok"],
                          cwd=repo.path, capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stderr
    bad = subprocess.run([sys.executable, "-m", "tui.cli", "deploy", "--env", "break", "--sha", shas[1]],
                         cwd=repo.path, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 4, bad.stderr
    [line] = bad.stderr.splitlines()
    assert line.startswith(f"andon: deploy #2 of {shas[1][:7]} to break: unhealthy: 3 failed rounds in a row "
                           f"(api: HTTP 503); the line is stopped and rollback #1 to {shas[0][:7]} (deploy #1) runs at ")
    assert line.endswith("UTC unless cancelled (andon rollback --cancel --env break)")
    log = DeployLog.open(repo.path / ".git" / "andon" / "deploys.db")
    try:
        deadline = time.monotonic() + 60
        while log.rollbacks()[0].active:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        [rollback] = log.rollbacks()
        assert (rollback.status, rollback.who, rollback.automatic, rollback.reverts) == (SUCCEEDED, "andon", True, 2)
        assert log.line("break").stopped and log.line("break").who == "andon"
        requested = [json.loads(e.detail) for e in log.events() if e.kind == "rollback.requested"]
        assert requested[0]["automatic"] is True and requested[0]["target_sha"] == shas[0]
    finally:
        log.close()
    assert ran.read_text() == shas[0] + "\n"
