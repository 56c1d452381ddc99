"""Health probing against real HTTP servers on 127.0.0.1, and the health model.

Every probe test asserts the check's state and its error text. Timeouts are short
(about a second) so that the whole file stays fast.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from backend.config import HealthCheck
from backend.health import (
    BEHIND,
    BODY_CAP,
    DRIFT,
    MATCH,
    VERSION_CAP,
    environment_state,
    probe,
    probe_all,
    probe_round,
    version_drift,
)
from backend.history import History
from backend.models import DEGRADED, DOWN, HEALTHY, UNKNOWN, UP, HealthSample, to_iso
from tests.conftest import Repo

NOW = datetime(2026, 11, 18, 11, 54, tzinfo=UTC)
SHA = "3f786850e387550fdab836ed7e6dc881de23001b"


def clock() -> datetime:
    return NOW


# -- a real local service ----------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 gave false timeouts
    service: Service


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        service = self.server.service
        with service.lock:
            service.requests.append((self.path, dict(self.headers.items())))
            service.in_flight += 1
            service.max_in_flight = max(service.max_in_flight, service.in_flight)
        try:
            route = service.routes.get(self.path)
            if route is None:
                reply(self, 404, b"no such route")
            else:
                route(self)
        except OSError:
            pass  # the prober hung up first: expected for huge, dripping and hanging answers
        finally:
            with service.lock:
                service.in_flight -= 1

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Service:
    """An HTTP server on a free port of 127.0.0.1, with a route table the test fills in."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[_Handler], object]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.sent = 0  # body bytes a streaming route managed to write
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.service = self
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.stop.set()  # lets hanging and dripping handlers return
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def make_service() -> Iterator[Callable[[], Service]]:
    started: list[Service] = []

    def make() -> Service:
        started.append(Service())
        return started[-1]

    yield make
    for service in started:
        service.close()


@pytest.fixture
def service(make_service: Callable[[], Service]) -> Service:
    return make_service()


def reply(handler: BaseHTTPRequestHandler, status: int = 200, body: bytes = b"",
          headers: tuple[tuple[str, str], ...] = ()) -> None:
    handler.send_response(status)
    for name, value in headers:
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def json_reply(data: Any, status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> Callable[[_Handler], None]:
    body = json.dumps(data).encode()
    return lambda handler: reply(handler, status, body, (("Content-Type", "application/json"), *headers))


def check(url: str, *, name: str = "api", timeout: float = 1.0, **fields: Any) -> HealthCheck:
    return HealthCheck(name, url, interval=5.0, timeout=timeout, **fields)


async def one(health_check: HealthCheck, **kwargs: Any) -> tuple[HealthSample, float]:
    """Probe one check; the sample and the seconds the whole round took."""
    started = time.monotonic()
    samples = await probe_all({"prod": [health_check]}, clock=clock, **kwargs)
    assert len(samples) == 1
    return samples[0], time.monotonic() - started


# -- up, slow, status ----------------------------------------------------------------------


async def test_up_reports_status_latency_and_the_json_version(service: Service) -> None:
    service.routes["/healthz"] = json_reply({"build": {"sha": SHA}})
    sample, _ = await one(check(service.url("/healthz"), version="build.sha"))
    assert sample.state == UP and sample.error == ""
    assert (sample.env, sample.check, sample.at) == ("prod", "api", to_iso(NOW))
    assert sample.status_code == 200 and sample.version == SHA
    assert sample.latency_ms is not None and 0 < sample.latency_ms < 500


async def test_a_list_index_in_the_version_path(service: Service) -> None:
    service.routes["/healthz"] = json_reply({"builds": [{"sha": "abc1234"}]})
    sample, _ = await one(check(service.url("/healthz"), version="builds.0.sha"))
    assert (sample.state, sample.version, sample.error) == (UP, "abc1234", "")


async def test_slower_than_degraded_ms_is_degraded(service: Service) -> None:
    def slow(handler: _Handler) -> None:
        time.sleep(0.3)
        reply(handler, 200, b"ok")

    service.routes["/slow"] = slow
    service.routes["/fast"] = lambda handler: reply(handler, 200, b"ok")
    samples = await probe_all({"prod": [check(service.url("/slow"), name="slow", degraded_ms=150),
                                        check(service.url("/fast"), name="fast", degraded_ms=150)]}, clock=clock)
    slow_sample, fast_sample = samples
    assert (slow_sample.state, slow_sample.status_code, slow_sample.error) == (DEGRADED, 200, "")
    assert slow_sample.latency_ms is not None and slow_sample.latency_ms >= 300
    assert (fast_sample.state, fast_sample.error) == (UP, "")


async def test_http_500_is_down_and_the_version_is_still_reported(service: Service) -> None:
    service.routes["/healthz"] = json_reply({"build": {"sha": SHA}}, status=500)
    sample, _ = await one(check(service.url("/healthz"), version="build.sha"))
    assert (sample.state, sample.status_code, sample.error) == (DOWN, 500, "HTTP 500")
    assert sample.version == SHA and sample.latency_ms is not None


@pytest.mark.parametrize(
    ("status", "expect", "state", "error"),
    [
        (204, None, UP, ""),
        (299, None, UP, ""),
        (301, None, DOWN, "HTTP 301"),  # a redirect without Location is not followed
        (404, None, DOWN, "HTTP 404"),
        (503, (200, 503), UP, ""),  # in expect: up
        (200, (204,), DOWN, "HTTP 200"),  # a 2xx outside expect: down
        (418, (418,), UP, ""),
    ],
)
async def test_status_against_expect(service: Service, status: int, expect: tuple[int, ...] | None,
                                     state: str, error: str) -> None:
    service.routes["/s"] = lambda handler: reply(handler, status, b"")
    sample, _ = await one(check(service.url("/s"), expect=expect))
    assert (sample.state, sample.status_code, sample.error) == (state, status, error)


# -- servers that never finish -------------------------------------------------------------


async def test_a_server_that_accepts_and_never_answers_is_down_after_the_timeout(service: Service) -> None:
    service.routes["/hang"] = lambda handler: service.stop.wait(30)
    sample, took = await one(check(service.url("/hang"), timeout=0.5))
    assert (sample.state, sample.status_code, sample.latency_ms) == (DOWN, None, None)
    assert sample.error == "timed out after 0.5s"
    assert 0.45 < took < 1.2


async def test_a_hanging_check_does_not_stall_the_others(service: Service) -> None:
    service.routes["/hang"] = lambda handler: service.stop.wait(30)
    service.routes["/healthz"] = json_reply({"ok": True})
    started = time.monotonic()
    hung, fine = await probe_all(
        {"prod": [check(service.url("/hang"), name="hang", timeout=1.0)],
         "staging": [check(service.url("/healthz"), name="ok", timeout=1.0)]},
        clock=clock,
    )
    took = time.monotonic() - started
    assert (hung.env, hung.state, hung.error) == ("prod", DOWN, "timed out after 1s")
    assert (fine.env, fine.state, fine.error) == ("staging", UP, "")
    assert fine.latency_ms is not None and fine.latency_ms < 300  # its own latency, not the hang's
    assert took < 1.6  # probed side by side, not one after the other


async def test_a_body_dripped_a_byte_at_a_time_is_down_at_the_deadline(service: Service) -> None:
    """Each byte comes well within httpx's read timeout: only the overall deadline ends it."""

    def drip(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        handler.wfile.flush()
        for _ in range(100):
            if service.stop.wait(0.3):
                return
            handler.wfile.write(b"x")
            handler.wfile.flush()

    service.routes["/drip"] = drip
    sample, took = await one(check(service.url("/drip"), timeout=1.0))
    assert (sample.state, sample.status_code, sample.error) == (DOWN, None, "timed out after 1s")
    assert 0.95 < took < 1.6


async def test_a_reset_mid_response_is_connection_reset(service: Service) -> None:
    def reset(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"x" * 10)
        handler.wfile.flush()
        time.sleep(0.05)
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        handler.connection.close()  # linger 0: an RST, not a FIN

    service.routes["/reset"] = reset
    sample, _ = await one(check(service.url("/reset")))
    assert (sample.state, sample.status_code, sample.error) == (DOWN, None, "connection reset")


async def test_a_connection_closed_mid_body_is_down(service: Service) -> None:
    def short(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"x" * 10)

    service.routes["/short"] = short
    sample, _ = await one(check(service.url("/short")))
    assert (sample.state, sample.error) == (DOWN, "connection closed mid-response")


async def test_a_connection_closed_before_any_answer_is_down(service: Service) -> None:
    service.routes["/close"] = lambda handler: handler.connection.shutdown(socket.SHUT_RDWR)
    sample, _ = await one(check(service.url("/close")))
    assert (sample.state, sample.error) == (DOWN, "server closed the connection without a response")


# -- bodies too large -------------------------------------------------------------------------

HUGE = 50 * 1024 * 1024


def _stream_huge(service: Service) -> Callable[[_Handler], None]:
    chunk = b"{" + b" " * (64 * 1024 - 1)

    def huge(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(HUGE))
        handler.send_header("X-Version", "abc1234")
        handler.end_headers()
        for _ in range(HUGE // len(chunk)):
            handler.wfile.write(chunk)
            service.sent += len(chunk)

    return huge


async def test_a_huge_body_is_read_only_to_the_cap(service: Service) -> None:
    service.routes["/huge"] = _stream_huge(service)
    sample, took = await one(check(service.url("/huge"), timeout=2.0, version="build.sha"))
    # The service answered 200: up. Its version had to come from the body, which is too big.
    assert (sample.state, sample.status_code, sample.version) == (UP, 200, None)
    assert sample.error == "body larger than 64 KiB"
    assert took < 1.0
    time.sleep(0.2)
    assert service.sent < HUGE // 4  # it hung up long before the end (what is sent is socket buffers)


async def test_a_huge_body_with_the_version_in_a_header_is_up_without_error(service: Service) -> None:
    service.routes["/huge"] = _stream_huge(service)
    sample, took = await one(check(service.url("/huge"), timeout=2.0, version="header:X-Version"))
    assert (sample.state, sample.version, sample.error) == (UP, "abc1234", "")
    assert took < 1.0


def _gzip(data: bytes, repeat: int = 1) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return b"".join(compressor.compress(data) for _ in range(repeat)) + compressor.flush()


BOMB = _gzip(bytes(1024 * 1024), repeat=50)  # 50 MiB of zeros in ~50 KB


async def test_a_gzip_bomb_costs_kilobytes(service: Service) -> None:
    service.routes["/bomb"] = lambda handler: reply(handler, 200, BOMB, (("Content-Encoding", "gzip"),))
    assert len(BOMB) < 100_000
    tracemalloc.start()
    try:
        sample, took = await one(check(service.url("/bomb"), version="build.sha"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (sample.state, sample.version, sample.error) == (UP, None, "body larger than 64 KiB")
    # httpx's own aiter_bytes() inflated all 50 MiB at once here (a 135 MB peak).
    assert peak < 4 * 1024 * 1024, peak
    assert took < 1.0


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
async def test_a_compressed_json_body_is_read(service: Service, encoding: str) -> None:
    data = json.dumps({"build": {"sha": SHA}}).encode()
    if encoding == "gzip":
        body = _gzip(data)
    elif encoding == "deflate":
        body = zlib.compress(data)
    else:  # some servers send deflate without the zlib wrapper
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = compressor.compress(data) + compressor.flush()
    header = "gzip" if encoding == "gzip" else "deflate"
    service.routes["/z"] = lambda handler: reply(handler, 200, body, (("Content-Encoding", header),))
    sample, _ = await one(check(service.url("/z"), version="build.sha"))
    assert (sample.state, sample.version, sample.error) == (UP, SHA, "")


async def test_a_corrupt_gzip_body_is_an_error_on_the_version(service: Service) -> None:
    service.routes["/z"] = lambda handler: reply(handler, 200, b"not gzip at all", (("Content-Encoding", "gzip"),))
    sample, _ = await one(check(service.url("/z"), version="build.sha"))
    assert (sample.state, sample.version, sample.error) == (UP, None, "body is not valid compressed data")


async def test_an_unknown_content_encoding_is_an_error_on_the_version(service: Service) -> None:
    service.routes["/z"] = lambda handler: reply(handler, 200, b"\x0b\x02\x80{}\x03", (("Content-Encoding", "br"),))
    sample, _ = await one(check(service.url("/z"), version="build.sha"))
    assert (sample.state, sample.error) == (UP, "body is compressed as 'br', which andon cannot read")


# -- bodies that are not what was asked -------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"<html><h1>\x1b[31mBad Gateway</h1></html>", "body is not JSON"),
        (b"", "body is not JSON"),
        (b"[" * 50_000, "body is not JSON"),  # nested too deep for the parser
        (bytes(range(256)), "body is binary"),
        (b'{"build": {"sha": "abc\x00"}}', "body is binary"),
        (b"\xff\xfe{\x00}\x00", "body is binary"),
        (b'{"build": {}}', "no build.sha in the JSON body"),
        (b'["build"]', "no build.sha in the JSON body"),
        (b'{"build": {"sha": null}}', "build.sha in the JSON body is not a string"),
        (b'{"build": {"sha": {"a": 1}}}', "build.sha in the JSON body is not a string"),
        (b'{"build": {"sha": "  "}}', "build.sha in the JSON body is empty"),
    ],
)
async def test_a_version_that_cannot_be_read_is_an_error_but_the_state_follows_the_status(
        service: Service, body: bytes, error: str) -> None:
    service.routes["/healthz"] = lambda handler: reply(handler, 200, body)
    sample, _ = await one(check(service.url("/healthz"), version="build.sha"))
    assert (sample.state, sample.status_code, sample.version, sample.error) == (UP, 200, None, error)


async def test_a_number_version_is_reported_as_text(service: Service) -> None:
    service.routes["/healthz"] = json_reply({"build": {"sha": 1234567}})
    sample, _ = await one(check(service.url("/healthz"), version="build.sha"))
    assert (sample.state, sample.version, sample.error) == (UP, "1234567", "")


async def test_the_version_from_a_header(service: Service) -> None:
    service.routes["/healthz"] = lambda handler: reply(handler, 200, b"not json", (("X-Version", SHA),))
    sample, _ = await one(check(service.url("/healthz"), version="header:x-version"))  # any case
    assert (sample.state, sample.version, sample.error) == (UP, SHA, "")


async def test_a_missing_version_header(service: Service) -> None:
    service.routes["/healthz"] = lambda handler: reply(handler, 200, b"{}")
    sample, _ = await one(check(service.url("/healthz"), version="header:X-Version"))
    assert (sample.state, sample.version, sample.error) == (UP, None, "no X-Version header")


async def test_escape_sequences_in_the_version_are_removed(service: Service) -> None:
    sneaky = "\x1b]0;pwned\x07\x1b[2J" + SHA[:12] + "\x1b[31m\u202e"
    service.routes["/body"] = json_reply({"build": {"sha": sneaky}})
    # 8-bit CSI in a header (h11 refuses a raw ESC there, but not bytes over 0x7f).
    service.routes["/header"] = lambda handler: reply(handler, 200, b"", (("X-Version", "\x9b31m" + SHA[:12]),))
    from_body, from_header = await probe_all({"prod": [
        check(service.url("/body"), name="body", version="build.sha"),
        check(service.url("/header"), name="header", version="header:X-Version"),
    ]}, clock=clock)
    assert (from_body.state, from_body.version, from_body.error) == (UP, SHA[:12], "")
    assert (from_header.state, from_header.version, from_header.error) == (UP, SHA[:12], "")


async def test_a_long_version_is_capped(service: Service) -> None:
    service.routes["/healthz"] = json_reply({"v": "x" * 5000})
    sample, _ = await one(check(service.url("/healthz"), version="v"))
    assert sample.state == UP and sample.error == ""
    assert sample.version == "x" * (VERSION_CAP - 1) + "…"


# -- redirects ----------------------------------------------------------------------------------


async def test_a_redirect_loop_is_too_many_redirects(service: Service) -> None:
    service.routes["/loop"] = lambda handler: reply(handler, 302, b"", (("Location", "/loop"),))
    sample, _ = await one(check(service.url("/loop")))
    assert (sample.state, sample.status_code, sample.error) == (DOWN, None, "too many redirects")
    assert 2 <= len(service.requests) <= 7  # a few redirects, not hundreds


async def test_a_redirect_is_followed(service: Service) -> None:
    service.routes["/old"] = lambda handler: reply(handler, 301, b"", (("Location", "/new"),))
    service.routes["/new"] = json_reply({"build": {"sha": SHA}})
    sample, _ = await one(check(service.url("/old"), version="build.sha"))
    assert (sample.state, sample.status_code, sample.version, sample.error) == (UP, 200, SHA, "")


async def test_a_redirect_to_another_scheme_is_down(service: Service) -> None:
    service.routes["/ftp"] = lambda handler: reply(handler, 302, b"", (("Location", "ftp://127.0.0.1/x"),))
    sample, _ = await one(check(service.url("/ftp")))
    assert (sample.state, sample.error) == (DOWN, "redirected to a URL that is not http or https")


async def test_secret_headers_stay_with_their_origin(make_service: Callable[[], Service]) -> None:
    home, elsewhere = make_service(), make_service()
    for service in (home, elsewhere):
        service.routes["/echo"] = lambda handler: reply(handler, 200, b"{}")
    home.routes["/here"] = lambda handler: reply(handler, 302, b"", (("Location", "/echo"),))
    home.routes["/away"] = lambda handler: reply(handler, 302, b"", (("Location", elsewhere.url("/echo")),))
    headers = (("X-Api-Key", "API_KEY"), ("Authorization", "TOKEN"))
    environ = {"API_KEY": "k-123", "TOKEN": "Bearer t-456"}
    same, other = await probe_all({"prod": [check(home.url("/here"), name="same", headers=headers),
                                            check(home.url("/away"), name="other", headers=headers)]},
                                  clock=clock, environ=environ)
    assert (same.state, same.error, other.state, other.error) == (UP, "", UP, "")
    home_echo = [sent for path, sent in home.requests if path == "/echo"]
    assert home_echo and home_echo[0]["X-Api-Key"] == "k-123"  # same origin: kept
    assert home_echo[0]["Authorization"] == "Bearer t-456"
    (away_echo,) = [sent for path, sent in elsewhere.requests if path == "/echo"]
    assert "X-Api-Key" not in away_echo and "Authorization" not in away_echo  # another origin: dropped


# -- the wire: what the direct path (backend/http1.py) must read like any HTTP client ------------

BODY = json.dumps({"build": {"sha": SHA}}).encode()


def raw(data: bytes) -> Callable[[_Handler], None]:
    """A route that answers with exactly these bytes, then closes the connection."""
    return lambda handler: (handler.wfile.write(data), handler.wfile.flush())


def chunked(body: bytes, size: int = 7) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


@pytest.mark.parametrize("answer", [
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(BODY), id="chunked"),
    pytest.param(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + BODY, id="until-close"),
    pytest.param(b"HTTP/1.0 200 OK\r\n\r\n" + BODY, id="http-1.0"),
    pytest.param(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                 % (len(BODY), BODY), id="informational-first"),
])
async def test_every_way_of_framing_a_body_is_read(service: Service, answer: bytes) -> None:
    service.routes["/framed"] = raw(answer)
    sample, _ = await one(check(service.url("/framed"), version="build.sha"))
    assert (sample.state, sample.status_code, sample.version, sample.error) == (UP, 200, SHA, "")


@pytest.mark.parametrize("answer", [
    pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", id="not-http"),
    pytest.param(b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", id="bad-status"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello", id="two-lengths"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-chunk"),
])
async def test_an_answer_that_is_not_valid_http_is_down(service: Service, answer: bytes) -> None:
    service.routes["/garbage"] = raw(answer)
    sample, _ = await one(check(service.url("/garbage")))
    assert (sample.state, sample.status_code, sample.error) == (DOWN, None, "invalid HTTP response")


@pytest.mark.parametrize("head", [
    pytest.param(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"x" * 100 + b"\r\n" * 1 + b"".join(
        b"X-Pad-%d: %s\r\n" % (i, b"x" * 100) for i in range(200)) + b"Content-Length: 0\r\n\r\n", id="many"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-Endless: " + b"x" * (200 * 1024), id="endless-line"),
])
async def test_response_headers_beyond_the_cap_are_down(service: Service, head: bytes) -> None:
    service.routes["/headers"] = raw(head)
    sample, _ = await one(check(service.url("/headers")))
    assert (sample.state, sample.error) == (DOWN, "response headers larger than 16 KiB")


async def test_credentials_in_the_url_are_sent_to_its_origin_only(make_service: Callable[[], Service]) -> None:
    home, elsewhere = make_service(), make_service()
    for service in (home, elsewhere):
        service.routes["/echo"] = lambda handler: reply(handler, 200, b"{}")
    home.routes["/away"] = lambda handler: reply(handler, 302, b"", (("Location", elsewhere.url("/echo")),))
    with_user = home.url("/echo").replace("http://", "http://probe:s%40cret@")
    away = home.url("/away").replace("http://", "http://probe:s%40cret@")
    here, there = await probe_all({"prod": [check(with_user, name="here"), check(away, name="there")]}, clock=clock)
    assert (here.state, here.error, there.state, there.error) == (UP, "", UP, "")
    home_echo = [sent for path, sent in home.requests if path == "/echo"]
    assert home_echo[0]["Authorization"] == "Basic cHJvYmU6c0BjcmV0"  # probe:s@cret
    (away_echo,) = [sent for path, sent in elsewhere.requests if path == "/echo"]
    assert "Authorization" not in away_echo


async def test_a_proxy_named_in_the_environment_carries_every_probe(
        make_service: Callable[[], Service], monkeypatch: pytest.MonkeyPatch) -> None:
    """With HTTP_PROXY set, probes go through httpx, which sends them to the proxy (absolute-form
    request lines); the service's own port is closed, so only the proxy can have answered."""
    proxy = make_service()
    target = f"http://127.0.0.1:{_closed_port()}/healthz"
    proxy.routes[target] = json_reply({"build": {"sha": SHA}})
    monkeypatch.setenv("HTTP_PROXY", proxy.url(""))
    sample, _ = await one(check(target, version="build.sha"))
    assert (sample.state, sample.version, sample.error) == (UP, SHA, "")
    assert [path for path, _ in proxy.requests] == [target]
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # ...and honours NO_PROXY: straight to the closed port
    sample, _ = await one(check(target, version="build.sha"))
    assert (sample.state, sample.error) == (DOWN, "connection refused")
    assert len(proxy.requests) == 1


# -- no connection ------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connection_refused() -> None:
    sample, took = await one(check(f"http://127.0.0.1:{_closed_port()}/healthz"))
    assert (sample.state, sample.status_code, sample.latency_ms) == (DOWN, None, None)
    assert sample.error == "connection refused"
    assert took < 0.9


async def test_dns_failure_names_the_host() -> None:
    sample, _ = await one(check("http://andon-health-test.invalid/healthz", timeout=2.0))
    assert (sample.state, sample.status_code) == (DOWN, None)
    assert sample.error == "DNS lookup failed for host andon-health-test.invalid"


@pytest.fixture
def tls_service(tmp_path: Path) -> Iterator[str]:
    """An https server with a self-signed certificate, which a verifying client must refuse."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True)
    service = Service()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    service.server.socket = context.wrap_socket(service.server.socket, server_side=True)
    service.routes["/healthz"] = lambda handler: reply(handler, 200, b"{}")
    yield f"https://127.0.0.1:{service.port}/healthz"
    service.close()


async def test_tls_is_verified(tls_service: str) -> None:
    sample, _ = await one(check(tls_service))
    assert (sample.state, sample.status_code) == (DOWN, None)
    assert sample.error.startswith("TLS certificate not trusted: "), sample.error
    assert "self" in sample.error  # "self-signed certificate" (the wording is OpenSSL's)


# -- headers from environment variables ---------------------------------------------------------


def _auth_route(service: Service) -> None:
    def auth(handler: _Handler) -> None:
        reply(handler, 200 if handler.headers.get("Authorization") == "Bearer s3cret" else 401, b"{}")

    service.routes["/auth"] = auth


async def test_header_values_come_from_environment_variables(service: Service,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _auth_route(service)
    monkeypatch.setenv("HEALTH_TOKEN", "Bearer s3cret")
    auth = check(service.url("/auth"), headers=(("Authorization", "HEALTH_TOKEN"),))
    sample, _ = await one(auth)
    assert (sample.state, sample.status_code, sample.error) == (UP, 200, "")
    monkeypatch.setenv("HEALTH_TOKEN", "Bearer wrong")  # read at each probe, not once
    sample, _ = await one(auth)
    assert (sample.state, sample.status_code, sample.error) == (DOWN, 401, "HTTP 401")


@pytest.mark.parametrize(
    ("environ", "error"),
    [
        ({}, "environment variable HEALTH_TOKEN is not set"),
        ({"HEALTH_TOKEN": "  "}, "environment variable HEALTH_TOKEN is empty"),
        ({"HEALTH_TOKEN": "Bearer a\nX-Evil: 1"},
         "environment variable HEALTH_TOKEN holds a character not allowed in a header"),
        ({"HEALTH_TOKEN": "Bearer é"}, "environment variable HEALTH_TOKEN holds a character not allowed in a header"),
    ],
)
async def test_a_missing_or_bad_header_variable_is_an_error_on_that_check_only(
        service: Service, environ: dict[str, str], error: str) -> None:
    _auth_route(service)
    service.routes["/healthz"] = lambda handler: reply(handler, 200, b"{}")
    broken, fine = await probe_all({"prod": [
        check(service.url("/auth"), name="auth", headers=(("Authorization", "HEALTH_TOKEN"),)),
        check(service.url("/healthz"), name="plain"),
    ]}, clock=clock, environ=environ)
    assert (broken.state, broken.status_code, broken.latency_ms, broken.error) == (DOWN, None, None, error)
    assert (fine.state, fine.error) == (UP, "")
    assert [path for path, _ in service.requests] == ["/healthz"]  # the broken check sent nothing
    assert "s3cret" not in broken.error


# -- the round ----------------------------------------------------------------------------------


async def test_concurrency_bounds_the_probes_in_flight(service: Service) -> None:
    def slow(handler: _Handler) -> None:
        time.sleep(0.15)
        reply(handler, 200, b"{}")

    service.routes["/slow"] = slow
    checks = [check(service.url("/slow"), name=f"c{index}") for index in range(8)]
    samples = await probe_all({"prod": checks}, concurrency=3, clock=clock)
    assert [(s.check, s.state, s.error) for s in samples] == [(f"c{i}", UP, "") for i in range(8)]
    assert service.max_in_flight == 3


async def test_probe_all_with_nothing_to_probe() -> None:
    assert await probe_all({}) == [] and await probe_all({"prod": []}) == []


def test_probe_round_runs_one_round_synchronously_in_order(service: Service) -> None:
    service.routes["/a"] = json_reply({"v": "1"})
    service.routes["/b"] = lambda handler: reply(handler, 503, b"")
    times = iter([NOW, NOW + timedelta(seconds=1), NOW + timedelta(seconds=2)])
    samples = probe_round({"prod": [check(service.url("/a"), name="a", version="v")],
                           "staging": [check(service.url("/b"), name="b")]},
                          concurrency=1, clock=lambda: next(times))
    assert [(s.env, s.check, s.state, s.version, s.error) for s in samples] == [
        ("prod", "a", UP, "1", ""), ("staging", "b", DOWN, None, "HTTP 503")]
    assert [s.at for s in samples] == [to_iso(NOW), to_iso(NOW + timedelta(seconds=1))]


async def test_probe_with_a_client_of_its_own(service: Service) -> None:
    """probe() is the unit a long-lived prober calls with its own client from new_client()."""
    from backend.health import new_client

    service.routes["/healthz"] = json_reply({})
    async with new_client(2) as client:
        sample = await probe(client, "prod", check(service.url("/healthz")), now=NOW)
    assert (sample.state, sample.error, sample.at) == (UP, "", to_iso(NOW))


def test_importing_health_does_not_import_httpx() -> None:
    """httpx costs ~90 ms: the dashboard's first frame and non-probing commands must not pay it."""
    code = "import sys, backend.health, backend.config; print('httpx' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).parent.parent, env={**os.environ, "PYTHONPATH": "."})
    assert done.stdout.strip() == "False"


# -- the model: an environment's state ---------------------------------------------------------

API = HealthCheck("api", "http://x/", interval=5.0, timeout=1.0)
WEB = HealthCheck("web", "http://y/", interval=60.0, timeout=1.0)


def sample(name: str, state: str, age: float = 1.0) -> HealthSample:
    return HealthSample("prod", name, to_iso(NOW - timedelta(seconds=age)), state, 200, 10.0, None)


@pytest.mark.parametrize(
    ("latest", "expected"),
    [
        ({"api": sample("api", UP), "web": sample("web", UP)}, HEALTHY),
        ({"api": sample("api", UP), "web": sample("web", DEGRADED)}, DEGRADED),
        ({"api": sample("api", DOWN), "web": sample("web", UP)}, DEGRADED),  # some down, not all
        ({"api": sample("api", DOWN), "web": sample("web", DEGRADED)}, DEGRADED),
        ({"api": sample("api", DOWN), "web": sample("web", DOWN)}, DOWN),
        ({}, UNKNOWN),  # no data yet
        ({"api": None, "web": None}, UNKNOWN),
        ({"api": sample("api", UP, age=16), "web": sample("web", UP, age=181)}, UNKNOWN),  # all stale
        # Staleness is per check: 16 s is stale for a 5 s interval, fresh for a 60 s one.
        ({"api": sample("api", UP, age=16), "web": sample("web", UP, age=16)}, DEGRADED),
        ({"api": sample("api", UP, age=15), "web": sample("web", UP, age=180)}, HEALTHY),  # exactly 3 intervals
        ({"api": sample("api", DOWN), "web": None}, DEGRADED),  # one down, one not known: not all down
        ({"api": sample("api", UP), "web": sample("web", UP), "gone": sample("gone", DOWN)}, HEALTHY),
        ({"api": sample("api", UP, age=-30), "web": sample("web", UP)}, HEALTHY),  # another host's clock ahead
        ({"api": sample("api", UP)._replace(at="garbage"), "web": sample("web", UP)}, DEGRADED),
    ],
)
def test_environment_state(latest: dict[str, HealthSample | None], expected: str) -> None:
    assert environment_state(latest, [API, WEB], NOW) == expected


def test_an_environment_without_checks_is_unknown() -> None:
    assert environment_state({"api": sample("api", UP)}, [], NOW) == UNKNOWN


def test_one_check_environment() -> None:
    assert environment_state({"api": sample("api", UP)}, [API], NOW) == HEALTHY
    assert environment_state({"api": sample("api", DEGRADED)}, [API], NOW) == DEGRADED
    assert environment_state({"api": sample("api", DOWN)}, [API], NOW) == DOWN


# -- the model: version drift ----------------------------------------------------------------------


def never(ancestor: str, descendant: str) -> bool | None:
    raise AssertionError("git must not be asked")


@pytest.mark.parametrize(
    ("reported", "live"),
    [(None, SHA), ("", SHA), (SHA, None), (SHA, "")],
)
def test_no_drift_without_a_version_or_a_live_deploy(reported: str | None, live: str | None) -> None:
    assert version_drift(reported, live, never) is None


@pytest.mark.parametrize("reported", [SHA, SHA[:7], SHA[:12], SHA.upper(), f" {SHA[:10]}\n",
                                      f"v1.4.2-3-g{SHA[:9]}", f"v1.4.2-3-g{SHA[:9]}-dirty"])
def test_the_live_sha_or_a_prefix_of_it_matches(reported: str) -> None:
    assert version_drift(reported, SHA, never) == MATCH


@pytest.mark.parametrize("reported", ["v1.4.2", "main", "HEAD", SHA[:6], "--output=/tmp/x", "3f78685 extra"])
def test_a_version_that_is_not_a_sha_is_unknown_without_asking_git(reported: str) -> None:
    assert version_drift(reported, SHA, never) == UNKNOWN


def test_behind_drift_and_unknown_against_a_real_repository(repo: Repo) -> None:
    old = repo.commit("old")
    live = repo.commit("live")
    ahead = repo.commit("ahead")
    repo.git("checkout", "--quiet", "-b", "side", old)
    side = repo.commit("side")
    history = History(repo.path)
    asked: list[tuple[str, str]] = []

    def contains(ancestor: str, descendant: str) -> bool | None:
        asked.append((ancestor, descendant))
        return history.contains([(ancestor, descendant)])[(ancestor, descendant)]

    try:
        assert version_drift(old, live, contains) == BEHIND
        assert version_drift(old[:8], live, contains) == BEHIND  # a short SHA git can expand
        assert version_drift(ahead, live, contains) == DRIFT  # ahead of what is live
        assert version_drift(side, live, contains) == DRIFT  # on another line
        assert version_drift("0" * 40, live, contains) == UNKNOWN  # git does not know it
        assert version_drift(live, live, contains) == MATCH
    finally:
        history.close()
    assert len(asked) == 5  # once per answer that needs git, never for a match


def test_drift_asks_contains_with_the_commit_and_the_live_sha() -> None:
    calls: list[tuple[str, str]] = []

    def contains(ancestor: str, descendant: str) -> bool | None:
        calls.append((ancestor, descendant))
        return False

    assert version_drift("ABCDEF0123", SHA, contains) == DRIFT
    assert calls == [("abcdef0123", SHA)]


def test_caps_are_what_the_errors_say() -> None:
    assert BODY_CAP == 64 * 1024  # "body larger than 64 KiB"


def test_probes_run_on_uvloop_where_it_is_installed() -> None:
    """andon health, andon watch and the dashboard's prober all start their loop through run()/new_event_loop()."""
    from backend.health import run

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    expected = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    assert run(which()).split(".")[0] == expected
