"""Delivering the outbox: real webhook receivers on 127.0.0.1, a real SQLite file, real processes."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from backend.chat import ZWSP, discord_payload, gather, mattermost_payload, message, slack_payload, teams_payload
from backend.config import Notifier
from backend.models import to_iso
from backend.notify import POLICY, Policy, backoff, deliver_pending, outbox_report, parse_retry_after
from backend.store import DeployLog, holder_id
from backend.store.outbox import DEAD, DELIVERED, PENDING, SKIPPED
from tests.test_store_health import T0, Clock

ROOT = Path(__file__).resolve().parents[1]
FAST = Policy(timeout=0.5)


# -- a webhook receiver ---------------------------------------------------------------


class Received(NamedTuple):
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    late: bool  # answered after the sender's timeout: the sender counts it as not delivered

    @property
    def key(self) -> str:
        return self.headers["idempotency-key"]

    def json(self) -> Any:
        return json.loads(self.body)


class Answer(NamedTuple):
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b"ok"
    delay: float = 0.0


class Receiver:
    """An HTTP receiver on 127.0.0.1: answers from ``script`` (then ``default``) and keeps every request."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[Received] = []
        self.script: list[Answer] = []
        self.default = Answer()
        self.lock = threading.Lock()
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    answer = receiver.script.pop(0) if receiver.script else receiver.default
                    receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                      body, answer.status, answer.delay > 0))
                if answer.delay:
                    time.sleep(answer.delay)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers:
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, *_args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the default backlog of 5 gives false timeouts
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Down: the port is closed (connections are refused) until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def accepted(self, path: str | None = None) -> list[Received]:
        """What the receiver took: answered 2xx in time."""
        with self.lock:
            return [r for r in self.received if 200 <= r.status < 300 and not r.late
                    and (path is None or r.path == path)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def log(tmp_path: Path) -> Iterator[DeployLog]:
    opened = DeployLog.open(tmp_path / "deploys.db", clock=Clock())
    yield opened
    opened.close()


def stop_line(log: DeployLog, reason: str = "api down", env: str = "production", who: str = "alice") -> int:
    with log.immediate() as conn:
        return log.event(conn, "line.stopped", env, None, who, log.now(), reason=reason, automatic=False)


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def keys_in_order(log: DeployLog, receiver: Notifier) -> list[str]:
    """The idempotency key of each message owed to ``receiver``, in event order."""
    return [gather(log, item).key for item in log.outbox((PENDING, DELIVERED, DEAD)) if item.receiver == receiver.key]


# -- receivers that misbehave, then recover -------------------------------------------

SLACK = Notifier("slack", "SLACK_URL")
OTHER = Notifier("mattermost", "MATTERMOST_URL")


@pytest.mark.parametrize("trouble", ["down", "slow", "failing", "rate-limiting"])
def test_a_receiver_in_trouble_loses_nothing_repeats_nothing_and_holds_back_no_other(
        log: DeployLog, receiver: Receiver, trouble: str) -> None:
    log.announce_to([SLACK, OTHER], repository="shop")
    healthy = Receiver()
    try:
        environ = {"SLACK_URL": receiver.url("/slack"), "MATTERMOST_URL": healthy.url("/mm")}
        for number in range(3):
            stop_line(log, reason=f"message {number}")
        expected = keys_in_order(log, SLACK)
        if trouble == "down":
            receiver.stop()
        elif trouble == "slow":
            receiver.script = [Answer(delay=FAST.timeout + 1.0)]
        elif trouble == "failing":
            receiver.script = [Answer(500, body=b"oops"), Answer(503)]
        else:
            receiver.script = [Answer(429, (("Retry-After", "30"),))]
        report = deliver_pending(log, environ=environ, now=later(0), policy=FAST)
        # The other receiver got everything at once, in order.
        assert [r.key for r in healthy.accepted()] == keys_in_order(log, OTHER)
        assert len(report.delivered) == 3
        assert report.dead == ()
        # The troubled one: its first message waits, with why and when; the others wait behind it.
        first, *behind = [waiting for waiting in report.waiting if waiting.item.receiver == SLACK.key]
        assert first.item.attempts == 1 and first.next_try is not None and first.next_try > to_iso(later(0))
        assert {"down": "connection refused", "slow": "timed out after 0.5s", "failing": "HTTP 500: oops",
                "rate-limiting": "HTTP 429 rate limited: Retry-After 30s"}[trouble] == first.why
        assert [w.why.startswith(f"behind message {first.item.id}") for w in behind] == [True, True]
        if trouble == "rate-limiting":
            assert to_iso(later(30)) <= first.next_try < to_iso(later(31))  # 30 s after the answer came
            # Before the Retry-After has passed nothing is sent.
            deliver_pending(log, environ=environ, now=later(29), policy=FAST)
            assert len(receiver.received) == 1
        if trouble == "down":
            receiver.start()  # the same port, back up
        # Recovery: every message arrives once, in order (a failing one needs its second retry too).
        for minutes in range(1, 30):
            report = deliver_pending(log, environ=environ, now=later(60 * minutes), policy=FAST)
            if not report.waiting:
                break
        assert report.waiting == () and report.dead == ()
        assert [r.key for r in receiver.accepted()] == expected
        assert len(healthy.received) == 3  # the healthy receiver was never sent anything twice
        if trouble == "slow":
            # The late answer did reach the receiver: the retry carries the same key and body to drop it by.
            late = [r for r in receiver.received if r.late]
            assert [(r.key, r.body) for r in late] == [(receiver.accepted()[0].key, receiver.accepted()[0].body)]
    finally:
        healthy.stop()


def test_retry_after_as_an_http_date_is_honoured(log: DeployLog, receiver: Receiver) -> None:
    log.announce_to([SLACK])
    stop_line(log)
    receiver.script = [Answer(429, (("Retry-After", format_datetime(later(90), usegmt=True)),))]
    report = deliver_pending(log, environ={"SLACK_URL": receiver.url()}, now=later(0), policy=FAST)
    assert report.waiting[0].next_try is not None
    assert later(89) < datetime.fromisoformat(report.waiting[0].next_try.replace("Z", "+00:00")) <= later(91)
    deliver_pending(log, environ={"SLACK_URL": receiver.url()}, now=later(80), policy=FAST)
    assert len(receiver.received) == 1
    deliver_pending(log, environ={"SLACK_URL": receiver.url()}, now=later(95), policy=FAST)
    assert len(receiver.accepted()) == 1


def test_retry_after_parsing() -> None:
    assert parse_retry_after("120", T0) == 120
    assert parse_retry_after(" 0 ", T0) == 0
    assert parse_retry_after(format_datetime(later(30), usegmt=True), T0) == 30
    assert parse_retry_after(format_datetime(later(-30), usegmt=True), T0) == 0  # in the past: now
    assert parse_retry_after("soon", T0) is None
    assert parse_retry_after("-5", T0) is None
    assert parse_retry_after(None, T0) is None


def test_backoff_doubles_up_to_its_ceiling_with_jitter_between_half_and_all() -> None:
    policy = Policy(first_retry=5, max_retry=600)
    assert [backoff(n, policy, rand=lambda: 1.0) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert [backoff(n, policy, rand=lambda: 0.0) for n in (1, 2, 3)] == [2.5, 5, 10]
    assert backoff(20, policy, rand=lambda: 1.0) == 600 and backoff(500, policy, rand=lambda: 0.0) == 300
    waits = {backoff(3, policy) for _ in range(50)}
    assert len(waits) > 40 and all(10 <= wait <= 20 for wait in waits)


def test_consecutive_failures_wait_longer_and_longer(log: DeployLog, receiver: Receiver) -> None:
    log.announce_to([SLACK])
    stop_line(log)
    receiver.default = Answer(502)
    policy = Policy(timeout=0.5, first_retry=10, max_retry=1000)
    waits = []
    moment = later(0)
    for _ in range(5):
        report = deliver_pending(log, environ={"SLACK_URL": receiver.url()}, now=moment, policy=policy)
        next_try = datetime.fromisoformat(report.waiting[0].next_try.replace("Z", "+00:00"))  # type: ignore[union-attr]
        waits.append((next_try - moment).total_seconds())
        moment = next_try
    for attempt, wait in enumerate(waits, 1):
        ceiling = 10 * 2 ** (attempt - 1)
        assert ceiling / 2 <= wait <= ceiling + 0.5, waits
    assert len(receiver.received) == 5


def test_a_message_undelivered_for_too_long_goes_dead(log: DeployLog, receiver: Receiver) -> None:
    log.announce_to([SLACK])
    stop_line(log)
    receiver.default = Answer(500)
    deliver_pending(log, environ={"SLACK_URL": receiver.url()}, now=later(0), policy=FAST)
    report = deliver_pending(log, environ={"SLACK_URL": receiver.url()}, now=later(POLICY.give_up + 60),
                             policy=FAST)
    assert report.waiting == ()
    assert [item.error for item in report.dead] == ["undelivered for 24 h; last: HTTP 500: ok"]


# -- refusals, missing settings -------------------------------------------------------


def test_a_4xx_goes_dead_with_its_reason_and_the_next_message_still_goes(log: DeployLog, receiver: Receiver) -> None:
    log.announce_to([SLACK])
    stop_line(log, reason="first")
    stop_line(log, reason="second")
    listed = outbox_report(log, now=later(0))  # what a screen lists: nothing is sent
    assert [(w.item.event_id, w.why) for w in listed.waiting] == [
        (1, "due: goes with the next delivery"), (2, "behind message 1 to slack:SLACK_URL (a receiver gets its "
                                                        "messages in order)")]
    assert receiver.received == []
    receiver.script = [Answer(404, body=b"no_service\n\x1b[2J")]
    report = deliver_pending(log, environ={"SLACK_URL": receiver.url()}, now=later(0), policy=FAST)
    assert [(item.event_id, item.error, item.attempts) for item in report.dead] == [(1, "HTTP 404: no_service", 1)]
    assert [item.event_id for item in report.delivered] == [2]
    assert [r.status for r in receiver.received] == [404, 200]
    # Dead stays dead (listed, never retried) until a person asks.
    report = deliver_pending(log, environ={"SLACK_URL": receiver.url()}, now=later(3600), policy=FAST)
    assert len(report.dead) == 1 and len(receiver.received) == 2
    assert [event.kind for event in log.events()][:1] == ["notify.dead"]
    log.retry_dead(who="carol")
    report = deliver_pending(log, environ={"SLACK_URL": receiver.url()}, now=later(3700), policy=FAST)
    assert report.dead == () and [item.event_id for item in report.delivered] == [1]


@pytest.mark.parametrize(("status", "dead"), [(400, True), (401, True), (403, True), (410, True), (301, True),
                                              (408, False), (500, False), (502, False), (503, False)])
def test_which_answers_are_final(log: DeployLog, receiver: Receiver, status: int, dead: bool) -> None:
    log.announce_to([SLACK])
    stop_line(log)
    receiver.script = [Answer(status, (("Location", "http://127.0.0.1:9/elsewhere"),))]
    report = deliver_pending(log, environ={"SLACK_URL": receiver.url()}, now=later(0), policy=FAST)
    assert (len(report.dead), len(report.waiting)) == ((1, 0) if dead else (0, 1))
    assert len(receiver.received) == 1  # a redirect is not followed


@pytest.mark.parametrize(("environ", "why"), [
    ({}, "environment variable SLACK_URL is not set (it holds the slack webhook URL)"),
    ({"SLACK_URL": "  "}, "environment variable SLACK_URL is empty (it holds the slack webhook URL)"),
    ({"SLACK_URL": "ftp://hooks.example.com/x"}, "environment variable SLACK_URL does not hold an http:// or https:// URL"),
    ({"SLACK_URL": "hooks.slack.com/services/T0/B0/secret"}, "environment variable SLACK_URL does not hold an http:// or https:// URL"),
    ({"SLACK_URL": "http://[::1"}, "environment variable SLACK_URL does not hold an http:// or https:// URL"),
])
def test_a_missing_or_unusable_url_makes_the_message_wait_with_one_line(
        log: DeployLog, receiver: Receiver, environ: dict[str, str], why: str) -> None:
    log.announce_to([SLACK])
    stop_line(log)
    report = deliver_pending(log, environ=environ, now=later(0), policy=FAST)
    assert [(w.why, w.item.attempts) for w in report.waiting] == [(why, 0)]
    assert "secret" not in report.waiting[0].why
    report = deliver_pending(log, environ={"SLACK_URL": receiver.url()}, now=later(1), policy=FAST)
    assert len(report.delivered) == 1 and len(receiver.accepted()) == 1


def test_rows_for_a_receiver_this_andon_does_not_know_wait_for_one_that_does(log: DeployLog, receiver: Receiver) -> None:
    log.announce_to([SLACK])
    stop_line(log)
    report = deliver_pending(log, [OTHER], environ={"SLACK_URL": receiver.url()}, now=later(0), policy=FAST)
    assert [w.why for w in report.waiting] == ["slack:SLACK_URL is not a receiver in this andon's configuration: an "
                                               "andon configured with it delivers it"]
    assert receiver.received == []


def test_a_live_holder_of_a_receivers_lease_is_left_alone_and_a_dead_one_is_taken_over(
        log: DeployLog, receiver: Receiver, tmp_path: Path) -> None:
    log.announce_to([SLACK])
    stop_line(log)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with log.immediate() as conn:  # another andon, alive on this host, is delivering to it
            conn.execute("INSERT INTO leases (name, holder, host, pid, acquired_at, renewed_at, expires_at)"
                         " VALUES ('outbox:slack:SLACK_URL', 'them', ?, ?, ?, ?, ?)",
                         (socket.gethostname(), sleeper.pid, to_iso(T0), to_iso(T0), to_iso(later(60))))
        report = deliver_pending(log, environ={"SLACK_URL": receiver.url()}, now=later(0), policy=FAST)
        assert receiver.received == []
        assert report.waiting[0].why == f"another andon ({socket.gethostname()} pid {sleeper.pid}) is delivering to slack:SLACK_URL"
    finally:
        sleeper.kill()
        sleeper.wait()
    # Its process is gone (a kill -9): the lease is taken over at once, no expiry to wait for.
    report = deliver_pending(log, environ={"SLACK_URL": receiver.url()}, now=later(1), policy=FAST)
    assert len(report.delivered) == 1 and len(receiver.accepted()) == 1
    assert log.lease("outbox:slack:SLACK_URL") is None  # released after the round


def test_a_lease_held_elsewhere_is_taken_once_it_expires(log: DeployLog, receiver: Receiver) -> None:
    log.announce_to([SLACK])
    stop_line(log)
    assert log.take_lease("outbox:slack:SLACK_URL", holder_id(), 120)
    with log.immediate() as conn:
        conn.execute("UPDATE leases SET host = 'another-host'")
    deliver_pending(log, environ={"SLACK_URL": receiver.url()}, now=later(0), policy=FAST)
    assert receiver.received == []
    log._clock.now = later(121)  # type: ignore[attr-defined]
    report = deliver_pending(log, environ={"SLACK_URL": receiver.url()}, now=later(121), policy=FAST)
    assert len(report.delivered) == 1


# -- several andons delivering at once --------------------------------------------------

DELIVERER = """
import sys, time
sys.path.insert(0, {root!r})
from backend.config import Notifier
from backend.notify import Policy, deliver_pending
from backend.store import DeployLog
from pathlib import Path

path, first, second, go = sys.argv[1:5]
receivers = [Notifier("webhook", "FIRST_URL"), Notifier("discord", "SECOND_URL")]
log = DeployLog.open(path)
environ = {{"FIRST_URL": first, "SECOND_URL": second}}
while not Path(go).exists():
    time.sleep(0.005)
deadline = time.monotonic() + 60
rounds = 0
# Real time; retries due within 50 ms.
policy = Policy(timeout=5, first_retry=0.01, max_retry=0.05)
while time.monotonic() < deadline:
    rounds += 1
    report = deliver_pending(log, receivers, environ=environ, limit=3, policy=policy)
    if not report.waiting:
        break
    time.sleep(0.005)
log.close()
print(rounds)
"""


def test_three_andons_delivering_at_once_send_each_message_once_per_receiver_in_order(
        tmp_path: Path, receiver: Receiver) -> None:
    path = tmp_path / "deploys.db"
    first, second = Notifier("webhook", "FIRST_URL"), Notifier("discord", "SECOND_URL")
    writer = DeployLog.open(path)
    writer.announce_to([first, second], repository="shop")
    for number in range(30):
        stop_line(writer, reason=f"message {number}", env=f"env{number % 3}")
    # Every third request fails, so claims change hands between the processes mid-queue.
    receiver.script = [Answer(500) if n % 3 == 2 else Answer(200) for n in range(200)]
    script = tmp_path / "deliverer.py"
    script.write_text(DELIVERER.format(root=str(ROOT)))
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, str(script), str(path), receiver.url("/first"),
                               receiver.url("/second"), str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    try:
        time.sleep(0.5)
        go.touch()
        outputs = [proc.communicate(timeout=120) for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0, 0], [err for _, err in outputs]
        for notifier, where in ((first, "/first"), (second, "/second")):
            assert [r.key for r in receiver.accepted(where)] == keys_in_order(writer, notifier)
        assert writer.outbox_counts() == {DELIVERED: 60}
        assert any(r.status == 500 for r in receiver.received)  # the failures did happen
    finally:
        for proc in procs:
            proc.kill()
        writer.close()


# -- where it runs --------------------------------------------------------------------


def test_delivery_runs_from_a_thread_and_from_a_thread_with_an_event_loop(log: DeployLog, receiver: Receiver) -> None:
    log.announce_to([SLACK])
    environ = {"SLACK_URL": receiver.url()}
    stop_line(log, reason="one")
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(deliver_pending(log, environ=environ, policy=FAST)))
    worker.start()
    worker.join(30)
    stop_line(log, reason="two")

    async def inside_a_loop() -> Any:
        return deliver_pending(log, environ=environ, policy=FAST)

    results.append(asyncio.run(inside_a_loop()))
    assert [len(report.delivered) for report in results] == [1, 1]
    assert len(receiver.accepted()) == 2


def test_nothing_due_costs_no_lease_and_no_request(log: DeployLog, receiver: Receiver) -> None:
    log.announce_to([SLACK])
    statements: list[str] = []
    log._conn.set_trace_callback(statements.append)  # type: ignore[attr-defined]
    try:
        report = deliver_pending(log, environ={"SLACK_URL": receiver.url()}, policy=FAST)
    finally:
        log._conn.set_trace_callback(None)  # type: ignore[attr-defined]
    assert report == ((), (), ())
    assert not [s for s in statements if not s.lstrip().startswith("SELECT")]  # reads only
    assert receiver.received == []


def test_a_world_delivers_to_its_configured_receivers(tmp_path: Path, receiver: Receiver,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.world import resolve_world
    from tests.conftest import Repo

    repo = Repo(tmp_path / "shop")
    repo.commit("first")
    (repo.path / "andon.toml").write_text('[[notify]]\nkind = "slack"\nurl_env = "ANDON_SLACK_URL"\n')
    monkeypatch.setenv("ANDON_SLACK_URL", receiver.url())
    world = resolve_world(repo.path)
    try:
        stop_line(world.log)
        report = deliver_pending(world, policy=FAST)
    finally:
        world.close()
    assert len(report.delivered) == 1
    assert "Line stopped: production (shop), by alice" in receiver.accepted()[0].json()["text"]


# -- what is said -----------------------------------------------------------------------


def _events(log: DeployLog) -> None:
    """One event of each announced kind, as the line/rollback part writes them."""
    bad = log.start("production", "b" * 40, who="bob", reason="ship the cart")
    log.cache_ranges({(None, bad.sha): (True, 1, json.dumps([
        {"sha": bad.sha, "author": "Bob", "date": "2026-01-01T11:00:00Z", "subject": "Rewrite the cart"}],
        separators=(",", ":")))})
    log.finish(bad.id, "unhealthy", exit_code=0)
    with log.immediate() as conn:
        now = log.now()
        log.event(conn, "line.stopped", "production", bad.id, "andon", now, reason="deploy #1 unhealthy",
                  automatic=True)
    rollback = log.start("production", "a" * 40, who="alice", trigger="rollback", reason="cart broken",
                         reverts=bad.id)
    with log.immediate() as conn:
        log.event(conn, "rollback.started", "production", rollback.id, "alice", log.now(), target_sha="a" * 40,
                  reverts=bad.id)
    log.finish(rollback.id, "failed", exit_code=3)  # a rollback's own row: told by rollback.finished
    with log.immediate() as conn:
        log.event(conn, "rollback.finished", "production", rollback.id, "alice", log.now(), status="failed")
        log.event(conn, "line.resumed", "production", None, "carol", log.now(), reason="fixed by hand")
    forced = log.start("production", "c" * 40, who="dave", reason="hotfix")
    with log.immediate() as conn:
        log.event(conn, "deploy.forced", "production", forced.id, "dave", log.now(), reason="hotfix",
                  stopped_by="carol", stopped_reason="db migration")


def test_each_message_names_the_environment_repository_who_why_shas_and_times(log: DeployLog) -> None:
    log.announce_to([SLACK], repository="shop")
    _events(log)
    said = {}
    for item in log.outbox((PENDING,)):
        found = message(gather(log, item))
        said[item.kind + ("" if item.kind != "deploy.finished" else f":{item.deploy_id}")] = found
    assert said["deploy.finished:2"] is None  # the rollback's own row: skipped
    texts = {kind: found.plain() for kind, found in said.items() if found is not None}
    at = "2026-01-01 12:00:00 UTC"
    assert texts == {
        "deploy.finished:1": "❌ Deploy of bbbbbbb to production (shop) unhealthy (its health verification failed), "
                             "by bob\nDeploy: deploy #1 of bbbbbbb “Rewrite the cart” by bob\nReason: ship the cart\n"
                             f"Started at: {at}\nFinished at: {at}",
        "line.stopped": "🛑 Line stopped: production (shop), by andon (automatically)\nReason: deploy #1 unhealthy\n"
                        "Caused by: deploy #1 of bbbbbbb “Rewrite the cart” by bob\n"
                        f"Stopped at: {at}\nUntil: someone resumes the line; nothing deploys meanwhile",
        "rollback.started": "↩️ Rolling back production (shop) to aaaaaaa, by alice\n"
                            "Reverts: deploy #1 of bbbbbbb “Rewrite the cart” by bob\nReason: cart broken\n"
                            f"Rollback: deploy #2\nStarted at: {at}",
        "rollback.finished": "❌ Rollback of production (shop) to aaaaaaa failed\n"
                             "Reverts: deploy #1 of bbbbbbb “Rewrite the cart” by bob\n"
                             f"Rollback: deploy #2 by alice\nStarted at: {at}\nFinished at: {at}\n"
                             "Line: still stopped until someone resumes it",
        "line.resumed": f"✅ Line resumed: production (shop), by carol\nReason: fixed by hand\nResumed at: {at}",
        "deploy.forced": "⚠️ Forced deploy of ccccccc to production (shop) past the stopped line, by dave\n"
                         "Reason: hotfix\nLine stopped by: carol: db migration\nDeploy: deploy #3 of ccccccc by dave\n"
                         f"At: {at}",
    }


def test_a_forced_deploy_names_every_thing_it_went_past(log: DeployLog) -> None:
    log.announce_to([SLACK], repository="shop")
    forced = log.start("production", "c" * 40, who="dave", reason="hotfix")
    with log.immediate() as conn:
        log.event(conn, "deploy.forced", "production", forced.id, "dave", log.now(), reason="hotfix",
                  frozen={"reason": "weekend", "opens": "2026-01-05T07:00:00.000000Z"},
                  held={"shas": ["b" * 40, "e" * 40]})
    [item] = log.outbox((PENDING,))
    said = message(gather(log, item))
    assert said is not None
    assert said.plain().splitlines()[:3] == [
        "⚠️ Forced deploy of ccccccc to production (shop) past a freeze and held commits, by dave",
        "Reason: hotfix", "Freeze: weekend (opens 2026-01-05 07:00:00 UTC)"]
    assert "Held commits: bbbbbbb, eeeeeee" in said.plain()


def test_a_forced_deploy_whose_held_check_could_not_be_made_says_so(log: DeployLog) -> None:
    log.announce_to([SLACK], repository="shop")
    forced = log.start("production", "c" * 40, who="dave", reason="hotfix")
    with log.immediate() as conn:
        log.event(conn, "deploy.forced", "production", forced.id, "dave", log.now(), reason="hotfix",
                  held={"shas": [], "error": "git rev-list: object not found"})
    [item] = log.outbox((PENDING,))
    said = message(gather(log, item))
    assert said is not None
    lines = said.plain().splitlines()
    assert lines[0] == "⚠️ Forced deploy of ccccccc to production (shop) past held commits it could not check, by dave"
    assert "Held commits: not checked: git rev-list: object not found" in lines


def test_a_release_of_every_held_commit_is_one_message_naming_them(log: DeployLog) -> None:
    log.announce_to([SLACK], repository="shop")
    shas = [f"{n:x}" * 40 for n in range(10, 15)] + ["1" * 40] * 12
    with log.immediate() as conn:
        log.event(conn, "commit.released", "production", None, "ada", log.now(), shas=shas,
                  subjects=["fix the cart", "", "x", "y", "z"], count=17, reason="the build broke, not the code")
        log.event(conn, "commit.released", "production", None, "ada", log.now(), shas=["a" * 40],
                  subjects=["fix"], count=1, reason="fine")
    several, one = (message(gather(log, item)) for item in log.outbox((PENDING,)))
    assert several is not None and one is not None
    lines = several.plain().splitlines()
    assert lines[0] == "↩️ 17 held commits released in production (shop), by ada: they may be deployed again"
    assert lines[1:3] == ["Released: aaaaaaa “fix the cart”", "Released: bbbbbbb"]
    assert lines[-3:] == ["And: 2 more", "Reason: the build broke, not the code",
                          "Released at: 2026-01-01 12:00:00 UTC"]
    assert len([line for line in lines if line.startswith("Released: ")]) == 15
    assert one.plain().splitlines()[0] == ("↩️ Commit aaaaaaa released in production (shop), by ada: it may be "
                                           "deployed again")


def test_a_rollbacks_own_failed_deploy_row_is_skipped_not_sent(log: DeployLog, receiver: Receiver) -> None:
    log.announce_to([SLACK])
    _events(log)
    report = deliver_pending(log, environ={"SLACK_URL": receiver.url()}, policy=FAST)
    assert len(report.delivered) == 6 and len(receiver.accepted()) == 6
    skipped = log.outbox((SKIPPED,))
    assert [(item.kind, item.error) for item in skipped] == [
        ("deploy.finished", "a rollback's own deploy finished: rollback.finished tells it")]


def test_the_lines_own_writers_are_announced_end_to_end(log: DeployLog, receiver: Receiver) -> None:
    """Through the line's store API (backend/store/line.py), as andon stop/rollback/resume write them."""
    hook = Notifier("webhook", "HOOK_URL")
    log.announce_to([hook], repository="shop")
    clock = log._clock  # type: ignore[attr-defined]  # the fixture's Clock: each write a second apart
    good = log.record("production", "a" * 40, "succeeded", who="bob")
    clock.advance(seconds=1)
    bad = log.start("production", "b" * 40, who="bob")
    clock.advance(seconds=1)
    log.finish(bad.id, "unhealthy", exit_code=0)
    clock.advance(seconds=1)
    rollback, stopped = log.request_rollback("production", who="alice", reason="cart broken", grace=0)
    clock.advance(seconds=1)
    assert stopped and log.begin_rollback(rollback.id, 1) is not None
    clock.advance(seconds=1)
    rolling = log.start_rollback_deploy(rollback.id)
    clock.advance(seconds=1)
    log.finish_action(rolling.id, "failed", exit_code=3, output="")
    clock.advance(seconds=1)
    log.resume_line("production", who="carol", reason="fixed by hand")
    clock.advance(seconds=1)
    log.record("production", "e" * 40, "succeeded", who="bob")
    clock.advance(seconds=1)
    again, _ = log.request_rollback("production", who="dave", reason="try again", grace=0)
    clock.advance(seconds=1)
    log.end_rollback(again.id, "failed", "the runner could not start")
    clock.advance(seconds=1)
    log.resume_line("production", who="carol")
    clock.advance(seconds=1)
    log.stop_line("production", who="erin", reason="db migration")
    clock.advance(seconds=1)
    forced = log.try_start("production", "c" * 40, who="dave", trigger="manual", reason="hotfix", force=True,
                           stale_after=60).started
    assert forced is not None
    report = deliver_pending(log, environ={"HOOK_URL": receiver.url()}, policy=FAST)
    assert report.waiting == () and report.dead == ()
    titles = [got.json()["title"] for got in receiver.accepted()]
    assert titles == [
        "Deploy of bbbbbbb to production (shop) unhealthy (its health verification failed), by bob",
        "Line stopped: production (shop), by alice",
        "Rolling back production (shop) to aaaaaaa, by alice",
        "Rollback of production (shop) to aaaaaaa failed",  # its own deploy row's failure: skipped
        "Line resumed: production (shop), by carol",
        "Line stopped: production (shop), by dave",
        "Rollback of production (shop) to aaaaaaa failed",  # never ran: told from the rollback's row
        "Line resumed: production (shop), by carol",
        "Line stopped: production (shop), by erin",
        "Forced deploy of ccccccc to production (shop) past the stopped line, by dave",
    ]
    texts = [got.json()["text"] for got in receiver.accepted()]
    assert f"Reverts: deploy #{bad.id} of bbbbbbb by bob" in texts[2] and good.id != bad.id
    assert "Error: the runner could not start" in texts[6] and "Rollback: requested by dave" in texts[6]
    assert "Line stopped by: erin: db migration" in texts[9]
    assert [item.kind for item in log.outbox((SKIPPED,))] == ["deploy.finished"]


# -- hostile text ---------------------------------------------------------------------

HOSTILE = ("@everyone @here @channel @all <!channel> <!here> <@123> <@&456> <#789> "
           "[link](http://evil) <http://evil|x> *bold* _it_ ~strike~ `code` # head > quote || spoiler || "
           ":smile: {{DATE(2017-02-14T06:08:39Z, SHORT)}} &amp; \x1b[31mred\x1b[0m \x1b]8;;http://evil\x07a\x1b]8;;\x07"
           "\nsecond line\r\nthird\u202eevil\u200b")
MENTIONS = ("@everyone", "@here", "@channel", "@all")


def hostile_message(log: DeployLog) -> Any:
    log.announce_to([SLACK], repository="shop<!channel>")
    stop_line(log, reason=HOSTILE, env="production", who="mallory <@U1> @everyone")
    deploy = log.start("production", "d" * 40, who="mallory @here", reason=HOSTILE)
    log.finish(deploy.id, "failed", exit_code=1)
    return [message(gather(log, item)) for item in log.outbox((PENDING,))]


def no_controls(text: str) -> None:
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]", text), repr(text)
    assert "\x1b" not in text and "red" in text


def test_slack_escapes_hostile_text(log: DeployLog) -> None:
    for said in hostile_message(log):
        body = slack_payload(said)
        text = body["text"]
        assert body["mrkdwn"] is False and body["unfurl_links"] is False
        assert "<" not in text and ">" not in text  # no <!channel>, <@U1>, <http://evil|x>: all &lt; &gt;
        assert "&lt;!channel&gt;" in text and "&lt;http://evil|x&gt;" in text and "&amp;amp;" in text
        assert not any(mention in text for mention in MENTIONS)
        assert f"@{ZWSP}everyone" in text
        assert text.count("\n") == len(said.facts)  # the hostile newlines are gone: one line per fact
        no_controls(text)


@pytest.mark.parametrize("kind", ["mattermost", "discord"])
def test_mattermost_and_discord_escape_markdown_links_and_mentions(log: DeployLog, kind: str) -> None:
    for said in hostile_message(log):
        body = mattermost_payload(said) if kind == "mattermost" else discord_payload(said)
        text = body["text"] if kind == "mattermost" else body["content"]
        if kind == "discord":
            assert body["allowed_mentions"] == {"parse": []} and len(text) <= 2000
            assert "<" not in text.replace("\\<", "")  # every angle bracket escaped
        else:
            assert "<" not in text and ">" not in text  # entities: Slack syntax has nothing to match
            assert "&lt;!channel&gt;" in text or "&lt;\\!channel&gt;" in text
        assert not any(mention in text for mention in MENTIONS)
        # Outside our own **bold**, no markdown character is left unescaped.
        ours = re.sub(r"\*\*[^*\n]*\*\*|\*\*", "", text.replace("\\*", ""))
        for char in "[]()`_~|#:*":
            assert re.search(rf"(?<!\\){re.escape(char)}", ours) is None, (char, ours)
        assert "\\[link\\]\\(http\\:\\/\\/evil\\)" in text
        no_controls(text)


def text_runs(node: Any) -> list[str]:
    """Every text in an Adaptive Card's body, checked to be in a TextRun (no markdown there)."""
    if isinstance(node, list):
        return [text for part in node for text in text_runs(part)]
    if not isinstance(node, dict):
        return []
    found = []
    if "text" in node:
        assert node.get("type") == "TextRun", node  # never a TextBlock (markdown) or a FactSet
        found.append(node["text"])
    return found + [text for value in node.values() for text in text_runs(value)]


def test_teams_cards_carry_outside_text_only_in_text_runs_which_take_no_markdown(log: DeployLog) -> None:
    for said in hostile_message(log):
        body = teams_payload(said)
        card = body["attachments"][0]["content"]
        assert body["type"] == "message" and card["type"] == "AdaptiveCard"
        assert body["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
        joined = "\n".join(text_runs(card["body"]))
        assert not any(mention in joined for mention in MENTIONS)
        assert "{{" not in joined and "msteams" in card and "entities" not in json.dumps(card)
        no_controls(joined)


@pytest.mark.parametrize("kind", ["slack", "mattermost", "discord", "teams", "webhook"])
def test_hostile_text_arrives_defused_at_a_real_receiver_of_each_kind(log: DeployLog, receiver: Receiver,
                                                                      kind: str) -> None:
    notifier = Notifier(kind, "HOOK_URL")
    log.announce_to([notifier], repository="shop")
    stop_line(log, reason=HOSTILE, who="mallory @everyone")
    report = deliver_pending(log, environ={"HOOK_URL": receiver.url()}, policy=FAST)
    assert len(report.delivered) == 1
    got = receiver.accepted()[0]
    text = got.body.decode("utf-8")
    assert "\\u001b" not in text and "\x1b" not in text
    assert got.headers["content-type"].startswith("application/json")
    if kind == "webhook":
        body = got.json()  # data, not a chat message: the text is kept (cleaned), for the receiver to escape
        assert body["detail"]["reason"].startswith("@everyone @here") and "\n" not in body["detail"]["reason"]
        assert body["idempotency_key"] == got.key and body["kind"] == "line.stopped"
    else:
        assert not any(mention in json.loads(text).__repr__() for mention in MENTIONS)


# -- the generic webhook's signature ------------------------------------------------------


def readme_verifier() -> Any:
    """The verification code the README gives receivers, run as written."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- verify-signature -->\s*```python\n(.*?)```", readme, re.S)
    assert found, "the README's signature example is missing"
    namespace: dict[str, Any] = {}
    exec(compile(found.group(1), "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace["verify"]


def test_the_signature_verifies_with_the_readmes_code_and_a_tampered_body_fails(log: DeployLog,
                                                                               receiver: Receiver) -> None:
    hook = Notifier("webhook", "HOOK_URL", None, "HOOK_SECRET")
    log.announce_to([hook])
    stop_line(log)
    deliver_pending(log, environ={"HOOK_URL": receiver.url(), "HOOK_SECRET": "s3cret"}, policy=FAST)
    got = receiver.accepted()[0]
    header = got.headers["x-andon-signature"]
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header)
    verify = readme_verifier()
    assert verify(b"s3cret", header, got.body)
    assert not verify(b"wrong", header, got.body)
    assert not verify(b"s3cret", header, got.body.replace(b"api down", b"api fine"))
    stamp = int(header.split(",")[0][2:])
    assert not verify(b"s3cret", header.replace(f"t={stamp}", f"t={stamp + 1}"), got.body)  # the time is signed too
    # A signature older than the tolerance is refused: a replay.
    old = int(time.time()) - 3600
    mac = hmac.new(b"s3cret", f"{old}.".encode() + got.body, hashlib.sha256).hexdigest()
    assert not verify(b"s3cret", f"t={old},v1={mac}", got.body)
    assert abs(stamp - time.time()) < 60
    # Independently of the README: HMAC-SHA256 of "<t>.<body>".
    expected = hmac.new(b"s3cret", f"{stamp}.".encode() + got.body, hashlib.sha256).hexdigest()
    assert header == f"t={stamp},v1={expected}"
    assert got.headers["x-andon-event"] == "line.stopped"


def test_a_webhook_with_a_secret_is_never_sent_unsigned(log: DeployLog, receiver: Receiver) -> None:
    hook = Notifier("webhook", "HOOK_URL", None, "HOOK_SECRET")
    log.announce_to([hook])
    stop_line(log)
    report = deliver_pending(log, environ={"HOOK_URL": receiver.url()}, policy=FAST)
    assert receiver.received == []
    assert report.waiting[0].why == ("environment variable HOOK_SECRET is not set (it holds the webhook's signing "
                                     "secret; the message is not sent unsigned)")


def test_the_idempotency_key_is_the_same_for_every_receiver_and_every_try(log: DeployLog, receiver: Receiver) -> None:
    log.announce_to([SLACK, Notifier("webhook", "HOOK_URL")])
    stop_line(log)
    stop_line(log)
    receiver.script = [Answer(503)]
    environ = {"SLACK_URL": receiver.url("/slack"), "HOOK_URL": receiver.url("/hook")}
    deliver_pending(log, environ=environ, now=later(0), policy=FAST)
    deliver_pending(log, environ=environ, now=later(3600), policy=FAST)
    by_path: dict[str, list[str]] = {}
    for got in receiver.received:
        by_path.setdefault(got.path, []).append(got.key)
    first, second = keys_in_order(log, SLACK)
    assert first != second
    tried_twice = next(keys for keys in by_path.values() if len(keys) == 3)
    assert tried_twice == [first, first, second]
    assert next(keys for keys in by_path.values() if len(keys) == 2) == [first, second]
    assert [got.json()["idempotency_key"] for got in receiver.received if got.path == "/hook"] == by_path["/hook"]


# -- andon notify -----------------------------------------------------------------------


def notify_args(*argv: str) -> argparse.Namespace:
    """``andon notify ...`` parsed as tui/cli.py's build_parser will, through tui/cli_notify.add_parser."""
    from tui.cli import Parser, _common
    from tui.cli_notify import add_parser

    parser = Parser(prog="andon")
    _common(parser, None)
    commands = parser.add_subparsers(dest="command", parser_class=Parser)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        _common(sub, argparse.SUPPRESS)
        return sub

    add_parser(command)
    return parser.parse_args(["notify", *argv])


@pytest.fixture
def shop(tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Path:
    from tests.conftest import Repo

    repo = Repo(tmp_path / "shop")
    repo.commit("first")
    (repo.path / "andon.toml").write_text('[[notify]]\nkind = "slack"\nurl_env = "ANDON_SLACK_URL"\n')
    monkeypatch.setenv("ANDON_SLACK_URL", receiver.url())
    return repo.path


def write_events(repo: Path, *reasons: str) -> None:
    from backend.world import resolve_world

    world = resolve_world(repo)
    try:
        for reason in reasons:
            stop_line(world.log, reason=reason)
    finally:
        world.close()


def test_andon_notify_delivers_and_reports_as_json(shop: Path, receiver: Receiver,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from tui.cli_notify import cmd_notify

    write_events(shop, "one", "two")
    receiver.script = [Answer(200), Answer(503)]
    assert cmd_notify(notify_args("--repo", str(shop), "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert [item["event_id"] for item in report["delivered"]] == [1]
    assert [(item["event_id"], item["why"], item["attempts"]) for item in report["waiting"]] == [(2, "HTTP 503: ok", 1)]
    assert report["waiting"][0]["next_try"] > report["waiting"][0]["at"]
    assert report["dead"] == []


def test_andon_notify_exits_8_while_a_message_is_dead_and_retries_or_dismisses_on_request(
        shop: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]) -> None:
    from tui.cli_notify import EXIT_DEAD_LETTERS, cmd_notify

    write_events(shop, "one")
    receiver.script = [Answer(404, body=b"no_service")]
    assert cmd_notify(notify_args("--repo", str(shop))) == EXIT_DEAD_LETTERS == 8
    out, err = capsys.readouterr()
    assert re.search(r"^dead +#1 +line\.stopped +production +→ slack:ANDON_SLACK_URL  HTTP 404: no_service "
                     r"\(1 try, \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)$", out, re.M), out
    assert "1 message is dead: fix the receiver, then andon notify --retry-dead (or --dismiss-dead)" in err
    assert cmd_notify(notify_args("--repo", str(shop))) == 8  # still dead: nothing was sent again
    assert len(receiver.received) == 1
    capsys.readouterr()
    assert cmd_notify(notify_args("--repo", str(shop), "--retry-dead")) == 0
    out, err = capsys.readouterr()
    assert "1 message sent again" in err and out.startswith("delivered  #1 ")
    write_events(shop, "two")
    receiver.script = [Answer(410)]
    assert cmd_notify(notify_args("--repo", str(shop))) == 8
    assert cmd_notify(notify_args("--repo", str(shop), "--dismiss-dead")) == 0
    assert "1 message put aside" in capsys.readouterr().err


def test_andon_notify_with_nothing_to_do_says_so(shop: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from tui.cli_notify import cmd_notify

    write_events(shop)  # creates the log
    assert cmd_notify(notify_args("--repo", str(shop))) == 0
    assert capsys.readouterr().out == "nothing to deliver\n"
    (shop / "andon.toml").unlink()
    assert cmd_notify(notify_args("--repo", str(shop))) == 0
    assert capsys.readouterr().out == "nothing to deliver (no [[notify]] receivers configured)\n"


def test_andon_notify_refuses_a_named_log_that_does_not_exist(shop: Path, tmp_path: Path) -> None:
    from backend import AndonError
    from tui.cli_notify import cmd_notify

    missing = tmp_path / "typo.db"
    with pytest.raises(AndonError, match="no such file"):
        cmd_notify(notify_args("--repo", str(shop), "--db", str(missing)))
    assert not missing.exists()
