"""The deploy log at its edges: compatibility races, index use, damaged rows, planted text, memory.

Each test was written to show a defect found in review of the store split (and failed then)."""

from __future__ import annotations

import json
import socket
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import backend.store as store
from backend.models import FAILED, SUCCEEDED, to_iso
from backend.store import DeployLog, StoreError
from backend.store.core import Migration
from tests.conftest import one_line, raw

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def sha(n: int) -> str:
    return f"{n:040x}"


def steps(log: DeployLog, action: Callable[[], object]) -> int:
    """SQLite VM steps ``action`` costs on the log's connection (deterministic, unlike time)."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    log._conn.set_progress_handler(tick, 1)
    try:
        action()
    finally:
        log._conn.set_progress_handler(None, 1)
    return count[0]


def rows(count: int, status: str = SUCCEEDED, envs: int = 1) -> list[dict[str, object]]:
    return [{"env": f"env{n % envs}", "sha": sha(n), "status": status, "who": "ci",
             "at": to_iso(T0 + timedelta(minutes=n))} for n in range(count)]


# A newer andon whose schema 5 is breaking (changes something schema-4 andons rely on).
class NewerBreaking(DeployLog):
    MIGRATIONS = (*store.MIGRATIONS, Migration("CREATE TABLE line (env TEXT PRIMARY KEY)", breaking=True))


class NewerRenaming(DeployLog):
    MIGRATIONS = (*store.MIGRATIONS, Migration("ALTER TABLE deploys RENAME TO deploy_runs", breaking=True))


class Schema3(DeployLog):
    MIGRATIONS = store.MIGRATIONS[:3]


# -- compatibility ---------------------------------------------------------------------


def test_an_older_andon_migrating_at_the_same_time_as_a_newer_breaking_one_refuses(tmp_path: Path) -> None:
    """Both open a schema-3 log; the newer one wins BEGIN IMMEDIATE and goes to 5 (breaking).

    The older one's _migrate then sees version 5 >= 4 and returns: the log opens and writes.
    """
    path = tmp_path / "deploys.db"
    Schema3.open(path).close()

    class Older(DeployLog):
        def _migrate(self) -> None:
            NewerBreaking.open(self.path).close()  # the newer andon gets the write lock first
            super()._migrate()

    with pytest.raises(StoreError) as caught:
        Older.open(path).close()
    assert "needs andon" in one_line(caught.value)


def test_an_open_older_andon_stops_writing_after_a_newer_one_applies_a_breaking_step(tmp_path: Path) -> None:
    """A dashboard or `andon watch` (schema 4) stays open while a newer andon upgrades the log."""
    path = tmp_path / "deploys.db"
    older = DeployLog.open(path)
    older.record("prod", sha(1), SUCCEEDED, who="ci")
    NewerBreaking.open(path).close()
    try:
        with pytest.raises(StoreError) as caught:
            older.record("prod", sha(2), SUCCEEDED, who="ci")
        assert "needs andon" in one_line(caught.value)
    finally:
        older.close()


def test_a_breaking_step_that_renames_a_table_names_the_andon_release_not_a_foreign_file(tmp_path: Path) -> None:
    path = tmp_path / "deploys.db"
    NewerRenaming.open(path).close()
    with pytest.raises(StoreError) as caught:
        DeployLog.open(path)
    message = one_line(caught.value)
    assert "needs andon" in message, message


# -- the previous SHA, read-time subquery ------------------------------------------------


def test_the_previous_sha_of_an_old_deploy_is_one_index_seek_not_a_scan_of_newer_ones(tmp_path: Path) -> None:
    log = DeployLog.open(tmp_path / "deploys.db")
    try:
        log.import_many(rows(2000), who="ci")
        newest = steps(log, lambda: log.get(2000))
        oldest = steps(log, lambda: log.get(2))
        # The OR in _PREV leaves only env= for the index: every newer succeeded deploy is stepped over.
        assert oldest < 20 * newest, (oldest, newest)
    finally:
        log.close()


def test_iter_deploys_later_chunks_cost_no_more_than_the_first(tmp_path: Path) -> None:
    log = DeployLog.open(tmp_path / "deploys.db")
    try:
        log.import_many(rows(3000, status=FAILED), who="ci")  # no succeeded rows: _PREV is free
        chunks = log.iter_deploys("env0", chunk=100)
        costs = []
        while True:
            got: list[object] = []
            cost = steps(log, lambda got=got: got.append(next(chunks, None)))  # type: ignore[misc]
            if got[0] is None:
                break
            costs.append(cost)
        assert len(costs) == 30
        # The keyset's OR cannot seek: each chunk walks the index from the newest row.
        assert costs[-1] < 3 * costs[0], (costs[0], costs[-1])
    finally:
        log.close()


def test_a_damaged_row_is_never_the_start_of_another_deploys_range(tmp_path: Path) -> None:
    """Another program wrote a time as Python's isoformat() does (+00:00, not Z)."""
    path = tmp_path / "deploys.db"
    log = DeployLog.open(path)
    try:
        log.record("prod", sha(1), SUCCEEDED, who="ci", at=T0)
        with raw(path) as conn:
            stamp = (T0 + timedelta(hours=1)).isoformat()  # 2026-01-01T13:00:00+00:00
            damaged_id = conn.execute(
                "INSERT INTO deploys (env, sha, status, started_at, finished_at) VALUES (?, ?, ?, ?, ?)",
                ("prod", sha(2), SUCCEEDED, stamp, stamp)).lastrowid
        assert log.get(damaged_id).damaged  # shown as damaged ...
        later = log.record("prod", sha(3), SUCCEEDED, who="ci", at=T0 + timedelta(hours=2))
        assert log.live("prod").sha == sha(3)
        # ... but taken as where the next deploy's range starts (live() skipped it: disagree).
        assert later.prev_sha == sha(1)
    finally:
        log.close()


# -- damaged rows never crash ------------------------------------------------------------


@pytest.mark.parametrize("pid", ["abc", 2**40, 1.5])
def test_a_running_row_with_a_pid_that_is_not_a_small_int_reads_without_crashing(
    tmp_path: Path, pid: object
) -> None:
    path = tmp_path / "deploys.db"
    log = DeployLog.open(path)
    try:
        with raw(path) as conn:
            conn.execute("INSERT INTO deploys (env, sha, status, started_at, pid, host) VALUES (?, ?, ?, ?, ?, ?)",
                         ("prod", sha(1), "running", to_iso(T0), pid, socket.gethostname()))
        found = log.deploys("prod")  # TypeError / OverflowError from alive(pid) today
        assert len(found) == 1
        assert [len(chunk) for chunk in log.iter_deploys("prod")] == [1]
    finally:
        log.close()


def test_a_deeply_nested_event_detail_reads_without_crashing(tmp_path: Path) -> None:
    path = tmp_path / "deploys.db"
    log = DeployLog.open(path)
    try:
        with raw(path) as conn:
            conn.execute("INSERT INTO events (at, kind, detail) VALUES (?, ?, ?)",
                         (to_iso(T0), "x", "[" * 100_000 + "]" * 100_000))
        events = log.events()  # RecursionError from json.loads in clean_detail today
        assert len(events) == 1
    finally:
        log.close()


def test_an_event_detail_is_always_valid_json_when_read(tmp_path: Path) -> None:
    path = tmp_path / "deploys.db"
    log = DeployLog.open(path)
    try:
        with raw(path) as conn:
            conn.execute("INSERT INTO events (at, kind, detail) VALUES (?, ?, ?)", (to_iso(T0), "x", '{"a": NaN}'))

        def strict(name: str) -> object:
            raise ValueError(f"{name} is not JSON")

        (event,) = log.events()
        json.loads(event.detail, parse_constant=strict)  # 'NaN' comes back as is today
    finally:
        log.close()


# -- andon log --json streams in flat memory ---------------------------------------------


def _peak(tmp_path: Path, count: int, monkeypatch: pytest.MonkeyPatch) -> int:
    from backend.report import iter_log_json
    from backend.world import resolve_world

    path = tmp_path / f"log{count}.db"
    log = DeployLog.open(path)
    log.import_many(rows(count, envs=max(1, count // 50)), who="ci")
    log.close()
    monkeypatch.chdir(tmp_path)  # not a git repository: ranges are errors, no git needed
    world = resolve_world(None, path, None)
    world.reading_only = True
    try:
        tracemalloc.start()
        for _ in iter_log_json(world):
            pass
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        world.close()
    return peak


def test_andon_log_json_peak_memory_does_not_grow_with_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = _peak(tmp_path, 2_000, monkeypatch)
    large = _peak(tmp_path, 20_000, monkeypatch)
    # log_chunks first reads every (prev, sha) pair (pairs(), uncached()) and works out
    # every missing range at once, before the first chunk is streamed.
    assert large < 2 * small, (small, large)


# -- untrusted text in the ranges table --------------------------------------------------


def test_a_kept_range_another_program_wrote_never_reaches_log_json_uncleaned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.report import log_json
    from backend.world import resolve_world

    path = tmp_path / "deploys.db"
    log = DeployLog.open(path)
    log.record("prod", sha(1), SUCCEEDED, who="ci", at=T0)
    log.record("staging", sha(2), SUCCEEDED, who="ci", at=T0)
    log.close()
    # Raw ESC, BEL and RLO characters (no \u escapes, so Range.commits_json passes it through).
    evil = '[{"sha":"' + sha(1) + '","author":"a","date":"d","subject":"\x1b]0;pwned\x07 \u202eevil"}]'
    with raw(path) as conn:
        conn.executemany("INSERT INTO ranges (prev_sha, sha, first, count, commits) VALUES (?, ?, 1, 1, ?)",
                         [("", sha(1), evil), ("", sha(2), "[not json]")])
    monkeypatch.chdir(tmp_path)
    world = resolve_world(None, path, None)
    world.reading_only = True
    try:
        text = log_json(world)
    finally:
        world.close()
    assert "\x1b" not in text, "a terminal escape from the file reaches stdout"
    assert "\u202e" not in text
    json.loads(text)  # '[not json]' is spliced in as is today


LAST_WRITER = """
import sys
sys.path.insert(0, {root!r})
from backend.store import DeployLog
log = DeployLog.open(sys.argv[1])
log.record("staging", "%040x" % 7, "succeeded", who="other process")
log.close()
"""


def test_opening_a_second_log_in_a_process_keeps_the_first_ones_locks(tmp_path: Path) -> None:
    """Closing any descriptor of a file drops the process's POSIX locks on it: if opening a log
    read the file itself, a dashboard opening a second connection (its watcher) lost its
    locks, and another process closing its last connection then removed the WAL under it."""
    import subprocess
    import sys

    path = tmp_path / "deploys.db"
    first = DeployLog.open(path)
    try:
        first.record("production", sha(1), SUCCEEDED, who="ci")
        second = DeployLog.open(path)  # the watcher's own connection
        second.close()
        script = tmp_path / "last.py"
        script.write_text(LAST_WRITER.format(root=str(Path(__file__).resolve().parents[1])))
        subprocess.run([sys.executable, str(script), str(path)], check=True, timeout=60)
        # The other process was not the last connection: the WAL must still be there.
        assert Path(f"{path}-wal").exists()
        assert [d.env for d in first.deploys()] == ["staging", "production"]
    finally:
        first.close()
