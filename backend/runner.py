"""Running deploy commands: argv lists only, a process group of their own, bounded output.

The command starts in a new session so that a timeout, Ctrl-C or SIGTERM stops
the whole group (``subprocess.run(timeout=...)`` would leave grandchildren
running). Output is read from a pipe by a thread that drains it until the command
has exited and a grace has passed, passed on to ``on_output`` as it comes and
kept, bounded, for the log.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from backend import AndonError
from backend.processes import alive
from backend.text import clean, decode

OUTPUT_LIMIT = 256 * 1024  # characters of output kept in the log per deploy
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
TIMEOUT_EXIT = 124  # as timeout(1)
DRAIN_AFTER_EXIT = 2.0  # seconds to keep reading output after the command exits
POLL = 0.1  # seconds between two looks at a stop request or the end of the output


class RunError(AndonError):
    """The command could not be started; ``exit_code`` is what a shell would have said."""

    def __init__(self, message: str, exit_code: int = 127) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class BoundedOutput:
    """Keeps the first and the last part of a stream, and says how much was cut between."""

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self.head_limit = limit // 4
        self.tail_limit = limit - self.head_limit
        self.head = ""
        self.tail = ""
        self.dropped = 0
        self.notes: list[str] = []  # andon's own remarks about the stream: never cut

    def note(self, text: str) -> None:
        self.notes.append(text)

    def add(self, text: str) -> None:
        if len(self.head) < self.head_limit:
            room = self.head_limit - len(self.head)
            self.head += text[:room]
            text = text[room:]
        if not text:
            return
        self.tail += text
        if len(self.tail) > self.tail_limit * 2:
            self._trim()

    def _trim(self) -> None:
        excess = len(self.tail) - self.tail_limit
        if excess > 0:
            self.dropped += excess
            self.tail = self.tail[excess:]

    def text(self) -> str:
        self._trim()
        notes = "".join(self.notes)
        if self.dropped:
            return f"{self.head}\n[... {self.dropped} characters of output not kept ...]\n{self.tail}{notes}"
        return self.head + self.tail + notes


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    output: str
    stopped: str | None = None  # "timeout", "SIGINT", "SIGTERM" when andon stopped it


def substitute(argv: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Replace ``{sha}``-style placeholders inside each argument; each stays one argument."""
    result = []
    for part in argv:
        for key, value in values.items():
            part = part.replace("{" + key + "}", value)
        result.append(part)
    return result


def _whole_characters(data: bytes) -> int:
    """How much of ``data`` to decode now: all but a UTF-8 character cut short at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # a continuation byte: look further back for the lead
            continue
        if byte >= 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            if back < need:
                return len(data) - back
        break
    return len(data)


class Runner:
    """Runs one command. ``stop(reason)`` may be called from a signal handler at any time:
    before the command starts (it then never starts), while it runs, or after.

    ``stop()`` only records the request; ``run()``, which looks at it every ``POLL``
    seconds, sends the signals: SIGTERM to the group, then SIGKILL once ``STOP_GRACE``
    has passed since the stop. A stop cannot land in a moment that run() misses.
    """

    def __init__(self) -> None:
        self._stopped: str | None = None
        self._stopped_at = 0.0

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        on_output: Callable[[str], None] | None = None,
        output_limit: int = OUTPUT_LIMIT,
    ) -> RunResult:
        if not argv:
            raise RunError("no command to run")
        if self._stopped:  # stopped (Ctrl-C, SIGTERM) before it could start
            return RunResult(self._exit_code(None), "", self._stopped)
        try:
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise RunError(f"cannot run {argv[0]!r}: no such file or command") from None
        except PermissionError:
            raise RunError(f"cannot run {argv[0]!r}: permission denied (is it executable?)", 126) from None
        except OSError as error:
            raise RunError(f"cannot run {argv[0]!r}: {error.strerror}") from None
        kept = BoundedOutput(output_limit)
        finished = threading.Event()  # set by run(): the drain stops at its next look
        forward = on_output

        def show(text: str) -> None:
            # A failing display must not stop the draining: an undrained pipe
            # blocks the command until the timeout. Stop forwarding, keep reading.
            nonlocal forward
            if forward is None or not text:
                return
            try:
                forward(text)
            except Exception as error:
                forward = None
                # A note, not output: in the middle of a long stream it would be cut away.
                kept.note(f"\n[andon: output display failed: {clean(str(error))}]\n")

        def take(data: bytes) -> None:
            if data:
                text = clean(decode(data))
                kept.add(text)
                show(text)

        def drain() -> None:
            assert process.stdout is not None
            reader = process.stdout
            fd = reader.fileno()
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            pending = b""
            try:
                # A grandchild left running in the background may hold the pipe open
                # for ever: a blocking read would never return, so look every POLL.
                while not finished.is_set():
                    if not poller.poll(POLL * 1000):
                        continue
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    data = pending + chunk
                    cut = _whole_characters(data)
                    pending = data[cut:]
                    take(data[:cut])
                take(pending)
            finally:
                reader.close()

        thread = threading.Thread(target=drain, name="andon-output", daemon=True)
        thread.start()
        self._wait(process, timeout)
        # Read what comes soon after the command ends, then stop reading: the thread
        # is gone and the pipe closed when run() returns.
        thread.join(timeout=DRAIN_AFTER_EXIT)
        finished.set()
        thread.join()
        return RunResult(self._exit_code(process.returncode), kept.text(), self._stopped)

    def _wait(self, process: subprocess.Popen[bytes], timeout: float | None) -> None:
        """Wait for the command to exit, stopping its group once a stop has been asked for:
        SIGTERM at once, SIGKILL when STOP_GRACE has passed since the stop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        terminated = False
        while True:
            if deadline is not None and not self._stopped and time.monotonic() >= deadline:
                self.stop("timeout")
            if self._stopped:
                if not terminated:
                    self._kill_group(process.pid, signal.SIGTERM)
                    terminated = True
                elif time.monotonic() >= self._stopped_at + STOP_GRACE:
                    self._kill_group(process.pid, signal.SIGKILL)
            try:
                process.wait(timeout=POLL)  # short waits: a signal handler's stop() is seen soon
                break
            except subprocess.TimeoutExpired:
                pass
        if self._stopped:
            if not terminated:  # the stop came as the command was exiting by itself
                self._kill_group(process.pid, signal.SIGTERM)
            # The rest of the group gets the same grace as the leader to finish on
            # SIGTERM; whatever is still there after it is killed.
            end = self._stopped_at + STOP_GRACE
            while time.monotonic() < end and alive(process.pid, group=True):
                time.sleep(0.05)
            self._kill_group(process.pid, signal.SIGKILL)

    def _exit_code(self, code: int | None) -> int:
        if self._stopped == "timeout":
            return TIMEOUT_EXIT
        if self._stopped in ("SIGINT", "SIGTERM"):
            return 128 + int(getattr(signal, self._stopped))
        if code is None:
            return 1
        return 128 - code if code < 0 else code

    def stop(self, reason: str) -> None:
        """Ask for the command's whole process group to be stopped: run() sends SIGTERM
        within ``POLL`` seconds, then SIGKILL after ``STOP_GRACE``. Only the first stop counts."""
        if self._stopped:
            return
        self._stopped_at = time.monotonic()
        self._stopped = reason

    @staticmethod
    def _kill_group(pid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
