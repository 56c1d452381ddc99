"""Held commits: what a rollback took out of an environment stays out until reverted or released.

Table ``held_commits``, one row per (environment, commit) hold. A row is *held* while
``released_at`` is NULL; a person's release fills ``released_at``, ``released_by`` and
``release_reason`` and the row is kept (the log forgets nothing). A unique partial index
allows one held row per (env, sha): holding a commit already held is a no-op, and a
commit released and then taken out again by a later rollback gets a new row.

``bound`` is the lower bound of the range the commit was held from (the rollback's target,
the reverted deploy's previous SHA when that range could not be worked out, or the commit
itself when only it could be held): no commit reachable from it can descend from a held
commit, so a search for reverts walks ``SHA ^bound`` and loses nothing
(:func:`backend.held.blocking`, which copes with a bound gone from the clone).

Holding writes ``commit.held`` and releasing ``commit.released`` (one commit: detail ``sha``;
all of an environment's at once: ONE event, detail ``shas``, ``subjects`` and ``count``), in the
same transaction as the rows (see :mod:`backend.held` for what decides which commits, and the events' detail).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from backend.store.core import LogCore, guard
from backend.text import cell_text, clean_line

SCHEMA = """
CREATE TABLE held_commits (
    id INTEGER PRIMARY KEY,
    env TEXT NOT NULL,
    sha TEXT NOT NULL,                 -- full SHA
    subject TEXT NOT NULL DEFAULT '',
    bound TEXT NOT NULL DEFAULT '',    -- the held range's lower bound (see the module's docstring)
    rollback_id INTEGER,               -- the rollback that held it
    reverts INTEGER,                   -- the deploy that rollback reverted
    held_at TEXT NOT NULL,
    released_at TEXT,                  -- NULL: still held
    released_by TEXT,
    release_reason TEXT
);
CREATE UNIQUE INDEX held_commits_one ON held_commits(env, sha) WHERE released_at IS NULL;
"""

EVENT_SHAS = 100  # full SHAs (and subjects) named in a commit.held event at most; ``count`` says how many


class HeldCommit(NamedTuple):
    """A commit held in ``env`` (read back cleaned). ``bound``: the lower bound of the range it was held from."""

    env: str
    sha: str
    subject: str
    rollback_id: int | None
    held_at: str
    bound: str = ""

    @property
    def short_sha(self) -> str:
        return self.sha[:7]


def _int(value: object) -> int | None:
    return value if type(value) is int else None


class HeldMixin(LogCore):
    """Held commits (mixed into :class:`backend.store.DeployLog`)."""

    @guard
    def held_commits(self, env: str) -> list[HeldCommit]:
        """The commits still held in ``env``, in the order they were held (a range newest first)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT env, sha, subject, rollback_id, held_at, bound FROM held_commits"
                " WHERE env = ? AND released_at IS NULL ORDER BY id", (env,)).fetchall()
        return [HeldCommit(cell_text(env_), cell_text(sha).lower(), cell_text(subject), _int(rollback_id),
                           cell_text(held_at), cell_text(bound).lower())
                for env_, sha, subject, rollback_id, held_at, bound in rows]

    @guard
    def hold_commits(self, env: str, commits: Sequence[tuple[str, str]], *, bound: str, who: str,
                     rollback_id: int | None, reverts: int | None, **detail: Any) -> list[HeldCommit]:
        """Hold ``commits`` ((sha, subject), newest first) in ``env``; those already held stay as they are.

        One transaction: the rows and one ``commit.held`` event naming the commits newly held
        (none newly held: no event). Returns the commits newly held.
        """
        now = self.now()
        added: list[HeldCommit] = []
        with self.immediate() as conn:
            for sha, subject in commits:
                subject = clean_line(subject)
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO held_commits (env, sha, subject, bound, rollback_id, reverts, held_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)", (env, sha, subject, bound, rollback_id, reverts, now))
                if cursor.rowcount:
                    added.append(HeldCommit(env, sha, subject, rollback_id, now, bound))
            if added:
                named = added[:EVENT_SHAS]
                self.event(conn, "commit.held", env, reverts, who, now, rollback_id=rollback_id, reverts=reverts,
                           shas=[held.sha for held in named], subjects=[held.subject for held in named],
                           count=len(added), **detail)
        return added

    @guard
    def release_commit(self, env: str, sha: str, *, who: str, reason: str) -> HeldCommit | None:
        """Release ``sha`` in ``env`` (one ``commit.released`` event); None when it was not held
        (never, or released already: of two people releasing at once, one writes)."""
        now = self.now()
        who, reason = clean_line(who), clean_line(reason)
        with self.immediate() as conn:
            row = conn.execute("SELECT id, subject, rollback_id, held_at, bound FROM held_commits"
                               " WHERE env = ? AND sha = ? AND released_at IS NULL", (env, sha)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE held_commits SET released_at = ?, released_by = ?, release_reason = ? WHERE id = ?",
                         (now, who, reason, row[0]))
            self.event(conn, "commit.released", env, None, who, now, sha=sha, reason=reason)
        return HeldCommit(env, sha, cell_text(row[1]), _int(row[2]), cell_text(row[3]), cell_text(row[4]))

    @guard
    def release_all_commits(self, env: str, *, who: str, reason: str) -> list[HeldCommit]:
        """Release every commit held in ``env`` (a person decided the rollback's commits were fine):
        one transaction, ONE ``commit.released`` event for them all (detail ``shas`` and
        ``subjects``, at most :data:`EVENT_SHAS`, ``count`` and ``reason``), so chat says it once.
        Returns those released, in the order they were held; none held: no event, ``[]``."""
        now = self.now()
        who, reason = clean_line(who), clean_line(reason)
        with self.immediate() as conn:
            rows = conn.execute("SELECT id, sha, subject, rollback_id, held_at, bound FROM held_commits"
                                " WHERE env = ? AND released_at IS NULL ORDER BY id", (env,)).fetchall()
            if not rows:
                return []
            conn.executemany("UPDATE held_commits SET released_at = ?, released_by = ?, release_reason = ? WHERE id = ?",
                             [(now, who, reason, row[0]) for row in rows])
            released = [HeldCommit(env, cell_text(sha).lower(), cell_text(subject), _int(rollback_id),
                                   cell_text(held_at), cell_text(bound).lower())
                        for _, sha, subject, rollback_id, held_at, bound in rows]
            named = released[:EVENT_SHAS]
            self.event(conn, "commit.released", env, None, who, now, shas=[commit.sha for commit in named],
                       subjects=[commit.subject for commit in named], count=len(released), reason=reason)
        return released
