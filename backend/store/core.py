"""The core of the deploy log: the file, its connection, its schema, its events.

Every concept kept in the log (deploys, ranges, leases, health samples, the outbox,
...) is a module beside this one with its own tables and methods,
mixed into :class:`backend.store.DeployLog`. This module owns only what they share:

* opening: WAL mode, a busy timeout, and the checks that refuse (in one line, never
  modifying it) a file that is not SQLite, is not ours, is corrupt, or needs a newer andon;
* schema versions: ``PRAGMA user_version`` is the schema version, the migrations only
  ever grow and are applied under ``BEGIN IMMEDIATE`` so concurrent openers agree.
  Beside it, ``andon_meta.writer_min_schema`` is the oldest schema version whose andon
  may still read and write the file: a migration that only adds (a table, a nullable
  column, an index) leaves it alone, so a team that upgrades one laptop first does not
  stop every CI job still on the previous release; a breaking one raises it and names
  the andon release needed;
* :meth:`LogCore.immediate`, the one way to write (a read-then-write that starts with a
  plain ``BEGIN`` fails at once under concurrent writers, whatever the busy timeout);
* the events table and its writer (every change writes an event in the same
  transaction; events are never changed; the outbox hooks in there to queue the chat
  messages announcing an event) and change detection for open dashboards.

sqlite-utils wraps the same connection (:attr:`LogCore.db`) for schema creation, bulk
inserts and the CLI's reports. Its ``atomic()`` and write methods open a SAVEPOINT
when a transaction is already open, so they nest inside our ``BEGIN IMMEDIATE``
(tests/test_store.py checks it under concurrent writers). Opening the log and the
dashboard's first page use the plain connection: importing sqlite-utils costs 70-100 ms.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Self, TypeVar

from backend import ANDON_VERSION, AndonError
from backend.models import Event, to_iso
from backend.text import clean_line

if TYPE_CHECKING:
    import sqlite_utils

BUSY_TIMEOUT = 10.0
SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(AndonError):
    pass


class Migration(NamedTuple):
    """One step of the schema: SQL, or a function given the sqlite-utils Database.

    ``breaking``: older andons must not write to the log after this step (it changes
    or removes something they rely on); ``release`` is then the andon release that
    introduced it, named to them. Applied steps are never edited.
    """

    sql: str = ""
    create: Callable[[sqlite_utils.Database], None] | None = None
    breaking: bool = False
    release: str = ""


class Changes(NamedTuple):
    """What other andons wrote since an event id: the newest id, and (kind, env) pairs."""

    last: int
    kinds: frozenset[tuple[str, str | None]]


EVENTS_SCHEMA = """
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
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
"""


def create_meta(db: sqlite_utils.Database) -> None:
    """Schema 3: ``andon_meta``, where the compatibility rule is kept."""
    db.table("andon_meta").create({"key": str, "value": str}, pk="key", not_null={"value"})
    db.table("andon_meta").insert_all([
        {"key": "writer_min_schema", "value": "3"},  # andons before schema 3 refuse it anyway
        {"key": "writer_min_andon", "value": "0.2.0"},  # the release that introduced schema 3
    ])


T = TypeVar("T")


def guard(method: Callable[..., T]) -> Callable[..., T]:
    """Turn any SQLite failure into a one-line :class:`StoreError` naming the file."""

    @functools.wraps(method)
    def wrapper(self: LogCore, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as error:
            raise StoreError(f"deploy log {self.path}: {explain(error)}") from None

    return wrapper


def explain(error: sqlite3.Error) -> str:
    text = str(error)
    if "malformed" in text or "not a database" in text:
        return f"the file is corrupt ({text}); it was left untouched"
    if "locked" in text or "busy" in text:
        return f"{text} (another andon held it for more than {BUSY_TIMEOUT:.0f}s)"
    return text


DETAIL_LIMIT = 64 * 1024  # characters of an event's detail read back; andon writes a few hundred


def clean_detail(text: object) -> str:
    """An event's JSON detail as read back: every string in it cleaned, always valid JSON."""

    def cleaned(item: Any) -> Any:
        if isinstance(item, str):
            return clean_line(item)
        if isinstance(item, list):
            return [cleaned(part) for part in item]
        if isinstance(item, dict):
            return {clean_line(str(key)): cleaned(part) for key, part in item.items()}
        return item

    raw = text if isinstance(text, str) else "" if text is None else repr(text)
    try:
        if len(raw) > DETAIL_LIMIT:
            raise ValueError("too long")
        # NaN and Infinity are not JSON: refused on the way out, like any other oddity.
        return json.dumps(cleaned(json.loads(raw) if raw else {}), ensure_ascii=False, allow_nan=False)
    except (ValueError, RecursionError):  # not JSON, too deep, too long
        return json.dumps({"text": clean_line(raw[:200])}, ensure_ascii=False)


class LogCore:
    """The deploy log at ``path``. Thread-safe: one connection behind a lock."""

    # Set by backend.store.DeployLog: every concept's steps, in the order they were added.
    MIGRATIONS: Sequence[Migration] = ()
    # Tables without which a file is not an andon log (whatever its version).
    REQUIRED_TABLES = frozenset({"deploys", "events"})

    def __init__(self, path: Path, conn: sqlite3.Connection, clock: Callable[[], datetime]) -> None:
        self.path = path
        self._conn = conn
        self._lock = threading.RLock()
        self._clock = clock
        self._db: sqlite_utils.Database | None = None
        self._version = 0  # the schema version last seen (set when opened)

    @classmethod
    def schema_version(cls) -> int:
        return len(cls.MIGRATIONS)

    @property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils over this log's connection (imported on first use: 70-100 ms)."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self._conn)
        return self._db

    # -- opening -----------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, *, clock: Callable[[], datetime] | None = None,
             create_parent: bool = False) -> Self:
        from backend.models import utc_now

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
        # The file is not read here before SQLite opens it: closing any descriptor of a file
        # drops every POSIX lock this process holds on it, so a second log opened in a
        # process that already has one (a dashboard's watcher) made SQLite think it was
        # alone, and another process then removed the WAL under it ("disk image is
        # malformed"). SQLite reads the header itself and writes nothing to a file that is
        # not a database; that is told apart below, once the open has failed.
        if path.exists() and not os.access(path, os.R_OK):
            raise StoreError(f"deploy log {path}: cannot read: permission denied")
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as error:
            raise StoreError(f"deploy log {path}: cannot open: {error}") from None
        log = cls(path, conn, clock or utc_now)
        try:
            log._prepare()
        except sqlite3.DatabaseError as error:
            conn.close()
            if "not a database" in str(error) and not _has_sqlite_header(path):
                # No SQLite connection of this process can be using a file that is not a
                # database, so reading its first bytes here cannot drop anyone's locks.
                raise StoreError(
                    f"deploy log {path}: not an SQLite database (left untouched); "
                    "point --db or ANDON_DB at a deploy log or a new file"
                ) from None
            raise StoreError(f"deploy log {path}: {explain(error)}") from None
        except StoreError:
            conn.close()
            raise
        return log

    def _prepare(self) -> None:
        # Read the version, the tables and the compatibility rule in one read
        # transaction: another andon creating the log between two separate reads
        # would make a brand-new log look like a foreign file (version 0 with tables).
        # Plain SQL, not sqlite-utils' table_names(): this runs before the first frame.
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
                meta = dict(self._conn.execute("SELECT key, value FROM andon_meta").fetchall()
                            if "andon_meta" in tables else [])
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
        known = self.schema_version()
        if version > known and "andon_meta" in tables:
            # A newer andon's log: its rule decides, whatever it did to the tables.
            self._check_newer(version, meta)
        # Version 0 with tables, or a version without our tables: another program's
        # file (user_version is free for any application to use). Never touch it.
        if (version == 0 and tables) or (version > 0 and not self.REQUIRED_TABLES <= tables):
            raise StoreError(
                f"deploy log {self.path}: this SQLite file is not an andon deploy log "
                f"(it holds {', '.join(sorted(tables)[:3]) or 'no tables'}); it was left untouched"
            )
        if version > known:
            self._check_newer(version, meta)
        elif version < known:
            self._migrate()
        self._version = max(version, known)
        mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"deploy log {self.path}: could not switch to WAL mode (got {mode})")

    def _check_newer(self, version: int, meta: dict[str, str]) -> None:
        """A log a newer andon migrated: fine if its changes only added, else one line."""
        try:
            needed = int(meta.get("writer_min_schema", ""))
        except ValueError:
            needed = version  # no rule written: assume the worst
        if needed > self.schema_version():
            release = clean_line(str(meta.get("writer_min_andon") or "a newer release"))[:40]
            raise StoreError(
                f"deploy log {self.path}: needs andon {release} or later (schema {version}, which this "
                f"andon {ANDON_VERSION} cannot write: it knows up to schema {self.schema_version()}); "
                "upgrade andon. The file was left untouched"
            )

    def _rule(self) -> dict[str, str]:
        try:
            return dict(self._conn.execute("SELECT key, value FROM andon_meta").fetchall())
        except sqlite3.OperationalError:  # no such table: an andon before schema 3
            return {}

    def _migrate(self) -> None:
        with self.immediate(check=False):
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            known = self.schema_version()
            if version > known:  # a newer andon got here first: its rule decides
                self._check_newer(version, self._rule())
            if version >= known:  # another andon got here first
                return
            for number in range(version, known):
                step = self.MIGRATIONS[number]
                for statement in _split_sql(step.sql):
                    self._conn.execute(statement)
                if step.create is not None:
                    step.create(self.db)
                if step.breaking:
                    self.db.table("andon_meta").upsert_all([
                        {"key": "writer_min_schema", "value": str(number + 1)},
                        {"key": "writer_min_andon", "value": step.release or ANDON_VERSION},
                    ], pk="key")
            # PRAGMA cannot take parameters; the version is our own integer.
            self._conn.execute(f"PRAGMA user_version = {int(known)}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def immediate(self, *, check: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction that takes the write lock up front (``BEGIN IMMEDIATE``).

        It first checks that no newer andon has changed the schema incompatibly since this
        log was opened (one read of the file header): a dashboard or watcher left open
        across a teammate's upgrade stops writing instead of writing the old way.
        """
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if check:
                    version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                    if version != self._version:
                        if version > self.schema_version():
                            self._check_newer(version, self._rule())
                        self._version = version
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def now(self) -> str:
        return to_iso(self._clock())

    # -- events ------------------------------------------------------------------

    def event(self, conn: sqlite3.Connection, kind: str, env: str | None, deploy_id: int | None,
              who: str, at: str, **detail: Any) -> int:
        """Write one event inside the caller's transaction, and the chat messages announcing it; its id.

        The messages are outbox rows (:mod:`backend.store.outbox`), one insert per receiver,
        in the same transaction: they exist exactly when the event does.
        """
        cursor = conn.execute(
            "INSERT INTO events (at, kind, env, deploy_id, who, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (at, kind, env, deploy_id, clean_line(who), json.dumps(detail, ensure_ascii=False)),
        )
        event_id = int(cursor.lastrowid or 0)
        self._announce(conn, event_id, kind, env, at, detail)
        return event_id

    def _announce(self, conn: sqlite3.Connection, event_id: int, kind: str, env: str | None, at: str,
                  detail: Mapping[str, Any]) -> None:
        """Queue the chat messages announcing an event (the outbox's mixin does; here, none)."""

    @guard
    def events(self, limit: int = 100) -> list[Event]:
        """The newest events, cleaned as they are read (another program may have written them)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, at, kind, env, deploy_id, who, detail FROM events"
                " ORDER BY at DESC, id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [
            Event(id_, clean_line(str(at)), clean_line(str(kind)), env if env is None else clean_line(str(env)),
                  deploy_id if isinstance(deploy_id, int) else None, clean_line(str(who)), clean_detail(detail))
            for id_, at, kind, env, deploy_id, who, detail in rows
        ]

    # -- change detection --------------------------------------------------------

    @guard
    def data_version(self) -> int:
        """Changes when *another* connection commits: the cheap "has anyone written?" check."""
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    @guard
    def last_event_id(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])

    @guard
    def changes(self, after: int) -> Changes:
        """What happened since event ``after``: each (kind, env) once, and the newest id.

        A dashboard asks this only when :meth:`data_version` moved, and reloads only what
        the kinds concern: a range kept in the cache writes no event and reloads nothing.
        """
        with self._lock:
            rows = self._conn.execute(
                "SELECT kind, env, max(id) FROM events WHERE id > ? GROUP BY kind, env", (after,)
            ).fetchall()
        last = max((row[2] for row in rows), default=after)
        return Changes(last, frozenset((clean_line(str(kind)), env if env is None else clean_line(str(env)))
                                       for kind, env, _ in rows))


def _has_sqlite_header(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


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
