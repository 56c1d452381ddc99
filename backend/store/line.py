"""The line: per environment running or stopped, one deploy at a time, and rollbacks.

**The line** (table ``line_state``, one row per environment that was ever stopped): a
stopped line refuses ``andon deploy`` (:class:`LineStopped`) unless forced, which is
recorded (``deploy.forced``). Stopping is one ``BEGIN IMMEDIATE`` transaction: of many
stoppers at once exactly one writes ``line.stopped``, the others are told who stopped
it and when. Resuming is a person's act (``line.resumed``), refused while a rollback is
pending or running.

**One deploy at a time** (:meth:`LineMixin.try_start`): a deploy starts only when no
other deploy of its environment is running, checked and written in one transaction.
A ``running`` row counts as running when

* it ran on this host and its andon process is alive, or its andon died but the
  command's process group (``deploy_processes``) still runs (an orphan, which the
  caller stops: :func:`backend.deployer.reap`);
* it ran on another host and started less than ``stale_after`` seconds ago (andon
  cannot see another host's processes; the caller passes the environment's timeout
  plus its verification window plus a margin, after which andon would have stopped it).

**Rollbacks** (table ``rollbacks``): one active (``pending`` or ``running``) rollback per
environment, enforced by a unique partial index and checked under ``BEGIN IMMEDIATE``,
so of twelve callers at once one requests it and eleven get :class:`RollbackUnderWay`.
A rollback is requested with ``run_at`` = now + the grace; until its runner claims it
(``pending`` -> ``running``) anyone may cancel it. Its action runs as a new deploy row
(trigger ``rollback``, ``reverts`` the deploy it rolls back); when that row finishes the
rollback ends with the same status. Its target, unless named, is :meth:`LineMixin.last_good`.

**Killed andons.** ``deploy_processes`` keeps the process group of each deploy's action.
A ``running`` row whose andon died on this host is shown ``interrupted`` only once that
group is gone too (:meth:`LineMixin._deploy`): the log never says ``interrupted`` while
the action runs. :meth:`LineMixin.orphans` lists such rows and :meth:`LineMixin.end_orphan`
finishes one (and its rollback), after the caller has stopped its group.

Events written (design contract): ``line.stopped``, ``line.resumed``, ``rollback.requested``,
``rollback.cancelled``, ``rollback.started``, ``rollback.finished``, ``deploy.forced``,
besides the deploys' own ``deploy.started`` and ``deploy.finished``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from backend import AndonError
from backend.models import FAILED, INTERRUPTED, RUNNING, SUCCEEDED, Deploy, from_iso, to_iso, when
from backend.processes import alive, started_at
from backend.store.core import StoreError, guard
from backend.store.deploys import _TIME, DeploysMixin, _sound
from backend.store.output import streamed_so_far
from backend.text import cell_text, clean_line, short

SCHEMA = """
CREATE TABLE line_state (
    env TEXT PRIMARY KEY,
    stopped INTEGER NOT NULL,          -- 1 stopped, 0 running
    who TEXT NOT NULL DEFAULT '',      -- who stopped it (or resumed it)
    reason TEXT NOT NULL DEFAULT '',
    since TEXT NOT NULL,
    automatic INTEGER NOT NULL DEFAULT 0,
    deploy_id INTEGER                  -- the deploy whose verdict stopped it (automatic)
);
CREATE TABLE rollbacks (
    id INTEGER PRIMARY KEY,
    env TEXT NOT NULL,
    status TEXT NOT NULL,              -- pending, running, succeeded, failed, interrupted, cancelled
    who TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    requested_at TEXT NOT NULL,
    run_at TEXT NOT NULL,              -- not before: the grace in which anyone may cancel
    target_sha TEXT NOT NULL,
    target_deploy_id INTEGER,
    reverts INTEGER,                   -- the deploy rolled back
    deploy_id INTEGER,                 -- the rollback's own deploy row, once it started
    runner_host TEXT,
    runner_pid INTEGER,                -- the process that runs (or will run) it
    automatic INTEGER NOT NULL DEFAULT 0,
    ended_by TEXT,                     -- who cancelled it
    finished_at TEXT
);
CREATE UNIQUE INDEX rollbacks_one_active ON rollbacks(env) WHERE status IN ('pending', 'running');
CREATE TABLE deploy_processes (
    deploy_id INTEGER PRIMARY KEY REFERENCES deploys(id),
    host TEXT NOT NULL,
    pgid INTEGER NOT NULL,             -- the action's process group (its own session)
    recorded_at TEXT NOT NULL
);
"""

# When the processes whose numbers the log keeps started (backend.processes.started_at): a
# number reused by another program later is told from the real one, and never signalled.
STARTS = """
ALTER TABLE deploys ADD COLUMN pid_started REAL;
ALTER TABLE deploy_processes ADD COLUMN leader_started REAL;
ALTER TABLE rollbacks ADD COLUMN runner_started REAL;
"""

PENDING = "pending"
CANCELLED = "cancelled"
ACTIVE = (PENDING, RUNNING)


def _seconds(stamp: str) -> str:
    """A log time as ``2026-11-20 14:03:05``."""
    return stamp[:19].replace("T", " ") if stamp else "?"


class LineState(NamedTuple):
    """An environment's line as read back (cleaned). ``since``/``who``/``reason`` of the last change."""

    env: str
    stopped: bool
    who: str = ""
    reason: str = ""
    since: str = ""
    automatic: bool = False
    deploy_id: int | None = None

    def describe(self) -> str:
        """``stopped by alice since 2026-11-20 14:03:05 UTC: api down``."""
        text = f"stopped by {self.who or 'someone'} since {_seconds(self.since)} UTC"
        return text + (f": {self.reason}" if self.reason else "")


class Rollback(NamedTuple):
    """A rollback as read back (cleaned)."""

    id: int
    env: str
    status: str
    who: str
    reason: str
    requested_at: str
    run_at: str
    target_sha: str
    target_deploy_id: int | None
    reverts: int | None
    deploy_id: int | None
    runner_host: str
    runner_pid: int | None
    automatic: bool
    ended_by: str
    finished_at: str | None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def describe(self) -> str:
        """``to 1a2b3c4 (deploy #3), requested by alice at 2026-11-20 14:03:05 UTC``."""
        target = short(self.target_sha) + (f" (deploy #{self.target_deploy_id})" if self.target_deploy_id else "")
        return f"to {target}, requested by {self.who or 'someone'} at {_seconds(self.requested_at)} UTC"


class Orphan(NamedTuple):
    """A running deploy whose andon process died on this host: its action's group may still run."""

    deploy_id: int
    env: str
    pid: int
    pgid: int | None
    trigger: str
    group_started: float | None = None  # when its group's leader started (None: not recorded)


class Target(NamedTuple):
    """What a rollback deploys: a SHA, and the deploy that shipped it (None: a SHA named by hand)."""

    sha: str
    deploy_id: int | None


class LineStopped(AndonError):
    """``andon deploy`` refused: the line is stopped (exit 5)."""

    def __init__(self, state: LineState, message: str = "") -> None:
        super().__init__(message or f"the line of {state.env} is {state.describe()}; nothing was deployed "
                                    f"(andon resume --env {state.env}, or --force --reason WHY in an emergency)")
        self.state = state


class Busy(AndonError):
    """Another deploy of the environment kept running for longer than the caller would wait (exit 6)."""

    def __init__(self, blocker: Deploy, waited: float) -> None:
        super().__init__(f"deploy #{blocker.id} of {blocker.short_sha} to {blocker.env} by {blocker.who or 'someone'} "
                         f"(started {when(blocker.started_at)} UTC) is still running after {waited:g}s of waiting; "
                         "nothing was deployed (--wait SECONDS waits longer)")
        self.blocker = blocker


class RollbackUnderWay(AndonError):
    """A rollback of the environment is already pending or running (exit 7)."""

    def __init__(self, rollback: Rollback, message: str = "") -> None:
        super().__init__(message or f"a rollback of {rollback.env} is already {rollback.status}: "
                                    f"{rollback.describe()} (rollback #{rollback.id})")
        self.rollback = rollback


class Turn(NamedTuple):
    """:meth:`LineMixin.try_start`'s answer: the deploy it started, or the one it must wait for."""

    started: Deploy | None
    blocker: Deploy | None
    forced: LineState | None = None  # the stop a forced deploy overrode


_ROLLBACK_COLUMNS = ("id, env, status, who, reason, requested_at, run_at, target_sha, target_deploy_id, reverts,"
                     " deploy_id, runner_host, runner_pid, automatic, ended_by, finished_at")


def _int(value: object) -> int | None:
    return value if type(value) is int else None


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _rollback(row: tuple[Any, ...]) -> Rollback:
    (id_, env, status, who, reason, requested, run_at, target, target_id, reverts, deploy_id, host, pid, automatic,
     ended_by, finished) = row
    return Rollback(id_, cell_text(env), cell_text(status), cell_text(who), cell_text(reason), cell_text(requested),
                    cell_text(run_at), cell_text(target), _int(target_id), _int(reverts), _int(deploy_id),
                    cell_text(host), _int(pid), bool(automatic), cell_text(ended_by),
                    None if finished is None else cell_text(finished))


def _stale(started: object, now: datetime, stale_after: float) -> bool:
    """A running row of another host older than ``stale_after`` (or with a time andon never writes)."""
    if not (isinstance(started, str) and _TIME.match(started)):
        return True
    return from_iso(started) + timedelta(seconds=stale_after) <= now


class LineMixin(DeploysMixin):
    """The line, rollbacks and deploy process groups (mixed into :class:`backend.store.DeployLog`)."""

    # -- reading -----------------------------------------------------------------

    def _deploy(self, row: tuple[Any, ...]) -> Deploy:
        found = super()._deploy(row)
        # Interrupted because its andon died (deploys._deploy): not while its action still runs.
        if found.status == INTERRUPTED and row[4] == RUNNING and not found.damaged and self._group_alive(found.id):
            return found._replace(status=RUNNING)
        return found

    def _group_alive(self, deploy_id: int) -> bool:
        with self._lock:
            row = self._conn.execute("SELECT host, pgid, leader_started FROM deploy_processes WHERE deploy_id = ?",
                                     (deploy_id,)).fetchone()
        return (row is not None and row[0] == self._host and type(row[1]) is int
                and alive(row[1], group=True, started=_float(row[2])))

    def _line(self, conn: sqlite3.Connection, env: str) -> LineState:
        row = conn.execute("SELECT stopped, who, reason, since, automatic, deploy_id FROM line_state WHERE env = ?",
                           (env,)).fetchone()
        if row is None:
            return LineState(env, False)
        stopped, who, reason, since, automatic, deploy_id = row
        return LineState(env, bool(stopped), cell_text(who), cell_text(reason), cell_text(since), bool(automatic),
                         _int(deploy_id))

    @guard
    def line(self, env: str) -> LineState:
        """The line of ``env`` (running when nobody ever stopped it)."""
        with self._lock:
            return self._line(self._conn, env)

    @guard
    def lines(self) -> dict[str, LineState]:
        """Every environment whose line was ever stopped, by name."""
        with self._lock:
            envs = [row[0] for row in self._conn.execute("SELECT env FROM line_state ORDER BY env")]
            return {cell_text(env): self._line(self._conn, env) for env in envs if isinstance(env, str)}

    @guard
    def rollback(self, rollback_id: int) -> Rollback:
        with self._lock:
            row = self._conn.execute(f"SELECT {_ROLLBACK_COLUMNS} FROM rollbacks WHERE id = ?",
                                     (rollback_id,)).fetchone()
        if row is None:
            raise StoreError(f"rollback #{rollback_id} does not exist")
        return _rollback(row)

    def _active(self, conn: sqlite3.Connection, env: str) -> Rollback | None:
        row = conn.execute(f"SELECT {_ROLLBACK_COLUMNS} FROM rollbacks WHERE env = ? AND status IN (?, ?)",
                           (env, *ACTIVE)).fetchone()
        return None if row is None else _rollback(row)

    @guard
    def active_rollback(self, env: str) -> Rollback | None:
        """The pending or running rollback of ``env``, if any."""
        with self._lock:
            return self._active(self._conn, env)

    @guard
    def rollbacks(self, env: str | None = None, *, limit: int = 20) -> list[Rollback]:
        """Rollbacks, newest first."""
        sql = f"SELECT {_ROLLBACK_COLUMNS} FROM rollbacks"
        params: list[Any] = []
        if env is not None:
            sql += " WHERE env = ?"
            params.append(env)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
        return [_rollback(row) for row in rows]

    def _last_good(self, conn: sqlite3.Connection, env: str, before: tuple[str, int] | None,
                   not_sha: str | None) -> Target | None:
        sql = (f"SELECT d.id, d.sha FROM deploys d WHERE d.env = ? AND d.status = ? AND {_sound('d')}"
               " AND NOT EXISTS (SELECT 1 FROM deploys r WHERE r.reverts = d.id)")
        params: list[Any] = [env, SUCCEEDED]
        if before is not None:
            sql += " AND (d.started_at, d.id) < (?, ?)"
            params += list(before)
        if not_sha is not None:
            sql += " AND d.sha != ?"
            params.append(not_sha)
        row = conn.execute(sql + " ORDER BY d.started_at DESC, d.id DESC LIMIT 1", params).fetchone()
        return None if row is None else Target(row[1], row[0])

    def _newest(self, conn: sqlite3.Connection, env: str) -> tuple[int, str, str] | None:
        """(id, started_at, sha) of the newest sound deploy of ``env``: what a rollback reverts."""
        row = conn.execute(f"SELECT d.id, d.started_at, d.sha FROM deploys d WHERE d.env = ? AND {_sound('d')}"
                           " ORDER BY d.started_at DESC, d.id DESC LIMIT 1", (env,)).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    @guard
    def last_good(self, env: str) -> Target | None:
        """Where a rollback of ``env`` goes now: the newest deploy before the newest one that
        succeeded (so was not unhealthy), that no rollback reverted, and that shipped another SHA
        than the one being rolled back (deploying it again would change nothing). A rollback that
        succeeded counts like any good deploy."""
        with self._lock:
            newest = self._newest(self._conn, env)
            if newest is None:
                return None
            return self._last_good(self._conn, env, (newest[1], newest[0]), newest[2])

    # -- the line ------------------------------------------------------------------

    def _set_line(self, conn: sqlite3.Connection, env: str, stopped: bool, who: str, reason: str, now: str,
                  automatic: bool = False, deploy_id: int | None = None) -> None:
        conn.execute("INSERT INTO line_state (env, stopped, who, reason, since, automatic, deploy_id)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (env) DO UPDATE SET stopped = excluded.stopped,"
                     " who = excluded.who, reason = excluded.reason, since = excluded.since,"
                     " automatic = excluded.automatic, deploy_id = excluded.deploy_id",
                     (env, int(stopped), who, reason, now, int(automatic), deploy_id))

    def _stop(self, conn: sqlite3.Connection, env: str, who: str, reason: str, now: str, automatic: bool,
              deploy_id: int | None) -> LineState | None:
        """Stop the line inside the caller's transaction; the stop already in force, if any."""
        current = self._line(conn, env)
        if current.stopped:
            return current
        self._set_line(conn, env, True, who, reason, now, automatic, deploy_id)
        # The deploy that caused an automatic stop is the event's own deploy_id (event() has no
        # room for a detail key of that name); null for a person's stop.
        self.event(conn, "line.stopped", env, deploy_id, who, now, reason=reason, automatic=automatic)
        return None

    @guard
    def stop_line(self, env: str, *, who: str, reason: str, automatic: bool = False,
                  deploy_id: int | None = None) -> tuple[bool, LineState]:
        """Stop the line of ``env``: (True, the stop) for the one stopper that did it, (False, the
        stop in force) for everyone who came after."""
        who, reason = clean_line(who), clean_line(reason)
        now = self.now()
        with self.immediate() as conn:
            current = self._stop(conn, env, who, reason, now, automatic, deploy_id)
        if current is not None:
            return False, current
        return True, LineState(env, True, who, reason, now, automatic, deploy_id)

    @guard
    def resume_line(self, env: str, *, who: str, reason: str = "") -> tuple[bool, LineState]:
        """Resume the line of ``env``: (True, the new state), or (False, it) when it was running.

        Refused (:class:`RollbackUnderWay`) while a rollback is pending or running: cancel it or let it end.
        """
        who, reason = clean_line(who), clean_line(reason)
        now = self.now()
        with self.immediate() as conn:
            active = self._active(conn, env)
            if active is not None:
                raise RollbackUnderWay(active, f"a rollback of {env} is {active.status}: {active.describe()}; the "
                                               "line stays stopped until it ends"
                                       + (f" or is cancelled (andon rollback --cancel --env {env})"
                                          if active.status == PENDING else ""))
            current = self._line(conn, env)
            if not current.stopped:
                return False, current
            self._set_line(conn, env, False, who, reason, now)
            self.event(conn, "line.resumed", env, None, who, now, reason=reason)
        return True, LineState(env, False, who, reason, now)

    # -- one deploy at a time -------------------------------------------------------

    def _blocker(self, conn: sqlite3.Connection, env: str, stale_after: float) -> int | None:
        rows = conn.execute(
            "SELECT d.id, d.host, d.pid, d.started_at, p.host, p.pgid, d.pid_started, p.leader_started"
            " FROM deploys d LEFT JOIN deploy_processes p ON p.deploy_id = d.id"
            " WHERE d.env = ? AND d.status = ? ORDER BY d.started_at, d.id", (env, RUNNING)).fetchall()
        now = self._clock()
        for deploy_id, host, pid, started, group_host, pgid, pid_started, leader_started in rows:
            if host == self._host:
                # A number reused by another program (another start time) is not the deploy's.
                if type(pid) is int and 0 < pid < 2**31 and alive(pid, started=_float(pid_started)):
                    return int(deploy_id)
                if (group_host == self._host and type(pgid) is int
                        and alive(pgid, group=True, started=_float(leader_started))):
                    return int(deploy_id)  # its andon died, its command runs on: an orphan to stop
            elif not _stale(started, now, stale_after):
                return int(deploy_id)
        return None

    @guard
    def try_start(self, env: str, sha: str, *, who: str, trigger: str, reason: str = "", force: bool = False,
                  stale_after: float, pid: int | None = None, overriding: Mapping[str, Any] | None = None) -> Turn:
        """Start a deploy of ``env`` now if the line lets it and no other deploy of it runs.

        Raises :class:`LineStopped` when the line is stopped and not ``force``; a forced deploy
        writes ``deploy.forced`` with ``deploy.started`` (also when it overrides only what
        ``overriding`` names: a freeze, held commits; backend.gate.overridden). Returns the deploy that blocks it instead
        of starting (the caller waits and asks again).
        """
        now = self.now()
        with self.immediate() as conn:
            state = self._line(conn, env)
            if state.stopped and not force:
                raise LineStopped(state)
            active = self._active(conn, env)
            if active is not None and active.status == RUNNING:
                # Between taking its rollback and starting its deploy row a runner has no row that
                # blocks: without this a forced deploy could run beside the rollback.
                raise RollbackUnderWay(active, f"a rollback of {env} is running: {active.describe()}; nothing was "
                                               "deployed (deploy once it has ended)")
            blocker = self._blocker(conn, env, stale_after)
            if blocker is not None:
                return Turn(None, self.get(blocker))
            prev = self._live_sha(conn, env)
            deploy_id = self._insert(conn, env=env, sha=sha, prev_sha=prev, status=RUNNING, who=who,
                                     trigger=trigger, reason=reason, started_at=now,
                                     pid=pid if pid is not None else os.getpid(), host=self._host)
            self.event(conn, "deploy.started", env, deploy_id, who, now, sha=sha, prev_sha=prev, trigger=trigger)
            if state.stopped or (force and overriding):
                line = {"stopped_by": state.who, "stopped_reason": state.reason} if state.stopped else {}
                self.event(conn, "deploy.forced", env, deploy_id, who, now, reason=reason, **line,
                           **(overriding or {}))
        return Turn(self.get(deploy_id), None, state if state.stopped else None)

    @guard
    def record_process(self, deploy_id: int, pgid: int) -> None:
        """Keep the process group running ``deploy_id``'s action (no event: not news)."""
        with self.immediate() as conn:
            conn.execute("INSERT OR REPLACE INTO deploy_processes (deploy_id, host, pgid, recorded_at, leader_started)"
                         " VALUES (?, ?, ?, ?, ?)", (deploy_id, self._host, pgid, self.now(), started_at(pgid)))

    @guard
    def process_group(self, deploy_id: int) -> int | None:
        """The process group of ``deploy_id``'s action, when it ran on this host."""
        with self._lock:
            row = self._conn.execute("SELECT host, pgid FROM deploy_processes WHERE deploy_id = ?",
                                     (deploy_id,)).fetchone()
        return row[1] if row is not None and row[0] == self._host and type(row[1]) is int else None

    @guard
    def running_here(self, env: str) -> list[tuple[int, int | None, int | None]]:
        """(deploy id, andon pid, action pgid) of each running deploy of ``env`` on this host."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT d.id, d.pid, p.pgid FROM deploys d LEFT JOIN deploy_processes p"
                " ON p.deploy_id = d.id AND p.host = d.host WHERE d.env = ? AND d.status = ? AND d.host = ?",
                (env, RUNNING, self._host)).fetchall()
        return [(int(id_), _int(pid), _int(pgid)) for id_, pid, pgid in rows]

    # -- killed andons -----------------------------------------------------------------

    @guard
    def orphans(self, env: str | None = None) -> list[Orphan]:
        """Running deploys (of ``env``) whose andon process on this host is dead."""
        sql = ("SELECT d.id, d.env, d.pid, d.trigger, p.pgid, d.pid_started, p.leader_started FROM deploys d"
               " LEFT JOIN deploy_processes p ON p.deploy_id = d.id AND p.host = d.host"
               " WHERE d.status = ? AND d.host = ?")
        params: list[Any] = [RUNNING, self._host]
        if env is not None:
            sql += " AND d.env = ?"
            params.append(env)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [Orphan(int(id_), cell_text(env_), pid, _int(pgid), cell_text(trigger), _float(leader_started))
                for id_, env_, pid, trigger, pgid, pid_started, leader_started in rows
                if type(pid) is int and 0 < pid < 2**31 and not alive(pid, started=_float(pid_started))]

    def _finish_rollback(self, conn: sqlite3.Connection, deploy_id: int, env: str, status: str, now: str) -> None:
        row = conn.execute("SELECT id, who FROM rollbacks WHERE deploy_id = ? AND status = ?",
                           (deploy_id, RUNNING)).fetchone()
        if row is not None:
            conn.execute("UPDATE rollbacks SET status = ?, finished_at = ? WHERE id = ?", (status, now, row[0]))
            self.event(conn, "rollback.finished", env, deploy_id, cell_text(row[1]), now, status=status,
                       rollback_id=row[0])

    def _end(self, conn: sqlite3.Connection, deploy_id: int, status: str, exit_code: int | None, output: str,
             now: str) -> bool:
        """Finish a running deploy row (and the rollback it runs) inside the caller's transaction."""
        row = conn.execute("SELECT env, who FROM deploys WHERE id = ? AND status = ?", (deploy_id, RUNNING)).fetchone()
        if row is None:
            return False
        conn.execute("UPDATE deploys SET status = ?, finished_at = ?, exit_code = ?, output = ? WHERE id = ?",
                     (status, now, exit_code, output, deploy_id))
        env = cell_text(row[0])
        self.event(conn, "deploy.finished", env, deploy_id, cell_text(row[1]), now, status=status, exit_code=exit_code)
        self._finish_rollback(conn, deploy_id, env, status, now)
        return True

    @guard
    def end_orphan(self, deploy_id: int, note: str) -> Deploy | None:
        """Record ``deploy_id`` interrupted (its andon died), its output what it streamed then ``note``;
        None when it had already finished (another andon noticed first, or it was not dead after all)."""
        now = self.now()
        with self.immediate() as conn:
            row = conn.execute("SELECT host, pid, pid_started FROM deploys WHERE id = ? AND status = ?",
                               (deploy_id, RUNNING)).fetchone()
            if (row is None or row[0] != self._host or type(row[1]) is not int
                    or alive(row[1], started=_float(row[2]))):
                return None
            # What it streamed before it died is the start of its output (then dropped with the row's end).
            self._end(conn, deploy_id, INTERRUPTED, None, streamed_so_far(conn, deploy_id) + note, now)
        return self.get(deploy_id)

    @guard
    def finish_action(self, deploy_id: int, status: str, *, exit_code: int | None, output: str,
                      news: Sequence[tuple[str, Mapping[str, Any]]] = ()) -> Deploy:
        """Finish a running deploy row and, when it is a rollback's, the rollback, in one transaction;
        ``news``: more events about it (kind, detail) in that transaction (``rollback.unhealthy``)."""
        now = self.now()
        with self.immediate() as conn:
            if not self._end(conn, deploy_id, status, exit_code, output, now):
                raise StoreError(f"deploy #{deploy_id} is not running")
            env = cell_text(conn.execute("SELECT env FROM deploys WHERE id = ?", (deploy_id,)).fetchone()[0])
            for kind, detail in news:
                self.event(conn, kind, env, deploy_id, "andon", now, **detail)
        return self.get(deploy_id)

    # -- rollbacks ---------------------------------------------------------------------

    @guard
    def request_rollback(self, env: str, *, who: str, reason: str, grace: float, to: Target | None = None,
                         automatic: bool = False, cause: int | None = None, runner_pid: int | None = None,
                         ignored: Sequence[str] = ()) -> tuple[Rollback, bool]:
        """Stop the line of ``env`` and request its rollback, to ``to`` or :meth:`last_good`.

        One transaction: raises :class:`RollbackUnderWay` when one is pending or running,
        :class:`AndonError` when there is nothing to roll back or no good deploy to go to.
        Returns the rollback and whether this request stopped the line (False: it was stopped).
        ``ignored``: what it goes past (:func:`backend.rollback.ignored`), in its event.
        """
        who, reason = clean_line(who), clean_line(reason)
        moment = self._clock()
        now = to_iso(moment)
        run_at = to_iso(moment + timedelta(seconds=max(0.0, grace)))
        with self.immediate() as conn:
            active = self._active(conn, env)
            if active is not None:
                raise RollbackUnderWay(active)
            line = self._line(conn, env)
            if to is None and line.stopped:
                # A stop is rolled back once: a caller that comes after the rollback of this stop
                # succeeded (twelve racing callers whose last starts after the first has finished)
                # must not roll back again, further back. Going further is a person's explicit --to.
                done = conn.execute(
                    f"SELECT {_ROLLBACK_COLUMNS} FROM rollbacks WHERE env = ? AND status = ? AND requested_at >= ?"
                    " ORDER BY id DESC LIMIT 1", (env, SUCCEEDED, line.since)).fetchone()
                if done is not None:
                    finished = _rollback(done)
                    raise RollbackUnderWay(finished, f"{env} was already rolled back since its line stopped: "
                                                     f"{finished.describe()} (rollback #{finished.id}, succeeded); the "
                                                     "line stays stopped (roll back further with --to DEPLOY-ID|SHA)")
            newest = self._newest(conn, env)
            reverts = newest[0] if newest is not None else None
            if to is None:
                if newest is None:
                    raise AndonError(f"{env} has no deploys: there is nothing to roll back")
                to = self._last_good(conn, env, (newest[1], newest[0]), newest[2])
                if to is None:
                    raise AndonError(f"{env} has no earlier good deploy to roll back to (one that succeeded, "
                                     f"shipped another SHA than deploy #{newest[0]} and was not rolled back): "
                                     "name one with --to DEPLOY-ID|SHA")
            stopped = self._stop(conn, env, who, reason or f"rollback of {env} to {short(to.sha)}", now,
                                 automatic, cause) is None
            cursor = conn.execute(
                "INSERT INTO rollbacks (env, status, who, reason, requested_at, run_at, target_sha, target_deploy_id,"
                " reverts, runner_host, runner_pid, automatic) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (env, PENDING, who, reason, now, run_at, to.sha, to.deploy_id, reverts, self._host,
                 runner_pid if runner_pid is not None else os.getpid(), int(automatic)))
            rollback_id = int(cursor.lastrowid or 0)
            self.event(conn, "rollback.requested", env, reverts, who, now, reason=reason,
                       target_deploy_id=to.deploy_id, target_sha=to.sha, reverts=reverts, run_at=run_at,
                       rollback_id=rollback_id, automatic=automatic,
                       **({"ignored": [clean_line(item) for item in ignored]} if ignored else {}))
        return self.rollback(rollback_id), stopped

    @guard
    def cancel_rollback(self, env: str, *, who: str) -> Rollback:
        """Cancel the pending rollback of ``env``; the line stays stopped and nothing runs.

        Raises :class:`RollbackUnderWay` when it is already running (too late), :class:`AndonError`
        when there is none.
        """
        who = clean_line(who)
        now = self.now()
        with self.immediate() as conn:
            active = self._active(conn, env)
            if active is None:
                raise AndonError(f"no rollback of {env} is pending: nothing to cancel")
            if active.status != PENDING:
                raise RollbackUnderWay(active, f"the rollback of {env} is already running ({active.describe()}): "
                                               "too late to cancel")
            conn.execute("UPDATE rollbacks SET status = ?, ended_by = ?, finished_at = ? WHERE id = ?",
                         (CANCELLED, who, now, active.id))
            self.event(conn, "rollback.cancelled", env, active.reverts, who, now, rollback_id=active.id,
                       target_sha=active.target_sha, requested_by=active.who)
        return self.rollback(active.id)

    @guard
    def claim_rollback(self, rollback_id: int, pid: int) -> Rollback | None:
        """The runner ``pid`` takes rollback ``rollback_id`` while it is pending; None when it is not."""
        with self.immediate() as conn:
            updated = conn.execute("UPDATE rollbacks SET runner_host = ?, runner_pid = ?, runner_started = ?"
                                   " WHERE id = ? AND status = ?",
                                   (self._host, pid, started_at(pid), rollback_id, PENDING)).rowcount
        return self.rollback(rollback_id) if updated else None

    @guard
    def begin_rollback(self, rollback_id: int, pid: int) -> Rollback | None:
        """Pending -> running (from now on it cannot be cancelled); None when it is no longer pending."""
        with self.immediate() as conn:
            updated = conn.execute("UPDATE rollbacks SET status = ?, runner_host = ?, runner_pid = ?, runner_started = ?"
                                   " WHERE id = ? AND status = ?",
                                   (RUNNING, self._host, pid, started_at(pid), rollback_id, PENDING)).rowcount
        return self.rollback(rollback_id) if updated else None

    @guard
    def start_rollback_deploy(self, rollback_id: int, pid: int | None = None, *,
                              ignored: Sequence[str] = ()) -> Deploy:
        """The running rollback's own deploy row (trigger ``rollback``), with ``deploy.started``
        and ``rollback.started`` (``ignored``: what it goes past, in that event)."""
        now = self.now()
        with self.immediate() as conn:
            row = conn.execute(f"SELECT {_ROLLBACK_COLUMNS} FROM rollbacks WHERE id = ?", (rollback_id,)).fetchone()
            if row is None or row[2] != RUNNING or row[10] is not None:
                raise StoreError(f"rollback #{rollback_id} is not running without a deploy")
            found = _rollback(row)
            prev = self._live_sha(conn, found.env)
            deploy_id = self._insert(conn, env=found.env, sha=found.target_sha, prev_sha=prev, status=RUNNING,
                                     who=found.who, trigger="rollback", reason=found.reason, started_at=now,
                                     pid=pid if pid is not None else os.getpid(), host=self._host,
                                     reverts=found.reverts)
            conn.execute("UPDATE rollbacks SET deploy_id = ? WHERE id = ?", (deploy_id, rollback_id))
            self.event(conn, "deploy.started", found.env, deploy_id, found.who, now, sha=found.target_sha,
                       prev_sha=prev, trigger="rollback")
            self.event(conn, "rollback.started", found.env, deploy_id, found.who, now, target_sha=found.target_sha,
                       reverts=found.reverts, rollback_id=rollback_id,
                       **({"ignored": [clean_line(item) for item in ignored]} if ignored else {}))
        return self.get(deploy_id)

    @guard
    def end_rollback(self, rollback_id: int, status: str, why: str = "") -> bool:
        """End an active rollback that has no deploy row (its runner could not start, or died in the
        grace); False when it was not active or has a deploy row (that row's end ends it)."""
        if status not in (FAILED, INTERRUPTED):
            raise StoreError(f"a rollback without a deploy ends failed or interrupted, not {status!r}")
        now = self.now()
        with self.immediate() as conn:
            row = conn.execute("SELECT env, who FROM rollbacks WHERE id = ? AND status IN (?, ?) AND deploy_id IS NULL",
                               (rollback_id, *ACTIVE)).fetchone()
            if row is None:
                return False
            conn.execute("UPDATE rollbacks SET status = ?, finished_at = ? WHERE id = ?", (status, now, rollback_id))
            self.event(conn, "rollback.finished", cell_text(row[0]), None, cell_text(row[1]), now, status=status,
                       rollback_id=rollback_id, error=clean_line(why))
        return True

    @guard
    def orphan_rollbacks(self, env: str | None = None) -> list[Rollback]:
        """Active rollbacks without a deploy row whose runner on this host is dead."""
        sql = f"SELECT {_ROLLBACK_COLUMNS} FROM rollbacks WHERE status IN (?, ?) AND deploy_id IS NULL AND runner_host = ?"
        params: list[Any] = [*ACTIVE, self._host]
        if env is not None:
            sql += " AND env = ?"
            params.append(env)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        found = [_rollback(row) for row in rows]
        return [item for item in found if item.runner_pid is not None and 0 < item.runner_pid < 2**31
                and not alive(item.runner_pid, started=self._runner_started(item.id))]

    def _runner_started(self, rollback_id: int) -> float | None:
        with self._lock:
            row = self._conn.execute("SELECT runner_started FROM rollbacks WHERE id = ?", (rollback_id,)).fetchone()
        return _float(row[0]) if row is not None else None
