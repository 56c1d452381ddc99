"""Release ranges, computed once: the commits between two SHAs never change, so
``andon log`` and every dashboard reuse them instead of asking git again.

Best effort throughout: a problem with this table is never an error, it only means
git is asked. Only andon writes it; a row that does not look like what andon writes (a
JSON array of commit objects, with no control or invisible character, since andon
removes them before writing) is ignored and worked out again. ``andon log --json``
splices the kept text into its output, so the check is on the raw bytes, in C, and on
the array's shape; parsing every row as JSON would cost ~0.18 s per 16 MB of ranges
(the benchmark's 10,000 deploys), about a third of a whole `git log`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable

from backend.store.core import BUSY_TIMEOUT, LogCore
from backend.text import bytes_need_cleaning

SCHEMA = """
CREATE TABLE ranges (
    prev_sha TEXT NOT NULL,          -- '' for a first deploy
    sha TEXT NOT NULL,
    first INTEGER NOT NULL,
    count INTEGER NOT NULL,
    commits TEXT NOT NULL,           -- JSON array of {sha, author, date, subject}
    UNIQUE (prev_sha, sha)
);
"""

CachedRange = tuple[bool, int, str]  # first deploy?, number of commits, commits as JSON
Pair = tuple[str | None, str]
# One query per 400 pairs (800 parameters, under SQLite's oldest limit of 999), joined
# on the UNIQUE (prev_sha, sha) index: a query per pair cost ~30 ms for 10,000 deploys.
_BATCH = 400


class RangesMixin(LogCore):
    """The ranges table (mixed into :class:`backend.store.DeployLog`)."""

    def _kept(self, pairs: Iterable[Pair], columns: str) -> Iterable[tuple[Pair, tuple]]:
        wanted = {(prev or "", sha): (prev, sha) for prev, sha in pairs}
        keys = list(wanted)
        for start in range(0, len(keys), _BATCH):
            chunk = keys[start:start + _BATCH]
            with self._lock:
                rows = self._conn.execute(
                    "WITH wanted(prev_sha, sha) AS (VALUES " + ", ".join(["(?, ?)"] * len(chunk)) + ") "
                    f"SELECT r.prev_sha, r.sha{columns} FROM wanted w "
                    "JOIN ranges r ON r.prev_sha = w.prev_sha AND r.sha = w.sha",
                    [value for key in chunk for value in key],
                ).fetchall()
            for row in rows:
                pair = wanted.get((row[0], row[1]))
                if pair is not None:
                    yield pair, row[2:]

    def cached_ranges(self, pairs: Iterable[Pair]) -> dict[Pair, CachedRange]:
        """Ranges computed before (by this or any other andon): (first, count, commits JSON)."""
        found: dict[Pair, CachedRange] = {}
        try:
            for pair, (first, count, raw) in self._kept(pairs, ", r.first, r.count, CAST(r.commits AS BLOB)"):
                commits = _trusted(raw)
                if commits is not None:
                    with contextlib.suppress(TypeError, ValueError):
                        found[pair] = (bool(first), int(count), commits)
        except sqlite3.Error:
            return {}
        return found

    def uncached(self, pairs: Iterable[Pair]) -> list[Pair]:
        """The pairs whose range is not kept yet (without reading any commits)."""
        pairs = list(dict.fromkeys(pairs))
        try:
            kept = {pair for pair, _ in self._kept(pairs, ", substr(r.commits, 1, 1)")}
        except sqlite3.Error:
            return pairs
        return [pair for pair in pairs if pair not in kept]

    def cache_ranges(self, ranges: dict[Pair, CachedRange]) -> None:
        """Keep computed ranges for next time; a read-only or busy log just keeps nothing."""
        if not ranges:
            return
        rows = [(prev or "", sha, int(first), count, commits) for (prev, sha), (first, count, commits) in ranges.items()]
        with self._lock:
            try:
                # A cache write never waits long for a writer that holds the log.
                self._conn.execute("PRAGMA busy_timeout = 250")
                with self.immediate() as conn:
                    conn.executemany(
                        "INSERT OR IGNORE INTO ranges (prev_sha, sha, first, count, commits) VALUES (?, ?, ?, ?, ?)",
                        rows,
                    )
            except sqlite3.Error:
                pass
            finally:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")


def _trusted(raw: object) -> str | None:
    """Kept commits as andon wrote them, or None (then they are worked out again)."""
    if not isinstance(raw, bytes) or bytes_need_cleaning(raw) or b"\x00" in raw:
        return None
    if raw != b"[]" and not (raw.startswith(b'[{"sha":"') and raw.endswith(b'"}]')):
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
