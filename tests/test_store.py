"""The deploy log: a real SQLite file, append-only, shared by several writers, never damaged."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import backend.store as store
from backend import ANDON_VERSION
from backend.models import FAILED, INTERRUPTED, RUNNING, SUCCEEDED, to_iso
from backend.store import SCHEMA_VERSION, DeployLog, ImportResult, StoreError
from tests.conftest import one_line, raw

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def sha(n: int) -> str:
    return f"{n:040x}"


def ticking(start: datetime = T0, step: timedelta = timedelta(seconds=1)) -> Callable[[], datetime]:
    """A clock that moves forward by ``step`` on every reading."""
    now = [start]

    def clock() -> datetime:
        now[0] += step
        return now[0]

    return clock


def refused(path: Path, **kwargs: object) -> str:
    """Open ``path`` expecting a StoreError; the file's bytes must not change."""
    before = path.read_bytes()
    with pytest.raises(StoreError) as caught:
        DeployLog.open(path, **kwargs)  # type: ignore[arg-type]
    assert path.read_bytes() == before
    return one_line(caught.value)


@pytest.fixture
def clocked(tmp_path: Path) -> Iterator[DeployLog]:
    opened = DeployLog.open(tmp_path / "clocked.db", clock=ticking())
    yield opened
    opened.close()


def dead_pid() -> int:
    """The pid of a real process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def fill(path: Path, count: int = 200) -> None:
    """A real deploy log with enough rows to span several pages, closed and checkpointed."""
    log = DeployLog.open(path, clock=ticking())
    log.import_many([{"env": "production", "sha": sha(n), "status": SUCCEEDED, "who": "ci",
                      "at": to_iso(T0 + timedelta(minutes=n)), "reason": "r" * 200} for n in range(count)],
                    who="ci")
    log.close()
    assert not Path(f"{path}-wal").exists()  # everything is in the main file


# -- opening ---------------------------------------------------------------------------


def test_new_log_is_in_wal_mode_with_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    DeployLog.open(path).close()
    with raw(path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {row[0] for row in other.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"deploys", "events"} <= tables


def test_reopening_a_log_keeps_its_deploys(tmp_path: Path) -> None:
    path = tmp_path / "deploys.db"
    log = DeployLog.open(path)
    started = log.start("production", sha(1), who="ada")
    log.finish(started.id, SUCCEEDED, exit_code=0, output="done\n")
    log.close()
    again = DeployLog.open(path)
    try:
        assert again.get(started.id).status == SUCCEEDED
        assert again.get(started.id).output == "done\n"
    finally:
        again.close()


def test_an_empty_file_becomes_a_deploy_log(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    log = DeployLog.open(path)
    try:
        assert log.count() == 0
    finally:
        log.close()


def test_a_file_that_is_not_sqlite_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are my notes, not a database\n" * 100)
    message = refused(path)
    assert "not an SQLite database (left untouched)" in message
    assert str(path) in message


def test_sqlite_magic_followed_by_garbage_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "fake.db"
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)
    assert "it was left untouched" in refused(path)


def test_a_truncated_log_is_refused_as_corrupt_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "deploys.db"
    fill(path)
    with path.open("r+b") as handle:
        handle.truncate(2 * 4096)
    message = refused(path)
    assert "the file is corrupt" in message and "left untouched" in message


def test_a_log_with_a_damaged_table_page_fails_in_one_line_and_is_never_written(tmp_path: Path) -> None:
    """Page 2 (the deploys table's root) overwritten: opening may work, any use fails cleanly."""
    path = tmp_path / "deploys.db"
    fill(path)
    page = 4096
    with raw(path) as check:
        assert check.execute("PRAGMA page_size").fetchone()[0] == page
        assert check.execute("SELECT rootpage FROM sqlite_master WHERE name = 'deploys'").fetchone()[0] == 2
    data = bytearray(path.read_bytes())
    data[page:2 * page] = b"\xa5" * page
    path.write_bytes(bytes(data))
    errors: list[StoreError] = []
    try:
        log = DeployLog.open(path)
    except StoreError as error:
        errors.append(error)
    else:
        try:
            for use in (lambda: log.deploys(with_output=True),
                        lambda: log.start("production", sha(999), who="x"),
                        lambda: log.live("production")):
                with pytest.raises(StoreError) as caught:
                    use()
                errors.append(caught.value)
        finally:
            log.close()
    assert errors
    for error in errors:
        assert "the file is corrupt" in one_line(error)
    assert path.read_bytes() == bytes(data)


def newer_schema(path: Path, *, breaking: bool) -> None:
    """What a newer andon would leave: one more schema step, a new table and a new column."""
    with raw(path) as other:
        other.execute("CREATE TABLE future_things (id INTEGER PRIMARY KEY, note TEXT)")
        other.execute("ALTER TABLE deploys ADD COLUMN approved_by TEXT")
        if breaking:
            other.execute("UPDATE andon_meta SET value = ? WHERE key = 'writer_min_schema'",
                          (str(SCHEMA_VERSION + 1),))
            other.execute("UPDATE andon_meta SET value = '0.9.1' WHERE key = 'writer_min_andon'")
        other.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")


def test_a_log_a_newer_andon_only_added_to_still_works_and_is_not_migrated(tmp_path: Path) -> None:
    path = tmp_path / "deploys.db"
    fill(path, 3)
    newer_schema(path, breaking=False)
    log = DeployLog.open(path, clock=ticking(T0 + timedelta(days=1)))
    try:
        started = log.start("production", sha(9), who="ada")
        log.finish(started.id, SUCCEEDED, exit_code=0)
        log.record("production", sha(10), FAILED, who="ci")
        assert [d.sha for d in log.deploys()][:3] == [sha(10), sha(9), sha(2)]
        assert log.get(started.id).prev_sha == sha(2)
    finally:
        log.close()
    with raw(path) as other:
        assert other.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1  # left as it was
        assert other.execute("SELECT count(*) FROM future_things").fetchone()[0] == 0


def test_a_log_a_newer_andon_changed_incompatibly_is_refused_in_one_line_and_left_untouched(
        tmp_path: Path) -> None:
    path = tmp_path / "deploys.db"
    fill(path, 3)
    newer_schema(path, breaking=True)
    message = refused(path)
    assert "needs andon 0.9.1 or later" in message and f"schema {SCHEMA_VERSION + 1}" in message
    assert "upgrade andon" in message


def test_a_newer_log_without_the_rule_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deploys.db"
    fill(path, 3)
    with raw(path) as other:
        other.execute("DELETE FROM andon_meta")
        other.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    assert "needs andon a newer release or later" in refused(path)


def test_a_breaking_step_raises_the_oldest_writer_to_this_schema(tmp_path: Path) -> None:
    path = tmp_path / "deploys.db"

    class Breaking(DeployLog):
        MIGRATIONS = (*store.MIGRATIONS, store.Migration("CREATE TABLE reshaped (id INTEGER)", breaking=True))

    Breaking.open(path).close()
    with raw(path) as other:
        meta = dict(other.execute("SELECT key, value FROM andon_meta").fetchall())
    assert meta == {"writer_min_schema": str(SCHEMA_VERSION + 1), "writer_min_andon": ANDON_VERSION}
    message = refused(path)  # this andon is now too old for it
    assert f"needs andon {ANDON_VERSION} or later" in message


@pytest.mark.parametrize("user_version", sorted({0, 1, SCHEMA_VERSION}))
def test_another_programs_sqlite_file_is_refused_and_left_untouched(tmp_path: Path, user_version: int) -> None:
    """user_version is free for any application: a file without our tables is never ours."""
    path = tmp_path / "other.db"
    with raw(path) as other:
        other.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        other.execute("INSERT INTO notes (text) VALUES ('keep me')")
        other.execute(f"PRAGMA user_version = {user_version}")
    message = refused(path)
    assert "not an andon deploy log (it holds notes)" in message
    with raw(path) as check:
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
        assert check.execute("SELECT text FROM notes").fetchall() == [("keep me",)]


def test_a_log_in_a_missing_directory_is_refused_without_creating_it(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "deploys.db"
    with pytest.raises(StoreError) as caught:
        DeployLog.open(path)
    assert one_line(caught.value) == (
        f"deploy log {path}: the directory {path.parent} does not exist"
    )
    assert not path.parent.exists()


def test_create_parent_makes_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "deploys.db"
    DeployLog.open(path, create_parent=True).close()
    assert path.is_file()


def test_a_directory_is_not_a_log(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as caught:
        DeployLog.open(tmp_path)
    assert "is a directory" in one_line(caught.value)


def test_a_log_locked_by_another_writer_gives_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store.core, "BUSY_TIMEOUT", 0.2)
    path = tmp_path / "deploys.db"
    log = DeployLog.open(path)
    try:
        with raw(path) as holder:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreError) as caught:
                log.start("production", sha(1), who="ada")
            assert "locked" in one_line(caught.value)
            holder.execute("ROLLBACK")
        assert log.count() == 0
        log.start("production", sha(1), who="ada")  # free again: works
        assert log.count() == 1
    finally:
        log.close()


# -- append-only -------------------------------------------------------------------------


def test_deploys_cannot_be_deleted(tmp_path: Path, log: DeployLog) -> None:
    started = log.start("production", sha(1), who="ada")
    with raw(log.path) as other, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        other.execute("DELETE FROM deploys")
    assert log.get(started.id).sha == sha(1)


def test_a_finished_deploy_cannot_be_updated_again(log: DeployLog) -> None:
    started = log.start("production", sha(1), who="ada")
    log.finish(started.id, FAILED, exit_code=2, output="boom\n")
    with raw(log.path) as other, pytest.raises(sqlite3.DatabaseError, match="changes once"):
        other.execute("UPDATE deploys SET status = 'succeeded' WHERE id = ?", (started.id,))
    assert log.get(started.id).status == FAILED


@pytest.mark.parametrize("change", [
    "who = 'mallory'", "reason = 'rewritten'", "trigger = 'rollback'", "prev_sha = 'x'",
    "reverts = 1", "status = 'running'", "status = 'whatever'", "started_at = '2000-01-01'",
])
def test_a_running_deploy_can_only_change_to_its_final_status(log: DeployLog, change: str) -> None:
    started = log.start("production", sha(1), who="ada", reason="ship it")
    with raw(log.path) as other, pytest.raises(sqlite3.DatabaseError, match="changes once"):
        other.execute(f"UPDATE deploys SET {change} WHERE id = ?", (started.id,))
    assert log.get(started.id) == started


def test_a_deploy_with_an_unknown_status_cannot_be_written(log: DeployLog) -> None:
    with raw(log.path) as other, pytest.raises(sqlite3.DatabaseError, match="unknown deploy status"):
        other.execute("INSERT INTO deploys (env, sha, status, started_at) VALUES ('p', 'x', 'weird', 't')")


def test_a_running_deploy_keeps_its_identity(log: DeployLog) -> None:
    started = log.start("production", sha(1), who="ada")
    with raw(log.path) as other, pytest.raises(sqlite3.DatabaseError, match="changes once"):
        other.execute("UPDATE deploys SET sha = ? WHERE id = ?", (sha(2), started.id))
    assert log.get(started.id).sha == sha(1)


def test_events_cannot_be_updated_or_deleted(log: DeployLog) -> None:
    log.start("production", sha(1), who="ada")
    before = log.events()
    with raw(log.path) as other:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            other.execute("UPDATE events SET who = 'mallory'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            other.execute("DELETE FROM events")
    assert log.events() == before


def test_start_and_finish_each_write_an_event(clocked: DeployLog) -> None:
    started = clocked.start("production", sha(1), who="ada", trigger="manual", reason="hotfix")
    assert started.status == RUNNING and started.prev_sha is None and started.reason == "hotfix"
    finished = clocked.finish(started.id, SUCCEEDED, exit_code=0, output="ok\n")
    assert finished.status == SUCCEEDED and finished.exit_code == 0 and finished.finished_at
    events = clocked.events()
    assert [event.kind for event in events] == ["deploy.finished", "deploy.started"]
    assert all(event.deploy_id == started.id and event.env == "production" for event in events)
    assert json.loads(events[1].detail) == {"sha": sha(1), "prev_sha": None, "trigger": "manual"}
    assert json.loads(events[0].detail) == {"status": SUCCEEDED, "exit_code": 0}


def test_finishing_twice_is_an_error_and_keeps_the_first_result(log: DeployLog) -> None:
    started = log.start("production", sha(1), who="ada")
    log.finish(started.id, SUCCEEDED, exit_code=0, output="first\n")
    with pytest.raises(StoreError) as caught:
        log.finish(started.id, FAILED, exit_code=1, output="second\n")
    assert one_line(caught.value) == f"deploy #{started.id} has already finished (succeeded)"
    again = log.get(started.id)
    assert (again.status, again.exit_code, again.output) == (SUCCEEDED, 0, "first\n")
    assert len(log.events()) == 2


def test_finish_refuses_a_non_final_status_and_an_unknown_deploy(log: DeployLog) -> None:
    started = log.start("production", sha(1), who="ada")
    with pytest.raises(StoreError) as caught:
        log.finish(started.id, RUNNING, exit_code=None)
    one_line(caught.value)
    with pytest.raises(StoreError) as caught:
        log.finish(started.id + 100, SUCCEEDED, exit_code=0)
    assert one_line(caught.value) == f"deploy #{started.id + 100} does not exist"
    assert log.get(started.id).status == RUNNING


# -- previous sha ----------------------------------------------------------------------


def test_prev_sha_is_what_is_live_when_the_deploy_starts(clocked: DeployLog) -> None:
    first = clocked.start("production", sha(1), who="ada")
    assert first.prev_sha is None
    clocked.finish(first.id, SUCCEEDED, exit_code=0)
    failed = clocked.start("production", sha(2), who="ada")
    assert failed.prev_sha == sha(1)
    clocked.finish(failed.id, FAILED, exit_code=1)
    third = clocked.start("production", sha(3), who="ada")
    assert third.prev_sha == sha(1)  # the failed deploy never went live
    clocked.finish(third.id, SUCCEEDED, exit_code=0)
    assert clocked.start("production", sha(4), who="ada").prev_sha == sha(3)
    # Other environments have their own line.
    assert clocked.start("staging", sha(5), who="ada").prev_sha is None
    assert clocked.live("production").sha == sha(3)  # type: ignore[union-attr]


def test_record_in_the_past_gets_the_sha_live_at_that_time(clocked: DeployLog) -> None:
    clocked.record("production", sha(1), SUCCEEDED, who="ci", at=T0 - timedelta(hours=3))
    clocked.record("production", sha(3), SUCCEEDED, who="ci", at=T0 - timedelta(hours=1))
    middle = clocked.record("production", sha(2), SUCCEEDED, who="ci", at=T0 - timedelta(hours=2))
    assert middle.prev_sha == sha(1)
    assert middle.started_at == to_iso(T0 - timedelta(hours=2)) == middle.finished_at
    assert clocked.live("production").sha == sha(3)  # type: ignore[union-attr]
    kinds = [event.kind for event in clocked.events()]
    assert kinds == ["deploy.recorded"] * 3


def test_record_takes_a_naive_time_as_utc(clocked: DeployLog) -> None:
    recorded = clocked.record("production", sha(1), SUCCEEDED, who="ci", at=datetime(2026, 1, 1, 9, 30))
    assert recorded.started_at == "2026-01-01T09:30:00.000000Z"


def test_record_refuses_a_duplicate_and_a_bad_status(clocked: DeployLog) -> None:
    clocked.record("production", sha(1), SUCCEEDED, who="ci", at=T0)
    with pytest.raises(StoreError) as caught:
        clocked.record("production", sha(1), SUCCEEDED, who="ci", at=T0)
    assert "is already in the log" in one_line(caught.value)
    with pytest.raises(StoreError) as caught:
        clocked.record("production", sha(2), "great", who="ci", at=T0)
    assert "status must be one of" in one_line(caught.value)
    assert clocked.count() == 1 and len(clocked.events()) == 1


# -- import ------------------------------------------------------------------------------


def row(env: str, n: int, hours: int, status: str = SUCCEEDED) -> dict[str, object]:
    return {"env": env, "sha": sha(n), "status": status, "at": to_iso(T0 + timedelta(hours=hours)),
            "who": "ci"}


def test_import_computes_prev_sha_per_env_across_existing_and_imported_rows(clocked: DeployLog) -> None:
    clocked.record("production", sha(1), SUCCEEDED, who="ci", at=T0 + timedelta(hours=1))
    clocked.record("production", sha(2), FAILED, who="ci", at=T0 + timedelta(hours=5))
    rows = [  # deliberately out of order
        row("production", 6, 6),
        row("production", 3, 3),
        row("staging", 7, 7, FAILED),
        row("production", 4, 4),
        row("staging", 8, 2),
        row("production", 9, 0),
    ]
    assert clocked.import_many(rows, who="importer") == ImportResult(imported=6, skipped=0)
    prev = {d.sha: d.prev_sha for d in clocked.deploys()}
    assert prev[sha(3)] == sha(1)  # existing row before it
    assert prev[sha(4)] == sha(3)  # imported row before it
    assert prev[sha(6)] == sha(4)  # the failed existing deploy at 5h is not live
    assert prev[sha(9)] is None  # before everything
    assert prev[sha(8)] is None and prev[sha(7)] == sha(8)  # staging has its own line
    imported = [e for e in clocked.events(limit=100) if e.kind == "deploy.imported"]
    assert len(imported) == 6 and {e.who for e in imported} == {"importer"}


def test_importing_the_same_rows_again_skips_them(clocked: DeployLog) -> None:
    rows = [row("production", n, n) for n in range(1, 6)]
    assert clocked.import_many(rows, who="ci") == ImportResult(5, 0)
    events = len(clocked.events(limit=1000))
    assert clocked.import_many(rows, who="ci") == ImportResult(0, 5)
    assert clocked.count() == 5
    assert len(clocked.events(limit=1000)) == events  # nothing written for skipped rows


def test_importing_ten_thousand_rows_works_with_correct_prev_shas(clocked: DeployLog) -> None:
    rows = []
    for n in range(10_000):
        env = "production" if n % 3 else "staging"
        status = FAILED if n % 7 == 0 else SUCCEEDED
        rows.append(row(env, n, n, status))
    assert clocked.import_many(rows, who="ci") == ImportResult(10_000, 0)
    assert clocked.count() == 10_000
    last_live: dict[str, str | None] = {"production": None, "staging": None}
    expected: dict[str, str | None] = {}
    for item in rows:  # already in time order
        expected[str(item["sha"])] = last_live[str(item["env"])]
        if item["status"] == SUCCEEDED:
            last_live[str(item["env"])] = str(item["sha"])
    assert {d.sha: d.prev_sha for d in clocked.deploys()} == expected


# -- reading -------------------------------------------------------------------------------


def test_deploys_are_newest_first_with_filters_and_paging(clocked: DeployLog) -> None:
    for n in range(1, 6):
        clocked.record("production" if n % 2 else "staging", sha(n), SUCCEEDED, who="ci",
                       at=T0 + timedelta(minutes=n), output=f"out {n}\n")
    assert [d.sha for d in clocked.deploys()] == [sha(n) for n in (5, 4, 3, 2, 1)]
    assert [d.sha for d in clocked.deploys("staging")] == [sha(4), sha(2)]
    assert [d.sha for d in clocked.deploys(limit=2, offset=1)] == [sha(4), sha(3)]
    assert all(d.output == "" for d in clocked.deploys())  # output only when asked
    assert clocked.deploys(limit=1, with_output=True)[0].output == "out 5\n"
    assert clocked.count() == 5 and clocked.count("staging") == 2
    assert clocked.environments() == ["production", "staging"]


def test_live_is_the_latest_succeeded_deploy(clocked: DeployLog) -> None:
    assert clocked.live("production") is None
    clocked.record("production", sha(1), SUCCEEDED, who="ci", at=T0)
    clocked.record("production", sha(2), FAILED, who="ci", at=T0 + timedelta(minutes=1))
    clocked.start("production", sha(3), who="ci")  # still running
    assert clocked.live("production").sha == sha(1)  # type: ignore[union-attr]


def test_get_an_unknown_deploy_is_one_line(log: DeployLog) -> None:
    with pytest.raises(StoreError) as caught:
        log.get(42)
    assert one_line(caught.value) == "deploy #42 does not exist"


def test_a_running_deploy_whose_process_died_reads_as_interrupted(log: DeployLog) -> None:
    pid = dead_pid()
    orphan = log.start("production", sha(1), who="ada", pid=pid)
    assert orphan.status == INTERRUPTED
    assert log.deploys()[0].status == INTERRUPTED
    alive = log.start("production", sha(2), who="ada", pid=os.getpid())
    assert alive.status == RUNNING


def test_a_running_deploy_on_another_host_is_not_judged_by_local_pids(log: DeployLog) -> None:
    with raw(log.path) as other:  # written by an andon on another machine sharing the file
        cursor = other.execute(
            "INSERT INTO deploys (env, sha, status, started_at, pid, host)"
            " VALUES ('production', ?, 'running', '2030-01-01T00:00:00.000000Z', ?, 'some-other-host')",
            (sha(1), dead_pid()),
        )
        deploy_id = cursor.lastrowid
    assert log.get(deploy_id).status == RUNNING


def test_text_written_by_another_writer_is_neutralised_when_read(log: DeployLog) -> None:
    started = log.start("production", sha(1), who="ada")
    log.finish(started.id, SUCCEEDED, exit_code=0)
    with raw(log.path) as other:
        other.execute(
            "INSERT INTO deploys (env, sha, status, who, trigger, reason, started_at, output)"
            " VALUES (?, ?, 'succeeded', ?, 'ci', ?, '2030-01-01T00:00:00.000000Z', ?)",
            ("production", sha(2), "\x1b]0;pwned\x07mallory", "line one\nline two",
             "ok\x1b[2J\r\nprogress\r100%\n"),
        )
    newest = log.deploys(with_output=True)[0]
    assert newest.who == "mallory"
    assert newest.reason == "line one line two"
    assert newest.output == "ok\nprogress\n100%\n"


def test_recording_an_older_deploy_later_moves_where_the_next_ones_range_starts(clocked: DeployLog) -> None:
    """The deploy after a late-recorded one must not count that one's commits again."""
    clocked.record("production", sha(1), SUCCEEDED, who="ci", at=T0 - timedelta(hours=3))
    later = clocked.record("production", sha(3), SUCCEEDED, who="ci", at=T0 - timedelta(hours=1))
    failed = clocked.record("production", sha(4), FAILED, who="ci", at=T0 - timedelta(minutes=30))
    assert clocked.get(later.id).prev_sha == sha(1)
    middle = clocked.record("production", sha(2), SUCCEEDED, who="ci", at=T0 - timedelta(hours=2))
    assert middle.prev_sha == sha(1)
    assert clocked.get(later.id).prev_sha == sha(2)  # was sha(1): 1..3 counted 2's commits again
    assert clocked.get(failed.id).prev_sha == sha(3)
    assert [d.prev_sha for d in clocked.deploys()] == [sha(3), sha(2), sha(1), None]
    # The same through import, and the stored rows themselves never changed (append-only).
    clocked.import_many([{"env": "production", "sha": sha(5), "status": SUCCEEDED, "who": "ci",
                          "at": to_iso(T0 - timedelta(minutes=90))}], who="ci")
    assert clocked.get(later.id).prev_sha == sha(5)
    with raw(clocked.path) as other:
        assert other.execute("SELECT prev_sha FROM deploys WHERE id = ?", (later.id,)).fetchone()[0] == sha(1)


def test_the_previous_sha_is_found_through_the_succeeded_index(log: DeployLog) -> None:
    with raw(log.path) as other:
        plan = " ".join(row[-1] for row in other.execute(
            "EXPLAIN QUERY PLAN SELECT " + store.deploys._PREV + " FROM deploys d WHERE d.id = 1"))
    assert "deploys_env_succeeded" in plan


BAD_ROWS = [
    ("started_at", "'yesterday'", "started_at 'yesterday' is not a time"),
    ("started_at", "20260101", "started_at '20260101' is not a time"),
    ("finished_at", "'2026-02-31 soon'", "finished_at '2026-02-31 soon' is not a time"),
    ("exit_code", "'boom'", "exit_code 'boom' is not a number"),
    ("who", "x'00ff1b'", "who is binary, not text"),
    ("sha", "'--output=pwned'", "sha '--output=pwned' is not a full commit SHA"),
    ("reverts", "'x'", "reverts 'x' is not a deploy id"),
    ("output", "x'1b5b324a'", "output is binary, not text"),
]


@pytest.mark.parametrize(("column", "value", "reason"), BAD_ROWS, ids=[r[0] + "-" + r[1] for r in BAD_ROWS])
def test_a_row_another_program_damaged_reads_as_damaged_and_says_why(
        log: DeployLog, column: str, value: str, reason: str) -> None:
    good = log.record("production", sha(1), SUCCEEDED, who="ci")
    bad = log.record("production", sha(2), SUCCEEDED, who="ci", at=T0 + timedelta(days=1))
    with raw(log.path) as other:
        other.execute("DROP TRIGGER deploys_finish_once")  # another program may do anything
        other.execute(f"UPDATE deploys SET {column} = {value} WHERE id = ?", (bad.id,))
    read = {d.id: d for d in log.deploys(with_output=True)}
    assert read[good.id].damaged == ""
    assert read[bad.id].damaged == f"deploy #{bad.id} is damaged: {reason}"
    assert all(isinstance(getattr(read[bad.id], f), str) for f in ("env", "sha", "who", "started_at", "output"))
    assert log.get(bad.id).damaged == read[bad.id].damaged
    assert log.live("production") == read[good.id]  # a damaged row is never taken for what runs
    assert [d.id for chunk in log.iter_deploys() for d in chunk] == [d.id for d in log.deploys()]


def test_events_are_cleaned_when_read_including_bidi_and_zero_width(log: DeployLog) -> None:
    log.record("production", sha(1), SUCCEEDED, who="eve\u202egnp.exe\u200b")
    with raw(log.path) as other:
        other.execute("INSERT INTO events (at, kind, env, who, detail) VALUES (?, ?, ?, ?, ?)",
                      ("2030-01-01T00:00:00.000000Z", "note\x1b[2J", "production", "\x1b]0;pwned\x07mallory",
                       '{"text": "hi\\u001b[31m red", "n": [1, "\\u202e"]}'))
        other.execute("INSERT INTO events (at, kind, who, detail) VALUES (?, 'x', 'y', ?)",
                      ("2030-01-02T00:00:00.000000Z", "not json \x1b[1m"))
    events = log.events()
    assert events[2].who == "evegnp.exe"
    assert (events[1].kind, events[1].who) == ("note", "mallory")
    assert json.loads(events[1].detail) == {"text": "hi red", "n": [1, ""]}
    assert json.loads(events[0].detail) == {"text": "not json "}
    for event in events:
        assert not any(ch in "".join(map(str, event)) for ch in "\x1b\x07\u202e\u200b")


def test_changes_say_which_kinds_of_events_came_per_environment(tmp_path: Path) -> None:
    path = tmp_path / "deploys.db"
    mine, theirs = DeployLog.open(path), DeployLog.open(path)
    try:
        assert mine.last_event_id() == 0
        assert mine.changes(0) == store.Changes(0, frozenset())
        theirs.record("production", sha(1), SUCCEEDED, who="ci")
        started = theirs.start("staging", sha(2), who="ci")
        theirs.finish(started.id, FAILED, exit_code=1)
        theirs.cache_ranges({(None, sha(1)): (True, 0, "[]")})  # a range kept: no event
        seen = mine.changes(0)
        assert seen.last == mine.last_event_id() == 3
        assert seen.kinds == {("deploy.recorded", "production"), ("deploy.started", "staging"),
                              ("deploy.finished", "staging")}
        assert mine.changes(seen.last) == store.Changes(3, frozenset())
    finally:
        mine.close()
        theirs.close()


def test_iter_deploys_streams_in_chunks_newest_first_and_honours_env_and_limit(clocked: DeployLog) -> None:
    for n in range(25):
        clocked.record("production" if n % 3 else "staging", sha(n + 1), SUCCEEDED, who="ci",
                       at=T0 + timedelta(minutes=n // 2))  # pairs share a time: ties broken by id
    everything = clocked.deploys()
    chunks = list(clocked.iter_deploys(chunk=4))
    assert [len(c) for c in chunks] == [4] * 6 + [1]
    assert [d for c in chunks for d in c] == everything
    assert [d for c in clocked.iter_deploys("staging", chunk=3) for d in c] == clocked.deploys("staging")
    assert [d for c in clocked.iter_deploys(limit=10, chunk=4) for d in c] == everything[:10]


def test_sqlite_utils_inserts_nest_inside_our_immediate_transaction(log: DeployLog) -> None:
    with pytest.raises(RuntimeError), log.immediate():
        log.db["deploys"].insert_all([{"env": "production", "sha": sha(1), "status": SUCCEEDED,
                                       "started_at": to_iso(T0)}])
        raise RuntimeError("after the insert")
    assert log.count() == 0  # rolled back with the transaction: it did not commit on its own


IMPORTER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from backend.store import DeployLog
path, number, go = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
while not go.exists():
    time.sleep(0.01)
log = DeployLog.open(path)
for batch in range(5):
    rows = [{{"env": "production", "sha": "%02d%02d%036x" % (number, batch, n), "status": "succeeded",
             "at": "2026-01-%02dT00:%02d:%02d.000000Z" % (number + 1, batch, n)}} for n in range(50)]
    result = log.import_many(rows, who="proc%d" % number)
    assert result.imported == 50, result
    log.import_many(rows[:10], who="again")  # all skipped
log.close()
"""


def run_at_once(tmp_path: Path, name: str, script: str, count: int = 3) -> None:
    """Run ``count`` copies of a Python script against the log at once; each must succeed."""
    path = tmp_path / name
    path.write_text(script.format(root=str(Path(__file__).resolve().parents[1])))
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, str(path), str(tmp_path / "deploys.db"), str(n), str(go)],
                              stderr=subprocess.PIPE, text=True) for n in range(count)]
    go.touch()
    results = [(proc.wait(timeout=120), proc.stderr.read()) for proc in procs]  # type: ignore[union-attr]
    assert [code for code, _ in results] == [0] * count, [err for _, err in results]


def test_imports_from_several_processes_at_once_all_land_once(tmp_path: Path) -> None:
    path = tmp_path / "deploys.db"
    DeployLog.open(path).close()
    run_at_once(tmp_path, "importer.py", IMPORTER)
    log = DeployLog.open(path)
    try:
        assert log.count() == 750
        events = log.events(limit=2000)
        assert len(events) == 750 and {e.kind for e in events} == {"deploy.imported"}
        assert {e.deploy_id for e in events} == {d.id for d in log.deploys()}
    finally:
        log.close()


# -- several writers ---------------------------------------------------------------------


def test_data_version_changes_only_when_another_connection_writes(tmp_path: Path) -> None:
    path = tmp_path / "deploys.db"
    mine = DeployLog.open(path)
    theirs = DeployLog.open(path)
    try:
        version = mine.data_version()
        assert mine.data_version() == version  # nothing happened: no change
        started = mine.start("production", sha(1), who="ada")
        mine.finish(started.id, SUCCEEDED, exit_code=0)
        assert mine.data_version() == version  # our own writes do not count
        theirs.start("production", sha(2), who="grace")
        changed = mine.data_version()
        assert changed != version
        assert mine.data_version() == changed
    finally:
        mine.close()
        theirs.close()


def test_threads_sharing_a_log_and_threads_with_their_own_logs_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "deploys.db"
    shared = DeployLog.open(path)
    errors: list[BaseException] = []
    per_thread = 25

    def work(number: int, own: bool) -> None:
        log = DeployLog.open(path) if own else shared
        try:
            for n in range(per_thread):
                started = log.start(f"env{number}", sha(number * 1000 + n), who=f"t{number}")
                log.finish(started.id, SUCCEEDED, exit_code=0, output="x\n")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            if own:
                log.close()

    threads = [threading.Thread(target=work, args=(n, n % 2 == 0)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert shared.count() == 6 * per_thread
        assert all(d.status == SUCCEEDED for d in shared.deploys())
        assert len(shared.events(limit=10_000)) == 2 * 6 * per_thread
    finally:
        shared.close()


WRITER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from backend.store import DeployLog
path, number, go = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
while not go.exists():
    time.sleep(0.01)
log = DeployLog.open(path)
for n in range(40):
    started = log.start("production", "%02d%038x" % (number, n), who="proc%d" % number)
    log.finish(started.id, "succeeded", exit_code=0, output="ok\\n")
log.close()
"""


@pytest.mark.parametrize("fresh", [False, True], ids=["existing-log", "new-file"])
def test_processes_writing_at_once_all_succeed(tmp_path: Path, fresh: bool) -> None:
    path = tmp_path / "deploys.db"
    if not fresh:
        DeployLog.open(path).close()
    run_at_once(tmp_path, "writer.py", WRITER)
    log = DeployLog.open(path)
    try:
        assert log.count() == 120
        assert len({d.id for d in log.deploys()}) == 120
        assert all(d.status == SUCCEEDED for d in log.deploys())
    finally:
        log.close()


@pytest.mark.parametrize("step", range(1, 9))
def test_a_new_log_created_by_another_andon_mid_open_still_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: int
) -> None:
    """Another process may create the log between any two of our statements (outside a
    transaction, where it can get in). The open must still succeed.

    SQLite's trace hook lets the competing open run at an exact point: that interleaving
    is what a real race produces only now and then.
    """
    path = tmp_path / "deploys.db"
    real_connect = sqlite3.connect
    state = {"count": 0, "hooked": False}

    def connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)  # type: ignore[arg-type]
        if not state["hooked"]:
            state["hooked"] = True

            def trace(statement: str) -> None:
                state["count"] += 1
                if state["count"] == step and not conn.in_transaction:
                    DeployLog.open(path).close()

            conn.set_trace_callback(trace)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    log = DeployLog.open(path)
    monkeypatch.setattr(sqlite3, "connect", real_connect)
    try:
        assert log.count() == 0
        log.start("production", sha(1), who="ada")
        assert log.count() == 1
    finally:
        log.close()
