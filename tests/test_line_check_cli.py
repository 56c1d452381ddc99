"""``andon line`` (--check, --sha, --json), and what the gate does to ``andon deploy`` (freezes, held
commits, --force --reason, --wait-line) and to ``andon status``, as real processes.

The CLI has no clock hook: freezes are one-off windows written relative to the real time (from an
hour ago until an hour from now, or starting in a day).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.store import DeployLog
from tests.conftest import Repo
from tests.test_cli import RUN_LIMIT, andon, deploys, fails, finish, ok, start, toml_list
from tests.test_held import ENV, Line

PASS = toml_list(sys.executable, "-c", "pass")


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def freeze(reason: str, since: timedelta, until: timedelta) -> str:
    now = datetime.now(UTC)
    return (f'[[environments.production.freeze]]\nreason = "{reason}"\n'
            f"from = {stamp(now + since)}\nuntil = {stamp(now + until)}\n")


@pytest.fixture
def world(repo: Repo) -> Repo:
    """production is frozen now (release week, an hour each side); staging has a freeze tomorrow."""
    repo.commit("first")
    now = datetime.now(UTC)
    (repo.path / "andon.toml").write_text(
        f"[environments.production]\ndeploy = {PASS}\n" + freeze("release week", -timedelta(hours=1), timedelta(hours=1))
        + f"[environments.staging]\ndeploy = {PASS}\n"
        f'[[environments.staging.freeze]]\nreason = "holiday"\nfrom = {stamp(now + timedelta(days=1))}\n'
        f"until = {stamp(now + timedelta(days=2))}\n")
    return repo


def log_of(repo: Repo) -> DeployLog:
    return DeployLog.open(repo.path / ".git" / "andon" / "deploys.db")


def forced_details(repo: Repo) -> list[dict[str, object]]:
    log = log_of(repo)
    try:
        return [json.loads(event.detail) for event in log.events() if event.kind == "deploy.forced"]
    finally:
        log.close()


# -- andon line ----------------------------------------------------------------------------


def test_check_exit_codes_go_frozen_stopped_and_an_unknown_environment(world: Repo) -> None:
    cwd = world.path
    assert ok("line", "--env", "staging", "--check", cwd=cwd).out == "staging: deploys may go ahead\n"
    frozen = andon("line", "--env", "production", "--check", cwd=cwd)
    assert frozen.code == 12, frozen
    assert re.fullmatch(r"production is frozen: release week, opens \d{4}-\d\d-\d\d \d\d:\d\d UTC \(in 59 min\)\n",
                        frozen.out), frozen.out
    ok("stop", "--env", "staging", "--reason", "api down", cwd=cwd, env={"ANDON_USER": "alice"})
    stopped = andon("line", "--env", "staging", "--check", cwd=cwd)
    assert stopped.code == 5 and "the line of staging is stopped by alice" in stopped.out
    ok("stop", "--env", "production", "--reason", "api down", cwd=cwd)
    assert andon("line", "--env", "production", "--check", cwd=cwd).code == 5  # the first that applies
    line = fails("line", "--env", "qa", "--check", cwd=cwd)
    assert line == "andon: error: unknown environment 'qa' (known: production, staging)"
    assert "--env" in fails("line", "--check", cwd=cwd, code=2)


def test_check_json_lists_every_reason(world: Repo) -> None:
    cwd = world.path
    ok("stop", "--env", "production", "--reason", "api down", cwd=cwd, env={"ANDON_USER": "alice"})
    result = andon("line", "--env", "production", "--check", "--json", cwd=cwd)
    assert result.code == 5
    data = json.loads(result.out)
    assert (data["env"], data["ok"], data["code"], data["sha"]) == ("production", False, 5, None)
    stopped, frozen = data["reasons"]
    assert {key: stopped[key] for key in ("kind", "code", "who", "reason", "automatic")} == {
        "kind": "stopped", "code": 5, "who": "alice", "reason": "api down", "automatic": False}
    assert stopped["since"].endswith("Z") and 0 <= stopped["seconds"] < 60
    assert (frozen["kind"], frozen["code"], frozen["reason"]) == ("frozen", 12, "release week")
    opens = datetime.fromisoformat(frozen["opens"])
    assert timedelta(minutes=55) < opens - datetime.now(UTC) <= timedelta(hours=1)
    assert json.loads(ok("line", "--env", "staging", "--check", "--json", cwd=cwd).out) == {
        "env": "staging", "ok": True, "code": 0, "sha": None, "reasons": []}


def test_line_without_check_tells_people_and_exits_0(world: Repo) -> None:
    cwd = world.path
    out = ok("line", "--env", "staging", cwd=cwd).out.splitlines()
    assert out[0] == "staging: the line runs; deploys may go ahead"
    assert re.fullmatch(r"  freeze   next: holiday from \d{4}-\d\d-\d\d \d\d:\d\d UTC \(in (23 h 59 min|1 d)\) until "
                        r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", out[1]), out
    frozen = ok("line", "--env", "production", cwd=cwd).out  # frozen, but no --check: exit 0
    assert frozen.startswith("production is frozen: release week, opens ")


def test_check_without_sha_imports_no_git_library_and_runs_no_git_walk(world: Repo, tmp_path: Path) -> None:
    ok("status", cwd=world.path)  # the log exists (creating one takes sqlite-utils' schema steps, once)
    trace = tmp_path / "trace.txt"
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "tui.cli", "line", "--env", "production",
                           "--check"], cwd=world.path, capture_output=True, text=True, timeout=RUN_LIMIT,
                          env={**os.environ, "GIT_TRACE": str(trace)})
    assert done.returncode == 12, done.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "backend.gate" in imported and "sqlite3" in imported
    assert not imported & {"git", "sqlite_utils", "httpx", "textual"}
    commands = re.findall(r"trace: built-in: git (\S+)", trace.read_text())
    assert commands == ["rev-parse"]  # finding the repository; nothing walks its history


# -- andon deploy ----------------------------------------------------------------------------


def test_deploy_in_a_freeze_is_refused_and_force_needs_a_reason_then_is_recorded(world: Repo) -> None:
    cwd = world.path
    line = fails("deploy", "--env", "production", cwd=cwd, code=12)
    assert re.fullmatch(r"andon: error: production is frozen: release week, opens \d{4}-\d\d-\d\d \d\d:\d\d UTC "
                        r"\(in 59 min\); nothing was deployed \(--wait-line SECONDS waits for it to open, or --force "
                        r"--reason WHY in an emergency\)", line), line
    assert deploys(cwd) == []
    assert "--force needs --reason" in fails("deploy", "--env", "production", "--force", cwd=cwd, code=2)
    assert deploys(cwd) == []
    result = ok("deploy", "--env", "production", "--force", "--reason", "security fix", cwd=cwd,
                env={"ANDON_USER": "bob"})
    assert result.err.splitlines()[0].startswith("andon: deploy #1 was forced through: production is frozen: "
                                                  "release week, opens ")
    [detail] = forced_details(world)
    assert detail["reason"] == "security fix" and "stopped_by" not in detail
    assert detail["frozen"]["reason"] == "release week"  # type: ignore[index]
    # A freeze that opens long after --wait-line would end is not waited for.
    began = time.monotonic()
    line = fails("deploy", "--env", "production", "--wait-line", "30", cwd=cwd, code=12)
    assert "--wait-line 30 would not reach it" in line and time.monotonic() - began < 20


def test_wait_line_deploys_once_another_process_resumes_the_line(world: Repo) -> None:
    cwd = world.path
    ok("stop", "--env", "staging", "--reason", "api down", cwd=cwd, env={"ANDON_USER": "alice"})
    waiting = start("deploy", "--env", "staging", "--wait-line", "60", cwd=cwd)
    try:
        assert waiting.stderr is not None
        notice = waiting.stderr.readline().decode()
        assert notice.startswith("andon: the line of staging is stopped by alice since ") and notice.endswith(
            ": api down; waiting up to 60s for it to resume\n"), notice
        assert deploys(cwd) == []
        began = time.monotonic()
        ok("resume", "--env", "staging", cwd=cwd)
        result = finish(waiting)
        assert result.code == 0, result.err
        assert time.monotonic() - began < 10  # it looks twice a second, not at the end of the wait
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    [entry] = deploys(cwd)
    assert (entry["env"], entry["status"]) == ("staging", "succeeded")


def test_wait_line_gives_up_with_exit_5(world: Repo) -> None:
    cwd = world.path
    ok("stop", "--env", "staging", "--reason", "api down", cwd=cwd, env={"ANDON_USER": "alice"})
    began = time.monotonic()
    result = andon("deploy", "--env", "staging", "--wait-line", "1", cwd=cwd)
    assert result.code == 5 and 1 <= time.monotonic() - began < 30
    notice, line = result.err.splitlines()
    assert notice.endswith("waiting up to 1s for it to resume")
    assert line.startswith("andon: error: after 1s of waiting, the line of staging is stopped by alice since ")
    assert line.endswith(": api down; nothing was deployed (andon resume --env staging, or --force --reason WHY in an "
                         "emergency)")
    assert deploys(cwd) == []


def test_held_commits_refuse_check_and_deploy_until_reverted_and_force_records_them(
        repo: Repo, tmp_path: Path) -> None:
    line = Line(repo, tmp_path)
    line.record(line.good, line.bad2)
    line.roll_back()
    cwd = line.path
    assert ok("line", "--env", ENV, "--check", cwd=cwd).out == f"{ENV}: deploys may go ahead\n"  # no --sha: no git
    held = andon("line", "--env", ENV, "--check", "--sha", line.bad2, cwd=cwd)
    assert held.code == 11
    assert held.out == (f"{line.bad2[:7]} contains 2 commits held in {ENV} after a rollback: "
                        f"{line.bad2[:7]} (bad two), {line.bad1[:7]} (bad one)\n")  # newest first
    data = json.loads(andon("line", "--env", ENV, "--check", "--sha", line.bad2, "--json", cwd=cwd).out)
    assert data["sha"] == line.bad2 and [r["kind"] for r in data["reasons"]] == ["held"]
    assert [c["sha"] for c in data["reasons"][0]["commits"]] == [line.bad2, line.bad1]
    assert ok("line", "--env", ENV, "--check", "--sha", line.good, cwd=cwd).code == 0
    refused = fails("deploy", "--env", ENV, "--sha", line.bad2, cwd=cwd, code=11)
    assert f"{line.bad2[:7]} (bad two), {line.bad1[:7]} (bad one); nothing was deployed" in refused
    ok("deploy", "--env", ENV, "--sha", line.bad2, "--force", "--reason", "we know", cwd=cwd)
    [detail] = forced_details(repo)
    assert detail == {"reason": "we know", "held": {"shas": [line.bad2, line.bad1]}}
    fixed = line.revert(line.bad2, line.bad1)
    assert ok("line", "--env", ENV, "--check", "--sha", fixed, cwd=cwd).code == 0


# -- andon status ----------------------------------------------------------------------------


def test_status_says_how_long_the_line_has_been_stopped_and_shows_freezes(world: Repo) -> None:
    cwd = world.path
    ok("stop", "--env", "staging", "--reason", "api down", cwd=cwd, env={"ANDON_USER": "alice"})
    log = log_of(world)
    try:  # stopped 2 h 14 min ago: the log says so (no clock hook)
        since = datetime.now(UTC) - timedelta(hours=2, minutes=14, seconds=5)
        log._conn.execute("UPDATE line_state SET since = ? WHERE env = 'staging'",
                          (since.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),))
    finally:
        log.close()
    out = ok("status", cwd=cwd).out.splitlines()
    assert out[0] == "production:"
    assert re.fullmatch(r"  FROZEN   since \d{4}-\d\d-\d\d \d\d:\d\d UTC: release week, opens \d{4}-\d\d-\d\d "
                        r"\d\d:\d\d UTC \(in 59 min\)", out[1]), out
    staging = next(text for text in out if text.startswith("staging:"))
    assert re.fullmatch(r"staging:  LINE STOPPED by alice since \d{4}-\d\d-\d\d \d\d:\d\d UTC \(2 h 14 min ago\): "
                        r"api down", staging), staging
    after = out[out.index(staging) + 1]
    assert after.startswith("  freeze   next: holiday from ")
    data = json.loads(ok("status", "--json", cwd=cwd).out)["environments"]
    assert data[1]["line"]["seconds"] >= 2 * 3600 + 14 * 60
    assert data[0]["freeze"]["frozen"]["reason"] == "release week" and data[0]["freeze"]["next"] is None
    assert data[1]["freeze"]["frozen"] is None and data[1]["freeze"]["next"]["reason"] == "holiday"
