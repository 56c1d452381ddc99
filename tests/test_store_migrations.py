"""The deploy log's migration tables: steps with their events, samples and cache kept bounded, reminders
decided under BEGIN IMMEDIATE, and rows another program wrote read back cleaned."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.store import DeployLog, StoreError
from backend.store.migrations import CACHE_KEPT, SAMPLES_KEPT, MigrationState, Reminder, Step
from tests.conftest import one_line, raw

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SHA = "a" * 40


class Refused(Exception):
    pass


@pytest.fixture
def log(tmp_path: Path) -> Iterator[DeployLog]:
    opened = DeployLog.open(tmp_path / "deploys.db", clock=lambda: T0)
    yield opened
    opened.close()


def migration_events(log: DeployLog) -> list[tuple[str, str | None, dict[str, object]]]:
    return [(e.kind, e.env, json.loads(e.detail)) for e in reversed(log.events()) if e.kind.startswith("migration.")]


def test_a_step_writes_its_row_sample_and_event_together(log: DeployLog) -> None:
    seen: list[MigrationState | None] = []

    def progress(state: MigrationState | None) -> Step:
        seen.append(state)
        return Step("ok", {"started_at": "2026-03-02T09:00:00.000000Z", "done": 5, "total": 10},
                    "migration.progressed", {"done": 5, "total": 10}, sample=5)

    assert log.migration_step("users", "staging", progress, who="job\x1b[31m") == "ok"
    assert seen == [None]
    state = log.migration_state("users", "staging")
    assert state is not None and (state.done, state.total, state.started_at) == (5, 10, "2026-03-02T09:00:00.000000Z")
    assert log.migration_samples() == {("users", "staging"): [("2026-03-02T09:00:00.000000Z", 5)]}
    assert migration_events(log) == [("migration.progressed", "staging", {"name": "users", "done": 5, "total": 10})]
    assert log.events()[0].who == "job"  # the escape sequence is gone
    log.migration_step("users", "staging", progress, who="job")
    assert seen[-1] == state  # the rule sees the row as it is inside the transaction


def test_a_refused_or_empty_step_writes_nothing(log: DeployLog) -> None:
    def refuse(state: MigrationState | None) -> Step:
        raise Refused("no")

    with pytest.raises(Refused):
        log.migration_step("users", "staging", refuse, who="alice")
    assert log.migration_step("users", "staging", lambda state: Step("already"), who="alice") == "already"
    assert log.migration_states() == {} and migration_events(log) == []


def test_progress_samples_are_kept_bounded_per_pair(log: DeployLog) -> None:
    for done in range(SAMPLES_KEPT + 10):
        log.migration_step("users", "staging", lambda state, d=done: Step("", {"done": d}, sample=d), who="job",
                           now=T0 + timedelta(minutes=done))
    log.migration_step("other", "staging", lambda state: Step("", {"done": 1}, sample=1), who="job")
    samples = log.migration_samples()
    assert [done for _, done in samples[("users", "staging")]] == list(range(10, SAMPLES_KEPT + 10))
    assert len(samples[("other", "staging")]) == 1


def test_the_cache_keeps_the_newest_entries_of_each_kind(log: DeployLog, tmp_path: Path) -> None:
    clock = [T0]
    timed = DeployLog.open(tmp_path / "deploys.db", clock=lambda: clock[0])
    try:
        for index in range(CACHE_KEPT + 2):
            clock[0] = T0 + timedelta(seconds=index)
            timed.keep_migration_cache("facts", f"k{index}", {"n": index})
        timed.keep_migration_cache("grep", "g", [1])
        assert timed.migration_cache("facts", "k0") is None and timed.migration_cache("facts", "k1") is None
        assert timed.migration_cache("facts", f"k{CACHE_KEPT + 1}") == {"n": CACHE_KEPT + 1}
        assert timed.migration_cache("grep", "g") == [1]
        with raw(tmp_path / "deploys.db") as conn:
            conn.execute("UPDATE migration_cache SET value = 'not json' WHERE kind = 'grep'")
        assert timed.migration_cache("grep", "g") is None
    finally:
        timed.close()


def test_added_migrations_are_added_once(log: DeployLog) -> None:
    assert log.add_migration("queue", "infrastructure", ["old-queue"], ["staging"], who="alice") is None
    again = log.add_migration("queue", "database", [], ["production"], who="bob")
    assert again is not None and (again.kind, again.refs, again.envs, again.who) == (
        "infrastructure", ("old-queue",), ("staging",), "alice")
    assert list(log.added_migrations()) == ["queue"]
    assert migration_events(log) == [("migration.added", None, {"name": "queue", "migration_kind": "infrastructure",
                                                                "refs": ["old-queue"], "envs": ["staging"]})]


def test_a_reminder_names_each_pair_once_a_day_across_connections(log: DeployLog, tmp_path: Path) -> None:
    other = DeployLog.open(tmp_path / "deploys.db", clock=lambda: T0)
    try:
        due = [Reminder("users", "staging", "overdue", "2026-03-01T09:00:00.000000Z", "ship the\ncontract"),
               Reminder("queue", "production", "critical", None),
               Reminder("orders", "staging", "overdue", None, "ship it")]
        first = log.remind_migrations(due, who="watch", now=T0)
        assert len(first) == 2
        assert other.remind_migrations(due, who="watch", now=T0 + timedelta(hours=23)) == []
        events = migration_events(log)
        # One digest per environment, an event of that environment (a receiver limited to one hears only of it).
        assert events == [
            ("migration.reminder", "staging", {"items": [
                {"name": "users", "env": "staging", "severity": "overdue", "due": "2026-03-01T09:00:00.000000Z",
                 "next": "ship the contract"},
                {"name": "orders", "env": "staging", "severity": "overdue", "due": None, "next": "ship it"}]}),
            ("migration.reminder", "production", {"items": [
                {"name": "queue", "env": "production", "severity": "critical", "due": None, "next": ""}]})]
        # Snoozed since the caller evaluated: left out, decided inside the transaction.
        other.migration_step("queue", "production",
                             lambda state: Step("", {"snoozed_until": "2026-03-05T00:00:00.000000Z"}), who="bob")
        assert len(other.remind_migrations(due, who="watch", now=T0 + timedelta(hours=24))) == 1
        assert [item["name"] for item in migration_events(log)[-1][2]["items"]] == ["users", "orders"]  # type: ignore[union-attr]
        assert log.migration_state("users", "staging").reminded_at == "2026-03-03T09:00:00.000000Z"  # type: ignore[union-attr]
    finally:
        other.close()


def test_succeeded_deploys_per_environment_oldest_first(log: DeployLog, tmp_path: Path) -> None:
    before = log.succeeded_fingerprint()
    log.record("staging", "b" * 40, "succeeded", who="ci", at=T0 + timedelta(hours=2))
    log.record("staging", "a" * 40, "succeeded", who="ci", at=T0 + timedelta(hours=1))
    log.record("staging", "c" * 40, "failed", who="ci", at=T0 + timedelta(hours=3))
    log.record("production", "a" * 40, "succeeded", who="ci", at=T0)
    with raw(tmp_path / "deploys.db") as conn:  # another program's row: never taken for a deploy
        conn.execute("INSERT INTO deploys (env, sha, status, started_at) VALUES ('staging', 'zz', 'succeeded', 'x')")
    timelines = log.succeeded_deploys()
    assert [(d.sha[0], d.at) for d in timelines["staging"]] == [
        ("a", "2026-03-02T10:00:00.000000Z"), ("b", "2026-03-02T11:00:00.000000Z")]
    assert [d.sha[0] for d in timelines["production"]] == ["a"]
    assert log.succeeded_fingerprint() != before
    middle = log.succeeded_fingerprint()
    log.record("staging", "c" * 40, "failed", who="ci", at=T0 + timedelta(hours=4))
    assert log.succeeded_fingerprint() == middle  # a failed deploy changes nothing live


def test_rows_another_program_wrote_are_read_back_cleaned(log: DeployLog, tmp_path: Path) -> None:
    with raw(tmp_path / "deploys.db") as conn:
        conn.execute("INSERT INTO migration_state (name, env, started_at, done, total, ended, reason, snoozes, note)"
                     " VALUES ('users', 'staging', 'yesterday', 'many', 10, 'exploded', ?, 'x', ?)",
                     ("gone\x1b]8;;http://x\x07", "line one\nline two"))
        conn.execute("INSERT INTO migrations_added (name, kind, refs, envs, at) VALUES ('q', 'database', '{', '[1,\"s\"]',"
                     " '2026-03-02T09:00:00.000000Z')")
        conn.execute("INSERT INTO migration_samples (name, env, at, done) VALUES ('users', 'staging', 'never', 3)")
    state = log.migration_states()[("users", "staging")]
    assert (state.started_at, state.done, state.total, state.ended, state.snoozes) == (None, None, 10, None, 0)
    assert state.reason == "gone" and state.note == "line one line two"
    added = log.added_migrations()["q"]
    assert (added.refs, added.envs) == ((), ("s",))
    assert log.migration_samples() == {}


def test_a_broken_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deploys.db"
    DeployLog.open(path).close()
    opened = DeployLog.open(path)
    try:
        with raw(path) as conn:
            conn.execute("DROP TABLE migration_state")
        with pytest.raises(StoreError) as error:
            opened.migration_states()
        assert one_line(error.value).startswith(f"deploy log {path}: no such table")
    finally:
        opened.close()
