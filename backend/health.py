"""Health checks: probing a running service over HTTP, and what the samples mean.

:func:`probe_all` (async) and :func:`probe_round` (sync, for the CLI) probe every
configured check once and return one :class:`~backend.models.HealthSample` per
check; :func:`environment_state` and :func:`version_drift` are the pure model
that turns samples into an environment's state and a version into drift.

The prober is built for services that misbehave:

* every check runs concurrently (a semaphore bounds how many), through one
  :class:`Prober` per round: one HTTP/1.1 connection per probe (:mod:`backend.http1`,
  h11 on asyncio streams: a fifth of the CPU of ``httpx.AsyncClient``, which carries
  every probe instead when the environment names a proxy), TLS verified, at most
  :data:`MAX_REDIRECTS` redirects, no cookies kept, and the configured secret headers
  (and credentials in the URL) dropped when a redirect leaves the check's origin;
* one deadline covers the whole probe, body included (``asyncio.timeout``): a read
  timeout (httpx's) is per chunk, so a server that drips a byte a second would hold it
  for ever. A server that accepts and never answers is down after the check's
  ``timeout`` and never stalls the other checks;
* at most :data:`BODY_CAP` bytes of body are read, counted *after* decompression,
  which andon does itself with a bounded ``zlib`` call: httpx's ``aiter_bytes()``
  inflates a whole network chunk at once, and a 50 KB gzip bomb became 50 MB (a
  135 MB peak) before any cap could look at it. A 1 GB body or a gzip bomb costs
  kilobytes;
* every failure is one short, cleaned line (``connection refused``, ``timed out
  after 2s``, ``HTTP 500``, ``no build.sha in the JSON body``), and the only text
  taken from a server, the version it reports, goes through
  :func:`backend.text.clean_line` and is capped at :data:`VERSION_CAP` characters.
  Nothing here is markup: the dashboard shows these strings as plain text.

A check's state after one probe:

* ``down``: no response (refused, DNS, TLS, reset, timed out, too many redirects,
  a header variable not set), or a status the check does not expect (default:
  any 2xx). The error says which.
* ``degraded``: an expected status, slower than ``degraded_ms`` (the whole probe).
* ``up``: otherwise.

The version does not decide the state: a version that cannot be read (no such key,
a body that is not JSON, binary or over the cap, no such header) is the sample's
``error`` while the state stays what the status and latency say. The service
answers; what it runs is a question for :func:`version_drift`.

httpx (~90 ms to import) is imported inside the functions that probe, so the
dashboard's first frame and the commands that never probe do not pay for it.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from backend.config import HealthCheck
from backend.models import DEGRADED, DOWN, HEALTHY, UNKNOWN, UP, HealthSample, from_iso, to_iso, utc_now
from backend.text import clean_line

if TYPE_CHECKING:
    import ssl

    import httpx

BODY_CAP = 64 * 1024  # decompressed bytes of body read at most
RAW_CAP = 2 * BODY_CAP  # bytes off the wire at most (a compressed body that inflates to little)
VERSION_CAP = 100  # characters of a reported version kept
ERROR_CAP = 160  # characters of an error kept
MAX_REDIRECTS = 5
DEFAULT_CONCURRENCY = 50
STALE_INTERVALS = 3  # a check's latest sample older than this many intervals says nothing
USER_AGENT = "andon-health"

# Version drift: how a reported version relates to the live deploy's SHA (and UNKNOWN).
MATCH = "match"
BEHIND = "behind"
DRIFT = "drift"
DRIFT_STATES = (MATCH, BEHIND, DRIFT, UNKNOWN)

_SECRETS = "andon.secret_headers"  # request extension: (origin, header names) to drop elsewhere
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]+\Z")  # what httpx sends as is (ASCII, no controls)
_HEX_SHA = re.compile(r"^[0-9a-f]{7,40}\Z")
_DESCRIBE_SHA = re.compile(r"-g([0-9a-f]{7,40})(?:-dirty)?\Z")  # git describe: v1.2-3-gabc1234


T = TypeVar("T")


class _ProbeError(Exception):
    """A failure of one check, already said as the one line a person sees."""


# -- the prober ------------------------------------------------------------------------


def _short(text: str, cap: int) -> str:
    text = clean_line(text).strip()
    return text if len(text) <= cap else text[: cap - 1] + "…"


def _request_headers(check: HealthCheck, environ: Mapping[str, str]) -> dict[str, str]:
    """The check's headers with their values from the environment, read now (not at config load)."""
    headers: dict[str, str] = {}
    for header, variable in check.headers:
        value = environ.get(variable)
        if value is None:
            raise _ProbeError(f"environment variable {variable} is not set")
        value = value.strip()
        if not value:
            raise _ProbeError(f"environment variable {variable} is empty")
        if not _HEADER_VALUE.match(value):
            # Never show the value: it is a secret.
            raise _ProbeError(f"environment variable {variable} holds a character not allowed in a header")
        headers[header] = value
    return headers


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default


_HEADERS = (("User-Agent", USER_AGENT), ("Accept", "application/json, */*;q=0.5"),
            ("Accept-Encoding", "gzip, deflate"))
_HEADER_BYTES = tuple((name.encode(), value.encode()) for name, value in _HEADERS)
_REDIRECTS = frozenset((301, 302, 303, 307, 308))


async def _drop_secrets_elsewhere(request: httpx.Request) -> None:
    """A request hook: a redirect to another origin (or from https to http) does not get the
    check's secret headers. httpx itself only drops ``Authorization``."""
    guard = request.extensions.get(_SECRETS)
    if guard and _origin(request.url) != guard[0]:
        for name in guard[1]:
            request.headers.pop(name, None)


@lru_cache(maxsize=1024)
def _url(text: str) -> httpx.URL:
    """A check's URL, parsed once (a probe a second would otherwise parse it a second)."""
    import httpx

    return httpx.URL(text)


@cache
def tls_context() -> ssl.SSLContext:
    """The verifying TLS context, built once: loading the CA bundle is the costly part of a client."""
    import httpx

    return httpx.create_ssl_context()


def _proxied() -> bool:
    """Whether the environment names a proxy (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, either case)."""
    import urllib.request

    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


def _httpx_client(concurrency: int) -> httpx.AsyncClient:
    """The ``httpx.AsyncClient`` probes go through when a proxy is configured."""
    from http.cookiejar import CookieJar, DefaultCookiePolicy

    import httpx

    # Each probe sets its own timeouts; these bound anything that does not.
    timeout = httpx.Timeout(connect=2.0, read=2.0, write=2.0, pool=2.0)
    return httpx.AsyncClient(
        verify=tls_context(),
        timeout=timeout,
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        # No idle connections kept: httpcore's pool checks every idle connection (a poll()
        # each) for every queued request, and with 50 kept a round of 500 local checks cost
        # 4.6 s of CPU against 1.4 s without (keep-alive saves little at 5 s intervals).
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=0),
        headers=dict(_HEADERS),
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        event_hooks={"request": [_drop_secrets_elsewhere]},
    )


class _Answer(Protocol):
    """A response whose body is still to read: ``httpx.Response`` or :class:`backend.http1.Response`."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...  # .get() is case-insensitive in both

    def aiter_raw(self) -> AsyncIterator[bytes]: ...


class Prober:
    """What :func:`probe` sends its requests through (``async with new_client() as prober``).

    Directly (:mod:`backend.http1`: one connection per probe, a fifth of httpx's CPU), or,
    when the environment names a proxy, through an ``httpx.AsyncClient``, which honours
    ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` and ``NO_PROXY`` as any httpx program does.
    Either way: TLS verified with the same context, at most :data:`MAX_REDIRECTS`
    redirects, no cookies kept, the check's secret headers only sent to its own origin.
    """

    def __init__(self, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self._client = _httpx_client(concurrency) if _proxied() else None

    async def __aenter__(self) -> Prober:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()

    @asynccontextmanager
    async def get(self, url: httpx.URL, headers: dict[str, str], timeout: float) -> AsyncIterator[_Answer]:
        """GET ``url`` with the check's ``headers``, following redirects: the final answer, body unread."""
        if self._client is not None:
            import httpx

            extensions = {_SECRETS: (_origin(url), tuple(headers))} if headers else {}
            async with self._client.stream("GET", url, headers=headers, extensions=extensions,
                                           timeout=httpx.Timeout(timeout)) as response:
                yield response
            return
        async with _get_direct(url, headers) as answer:
            yield answer


@asynccontextmanager
async def _get_direct(url: httpx.URL, headers: dict[str, str]) -> AsyncIterator[_Answer]:
    import base64

    import httpx

    from backend import http1

    origin = _origin(url)
    for _ in range(MAX_REDIRECTS + 1):
        if url.scheme not in ("http", "https"):
            raise _ProbeError("redirected to a URL that is not http or https")
        if not url.host:
            raise _ProbeError("redirected to a URL without a host")
        send = [(b"Host", url.netloc), *_HEADER_BYTES]
        if _origin(url) == origin:  # secrets (and credentials in the URL) stay with their origin
            send += [(name.encode("ascii"), value.encode("ascii")) for name, value in headers.items()]
            if url.userinfo and "authorization" not in {name.lower() for name in headers}:
                send.append((b"Authorization", b"Basic " + base64.b64encode(
                    f"{url.username}:{url.password}".encode())))
        tls = tls_context() if url.scheme == "https" else None
        response = await http1.get(url.raw_host.decode("ascii"), _origin(url)[2] or 80, url.raw_path, send,
                                   tls=tls)
        location = response.headers.get("location") if response.status_code in _REDIRECTS else None
        if location is None:
            try:
                yield response
            finally:
                response.close()
            return
        response.close()
        try:
            url = url.join(location)
        except httpx.InvalidURL:
            raise _ProbeError("redirected to an invalid URL") from None
    raise _ProbeError("too many redirects")


def new_client(concurrency: int = DEFAULT_CONCURRENCY) -> Prober:
    """The :class:`Prober` that :func:`probe` expects, with room for ``concurrency`` probes at once."""
    return Prober(concurrency)


class _Inflater:
    """Bounded decompression of a gzip or deflate body: never more than ``limit`` bytes out."""

    def __init__(self, encoding: str) -> None:
        self._deflate = encoding == "deflate"
        self._started = False
        # gzip; deflate is zlib-wrapped (RFC 9110), though some servers send it raw.
        self._z = zlib.decompressobj(zlib.MAX_WBITS if self._deflate else 16 + zlib.MAX_WBITS)

    def feed(self, data: bytes, limit: int) -> bytes:
        try:
            out = self._z.decompress(data, limit)
        except zlib.error:
            if not (self._deflate and not self._started):
                raise _ProbeError("body is not valid compressed data") from None
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)
            try:
                out = self._z.decompress(data, limit)
            except zlib.error:
                raise _ProbeError("body is not valid compressed data") from None
        self._started = True
        return out


async def _read_body(response: _Answer) -> tuple[bytes, bool, str]:
    """Up to :data:`BODY_CAP` decoded bytes of the body: ``(body, over_cap, why_unreadable)``."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    inflater: _Inflater | None = None
    unreadable = ""
    if encoding in ("gzip", "x-gzip", "deflate"):
        inflater = _Inflater(encoding)
    elif encoding not in ("", "identity"):
        unreadable = _short(f"body is compressed as {encoding!r}, which andon cannot read", ERROR_CAP)
    chunks: list[bytes] = []
    size = raw_size = 0
    async for raw in response.aiter_raw():
        raw_size += len(raw)
        if unreadable:
            data = b""
        elif inflater is not None:
            try:
                data = inflater.feed(raw, BODY_CAP + 1 - size)
            except _ProbeError as error:
                unreadable = str(error)
                data = b""
        else:
            data = raw[: BODY_CAP + 1 - size]
        chunks.append(data)
        size += len(data)
        if size > BODY_CAP or raw_size > RAW_CAP:
            return b"".join(chunks)[:BODY_CAP], True, unreadable
    return b"".join(chunks), False, unreadable


def _clean_version(value: str, empty: str) -> tuple[str | None, str]:
    version = _short(value, VERSION_CAP)
    return (version, "") if version else (None, empty)


def _json_version(body: bytes, path: str) -> tuple[str | None, str]:
    if b"\x00" in body:
        return None, "body is binary"
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None, "body is binary"
    try:
        value: Any = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." 64 KiB deep
        return None, "body is not JSON"
    shown = _short(path, 60)
    for key in path.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isascii() and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None, f"no {shown} in the JSON body"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None, f"{shown} in the JSON body is not a string"
    return _clean_version(str(value), f"{shown} in the JSON body is empty")


def _version(check: HealthCheck, response: _Answer, body: bytes, over_cap: bool,
             unreadable: str) -> tuple[str | None, str]:
    """The version the response reports, cleaned, or None and why not."""
    spec = check.version
    if spec is None:
        return None, ""
    if spec.startswith("header:"):
        name = spec[len("header:"):]
        value = response.headers.get(name)
        if value is None:
            return None, f"no {name} header"
        return _clean_version(value, f"{name} header is empty")
    if unreadable:
        return None, unreadable
    if over_cap:
        return None, f"body larger than {BODY_CAP // 1024} KiB"
    return _json_version(body, spec)


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error``, what caused it, and the members of any exception group on the way."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                todo.append(linked)


def describe_failure(error: Exception, host: str = "") -> str:
    """One short line for why a request got no (complete) response; ``host`` names the server
    when the error does not (the prober's wording, also the chat notifiers')."""
    import socket
    import ssl

    import httpx

    from backend import http1

    if isinstance(error, http1.BadResponse):
        return str(error)
    if isinstance(error, httpx.TooManyRedirects):
        return "too many redirects"
    if isinstance(error, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return "redirected to a URL that is not http or https"
    try:
        host = (error.request.url.host if isinstance(error, httpx.RequestError) else "") or host
    except RuntimeError:  # no request attached
        pass
    for cause in _causes(error):
        if isinstance(cause, socket.gaierror):
            return f"DNS lookup failed for host {host}"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted: {cause.verify_message or 'verification failed'}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake failed: {cause.reason or 'error'}"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
            return "connection reset"
        if isinstance(cause, OSError) and cause.errno == errno.ENETUNREACH:
            return "network unreachable"
        if isinstance(cause, OSError) and cause.errno == errno.EHOSTUNREACH:
            return f"host {host} unreachable"
    text = str(error)
    if isinstance(error, httpx.RemoteProtocolError):
        if "without sending a response" in text:
            return "server closed the connection without a response"
        if "complete message body" in text or "incomplete" in text:
            return "connection closed mid-response"
        return "invalid HTTP response"
    if isinstance(error, (httpx.ReadError, http1.ExchangeFailed)):
        return "connection lost while reading the response"
    if isinstance(error, httpx.WriteError):
        return "connection lost while sending the request"
    if isinstance(error, (httpx.ConnectError, http1.ConnectFailed)):
        return f"could not connect to {host}"
    return f"request failed ({type(error).__name__})"


async def probe(prober: Prober, env: str, check: HealthCheck, *, now: datetime,
                environ: Mapping[str, str] | None = None) -> HealthSample:
    """Probe ``check`` once through ``prober`` (from :func:`new_client`): never raises, never
    takes longer than ``check.timeout``. ``now`` is when the probe starts (the sample's
    ``at``); header values come from ``environ`` (default: ``os.environ``)."""
    import httpx

    from backend import http1

    at = to_iso(now)

    def down(error: str, status: int | None = None, latency: float | None = None,
             version: str | None = None) -> HealthSample:
        return HealthSample(env, check.name, at, DOWN, status, latency, version, _short(error, ERROR_CAP))

    try:
        headers = _request_headers(check, os.environ if environ is None else environ)
    except _ProbeError as error:
        return down(str(error))
    url = _url(check.url)
    limit = check.timeout
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            async with prober.get(url, headers, limit) as response:
                body, over_cap, unreadable = await _read_body(response)
    except (TimeoutError, httpx.TimeoutException):
        return down(f"timed out after {limit:g}s")
    except _ProbeError as error:
        return down(str(error))
    except (httpx.HTTPError, http1.ConnectFailed, http1.ExchangeFailed, http1.BadResponse) as error:
        return down(describe_failure(error, url.host))
    except OSError as error:  # not wrapped: say what it is, never crash the round
        return down(clean_line(error.strerror or type(error).__name__).lower())
    except Exception as error:  # one bad check must not end the round
        return down(f"probe failed ({type(error).__name__})")
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    status = response.status_code
    version, version_error = _version(check, response, body, over_cap, unreadable)
    expected = status in check.expect if check.expect else 200 <= status < 300
    if not expected:
        return down(f"HTTP {status}", status, latency_ms, version)
    slow = check.degraded_ms is not None and latency_ms > check.degraded_ms
    return HealthSample(env, check.name, at, DEGRADED if slow else UP, status, latency_ms, version,
                        version_error)


async def probe_all(env_checks: Mapping[str, Sequence[HealthCheck]], *,
                    concurrency: int = DEFAULT_CONCURRENCY, clock: Callable[[], datetime] = utc_now,
                    environ: Mapping[str, str] | None = None) -> list[HealthSample]:
    """Probe every check of every environment once, ``concurrency`` at a time, on one client.

    The samples come back in the order of ``env_checks`` and its checks. Each probe's
    ``at`` is ``clock()`` when it starts (after waiting its turn), so its latency is its own.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    work = [(env, check) for env, checks in env_checks.items() for check in checks]
    if not work:
        return []
    turn = asyncio.Semaphore(concurrency)
    async with new_client(concurrency) as prober:

        async def one(env: str, check: HealthCheck) -> HealthSample:
            async with turn:
                return await probe(prober, env, check, now=clock(), environ=environ)

        runs: list[Awaitable[HealthSample]] = [one(env, check) for env, check in work]
        return list(await asyncio.gather(*runs))


def probe_round(env_checks: Mapping[str, Sequence[HealthCheck]], *,
                concurrency: int = DEFAULT_CONCURRENCY, clock: Callable[[], datetime] = utc_now,
                environ: Mapping[str, str] | None = None) -> list[HealthSample]:
    """:func:`probe_all` from synchronous code (``andon health``): one round, now."""
    return run(probe_all(env_checks, concurrency=concurrency, clock=clock, environ=environ))


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The event loop probes run on: uvloop's where it is installed (not on Windows), else asyncio's.

    On uvloop a probe's connection costs less than half the CPU (``benchmarks.health``);
    everything the prober uses (streams, TLS, ``asyncio.timeout``, ``to_thread``) works on both.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on :func:`new_event_loop`'s loop."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


# -- the model -------------------------------------------------------------------------


def _fresh(sample: HealthSample | None, check: HealthCheck, now: datetime) -> HealthSample | None:
    if sample is None:
        return None
    try:
        at = from_iso(sample.at)
    except ValueError:
        return None
    # A sample from the future (another host's clock) counts as fresh.
    return sample if now - at <= timedelta(seconds=STALE_INTERVALS * check.interval) else None


def environment_state(latest: Mapping[str, HealthSample | None], checks: Sequence[HealthCheck],
                      now: datetime) -> str:
    """An environment's state from each check's latest sample (``latest`` by check name).

    A sample is *fresh* when it started at most :data:`STALE_INTERVALS` of its
    check's intervals before ``now``; older ones, and samples of checks that are not
    configured, say nothing.

    * ``unknown``: no check configured, or no check has a fresh sample (nobody probes);
    * ``healthy``: every check has a fresh sample, and all are up;
    * ``down``: every check has a fresh sample, and all are down;
    * ``degraded``: anything between: a check degraded, some checks down but not
      all, or some checks without fresh data while others have it (something is
      wrong, and not everything is known to be down).
    """
    if not checks:
        return UNKNOWN
    states = []
    for check in checks:
        sample = _fresh(latest.get(check.name), check, now)
        states.append(sample.state if sample is not None else UNKNOWN)
    if all(state == UNKNOWN for state in states):
        return UNKNOWN
    if all(state == UP for state in states):
        return HEALTHY
    if all(state == DOWN for state in states):
        return DOWN
    return DEGRADED


def _commit_of(version: str) -> str | None:
    """The commit a reported version names, lower-case hex, or None when it names none.

    A SHA of 7 to 40 hex digits, or ``git describe`` output (``v1.2-3-gabc1234``).
    Anything else (``v1.2.3``, ``main``, ``HEAD``) is not looked up: it would be read
    against this clone's refs, which are not what the service was built from.
    """
    text = version.strip().lower()
    if _HEX_SHA.match(text):
        return text
    described = _DESCRIBE_SHA.search(text)
    return described.group(1) if described else None


def version_drift(reported: str | None, live_sha: str | None,
                  contains: Callable[[str, str], bool | None]) -> str | None:
    """How the version a check reports relates to the live deploy's SHA.

    * None: no version reported, or nothing is live;
    * ``match``: the reported version is the live SHA, or a prefix of it of 7 or more hex digits;
    * ``behind``: a commit that is an ancestor of the live SHA (an older build still running);
    * ``drift``: a commit that is not an ancestor (ahead of the live SHA, or on another line);
    * ``unknown``: not a commit andon can place: not a SHA (``v1.2.3``), or one git does not know.

    ``contains(ancestor, descendant)`` answers "is ``ancestor`` the descendant or one of its
    ancestors?" with None when either is not a commit git knows (the caller backs it with
    :meth:`backend.history.History.contains`). It is called at most once, and not at all for
    a match or a version that is not a SHA.
    """
    if not reported or not live_sha:
        return None
    commit = _commit_of(reported)
    if commit is None:
        return UNKNOWN
    live = live_sha.strip().lower()
    if live.startswith(commit) or (len(live) >= 7 and commit.startswith(live)):
        return MATCH
    answer = contains(commit, live)
    if answer is None:
        return UNKNOWN
    return BEHIND if answer else DRIFT
