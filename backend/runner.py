"""Running deploy commands: argv lists only, a process group of their own, bounded output.

The command starts in a new session so that a timeout, Ctrl-C or SIGTERM stops
the whole group (``subprocess.run(timeout=...)`` would leave grandchildren
running). Output is read from a pipe by a thread that never stops draining it,
passed on to ``on_output`` as it comes and kept, bounded, for the log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from backend import AndonError
from backend.text import clean, decode

OUTPUT_LIMIT = 256 * 1024  # characters of output kept in the log per deploy
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
TIMEOUT_EXIT = 124  # as timeout(1)
DRAIN_AFTER_EXIT = 2.0  # seconds to keep reading output after the command exits


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


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Runner:
    """Runs one command. ``stop(reason)`` may be called from a signal handler at any time:
    before the command starts (it then never starts), while it runs, or after."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
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
        self._process = process
        if self._stopped:  # a stop that came while the process was being created
            self._kill_group(process.pid, signal.SIGTERM)
        kept = BoundedOutput(output_limit)
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

        def drain() -> None:
            assert process.stdout is not None
            reader = process.stdout
            fd = reader.fileno()
            pending = b""
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                data = pending + chunk
                # Do not split a UTF-8 character between two chunks.
                cut = len(data)
                for back in range(1, min(4, len(data)) + 1):
                    byte = data[-back]
                    if byte & 0xC0 == 0x80:
                        continue
                    if byte >= 0xC0:
                        need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
                        if back < need:
                            cut = len(data) - back
                    break
                pending = data[cut:]
                text = clean(decode(data[:cut]))
                kept.add(text)
                show(text)
            if pending:
                text = clean(decode(pending))
                kept.add(text)
                show(text)
            reader.close()

        thread = threading.Thread(target=drain, name="andon-output", daemon=True)
        thread.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                process.wait(timeout=0.2)  # short waits: a signal handler's stop() is seen soon
                break
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() >= deadline:
                    self.stop("timeout")
        if self._stopped:
            # The rest of the group gets the same grace as the leader to finish on
            # SIGTERM; whatever is still there after it is killed.
            end = self._stopped_at + STOP_GRACE
            while time.monotonic() < end and _group_alive(process.pid):
                time.sleep(0.05)
            self._kill_group(process.pid, signal.SIGKILL)
        # A grandchild left running in the background may keep the pipe open
        # for ever: read what comes soon after the command ends, then move on.
        thread.join(timeout=DRAIN_AFTER_EXIT)
        self._process = None
        return RunResult(self._exit_code(process.returncode), kept.text(), self._stopped)

    def _exit_code(self, code: int | None) -> int:
        if self._stopped == "timeout":
            return TIMEOUT_EXIT
        if self._stopped in ("SIGINT", "SIGTERM"):
            return 128 + int(getattr(signal, self._stopped))
        if code is None:
            return 1
        return 128 - code if code < 0 else code

    def stop(self, reason: str) -> None:
        """Stop the running command's whole process group: SIGTERM, then SIGKILL after a grace."""
        if self._stopped:
            return
        self._stopped = reason
        self._stopped_at = time.monotonic()
        process = self._process
        if process is None:
            return
        self._kill_group(process.pid, signal.SIGTERM)

        def escalate() -> None:
            # Only a leader that ignores SIGTERM is killed from here; once it has
            # exited, run() gives the rest of its group the same grace.
            try:
                process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                self._kill_group(process.pid, signal.SIGKILL)

        threading.Thread(target=escalate, name="andon-stop", daemon=True).start()

    @staticmethod
    def _kill_group(pid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
