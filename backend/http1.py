"""One HTTP/1.1 GET per connection, over asyncio streams, parsed by httptools: the health prober's wire.

Why not ``httpx.AsyncClient`` for every probe: the prober makes 100 requests a second
with 500 checks at a 5-second interval, and through httpx's client a local probe cost
2.2 ms of CPU (httpcore's pool bookkeeping, anyio's cancel scopes, the cookie jar,
building and merging each request; h11's parsing alone 0.25 ms): 22 % of a core where
the target is 10 %. The wire here is what the kernel and the event loop cost, plus
httptools (llhttp, Node.js's parser, in C: no measurable cost over reading the bytes).
``python -m benchmarks.health`` measures the whole prober. httpx still carries what it is
good at for the prober: parsing and joining URLs (redirects), the verifying TLS context,
and every probe when a proxy is configured in the environment (``HTTP_PROXY`` and
friends: see :mod:`backend.health`).

What this does: one request (``GET``, no body), one response: status, headers (at most
:data:`HEADER_CAP` bytes of them), a ``Content-Length``, chunked or close-delimited body,
informational (1xx) responses skipped. No keep-alive (every probe measures what a new
client gets: DNS, connect, TLS), no proxy: the caller keeps the deadline
(``asyncio.timeout`` over the whole exchange) and follows redirects itself.

Failures are three exception types, each raised ``from`` what caused it so that the
caller can name the cause (refused, DNS, TLS, reset): :class:`ConnectFailed`,
:class:`ExchangeFailed` (the connection broke while writing or reading), and
:class:`BadResponse` (the server's answer was no valid HTTP, already said in one line).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httptools

if TYPE_CHECKING:
    import ssl

READ_SIZE = 64 * 1024
HEADER_CAP = 16 * 1024  # bytes of status line and headers accepted
NO_BODY = frozenset((204, 304))


class ConnectFailed(Exception):
    """No connection (or no TLS session) to the server; ``__cause__`` says why."""


class ExchangeFailed(Exception):
    """The connection broke while sending the request or reading the answer; ``__cause__`` says why."""


class BadResponse(Exception):
    """The server's answer was not valid HTTP/1.1; the message is the one line to show."""


class Headers(dict[str, str]):
    """Response headers by lower-case name; repeated headers joined with ``", "`` (as httpx does)."""

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(name.lower(), default)


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


class _Message:
    """httptools' callbacks: what has been parsed of the response so far."""

    __slots__ = ("parser", "status", "headers", "head_bytes", "head_done", "complete", "body")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.head_done = False
        self.complete = False
        self.body: list[bytes] = []

    def on_message_begin(self) -> None:  # again after an informational response
        self.headers = []
        self.head_done = self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.head_done = self.status >= 200

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = self.head_done

    def feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            raise BadResponse("invalid HTTP response") from None
        if self.head_bytes > HEADER_CAP:
            raise BadResponse(f"response headers larger than {HEADER_CAP // 1024} KiB")


class Response:
    """A response whose body has not been read yet: iterate :meth:`aiter_raw`, then :meth:`close`."""

    def __init__(self, message: _Message, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.status_code = message.status
        self.headers = Headers()
        for name, value in message.headers:
            key = name.decode("latin-1").lower()
            text = _text(value)
            self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text
        # Neither a length nor chunks: the body runs until the server closes the connection.
        self._until_eof = ("content-length" not in self.headers and "transfer-encoding" not in self.headers
                           and self.status_code not in NO_BODY)
        self._message = message
        self._reader = reader
        self._writer = writer

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives, still compressed if the server compressed it."""
        message = self._message
        while True:
            if message.body:
                chunks, message.body = message.body, []
                for chunk in chunks:
                    yield chunk
            if message.complete:
                return
            data = await _read(self._reader)
            if not data:
                if self._until_eof:
                    return
                raise BadResponse("connection closed mid-response")
            message.feed(data)

    def close(self) -> None:
        """Drop the connection at once (no keep-alive, nothing more to say to the server)."""
        self._writer.transport.abort()


async def _read(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.read(READ_SIZE)
    except OSError as error:
        raise ExchangeFailed("read") from error


async def get(host: str, port: int, target: bytes, headers: list[tuple[bytes, bytes]], *,
              tls: ssl.SSLContext | None = None) -> Response:
    """Send ``GET target`` to ``host:port`` (over TLS when ``tls`` is given) and read up to the
    end of the response's headers. ``headers`` must include ``Host`` and be valid header
    names and values (no CR or LF: the caller checks). The caller closes the response."""
    try:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname=host if tls is not None else None, limit=READ_SIZE)
    except OSError as error:  # ssl.SSLError is one too
        raise ConnectFailed(host) from error
    try:
        writer.write(b"".join([b"GET ", target, b" HTTP/1.1\r\n",
                               *(b"%s: %s\r\n" % pair for pair in headers), b"\r\n"]))
        message = _Message()
        fed = 0
        while not message.head_done:
            data = await _read(reader)
            if not data:
                raise BadResponse("server closed the connection without a response")
            fed += len(data)
            message.feed(data)
            if not message.head_done and fed > HEADER_CAP:
                raise BadResponse(f"response headers larger than {HEADER_CAP // 1024} KiB")
        return Response(message, reader, writer)
    except BaseException:
        writer.transport.abort()
        raise
