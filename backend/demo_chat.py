"""The demo's chat receiver: what a team's chat would have heard, on 127.0.0.1.

``andon demo`` configures one ``[[notify]] kind = "webhook"`` receiver, signed
(``secret_env``), and starts :class:`DemoChat` in its own process, like the demo's health
service (:class:`backend.demo.DemoService`): a free port on 127.0.0.1, a daemon thread, gone
with the demo. The demo puts the receiver's URL and a secret made for this run in its own
environment (:attr:`URL_ENV`, :attr:`SECRET_ENV`), so the dashboard and every andon it starts
(a rollback's runner) can deliver to it; it also writes them as ``export`` lines to
``chat.env`` beside ``chat.log``, for a shell of the user's own.

* ``POST /``: one message, the generic webhook's JSON. The receiver does what the README's
  "Signed webhooks" asks of one: it checks ``X-Andon-Signature`` on the raw bytes before
  reading them (:func:`verify`, the README's scheme: HMAC-SHA256 of ``<t>.`` + the body,
  five minutes' tolerance) and answers 401 to anything else; it drops an
  ``idempotency_key`` it has seen (answering 200: the sender must not try again). A
  message it takes becomes one readable line (:func:`line_of`), appended to the log file
  (``chat.log`` in the demo's directory) and kept in memory (:meth:`DemoChat.messages`).
* ``GET /``: those lines as plain text (``curl`` it, or open it in a browser), or a line
  saying nothing came yet.

Text in a message came from people and commits: it is cleaned of control characters and
escape sequences (:func:`backend.text.clean_line`) before it is written, so ``tail -f
chat.log`` in a terminal is safe.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

from backend.text import clean_line

URL_ENV = "ANDON_DEMO_CHAT_URL"
SECRET_ENV = "ANDON_DEMO_CHAT_SECRET"
TOLERANCE = 300  # seconds: an older (or future) signature is a replay
MAX_BODY = 1 << 20  # bytes: andon's messages are a few KiB
EMPTY = "No chat messages yet: stop the line (S or ! on the dashboard, andon stop) and they appear here.\n"


def verify(secret: bytes, header: str, body: bytes, tolerance: int = TOLERANCE,
           now: Callable[[], float] = time.time) -> bool:
    """True when the X-Andon-Signature ``header`` signs the raw request ``body`` with ``secret``, recently.

    The README's code ("Signed webhooks"), with the clock injected.
    """
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        stamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now() - stamp) > tolerance:
        return False  # too old, or from the future: a replay
    expected = hmac.new(secret, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("v1", ""))


def line_of(message: dict[str, Any]) -> str:
    """One readable line for a webhook message: when (UTC), the headline, and the reason if any.

    ``2026-11-20 14:03:05 UTC  🛑 Line stopped: production (repo), by alice — api is down``
    """
    at = clean_line(str(message.get("at") or ""))[:19].replace("T", " ")
    text = str(message.get("text") or message.get("title") or message.get("kind") or "a message")
    headline = clean_line(text.splitlines()[0] if text.strip() else text).strip()
    detail = message.get("detail")
    reason = detail.get("reason") if isinstance(detail, dict) else None
    if isinstance(reason, str) and clean_line(reason).strip():
        headline += f" — {clean_line(reason).strip()}"
    return f"{at} UTC  {headline}" if at else headline


class Received(NamedTuple):
    at: float  # time.time() when it arrived
    line: str  # what chat.log got
    message: dict[str, Any]  # the JSON body


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        if self.path.split("?")[0] != "/":
            self._answer(404, "not found\n")
            return
        chat = self.server.chat
        lines = [received.line for received in chat.messages()]
        text = "\n".join(lines) + "\n" if lines else EMPTY
        if chat.refused:
            text += f"({chat.refused} request{'s' if chat.refused != 1 else ''} refused: unsigned, badly signed or "
            text += "not a message)\n"
        self._answer(200, text)

    def do_POST(self) -> None:  # noqa: N802
        chat = self.server.chat
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            chat.refuse()
            self._answer(413 if length > MAX_BODY else 411, "a body of known length, up to 1 MiB\n", close=True)
            return
        body = self.rfile.read(length)
        if not verify(chat.secret.encode(), self.headers.get("X-Andon-Signature", ""), body):
            chat.refuse()
            self._answer(401, "bad or missing X-Andon-Signature\n")
            return
        try:
            message = json.loads(body)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            chat.refuse()
            self._answer(400, "not a JSON object\n")
            return
        chat.take(message)
        self._answer(200, "ok\n")

    def _answer(self, status: int, text: str, *, close: bool = False) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the parameter's name upstream
        pass  # the dashboard owns the terminal


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, chat: DemoChat) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.chat = chat


class DemoChat:
    """The receiver (see the module docstring): on 127.0.0.1, a free port, in a daemon thread.

    ``log_file`` gets one line per message taken (created on the first); ``secret`` signs
    the requests it accepts (default: a new random one).
    """

    def __init__(self, log_file: Path, secret: str | None = None) -> None:
        self.log_file = log_file
        self.secret = secret or secrets.token_hex(16)
        self.refused = 0  # requests answered 4xx
        self._received: list[Received] = []
        self._seen: set[str] = set()
        self._changed = threading.Condition()
        self._server = _Server(self)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="andon-demo-chat", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def variables(self) -> dict[str, str]:
        """The environment the demo's andons deliver with: the URL and the secret."""
        return {URL_ENV: self.url, SECRET_ENV: self.secret}

    def write_env(self, path: Path) -> None:
        """``export`` lines for these variables (``. chat.env`` in another shell), readable by the owner only."""
        path.touch(mode=0o600)
        path.write_text("".join(f"export {name}={value}\n" for name, value in self.variables().items()))

    def take(self, message: dict[str, Any]) -> bool:
        """Keep ``message`` (one line in the log file); False when its idempotency key came before."""
        key = message.get("idempotency_key")
        line = line_of(message)
        with self._changed:
            if isinstance(key, str):
                if key in self._seen:
                    return False
                self._seen.add(key)
            with self.log_file.open("a", encoding="utf-8") as out:
                out.write(line + "\n")
            self._received.append(Received(time.time(), line, message))
            self._changed.notify_all()
        return True

    def refuse(self) -> None:
        with self._changed:
            self.refused += 1

    def messages(self) -> list[Received]:
        with self._changed:
            return list(self._received)

    def wait_for(self, count: int, timeout: float) -> list[Received]:
        """The messages once at least ``count`` arrived, or what came within ``timeout`` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: len(self._received) >= count, timeout)
            return list(self._received)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
