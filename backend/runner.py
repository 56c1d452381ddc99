"""Running deploy and rollback actions: commands (argv lists only, a process group of their
own, bounded output) and HTTP requests.

The command starts in a new session so that a timeout, Ctrl-C or SIGTERM stops
the whole group (``subprocess.run(timeout=...)`` would leave grandchildren
running). Output is read from a pipe by a thread that drains it until the command
has exited and a grace has passed, passed on to ``on_output`` (the terminal) and
``live`` (the log's copy of a running deploy's output, :mod:`backend.live_output`) as
it comes, and kept, bounded, for the log. A display that fails is no longer shown to;
the live copy goes on (it never raises). ``on_start`` is told the new group's id as
soon as the command exists, so that the log can name it: if andon itself is killed,
whoever notices stops that group (:func:`backend.deployer.reap`).

An action that is an HTTP request (:class:`~backend.config.HttpAction`, a CI system's
API) is sent with httpx by :meth:`Runner.request`: the URL and the header values come
from environment variables, ``{sha}`` and ``{env}`` are replaced in every string of
the JSON body, and success is a 2xx answer. The answer's status and a short cleaned
excerpt of its body are the output. A variable that is not set, a URL that is not
http(s) or a server that cannot be reached is a one-line :class:`RunError` (recorded
as failed); a timeout, Ctrl-C or SIGTERM stops waiting for the answer (the request may
have been received: the output says so).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backend import AndonError
from backend.processes import alive
from backend.text import clean, clean_line, decode

if TYPE_CHECKING:
    from backend.config import HttpAction

OUTPUT_LIMIT = 256 * 1024  # characters of output kept in the log per deploy
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
TIMEOUT_EXIT = 124  # as timeout(1)
DRAIN_AFTER_EXIT = 2.0  # seconds to keep reading output after the command exits
POLL = 0.1  # seconds between two looks at a stop request or the end of the output
HTTP_CONNECT_TIMEOUT = 10.0  # seconds to connect to an HTTP action's server
HTTP_READ_TIMEOUT = 60.0  # seconds without a byte of the answer
HTTP_BODY_LIMIT = 64 * 1024  # bytes of an HTTP action's answer read (decompressed)
HTTP_EXCERPT = 300  # characters of the answer's body kept in the output


class RunError(AndonError):
    """The command could not be started; ``exit_code`` is what a shell would have said."""

    def __init__(self, message: str, exit_code: int = 127) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def split_limit(limit: int) -> tuple[int, int]:
    """How many characters of a stream's start and of its end make up ``limit``: a quarter, the rest."""
    return limit // 4, limit - limit // 4


class BoundedOutput:
    """Keeps the first and the last part of a stream, and says how much was cut between."""

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self.head_limit, self.tail_limit = split_limit(limit)
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
    return [_fill_text(part, values) for part in argv]


def _fill_text(text: str, values: Mapping[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def fill_json(item: Any, values: Mapping[str, str]) -> Any:
    """A decoded JSON body with ``{sha}``-style placeholders replaced in every string (keys too)."""
    if isinstance(item, str):
        return _fill_text(item, values)
    if isinstance(item, list):
        return [fill_json(part, values) for part in item]
    if isinstance(item, dict):
        return {_fill_text(str(key), values): fill_json(part, values) for key, part in item.items()}
    return item


def _excerpt(data: bytes, truncated: bool) -> str:
    """An answer's body as one short clean line (whitespace runs become one space)."""
    text = " ".join(clean_line(decode(data)).split())
    if len(text) > HTTP_EXCERPT or (truncated and text):
        return text[:HTTP_EXCERPT] + "…"
    return text


def _http_problem(error: BaseException, host: str) -> str:
    """Why an HTTP action got no answer, in a few words."""
    import httpx

    if isinstance(error, httpx.ConnectTimeout):
        return f"cannot connect to {host}: timed out"
    if isinstance(error, httpx.ConnectError):
        text = str(error)
        if "]" in text and text.startswith("[Errno"):
            text = text.split("]", 1)[1].strip()
        return f"cannot connect to {host}: {clean_line(text).lower() or 'connection failed'}"
    if isinstance(error, httpx.ReadTimeout):
        return f"{host} sent nothing for {HTTP_READ_TIMEOUT:g}s"
    if isinstance(error, httpx.RemoteProtocolError):
        return f"{host} broke off the answer: {clean_line(str(error))[:120]}"
    return f"{type(error).__name__}: {clean_line(str(error))[:160]}" if str(error) else type(error).__name__


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
        on_start: Callable[[int], None] | None = None,
        live: Callable[[str], None] | None = None,
    ) -> RunResult:
        """Run ``argv``; ``on_start(pgid)`` is called once it has started (its failure is noted);
        ``live`` gets every piece of output as it is kept, and must not raise."""
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
        if on_start is not None:
            try:
                on_start(process.pid)  # the leader of a new session: its pid is the group's id
            except Exception as error:  # noqa: BLE001 - the command runs all the same
                kept.note(f"\n[andon: could not record the command's process group {process.pid}: "
                          f"{clean_line(str(error))}]\n")
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
                if live is not None:
                    live(text)
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

    def request(
        self,
        action: HttpAction,
        values: Mapping[str, str],
        *,
        timeout: float | None = None,
        environ: Mapping[str, str] | None = None,
        on_output: Callable[[str], None] | None = None,
        live: Callable[[str], None] | None = None,
    ) -> RunResult:
        """Send ``action`` (see the module's docstring); exit code 0 for a 2xx answer, else 1.
        ``on_output`` and ``live`` (which must not raise) get the lines of the output as they come.

        Raises :class:`RunError` (exit code 1) when it cannot be sent or gets no answer.
        """
        import httpx

        if self._stopped:
            return RunResult(self._exit_code(None), "", self._stopped)
        environ = os.environ if environ is None else environ
        raw_url = environ.get(action.url_env, "").strip()
        if not raw_url:
            raise RunError(f"environment variable {action.url_env} is not set (it holds the URL to "
                           f"{action.method})", 1)
        try:
            url = httpx.URL(raw_url)
        except (httpx.InvalidURL, TypeError, ValueError):
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise RunError(f"environment variable {action.url_env} does not hold an http:// or https:// URL", 1)
        # Shown without user, password or query: a token may hide there.
        # Never the path (nor the query): a deploy hook's secret often is its path (Netlify,
        # Vercel build hooks). The host and the variable's name say which request it was.
        shown = (f"{action.method} {url.scheme}://{url.host}{f':{url.port}' if url.port else ''}"
                 f"{'/…' if url.path not in ('', '/') else '/'} (${action.url_env})")
        headers: dict[str, str] = {}
        for name, variable in action.headers:
            value = environ.get(variable, "")
            if not value.strip():
                raise RunError(f"environment variable {variable} is not set (it holds the {name} header "
                               f"of {shown})", 1)
            if not value.isascii() or clean_line(value) != value:
                raise RunError(f"environment variable {variable} (the {name} header) holds a control or "
                               "non-ASCII character", 1)
            headers[name] = value
        body = fill_json(json.loads(action.body), values)
        content = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        if content is not None and not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
        limit = None if timeout is None else max(timeout, 0.001)
        http_timeout = httpx.Timeout(min(HTTP_READ_TIMEOUT, limit or HTTP_READ_TIMEOUT),
                                     connect=min(HTTP_CONNECT_TIMEOUT, limit or HTTP_CONNECT_TIMEOUT))
        box: dict[str, Any] = {}

        def send() -> None:
            try:
                with httpx.Client(timeout=http_timeout, follow_redirects=False) as client, \
                        client.stream(action.method, url, headers=headers, content=content) as response:
                    data = bytearray()
                    truncated = False
                    for chunk in response.iter_bytes():
                        data += chunk
                        if len(data) >= HTTP_BODY_LIMIT:
                            truncated = True
                            break
                    box["answer"] = (response.status_code, response.reason_phrase, bytes(data[:HTTP_BODY_LIMIT]),
                                     truncated)
            except Exception as error:  # noqa: BLE001 - every failure is one line in the log
                box["error"] = _http_problem(error, url.host)

        def show(text: str) -> None:
            if live is not None:
                live(text)
            if on_output is not None:
                on_output(text)

        show(f"[andon: {shown}]\n")
        sender = threading.Thread(target=send, name="andon-http-action", daemon=True)
        sender.start()
        deadline = None if limit is None else time.monotonic() + limit
        while sender.is_alive() and not self._stopped:
            if deadline is not None and time.monotonic() >= deadline:
                self.stop("timeout")
                break
            sender.join(POLL)
        if self._stopped:
            # The request may be on its way or received: never claim it was not.
            note = {"timeout": f"no answer within the {timeout or 0:g}s timeout"}.get(
                self._stopped, f"stopped by {self._stopped}")
            text = f"[andon: {shown}]\n[andon: {note} while waiting for the answer; the request may have been received]\n"
            show(text.split("\n", 1)[1])
            return RunResult(self._exit_code(None), text, self._stopped)
        if "error" in box:
            raise RunError(f"{shown}: {box['error']}", 1)
        status, phrase, data, truncated = box["answer"]
        excerpt = _excerpt(data, truncated)
        verdict = f"HTTP {status}" + (f" {clean_line(phrase)}" if phrase else "")
        lines = f"[andon: {verdict}]\n" + (f"{excerpt}\n" if excerpt else "")
        show(lines)
        return RunResult(0 if 200 <= status < 300 else 1, f"[andon: {shown}]\n{lines}")

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
