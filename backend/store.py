"""The deploy log: one SQLite file shared by every dashboard and CI writer on a host.

* WAL mode and a busy timeout, so readers never block the writer and writers queue.
* ``PRAGMA user_version`` is the schema version; :data:`MIGRATIONS` only ever grows
  and each step is applied under ``BEGIN IMMEDIATE`` so concurrent openers agree.
* A file that is not SQLite, is not ours, is corrupt, or was written by a newer
  andon is refused with one line and never modified.
* Deploy rows are append-only: rows are never deleted, and a row changes exactly
  once, from ``running`` to its final status (triggers enforce both). Events are
  never changed at all.
* Every change writes an event row in the same transaction.

Python's ``sqlite3`` is used directly, not sqlite-utils: every write here is one
``BEGIN IMMEDIATE`` transaction (sqlite-utils' ``atomic()`` issues a plain ``BEGIN``,
which fails at once under concurrent writers), the queries are few and fixed, and
importing sqlite-utils cost 55-100 ms on every start of the CLI and the dashboard.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import json
import os
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from backend import AndonError
from backend.config import ENV_NAME
from backend.models import (
    FINAL_STATUSES,
    INTERRUPTED,
    RUNNING,
    SUCCEEDED,
    Deploy,
    Event,
    to_iso,
    utc_now,
)
from backend.text import clean, clean_line, has_controls

BUSY_TIMEOUT = 10.0
SQLITE_MAGIC = b"SQLite format 3\x00"

MIGRATIONS: list[str] = [
    # 1: deploys and events
    """
    CREATE TABLE deploys (
        id INTEGER PRIMARY KEY,
        env TEXT NOT NULL,
        sha TEXT NOT NULL,
        prev_sha TEXT,
        status TEXT NOT NULL,
        who TEXT NOT NULL DEFAULT '',
        trigger TEXT NOT NULL DEFAULT 'manual',
        reason TEXT NOT NULL DEFAULT '',
        started_at TEXT NOT NULL,
        finished_at TEXT,
        exit_code INTEGER,
        output TEXT NOT NULL DEFAULT '',
        reverts INTEGER REFERENCES deploys(id),
        pid INTEGER,
        host TEXT
    );
    CREATE INDEX deploys_env_started ON deploys(env, started_at, id);
    CREATE INDEX deploys_started ON deploys(started_at, id);
    CREATE UNIQUE INDEX deploys_identity ON deploys(env, started_at, sha);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        env TEXT,
        deploy_id INTEGER REFERENCES deploys(id),
        who TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_at ON events(at, id);
    CREATE TRIGGER deploys_append_only BEFORE DELETE ON deploys
    BEGIN SELECT RAISE(ABORT, 'the deploy log is append-only'); END;
    CREATE TRIGGER deploys_known_status BEFORE INSERT ON deploys
    WHEN NEW.status NOT IN ('running', 'succeeded', 'failed', 'interrupted', 'unhealthy')
    BEGIN SELECT RAISE(ABORT, 'unknown deploy status'); END;
    CREATE TRIGGER deploys_finish_once BEFORE UPDATE ON deploys
    WHEN OLD.status != 'running'
      OR NEW.status NOT IN ('succeeded', 'failed', 'interrupted', 'unhealthy')
      OR NEW.id IS NOT OLD.id OR NEW.env IS NOT OLD.env OR NEW.sha IS NOT OLD.sha
      OR NEW.prev_sha IS NOT OLD.prev_sha OR NEW.who IS NOT OLD.who
      OR NEW.trigger IS NOT OLD.trigger OR NEW.reason IS NOT OLD.reason
      OR NEW.started_at IS NOT OLD.started_at OR NEW.reverts IS NOT OLD.reverts
      OR NEW.pid IS NOT OLD.pid OR NEW.host IS NOT OLD.host
    BEGIN SELECT RAISE(ABORT, 'a deploy changes once: from running to its final status'); END;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
    """,
    # 2: release ranges, computed once. The commits between two SHAs never change,
    # so `andon log` and every dashboard reuse them instead of asking git again.
    """
    CREATE TABLE ranges (
        prev_sha TEXT NOT NULL,          -- '' for a first deploy
        sha TEXT NOT NULL,
        first INTEGER NOT NULL,
        count INTEGER NOT NULL,
        commits TEXT NOT NULL,           -- JSON array of {sha, author, date, subject}
        UNIQUE (prev_sha, sha)
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

_COLUMNS = (
    "id, env, sha, prev_sha, status, who, trigger, reason, started_at, finished_at, "
    "exit_code, output, reverts, pid, host"
)
_COLUMNS_NO_OUTPUT = _COLUMNS.replace("output", "'' AS output")


CachedRange = tuple[bool, int, str]  # first deploy?, number of commits, commits as JSON


class StoreError(AndonError):
    pass


T = TypeVar("T")


def _guard(method: Callable[..., T]) -> Callable[..., T]:
    """Turn any SQLite failure into a one-line :class:`StoreError` naming the file."""

    @functools.wraps(method)
    def wrapper(self: DeployLog, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as error:
            raise StoreError(f"deploy log {self.path}: {_explain(error)}") from None

    return wrapper


def _explain(error: sqlite3.Error) -> str:
    text = str(error)
    if "malformed" in text or "not a database" in text:
        return f"the file is corrupt ({text}); it was left untouched"
    if "locked" in text or "busy" in text:
        return f"{text} (another andon held it for more than {BUSY_TIMEOUT:.0f}s)"
    return text


class ImportResult(NamedTuple):
    imported: int
    skipped: int


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DeployLog:
    """The deploy log at ``path``. Thread-safe: one connection behind a lock."""

    def __init__(self, path: Path, conn: sqlite3.Connection, clock: Callable[[], datetime]) -> None:
        self.path = path
        self._conn = conn
        self._lock = threading.RLock()
        self._clock = clock
        self._host = socket.gethostname()

    # -- opening -----------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        clock: Callable[[], datetime] = utc_now,
        create_parent: bool = False,
    ) -> DeployLog:
        path = Path(path)
        if path.is_dir():
            raise StoreError(f"deploy log {path}: is a directory, not a file")
        if not path.parent.is_dir():
            if not create_parent:
                raise StoreError(f"deploy log {path}: the directory {path.parent} does not exist")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StoreError(f"deploy log {path}: cannot create its directory: {error.strerror}") from None
        if path.exists():
            try:
                with path.open("rb") as handle:
                    head = handle.read(len(SQLITE_MAGIC))
            except OSError as error:
                raise StoreError(f"deploy log {path}: cannot read: {error.strerror}") from None
            if head and head != SQLITE_MAGIC:
                raise StoreError(
                    f"deploy log {path}: not an SQLite database (left untouched); "
                    "point --db or ANDON_DB at a deploy log or a new file"
                )
        try:
            conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as error:
            raise StoreError(f"deploy log {path}: cannot open: {error}") from None
        log = cls(path, conn, clock)
        try:
            log._prepare()
        except sqlite3.DatabaseError as error:
            conn.close()
            raise StoreError(f"deploy log {path}: {_explain(error)}") from None
        except StoreError:
            conn.close()
            raise
        return log

    def _prepare(self) -> None:
        # Read the version and the tables in one read transaction: another andon
        # creating the log between two separate reads would make a brand-new log
        # look like a foreign file (version 0 with tables).
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                tables = {
                    row[0]
                    for row in self._conn.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                    )
                }
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"deploy log {self.path}: written by a newer andon (schema {version}, "
                f"this andon knows up to {SCHEMA_VERSION}); upgrade andon. The file was left untouched"
            )
        # Version 0 with tables, or a version without our tables: another program's
        # file (user_version is free for any application to use). Never touch it.
        if (version == 0 and tables) or (version > 0 and not {"deploys", "events"} <= tables):
            raise StoreError(
                f"deploy log {self.path}: this SQLite file is not an andon deploy log "
                f"(it holds {', '.join(sorted(tables)[:3]) or 'no tables'}); it was left untouched"
            )
        if version < SCHEMA_VERSION:
            self._migrate()
        mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"deploy log {self.path}: could not switch to WAL mode (got {mode})")

    def _migrate(self) -> None:
        with self._immediate():
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version >= SCHEMA_VERSION:  # another andon (maybe a newer one) got here first
                return
            for number in range(version, SCHEMA_VERSION):
                for statement in _split_sql(MIGRATIONS[number]):
                    self._conn.execute(statement)
            # PRAGMA cannot take parameters; SCHEMA_VERSION is our own integer.
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _immediate(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that takes the write lock up front (``BEGIN IMMEDIATE``)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    # -- change checks -----------------------------------------------------------

    @_guard
    def data_version(self) -> int:
        """Changes when *another* connection commits: the cheap "has anyone written?" check."""
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    # -- writing -----------------------------------------------------------------

    def _now(self) -> str:
        return to_iso(self._clock())

    def _event(
        self,
        conn: sqlite3.Connection,
        kind: str,
        env: str | None,
        deploy_id: int | None,
        who: str,
        at: str,
        **detail: Any,
    ) -> None:
        conn.execute(
            "INSERT INTO events (at, kind, env, deploy_id, who, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (at, kind, env, deploy_id, who, json.dumps(detail, ensure_ascii=False)),
        )

    def _live_sha(self, conn: sqlite3.Connection, env: str, before: str | None = None) -> str | None:
        sql = "SELECT sha FROM deploys WHERE env = ? AND status = ?"
        params: list[Any] = [env, SUCCEEDED]
        if before is not None:
            sql += " AND started_at < ?"
            params.append(before)
        row = conn.execute(sql + " ORDER BY started_at DESC, id DESC LIMIT 1", params).fetchone()
        return row[0] if row else None

    @_guard
    def start(
        self,
        env: str,
        sha: str,
        *,
        who: str,
        trigger: str = "manual",
        reason: str = "",
        pid: int | None = None,
        reverts: int | None = None,
    ) -> Deploy:
        """Record a deploy that is starting now; its previous sha is what is live now."""
        now = self._now()
        with self._immediate() as conn:
            prev = self._live_sha(conn, env)
            cursor = conn.execute(
                "INSERT INTO deploys (env, sha, prev_sha, status, who, trigger, reason, started_at,"
                " pid, host, reverts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (env, sha, prev, RUNNING, who, trigger, reason, now,
                 pid if pid is not None else os.getpid(), self._host, reverts),
            )
            deploy_id = int(cursor.lastrowid or 0)
            self._event(conn, "deploy.started", env, deploy_id, who, now, sha=sha, prev_sha=prev,
                        trigger=trigger)
        return self.get(deploy_id)

    @_guard
    def finish(self, deploy_id: int, status: str, *, exit_code: int | None, output: str = "") -> Deploy:
        """Finish a running deploy, once."""
        if status not in FINAL_STATUSES:
            raise StoreError(f"cannot finish a deploy as {status!r}")
        now = self._now()
        with self._immediate() as conn:
            row = conn.execute("SELECT env, who, status FROM deploys WHERE id = ?", (deploy_id,)).fetchone()
            if row is None:
                raise StoreError(f"deploy #{deploy_id} does not exist")
            if row[2] != RUNNING:
                raise StoreError(f"deploy #{deploy_id} has already finished ({row[2]})")
            conn.execute(
                "UPDATE deploys SET status = ?, finished_at = ?, exit_code = ?, output = ? WHERE id = ?",
                (status, now, exit_code, output, deploy_id),
            )
            self._event(conn, "deploy.finished", row[0], deploy_id, row[1], now, status=status,
                        exit_code=exit_code)
        return self.get(deploy_id)

    @_guard
    def record(
        self,
        env: str,
        sha: str,
        status: str,
        *,
        who: str,
        at: datetime | None = None,
        trigger: str = "ci",
        reason: str = "",
        exit_code: int | None = None,
        output: str = "",
        reverts: int | None = None,
    ) -> Deploy:
        """Record a finished deploy that something else ran (``at`` may be in the past)."""
        if status not in FINAL_STATUSES:
            raise StoreError(f"status must be one of {', '.join(FINAL_STATUSES)}, not {status!r}")
        when = to_iso(at) if at else self._now()
        now = self._now()
        with self._immediate() as conn:
            prev = self._live_sha(conn, env, before=when)
            try:
                cursor = conn.execute(
                    "INSERT INTO deploys (env, sha, prev_sha, status, who, trigger, reason, started_at,"
                    " finished_at, exit_code, output, reverts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (env, sha, prev, status, who, trigger, reason, when, when, exit_code, output, reverts),
                )
            except sqlite3.IntegrityError:
                raise StoreError(
                    f"a deploy of {sha[:7]} to {env} at {when} is already in the log"
                ) from None
            deploy_id = int(cursor.lastrowid or 0)
            self._event(conn, "deploy.recorded", env, deploy_id, who, now, sha=sha, status=status,
                        deployed_at=when)
        return self.get(deploy_id)

    @_guard
    def import_many(self, rows: Iterable[dict[str, Any]], *, who: str) -> ImportResult:
        """Import finished deploys (dicts with env, sha, status, at, who) in one transaction.

        Each deploy's previous sha is the last succeeded deploy before it in its
        environment, counting both what was already logged and the other imported
        rows. A deploy already in the log (same environment, time and sha) is skipped.
        """
        incoming = sorted(rows, key=lambda row: row["at"])
        now = self._now()
        imported = skipped = 0
        with self._immediate() as conn:
            timelines: dict[str, tuple[list[str], list[str]]] = {}
            for env in {row["env"] for row in incoming}:
                times: list[str] = []
                shas: list[str] = []
                for at, sha in conn.execute(
                    "SELECT started_at, sha FROM deploys WHERE env = ? AND status = ?"
                    " ORDER BY started_at, id", (env, SUCCEEDED)
                ):
                    times.append(at)
                    shas.append(sha)
                timelines[env] = (times, shas)
            for row in incoming:
                times, shas = timelines[row["env"]]
                index = bisect.bisect_left(times, row["at"])
                prev = shas[index - 1] if index else None
                cursor = conn.execute(
                    "INSERT INTO deploys (env, sha, prev_sha, status, who, trigger, reason, started_at,"
                    " finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (env, started_at, sha) DO NOTHING",
                    (row["env"], row["sha"], prev, row["status"], row.get("who") or "",
                     row.get("trigger") or "import", row.get("reason") or "", row["at"], row["at"]),
                )
                if not cursor.rowcount:
                    skipped += 1
                    continue
                imported += 1
                if row["status"] == SUCCEEDED:
                    times.insert(index, row["at"])
                    shas.insert(index, row["sha"])
                self._event(conn, "deploy.imported", row["env"], cursor.lastrowid, who, now,
                            sha=row["sha"], status=row["status"], deployed_at=row["at"])
        return ImportResult(imported, skipped)

    # -- the range cache -------------------------------------------------------------

    def cached_ranges(self, pairs: Iterable[tuple[str | None, str]]) -> dict[tuple[str | None, str], CachedRange]:
        """Ranges computed before (by this or any other andon): (first, count, commits JSON).

        Best effort: a problem with the cache is never an error, it only means git is asked.
        """
        wanted = {(prev or "", sha): (prev, sha) for prev, sha in pairs}
        keys = list(wanted)
        found: dict[tuple[str | None, str], CachedRange] = {}
        try:
            with self._lock:
                # One query per 400 pairs (800 parameters, under SQLite's oldest limit of
                # 999), joined on the UNIQUE (prev_sha, sha) index: a query per pair cost
                # ~30 ms for 10,000 deploys.
                for start in range(0, len(keys), 400):
                    chunk = keys[start:start + 400]
                    rows = self._conn.execute(
                        "WITH wanted(prev_sha, sha) AS (VALUES " + ", ".join(["(?, ?)"] * len(chunk)) + ") "
                        "SELECT r.prev_sha, r.sha, r.first, r.count, r.commits FROM wanted w "
                        "JOIN ranges r ON r.prev_sha = w.prev_sha AND r.sha = w.sha",
                        [value for key in chunk for value in key],
                    ).fetchall()
                    for prev, sha, first, count, commits in rows:
                        # Only andon writes this table; a row that is not a JSON array (a
                        # damaged file, another tool) is ignored and computed again.
                        pair = wanted.get((prev, sha))
                        if pair is None or not isinstance(commits, str) or commits[:1] != "[" or commits[-1:] != "]":
                            continue
                        with contextlib.suppress(TypeError, ValueError):
                            found[pair] = (bool(first), int(count), commits)
        except sqlite3.Error:
            return {}
        return found

    def cache_ranges(self, ranges: dict[tuple[str | None, str], CachedRange]) -> None:
        """Keep computed ranges for next time; a read-only or busy log just keeps nothing."""
        if not ranges:
            return
        rows = [(prev or "", sha, int(first), count, commits) for (prev, sha), (first, count, commits) in ranges.items()]
        with self._lock:
            try:
                # A cache write never waits long for a writer that holds the log.
                self._conn.execute("PRAGMA busy_timeout = 250")
                with self._immediate() as conn:
                    conn.executemany(
                        "INSERT OR IGNORE INTO ranges (prev_sha, sha, first, count, commits) VALUES (?, ?, ?, ?, ?)",
                        rows,
                    )
                self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            except sqlite3.Error:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")

    # -- reading -----------------------------------------------------------------

    def _deploy(self, row: tuple[Any, ...]) -> Deploy:
        (id_, env, sha, prev, status, who, trigger, reason, started, finished, code, output,
         reverts, pid, host) = row
        if status == RUNNING and host == self._host and pid and not pid_alive(pid):
            # The process that ran it died without finishing: it is not running.
            status = INTERRUPTED
        # Another writer may have put anything in the file: neutralise text as it enters
        # (one scan of the short fields together finds the rare row that needs it).
        if has_controls(f"{env}{sha}{prev}{status}{who}{trigger}{reason}{started}{finished}"):
            env, sha, status, who, trigger, reason = (
                clean_line(str(value)) for value in (env, sha, status, who, trigger, reason))
            prev = prev and clean_line(str(prev))
            started, finished = clean_line(str(started)), finished and clean_line(str(finished))
        return Deploy(id_, env, sha, prev, status, who, trigger, reason, started, finished,
                      code, clean(output) if output else "", reverts)

    @_guard
    def get(self, deploy_id: int) -> Deploy:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM deploys WHERE id = ?", (deploy_id,)
            ).fetchone()
        if row is None:
            raise StoreError(f"deploy #{deploy_id} does not exist")
        return self._deploy(row)

    @_guard
    def deploys(
        self,
        env: str | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        with_output: bool = False,
    ) -> list[Deploy]:
        """Deploys, newest first (output only when asked: it can be large)."""
        sql = f"SELECT {_COLUMNS if with_output else _COLUMNS_NO_OUTPUT} FROM deploys"
        params: list[Any] = []
        if env is not None:
            sql += " WHERE env = ?"
            params.append(env)
        sql += " ORDER BY started_at DESC, id DESC LIMIT ? OFFSET ?"
        params += [-1 if limit is None else limit, offset]
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [self._deploy(row) for row in rows]

    @_guard
    def count(self, env: str | None = None) -> int:
        with self._lock:
            if env is None:
                return int(self._conn.execute("SELECT count(*) FROM deploys").fetchone()[0])
            return int(
                self._conn.execute("SELECT count(*) FROM deploys WHERE env = ?", (env,)).fetchone()[0]
            )

    @_guard
    def environments(self) -> list[str]:
        with self._lock:
            names = [row[0] for row in self._conn.execute("SELECT DISTINCT env FROM deploys ORDER BY env")]
        # Another writer may have put anything in the file: only names andon accepts.
        return [name for name in names if isinstance(name, str) and ENV_NAME.match(name)]

    @_guard
    def live(self, env: str) -> Deploy | None:
        """The deploy that is live in ``env``: its latest succeeded one."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS_NO_OUTPUT} FROM deploys WHERE env = ? AND status = ?"
                " ORDER BY started_at DESC, id DESC LIMIT 1",
                (env, SUCCEEDED),
            ).fetchone()
        return self._deploy(row) if row else None

    @_guard
    def events(self, limit: int = 100) -> list[Event]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, at, kind, env, deploy_id, who, detail FROM events"
                " ORDER BY at DESC, id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [Event(*row) for row in rows]


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (triggers contain ';' inside BEGIN ... END)."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
