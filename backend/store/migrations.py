"""Migrations: what people and jobs report about expand/migrate/contract changes (issue 9).

Most of a migration's state comes from git (its ``Migration:`` trailers) and the deploys
(which of them are live); :mod:`backend.migrations` works that out. Kept here is only
what git cannot know:

* ``migrations_added``: a migration recorded with ``andon migration add`` (a change with
  no trailer): its kind, ``Migration-Refs`` patterns and the environments it is live in;
* ``migration_state``, one row per (migration, environment) anyone reported on: first
  progress and the last heartbeat, done/total, finished, waived or aborted (with the
  reason), snoozes, the last note, and when a reminder last named it;
* ``migration_samples``: the recent progress reports (done at a time), for the rate; the
  newest :data:`SAMPLES_KEPT` per pair are kept;
* ``migration_cache``: what the evaluation needed git for (the trailers found, when each
  expand and contract went live in each environment, code search results), as JSON under
  a key naming everything it depends on (the deploy branch's head, the succeeded deploys):
  when nothing changed no git command runs. Only andon writes it; anything unreadable
  there is worked out again.

Every step is one ``BEGIN IMMEDIATE`` transaction that reads the pair's row, lets the
caller's rule decide (:meth:`MigrationsMixin.migration_step`), and writes the new state
with one event. Reminders are decided the same way (:meth:`MigrationsMixin.remind_migrations`),
so two andons at once never both send one. Rows are read as untrusted: text is cleaned,
a time that is not one reads as none.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from backend.models import SUCCEEDED, from_iso, to_iso
from backend.store.core import LogCore, guard
from backend.store.deploys import _TIME, _sound
from backend.text import cell_text, clean_line

SCHEMA = """
CREATE TABLE migrations_added (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    refs TEXT NOT NULL DEFAULT '[]',   -- JSON array of Migration-Refs patterns
    envs TEXT NOT NULL DEFAULT '[]',   -- JSON array: the environments it is live in from its add time
    at TEXT NOT NULL,
    who TEXT NOT NULL DEFAULT ''
);
CREATE TABLE migration_state (
    name TEXT NOT NULL,
    env TEXT NOT NULL,
    started_at TEXT,                   -- first progress report
    heartbeat_at TEXT,                 -- last progress report (a heartbeat)
    done INTEGER,
    total INTEGER,
    finished_at TEXT,
    finished_by TEXT,
    ended TEXT,                        -- 'waived' or 'aborted'
    ended_at TEXT,
    ended_by TEXT,
    reason TEXT,
    snoozed_until TEXT,
    snoozes INTEGER NOT NULL DEFAULT 0,
    snooze_reason TEXT,
    note TEXT,
    note_at TEXT,
    note_by TEXT,
    reminded_at TEXT,                  -- when a reminder digest last named it
    PRIMARY KEY (name, env)
);
CREATE TABLE migration_samples (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    env TEXT NOT NULL,
    at TEXT NOT NULL,
    done INTEGER NOT NULL
);
CREATE INDEX migration_samples_pair ON migration_samples(name, env, id);
CREATE TABLE migration_cache (
    kind TEXT NOT NULL,                -- what is kept: 'facts', 'masks', 'grep'
    key TEXT NOT NULL,                 -- everything it depends on
    value TEXT NOT NULL,               -- JSON
    at TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
"""

SAMPLES_KEPT = 48  # progress reports kept per (migration, environment): the rate looks at the recent ones
CACHE_KEPT = 4  # entries kept per cache kind (a dashboard and CI on two branches heads at once, and some)
TEXT_LIMIT = 500  # characters of a reason or note kept and read back
REMIND_EVERY = timedelta(hours=24)
WAIVED = "waived"
ABORTED = "aborted"

_STATE_COLUMNS = ("name, env, started_at, heartbeat_at, done, total, finished_at, finished_by, ended, ended_at,"
                  " ended_by, reason, snoozed_until, snoozes, snooze_reason, note, note_at, note_by, reminded_at")
_WRITABLE = frozenset(_STATE_COLUMNS.replace(" ", "").split(",")) - {"name", "env"}


class MigrationState(NamedTuple):
    """What was reported about one migration in one environment, as read back (cleaned)."""

    name: str
    env: str
    started_at: str | None = None
    heartbeat_at: str | None = None
    done: int | None = None
    total: int | None = None
    finished_at: str | None = None
    finished_by: str = ""
    ended: str | None = None  # WAIVED or ABORTED
    ended_at: str | None = None
    ended_by: str = ""
    reason: str = ""
    snoozed_until: str | None = None
    snoozes: int = 0
    snooze_reason: str = ""
    note: str = ""
    note_at: str | None = None
    note_by: str = ""
    reminded_at: str | None = None


class AddedMigration(NamedTuple):
    """A migration recorded with ``andon migration add`` (no trailer in git)."""

    name: str
    kind: str
    refs: tuple[str, ...]
    envs: tuple[str, ...]
    at: str
    who: str


class LiveDeploy(NamedTuple):
    """A succeeded deploy as the evaluation needs it: its SHA, and when it went live."""

    id: int
    sha: str
    at: str  # finished_at, else started_at


class Step(NamedTuple):
    """What a rule decided a step does: the line to print, and what to write (nothing: ``changes`` None).

    ``event`` None with changes: the state changes without an event (a heartbeat).
    ``sample``: a progress report (done) kept for the rate.
    """

    message: str
    changes: dict[str, Any] | None = None
    event: str | None = None
    detail: dict[str, Any] | None = None
    sample: int | None = None


class Reminder(NamedTuple):
    """A (migration, environment) a reminder may name."""

    name: str
    env: str
    severity: str
    due: str | None
    next: str = ""  # what to do about it (Status.next_step, one line)


def _time(value: object) -> str | None:
    return value if isinstance(value, str) and _TIME.match(value) else None


def _int(value: object) -> int | None:
    return value if type(value) is int else None


def _text(value: object) -> str:
    return cell_text(value)[:TEXT_LIMIT]


def _strings(text: object) -> tuple[str, ...]:
    try:
        items = json.loads(text) if isinstance(text, str) else []
    except ValueError:
        return ()
    return tuple(clean_line(item) for item in items if isinstance(item, str)) if isinstance(items, list) else ()


def _state(row: Sequence[Any]) -> MigrationState:
    (name, env, started, heartbeat, done, total, finished, finished_by, ended, ended_at, ended_by, reason,
     snoozed, snoozes, snooze_reason, note, note_at, note_by, reminded) = row
    return MigrationState(
        cell_text(name), cell_text(env), _time(started), _time(heartbeat), _int(done), _int(total), _time(finished),
        _text(finished_by), ended if ended in (WAIVED, ABORTED) else None, _time(ended_at), _text(ended_by),
        _text(reason), _time(snoozed), _int(snoozes) or 0, _text(snooze_reason), _text(note), _time(note_at),
        _text(note_by), _time(reminded))


class MigrationsMixin(LogCore):
    """Migration reports, added migrations and the evaluation's cache (mixed into :class:`backend.store.DeployLog`)."""

    # -- reading -------------------------------------------------------------------

    @guard
    def migration_states(self) -> dict[tuple[str, str], MigrationState]:
        """Every reported (migration, environment), by that pair."""
        with self._lock:
            rows = self._conn.execute(f"SELECT {_STATE_COLUMNS} FROM migration_state").fetchall()
        states = (_state(row) for row in rows if isinstance(row[0], str) and isinstance(row[1], str))
        return {(state.name, state.env): state for state in states}

    def _migration_state(self, conn: sqlite3.Connection, name: str, env: str) -> MigrationState | None:
        row = conn.execute(f"SELECT {_STATE_COLUMNS} FROM migration_state WHERE name = ? AND env = ?",
                           (name, env)).fetchone()
        return None if row is None else _state(row)

    @guard
    def migration_state(self, name: str, env: str) -> MigrationState | None:
        with self._lock:
            return self._migration_state(self._conn, name, env)

    def _added(self, conn: sqlite3.Connection, name: str | None = None) -> dict[str, AddedMigration]:
        sql = "SELECT name, kind, refs, envs, at, who FROM migrations_added"
        rows = conn.execute(sql + (" WHERE name = ?" if name is not None else ""),
                            (name,) if name is not None else ()).fetchall()
        found = {}
        for row_name, kind, refs, envs, at, who in rows:
            at = _time(at)
            if isinstance(row_name, str) and at is not None:
                found[clean_line(row_name)] = AddedMigration(clean_line(row_name), cell_text(kind), _strings(refs),
                                                             _strings(envs), at, _text(who))
        return found

    @guard
    def added_migrations(self) -> dict[str, AddedMigration]:
        """Migrations recorded with ``andon migration add``, by name."""
        with self._lock:
            return self._added(self._conn)

    @guard
    def migration_samples(self) -> dict[tuple[str, str], list[tuple[str, int]]]:
        """The kept progress reports of every pair, oldest first: (time, done)."""
        with self._lock:
            rows = self._conn.execute("SELECT name, env, at, done FROM migration_samples ORDER BY id").fetchall()
        samples: dict[tuple[str, str], list[tuple[str, int]]] = {}
        for name, env, at, done in rows:
            at = _time(at)
            if isinstance(name, str) and isinstance(env, str) and at is not None and type(done) is int:
                samples.setdefault((clean_line(name), clean_line(env)), []).append((at, done))
        return samples

    @guard
    def succeeded_fingerprint(self) -> str:
        """Changes whenever a deploy succeeds or a succeeded one is recorded (count and newest id)."""
        with self._lock:
            count, newest = self._conn.execute(
                "SELECT count(*), coalesce(max(id), 0) FROM deploys WHERE status = ?", (SUCCEEDED,)).fetchone()
        return f"{count}-{newest}"

    @guard
    def succeeded_deploys(self) -> dict[str, list[LiveDeploy]]:
        """Every sound succeeded deploy, per environment, oldest first (started_at, id): one query."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT d.env, d.id, d.sha, d.started_at, d.finished_at FROM deploys d WHERE d.status = ?"
                f" AND {_sound('d')} ORDER BY d.env, d.started_at, d.id", (SUCCEEDED,)).fetchall()
        timelines: dict[str, list[LiveDeploy]] = {}
        for env, id_, sha, started, finished in rows:
            timelines.setdefault(env, []).append(LiveDeploy(id_, sha, finished or started))
        return timelines

    # -- the evaluation's cache ------------------------------------------------------

    @guard
    def migration_cache(self, kind: str, key: str) -> Any:
        """What was kept under (kind, key), parsed; None when nothing (or nothing readable) is there."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM migration_cache WHERE kind = ? AND key = ?",
                                     (kind, key)).fetchone()
        if row is None or not isinstance(row[0], str):
            return None
        try:
            return json.loads(row[0])
        except ValueError:
            return None

    @guard
    def keep_migration_cache(self, kind: str, key: str, value: Any) -> None:
        """Keep ``value`` (JSON-able) under (kind, key); the oldest entries of the kind beyond CACHE_KEPT go.

        Best effort: a log another andon holds for longer than the busy timeout keeps nothing
        (the next evaluation works it out again).
        """
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        try:
            with self.immediate() as conn:
                conn.execute("INSERT OR REPLACE INTO migration_cache (kind, key, value, at) VALUES (?, ?, ?, ?)",
                             (kind, key, text, self.now()))
                conn.execute("DELETE FROM migration_cache WHERE kind = ? AND key NOT IN (SELECT key FROM"
                             " migration_cache WHERE kind = ? ORDER BY at DESC LIMIT ?)", (kind, kind, CACHE_KEPT))
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise

    # -- steps -------------------------------------------------------------------------

    @guard
    def migration_step(self, name: str, env: str, decide: Callable[[MigrationState | None], Step], *,
                       who: str, now: datetime | None = None) -> str:
        """One step on (name, env) in one ``BEGIN IMMEDIATE`` transaction: ``decide`` sees the pair's
        current row (None: nothing reported yet) and says what to write (or raises to refuse);
        the row, a progress sample and the event are written together. Returns ``decide``'s line."""
        at = to_iso(now) if now is not None else self.now()
        who = clean_line(who)
        with self.immediate() as conn:
            step = decide(self._migration_state(conn, name, env))
            if step.changes is None:
                return step.message
            changes = dict(step.changes)
            unknown = set(changes) - _WRITABLE
            if unknown:
                raise ValueError(f"not a migration_state column: {', '.join(sorted(unknown))}")
            columns = ", ".join(changes)
            updates = ", ".join(f"{column} = excluded.{column}" for column in changes)
            conn.execute(f"INSERT INTO migration_state (name, env, {columns})"
                         f" VALUES (?, ?, {', '.join('?' * len(changes))})"
                         f" ON CONFLICT (name, env) DO UPDATE SET {updates}",
                         (name, env, *changes.values()))
            if step.sample is not None:
                conn.execute("INSERT INTO migration_samples (name, env, at, done) VALUES (?, ?, ?, ?)",
                             (name, env, at, step.sample))
                conn.execute("DELETE FROM migration_samples WHERE name = ? AND env = ? AND id <= coalesce((SELECT id"
                             " FROM migration_samples WHERE name = ? AND env = ? ORDER BY id DESC LIMIT 1 OFFSET ?),"
                             " -1)", (name, env, name, env, SAMPLES_KEPT))
            if step.event is not None:
                self.event(conn, step.event, env, None, who, at, name=name, **(step.detail or {}))
        return step.message

    @guard
    def add_migration(self, name: str, kind: str, refs: Sequence[str], envs: Sequence[str], *, who: str,
                      now: datetime | None = None) -> AddedMigration | None:
        """Record a migration that has no trailer (and its ``migration.added`` event).

        Returns the migration already recorded under that name instead (nothing written), if any.
        """
        at = to_iso(now) if now is not None else self.now()
        who = clean_line(who)
        with self.immediate() as conn:
            existing = self._added(conn, name).get(name)
            if existing is not None:
                return existing
            conn.execute("INSERT INTO migrations_added (name, kind, refs, envs, at, who) VALUES (?, ?, ?, ?, ?, ?)",
                         (name, kind, json.dumps(list(refs), ensure_ascii=False),
                          json.dumps(list(envs), ensure_ascii=False), at, who))
            self.event(conn, "migration.added", None, None, who, at, name=name, migration_kind=kind, refs=list(refs),
                       envs=list(envs))
        return None

    @guard
    def remind_migrations(self, candidates: Iterable[Reminder], *, who: str, now: datetime,
                          every: timedelta = REMIND_EVERY) -> list[int]:
        """Write one ``migration.reminder`` digest per environment naming its candidates that are
        due one; the events' ids (none: nobody due).

        Each digest is an event of its environment, so a receiver limited to some environments
        (``[[notify]] environments``) hears only of theirs. Due: not named by a reminder in the
        last ``every``, and not snoozed now, both read inside the ``BEGIN IMMEDIATE`` that writes
        the digests: of two andons deciding at once, the second sees the first one's
        ``reminded_at`` and sends nothing.
        """
        at = to_iso(now)
        recent = to_iso(now - every)
        with self.immediate() as conn:
            by_env: dict[str, list[Reminder]] = {}
            for item in candidates:
                state = self._migration_state(conn, item.name, item.env)
                if state is not None and state.reminded_at is not None and state.reminded_at > recent:
                    continue
                if state is not None and state.snoozed_until is not None and state.snoozed_until > at:
                    continue
                by_env.setdefault(item.env, []).append(item._replace(next=clean_line(item.next)[:300]))
            written = []
            for env, items in by_env.items():
                for item in items:
                    conn.execute("INSERT INTO migration_state (name, env, reminded_at) VALUES (?, ?, ?)"
                                 " ON CONFLICT (name, env) DO UPDATE SET reminded_at = excluded.reminded_at",
                                 (item.name, item.env, at))
                written.append(self.event(conn, "migration.reminder", env, None, clean_line(who), at,
                                          items=[item._asdict() for item in items]))
            return written


def parse_time(stamp: str | None) -> datetime | None:
    """A time read back from the log (already checked to be one andon writes), or None."""
    return from_iso(stamp) if stamp else None
