"""Deploys: one row per run of a deploy to an environment, append-only.

Rows are never deleted, and a row changes exactly once, from ``running`` to its final
status (triggers enforce both). A rollback is a new row that points at the deploy it
reverts.

**The previous SHA** of a deploy (where its release range starts) is worked out when
it is read: the newest succeeded deploy that started before it in its environment.
Stored, it went stale when an older deploy was recorded or imported later (its commits
were then counted twice); the ``prev_sha`` column keeps what was live when the row
was written, for the record, and is not read.

Rows are read as untrusted: another program may have written anything into the file.
A row that is not what andon writes is returned with ``damaged`` saying why, and its
fields as cleaned stand-ins, so it can be shown and never takes a screen down.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import socket
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, NamedTuple

from backend.config import ENV_NAME
from backend.models import FINAL_STATUSES, INTERRUPTED, RUNNING, STATUSES, SUCCEEDED, Deploy, to_iso
from backend.processes import alive, started_at
from backend.store.core import LogCore, StoreError, explain, guard
from backend.text import cell_text, clean, clean_line, has_controls

SCHEMA = """
CREATE TABLE deploys (
    id INTEGER PRIMARY KEY,
    env TEXT NOT NULL,
    sha TEXT NOT NULL,
    prev_sha TEXT,                   -- what was live when the row was written (not read)
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
"""

# Schema 4: the previous SHA is looked up per row when read; this index makes each
# lookup one seek (EXPLAIN QUERY PLAN in tests/test_store.py).
SUCCEEDED_INDEX = """
CREATE INDEX deploys_env_succeeded ON deploys(env, started_at, id) WHERE status = 'succeeded';
"""

# What andon writes: to_iso() times (always six decimals) and full SHAs (SHA-1 or
# SHA-256 repositories). The same rule in Python (_damage) and in SQL (_sound).
_TIME = re.compile(r"[0-9]{4}-[01][0-9]-[0-3][0-9]T[012][0-9]:[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z\Z")
_TIME_GLOB = "[0-9][0-9][0-9][0-9]-[01][0-9]-[0-3][0-9]T[012][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z"
_SHA = re.compile(r"(?:[0-9a-f]{40}|[0-9a-f]{64})\Z")
_KNOWN = frozenset(STATUSES)


def _sound(a: str) -> str:
    """SQL: row ``a`` is not damaged (what _damage checks, but the status)."""
    texts = " AND ".join(f"typeof({a}.{c}) = 'text'" for c in ("env", "sha", "who", "trigger", "reason", "output",
                                                                  "started_at"))
    return (f"{texts} AND length({a}.sha) IN (40, 64) AND {a}.sha NOT GLOB '*[^0-9a-f]*'"
            f" AND {a}.started_at GLOB '{_TIME_GLOB}'"
            f" AND ({a}.finished_at IS NULL OR (typeof({a}.finished_at) = 'text' AND {a}.finished_at GLOB '{_TIME_GLOB}'))"
            f" AND ({a}.exit_code IS NULL OR typeof({a}.exit_code) = 'integer')"
            f" AND ({a}.reverts IS NULL OR typeof({a}.reverts) = 'integer')")


# The previous SHA: the newest sound succeeded deploy before this one in its environment.
# The row-value comparison lets SQLite seek deploys_env_succeeded (env, started_at, id)
# instead of walking every newer row (an OR of the two cases did: quadratic over a log).
_PREV = (
    "(SELECT p.sha FROM deploys p WHERE p.env = d.env AND p.status = 'succeeded'"
    " AND (p.started_at, p.id) < (d.started_at, d.id) AND " + _sound("p") +
    " ORDER BY p.started_at DESC, p.id DESC LIMIT 1)"
)
_COLUMNS = (
    f"d.id, d.env, d.sha, {_PREV} AS prev_sha, d.status, d.who, d.trigger, d.reason, d.started_at,"
    " d.finished_at, d.exit_code, d.output, d.reverts, d.pid, d.host"
)
_COLUMNS_NO_OUTPUT = _COLUMNS.replace("d.output", "'' AS output")

READ_CHUNK = 500  # deploys per query when streaming the whole log


class ImportResult(NamedTuple):
    imported: int
    skipped: int


class DeploysMixin(LogCore):
    """The deploys table's writes and reads (mixed into :class:`backend.store.DeployLog`)."""

    _host_name: str | None = None

    @property
    def _host(self) -> str:
        if self._host_name is None:
            self._host_name = socket.gethostname()
        return self._host_name

    # -- writing -----------------------------------------------------------------

    def _live_sha(self, conn: sqlite3.Connection, env: str, before: str | None = None) -> str | None:
        sql = "SELECT sha FROM deploys WHERE env = ? AND status = ?"
        params: list[Any] = [env, SUCCEEDED]
        if before is not None:
            sql += " AND started_at < ?"
            params.append(before)
        row = conn.execute(sql + " ORDER BY started_at DESC, id DESC LIMIT 1", params).fetchone()
        return row[0] if row else None

    def _insert(self, conn: sqlite3.Connection, **row: Any) -> int:
        """One deploy row (the columns given), returning its id."""
        if "pid" in row and "pid_started" not in row and type(row["pid"]) is int:
            row["pid_started"] = started_at(row["pid"])  # tells the pid from a later process's reuse of it
        names = ", ".join(row)
        cursor = conn.execute(f"INSERT INTO deploys ({names}) VALUES ({', '.join('?' * len(row))})",
                              tuple(row.values()))
        return int(cursor.lastrowid or 0)

    @guard
    def start(self, env: str, sha: str, *, who: str, trigger: str = "manual", reason: str = "",
              pid: int | None = None, reverts: int | None = None) -> Deploy:
        """Record a deploy that is starting now; its previous sha is what is live now."""
        now = self.now()
        with self.immediate() as conn:
            prev = self._live_sha(conn, env)
            deploy_id = self._insert(conn, env=env, sha=sha, prev_sha=prev, status=RUNNING, who=who,
                                     trigger=trigger, reason=reason, started_at=now,
                                     pid=pid if pid is not None else os.getpid(), host=self._host,
                                     reverts=reverts)
            self.event(conn, "deploy.started", env, deploy_id, who, now, sha=sha, prev_sha=prev, trigger=trigger)
        return self.get(deploy_id)

    @guard
    def finish(self, deploy_id: int, status: str, *, exit_code: int | None, output: str = "") -> Deploy:
        """Finish a running deploy, once."""
        if status not in FINAL_STATUSES:
            raise StoreError(f"cannot finish a deploy as {status!r}")
        now = self.now()
        with self.immediate() as conn:
            row = conn.execute("SELECT env, who, status FROM deploys WHERE id = ?", (deploy_id,)).fetchone()
            if row is None:
                raise StoreError(f"deploy #{deploy_id} does not exist")
            if row[2] != RUNNING:
                raise StoreError(f"deploy #{deploy_id} has already finished ({clean_line(str(row[2]))})")
            conn.execute(
                "UPDATE deploys SET status = ?, finished_at = ?, exit_code = ?, output = ? WHERE id = ?",
                (status, now, exit_code, output, deploy_id),
            )
            self.event(conn, "deploy.finished", row[0], deploy_id, str(row[1]), now, status=status,
                       exit_code=exit_code)
        return self.get(deploy_id)

    @guard
    def record(self, env: str, sha: str, status: str, *, who: str, at: datetime | None = None,
               trigger: str = "ci", reason: str = "", exit_code: int | None = None, output: str = "",
               reverts: int | None = None) -> Deploy:
        """Record a finished deploy that something else ran (``at`` may be in the past)."""
        if status not in FINAL_STATUSES:
            raise StoreError(f"status must be one of {', '.join(FINAL_STATUSES)}, not {status!r}")
        when = to_iso(at) if at else self.now()
        now = self.now()
        with self.immediate() as conn:
            prev = self._live_sha(conn, env, before=when)
            try:
                deploy_id = self._insert(conn, env=env, sha=sha, prev_sha=prev, status=status, who=who,
                                         trigger=trigger, reason=reason, started_at=when, finished_at=when,
                                         exit_code=exit_code, output=output, reverts=reverts)
            except sqlite3.IntegrityError:
                raise StoreError(f"a deploy of {sha[:7]} to {env} at {when} is already in the log") from None
            self.event(conn, "deploy.recorded", env, deploy_id, who, now, sha=sha, status=status, deployed_at=when)
        return self.get(deploy_id)

    @guard
    def import_many(self, rows: Iterable[dict[str, Any]], *, who: str) -> ImportResult:
        """Import finished deploys (dicts with env, sha, status, at, who) in one transaction.

        A deploy already in the log (same environment, time and sha) is skipped. The rows
        and their events go in through sqlite-utils' bulk insert, inside our own
        ``BEGIN IMMEDIATE`` (its inserts nest as savepoints).
        """
        incoming = sorted(rows, key=lambda row: row["at"])
        now = self.now()
        db = self.db
        with self.immediate() as conn:
            # The stored prev_sha (for the record only): what was live at each row's time,
            # counting both what was already logged and the other imported rows.
            timelines: dict[str, tuple[list[str], list[str]]] = {}
            for env in {row["env"] for row in incoming}:
                pairs = conn.execute("SELECT started_at, sha FROM deploys WHERE env = ? AND status = ?"
                                     " ORDER BY started_at, id", (env, SUCCEEDED)).fetchall()
                timelines[env] = ([at for at, _ in pairs], [sha for _, sha in pairs])
            records = []
            for row in incoming:
                times, shas = timelines[row["env"]]
                index = bisect.bisect_left(times, row["at"])
                records.append({
                    "env": row["env"], "sha": row["sha"], "prev_sha": shas[index - 1] if index else None,
                    "status": row["status"], "who": row.get("who") or "", "trigger": row.get("trigger") or "import",
                    "reason": row.get("reason") or "", "started_at": row["at"], "finished_at": row["at"],
                })
                if row["status"] == SUCCEEDED:
                    times.insert(index, row["at"])
                    shas.insert(index, row["sha"])
            before = conn.execute("SELECT coalesce(max(id), 0) FROM deploys").fetchone()[0]
            # INSERT OR IGNORE: the UNIQUE (env, started_at, sha) index skips what is there.
            db.table("deploys").insert_all(records, ignore=True, batch_size=500)
            added = conn.execute("SELECT id, env, sha, status, started_at FROM deploys WHERE id > ? ORDER BY id",
                                 (before,)).fetchall()
            db.table("events").insert_all(
                ({"at": now, "kind": "deploy.imported", "env": env, "deploy_id": id_, "who": clean_line(who),
                  "detail": json.dumps({"sha": sha, "status": status, "deployed_at": at}, ensure_ascii=False)}
                 for id_, env, sha, status, at in added),
                batch_size=500,
            )
        return ImportResult(len(added), len(records) - len(added))

    # -- reading -----------------------------------------------------------------

    def _pid_started(self, deploy_id: object) -> float | None:
        """When the process that runs ``deploy_id`` started (None: not recorded, an older row)."""
        with self._lock:  # the connection is shared between threads: one statement at a time
            row = self._conn.execute("SELECT pid_started FROM deploys WHERE id = ?", (deploy_id,)).fetchone()
        return row[0] if row is not None and isinstance(row[0], (int, float)) else None

    def _deploy(self, row: tuple[Any, ...]) -> Deploy:
        (id_, env, sha, prev, status, who, trigger, reason, started, finished, code, output,
         reverts, pid, host) = row
        if (status == RUNNING and host == self._host and type(pid) is int and 0 < pid < 2**31
                and not alive(pid, started=self._pid_started(id_))):
            # The process that ran it died without finishing: it is not running.
            status = INTERRUPTED
        damage = _damage(row)
        if damage:
            return _stand_in(row, status, damage)
        # Another writer may have put anything in the file: neutralise text as it enters
        # (one scan of the short fields together finds the rare row that needs it).
        if has_controls(f"{env}{who}{trigger}{reason}"):
            env, who, trigger, reason = (clean_line(value) for value in (env, who, trigger, reason))
        return Deploy(id_, env, sha, prev, status, who, trigger, reason, started, finished,
                      code, clean(output) if output else "", reverts)

    @guard
    def get(self, deploy_id: int) -> Deploy:
        with self._lock:
            row = self._conn.execute(f"SELECT {_COLUMNS} FROM deploys d WHERE d.id = ?", (deploy_id,)).fetchone()
        if row is None:
            raise StoreError(f"deploy #{deploy_id} does not exist")
        return self._deploy(row)

    @guard
    def deploys(self, env: str | None = None, *, limit: int | None = None, offset: int = 0,
                with_output: bool = False) -> list[Deploy]:
        """Deploys, newest first (output only when asked: it can be large)."""
        sql = f"SELECT {_COLUMNS if with_output else _COLUMNS_NO_OUTPUT} FROM deploys d"
        params: list[Any] = []
        if env is not None:
            sql += " WHERE d.env = ?"
            params.append(env)
        sql += " ORDER BY d.started_at DESC, d.id DESC LIMIT ? OFFSET ?"
        params += [-1 if limit is None else limit, offset]
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [self._deploy(row) for row in rows]

    def _pages(self, columns: str, env: str | None, limit: int | None, chunk: int) -> Iterator[list[tuple[Any, ...]]]:
        """Rows newest first, ``chunk`` at a time; ``columns`` start with started_at, id.

        Each page is one short query through sqlite-utils, continuing after the last row
        seen (keyset, not OFFSET: a deploy recorded meanwhile neither repeats nor hides
        one, and every page is an index seek, not a walk from the newest row).
        """
        left = -1 if limit is None else limit
        after: tuple[Any, Any] | None = None
        while left:
            size = chunk if left < 0 else min(chunk, left)
            where, params = [], []
            if env is not None:
                where.append("d.env = ?")
                params.append(env)
            if after is not None:
                where.append("(d.started_at, d.id) < (?, ?)")
                params += list(after)
            sql = (f"SELECT {columns} FROM deploys d" + (" WHERE " + " AND ".join(where) if where else "")
                   + " ORDER BY d.started_at DESC, d.id DESC LIMIT ?")
            try:
                with self._lock:
                    rows = [tuple(found.values()) for found in self.db.query(sql, [*params, size])]
            except sqlite3.DatabaseError as error:
                raise StoreError(f"deploy log {self.path}: {explain(error)}") from None
            if not rows:
                return
            after = (rows[-1][0], rows[-1][1])
            yield rows
            if left > 0:
                left -= len(rows)
            if len(rows) < size:
                return

    def iter_deploys(self, env: str | None = None, *, limit: int | None = None,
                     chunk: int = READ_CHUNK) -> Iterator[list[Deploy]]:
        """Deploys newest first, a chunk at a time, for reports that stream the whole log."""
        for rows in self._pages(f"d.started_at AS _at, {_COLUMNS_NO_OUTPUT}", env, limit, chunk):
            yield [self._deploy(row[1:]) for row in rows]

    def iter_pairs(self, env: str | None = None, *, limit: int | None = None,
                   chunk: int = READ_CHUNK) -> Iterator[list[tuple[str | None, str]]]:
        """(previous sha, sha) of each deploy newest first: the release ranges a report needs."""
        for rows in self._pages(f"d.started_at, d.id, {_PREV}, d.sha", env, limit, chunk):
            yield [(prev if isinstance(prev, str) and _SHA.match(prev) else None, clean_line(sha))
                   for _, _, prev, sha in rows if isinstance(sha, str)]

    @guard
    def count(self, env: str | None = None) -> int:
        with self._lock:
            if env is None:
                return int(self._conn.execute("SELECT count(*) FROM deploys").fetchone()[0])
            return int(self._conn.execute("SELECT count(*) FROM deploys WHERE env = ?", (env,)).fetchone()[0])

    @guard
    def environments(self) -> list[str]:
        with self._lock:
            names = [row[0] for row in self._conn.execute("SELECT DISTINCT env FROM deploys ORDER BY env")]
        # Another writer may have put anything in the file: only names andon accepts.
        return [name for name in names if isinstance(name, str) and ENV_NAME.match(name)]

    @guard
    def live(self, env: str) -> Deploy | None:
        """The deploy that is live in ``env``: its latest succeeded one that is not damaged.

        (A damaged row's time may sort anywhere: ``yesterday`` sorts after every real
        time. It is shown in the history, never taken for what is running.)
        """
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS_NO_OUTPUT} FROM deploys d WHERE d.env = ? AND d.status = ?"
                " ORDER BY d.started_at DESC, d.id DESC LIMIT 100",
                (env, SUCCEEDED),
            )
            for row in rows:
                found = self._deploy(row)
                if not found.damaged:
                    return found
        return None


def _damage(row: tuple[Any, ...]) -> str:
    """Why a row is not what andon writes, in a few words; "" when it is sound."""
    (_, env, sha, prev, status, who, trigger, reason, started, finished, code, output, reverts, _, _) = row
    for name, value in (("env", env), ("who", who), ("trigger", trigger), ("reason", reason)):
        if type(value) is not str:
            return f"{name} is {_kind(value)}, not text"
    if type(output) is not str:
        return f"output is {_kind(output)}, not text"
    if status not in _KNOWN:
        return f"status {_show(status)} is not one andon knows"
    if type(sha) is not str or not _SHA.match(sha):
        return f"sha {_show(sha)} is not a full commit SHA"
    if prev is not None and (type(prev) is not str or not _SHA.match(prev)):
        return f"the previous deploy's sha {_show(prev)} is not a full commit SHA"
    if type(started) is not str or not _TIME.match(started):
        return f"started_at {_show(started)} is not a time"
    if finished is not None and (type(finished) is not str or not _TIME.match(finished)):
        return f"finished_at {_show(finished)} is not a time"
    if code is not None and type(code) is not int:
        return f"exit_code {_show(code)} is not a number"
    if reverts is not None and type(reverts) is not int:
        return f"reverts {_show(reverts)} is not a deploy id"
    return ""


def _kind(value: object) -> str:
    return {bytes: "binary", int: "a number", float: "a number", type(None): "missing"}.get(type(value), "wrong")


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return repr(clean_line(str(value))[:40])


def _stand_in(row: tuple[Any, ...], status: object, damage: str) -> Deploy:
    """A damaged row as something every screen can show: all text, cleaned."""
    (id_, env, sha, prev, _, who, trigger, reason, started, finished, code, output, reverts, _, _) = row
    good_prev = prev if isinstance(prev, str) and _SHA.match(prev) else None
    return Deploy(
        id_, cell_text(env), cell_text(sha), good_prev, cell_text(status), cell_text(who), cell_text(trigger), cell_text(reason),
        cell_text(started), cell_text(finished) if finished is not None else None,
        code if type(code) is int else None, clean(_text_multi(output)),
        reverts if type(reverts) is int else None, damaged=f"deploy #{id_} is damaged: {damage}",
    )


def _text_multi(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return "" if value is None else str(value)
