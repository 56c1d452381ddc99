"""The line (running or stopped), one deploy at a time, rollbacks in the log, and killed andons'
orphans: real SQLite files, real processes, and ``andon stop`` from many processes at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend import AndonError
from backend.models import FAILED, INTERRUPTED, RUNNING, SUCCEEDED, UNHEALTHY, to_iso
from backend.processes import alive, stop_group
from backend.store import MIGRATIONS, DeployLog
from backend.store.line import Busy, LineStopped, RollbackUnderWay, Target
from tests.conftest import one_line, raw

T0 = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent


def sha(n: int) -> str:
    return f"{n:040x}"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def clocked(tmp_path: Path, clock: Clock) -> Iterator[DeployLog]:
    opened = DeployLog.open(tmp_path / "deploys.db", clock=clock)
    yield opened
    opened.close()


def events(log: DeployLog, *kinds: str) -> list[tuple[str, str, int | None, dict[str, object]]]:
    """(kind, who, deploy_id, detail) of the events of these kinds, oldest first."""
    return [(e.kind, e.who, e.deploy_id, json.loads(e.detail)) for e in reversed(log.events(1000))
            if not kinds or e.kind in kinds]


def start(log: DeployLog, env: str, n: int, **kwargs: object) -> int:
    turn = log.try_start(env, sha(n), who="ci", trigger="ci", stale_after=60, **kwargs)  # type: ignore[arg-type]
    assert turn.started is not None, turn
    return turn.started.id


# -- the line -----------------------------------------------------------------------------


def test_the_first_stop_wins_and_later_stoppers_are_told_who_stopped_it_and_when(
        clocked: DeployLog, clock: Clock) -> None:
    assert clocked.line("production").stopped is False
    won, first = clocked.stop_line("production", who="alice", reason="api is down")
    assert won and first.stopped and (first.who, first.reason, first.since) == ("alice", "api is down", to_iso(T0))
    clock.advance(30)
    won, told = clocked.stop_line("production", who="bob", reason="me too")
    assert not won and told == first
    assert clocked.line("staging").stopped is False  # per environment
    assert events(clocked, "line.stopped") == [
        ("line.stopped", "alice", None, {"reason": "api is down", "automatic": False})]
    assert clocked.lines() == {"production": first}


def test_resume_reopens_the_line_once_and_is_refused_while_a_rollback_is_under_way(clocked: DeployLog) -> None:
    clocked.record("production", sha(1), SUCCEEDED, who="ci", at=T0 - timedelta(hours=2))
    clocked.record("production", sha(2), SUCCEEDED, who="ci", at=T0 - timedelta(hours=1))
    assert clocked.resume_line("production", who="alice") == (False, clocked.line("production"))
    clocked.request_rollback("production", who="alice", reason="bad", grace=5)
    with pytest.raises(RollbackUnderWay) as caught:
        clocked.resume_line("production", who="bob")
    assert "rollback --cancel" in one_line(caught.value)
    clocked.cancel_rollback("production", who="bob")
    assert clocked.line("production").stopped  # cancelling leaves the line stopped
    resumed, state = clocked.resume_line("production", who="carol", reason="fixed")
    assert resumed and not state.stopped and state.who == "carol"
    assert clocked.resume_line("production", who="dave")[0] is False
    assert [kind for kind, *_ in events(clocked, "line.stopped", "line.resumed")] == ["line.stopped", "line.resumed"]


def test_a_reason_with_escape_sequences_is_stored_cleaned(clocked: DeployLog) -> None:
    _, state = clocked.stop_line("production", who="eve\x1b[2J", reason="\x1b]8;;http://x\x1b\\click\x1b]8;;\x1b\\ \x1b[31mred")
    assert (state.who, state.reason) == ("eve", "click red")
    assert clocked.line("production").reason == "click red"
    [(_, who, _, detail)] = events(clocked, "line.stopped")
    assert (who, detail["reason"]) == ("eve", "click red")


STOPPER = """\
import sys, time
from backend.store import DeployLog
path, me, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
log = DeployLog.open(path)
while time.time() < start:  # all of them at once
    time.sleep(0.001)
won, state = log.stop_line("production", who=me, reason=f"stopped by {me}")
print(f"{won} {state.who} {state.since}")
"""


def test_stopping_from_many_processes_at_once_has_exactly_one_winner(tmp_path: Path) -> None:
    """Twelve processes stop the line in the same millisecond: one writes the stop, eleven are told it."""
    path = tmp_path / "deploys.db"
    DeployLog.open(path).close()
    at = time.time() + 2.0
    processes = [subprocess.Popen([sys.executable, "-c", STOPPER, str(path), f"stopper-{n}", str(at)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(12)]
    answers = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        answers.append(out.split())
    winners = [answer for answer in answers if answer[0] == "True"]
    assert len(winners) == 1
    _, who, since = winners[0]
    assert all(answer[1:] == [who, since] for answer in answers)  # everyone is told the same stop
    log = DeployLog.open(path)
    try:
        assert [(kind, by) for kind, by, _, _ in events(log, "line.stopped")] == [("line.stopped", who)]
    finally:
        log.close()


# -- one deploy at a time ------------------------------------------------------------------


def test_a_stopped_line_refuses_a_deploy_and_force_is_recorded(clocked: DeployLog) -> None:
    clocked.stop_line("production", who="alice", reason="api is down")
    with pytest.raises(LineStopped) as caught:
        clocked.try_start("production", sha(1), who="ci", trigger="ci", stale_after=60)
    message = one_line(caught.value)
    assert "stopped by alice since 2026-11-20 14:00:00 UTC: api is down" in message
    assert clocked.count() == 0
    turn = clocked.try_start("production", sha(1), who="bob", trigger="manual", reason="hotfix", force=True,
                             stale_after=60)
    assert turn.started is not None and turn.forced is not None and turn.forced.who == "alice"
    assert events(clocked, "deploy.forced") == [("deploy.forced", "bob", turn.started.id, {
        "reason": "hotfix", "stopped_by": "alice", "stopped_reason": "api is down"})]
    assert clocked.line("production").stopped  # forcing does not resume
    clocked.finish(turn.started.id, SUCCEEDED, exit_code=0)
    clocked.resume_line("production", who="alice")
    turn = clocked.try_start("production", sha(2), who="ci", trigger="ci", force=True, stale_after=60)
    assert turn.forced is None and len(events(clocked, "deploy.forced")) == 1  # nothing to force through


def test_a_second_deploy_is_blocked_while_the_first_runs_and_starts_after(clocked: DeployLog) -> None:
    first = start(clocked, "production", 1)  # this process: alive
    turn = clocked.try_start("production", sha(2), who="ci", trigger="ci", stale_after=60)
    assert turn.started is None and turn.blocker is not None and turn.blocker.id == first
    assert clocked.count() == 1
    assert clocked.try_start("staging", sha(2), who="ci", trigger="ci", stale_after=60).started is not None
    clocked.finish(first, SUCCEEDED, exit_code=0)
    assert start(clocked, "production", 2) > first


def test_a_running_deploy_of_a_dead_andon_without_a_command_left_does_not_block(clocked: DeployLog) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    turn = clocked.try_start("production", sha(1), who="ci", trigger="ci", stale_after=60, pid=dead)
    assert turn.started is not None
    assert clocked.get(turn.started.id).status == INTERRUPTED  # read: its andon is gone
    assert start(clocked, "production", 2)


def test_a_running_deploy_of_another_host_blocks_until_it_is_stale(clocked: DeployLog, clock: Clock,
                                                                    tmp_path: Path) -> None:
    with raw(tmp_path / "deploys.db") as other:
        other.execute("INSERT INTO deploys (env, sha, status, who, started_at, pid, host) VALUES"
                      " ('production', ?, 'running', 'ci', ?, 1, 'elsewhere')", (sha(1), to_iso(T0)))
    turn = clocked.try_start("production", sha(2), who="ci", trigger="ci", stale_after=600)
    assert turn.blocker is not None and turn.blocker.id == 1
    clock.advance(601)
    assert clocked.try_start("production", sha(2), who="ci", trigger="ci", stale_after=600).started is not None


# -- killed andons ----------------------------------------------------------------------------


@pytest.fixture
def orphan(clocked: DeployLog) -> Iterator[tuple[int, int]]:
    """A running deploy whose andon died and whose command (its own process group) runs on:
    (deploy id, process group)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    turn = clocked.try_start("production", sha(1), who="ci", trigger="ci", stale_after=60, pid=int(done.stdout))
    assert turn.started is not None
    command = subprocess.Popen(["sleep", "300"], start_new_session=True)
    clocked.record_process(turn.started.id, command.pid)
    yield turn.started.id, command.pid
    stop_group(command.pid, 0.1)
    command.wait()


def test_a_deploy_whose_andon_died_reads_running_while_its_command_runs(
        clocked: DeployLog, orphan: tuple[int, int]) -> None:
    deploy_id, pgid = orphan
    assert clocked.get(deploy_id).status == RUNNING  # never interrupted while the action runs
    assert [d.status for d in clocked.deploys("production")] == [RUNNING]
    # ...and it blocks the next deploy until someone stops it.
    assert clocked.try_start("production", sha(2), who="ci", trigger="ci", stale_after=60).blocker is not None
    [found] = clocked.orphans()
    assert (found.deploy_id, found.pgid) == (deploy_id, pgid)
    assert stop_group(pgid, 1.0) is None
    assert not alive(pgid, group=True)
    assert clocked.get(deploy_id).status == INTERRUPTED  # read: andon and command both gone
    ended = clocked.end_orphan(deploy_id, "[andon: stopped]\n")
    assert ended is not None and ended.status == INTERRUPTED and ended.finished_at
    assert clocked.end_orphan(deploy_id, "again") is None  # once
    assert [kind for kind, *_ in events(clocked, "deploy.finished")] == ["deploy.finished"]


def test_reap_stops_the_orphaned_group_and_finishes_the_row(clocked: DeployLog, orphan: tuple[int, int]) -> None:
    from backend.deployer import reap

    deploy_id, pgid = orphan
    [ended] = reap(clocked)
    assert not alive(pgid, group=True)
    assert ended.id == deploy_id and ended.status == INTERRUPTED
    assert f"its command's process group {pgid} was stopped" in ended.output
    assert reap(clocked) == []


def test_end_orphan_leaves_a_deploy_whose_andon_lives_alone(clocked: DeployLog) -> None:
    deploy_id = start(clocked, "production", 1)  # this process runs it
    assert clocked.orphans() == []
    assert clocked.end_orphan(deploy_id, "no") is None
    assert clocked.get(deploy_id).status == RUNNING


def test_alive_does_not_count_a_zombie() -> None:
    """PID 1 may never collect an orphan: a dead andon must not look alive for ever."""
    process = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            pytest.skip("no /proc")
        if state == "Z":
            break
        time.sleep(0.01)
    try:
        os.kill(process.pid, 0)  # kill(2) still finds it
        assert not alive(process.pid)
    finally:
        process.wait()


def test_stop_group_kills_what_ignores_sigterm_after_the_grace() -> None:
    command = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                                "signal.SIG_IGN); print('ready', flush=True); time.sleep(300)"],
                               start_new_session=True, stdout=subprocess.PIPE)
    assert command.stdout is not None and command.stdout.readline() == b"ready\n"
    began = time.monotonic()
    assert stop_group(command.pid, 0.5) is None
    assert 0.5 <= time.monotonic() - began < 5
    assert command.wait(5) == -signal.SIGKILL
    assert "not one andon may stop" in (stop_group(1) or "")


# -- rollbacks -------------------------------------------------------------------------------


def history(log: DeployLog, *statuses: str) -> list[int]:
    """Deploys of production an hour apart, oldest first, with these statuses: their ids."""
    ids = []
    for n, status in enumerate(statuses, 1):
        ids.append(log.record("production", sha(n), status, who="ci", at=T0 - timedelta(hours=len(statuses) - n + 1)).id)
    return ids


def test_the_last_good_deploy_skips_failed_unhealthy_rolled_back_and_same_sha_deploys(clocked: DeployLog) -> None:
    good, _, reverted, _, _ = history(clocked, SUCCEEDED, FAILED, SUCCEEDED, UNHEALTHY, SUCCEEDED)
    clocked.record("production", sha(3), FAILED, who="ci", at=T0 - timedelta(minutes=30), trigger="rollback",
                   reverts=reverted)  # a rollback of #3 was tried: #3 is not good
    # The newest (#6, failed, sha 3) is rolled back: #5 (sha 5) is good and another SHA.
    assert clocked.last_good("production") == Target(sha(5), 5)
    clocked.record("production", sha(5), UNHEALTHY, who="ci", at=T0 - timedelta(minutes=10))
    # Now the newest ships sha 5: #5 would change nothing; #3 was rolled back; #1 it is.
    assert clocked.last_good("production") == Target(sha(1), good)
    assert clocked.last_good("staging") is None


def test_a_rollback_that_succeeded_counts_as_good(clocked: DeployLog) -> None:
    history(clocked, SUCCEEDED, SUCCEEDED)
    clocked.record("production", sha(1), SUCCEEDED, who="ci", trigger="rollback", reverts=2,
                   at=T0 - timedelta(minutes=30))
    clocked.record("production", sha(9), UNHEALTHY, who="ci", at=T0 - timedelta(minutes=10))
    assert clocked.last_good("production") == Target(sha(1), 3)


def test_one_active_rollback_per_environment(clocked: DeployLog, clock: Clock) -> None:
    history(clocked, SUCCEEDED, SUCCEEDED)
    rollback, stopped = clocked.request_rollback("production", who="alice", reason="bad", grace=5)
    assert stopped and rollback.status == "pending" and (rollback.target_sha, rollback.target_deploy_id) == (sha(1), 1)
    assert rollback.reverts == 2 and rollback.run_at == to_iso(T0 + timedelta(seconds=5))
    with pytest.raises(RollbackUnderWay) as caught:
        clocked.request_rollback("production", who="bob", reason="me too", grace=5)
    assert "already pending: to 0000000 (deploy #1), requested by alice at 2026-11-20 14:00:00 UTC" in one_line(caught.value)
    with raw(clocked.path) as other:  # the index holds even against a writer that does not check
        with pytest.raises(Exception, match="UNIQUE"):
            other.execute("INSERT INTO rollbacks (env, status, requested_at, run_at, target_sha) VALUES"
                          " ('production', 'running', 'x', 'x', 'x')")
    assert [kind for kind, *_ in events(clocked, "line.stopped", "rollback.requested")] == [
        "line.stopped", "rollback.requested"]
    [(_, who, deploy_id, detail)] = events(clocked, "rollback.requested")
    assert (who, deploy_id) == ("alice", 2)
    assert detail == {"reason": "bad", "target_deploy_id": 1, "target_sha": sha(1), "reverts": 2,
                      "run_at": to_iso(T0 + timedelta(seconds=5)), "rollback_id": rollback.id, "automatic": False}


def test_cancel_in_the_grace_and_too_late_once_it_runs(clocked: DeployLog) -> None:
    history(clocked, SUCCEEDED, SUCCEEDED)
    with pytest.raises(AndonError, match="nothing to cancel"):
        clocked.cancel_rollback("production", who="bob")
    first, _ = clocked.request_rollback("production", who="alice", reason="bad", grace=5)
    cancelled = clocked.cancel_rollback("production", who="bob")
    assert (cancelled.status, cancelled.ended_by) == ("cancelled", "bob")
    assert clocked.begin_rollback(first.id, os.getpid()) is None  # a runner finds nothing to run
    second, stopped = clocked.request_rollback("production", who="carol", reason="again", grace=0)
    assert not stopped  # the line was still stopped
    assert clocked.begin_rollback(second.id, os.getpid()) is not None
    with pytest.raises(RollbackUnderWay, match="too late to cancel"):
        clocked.cancel_rollback("production", who="bob")
    started = clocked.start_rollback_deploy(second.id)
    assert (started.trigger, started.reverts, started.sha, started.reason) == ("rollback", 2, sha(1), "again")
    finished = clocked.finish_action(started.id, SUCCEEDED, exit_code=0, output="ok\n")
    assert finished.status == SUCCEEDED and clocked.rollback(second.id).status == SUCCEEDED
    assert clocked.active_rollback("production") is None
    assert clocked.line("production").stopped  # resuming is a person's decision
    kinds = [(kind, deploy_id, detail.get("status")) for kind, _, deploy_id, detail in
             events(clocked, "rollback.cancelled", "rollback.started", "rollback.finished")]
    assert kinds == [("rollback.cancelled", 2, None), ("rollback.started", started.id, None),
                     ("rollback.finished", started.id, SUCCEEDED)]


def test_nothing_to_roll_back_to_is_one_line_and_writes_nothing(clocked: DeployLog) -> None:
    with pytest.raises(AndonError, match="no deploys"):
        clocked.request_rollback("production", who="alice", reason="", grace=5)
    history(clocked, FAILED)
    with pytest.raises(AndonError) as caught:
        clocked.request_rollback("production", who="alice", reason="", grace=5)
    assert "no earlier good deploy" in one_line(caught.value)
    assert not clocked.line("production").stopped and clocked.rollbacks() == []


def test_a_rollback_whose_runner_died_in_the_grace_is_interrupted(clocked: DeployLog) -> None:
    from backend.deployer import reap

    history(clocked, SUCCEEDED, SUCCEEDED)
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    rollback, _ = clocked.request_rollback("production", who="alice", reason="", grace=5, runner_pid=int(done.stdout))
    reap(clocked)
    assert clocked.rollback(rollback.id).status == INTERRUPTED
    [(_, _, deploy_id, detail)] = events(clocked, "rollback.finished")
    assert deploy_id is None and detail["status"] == INTERRUPTED and "died before it started" in str(detail["error"])
    assert clocked.request_rollback("production", who="bob", reason="", grace=5)  # no longer blocks


# -- the schema ---------------------------------------------------------------------------------


class Schema6(DeployLog):
    """The andon before the line."""

    MIGRATIONS = MIGRATIONS[:6]


def test_the_line_schema_only_adds_so_older_andons_keep_writing(tmp_path: Path) -> None:
    path = tmp_path / "deploys.db"
    Schema6.open(path).close()
    log = DeployLog.open(path)
    log.stop_line("production", who="alice", reason="x")
    log.close()
    with raw(path) as other:
        assert dict(other.execute("SELECT key, value FROM andon_meta").fetchall())["writer_min_schema"] == "3"
    older = Schema6.open(path)
    try:
        older.record("production", sha(1), SUCCEEDED, who="ci")
        assert older.get(1).status == SUCCEEDED
    finally:
        older.close()


def test_busy_and_stopped_messages_are_one_line(clocked: DeployLog) -> None:
    deploy_id = start(clocked, "production", 1)
    assert "is still running after 1s" in one_line(Busy(clocked.get(deploy_id), 1))
    _, state = clocked.stop_line("production", who="a\nb", reason="x\ny")
    assert "\n" not in str(LineStopped(state))

