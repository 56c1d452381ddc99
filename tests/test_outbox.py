"""The outbox in the deploy log: written with the events it announces, read back safely."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from backend.config import DEFAULT_NOTIFY_EVENTS, Notifier
from backend.models import to_iso
from backend.store import DeployLog, OutboxItem
from backend.store.outbox import DEAD, DELIVERED, DISMISSED, PENDING, Settlement, group
from tests.conftest import Repo, raw
from tests.test_store_health import T0, Clock

ROOT = str(Path(__file__).resolve().parents[1])
SLACK = Notifier("slack", "ANDON_SLACK_URL")
HOOK = Notifier("webhook", "ANDON_HOOK_URL", ("production",), "ANDON_HOOK_SECRET")
STAGING_ONLY = Notifier("discord", "ANDON_DISCORD_URL", ("staging",))


@pytest.fixture
def announcing(tmp_path: Path) -> Iterator[DeployLog]:
    opened = DeployLog.open(tmp_path / "deploys.db", clock=Clock())
    opened.announce_to([SLACK, HOOK, STAGING_ONLY], repository="shop")
    yield opened
    opened.close()


def stop_line(log: DeployLog, env: str = "production", reason: str = "api down") -> int:
    with log.immediate() as conn:
        return log.event(conn, "line.stopped", env, None, "alice", log.now(), reason=reason, automatic=False)


def rows(path: Path) -> list[tuple[int, str, str, str]]:
    with raw(path) as other:
        return other.execute("SELECT event_id, receiver, repository, state FROM outbox ORDER BY id").fetchall()


def test_an_event_returns_its_id_and_queues_one_message_per_receiver_that_wants_its_environment(
        announcing: DeployLog) -> None:
    first = stop_line(announcing)
    second = stop_line(announcing, "staging")
    assert (first, second) == (1, 2)
    assert rows(announcing.path) == [
        (1, SLACK.key, "shop", PENDING), (1, HOOK.key, "shop", PENDING),  # production: not the staging-only one
        (2, SLACK.key, "shop", PENDING), (2, STAGING_ONLY.key, "shop", PENDING),  # staging: not the production one
    ]
    head = announcing.outbox_head(SLACK.key)
    assert head is not None and (head.kind, head.env, head.who, head.next_at) == (
        "line.stopped", "production", "alice", to_iso(T0))
    assert json.loads(head.detail) == {"reason": "api down", "automatic": False}


@pytest.mark.parametrize(("kind", "detail", "told"), [
    ("line.stopped", {"reason": "x"}, True),
    ("line.resumed", {"reason": "x"}, True),
    ("rollback.started", {"target_sha": "a" * 40}, True),
    ("rollback.finished", {"status": "failed"}, True),
    ("deploy.forced", {"reason": "hotfix"}, True),
    ("deploy.finished", {"status": "failed"}, True),
    ("deploy.finished", {"status": "unhealthy"}, True),
    ("deploy.finished", {"status": "succeeded"}, False),
    ("deploy.finished", {"status": "interrupted"}, False),
    ("deploy.started", {}, False),
    ("rollback.requested", {}, False),
    ("rollback.cancelled", {}, False),
    ("health.changed", {"state": "down"}, False),
    ("notify.dead", {}, False),
])
def test_only_the_announced_kinds_queue_messages(announcing: DeployLog, kind: str, detail: dict[str, str],
                                                 told: bool) -> None:
    assert (group(kind, detail) in DEFAULT_NOTIFY_EVENTS) is told  # the defaults leave out deploys that succeeded
    with announcing.immediate() as conn:
        announcing.event(conn, kind, "production", None, "alice", announcing.now(), **detail)
    assert len(rows(announcing.path)) == (2 if told else 0)


def test_a_failed_deploy_finishing_through_the_store_is_queued(announcing: DeployLog) -> None:
    deploy = announcing.start("production", "a" * 40, who="bob")
    announcing.finish(deploy.id, "failed", exit_code=1)
    good = announcing.start("production", "b" * 40, who="bob")
    announcing.finish(good.id, "succeeded", exit_code=0)
    queued = announcing.outbox((PENDING,))
    assert {(item.kind, item.deploy_id) for item in queued} == {("deploy.finished", deploy.id)}


def test_a_rolled_back_transaction_leaves_neither_the_event_nor_its_messages(announcing: DeployLog) -> None:
    with pytest.raises(RuntimeError), announcing.immediate() as conn:
        event_id = announcing.event(conn, "line.stopped", "production", None, "alice", announcing.now(), reason="x")
        # Inside the transaction both exist, on the writer's own connection...
        assert conn.execute("SELECT count(*) FROM outbox WHERE event_id = ?", (event_id,)).fetchone()[0] == 2
        raise RuntimeError("the writer fails after the event")
    # ...and after the rollback neither does.
    with raw(announcing.path) as other:
        assert other.execute("SELECT count(*) FROM events").fetchone()[0] == 0
        assert other.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0


def test_writing_an_event_costs_one_insert_per_receiver_and_nothing_else(announcing: DeployLog) -> None:
    statements: list[str] = []
    with announcing.immediate() as conn:
        conn.set_trace_callback(statements.append)
        try:
            announcing.event(conn, "line.stopped", "production", None, "alice", announcing.now(), reason="x")
        finally:
            conn.set_trace_callback(None)
    assert [statement.split()[:3] for statement in statements] == [
        ["INSERT", "INTO", "events"], ["INSERT", "INTO", "outbox"], ["INSERT", "INTO", "outbox"]]


WRITER = """
import sys
sys.path.insert(0, {root!r})
from backend.store import DeployLog
log = DeployLog.open(sys.argv[1])  # opened without a configuration: no receivers
with log.immediate() as conn:
    print(log.event(conn, "line.stopped", "production", None, "ci", log.now(), reason="from CI"))
log.close()
"""


def test_an_event_written_by_a_process_whose_log_has_no_receivers_announces_nothing(
        announcing: DeployLog, tmp_path: Path) -> None:
    stop_line(announcing)  # this process announces
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(root=ROOT))
    done = subprocess.run([sys.executable, str(script), str(announcing.path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    theirs = int(done.stdout)
    assert [event_id for event_id, *_ in rows(announcing.path)] == [1, 1]  # nothing for their event
    assert theirs == 2 and [event.id for event in announcing.events()] == [2, 1]


def test_a_world_hands_its_configured_receivers_and_repository_to_the_log(tmp_path: Path) -> None:
    from backend.world import resolve_world

    repo = Repo(tmp_path / "shop")
    repo.commit("first")
    (repo.path / "andon.toml").write_text(
        '[[notify]]\nkind = "slack"\nurl_env = "ANDON_SLACK_URL"\nenvironments = ["production"]\n')
    world = resolve_world(repo.path)
    try:
        stop_line(world.log)
        stop_line(world.log, "staging")
        assert world.log.receivers == (Notifier("slack", "ANDON_SLACK_URL", ("production",)),)
        assert rows(world.db_path) == [(1, "slack:ANDON_SLACK_URL", "shop", PENDING)]
    finally:
        world.close()
    (repo.path / "andon.toml").unlink()
    bare = resolve_world(repo.path)
    try:
        stop_line(bare.log)
        assert bare.log.receivers == ()
        assert len(rows(bare.db_path)) == 1  # still only the first event's message
    finally:
        bare.close()


def test_settling_delivered_retried_and_dead_and_a_dead_row_writes_an_event(announcing: DeployLog) -> None:
    stop_line(announcing)
    stop_line(announcing, reason="second")
    first = announcing.outbox_head(SLACK.key)
    assert first is not None
    later = to_iso(T0 + timedelta(seconds=30))
    assert announcing.settle_outbox(first, Settlement(PENDING, "HTTP 503", later))
    retried = announcing.outbox_head(SLACK.key)
    assert retried is not None and (retried.id, retried.attempts, retried.next_at, retried.error) == (
        first.id, 1, later, "HTTP 503")
    # Not sent (a variable is missing): no attempt counted, next_at kept.
    assert announcing.settle_outbox(retried, Settlement(PENDING, "environment variable X is not set", attempted=False))
    assert announcing.outbox_head(SLACK.key)._replace(error="") == retried._replace(error="")  # type: ignore[union-attr]
    assert announcing.settle_outbox(retried, Settlement(DELIVERED))
    assert not announcing.settle_outbox(retried, Settlement(DEAD, "late"))  # already settled: nothing changes
    second = announcing.outbox_head(SLACK.key)
    assert second is not None and second.id != first.id
    assert announcing.settle_outbox(second, Settlement(DEAD, "HTTP 404: no_service\x1b[31m"))
    assert announcing.outbox_head(SLACK.key) is None
    dead = announcing.outbox((DEAD,))
    assert [(item.id, item.error, item.attempts) for item in dead] == [(second.id, "HTTP 404: no_service", 1)]
    assert announcing.outbox_counts() == {DELIVERED: 1, DEAD: 1, PENDING: 2}
    news = [event for event in announcing.events() if event.kind == "notify.dead"]
    assert len(news) == 1 and json.loads(news[0].detail) == {
        "receiver": SLACK.key, "event_id": second.event_id, "outbox_id": second.id, "reason": "HTTP 404: no_service"}


def test_dead_rows_are_sent_again_or_put_aside_by_a_person(announcing: DeployLog) -> None:
    for reason in ("one", "two"):
        stop_line(announcing, reason=reason)
    for item in announcing.outbox((PENDING,)):
        announcing.settle_outbox(item, Settlement(DEAD, "HTTP 410"))
    dead = announcing.outbox((DEAD,))
    assert len(dead) == 4
    assert announcing.retry_dead(who="carol", ids=[dead[0].id]) == 1
    again = announcing.outbox_head(dead[0].receiver)
    assert again is not None and (again.id, again.attempts, again.error, again.done_at) == (dead[0].id, 0, "", None)
    assert announcing.dismiss_dead(who="carol") == 3
    assert announcing.outbox((DEAD,)) == []
    assert len(announcing.outbox((DISMISSED,))) == 3
    assert announcing.retry_dead(who="carol") == 0  # nothing dead left: no event either
    kinds = [(event.kind, event.who, json.loads(event.detail)) for event in announcing.events()
             if event.kind.startswith("notify.") and event.kind != "notify.dead"]
    assert kinds == [("notify.dismissed", "carol", {"count": 3}), ("notify.retried", "carol", {"count": 1})]


def test_rows_another_program_wrote_are_cleaned_or_left_out(announcing: DeployLog) -> None:
    stop_line(announcing)
    with raw(announcing.path) as other:
        other.execute("INSERT INTO outbox (event_id, receiver, state, next_at, created_at, error)"
                      " VALUES (1, 'slack:OTHER', 'pending', 'soon', 'x', 'bad\x1b]8;;http://evil\x07 text\nmore')")
        other.execute("INSERT INTO outbox (event_id, receiver, state, next_at, created_at)"
                      " VALUES (1, 'slack:WEIRD', 'sideways', 'x', 'x')")
        other.execute("INSERT INTO outbox (event_id, receiver, state, next_at, created_at)"
                      " VALUES (999, 'slack:GONE', 'pending', 'x', 'x')")
    items = {item.receiver: item for item in announcing.outbox((PENDING, DEAD))}
    assert set(items) == {SLACK.key, HOOK.key, "slack:OTHER", "slack:GONE"}  # the unknown state is left out
    assert items["slack:OTHER"].error == "bad text more"
    assert items["slack:GONE"].kind == ""  # no such event: nothing to say (delivery skips it)


def test_the_outbox_refuses_a_settlement_it_does_not_know(announcing: DeployLog) -> None:
    from backend.store import StoreError

    stop_line(announcing)
    item = announcing.outbox_head(SLACK.key)
    assert isinstance(item, OutboxItem)
    with pytest.raises(StoreError):
        announcing.settle_outbox(item, Settlement(DISMISSED))


def test_an_outbox_row_cannot_repeat_an_event_for_a_receiver(announcing: DeployLog) -> None:
    stop_line(announcing)
    with raw(announcing.path) as other, pytest.raises(sqlite3.IntegrityError):
        other.execute("INSERT INTO outbox (event_id, receiver, next_at, created_at) VALUES (1, ?, 'x', 'x')",
                      (SLACK.key,))
