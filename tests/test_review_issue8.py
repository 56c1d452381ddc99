"""Review of issue 8 (stop the line, rollback, broadcast): defects found in the committed code.

Each test protects a promise of the issue or the README that the code does not keep yet; it is
marked ``xfail(strict=True)`` with the defect in one line, so the suite stays green while the
defect is open and turns red (XPASS) once it is fixed: then drop the mark.

Real parts only: real git repositories (conftest's ``Repo``), real SQLite files, real ``andon``
processes, real process groups, a real HTTP server on 127.0.0.1, Pilot-driven dashboards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from backend.models import SUCCEEDED
from backend.store import DeployLog
from backend.world import resolve_world
from tests.conftest import Repo, wait_for

PY = sys.executable
RUN_LIMIT = 120  # seconds: a guard against a hung andon, not a timing assertion


def andon(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``andon ARGS`` as a real process, to completion; never a traceback."""
    done = subprocess.run([PY, "-m", "tui.cli", *args], cwd=cwd, env=os.environ | (env or {}),
                          capture_output=True, text=True, timeout=RUN_LIMIT)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def gone(pid: int) -> bool:
    """The process is gone, or a zombie (it runs no code either way)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def a_dead_pid() -> int:
    """The pid of a process that has exited (an andon that was killed)."""
    process = subprocess.Popen([PY, "-c", "pass"])
    process.wait()
    return process.pid


def stranger() -> subprocess.Popen[bytes]:
    """Somebody else's program, the leader of a session (so of a process group) of its own: what a
    pid or pgid number recorded in the log can belong to once the kernel has handed it out again."""
    return subprocess.Popen(["sleep", "120"], start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    process.wait()


def stale_running_deploy(db: Path, sha: str, *, pid: int, pgid: int | None) -> int:
    """A deploy of production left ``running`` an hour ago by an andon (pid ``pid``) on this host,
    whose command's process group was ``pgid``: as ``andon deploy`` leaves it when CI SIGKILLs it.

    The numbers are recorded with the start times of the processes that held them then, an hour
    before whatever holds them now (the kernel's reuse of a number cannot be had on demand)."""
    from unittest import mock

    from backend import processes

    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)

    def then(number: int) -> float | None:
        now = processes.started_at(number)
        return None if now is None else now - 3600

    log = DeployLog.open(db, create_parent=True, clock=lambda: an_hour_ago)  # it all happened an hour ago
    try:
        with mock.patch("backend.store.deploys.started_at", then), mock.patch("backend.store.line.started_at", then):
            turn = log.try_start("production", sha, who="ci", trigger="ci", stale_after=600, pid=pid)
            assert turn.started is not None
            if pgid is not None:
                log.record_process(turn.started.id, pgid)
        return turn.started.id
    finally:
        log.close()


# -- process numbers are reused: the log's pid and pgid are trusted as if they were not ----------------------


def test_reaping_a_dead_deploy_never_kills_a_process_group_that_reused_its_pgid(repo: Repo, tmp_path: Path) -> None:
    sha = repo.commit("one")
    (repo.path / "andon.toml").write_text(f'[environments.production]\ndeploy = ["{PY}", "-c", "pass"]\n')
    db = tmp_path / "deploys.db"
    # The andon was killed an hour ago, its command ended by itself soon after (nobody ran andon
    # meanwhile), and its group's number now belongs to a session that started later: someone
    # else's shell, another CI job's command, a service.
    other = stranger()
    try:
        stale_running_deploy(db, sha, pid=a_dead_pid(), pgid=other.pid)
        done = andon("--db", str(db), "status", cwd=repo.path)  # any andon that looks reaps
        assert done.returncode == 0, done.stderr
        time.sleep(0.3)
        assert not gone(other.pid), "andon killed a process group that was not its deploy's"
    finally:
        stop(other)


def test_a_reused_andon_pid_does_not_block_the_environment_for_ever(repo: Repo, tmp_path: Path) -> None:
    sha = repo.commit("one")
    (repo.path / "andon.toml").write_text(f'[environments.production]\ndeploy = ["{PY}", "-c", "pass"]\n')
    db = tmp_path / "deploys.db"
    # The andon deploy was SIGKILLed an hour ago (its command ended with it); its pid now
    # belongs to another program. In a CI container pids restart from 1 for every job, so the
    # next job's processes get the same small numbers.
    other = stranger()
    try:
        blocked = stale_running_deploy(db, sha, pid=other.pid, pgid=None)
        done = andon("--db", str(db), "deploy", "--env", "production", "--wait", "1", cwd=repo.path)
        assert done.returncode == 0, (done.returncode, done.stderr)
        log = DeployLog.open(db)
        try:
            assert log.get(blocked).status != "running"
        finally:
            log.close()
    finally:
        stop(other)


# -- andon rollback --to "" -------------------------------------------------------------------------------


def test_an_empty_to_is_refused_not_taken_as_the_last_good_deploy(repo: Repo, tmp_path: Path) -> None:
    shas = [repo.commit(f"change {n}") for n in range(3)]
    ran = tmp_path / "ran.txt"
    (repo.path / "andon.toml").write_text(
        "[environments.production]\n"
        f'rollback = ["{PY}", "-c", "import sys; open(sys.argv[1], \'a\').write(sys.argv[2])", "{ran}", "{{sha}}"]\n'
        "rollback_grace_seconds = 60\n")
    db = repo.path / ".git" / "andon" / "deploys.db"
    log = DeployLog.open(db, create_parent=True)
    try:
        for sha in shas:
            log.record("production", sha, SUCCEEDED, who="ci")
    finally:
        log.close()
    try:
        done = andon("rollback", "--env", "production", "--to", "", cwd=repo.path)
        assert done.returncode != 0, done.stdout
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("andon: error: "), done.stderr
        log = DeployLog.open(db)
        try:
            assert log.rollbacks("production") == [] and not log.line("production").stopped
        finally:
            log.close()
    finally:  # let a runner that was started end now, running nothing
        log = DeployLog.open(db)
        try:
            if log.active_rollback("production") is not None:
                log.cancel_rollback("production", who="review")
        finally:
            log.close()


# -- secrets: an HTTP action's URL ---------------------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def hook_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.request_queue_size = 64
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_http_actions_secret_path_never_reaches_the_output_or_the_log(repo: Repo, tmp_path: Path,
                                                                         hook_server: str) -> None:
    repo.commit("one")
    token = "5c23354f454e1350f8543e78"  # a build hook's URL is its only credential
    (repo.path / "andon.toml").write_text(
        '[environments.production]\ndeploy = { url_env = "DEPLOY_HOOK_URL", body = { sha = "{sha}" } }\n')
    db = tmp_path / "deploys.db"
    done = andon("--db", str(db), "deploy", "--env", "production", cwd=repo.path,
                 env={"DEPLOY_HOOK_URL": f"{hook_server}/build_hooks/{token}"})
    assert done.returncode == 0, done.stderr
    log = DeployLog.open(db)
    try:
        [deploy] = log.deploys("production", with_output=True)
    finally:
        log.close()
    assert deploy.status == SUCCEEDED and "HTTP 200" in deploy.output  # the action ran, its answer was kept
    assert token not in done.stdout + done.stderr, done.stdout
    assert token not in deploy.output, deploy.output


# -- the broadcast: every open dashboard -----------------------------------------------------------------------


async def test_a_stop_of_another_environment_than_the_one_shown_reaches_the_dashboard_control(
        repo: Repo, tmp_path: Path) -> None:
    """The control for the next test: the same stop does reach a dashboard showing its environment."""
    await _stop_production_seen_from(repo, tmp_path, shown="production")


async def test_a_stop_of_another_environment_than_the_one_shown_reaches_the_dashboard(
        repo: Repo, tmp_path: Path) -> None:
    await _stop_production_seen_from(repo, tmp_path, shown="staging")


async def _stop_production_seen_from(repo: Repo, tmp_path: Path, *, shown: str) -> None:
    from tui.app import make_app
    from tui.screenshots import settle
    from tui.widgets.line_banner import LineBanner

    shas = [repo.commit(f"change {n}") for n in range(2)]
    (repo.path / "andon.toml").write_text(
        f'[environments.production]\ndeploy = ["{PY}", "-c", "pass"]\n'
        f'[environments.staging]\ndeploy = ["{PY}", "-c", "pass"]\n')
    db = tmp_path / "deploys.db"
    log = DeployLog.open(db)
    try:
        log.record("production", shas[0], SUCCEEDED, who="ci")
        log.record("staging", shas[1], SUCCEEDED, who="ci")
    finally:
        log.close()
    app = make_app(resolve_world(repo.path, db, None))
    bells: list[int] = []
    app.bell = lambda: bells.append(1)  # type: ignore[method-assign]

    def told() -> bool:
        found = app.screen.query(LineBanner)
        text = str(found.first().render()) if found and found.first().shown else ""
        return bool(bells) or "production" in text

    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        if shown == "staging":
            await pilot.press("right_square_bracket")
            assert await wait_for(pilot, lambda: app.screen.env == "staging")
        assert app.screen.env == shown
        assert await wait_for(pilot, lambda: app.screen.query(LineBanner))
        await pilot.pause(0.5)
        assert not told()
        done = andon("--db", str(db), "stop", "--env", "production", "--reason", "checkout is down", cwd=repo.path)
        assert done.returncode == 0, done.stderr
        assert await wait_for(pilot, told, 2.0), "the dashboard was not told that production's line stopped"


def test_a_forced_deploy_never_starts_beside_a_running_rollback(tmp_path: Path) -> None:
    """Between begin_rollback and start_rollback_deploy the rollback has no deploy row: a forced
    deploy must still not start (found as a suspicion in review)."""
    from backend.store.line import RollbackUnderWay

    log = DeployLog.open(tmp_path / "deploys.db")
    try:
        for sha in ("a" * 40, "b" * 40):
            log.record("production", sha, SUCCEEDED, who="ci")
        rollback, _ = log.request_rollback("production", who="alice", reason="bad", grace=0)
        assert log.begin_rollback(rollback.id, os.getpid()) is not None  # taken, no deploy row yet
        with pytest.raises(RollbackUnderWay) as caught:
            log.try_start("production", "c" * 40, who="bob", trigger="manual", force=True, stale_after=60)
        assert "is running" in str(caught.value) and "\n" not in str(caught.value)
        assert [d.sha[0] for d in log.deploys("production")] == ["b", "a"]
    finally:
        log.close()


def test_a_late_caller_never_rolls_back_a_stop_a_second_time(tmp_path: Path) -> None:
    """Twelve racing `andon rollback` whose last starts after the first rollback has finished
    (grace 0, a fast action) must not roll back again, further back (found by the benchmark)."""
    from backend.store.line import RollbackUnderWay

    log = DeployLog.open(tmp_path / "deploys.db")
    try:
        for sha in ("a" * 40, "b" * 40, "c" * 40):
            log.record("production", sha, SUCCEEDED, who="ci")
        first, _ = log.request_rollback("production", who="alice", reason="bad", grace=0)
        assert log.begin_rollback(first.id, os.getpid()) is not None
        row = log.start_rollback_deploy(first.id)
        log.finish_action(row.id, SUCCEEDED, exit_code=0, output="")
        with pytest.raises(RollbackUnderWay) as caught:
            log.request_rollback("production", who="bob", reason="bad", grace=0)
        assert "already rolled back" in str(caught.value) and "\n" not in str(caught.value)
        assert [r.id for r in log.rollbacks("production")] == [first.id]
        # Further back is a person's explicit choice.
        from backend.store.line import Target

        second, _ = log.request_rollback("production", who="carol", reason="further", grace=0,
                                         to=Target("a" * 40, None))
        assert second.target_sha == "a" * 40
    finally:
        log.close()
