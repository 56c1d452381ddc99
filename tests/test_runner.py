"""Running deploy commands: real subprocesses, process groups, bounded and neutralised output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import backend.runner as runner_module
from backend import AndonError
from backend.processes import alive
from backend.runner import TIMEOUT_EXIT, BoundedOutput, RunError, Runner, RunResult, substitute

PY = sys.executable


def script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / name
    path.write_text(body)
    return [PY, str(path)]


def process_gone(pid: int, within: float = 15.0) -> bool:
    """Whether ``pid`` dies within ``within`` seconds (a kill is delivered asynchronously)."""
    deadline = time.monotonic() + within
    while not _dead(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _dead(pid: int) -> bool:
    """No such process, or a zombie nobody reaped yet (PID 1 may not reap orphans)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
        return state in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, read from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def group_gone(pgid: int, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def leftover_groups() -> Iterator[list[int]]:
    """Process groups a test started; killed afterwards so nothing outlives the test."""
    groups: list[int] = []
    yield groups
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Pids a test started indirectly; killed afterwards so nothing outlives the test."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run_in_thread(target: Callable[[], RunResult], limit: float = 60.0) -> RunResult:
    """Run ``target`` in a thread; a hang fails the test instead of hanging the suite."""
    box: list[RunResult | BaseException] = []

    def work() -> None:
        try:
            box.append(target())
        except BaseException as error:  # noqa: BLE001 - re-raised below
            box.append(error)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), "run() did not return"
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


# -- output and exit codes -----------------------------------------------------------------


def test_output_is_streamed_to_on_output_and_kept(tmp_path: Path) -> None:
    argv = script(tmp_path, "talk.py", "import sys\nprint('one', flush=True)\n"
                                      "print('two', file=sys.stderr, flush=True)\nprint('three')\n")
    seen: list[str] = []
    result = Runner().run(argv, on_output=seen.append)
    assert result == RunResult(0, "one\ntwo\nthree\n", None)
    assert "".join(seen) == "one\ntwo\nthree\n"


@pytest.mark.parametrize("code", [1, 3, 42])
def test_exit_code_is_passed_through(tmp_path: Path, code: int) -> None:
    result = Runner().run([PY, "-c", f"import sys; print('bye'); sys.exit({code})"])
    assert result.exit_code == code and result.stopped is None and result.output == "bye\n"


def test_a_command_killed_by_a_signal_exits_128_plus_the_signal() -> None:
    result = Runner().run([PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    assert result.exit_code == 128 + signal.SIGKILL and result.stopped is None


def test_cwd_and_env_are_given_to_the_command(tmp_path: Path) -> None:
    result = Runner().run([PY, "-c", "import os; print(os.getcwd()); print(os.environ['ANDON_TEST'])"],
                          cwd=tmp_path, env={**os.environ, "ANDON_TEST": "value with spaces"})
    assert result.output.splitlines() == [str(tmp_path), "value with spaces"]


def test_stdin_is_closed_so_a_prompt_cannot_wait_for_ever() -> None:
    result = Runner().run([PY, "-c", "import sys; print(repr(sys.stdin.read()))"])
    assert result.output == "''\n"


# -- arguments --------------------------------------------------------------------------------


def test_substitute_replaces_placeholders_inside_each_argument() -> None:
    assert substitute(["deploy", "{sha}", "--env={env}", "{other}"], {"sha": "abc", "env": "prod"}) == [
        "deploy", "abc", "--env=prod", "{other}"
    ]


def test_arguments_never_go_through_a_shell(tmp_path: Path) -> None:
    argv = substitute(
        [PY, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", "{sha}", "a b; touch pwned",
         "--at={sha}", "$(touch pwned2)"],
        {"sha": "has spaces; touch pwned3"},
    )
    result = Runner().run(argv, cwd=tmp_path)
    assert json.loads(result.output) == [
        "has spaces; touch pwned3", "a b; touch pwned", "--at=has spaces; touch pwned3", "$(touch pwned2)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -- commands that cannot run -------------------------------------------------------------------


def test_a_command_that_does_not_exist_is_one_line() -> None:
    with pytest.raises(RunError) as caught:
        Runner().run(["andon-no-such-command-here", "x"])
    assert str(caught.value) == "cannot run 'andon-no-such-command-here': no such file or command"
    assert isinstance(caught.value, AndonError)


def test_a_file_that_is_not_executable_is_one_line(tmp_path: Path) -> None:
    plain = tmp_path / "deploy.sh"
    plain.write_text("#!/bin/sh\necho hi\n")
    plain.chmod(0o644)
    with pytest.raises(RunError) as caught:
        Runner().run([str(plain)])
    assert "permission denied" in str(caught.value) and "\n" not in str(caught.value)


def test_an_empty_command_is_one_line() -> None:
    with pytest.raises(RunError) as caught:
        Runner().run([])
    assert str(caught.value) == "no command to run"


# -- stopping ------------------------------------------------------------------------------------

FAMILY = """\
import signal, subprocess, sys, time
# A grandchild that ignores SIGTERM: only a SIGKILL to the whole group stops it.
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
open(sys.argv[1], "w").write(str(child.pid))
print("ready", flush=True)
time.sleep(120)
"""


def test_timeout_stops_the_whole_process_group_including_grandchildren(
    tmp_path: Path, leftovers: list[int]
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    argv = script(tmp_path, "family.py", FAMILY) + [str(pidfile)]
    result = run_in_thread(lambda: Runner().run(argv, timeout=3))
    grandchild = int(pidfile.read_text())
    leftovers.append(grandchild)
    assert result.exit_code == TIMEOUT_EXIT == 124
    assert result.stopped == "timeout"
    assert "ready" in result.output
    assert process_gone(grandchild)


def test_stop_from_another_thread_stops_the_command(tmp_path: Path, leftovers: list[int]) -> None:
    pidfile = tmp_path / "grandchild.pid"
    argv = script(tmp_path, "family.py", FAMILY) + [str(pidfile)]
    runner = Runner()
    ready = threading.Event()

    def on_output(text: str) -> None:
        if "ready" in text:
            ready.set()

    def stopper() -> None:
        assert ready.wait(60)
        runner.stop("SIGTERM")

    threading.Thread(target=stopper, daemon=True).start()
    result = run_in_thread(lambda: runner.run(argv, on_output=on_output))
    grandchild = int(pidfile.read_text())
    leftovers.append(grandchild)
    assert result.stopped == "SIGTERM"
    assert result.exit_code == 128 + signal.SIGTERM
    assert process_gone(grandchild)


def test_a_command_ignoring_sigterm_is_killed_after_the_grace_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "STOP_GRACE", 0.5)
    argv = script(tmp_path, "stubborn.py", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                           "print('ready', flush=True)\ntime.sleep(120)\n")
    runner = Runner()
    ready = threading.Event()
    threading.Thread(target=lambda: ready.wait(60) and runner.stop("SIGINT"), daemon=True).start()
    result = run_in_thread(lambda: runner.run(argv, on_output=lambda text: ready.set()))
    assert result.stopped == "SIGINT"
    assert result.exit_code == 128 + signal.SIGINT


def test_a_stop_landing_while_the_command_is_being_started_still_ends_in_sigkill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leftover_groups: list[int]
) -> None:
    """Ctrl-C just after Popen, before run() has taken note of the process: a command that
    ignores SIGTERM must still be killed after the grace, not left running for ever."""
    monkeypatch.setattr(runner_module, "STOP_GRACE", 0.5)
    ready = tmp_path / "ready"
    runner = Runner()
    real_popen = subprocess.Popen

    def popen_then_stop(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        process: subprocess.Popen[bytes] = real_popen(*args, **kwargs)
        leftover_groups.append(process.pid)  # its own session: the pid is the group's id
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline:  # SIGTERM is ignored from now on
            time.sleep(0.01)
        runner.stop("SIGINT")  # the stop lands before Popen has even returned
        return process

    monkeypatch.setattr(runner_module.subprocess, "Popen", popen_then_stop)
    result = run_in_thread(lambda: runner.run(["sh", "-c", f'trap "" TERM; : > {ready}; sleep 60']), limit=10)
    assert result.stopped == "SIGINT" and result.exit_code == 128 + signal.SIGINT
    assert group_gone(leftover_groups[0], within=1)


def test_a_stop_before_the_command_starts_means_it_never_starts(tmp_path: Path) -> None:
    # Ctrl-C between "deploy recorded" and "command started" must not be lost.
    marker = tmp_path / "ran"
    runner = Runner()
    runner.stop("SIGTERM")
    result = runner.run([PY, "-c", f"open({str(marker)!r}, 'w')"])
    assert result == RunResult(128 + signal.SIGTERM, "", "SIGTERM")
    assert not marker.exists()


def test_a_background_grandchild_holding_the_pipe_does_not_hang_run(
    tmp_path: Path, leftovers: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "DRAIN_AFTER_EXIT", 0.5)
    pidfile = tmp_path / "background.pid"
    argv = script(tmp_path, "detach.py",
                  "import subprocess, sys\n"
                  "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
                  "open(sys.argv[1], 'w').write(str(child.pid))\n"
                  "print('started the background job', flush=True)\n") + [str(pidfile)]
    result = run_in_thread(lambda: Runner().run(argv))
    leftovers.append(int(pidfile.read_text()))
    assert result.exit_code == 0 and result.stopped is None
    assert result.output == "started the background job\n"


def test_the_output_thread_ends_and_the_pipe_is_closed_when_run_returns(
    tmp_path: Path, leftovers: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A background job keeps the pipe open after the command exits: run() must not leave
    its reader blocked on it for ever, and must keep what came before the exit."""
    monkeypatch.setattr(runner_module, "DRAIN_AFTER_EXIT", 0.3)
    pidfile = tmp_path / "background.pid"
    result = run_in_thread(lambda: Runner().run(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; echo hi"]))
    background = int(pidfile.read_text())
    leftovers.append(background)
    assert result == RunResult(0, "hi\n", None)
    assert [t for t in threading.enumerate() if t.name == "andon-output"] == []
    pipe = os.readlink(f"/proc/{background}/fd/1")
    assert pipe.startswith("pipe:")
    ours = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{fd}")]
    assert pipe not in ours  # andon's end of the pipe is closed


def test_a_failing_output_callback_does_not_stop_the_draining(tmp_path: Path) -> None:
    """If on_output raises, the pipe must still be drained, or the command blocks on a full pipe."""
    calls: list[str] = []

    def broken(text: str) -> None:
        calls.append(text)
        raise RuntimeError("the display went away")

    argv = [PY, "-c", "for i in range(20000): print('x' * 99)"]  # 2 MB: far more than a pipe holds
    result = run_in_thread(lambda: Runner().run(argv, timeout=20, on_output=broken, output_limit=10_000))
    assert result.stopped is None and result.exit_code == 0
    assert len(calls) == 1  # not called again after it failed
    assert "[andon: output display failed: the display went away]" in result.output


# -- output limits and hostile bytes -------------------------------------------------------------


def test_output_over_the_limit_keeps_head_and_tail_and_says_what_was_dropped(tmp_path: Path) -> None:
    argv = [PY, "-c", "import sys\nfor i in range(10000): sys.stdout.write('line %05d\\n' % i)"]
    full = "".join(f"line {i:05d}\n" for i in range(10000))
    seen: list[str] = []
    result = Runner().run(argv, output_limit=1000, on_output=seen.append)
    dropped = len(full) - 1000
    assert result.output == (
        full[:250] + f"\n[... {dropped} characters of output not kept ...]\n" + full[-750:]
    )
    assert "".join(seen) == full  # the live view saw everything


def test_bounded_output_under_the_limit_is_kept_whole() -> None:
    kept = BoundedOutput(100)
    for _ in range(10):
        kept.add("0123456789")
    assert kept.text() == "0123456789" * 10 and kept.dropped == 0
    kept.add("!")
    assert kept.text().endswith("789!") and kept.dropped == 1


def test_a_note_in_the_middle_of_a_long_stream_is_never_cut_away() -> None:
    # The display may fail once the head is full; the note saying so must outlive the trimming.
    kept = BoundedOutput(100)
    kept.add("h" * 30)
    kept.note("\n[andon: output display failed: gone]\n")
    for _ in range(100):
        kept.add("t" * 50)
    assert kept.dropped > 0
    assert kept.text().endswith("t\n[andon: output display failed: gone]\n")


def test_non_utf8_bytes_and_escape_sequences_in_output_are_neutralised() -> None:
    code = (
        "import sys\n"
        "sys.stdout.buffer.write(b'ok \\xff\\xfe end\\n\\x1b[31mred\\x1b[0m\\r\\n'\n"
        "    b'progress 10%\\rprogress 100%\\n\\x1b]0;pwned\\x07done\\x9b2J\\n')\n"
    )
    seen: list[str] = []
    result = Runner().run([PY, "-c", code], on_output=seen.append)
    expected = "ok \ufffd\ufffd end\nred\nprogress 10%\nprogress 100%\ndone\ufffd2J\n"
    assert result.output == expected
    assert "".join(seen) == expected


@pytest.mark.parametrize("char", ["é", "€", "🚀"])
def test_a_character_split_across_two_writes_is_not_mangled(char: str) -> None:
    data = char.encode()
    code = (
        "import sys, time\n"
        f"data = {data!r}\n"
        "sys.stdout.buffer.write(data[:1]); sys.stdout.flush(); time.sleep(0.3)\n"
        "sys.stdout.buffer.write(data[1:] + b'\\n'); sys.stdout.flush()\n"
    )
    result = Runner().run([PY, "-c", code])
    assert result.output == char + "\n"


def test_waiting_out_a_stubborn_command_does_not_spin(tmp_path: Path) -> None:
    """After the timeout, andon waits for SIGTERM's grace without burning a core."""
    import resource

    stubborn = script(tmp_path, "stubborn.py", (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    ))
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = Runner().run(stubborn, timeout=0.5)
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert result.stopped == "timeout"
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 2.0, f"{cpu:.2f}s of CPU while waiting about {runner_module.STOP_GRACE}s"


def test_the_whole_group_gets_the_grace_to_clean_up(tmp_path: Path) -> None:
    """A child still cleaning up after SIGTERM is not killed the moment its parent exits."""
    cleaned = tmp_path / "cleaned"
    child = tmp_path / "child.py"
    child.write_text(
        "import signal, sys, time\n"
        "def done(*_):\n"
        "    time.sleep(1)\n"
        f"    open({str(cleaned)!r}, 'w').write('yes')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, done)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = script(tmp_path, "parent.py", (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, {str(child)!r}])\n"
        "time.sleep(60)\n"
    ))
    runner = Runner()
    ready = threading.Event()
    threading.Timer(1.5, lambda: (runner.stop("SIGTERM"), ready.set())).start()
    result = runner.run(parent)
    assert ready.is_set() and result.stopped == "SIGTERM"
    assert cleaned.read_text() == "yes"


# -- processes.alive ------------------------------------------------------------------------------


def test_alive_tells_a_running_process_from_a_finished_one() -> None:
    process = subprocess.Popen(["sleep", "30"])
    try:
        assert alive(process.pid)
    finally:
        process.kill()
        process.wait()
    assert not alive(process.pid)


def test_alive_with_group_looks_at_the_whole_process_group(leftover_groups: list[int]) -> None:
    process = subprocess.Popen(["sleep", "30"], start_new_session=True)
    leftover_groups.append(process.pid)
    assert alive(process.pid, group=True)
    assert not alive(os.getpid(), group=True)  # not a group leader: no group of that id
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not alive(process.pid, group=True)


UNPRIVILEGED_PROBE = """\
import os, sys
from backend.processes import alive
os.setgroups([]); os.setgid(65534); os.setuid(65534)  # nobody: may signal no one here
pid, pgid = int(sys.argv[1]), int(sys.argv[2])
try:
    os.kill(pid, 0)
except PermissionError:
    print(alive(pid), alive(pgid, group=True))
"""


def test_alive_is_true_for_a_process_that_is_not_ours() -> None:
    """kill(2) says EPERM for someone else's process: it exists all the same."""
    if os.getuid() == 0:  # ask as nobody about this (root's) process and its group
        probe = subprocess.run([PY, "-c", UNPRIVILEGED_PROBE, str(os.getpid()), str(os.getpgid(0))],
                               cwd=Path(__file__).parent.parent, capture_output=True, text=True, check=True)
        assert probe.stdout == "True True\n", probe.stderr
    else:
        if os.stat("/proc/1").st_uid == os.getuid():
            pytest.skip("no process of another user to ask about")
        assert alive(1) and alive(os.getpgid(1), group=True)


@pytest.mark.parametrize("pid", [0, -1])
def test_alive_never_reads_zero_or_a_negative_pid_as_a_group_or_everyone(pid: int) -> None:
    assert not alive(pid)
    assert not alive(pid, group=True)
