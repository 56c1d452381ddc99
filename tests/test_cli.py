"""The ``andon`` command line, run as a real subprocess.

Every test here starts ``python -m tui.cli`` in its own process against a real git
repository built in tmp_path and a real SQLite deploy log, the way CI and people run
it. Whatever goes wrong, andon must answer with an exit code and one plain line, never
a traceback: :func:`andon` asserts that for every run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Repo

RUN_LIMIT = 120  # seconds: a guard against a hung andon, not a timing assertion
GONE = "abc1234" + "0" * 33  # a full SHA that no test repository contains

# A deploy command that shows what it was given: its arguments and andon's variables.
ARGS_SCRIPT = """\
import json, os, sys
print("ARGV " + json.dumps(sys.argv[1:]), flush=True)
print("ENV " + json.dumps({k: os.environ.get(k) for k in
      ("ANDON_ENV", "ANDON_SHA", "ANDON_PREV_SHA", "ANDON_DEPLOY_ID")}), flush=True)
sys.exit(int(os.environ.get("EXIT_WITH", "0")))
"""

# A deploy command that starts a grandchild which ignores SIGTERM, writes
# "<own pid> <grandchild pid>" to argv[1], says it is ready, and then hangs.
HANG_SCRIPT = """\
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
with open(sys.argv[1] + ".tmp", "w") as handle:
    handle.write(f"{os.getpid()} {child.pid}")
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
print("ready", flush=True)
time.sleep(600)
"""


# -- running andon -----------------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str
    raw: bytes  # stdout exactly as written


def _argv(args: tuple[Any, ...]) -> list[str]:
    return [sys.executable, "-m", "tui.cli", *(str(arg) for arg in args)]


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    return os.environ | (extra or {})  # os.environ carries conftest's isolation


def andon(*args: Any, cwd: Path, env: dict[str, str] | None = None, stdin: bytes | None = None) -> Result:
    """Run andon to completion; whatever happened, no traceback."""
    done = subprocess.run(_argv(args), cwd=cwd, env=_env(env), input=stdin,
                          capture_output=True, timeout=RUN_LIMIT)
    err = done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    # Whatever the commits hold, andon writes valid UTF-8 (strict decode).
    return Result(done.returncode, done.stdout.decode("utf-8"), err, done.stdout)


def ok(*args: Any, cwd: Path, **kwargs: Any) -> Result:
    result = andon(*args, cwd=cwd, **kwargs)
    assert result.code == 0, result.err
    return result


def fails(*args: Any, cwd: Path, code: int = 1, **kwargs: Any) -> str:
    """Run andon expecting an error: the exit code, and exactly one line on stderr."""
    result = andon(*args, cwd=cwd, **kwargs)
    assert result.code == code, (result.code, result.out, result.err)
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("andon: error: "), lines[0]
    return lines[0]


def deploys(cwd: Path, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """The deploy log as ``andon log --json`` shows it (newest first)."""
    data = json.loads(ok("log", "--json", *args, cwd=cwd, **kwargs).out)
    return data["deploys"]


def start(*args: Any, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(_argv(args), cwd=cwd, env=_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def finish(process: subprocess.Popen[bytes]) -> Result:
    out, err_bytes = process.communicate(timeout=RUN_LIMIT)
    err = err_bytes.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    return Result(process.returncode, out.decode("utf-8"), err, out)


def configure(repo: Repo, text: str) -> None:
    (repo.path / "andon.toml").write_text(text)


def toml_list(*parts: str) -> str:
    return "[" + ", ".join(json.dumps(part) for part in parts) + "]"


def dead(pid: int) -> bool:
    """Gone, or a zombie nobody has reaped yet (it runs no code either way)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_dead(pid: int) -> bool:
    """Whether ``pid`` dies, allowing the kernel a moment to deliver the kill."""
    deadline = time.monotonic() + 20
    while not dead(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def kill_quietly(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    """Deploy scripts, outside the repository."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "args.py").write_text(ARGS_SCRIPT)
    (folder / "hang.py").write_text(HANG_SCRIPT)
    return folder


def shown(out: str, prefix: str) -> Any:
    """The JSON after ``prefix`` on the line of the deploy command's output that starts with it."""
    for line in out.splitlines():
        if line.startswith(prefix + " "):
            return json.loads(line[len(prefix) + 1:])
    raise AssertionError(f"no {prefix} line in {out!r}")


# -- deploy ----------------------------------------------------------------------------


def test_deploy_streams_output_records_the_run_and_exits_zero(repo: Repo, scripts: Path) -> None:
    """The CI wrapper: the command's output goes to stdout, the run is recorded start to finish."""
    first = repo.commit("first")
    second = repo.commit("second")
    ok("deploy", "--env", "staging", "--sha", first, "--", sys.executable, scripts / "args.py", "{sha}",
       cwd=repo.path)
    result = ok("deploy", "--env", "staging", "--", sys.executable, scripts / "args.py", "{sha}",
                cwd=repo.path)

    assert shown(result.out, "ARGV") == [second]
    assert shown(result.out, "ENV") == {"ANDON_ENV": "staging", "ANDON_SHA": second,
                                        "ANDON_PREV_SHA": first, "ANDON_DEPLOY_ID": "2"}
    assert result.err.strip() == f"andon: deploy #2 of {second[:7]} to staging: succeeded (exit code 0)"
    latest, earlier = deploys(repo.path)
    assert (latest["id"], latest["env"], latest["sha"], latest["prev_sha"]) == (2, "staging", second, first)
    assert (latest["status"], latest["exit_code"], latest["trigger"]) == ("succeeded", 0, "manual")
    assert latest["started_at"] and latest["finished_at"]
    assert latest["finished_at"] >= latest["started_at"]
    assert earlier["sha"] == first and earlier["status"] == "succeeded"
    # The output is kept in the log too.
    with sqlite3.connect(repo.path / ".git" / "andon" / "deploys.db") as conn:
        kept = conn.execute("SELECT output FROM deploys WHERE id = 2").fetchone()[0]
    assert f'ARGV ["{second}"]' in kept


def test_deploy_exits_with_the_commands_exit_code_and_records_failure(repo: Repo, scripts: Path) -> None:
    head = repo.commit("first")
    result = andon("deploy", "--env", "staging", "--", sys.executable, scripts / "args.py", "{sha}",
                   cwd=repo.path, env={"EXIT_WITH": "3"})
    assert result.code == 3
    assert shown(result.out, "ARGV") == [head]
    assert "failed (exit code 3)" in result.err
    [entry] = deploys(repo.path)
    assert (entry["status"], entry["exit_code"]) == ("failed", 3)
    assert entry["finished_at"]


def test_deploy_of_a_command_that_cannot_start_is_recorded_failed(repo: Repo, tmp_path: Path) -> None:
    repo.commit("first")
    # andon exits as a shell would for a command it cannot run: 127 (126: not executable)
    line = fails("deploy", "--env", "staging", "--", tmp_path / "no-such-deploy.sh", "{sha}", cwd=repo.path,
                 code=127)
    assert "no-such-deploy.sh" in line and "no such file" in line
    [entry] = deploys(repo.path)
    assert (entry["status"], entry["exit_code"]) == ("failed", 127)
    not_executable = tmp_path / "deploy.sh"
    not_executable.write_text("echo hi\n")
    line = fails("deploy", "--env", "staging", "--", not_executable, cwd=repo.path, code=126)
    assert "permission denied" in line
    assert deploys(repo.path)[0]["exit_code"] == 126


def test_deploy_trigger_and_reason_are_recorded(repo: Repo, scripts: Path) -> None:
    repo.commit("first")
    ok("deploy", "--env", "staging", "--reason", "hotfix for #12", "--", sys.executable, scripts / "args.py",
       cwd=repo.path, env={"CI": "true"})
    ok("deploy", "--env", "staging", "--trigger", "manual", "--", sys.executable, scripts / "args.py",
       cwd=repo.path, env={"CI": "true"})
    manual, ci = deploys(repo.path)
    assert (ci["trigger"], ci["reason"]) == ("ci", "hotfix for #12")
    assert (manual["trigger"], manual["reason"]) == ("manual", "")


def test_deploy_runs_the_configured_action_with_the_full_sha_as_one_argument(repo: Repo, scripts: Path) -> None:
    head = repo.commit("first")
    configure(repo, "[environments.staging]\n"
                    f"deploy = {toml_list(sys.executable, str(scripts / 'args.py'), '{sha}', '--rev={sha}', '{env}')}\n")
    result = ok("deploy", "--env", "staging", cwd=repo.path)
    assert shown(result.out, "ARGV") == [head, f"--rev={head}", "staging"]
    assert deploys(repo.path)[0]["sha"] == head


def test_deploy_sha_revision_is_resolved_to_the_full_sha(repo: Repo, scripts: Path) -> None:
    parent = repo.commit("first")
    repo.commit("second")
    result = ok("deploy", "--env", "staging", "--sha", "HEAD~1", "--", sys.executable, scripts / "args.py",
                "{sha}", cwd=repo.path)
    assert shown(result.out, "ARGV") == [parent]
    assert deploys(repo.path)[0]["sha"] == parent


def test_deploy_never_runs_a_shell(repo: Repo, scripts: Path, tmp_path: Path) -> None:
    """Arguments are an argv list: shell syntax stays text, andon-looking options reach the command."""
    head = repo.commit("first")
    configure(repo, "[environments.staging]\n"
                    f"deploy = {toml_list(sys.executable, str(scripts / 'args.py'), '{sha}; touch pwned')}\n")
    result = ok("deploy", "--env", "staging", cwd=repo.path)
    assert shown(result.out, "ARGV") == [f"{head}; touch pwned"]

    tricky = ["x; touch pwned", "$(touch pwned2)", "`touch pwned3`", "--env", "production", "--sha", "nope"]
    result = ok("deploy", "--env", "staging", "--", sys.executable, scripts / "args.py", *tricky, cwd=repo.path)
    assert shown(result.out, "ARGV") == tricky
    assert [entry["env"] for entry in deploys(repo.path)] == ["staging", "staging"]
    for folder in (repo.path, tmp_path, scripts):
        assert not [path.name for path in folder.iterdir() if path.name.startswith("pwned")]


def test_deploy_of_an_unknown_revision_is_refused_before_anything_runs(repo: Repo, scripts: Path) -> None:
    repo.commit("first")
    marker = scripts / "ran"
    line = fails("deploy", "--env", "staging", "--sha", "no-such-rev", "--",
                 sys.executable, "-c", f"open({str(marker)!r}, 'w')", cwd=repo.path)
    assert "no-such-rev" in line and "not a commit" in line
    assert not marker.exists()
    assert deploys(repo.path) == []


def test_deploy_without_an_action_or_a_command_says_so(repo: Repo) -> None:
    repo.commit("first")
    configure(repo, "[environments.staging]\ntimeout = 60\n")
    line = fails("deploy", "--env", "staging", cwd=repo.path)
    assert "no deploy action" in line and "andon.toml" in line
    line = fails("deploy", "--env", "production", "true", cwd=repo.path)  # forgot the --
    assert "put the command after --" in line
    assert deploys(repo.path) == []


def test_deploy_timeout_stops_the_whole_process_group(repo: Repo, scripts: Path, tmp_path: Path) -> None:
    """`timeout` in the config: the command and its grandchild (which ignores SIGTERM) are killed."""
    repo.commit("first")
    configure(repo, "[environments.staging]\ntimeout = 2\n")
    pids = tmp_path / "pids"
    try:
        result = andon("deploy", "--env", "staging", "--", sys.executable, scripts / "hang.py", pids,
                       cwd=repo.path)
        assert result.code == 124
        assert "ready" in result.out
        leader, grandchild = map(int, pids.read_text().split())
        assert wait_dead(leader)
        assert wait_dead(grandchild)
    finally:
        if pids.exists():
            for pid in map(int, pids.read_text().split()):
                kill_quietly(pid)
    [entry] = deploys(repo.path)
    assert (entry["status"], entry["exit_code"]) == ("interrupted", 124)
    assert entry["finished_at"]


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_deploy_stopped_by_a_signal_stops_the_group_and_records_interrupted(
    repo: Repo, scripts: Path, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    """CI cancelling a job (SIGTERM) or Ctrl-C: no orphaned deploy, an honest record."""
    repo.commit("first")
    pids = tmp_path / "pids"
    process = start("deploy", "--env", "staging", "--", sys.executable, scripts / "hang.py", pids,
                    cwd=repo.path)
    try:
        assert process.stdout is not None
        # Streamed: the line arrives while the command is still running.
        assert process.stdout.readline() == b"ready\n"
        process.send_signal(sig)
        result = finish(process)
        assert result.code == code, result.err
        leader, grandchild = map(int, pids.read_text().split())
        assert wait_dead(leader)
        assert wait_dead(grandchild)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if pids.exists():
            for pid in map(int, pids.read_text().split()):
                kill_quietly(pid)
    [entry] = deploys(repo.path)
    assert (entry["status"], entry["exit_code"]) == ("interrupted", code)


def test_deploy_whose_andon_was_killed_shows_as_running_while_its_command_runs_then_is_stopped_and_interrupted(
    repo: Repo, scripts: Path, tmp_path: Path
) -> None:
    """CI kills `andon deploy` with SIGKILL: its command (in its own process group) runs on.
    The log says `running` while it does, never `interrupted`; the next andon to look stops
    the orphaned group (the grandchild ignores SIGTERM: SIGKILL after the grace) and records
    the row interrupted, its output what the command printed (streamed into the log) and why."""
    repo.commit("first")
    pids = tmp_path / "pids"
    process = start("deploy", "--env", "staging", "--", sys.executable, scripts / "hang.py", pids,
                    cwd=repo.path)
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"ready\n"
        from backend.store import DeployLog

        log = DeployLog.open(repo.path / ".git" / "andon" / "deploys.db")
        try:
            deadline = time.monotonic() + 10
            while log.streamed(1).text != "ready\n":  # its output reaches the log as it comes
                assert time.monotonic() < deadline, log.streamed(1)
                time.sleep(0.05)
        finally:
            log.close()
        process.kill()
        process.wait()
        leader, grandchild = map(int, pids.read_text().split())
        assert not dead(leader) and not dead(grandchild)  # orphaned, still running
        log = DeployLog.open(repo.path / ".git" / "andon" / "deploys.db")
        try:
            assert log.get(1).status == "running"  # a reader that does not stop orphans (the dashboard)
        finally:
            log.close()
        [entry] = deploys(repo.path)  # andon log notices, stops the group, finishes the row
        assert entry["status"] == "interrupted"
        assert entry["finished_at"]
        assert wait_dead(leader) and wait_dead(grandchild)
        full = json.loads(ok("log", "--json", cwd=repo.path).out)["deploys"][0]
        assert full["status"] == "interrupted"
        status = json.loads(ok("status", "--json", cwd=repo.path).out)["environments"]
        assert status[0]["latest"]["status"] == "interrupted"
        log = DeployLog.open(repo.path / ".git" / "andon" / "deploys.db")
        try:
            output = log.get(1).output
            kinds = [event.kind for event in log.events()]
        finally:
            log.close()
        # What it streamed before the kill is kept, then what happened.
        assert output == (f"ready\n[andon: the andon running this deploy (pid {process.pid}) died; its command's "
                          f"process group {leader} was stopped]\n")
        assert kinds.count("deploy.finished") == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if pids.exists():  # the orphaned command, in its own process group
            for pid in map(int, pids.read_text().split()):
                kill_quietly(pid)


def test_deploy_keeps_going_when_its_output_reader_goes_away(repo: Repo, tmp_path: Path) -> None:
    """`andon deploy ... | head -1`: the deploy must finish, not hang on a full pipe and time out."""
    head = repo.commit("first")
    configure(repo, "[environments.staging]\ntimeout = 60\n")
    writer = "import sys\nfor i in range(200000): print('line', i, flush=True)\n"
    process = start("deploy", "--env", "staging", "--", sys.executable, "-c", writer, cwd=repo.path)
    assert process.stdout is not None and process.stderr is not None
    try:
        assert process.stdout.readline() == b"line 0\n"
        process.stdout.close()  # the reader is gone; more than a pipe's worth is still to come
        err = process.stderr.read().decode("utf-8", "replace")
        code = process.wait(timeout=RUN_LIMIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert err.splitlines() == [f"andon: deploy #1 of {head[:7]} to staging: succeeded (exit code 0)"]
    assert code == 0
    [entry] = deploys(repo.path)
    assert (entry["sha"], entry["status"], entry["exit_code"]) == (head, "succeeded", 0)


# -- the line and one deploy at a time (issue 8) ----------------------------------------------

# Says "ready", then waits until the file argv[1] exists, then exits 0.
GATE_SCRIPT = """\
import os, sys, time
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.02)
"""


def test_deploy_is_refused_while_the_line_is_stopped_and_force_is_recorded(repo: Repo, scripts: Path) -> None:
    head = repo.commit("first")
    configure(repo, f"[environments.staging]\ndeploy = {toml_list(sys.executable, str(scripts / 'args.py'), '{sha}')}\n")
    ok("stop", "--env", "staging", "--reason", "db migration \x1b[31mrunning", cwd=repo.path, env={"ANDON_USER": "alice"})
    line = fails("deploy", "--env", "staging", cwd=repo.path, code=5)
    assert re.fullmatch(r"andon: error: the line of staging is stopped by alice since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d "
                        r"UTC: db migration running; nothing was deployed \(andon resume --env staging, or --force "
                        r"--reason WHY in an emergency\)", line), line
    assert deploys(repo.path) == []
    assert "--force needs --reason" in fails("deploy", "--env", "staging", "--force", cwd=repo.path, code=2)
    result = ok("deploy", "--env", "staging", "--force", "--reason", "hotfix for the outage", cwd=repo.path,
                env={"ANDON_USER": "bob"})
    assert "ARGV" in result.out
    assert result.err.splitlines()[0].startswith("andon: deploy #1 was forced through the stopped line (stopped by "
                                                  "alice since ")
    [entry] = deploys(repo.path)
    assert (entry["sha"], entry["status"], entry["who"], entry["reason"]) == (head, "succeeded", "bob",
                                                                               "hotfix for the outage")
    from backend.store import DeployLog

    log = DeployLog.open(repo.path / ".git" / "andon" / "deploys.db")
    try:
        [forced] = [event for event in log.events() if event.kind == "deploy.forced"]
        assert (forced.who, forced.deploy_id) == ("bob", 1)
        assert json.loads(forced.detail) == {"reason": "hotfix for the outage", "stopped_by": "alice",
                                             "stopped_reason": "db migration running"}
        assert log.line("staging").stopped  # forcing is not resuming
    finally:
        log.close()


def test_a_second_deploy_waits_for_the_first_and_wait_1_gives_exit_6(repo: Repo, tmp_path: Path) -> None:
    repo.commit("first")
    (tmp_path / "gate.py").write_text(GATE_SCRIPT)
    gate = tmp_path / "open"
    configure(repo, f"[environments.staging]\ndeploy = {toml_list(sys.executable, str(tmp_path / 'gate.py'), str(gate))}\n")
    first = start("deploy", "--env", "staging", cwd=repo.path, env={"ANDON_USER": "alice"})
    second = None
    try:
        assert first.stdout is not None and first.stdout.readline() == b"ready\n"
        began = time.monotonic()
        result = andon("deploy", "--env", "staging", "--wait", "1", cwd=repo.path)
        assert result.code == 6 and 1 <= time.monotonic() - began < 30
        notice, line = result.err.splitlines()  # why it took a second, then why it gave up
        assert notice.startswith("andon: waiting for deploy #1 of ") and notice.endswith("to end, up to 1s")
        assert re.fullmatch(r"andon: error: deploy #1 of [0-9a-f]{7} to staging by alice \(started .* UTC\) is still "
                            r"running after 1s of waiting; nothing was deployed \(--wait SECONDS waits longer\)",
                            line), line
        second = start("deploy", "--env", "staging", cwd=repo.path)
        assert second.stderr is not None
        waiting = second.stderr.readline().decode()
        assert waiting.startswith("andon: waiting for deploy #1 of ") and waiting.endswith("to end, up to 300s\n")
        assert len(deploys(repo.path)) == 1  # waiting, not racing
        gate.touch()
        assert finish(first).code == 0
        assert second.wait(timeout=RUN_LIMIT) == 0
    finally:
        gate.touch()
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    newer, older = deploys(repo.path)
    assert (older["id"], newer["id"]) == (1, 2)
    assert newer["started_at"] >= older["finished_at"]  # one at a time
    assert [entry["status"] for entry in (older, newer)] == ["succeeded", "succeeded"]


@pytest.mark.parametrize("wait", ["-1", "soon", "nan", "inf"])
def test_deploy_wait_must_be_a_number_of_seconds(repo: Repo, wait: str) -> None:
    repo.commit("first")
    assert "--wait" in fails("deploy", "--env", "staging", f"--wait={wait}", "--", "true", cwd=repo.path, code=2)


def test_ctrl_c_while_waiting_for_another_deploy_deploys_nothing(repo: Repo, tmp_path: Path) -> None:
    repo.commit("first")
    (tmp_path / "gate.py").write_text(GATE_SCRIPT)
    gate = tmp_path / "open"
    configure(repo, f"[environments.staging]\ndeploy = {toml_list(sys.executable, str(tmp_path / 'gate.py'), str(gate))}\n")
    first = start("deploy", "--env", "staging", cwd=repo.path)
    second = None
    try:
        assert first.stdout is not None and first.stdout.readline() == b"ready\n"
        second = start("deploy", "--env", "staging", cwd=repo.path)
        assert second.stderr is not None and second.stderr.readline().startswith(b"andon: waiting for deploy #1")
        second.send_signal(signal.SIGINT)
        result = finish(second)
        assert result.code == 130
        assert result.err.splitlines() == ["andon: error: stopped by Ctrl-C while waiting; nothing was deployed"]
        assert len(deploys(repo.path)) == 1
    finally:
        gate.touch()
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


# -- record ----------------------------------------------------------------------------


def test_record_takes_who_from_andon_user(repo: Repo) -> None:
    head = repo.commit("first")
    result = ok("record", "--env", "production", "--sha", "HEAD", "--status", "succeeded", cwd=repo.path,
                env={"ANDON_USER": "ci-bot"})
    assert result.out.strip() == f"recorded deploy #1: {head[:7]} to production, succeeded"
    [entry] = deploys(repo.path)
    assert (entry["env"], entry["sha"], entry["status"], entry["who"]) == ("production", head, "succeeded", "ci-bot")
    assert (entry["trigger"], entry["prev_sha"]) == ("ci", None)


def test_record_takes_who_from_git_user_name_without_andon_user(repo: Repo) -> None:
    repo.commit("first")
    repo.git("config", "user.name", "Grace Hopper")
    ok("record", "--env", "production", "--sha", "HEAD", "--status", "failed", cwd=repo.path)
    assert deploys(repo.path)[0]["who"] == "Grace Hopper"


def test_record_by_wins_over_andon_user(repo: Repo) -> None:
    repo.commit("first")
    ok("record", "--env", "production", "--sha", "HEAD", "--status", "succeeded", "--by", "Ada",
       cwd=repo.path, env={"ANDON_USER": "ci-bot"})
    assert deploys(repo.path)[0]["who"] == "Ada"


def test_record_at_a_past_time_links_the_sha_live_before_that_time(repo: Repo) -> None:
    first = repo.commit("first")
    second = repo.commit("second")
    third = repo.commit("third")
    ok("record", "--env", "production", "--sha", first, "--status", "succeeded",
       "--at", "2026-01-01T00:00:00Z", cwd=repo.path)
    ok("record", "--env", "production", "--sha", third, "--status", "succeeded",
       "--at", "2026-01-03T00:00:00Z", cwd=repo.path)
    ok("record", "--env", "production", "--sha", second, "--status", "succeeded",
       "--at", "2026-01-02T03:04:05Z", cwd=repo.path)
    entries = deploys(repo.path)
    assert [entry["sha"] for entry in entries] == [third, second, first]  # by time, not by id
    past = entries[1]
    assert past["started_at"] == "2026-01-02T03:04:05.000000Z"
    assert past["prev_sha"] == first  # what was live then, not what is live now
    assert [commit["sha"] for commit in past["commits"]] == [second]


@pytest.mark.parametrize("args, code, mentions", [
    (["--sha", "HEAD", "--status", "great"], 2, "--status"),
    (["--sha", "HEAD", "--status", "succeeded", "--at", "yesterday"], 1, "yesterday"),
    (["--sha", "HEAD", "--status", "succeeded", "--at", "2026-13-01T00:00:00Z"], 1, "ISO-8601"),
    (["--sha", "no-such-rev", "--status", "succeeded"], 1, "no-such-rev"),
    (["--sha", "abc1234", "--status", "succeeded"], 1, "abc1234"),
], ids=["bad-status", "bad-at", "impossible-at", "unknown-rev", "unknown-short-sha"])
def test_record_refuses_bad_input_with_one_line_and_leaves_the_log_alone(
    repo: Repo, args: list[str], code: int, mentions: str
) -> None:
    repo.commit("first")
    ok("record", "--env", "production", "--sha", "HEAD", "--status", "succeeded", cwd=repo.path)
    before = deploys(repo.path)
    line = fails("record", "--env", "production", *args, cwd=repo.path, code=code)
    assert mentions in line
    assert deploys(repo.path) == before


def test_record_of_the_same_deploy_twice_is_refused(repo: Repo) -> None:
    repo.commit("first")
    args = ("record", "--env", "production", "--sha", "HEAD", "--status", "succeeded", "--at", "2026-01-02T03:04:05Z")
    ok(*args, cwd=repo.path)
    assert "already in the log" in fails(*args, cwd=repo.path)
    assert len(deploys(repo.path)) == 1


def test_record_accepts_a_full_sha_that_is_gone_with_a_warning(repo: Repo) -> None:
    repo.commit("first")
    result = ok("record", "--env", "production", "--sha", GONE.upper(), "--status", "succeeded", cwd=repo.path)
    assert result.err.lower().strip() == "andon: warning: abc1234 is not in this clone; recorded as given"
    [entry] = deploys(repo.path)
    assert entry["sha"] == GONE
    assert entry["commits_error"] == "commits unavailable: abc1234 is not in this clone"


# -- import ----------------------------------------------------------------------------


def jsonl(*items: Any) -> bytes:
    return "".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in items).encode()


def test_import_records_each_line_and_skips_them_the_second_time(repo: Repo) -> None:
    first = repo.commit("first")
    second = repo.commit("second")
    lines = jsonl(
        {"environment": "production", "sha": first[:7], "status": "succeeded",
         "time": "2025-06-01T10:00:00Z", "who": "alice"},
        {"environment": "production", "sha": second, "status": "failed",
         "time": "2025-06-02T10:00:00+02:00", "who": "bob"},
        "",
        {"environment": "staging", "sha": second, "status": "succeeded", "time": "2025-06-01T09:00:00Z"},
    )
    result = ok("import", cwd=repo.path, stdin=lines, env={"ANDON_USER": "importer"})
    assert result.out.strip() == "imported 3 deploys"
    entries = deploys(repo.path)
    assert [(e["env"], e["sha"], e["status"], e["who"], e["started_at"]) for e in entries] == [
        ("production", second, "failed", "bob", "2025-06-02T08:00:00.000000Z"),
        ("production", first, "succeeded", "alice", "2025-06-01T10:00:00.000000Z"),
        ("staging", second, "succeeded", "", "2025-06-01T09:00:00.000000Z"),
    ]
    assert entries[0]["prev_sha"] == first
    assert {e["trigger"] for e in entries} == {"import"}

    again = ok("import", cwd=repo.path, stdin=lines)
    assert again.out.strip() == "imported 0 deploys (3 already in the log)"
    assert deploys(repo.path) == entries


def test_import_of_ten_thousand_lines(repo: Repo) -> None:
    shas = [repo.commit(f"commit {n}") for n in range(5)]
    start = datetime(2025, 1, 1, tzinfo=UTC)
    items = [
        {"environment": ("production", "staging")[n % 2], "sha": shas[n % len(shas)],
         "status": "failed" if n % 7 == 0 else "succeeded",
         "time": (start + timedelta(minutes=n)).isoformat(), "who": "ci"}
        for n in range(10_000)
    ]
    result = ok("import", cwd=repo.path, stdin=jsonl(*items))
    assert result.out.strip() == "imported 10000 deploys"
    with sqlite3.connect(repo.path / ".git" / "andon" / "deploys.db") as conn:
        assert conn.execute("SELECT count(*) FROM deploys").fetchone()[0] == 10_000
    assert len(deploys(repo.path, "--env", "staging", "--limit", "10")) == 10


@pytest.mark.parametrize("bad, mentions", [
    ("{not json", "not JSON"),
    ('["a", "list"]', "JSON object"),
    ({"environment": "production", "status": "succeeded", "time": "2025-06-01T10:00:00Z"}, "missing sha"),
    ({"sha": "HEAD", "status": "succeeded", "time": "2025-06-01T10:00:00Z"}, "missing environment"),
    ({"environment": "production", "sha": "HEAD", "status": "green", "time": "2025-06-01T10:00:00Z"}, "green"),
    ({"environment": "production", "sha": "HEAD", "status": "succeeded", "time": "last tuesday"}, "last tuesday"),
    ({"environment": "production", "sha": "HEAD", "status": "succeeded", "time": 1717236000}, "time"),
    ({"environment": "production", "sha": "0000000", "status": "succeeded", "time": "2025-06-01T10:00:00Z"},
     "0000000"),
    ({"environment": "prod env!", "sha": "HEAD", "status": "succeeded", "time": "2025-06-01T10:00:00Z"},
     "prod env!"),
], ids=["not-json", "not-object", "no-sha", "no-env", "bad-status", "bad-time", "number-time",
        "unknown-short-sha", "bad-env"])
def test_import_refuses_a_bad_line_naming_it_and_imports_nothing(repo: Repo, bad: Any, mentions: str) -> None:
    head = repo.commit("first")
    ok("record", "--env", "production", "--sha", head, "--status", "succeeded", cwd=repo.path)
    good = {"environment": "production", "sha": head, "status": "succeeded", "time": "2025-06-01T09:00:00Z"}
    later = dict(good, time="2025-06-01T11:00:00Z")
    line = fails("import", cwd=repo.path, stdin=jsonl(good, later, bad, good))
    assert "line 3" in line and mentions in line and "nothing imported" in line
    assert len(deploys(repo.path)) == 1


def test_import_of_nothing_says_so(repo: Repo) -> None:
    repo.commit("first")
    line = fails("import", cwd=repo.path, stdin=b"\n  \n")
    assert "nothing to import" in line


# -- status and log --------------------------------------------------------------------


@pytest.fixture
def history(repo: Repo) -> dict[str, str]:
    """Three commits; staging has the first live, production has nothing yet."""
    shas = {
        "c1": repo.commit("add the thing", author="Alice Liddell", date="2025-03-01T10:00:00+00:00"),
        "c2": repo.commit("fix the thing", author="Bob Dobbs", date="2025-03-02T10:00:00+00:00"),
        "c3": repo.commit("polish the thing", author="Carol Danvers", date="2025-03-03T10:00:00+00:00"),
    }
    configure(repo, "[environments.staging]\n[environments.production]\n")
    ok("record", "--env", "staging", "--sha", shas["c1"], "--status", "succeeded", "--by", "alice",
       "--at", "2025-03-01T12:00:00Z", cwd=repo.path)
    return shas


def test_status_human_output(repo: Repo, history: dict[str, str]) -> None:
    out = ok("status", cwd=repo.path).out
    assert out.splitlines() == [
        "staging:",
        f"  live     {history['c1'][:7]}  deployed 2025-03-01 12:00 by alice (#1)",
        "  pending  2 commits on main",
        f"           {history['c3'][:7]}  polish the thing",
        f"           {history['c2'][:7]}  fix the thing",
        "production:",
        "  live     nothing deployed yet",
        "  pending  3 commits on main",
        f"           {history['c3'][:7]}  polish the thing",
        f"           {history['c2'][:7]}  fix the thing",
        f"           {history['c1'][:7]}  add the thing",
    ]


def test_status_json_is_one_document(repo: Repo, history: dict[str, str]) -> None:
    data = json.loads(ok("status", "--json", cwd=repo.path).out)
    staging, production = data["environments"]
    assert (staging["env"], staging["branch"]) == ("staging", "main")
    assert staging["live"]["sha"] == history["c1"] and staging["live"]["who"] == "alice"
    assert staging["latest"] == staging["live"]
    assert staging["pending_count"] == 2
    assert [c["sha"] for c in staging["pending"]] == [history["c3"], history["c2"]]
    assert production["live"] is None and production["latest"] is None and production["pending_count"] == 3
    # A failed deploy is the latest but not live, and leaves the pending commits pending.
    ok("record", "--env", "staging", "--sha", history["c3"], "--status", "failed", cwd=repo.path)
    staging = json.loads(ok("status", "--json", cwd=repo.path).out)["environments"][0]
    assert staging["live"]["sha"] == history["c1"]
    assert (staging["latest"]["sha"], staging["latest"]["status"]) == (history["c3"], "failed")
    assert staging["pending_count"] == 2


def test_log_human_output_lists_each_deploys_commits(repo: Repo, history: dict[str, str]) -> None:
    ok("record", "--env", "staging", "--sha", history["c3"], "--status", "succeeded", "--by", "bob",
       "--at", "2025-03-03T12:00:00Z", "--reason", "weekly", cwd=repo.path)
    lines = ok("log", cwd=repo.path).out.splitlines()
    assert lines[0].split() == ["#2", "2025-03-03", "12:00", "staging", history["c3"][:7], "succeeded", "bob",
                                "2", "commits"]
    assert lines[1].strip() == "reason: weekly"
    assert lines[2].split() == [history["c3"][:7], "Carol", "Danvers", "polish", "the", "thing"]
    assert lines[3].split() == [history["c2"][:7], "Bob", "Dobbs", "fix", "the", "thing"]
    assert lines[4].split()[:2] == ["#1", "2025-03-01"] and lines[4].endswith("1 commit")
    assert lines[5].split() == [history["c1"][:7], "Alice", "Liddell", "add", "the", "thing"]
    assert len(lines) == 6


def test_log_json_carries_each_deploys_commits(repo: Repo, history: dict[str, str]) -> None:
    ok("record", "--env", "staging", "--sha", history["c3"], "--status", "succeeded",
       "--at", "2025-03-03T12:00:00Z", cwd=repo.path)
    ok("record", "--env", "production", "--sha", history["c2"], "--status", "failed",
       "--at", "2025-03-04T12:00:00Z", cwd=repo.path)
    entries = deploys(repo.path)
    assert [(e["id"], e["env"]) for e in entries] == [(3, "production"), (2, "staging"), (1, "staging")]
    assert entries[1]["commits"] == [
        {"sha": history["c3"], "author": "Carol Danvers", "date": "2025-03-03T10:00:00+00:00",
         "subject": "polish the thing"},
        {"sha": history["c2"], "author": "Bob Dobbs", "date": "2025-03-02T10:00:00+00:00",
         "subject": "fix the thing"},
    ]
    assert entries[1]["commits_error"] is None and entries[1]["prev_sha"] == history["c1"]
    assert entries[2]["first_deploy"] is True and [c["sha"] for c in entries[2]["commits"]] == [history["c1"]]

    assert [e["id"] for e in deploys(repo.path, "--env", "staging")] == [2, 1]
    assert [e["id"] for e in deploys(repo.path, "--limit", "1")] == [3]
    assert [e["id"] for e in deploys(repo.path, "--env", "staging", "--limit", "1")] == [2]
    assert deploys(repo.path, "--env", "qa") == []
    assert ok("log", "--env", "qa", cwd=repo.path).out == "no deploys yet to qa\n"


@pytest.mark.parametrize("limit", ["0", "-3", "x"])
def test_log_limit_must_be_a_positive_number(repo: Repo, limit: str) -> None:
    repo.commit("first")
    line = fails("log", "--limit", limit, cwd=repo.path, code=2)
    assert "--limit" in line


def test_untrusted_commit_text_is_shown_literally_and_never_reaches_the_terminal(
    repo: Repo, tmp_path: Path
) -> None:
    """Markup-like subjects, escape sequences, invalid UTF-8 and huge bodies: plain text, no ESC."""
    base = repo.commit("base")
    repo.commit("fix [/] parsing")
    repo.commit("[bold red]hello", author="Mal\x1b[31mlory \x1b]0;pwned\x07Jones")

    def commit_raw(message: bytes) -> None:
        msgfile = tmp_path / "msg"
        msgfile.write_bytes(message)
        (repo.path / "file.txt").write_bytes(message)
        repo.git("add", "file.txt")
        repo.git("commit", "--quiet", "-F", str(msgfile))

    commit_raw(b"\x1b[31mred\x1b[0m\n")
    commit_raw(b"bad \xff byte\n")
    commit_raw(b"long body\n\n" + b"".join(b"body line %d\n" % n for n in range(10_000)))
    configure(repo, "[environments.production]\n[environments.staging]\n")
    ok("record", "--env", "production", "--sha", base, "--status", "succeeded", "--at", "2025-01-01T00:00:00Z",
       cwd=repo.path)
    ok("record", "--env", "production", "--sha", "HEAD", "--status", "succeeded", cwd=repo.path)

    human = ok("log", cwd=repo.path)
    assert b"\x1b" not in human.raw
    for text in ("fix [/] parsing", "[bold red]hello", "Mallory Jones", " red\n", "long body"):
        assert text in human.out
    assert re.search(r" bad . byte\n", human.out)
    assert "body line" not in human.out

    data = ok("log", "--json", cwd=repo.path)
    assert b"\x1b" not in data.raw
    commits = json.loads(data.out)["deploys"][0]["commits"]
    subjects = [commit["subject"] for commit in commits]
    assert subjects[:3] == ["long body", subjects[1], "red"]
    assert re.fullmatch(r"bad . byte", subjects[1])
    assert subjects[3:] == ["[bold red]hello", "fix [/] parsing"]
    assert commits[3]["author"] == "Mallory Jones"
    assert not any("\x1b" in value for commit in commits for value in commit.values())

    # Nothing is live in staging: every commit is pending there.
    status = ok("status", cwd=repo.path)
    assert b"\x1b" not in status.raw
    assert "[bold red]hello" in status.out and "fix [/] parsing" in status.out
    pending = json.loads(ok("status", "--json", cwd=repo.path).out)["environments"][1]["pending"]
    assert [commit["subject"] for commit in pending][3:5] == ["[bold red]hello", "fix [/] parsing"]
    assert not any("\x1b" in value for commit in pending for value in commit.values())


def test_log_survives_a_stdout_that_cannot_encode_the_text(repo: Repo) -> None:
    """A non-UTF-8 terminal or pipe: characters degrade, andon does not crash."""
    repo.commit("caf\u00e9 \u2603 \ufffd")
    configure(repo, "[environments.production]\n[environments.staging]\n")
    ok("record", "--env", "production", "--sha", "HEAD", "--status", "succeeded", cwd=repo.path)
    ascii_only = {"PYTHONIOENCODING": "ascii"}
    human = ok("log", cwd=repo.path, env=ascii_only)
    assert "caf? ? ?\n" in human.out
    data = ok("log", "--json", cwd=repo.path, env=ascii_only)
    assert json.loads(data.out)["deploys"][0]["commits"][0]["subject"] == "caf\u00e9 \u2603 \ufffd"
    assert "caf? ? ?\n" in ok("status", cwd=repo.path, env=ascii_only).out  # pending in staging


def test_a_deploy_whose_sha_is_gone_says_its_commits_are_unavailable(repo: Repo) -> None:
    repo.commit("first")
    configure(repo, "[environments.production]\n")
    ok("record", "--env", "production", "--sha", GONE, "--status", "succeeded", cwd=repo.path)
    out = ok("log", cwd=repo.path).out
    assert "commits unavailable: abc1234 is not in this clone" in out
    [entry] = deploys(repo.path)
    assert entry["commits"] == [] and entry["commits_error"] == "commits unavailable: abc1234 is not in this clone"
    status = ok("status", cwd=repo.path).out
    assert "live     abc1234" in status
    assert "abc1234 is not in this clone" in status


def test_log_output_to_a_closed_pipe_is_not_an_error(repo: Repo) -> None:
    """`andon log | head -1`"""
    head = repo.commit("first")
    items = [{"environment": "production", "sha": head, "status": "succeeded",
              "time": f"2025-01-01T{n // 60:02d}:{n % 60:02d}:00Z"} for n in range(1000)]
    ok("import", cwd=repo.path, stdin=jsonl(*items))
    process = start("log", cwd=repo.path)
    assert process.stdout is not None and process.stderr is not None
    try:
        assert process.stdout.readline().startswith(b"#1000 ")
        process.stdout.close()
        err = process.stderr.read().decode("utf-8", "replace")
        code = process.wait(timeout=RUN_LIMIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in err and "Exception" not in err, err
    assert code == 0


def test_an_empty_repository_gives_plain_answers(tmp_path: Path) -> None:
    empty = Repo(tmp_path / "empty")
    assert ok("status", cwd=empty.path).out.startswith("no environments yet")
    configure(empty, "[environments.staging]\ndeploy = [\"true\"]\n")
    status = ok("status", cwd=empty.path).out
    assert "staging:\n" in status and "the deploy branch has no commits yet" in status
    assert json.loads(ok("status", "--json", cwd=empty.path).out)["environments"][0]["pending_count"] is None
    assert ok("log", cwd=empty.path).out == "no deploys yet\n"
    assert deploys(empty.path) == []
    assert "HEAD" in fails("deploy", "--env", "staging", cwd=empty.path)
    assert "HEAD" in fails("record", "--env", "staging", "--sha", "HEAD", "--status", "succeeded", cwd=empty.path)
    assert deploys(empty.path) == []


def test_outside_a_repository_answers_plainly(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    env = {"GIT_CEILING_DIRECTORIES": str(tmp_path)}
    # The dashboard finds its world in a thread while Textual loads: the same one line.
    for command in (["log"], ["status"], ["log", "--json"], ["dashboard"], []):
        assert "not inside a git repository" in fails(*command, cwd=plain, env=env)
        assert "not inside a git repository" in fails("--repo", plain, *command, cwd=tmp_path, env=env)
    assert "no such directory" in fails("log", "--repo", tmp_path / "missing", cwd=tmp_path, env=env)

    # With a deploy log named, andon works; commits are unavailable.
    db = tmp_path / "deploys.db"
    # Reading a log that is not there is an error (a typo must not show an empty history)...
    assert "no such file" in fails("log", "--db", db, cwd=plain, env=env)
    assert not db.exists()
    assert "HEAD" in fails("record", "--db", db, "--env", "production", "--sha", "HEAD", "--status",
                           "succeeded", cwd=plain, env=env)
    recorded = ok("record", "--db", db, "--env", "production", "--sha", GONE, "--status", "succeeded",
                  cwd=plain, env=env)
    assert "warning" in recorded.err
    out = ok("log", "--db", db, cwd=plain, env=env).out
    assert "commits unavailable: not in a git repository" in out
    assert "abc1234" in ok("status", "--db", db, cwd=plain, env=env).out
    [entry] = deploys(plain, "--db", db, env=env)
    assert entry["sha"] == GONE and entry["commits_error"] == "commits unavailable: not in a git repository"


# -- configuration errors --------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("[environments.staging]\ndeploy = [\"true\"]\ncolour = \"red\"\n",
     "andon.toml:3: environments.staging.colour is not a known key"),
    ("branch = \"main\"\nbogus = 1\n", "andon.toml:2: bogus is not a known key"),
    ("[environments.staging]\ntimeout = \"ten\"\n",
     "andon.toml:2: environments.staging.timeout must be a positive number of seconds"),
    ("[environments.staging]\ndeploy = \"./deploy.sh {sha}\"\n",
     "andon.toml:2: environments.staging.deploy must be a command like [\"./deploy.sh\", \"{sha}\"] or a request"),
    ("[environments.staging]\ndeploy = [\"true\"]\ntimeout = \n", "andon.toml:3: invalid TOML"),
    ("[environments.staging\n", "andon.toml:1: invalid TOML"),
], ids=["unknown-env-key", "unknown-top-key", "wrong-type", "command-as-string", "syntax", "unclosed-table"])
@pytest.mark.parametrize("command", [["status"], ["log", "--json"],
                                     ["record", "--env", "staging", "--sha", "HEAD", "--status", "failed"]])
def test_a_bad_config_is_one_line_naming_the_file_and_line(
    repo: Repo, text: str, expected: str, command: list[str]
) -> None:
    repo.commit("first")
    configure(repo, text)
    line = fails(*command, cwd=repo.path)
    assert line.startswith(f"andon: error: {expected}")
    assert not (repo.path / ".git" / "andon" / "deploys.db").exists()


def test_config_option_names_the_file_to_use(repo: Repo, scripts: Path, tmp_path: Path) -> None:
    head = repo.commit("first")
    missing = tmp_path / "nowhere" / "andon.toml"
    line = fails("--config", missing, "status", cwd=repo.path)
    assert line == f"andon: error: {missing}: no such configuration file"
    assert str(missing) in fails("deploy", "--config", missing, "--env", "staging", cwd=repo.path)

    other = tmp_path / "ci.toml"
    other.write_text("[environments.qa]\n"
                     f"deploy = {toml_list(sys.executable, str(scripts / 'args.py'), '{env}:{sha}')}\n")
    configure(repo, "bogus = true\n")  # ignored: --config wins
    assert shown(ok("deploy", "--config", other, "--env", "qa", cwd=repo.path).out, "ARGV") == [f"qa:{head}"]
    assert json.loads(ok("--config", other, "status", "--json", cwd=repo.path).out)["environments"][0]["env"] == "qa"


# -- the deploy log file ---------------------------------------------------------------


def _real_log(repo: Repo, tmp_path: Path) -> Path:
    db = tmp_path / "real.db"
    ok("record", "--db", db, "--env", "production", "--sha", repo.head(), "--status", "succeeded", cwd=repo.path)
    ok("record", "--db", db, "--env", "staging", "--sha", repo.head(), "--status", "failed", cwd=repo.path)
    return db


def _not_sqlite(repo: Repo, tmp_path: Path) -> Path:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n")
    return path


def _garbage_after_header(repo: Repo, tmp_path: Path) -> Path:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)
    return path


def _corrupt_pages(repo: Repo, tmp_path: Path) -> Path:
    db = _real_log(repo, tmp_path)
    data = bytearray(db.read_bytes())
    data[100:] = b"\xa5" * (len(data) - 100)  # keep the 100-byte header, wreck every page
    db.write_bytes(bytes(data))
    return db


def _newer(repo: Repo, tmp_path: Path) -> Path:
    db = _real_log(repo, tmp_path)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE andon_meta SET value = '99' WHERE key = 'writer_min_schema'")  # a breaking change
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    return db


def _someone_elses(repo: Repo, tmp_path: Path) -> Path:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()
    return db


@pytest.mark.parametrize("make, mentions", [
    (_not_sqlite, "not an SQLite database"),
    (_garbage_after_header, "corrupt"),
    (_corrupt_pages, "corrupt"),
    (_newer, "upgrade andon"),
    (_someone_elses, "not an andon deploy log"),
], ids=["not-sqlite", "garbage", "corrupt-pages", "newer", "someone-elses"])
@pytest.mark.parametrize("command", [
    ["log"], ["status", "--json"],
    ["record", "--env", "production", "--sha", "HEAD", "--status", "succeeded"],
    ["import"],
    ["dashboard"],  # refused before any screen is drawn
])
def test_a_bad_deploy_log_is_refused_in_one_line_and_left_untouched(
    repo: Repo, tmp_path: Path, make: Any, mentions: str, command: list[str]
) -> None:
    head = repo.commit("first")
    db = make(repo, tmp_path)
    before = db.read_bytes()
    stdin = jsonl({"environment": "production", "sha": head, "status": "succeeded", "time": "2025-01-01T00:00:00Z"})
    line = fails(*command, "--db", db, cwd=repo.path, stdin=stdin)
    assert str(db) in line and mentions in line
    assert db.read_bytes() == before


def test_a_deploy_log_in_a_missing_directory_is_refused(repo: Repo, tmp_path: Path) -> None:
    repo.commit("first")
    db = tmp_path / "no" / "such" / "dir" / "deploys.db"
    assert "no such file" in fails("log", "--db", db, cwd=repo.path)
    assert "does not exist" in fails("record", "--env", "production", "--sha", "HEAD", "--status", "succeeded",
                                     "--db", db, cwd=repo.path)
    assert not (tmp_path / "no").exists()


def test_the_default_deploy_log_lives_inside_the_git_directory(repo: Repo, tmp_path: Path) -> None:
    head = repo.commit("first")
    (repo.path / "sub").mkdir()
    ok("record", "--env", "production", "--sha", head, "--status", "succeeded", cwd=repo.path / "sub")
    assert (repo.path / ".git" / "andon" / "deploys.db").is_file()
    assert sorted(path.name for path in repo.path.iterdir()) == [".git", "file.txt", "sub"]
    # The same log from the root, and through --repo from elsewhere.
    assert deploys(repo.path)[0]["sha"] == head
    assert deploys(tmp_path, "--repo", repo.path)[0]["sha"] == head


def test_andon_db_names_the_deploy_log_and_db_option_wins(repo: Repo, tmp_path: Path) -> None:
    head = repo.commit("first")
    from_env = tmp_path / "from-env.db"
    env = {"ANDON_DB": str(from_env)}
    ok("record", "--env", "production", "--sha", head, "--status", "succeeded", cwd=repo.path, env=env)
    assert from_env.is_file()
    assert not (repo.path / ".git" / "andon" / "deploys.db").exists()
    assert len(deploys(repo.path, env=env)) == 1
    assert deploys(repo.path) == []  # without ANDON_DB: the default log, still empty

    option = tmp_path / "option.db"
    ok("record", "--db", option, "--env", "staging", "--sha", head, "--status", "failed", cwd=repo.path, env=env)
    assert [e["env"] for e in deploys(repo.path, "--db", option, env=env)] == ["staging"]
    assert [e["env"] for e in deploys(repo.path, env=env)] == ["production"]


def test_import_accepts_a_byte_order_mark(repo: Repo) -> None:
    sha = repo.commit("one")
    line = json.dumps({"environment": "prod", "sha": sha, "status": "succeeded",
                       "time": "2026-01-02T03:04:05Z", "who": "ci"})
    result = ok("import", cwd=repo.path, stdin=("\ufeff" + line + "\n").encode())
    assert result.out.strip() == "imported 1 deploys"


def test_repo_option_naming_a_plain_directory_says_so(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    line = fails("status", "--repo", plain, cwd=tmp_path)
    assert line == f"andon: error: --repo {plain}: {plain} is not inside a git repository"


def test_a_bare_repository_is_named_as_such(tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    line = fails("status", "--repo", bare, cwd=tmp_path)
    assert "is a bare repository" in line
    assert "is a bare repository" in fails("--repo", bare, cwd=tmp_path)


def test_a_misspelled_deploy_branch_is_named_in_status(repo: Repo) -> None:
    head = repo.commit("first")
    (repo.path / "andon.toml").write_text('branch = "mian"\n')
    ok("record", "--env", "production", "--sha", head, "--status", "succeeded", cwd=repo.path)
    [env] = json.loads(ok("status", "--json", cwd=repo.path).out)["environments"]
    assert "'mian' is not in this clone" in env["pending_error"]


def test_demo_removes_its_world_when_its_terminal_goes_away(tmp_path: Path) -> None:
    """`andon demo` in a real pseudo-terminal: the dashboard opens; SIGHUP leaves nothing behind."""
    import pty
    import select
    import time

    temp = tmp_path / "tmp"
    temp.mkdir()
    pid, fd = pty.fork()
    if pid == 0:  # the child: andon demo on the pseudo-terminal
        os.environ.update(TMPDIR=str(temp), TERM="xterm-256color")
        os.execv(sys.executable, _argv(("demo",)))
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while b"Deploys to" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(fd, 65536)
                except OSError:
                    break
        assert b"Deploys to" in seen  # the dashboard is on the screen
        assert [p.name for p in temp.iterdir() if p.name.startswith("andon-demo-")]
        os.kill(pid, signal.SIGHUP)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert not [p for p in temp.iterdir() if p.name.startswith("andon-demo-")]
    assert os.waitstatus_to_exitcode(status) != 0  # it was stopped, not finished


def test_a_deleted_current_directory_is_one_line(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    # The shell's directory removed under it: andon starts in a directory that no longer exists.
    andon_script = Path(sys.executable).parent / "andon"  # the console script: `python -m` needs a cwd
    script = 'cd "$1" && rmdir "$1" && shift && exec "$@"'
    for command in (["log"], ["status"], []):
        done = subprocess.run(["sh", "-c", script, "sh", str(gone), str(andon_script), *command],
                              capture_output=True, text=True, env=_env(None), timeout=RUN_LIMIT)
        gone.mkdir()
        assert done.returncode == 1, (command, done.stderr)
        assert done.stderr == ("andon: error: the current directory no longer exists: cd to a clone, "
                               "or use --repo\n"), command


def test_a_damaged_row_is_named_on_stderr_and_everything_else_is_shown(repo: Repo, history: dict[str, str]) -> None:
    ok("record", "--env", "staging", "--sha", history["c2"], "--status", "succeeded",
       "--at", "2025-03-02T12:00:00Z", cwd=repo.path)
    conn = sqlite3.connect(repo.path / ".git" / "andon" / "deploys.db")
    conn.execute("DROP TRIGGER deploys_finish_once")  # another program may do anything
    conn.execute("UPDATE deploys SET started_at = 'yesterday' WHERE id = 2")
    conn.commit()
    conn.close()
    warning = "andon: warning: deploy #2 is damaged: started_at 'yesterday' is not a time"
    for args in (["log"], ["log", "--json"], ["status"], ["status", "--json"]):
        result = ok(*args, cwd=repo.path)
        assert result.err.splitlines() == [warning], args
    text = ok("log", cwd=repo.path).out.splitlines()
    assert text[0].split()[:3] == ["#2", "yesterday", "staging"] and "damaged" in text[0]
    entries = deploys(repo.path)
    assert [(e["id"], e["damaged"]) for e in entries] == [(2, warning.removeprefix("andon: warning: ")), (1, None)]


def test_log_json_is_written_in_pieces_as_the_log_is_read(repo: Repo, tmp_path: Path) -> None:
    from backend.report import iter_log_json, log_entries
    from backend.store.deploys import READ_CHUNK
    from backend.world import resolve_world

    head = repo.commit("first")
    rows = b"".join(jsonl({"environment": "production", "sha": head, "status": "succeeded",
                           "time": f"2025-01-01T{n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"})
                    for n in range(READ_CHUNK * 2 + 7))
    ok("import", cwd=repo.path, stdin=rows)
    world = resolve_world(repo.path, None, None)
    try:
        pieces = list(iter_log_json(world))
        assert len(pieces) == 2 + 3  # the opening, three chunks of deploys, the closing
        assert json.loads("".join(pieces)) == {"deploys": log_entries(world)}
    finally:
        world.close()


def test_recording_an_older_deploy_keeps_the_range_of_the_deploy_after_it(repo: Repo, history: dict[str, str]) -> None:
    ok("record", "--env", "staging", "--sha", history["c3"], "--status", "succeeded",
       "--at", "2025-03-03T12:00:00Z", cwd=repo.path)
    ok("record", "--env", "staging", "--sha", history["c2"], "--status", "succeeded",
       "--at", "2025-03-02T12:00:00Z", cwd=repo.path)
    conn = sqlite3.connect(repo.path / ".git" / "andon" / "deploys.db")
    kept = {(prev, sha) for prev, sha in conn.execute("SELECT prev_sha, sha FROM ranges")}
    conn.close()
    # c2..c3 is the newest deploy's range now, and it was worked out when c2 was recorded.
    assert (history["c2"], history["c3"]) in kept
    newest = deploys(repo.path)[0]
    assert (newest["prev_sha"], [c["sha"] for c in newest["commits"]]) == (history["c2"], [history["c3"]])
