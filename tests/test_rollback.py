"""Rolling back, end to end: ``andon rollback`` and its detached runner as real processes, a real
rollback script that appends to a file, a real git repository and SQLite log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend import AndonError
from backend.models import FAILED, INTERRUPTED, RUNNING, SUCCEEDED, UNHEALTHY
from backend.rollback import request_rollback
from backend.store import DeployLog
from backend.store.line import RollbackUnderWay
from backend.world import resolve_world
from tests.conftest import Repo, one_line
from tests.test_cli import _argv, _env, andon, dead, fails, kill_quietly, ok, toml_list, wait_dead

PY = sys.executable
T0 = datetime.now(UTC) - timedelta(days=1)

# Appends "<sha> <deploy id> <prev sha>" to argv[2]; exits with argv[3] (default 0).
ROLLBACK_SCRIPT = """\
import os, sys
with open(sys.argv[2], "a") as handle:
    handle.write(f"{sys.argv[1]} {os.environ['ANDON_DEPLOY_ID']} {os.environ['ANDON_PREV_SHA']}\\n")
print("rolled back to", sys.argv[1], flush=True)
sys.exit(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
"""

# Starts a grandchild that ignores SIGTERM, writes "<own pid> <grandchild pid>" to argv[2], hangs.
HANG_SCRIPT = """\
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
with open(sys.argv[2] + ".tmp", "w") as handle:
    handle.write(f"{os.getpid()} {child.pid}")
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
print("ready", flush=True)
time.sleep(600)
"""


class World8:
    """A repository with three commits deployed to production (the newest is the bad one)."""

    def __init__(self, repo: Repo, tmp_path: Path) -> None:
        self.repo = repo
        self.path = repo.path
        self.ran = tmp_path / "ran.txt"
        self.pids = tmp_path / "pids"
        (tmp_path / "rollback.py").write_text(ROLLBACK_SCRIPT)
        (tmp_path / "hang.py").write_text(HANG_SCRIPT)
        self.scripts = tmp_path
        self.shas = [repo.commit(f"change {n}") for n in range(3)]
        self.db = repo.path / ".git" / "andon" / "deploys.db"

    def configure(self, *, grace: float = 0, rollback: list[str] | None = None, deploy: list[str] | None = None,
                  extra: str = "") -> None:
        rollback = rollback if rollback is not None else [PY, str(self.scripts / "rollback.py"), "{sha}", str(self.ran)]
        text = "[environments.production]\n"
        if deploy is not None:
            text += f"deploy = {toml_list(*deploy)}\n"
        if rollback:
            text += f"rollback = {toml_list(*rollback)}\n"
        text += f"rollback_grace_seconds = {grace}\n{extra}"
        text += f"[environments.staging]\ndeploy = {toml_list(PY, '-c', 'pass')}\n"
        (self.path / "andon.toml").write_text(text)

    def record(self, *statuses: str) -> None:
        log = self.log()
        try:
            for n, status in enumerate(statuses):
                log.record("production", self.shas[n], status, who="ci", at=T0 + timedelta(minutes=n))
        finally:
            log.close()

    def log(self) -> DeployLog:
        return DeployLog.open(self.db, create_parent=True)

    def ran_lines(self) -> list[list[str]]:
        return [line.split() for line in self.ran.read_text().splitlines()] if self.ran.exists() else []

    def wait_for(self, condition: Callable[[DeployLog], bool], seconds: float = 60) -> DeployLog:
        """The log once ``condition(log)`` holds (the caller closes it)."""
        deadline = time.monotonic() + seconds
        log = self.log()
        while not condition(log):
            if time.monotonic() > deadline:
                log.close()
                raise AssertionError("timed out")
            time.sleep(0.05)
        return log


@pytest.fixture
def world8(repo: Repo, tmp_path: Path) -> World8:
    return World8(repo, tmp_path)


def rollback_ended(log: DeployLog) -> bool:
    found = log.rollbacks("production", limit=1)
    return bool(found) and not found[0].active


def kinds(log: DeployLog, prefix: str = "") -> list[str]:
    return [event.kind for event in reversed(log.events(1000)) if event.kind.startswith(prefix)]


# -- twelve at once ------------------------------------------------------------------------


def test_twelve_simultaneous_rollbacks_run_the_action_exactly_once_to_the_right_sha(world8: World8) -> None:
    world8.configure(grace=4)
    world8.record(SUCCEEDED, SUCCEEDED, SUCCEEDED)
    processes = [subprocess.Popen(_argv(("rollback", "--env", "production", "--reason", f"caller {n}")),
                                  cwd=world8.path, env=_env({"ANDON_USER": f"caller-{n}"}),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(12)]
    results = [(process.wait(timeout=120), *process.communicate()) for process in processes]
    for _, _, err in results:
        assert "Traceback" not in err, err
    winners = [(out, err) for code, out, err in results if code == 0]
    assert len(winners) == 1, results
    log = world8.log()
    try:
        [rollback] = log.rollbacks("production")
        assert rollback.status == "pending"  # every caller had its answer within the grace
    finally:
        log.close()
    assert f"requested rollback #{rollback.id} of production to {world8.shas[1][:7]} (deploy #2)" in winners[0][0]
    for code, _, err in results:
        if code != 0:
            assert code == 7
            [line] = err.splitlines()
            assert line.startswith("andon: error: a rollback of production is already pending: to "
                                   f"{world8.shas[1][:7]} (deploy #2), requested by {rollback.who} at ")
    log = world8.wait_for(rollback_ended)
    try:
        [rollback] = log.rollbacks("production")
        assert rollback.status == SUCCEEDED
        ran = log.get(rollback.deploy_id or 0)
        assert (ran.trigger, ran.reverts, ran.sha, ran.status, ran.who) == ("rollback", 3, world8.shas[1], SUCCEEDED,
                                                                           rollback.who)
        assert f"rolled back to {world8.shas[1]}" in ran.output
        assert kinds(log, "rollback.") == ["rollback.requested", "rollback.started", "rollback.finished"]
        assert kinds(log, "line.") == ["line.stopped"]
        assert log.line("production").stopped
        assert log.live("production").id == ran.id  # type: ignore[union-attr]
    finally:
        log.close()
    assert world8.ran_lines() == [[world8.shas[1], str(ran.id), world8.shas[2]]]  # once, to the right SHA


def test_the_output_of_a_rollback_is_in_its_row(world8: World8) -> None:
    world8.configure()
    world8.record(SUCCEEDED, SUCCEEDED)
    ok("rollback", "--env", "production", cwd=world8.path)
    log = world8.wait_for(rollback_ended)
    try:
        [deploy] = [d for d in log.deploys("production", with_output=True) if d.trigger == "rollback"]
        assert f"rolled back to {world8.shas[0]}\n" in deploy.output
        assert deploy.output.startswith(f"[andon: rolling production back to {world8.shas[0][:7]}, reverting deploy #2]")
    finally:
        log.close()


# -- the runner killed ------------------------------------------------------------------------


def test_the_rollback_runner_killed_with_sigkill_is_interrupted_its_action_stopped_the_line_still_stopped(
        world8: World8) -> None:
    world8.configure(rollback=[PY, str(world8.scripts / "hang.py"), "{sha}", str(world8.pids)])
    world8.record(SUCCEEDED, SUCCEEDED)
    ok("rollback", "--env", "production", "--reason", "api down", cwd=world8.path)
    deadline = time.monotonic() + 60
    while not world8.pids.exists():
        assert time.monotonic() < deadline, "the rollback action never started"
        time.sleep(0.05)
    leader, grandchild = map(int, world8.pids.read_text().split())
    try:
        log = world8.log()
        try:
            [rollback] = log.rollbacks("production")
            runner = rollback.runner_pid
            assert runner and rollback.status == RUNNING and rollback.deploy_id
            assert os.getpgid(leader) == leader  # the action runs in its own process group
            while "ready" not in log.streamed(rollback.deploy_id).text:  # its output, as it comes
                assert time.monotonic() < deadline, "the action's output never reached the log"
                time.sleep(0.05)
        finally:
            log.close()
        os.kill(runner, signal.SIGKILL)
        assert wait_dead(runner)
        assert not dead(leader) and not dead(grandchild)  # orphaned by the kill: still running
        log = world8.log()
        try:
            assert log.get(rollback.deploy_id).status == RUNNING  # never interrupted while the action runs
        finally:
            log.close()
        status = json.loads(ok("status", "--json", cwd=world8.path).out)["environments"][0]  # andon notices
        assert wait_dead(leader) and wait_dead(grandchild)
        assert status["line"]["state"] == "stopped" and status["line"]["reason"] == "api down"
        assert status["rollback"] is None and status["latest"]["status"] == INTERRUPTED
        log = world8.log()
        try:
            ended = log.get(rollback.deploy_id)
            assert ended.status == INTERRUPTED and ended.finished_at
            # What it streamed before the kill comes first, then what happened.
            assert ended.output == (f"[andon: rolling production back to {world8.shas[0][:7]}, reverting deploy #2]\n"
                                    "ready\n"
                                    f"[andon: the andon running this rollback (pid {runner}) died; its command's "
                                    f"process group {leader} was stopped]\n")
            assert log.rollback(rollback.id).status == INTERRUPTED
            assert kinds(log, "rollback.") == ["rollback.requested", "rollback.started", "rollback.finished"]
            finished = [json.loads(e.detail) for e in log.events() if e.kind == "rollback.finished"]
            assert finished[0]["status"] == INTERRUPTED
            assert log.line("production").stopped
        finally:
            log.close()
    finally:
        kill_quietly(leader)
        kill_quietly(grandchild)


# -- cancel ---------------------------------------------------------------------------------------


def test_a_rollback_cancelled_in_the_grace_runs_nothing_and_leaves_the_line_stopped(world8: World8) -> None:
    world8.configure(grace=3)
    world8.record(SUCCEEDED, SUCCEEDED)
    out = ok("rollback", "--env", "production", cwd=world8.path, env={"ANDON_USER": "alice"}).out
    assert "in 3s unless cancelled (andon rollback --cancel --env production)" in out
    log = world8.log()
    try:
        runner = log.rollbacks("production")[0].runner_pid
        assert runner is not None and not dead(runner)
    finally:
        log.close()
    out = ok("rollback", "--cancel", "--env", "production", cwd=world8.path, env={"ANDON_USER": "bob"}).out
    assert out.startswith("cancelled rollback #1 of production (to ") and "the line stays stopped" in out
    assert wait_dead(runner)  # the runner saw it and ended
    time.sleep(3.5)  # past the moment it would have run
    assert world8.ran_lines() == []
    log = world8.log()
    try:
        assert log.rollback(1).status == "cancelled" and log.rollback(1).ended_by == "bob"
        assert log.line("production").stopped
        assert [d.trigger for d in log.deploys("production")] == ["ci", "ci"]
        assert kinds(log, "rollback.") == ["rollback.requested", "rollback.cancelled"]
    finally:
        log.close()
    assert "nothing to cancel" in fails("rollback", "--cancel", "--env", "production", cwd=world8.path)


def test_too_late_to_cancel_once_it_runs_is_exit_7(world8: World8) -> None:
    world8.configure(rollback=[PY, str(world8.scripts / "hang.py"), "{sha}", str(world8.pids)])
    world8.record(SUCCEEDED, SUCCEEDED)
    ok("rollback", "--env", "production", cwd=world8.path)
    deadline = time.monotonic() + 60
    while not world8.pids.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        assert "too late to cancel" in fails("rollback", "--cancel", "--env", "production", cwd=world8.path, code=7)
        assert "is running" in fails("resume", "--env", "production", cwd=world8.path, code=7)
    finally:
        log = world8.log()
        runner = log.rollbacks("production")[0].runner_pid
        log.close()
        os.kill(runner or 0, signal.SIGTERM)  # the runner stops its action and records it interrupted
        log = world8.wait_for(rollback_ended)
        try:
            assert log.rollbacks("production")[0].status == INTERRUPTED
        finally:
            log.close()
        for pid in map(int, world8.pids.read_text().split()):
            assert wait_dead(pid)


# -- what runs --------------------------------------------------------------------------------


def test_without_a_rollback_action_the_deploy_action_runs_with_the_target_sha(world8: World8) -> None:
    world8.configure(rollback=[], deploy=[PY, str(world8.scripts / "rollback.py"), "{sha}", str(world8.ran)])
    world8.record(SUCCEEDED, UNHEALTHY)
    ok("rollback", "--env", "production", cwd=world8.path)
    world8.wait_for(rollback_ended).close()
    assert [line[0] for line in world8.ran_lines()] == [world8.shas[0]]


def test_rollback_to_a_named_deploy_or_revision(world8: World8) -> None:
    world8.configure()
    world8.record(SUCCEEDED, SUCCEEDED, SUCCEEDED)
    ok("rollback", "--env", "production", "--to", "#1", cwd=world8.path)
    world8.wait_for(rollback_ended).close()
    ok("rollback", "--env", "production", "--to", world8.shas[1][:10], cwd=world8.path)
    log = world8.wait_for(lambda log: len(log.rollbacks()) == 2 and rollback_ended(log))
    try:
        second, first = log.rollbacks("production")
        assert (first.target_sha, first.target_deploy_id) == (world8.shas[0], 1)
        assert (second.target_sha, second.target_deploy_id) == (world8.shas[1], 2)
    finally:
        log.close()
    assert [line[0] for line in world8.ran_lines()] == [world8.shas[0], world8.shas[1]]


def test_a_failed_rollback_says_so_and_leaves_the_line_stopped(world8: World8) -> None:
    world8.configure(rollback=[PY, str(world8.scripts / "rollback.py"), "{sha}", str(world8.ran), "3"])
    world8.record(SUCCEEDED, SUCCEEDED)
    ok("rollback", "--env", "production", cwd=world8.path)
    log = world8.wait_for(rollback_ended)
    try:
        [rollback] = log.rollbacks()
        assert rollback.status == FAILED
        assert log.get(rollback.deploy_id or 0).exit_code == 3
        assert log.line("production").stopped
    finally:
        log.close()
    out = ok("status", cwd=world8.path).out
    assert "LINE STOPPED" in out and "failed" in out


def test_a_rollback_stops_the_deploy_it_rolls_back_instead_of_waiting_for_it(world8: World8) -> None:
    world8.configure(deploy=[PY, str(world8.scripts / "hang.py"), "{sha}", str(world8.pids)])
    world8.record(SUCCEEDED)
    deploying = subprocess.Popen(_argv(("deploy", "--env", "production", "--sha", world8.shas[2])), cwd=world8.path,
                                 env=_env(None), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert deploying.stdout is not None and deploying.stdout.readline() == b"ready\n"
        leader, grandchild = map(int, world8.pids.read_text().split())
        began = time.monotonic()
        ok("rollback", "--env", "production", cwd=world8.path)
        assert deploying.wait(timeout=60) == 143  # its andon was told to stop it (SIGTERM), and did
        assert wait_dead(leader) and wait_dead(grandchild)
        log = world8.wait_for(rollback_ended)
        try:
            assert time.monotonic() - began < 30  # never the hang's 600 s
            stopped = log.get(2)
            assert (stopped.status, stopped.exit_code) == (INTERRUPTED, 143)
            [rollback] = log.rollbacks()
            ran = log.get(rollback.deploy_id or 0)
            assert (ran.reverts, ran.sha, ran.status) == (2, world8.shas[0], SUCCEEDED)
            assert "[andon: deploy #2 was still running: stopped first, recorded interrupted" in \
                log.get(ran.id).output
        finally:
            log.close()
    finally:
        if deploying.poll() is None:
            deploying.kill()
            deploying.wait()
        if world8.pids.exists():
            for pid in map(int, world8.pids.read_text().split()):
                kill_quietly(pid)


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("args, expected", [
    (("--env", "nowhere"), "unknown environment 'nowhere'"),
    (("--env", "bad name"), "environment name 'bad name' is not allowed"),
    (("--env", "production", "--to", "99"), "there is no deploy #99"),
    (("--env", "production", "--to", "#4"), "deploy #4 is of staging, not production"),
    (("--env", "production", "--to", "abc1234" + "0" * 33), "is not a commit in this clone"),
    (("--env", "production", "--to", "no-such-branch"), "is not a commit in this clone"),
    (("--env", "production", "--to=-x"), "neither a deploy id nor a commit"),
], ids=["unknown-env", "bad-env-name", "no-such-deploy", "deploy-of-another-env", "gone-sha", "unknown-rev",
        "option-like"])
def test_bad_rollback_input_is_one_line_and_writes_nothing(world8: World8, args: tuple[str, ...],
                                                           expected: str) -> None:
    world8.configure()
    world8.record(SUCCEEDED, SUCCEEDED, SUCCEEDED)
    log = world8.log()
    log.record("staging", world8.shas[0], SUCCEEDED, who="ci")
    log.close()
    line = fails("rollback", *args, cwd=world8.path)
    assert expected in line, line
    log = world8.log()
    try:
        assert log.rollbacks() == [] and not log.line("production").stopped
    finally:
        log.close()


def test_nothing_to_roll_back_to_and_no_action_are_one_line(world8: World8) -> None:
    world8.configure()
    assert "has no deploys" in fails("rollback", "--env", "production", cwd=world8.path)
    world8.record(FAILED)
    assert "no earlier good deploy" in fails("rollback", "--env", "production", cwd=world8.path)
    world8.configure(rollback=[])
    assert "has no rollback or deploy action" in fails("rollback", "--env", "production", cwd=world8.path)
    assert "--cancel takes no --to" in fails("rollback", "--env", "production", "--cancel", "--to", "1",
                                             cwd=world8.path, code=2)


def test_a_reason_with_escape_sequences_is_cleaned_stored_and_never_interpreted(world8: World8) -> None:
    world8.configure(grace=60)
    world8.record(SUCCEEDED, SUCCEEDED)
    hostile = "\x1b[2J\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\ [bold]x[/] \x07\x9b31m"
    result = andon("rollback", "--env", "production", "--reason", hostile, cwd=world8.path)
    assert result.code == 0, result.err
    try:
        out = ok("status", cwd=world8.path).out
        assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
        assert "LINE STOPPED by " in out and "click [bold]x[/]" in out
        log = world8.log()
        try:
            assert log.line("production").reason == "click [bold]x[/]"
            assert log.rollbacks()[0].reason == "click [bold]x[/]"
        finally:
            log.close()
    finally:
        ok("rollback", "--cancel", "--env", "production", cwd=world8.path)


# -- the backend entry point (what the dashboard calls) -----------------------------------------


def test_request_rollback_from_python_detaches_a_runner_that_is_not_our_child(world8: World8) -> None:
    world8.configure(grace=0.5)
    world8.record(SUCCEEDED, SUCCEEDED)
    world = resolve_world(world8.path, None, None)
    try:
        requested = request_rollback(world, "production", "dashboard-user", "from the dashboard")
        assert requested.stopped_line and requested.runner_pid
        assert requested.rollback.runner_pid == requested.runner_pid
        with pytest.raises(OSError):  # not our child: closing the dashboard neither stops it nor leaves a zombie
            os.waitpid(requested.runner_pid, os.WNOHANG)
        with pytest.raises(RollbackUnderWay) as caught:
            request_rollback(world, "production", "someone-else")
        assert "requested by dashboard-user" in one_line(caught.value)
    finally:
        world.close()
    world8.wait_for(rollback_ended).close()
    assert [line[0] for line in world8.ran_lines()] == [world8.shas[0]]


def test_request_rollback_refuses_an_unconfigured_environment_before_writing(world8: World8) -> None:
    world8.configure()
    world8.record(SUCCEEDED, SUCCEEDED)
    world = resolve_world(world8.path, None, None)
    try:
        with pytest.raises(AndonError) as caught:
            request_rollback(world, "qa", "me")
        assert "unknown environment 'qa'" in one_line(caught.value)
        assert world.log.rollbacks() == []
    finally:
        world.close()


# -- stop and resume from the command line ------------------------------------------------------


def test_andon_stop_from_many_processes_at_once_tells_the_losers_who_won(world8: World8) -> None:
    world8.configure()
    world8.record(SUCCEEDED)
    processes = [subprocess.Popen(_argv(("stop", "--env", "production", "--reason", f"stop {n}")),
                                  cwd=world8.path, env=_env({"ANDON_USER": f"user-{n}"}),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(8)]
    outs = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outs.append(out.strip())
    winners = [out for out in outs if out.startswith("stopped the line of production")]
    assert len(winners) == 1
    log = world8.log()
    try:
        state = log.line("production")
        assert kinds(log, "line.") == ["line.stopped"]
    finally:
        log.close()
    told = f"the line of production was already stopped by {state.who} since "
    assert all(out.startswith(told) and out.endswith(f"UTC: {state.reason}") for out in outs if out not in winners)


def test_stop_resume_and_status(world8: World8) -> None:
    world8.configure()
    world8.record(SUCCEEDED)
    assert "--reason" in fails("stop", "--env", "production", cwd=world8.path, code=2)
    assert "unknown environment 'qa'" in fails("stop", "--env", "qa", "--reason", "x", cwd=world8.path)
    ok("stop", "--env", "production", "--reason", "api is down", cwd=world8.path, env={"ANDON_USER": "alice"})
    status = json.loads(ok("status", "--json", cwd=world8.path).out)["environments"]
    production = next(env for env in status if env["env"] == "production")
    assert production["line"]["state"] == "stopped" and production["line"]["who"] == "alice"
    assert "production:  LINE STOPPED by alice since " in ok("status", cwd=world8.path).out
    assert ok("resume", "--env", "production", "--reason", "fixed", cwd=world8.path).out == \
        "resumed the line of production\n"
    assert ok("resume", "--env", "production", cwd=world8.path).out == "the line of production is not stopped\n"
    assert "LINE STOPPED" not in ok("status", cwd=world8.path).out
