"""Chat notifiers: the log's outbox delivered to Slack, Mattermost, Discord, Teams and signed webhooks.

Events that chat hears of get their outbox rows in the transaction that writes them
(:mod:`backend.store.outbox`); this module sends them. :func:`deliver_pending` is the one
entry point: any andon calls it (the dashboard in a thread worker, ``andon watch`` between
rounds, a command after its own writes, ``andon notify``), and whatever is due goes out.

**Once per receiver, in order.** A receiver's rows are sent by whoever holds its lease
(``outbox:KIND:URL_ENV``, taken and renewed under ``BEGIN IMMEDIATE`` before each send): one
at a time, oldest first, each settled before the next is read. Several andons delivering at
once never send a row twice; a holder that dies is taken over (at once on this host, when its
lease expires elsewhere). A lease lasts :attr:`Policy.claim` seconds, far longer than a try
can take (each is bounded as a whole by ``asyncio.timeout``), so a live holder never loses it
mid-send. One window remains, as in any outbox: a holder killed after the receiver took a
message but before it wrote so is followed by a second send of that message. It carries the
same ``Idempotency-Key`` (header, and ``idempotency_key`` in a webhook's body): a webhook
receiver drops what it has seen; chat services have no such key.

**Retries.** A receiver that cannot be reached, times out, or answers 5xx or 408 is tried
again after a backoff that doubles from :attr:`Policy.first_retry` up to
:attr:`Policy.max_retry`, with jitter (each wait is between half and all of it); a 429 waits
what its ``Retry-After`` says (seconds or an HTTP date), else the backoff. The row at the head
of a receiver holds back the rows after it (order first). Any other 4xx (or a redirect: a
webhook URL does not move) puts the row in the dead-letter state with the one-line reason, and
the next goes; a row still undelivered after :attr:`Policy.give_up` goes dead too. The URL is
read from the variable ``url_env`` names when sending: unset, empty or not http(s), the row
waits with that one-line error and nothing is sent; the same for a webhook's ``secret_env``
(a webhook with a secret is never sent unsigned).

**Formats** are :mod:`backend.chat`'s (what each message says and how each receiver's format
writes it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import hmac
import json
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from backend import ANDON_VERSION
from backend.chat import Announcement, Message, gather, looks_like_time, message, payload, skip_reason
from backend.config import Notifier
from backend.models import from_iso
from backend.store import holder_id
from backend.store.outbox import DEAD, DELIVERED, PENDING, SKIPPED, OutboxItem, Settlement
from backend.text import clean_line, decode, has_controls

if TYPE_CHECKING:
    import httpx

    from backend.store import DeployLog
    from backend.world import World


class Policy(NamedTuple):
    """How hard delivery tries (seconds)."""

    timeout: float = 10.0  # one try, as a whole: connecting, sending, the answer
    first_retry: float = 5.0  # the wait before the first retry; doubled each time
    max_retry: float = 600.0  # the longest wait between two tries
    max_retry_after: float = 86400.0  # the longest Retry-After honoured
    give_up: float = 86400.0  # a message still undelivered this long after its event goes dead
    claim: float = 120.0  # a receiver's lease, renewed before each send (at least 3 tries long)


POLICY = Policy()
DEFAULT_LIMIT = 20  # messages sent to one receiver by one call
ANSWER_EXCERPT = 120  # characters of a refusing receiver's answer kept in the reason



# -- what delivery reports ------------------------------------------------------------


class Waiting(NamedTuple):
    """A message not delivered yet, why, and when it is tried next (None: when that changes)."""

    item: OutboxItem
    why: str
    next_try: str | None

    def to_json(self) -> dict[str, Any]:
        return self.item.to_json() | {"why": self.why, "next_try": self.next_try}


class Report(NamedTuple):
    """What one :func:`deliver_pending` call delivered, and what waits and is dead in the log."""

    delivered: tuple[OutboxItem, ...]
    waiting: tuple[Waiting, ...]
    dead: tuple[OutboxItem, ...]

    def to_json(self) -> dict[str, Any]:
        return {"delivered": [item.to_json() for item in self.delivered],
                "waiting": [waiting.to_json() for waiting in self.waiting],
                "dead": [item.to_json() for item in self.dead]}


# -- delivering -----------------------------------------------------------------------


def deliver_pending(source: World | DeployLog, receivers: Sequence[Notifier] | None = None, *,
                    environ: Mapping[str, str] | None = None, now: datetime | None = None,
                    limit: int = DEFAULT_LIMIT, policy: Policy = POLICY) -> Report:
    """Send what is due in the outbox now, and report (see the module's docstring).

    ``source`` is a :class:`~backend.world.World` (its log, its configuration's receivers) or
    a log (``receivers``, default the ones it announces to). Rows of a receiver this andon is
    not configured for wait for an andon that is. ``environ`` holds the URL and secret
    variables (default ``os.environ``); ``now`` is when the call starts (default: the log's
    clock); at most ``limit`` messages go to each receiver. Blocks until done (receivers are
    served concurrently on an event loop of its own; a try lasts at most ``policy.timeout``):
    call it from a worker thread (called on a thread that runs an event loop, it runs in a
    helper thread and still blocks that loop). Raises :class:`~backend.store.StoreError` if the log cannot be read or
    written; a receiver's trouble is never an exception, it is in the report.
    """
    from backend.world import World

    if isinstance(source, World):
        log, wanted = source.log, tuple(source.config.notifiers if receivers is None else receivers)
    else:
        log, wanted = source, tuple(source.receivers if receivers is None else receivers)
    environ = os.environ if environ is None else environ
    start, began = now or from_iso(log.now()), time.monotonic()

    def clock() -> datetime:
        return start + timedelta(seconds=time.monotonic() - began)

    busy: dict[str, str] = {}
    delivered: list[OutboxItem] = []
    moment = _iso(start)
    due = {head.receiver for head in log.outbox_heads() if _due(head, moment)}
    serve = [receiver for receiver in wanted if receiver.key in due]
    if serve and limit > 0:
        _run_blocking(lambda: _deliver_all(log, serve, environ, clock, limit, policy, busy, delivered))
    return _report(log, wanted, busy, delivered, clock())


def outbox_report(source: World | DeployLog, receivers: Sequence[Notifier] | None = None, *,
                  now: datetime | None = None) -> Report:
    """What waits (and why) and what is dead, sending nothing: for a screen that lists them."""
    return deliver_pending(source, receivers, now=now, limit=0)


def _run_blocking(main: Callable[[], Any]) -> None:
    """Run the delivery's event loop here, or in a helper thread when this thread already runs one."""
    from backend.health import run

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        run(main())
        return
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="andon-notify") as pool:
        pool.submit(lambda: run(main())).result()


async def _deliver_all(log: DeployLog, receivers: Sequence[Notifier], environ: Mapping[str, str],
                       clock: Callable[[], datetime], limit: int, policy: Policy, busy: dict[str, str],
                       delivered: list[OutboxItem]) -> None:
    import httpx

    from backend.health import tls_context

    holder = holder_id()
    timeout = httpx.Timeout(policy.timeout, connect=min(policy.timeout, 5.0))
    # The prober's verifying TLS context, built once per process: a client building its own
    # cost 40 ms of every delivery (10 ms with it).
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, verify=tls_context(),
                                 headers={"User-Agent": f"andon/{ANDON_VERSION}"}) as client:
        outcomes = await asyncio.gather(
            *(_deliver_to(log, client, receiver, holder, environ, clock, limit, policy, busy, delivered)
              for receiver in receivers), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


async def _deliver_to(log: DeployLog, client: httpx.AsyncClient, receiver: Notifier, holder: str,
                      environ: Mapping[str, str], clock: Callable[[], datetime], limit: int, policy: Policy,
                      busy: dict[str, str], delivered: list[OutboxItem]) -> None:
    """Send ``receiver``'s due rows in order, under its lease, until one waits or ``limit`` went."""
    lease = f"outbox:{receiver.key}"
    claim = max(policy.claim, 3 * policy.timeout)
    taken = False
    try:
        for _ in range(limit):
            # Renewed before each send: a holder that is still sending never loses it.
            if not log.take_lease(lease, holder, claim):
                held = log.lease(lease)
                busy[receiver.key] = (f"another andon ({held.host} pid {held.pid}) is delivering to {receiver.key}"
                                      if held else f"another andon is delivering to {receiver.key}")
                return
            taken = True
            item = log.outbox_head(receiver.key)
            if item is None or not _due(item, _iso(clock())):
                return
            settlement = await _attempt(log, client, receiver, item, environ, clock(), policy)
            stamp = clock()
            if log.settle_outbox(item, settlement, now=stamp) and settlement.state == DELIVERED:
                delivered.append(item._replace(state=DELIVERED, attempts=item.attempts + 1, done_at=_iso(stamp),
                                               error=""))
            if settlement.state == PENDING:
                return
    finally:
        if taken:
            log.release_lease(lease, holder)


async def _attempt(log: DeployLog, client: httpx.AsyncClient, receiver: Notifier, item: OutboxItem,
                   environ: Mapping[str, str], now: datetime, policy: Policy) -> Settlement:
    """One try at ``item``: never raises for the receiver's sake, says what became of it."""
    import httpx

    url, problem = webhook_url(receiver, environ)
    secret = ""
    if not problem and receiver.secret_env:
        secret = environ.get(receiver.secret_env, "")
        if not secret:
            problem = (f"environment variable {receiver.secret_env} is not set (it holds the webhook's signing "
                       "secret; the message is not sent unsigned)")
    if problem:
        return Settlement(PENDING, problem, attempted=False)
    announcement = gather(log, item)
    try:
        said = message(announcement)
        if said is None:
            return Settlement(SKIPPED, skip_reason(announcement), attempted=False)
        body, headers = request(receiver, announcement, said, secret=secret)
    except Exception as error:  # noqa: BLE001 - a row andon cannot put into words is dead, not a crash loop
        return Settlement(DEAD, f"could not write the message: {type(error).__name__}: {error}", attempted=False)
    try:
        async with asyncio.timeout(policy.timeout):
            async with client.stream("POST", url, content=body, headers=headers) as response:
                status, answer = response.status_code, response.headers
                excerpt = "" if 200 <= status < 300 else await _excerpt(response)
    except TimeoutError:
        return retry(item, f"timed out after {policy.timeout:g}s", now, policy)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol):
        return Settlement(PENDING, f"environment variable {receiver.url_env} does not hold an http:// or https:// URL",
                          attempted=False)
    except httpx.TimeoutException:
        return retry(item, f"timed out after {policy.timeout:g}s", now, policy)
    except httpx.HTTPError as error:
        return retry(item, _describe(error), now, policy)
    return judge(item, status, answer.get("retry-after"), excerpt, now, policy)


def judge(item: OutboxItem, status: int, retry_after: str | None, excerpt: str, now: datetime,
          policy: Policy) -> Settlement:
    """What a receiver's answer means for the row: delivered, later, or dead."""
    said = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
    if 200 <= status < 300:
        return Settlement(DELIVERED)
    if status == 429:
        wait = parse_retry_after(retry_after, now)
        if wait is not None:
            wait = min(wait, policy.max_retry_after)
            return retry(item, f"HTTP 429 rate limited: Retry-After {wait:g}s", now, policy, wait=wait)
        return retry(item, "HTTP 429 rate limited", now, policy)
    if status == 408 or status >= 500:
        return retry(item, said, now, policy)
    if 300 <= status < 400:
        return Settlement(DEAD, f"HTTP {status}: the webhook URL redirects (give the final URL)")
    if 400 <= status < 500:
        return Settlement(DEAD, said)
    return retry(item, said, now, policy)


def retry(item: OutboxItem, error: str, now: datetime, policy: Policy, *, wait: float | None = None) -> Settlement:
    """Try ``item`` again later (after ``wait``, else the backoff), or give it up once it is too old."""
    try:
        age = (now - from_iso(item.created_at)).total_seconds()
    except ValueError:
        age = 0.0
    if age > policy.give_up:
        return Settlement(DEAD, f"undelivered for {age / 3600:.0f} h; last: {error}")
    delay = backoff(item.attempts + 1, policy) if wait is None else wait
    return Settlement(PENDING, error, _iso(now + timedelta(seconds=delay)))


def backoff(attempt: int, policy: Policy, *, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the ``attempt``-th failed try: doubling, capped, between half and all of it."""
    ceiling = min(policy.max_retry, policy.first_retry * 2 ** min(max(attempt - 1, 0), 30))
    return ceiling / 2 + rand() * ceiling / 2


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` header as seconds from ``now`` (seconds or an HTTP date); None if it is neither."""
    from email.utils import parsedate_to_datetime

    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())


async def _excerpt(response: httpx.Response) -> str:
    """The start of a refusing receiver's answer, as one short clean line."""
    data = b""
    async for chunk in response.aiter_raw():
        data += chunk
        if len(data) >= 1024:
            break
    text = " ".join(clean_line(decode(data[:1024])).split())
    return text[:ANSWER_EXCERPT] + ("…" if len(text) > ANSWER_EXCERPT else "")


def _describe(error: Exception) -> str:
    """Why a request got no answer, in a few words (the prober's wording: ``connection refused``)."""
    from backend.health import describe_failure

    # The URL holds the receiver's secret token: the words name at most its host.
    return describe_failure(error)


def webhook_url(receiver: Notifier, environ: Mapping[str, str]) -> tuple[str, str]:
    """The receiver's URL from its variable, or "" and why it cannot be used (never quoting it)."""
    from urllib.parse import urlsplit

    raw = environ.get(receiver.url_env)
    if raw is None:
        return "", f"environment variable {receiver.url_env} is not set (it holds the {receiver.kind} webhook URL)"
    url = raw.strip()
    if not url:
        return "", f"environment variable {receiver.url_env} is empty (it holds the {receiver.kind} webhook URL)"
    try:
        parts = urlsplit(url)
        fine = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:
        fine = False
    if not fine or has_controls(url) or " " in url:
        return "", f"environment variable {receiver.url_env} does not hold an http:// or https:// URL"
    return url, ""


def _due(item: OutboxItem, moment: str) -> bool:
    # A time that is not one andon writes counts as due (another program wrote it).
    return not looks_like_time(item.next_at) or item.next_at <= moment


def _iso(moment: datetime) -> str:
    from backend.models import to_iso

    return to_iso(moment)


def _report(log: DeployLog, receivers: Sequence[Notifier], busy: Mapping[str, str],
            delivered: Sequence[OutboxItem], now: datetime) -> Report:
    configured = {receiver.key for receiver in receivers}
    moment = _iso(now)
    heads: dict[str, OutboxItem] = {}
    waiting = []
    for item in log.outbox((PENDING,)):
        head = heads.setdefault(item.receiver, item)
        if item.receiver not in configured:
            why, next_try = (f"{item.receiver} is not a receiver in this andon's configuration: an andon "
                             "configured with it delivers it"), None
        elif item.receiver in busy:
            why, next_try = busy[item.receiver], None
        elif head.id != item.id:
            why = f"behind message {head.id} to {item.receiver} (a receiver gets its messages in order)"
            next_try = max(head.next_at, item.next_at) if head.error else None
        elif item.error:
            why, next_try = item.error, max(item.next_at, moment)
        else:
            why, next_try = "due: goes with the next delivery", moment
        waiting.append(Waiting(item, why, next_try))
    return Report(tuple(delivered), tuple(waiting), tuple(log.outbox((DEAD,))))


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """``t=<timestamp>,v1=<hex of HMAC-SHA256(secret, "<timestamp>." + body)>``: the X-Andon-Signature header."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def request(receiver: Notifier, announcement: Announcement, said: Message, *, secret: str = "",
            timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and headers sent to ``receiver`` (signed when ``secret`` is given)."""
    body = json.dumps(payload(receiver.kind, announcement, said), ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")
    headers = {"Content-Type": "application/json; charset=utf-8", "Idempotency-Key": announcement.key}
    if receiver.kind == "webhook":
        headers["X-Andon-Event"] = announcement.item.kind
        if secret:
            headers["X-Andon-Signature"] = signature(secret, body, int(time.time()) if timestamp is None else timestamp)
    return body, headers

