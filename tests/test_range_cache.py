"""Release ranges are computed once and kept in the deploy log for every later andon."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.report import log_entries, log_json
from backend.store import MIGRATIONS, SCHEMA_VERSION, DeployLog
from backend.world import resolve_world
from tests.conftest import Repo

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def two_deploys(repo: Repo, db: Path) -> list[str]:
    shas = [repo.commit(f"change {n}") for n in range(4)]
    log = DeployLog.open(db)
    log.record("prod", shas[0], "succeeded", who="ci", at=NOW - timedelta(hours=2))
    log.record("prod", shas[3], "succeeded", who="ci", at=NOW)
    log.close()
    return shas


def test_a_range_computed_once_is_served_from_the_log_without_git(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "d.db"
    shas = two_deploys(repo, db)
    first = resolve_world(repo.path, db, None)
    computed = log_entries(first)
    first.close()
    assert [c["subject"] for c in computed[0]["commits"]] == ["change 3", "change 2", "change 1"]
    # Another andon, with no repository at all, gets the same commits from the log.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    second = resolve_world(None, db, None)
    assert second.history.root is None
    assert log_entries(second) == computed
    second.close()
    assert shas


def test_cached_commits_outlive_a_force_push(repo: Repo, tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    two_deploys(repo, db)
    world = resolve_world(repo.path, db, None)
    before = log_entries(world)
    world.close()
    # Rewrite history so the deployed commits are gone from the clone.
    repo.git("reset", "--hard", "HEAD~3")
    repo.git("reflog", "expire", "--expire=now", "--all")
    repo.git("gc", "--prune=now", "--quiet")
    world = resolve_world(repo.path, db, None)
    assert log_entries(world) == before
    world.close()


def test_log_json_is_the_same_document_as_the_entries(repo: Repo, tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    two_deploys(repo, db)
    for _ in range(2):  # computed, then from the cache
        world = resolve_world(repo.path, db, None)
        assert json.loads(log_json(world)) == {"deploys": log_entries(world)}
        world.close()


def test_a_log_of_schema_1_is_migrated_and_keeps_its_deploys(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript(MIGRATIONS[0].sql)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO deploys (env, sha, status, started_at) VALUES ('prod', ?, 'succeeded', ?)",
                 ("a" * 40, "2026-01-01T00:00:00.000000Z"))
    conn.close()
    log = DeployLog.open(db)
    assert [d.sha for d in log.deploys()] == ["a" * 40]
    log.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM ranges").fetchone()[0] == 0
    conn.close()


def test_a_broken_cache_row_is_ignored_not_fatal(repo: Repo, tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    two_deploys(repo, db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TABLE IF EXISTS ranges")  # as if the cache were lost
    conn.close()
    world = resolve_world(repo.path, db, None)
    entries = log_entries(world)
    assert [c["subject"] for c in entries[0]["commits"]] == ["change 3", "change 2", "change 1"]
    world.close()


def kept_ranges(db: Path) -> set[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return {(prev, sha) for prev, sha in conn.execute("SELECT prev_sha, sha FROM ranges")}
    finally:
        conn.close()


def test_recording_and_importing_keep_the_ranges_at_once(repo: Repo, tmp_path: Path) -> None:
    shas = [repo.commit(f"change {n}") for n in range(3)]
    db = tmp_path / "d.db"
    andon = [sys.executable, "-m", "tui.cli", "--repo", str(repo.path), "--db", str(db)]
    subprocess.run([*andon, "record", "--env", "prod", "--sha", shas[0], "--status", "succeeded",
                    "--at", "2026-01-01T00:00:00Z"], check=True, capture_output=True)
    assert kept_ranges(db) == {("", shas[0])}
    lines = json.dumps({"environment": "prod", "sha": shas[2], "status": "succeeded",
                        "time": "2026-01-02T00:00:00Z"}) + "\n"
    subprocess.run([*andon, "import"], input=lines.encode(), check=True, capture_output=True)
    assert kept_ranges(db) == {("", shas[0]), (shas[0], shas[2])}


def test_a_deploy_keeps_its_range_when_it_finishes(repo: Repo, tmp_path: Path) -> None:
    first, second = repo.commit("one"), repo.commit("two")
    db = tmp_path / "d.db"
    andon = [sys.executable, "-m", "tui.cli", "--repo", str(repo.path), "--db", str(db)]
    for sha in (first, second):
        subprocess.run([*andon, "deploy", "--env", "prod", "--sha", sha, "--", sys.executable, "-c", "pass"],
                       check=True, capture_output=True)
    assert kept_ranges(db) == {("", first), (first, second)}


def test_a_shallow_clone_never_keeps_a_cut_off_range(repo: Repo, tmp_path: Path) -> None:
    # P, then a side branch F1..F5 merged as M: the range P..M holds six commits.
    p = repo.commit("P")
    repo.git("checkout", "-q", "-b", "feature")
    for n in range(1, 6):
        repo.commit(f"F{n}")
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--no-ff", "-m", "M", "feature")
    m = repo.head()
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "2", f"file://{repo.path}", str(shallow)], check=True)
    db = tmp_path / "d.db"
    log = DeployLog.open(db)
    log.record("prod", p, "succeeded", who="ci", at=NOW - timedelta(hours=1))
    log.record("prod", m, "succeeded", who="ci", at=NOW)
    log.close()
    world = resolve_world(shallow, db, None)
    newest = log_entries(world)[0]
    world.close()
    assert newest["commits"] == [] and "history stops" in newest["commits_error"]
    # The full clone then computes (and keeps) the real range.
    world = resolve_world(repo.path, db, None)
    assert [c["subject"] for c in log_entries(world)[0]["commits"]] == ["M", "F5", "F4", "F3", "F2", "F1"]
    world.close()


def test_whole_history_ranges_work_without_a_current_branch(repo: Repo, tmp_path: Path) -> None:
    shas = [repo.commit(f"c{n}") for n in range(3)]
    repo.git("checkout", "-q", "--orphan", "unborn")  # HEAD names a branch with no commits
    from backend.history import History

    history = History.discover(repo.path)
    found = history._compute_batch([(shas[0], shas[2])], bounded=False)[(shas[0], shas[2])]
    assert found.error is None and [c.subject for c in found.commits] == ["c2", "c1"]


def test_kept_ranges_are_read_back_as_untrusted_text(repo: Repo, tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    shas = two_deploys(repo, db)
    world = resolve_world(repo.path, db, None)
    log_entries(world)  # computes and keeps both ranges
    world.close()
    conn = sqlite3.connect(db, isolation_level=None)
    planted = json.dumps([{"sha": shas[3], "author": "\x1b]0;pwned\x07eve", "date": "2026", "subject": "\x1b[2Jx"}])
    conn.execute("UPDATE ranges SET commits = ? WHERE sha = ?", (planted, shas[3]))
    conn.execute("UPDATE ranges SET commits = 'not json' WHERE sha = ?", (shas[0],))
    conn.close()
    world = resolve_world(repo.path, db, None)
    newest, first = log_entries(world)
    world.close()
    # Neither is what andon writes: both are ignored and worked out from git again.
    assert [c["subject"] for c in newest["commits"]] == ["change 3", "change 2", "change 1"]
    assert [c["subject"] for c in first["commits"]] == ["change 0"]


def test_kept_ranges_spliced_into_json_carry_no_planted_escapes(repo: Repo, tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    shas = two_deploys(repo, db)
    world = resolve_world(repo.path, db, None)
    log_json(world)
    world.close()
    conn = sqlite3.connect(db, isolation_level=None)
    planted = json.dumps([{"sha": shas[3], "author": "eve", "date": "2026", "subject": "\x1b[2Jx"}])
    conn.execute("UPDATE ranges SET commits = ? WHERE sha = ?", (planted, shas[3]))
    conn.close()
    world = resolve_world(repo.path, db, None)
    text = log_json(world)
    world.close()
    assert "\\u001b" not in text and "\x1b" not in text
    assert json.loads(text)["deploys"][0]["commits"][0]["subject"] == "change 3"  # worked out again
    # Planted in andon's own shape, with raw control and invisible characters: ignored too.
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE ranges SET commits = ? WHERE sha = ?",
                 (f'[{{"sha":"{shas[3]}","author":"eve","date":"2026","subject":"\x1b[2Jx\u202e"}}]', shas[3]))
    conn.close()
    world = resolve_world(repo.path, db, None)
    text = log_json(world)
    world.close()
    assert "\x1b" not in text and "\u202e" not in text
    assert json.loads(text)["deploys"][0]["commits"][0]["subject"] == "change 3"


def test_kept_ranges_are_read_back_in_batches_whole(tmp_path: Path) -> None:
    # More pairs than one query takes (400), first deploys (no previous sha) among them,
    # a pair asked twice, a pair never kept, and a damaged row that is skipped alone.
    log = DeployLog.open(tmp_path / "d.db")
    pairs = [(None if n % 7 == 0 else f"{n:040x}", f"{n + 1:040x}") for n in range(950)]
    log.cache_ranges({pair: (pair[0] is None, n, f'[{{"sha":"{n}"}}]') for n, pair in enumerate(pairs)})
    conn = sqlite3.connect(tmp_path / "d.db", isolation_level=None)
    conn.execute("UPDATE ranges SET count = 'many' WHERE sha = ?", (f"{6:040x}",))
    conn.close()
    missing = (f"{1:040x}", f"{9999:040x}")
    found = log.cached_ranges([*pairs, pairs[3], missing])
    assert set(found) == set(pairs) - {pairs[5]}
    assert found[pairs[0]] == (True, 0, '[{"sha":"0"}]') and pairs[0][0] is None
    assert found[pairs[949]] == (False, 949, '[{"sha":"949"}]')
    log.close()
