"""The outbox: the chat messages the log owes its receivers, written with the events they announce.

**Written with the event.** A log is told its receivers (the ``[[notify]]`` tables of the
configuration) with :meth:`OutboxMixin.announce_to`; :meth:`~backend.store.core.LogCore.event`
then adds one outbox row per receiver that wants the event's environment and its group of news
(:func:`group`, :data:`GROUPS`; a receiver's ``events``, by default every group but
``deploys``), for the kinds that are announced (:func:`announced`), inside the writer's own
transaction. So a message exists if
and only if its event does (a transaction rolled back leaves neither), a crash between writing
an event and sending its message loses nothing, and writing an event costs one insert per
receiver: a rollback never waits on chat. A log opened without receivers announces nothing.

**Delivered by anyone.** :mod:`backend.notify` delivers: whoever holds a receiver's lease
(``outbox:KIND:URL_ENV`` in :mod:`~backend.store.leases`) sends that receiver's pending rows
oldest first, one at a time, and settles each with :meth:`OutboxMixin.settle_outbox`. Rows of
one receiver go out in the order of their ids (the order their events were committed); a row
that waits (a retry later) holds back the rows after it.

**States.** ``pending`` (``next_at``: not tried before then; ``error``: why the last try
failed), ``delivered``, ``dead`` (a receiver refused it for good: kept with the reason, listed
for the dashboard, never retried unless a person asks with :meth:`OutboxMixin.retry_dead`),
``dismissed`` (a dead row a person put aside with :meth:`OutboxMixin.dismiss_dead`) and
``skipped`` (nothing to say after all: a rollback's own deploy row failing is told by
``rollback.finished``). Rows are kept (they are the record of what was sent); a row going dead
writes a ``notify.dead`` event, so every dashboard learns of it through change detection.

Rows are read as untrusted, like every table: another program may have written the file.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from backend.config import Notifier
from backend.models import FAILED, SUCCEEDED, UNHEALTHY, to_iso
from backend.store.core import LogCore, StoreError, clean_detail, guard
from backend.text import cell_text, clean_line

SCHEMA = """
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    event_id INTEGER NOT NULL REFERENCES events(id),
    receiver TEXT NOT NULL,              -- a [[notify]] receiver's key: KIND:URL_ENV
    repository TEXT NOT NULL DEFAULT '', -- the repository the event's writer ran in (named in the message)
    state TEXT NOT NULL DEFAULT 'pending',  -- pending, delivered, dead, dismissed, skipped
    attempts INTEGER NOT NULL DEFAULT 0, -- requests sent so far
    next_at TEXT NOT NULL,               -- pending: not tried before this time (to_iso)
    error TEXT NOT NULL DEFAULT '',      -- why the last try failed, or why it is dead: one line
    created_at TEXT NOT NULL,
    done_at TEXT                         -- when it was delivered, went dead, was dismissed or skipped
);
CREATE UNIQUE INDEX outbox_once ON outbox(event_id, receiver);
CREATE INDEX outbox_state ON outbox(state, receiver, id);
"""

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"
DISMISSED = "dismissed"
SKIPPED = "skipped"
OUTBOX_STATES = (PENDING, DELIVERED, DEAD, DISMISSED, SKIPPED)

# The kinds chat hears of, by group of news (backend.config.NOTIFY_EVENTS: a receiver's
# ``events`` names groups): the line stopping and resuming (issue 8), rollbacks starting,
# ending, held by a migration (issue 9) or not bringing health back (issue 10), forced
# deploys, commits held after a rollback and released, reminders (overdue migration cleanups,
# a line stopped for long), and deploy.finished by its status (below).
GROUPS: dict[str, str] = {
    "line.stopped": "stops", "line.resumed": "resumes",
    "rollback.started": "rollbacks", "rollback.finished": "rollbacks", "rollback.held": "rollbacks",
    "rollback.unhealthy": "rollbacks", "deploy.forced": "forced",
    "commit.held": "holds", "commit.released": "holds",
    "migration.reminder": "reminders", "line.reminder": "reminders",
}
DEPLOY_GROUPS = {FAILED: "failures", UNHEALTHY: "failures", SUCCEEDED: "deploys"}  # deploy.finished by status
ANNOUNCED = frozenset(GROUPS)
ANNOUNCED_DEPLOY_STATUSES = frozenset(DEPLOY_GROUPS)
ERROR_LIMIT = 300  # characters of an error kept and read back


def group(kind: str, detail: Mapping[str, Any]) -> str | None:
    """The group of news an event of ``kind`` with ``detail`` belongs to; None: not announced."""
    if kind == "deploy.finished":
        status = detail.get("status")
        return DEPLOY_GROUPS.get(status) if isinstance(status, str) else None
    return GROUPS.get(kind)


def announced(kind: str, detail: Mapping[str, Any]) -> bool:
    """Whether an event of ``kind`` with ``detail`` is told to the receivers that want its group."""
    return group(kind, detail) is not None


class OutboxItem(NamedTuple):
    """One outbox row and the event it announces, as read back (cleaned)."""

    id: int
    event_id: int
    receiver: str  # KIND:URL_ENV
    state: str
    attempts: int
    next_at: str
    error: str
    created_at: str
    done_at: str | None
    repository: str
    kind: str  # the event's
    env: str | None
    deploy_id: int | None
    who: str
    at: str  # the event's time
    detail: str  # the event's detail, JSON (cleaned: clean_detail)

    @property
    def receiver_kind(self) -> str:
        return self.receiver.partition(":")[0]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "event_id": self.event_id, "receiver": self.receiver, "state": self.state,
                "attempts": self.attempts, "next_at": self.next_at if self.state == PENDING else None,
                "error": self.error, "created_at": self.created_at, "done_at": self.done_at,
                "kind": self.kind, "env": self.env, "deploy_id": self.deploy_id, "who": self.who, "at": self.at}


class Settlement(NamedTuple):
    """What became of one try at a row: :meth:`OutboxMixin.settle_outbox` writes it."""

    state: str  # PENDING (tried again at next_at), DELIVERED, DEAD or SKIPPED
    error: str = ""
    next_at: str | None = None  # PENDING: the next try
    attempted: bool = True  # a request went out (False: the URL or secret is missing, nothing was sent)


_SELECT = f"""
SELECT o.id, o.event_id, o.receiver, o.state, o.attempts, o.next_at, substr(o.error, 1, {ERROR_LIMIT}),
       o.created_at, o.done_at, substr(o.repository, 1, 200),
       e.kind, e.env, e.deploy_id, e.who, e.at, e.detail
FROM outbox o LEFT JOIN events e ON e.id = o.event_id
"""


class OutboxMixin(LogCore):
    """The outbox table (mixed into :class:`backend.store.DeployLog`)."""

    _receivers: tuple[Notifier, ...] = ()
    _repository = ""

    def announce_to(self, receivers: Iterable[Notifier], *, repository: str = "") -> None:
        """Announce this log's events to ``receivers`` from now on (``repository`` is named in them)."""
        self._receivers = tuple(receivers)
        self._repository = clean_line(repository)[:200]

    @property
    def receivers(self) -> tuple[Notifier, ...]:
        """The receivers this log announces to (:meth:`announce_to`)."""
        return self._receivers

    def _announce(self, conn: sqlite3.Connection, event_id: int, kind: str, env: str | None, at: str,
                  detail: Mapping[str, Any]) -> None:
        news = group(kind, detail) if self._receivers else None
        if news is None:
            return
        rows = [(event_id, receiver.key, self._repository, at, at)
                for receiver in self._receivers if receiver.wants(env) and news in receiver.events]
        if rows:
            conn.executemany("INSERT INTO outbox (event_id, receiver, repository, next_at, created_at)"
                             " VALUES (?, ?, ?, ?, ?)", rows)

    # -- delivering ----------------------------------------------------------------

    @guard
    def outbox_heads(self) -> list[OutboxItem]:
        """Each receiver's oldest pending row: the next to send to it (whether due or not)."""
        with self._lock:
            rows = self._conn.execute(
                _SELECT + " WHERE o.id IN (SELECT min(id) FROM outbox WHERE state = 'pending' GROUP BY receiver)"
                " ORDER BY o.id").fetchall()
        return _items(rows)

    @guard
    def outbox_head(self, receiver: str) -> OutboxItem | None:
        """``receiver``'s oldest pending row, or None."""
        with self._lock:
            rows = self._conn.execute(
                _SELECT + " WHERE o.id = (SELECT min(id) FROM outbox WHERE state = 'pending' AND receiver = ?)",
                (receiver,)).fetchall()
        items = _items(rows)
        return items[0] if items else None

    @guard
    def settle_outbox(self, item: OutboxItem, settlement: Settlement, *, now: datetime | None = None) -> bool:
        """Write what became of a try at ``item``; False if it was no longer pending (someone else settled it).

        A row going dead writes a ``notify.dead`` event (detail: receiver, event_id, reason) in
        the same transaction.
        """
        if settlement.state not in (PENDING, DELIVERED, DEAD, SKIPPED):
            raise StoreError(f"an outbox row cannot be settled as {settlement.state!r}")
        stamp = to_iso(now or self._clock())
        error = clean_line(settlement.error)[:ERROR_LIMIT]
        added = 1 if settlement.attempted else 0
        with self.immediate() as conn:
            if settlement.state == PENDING:
                changed = conn.execute(
                    "UPDATE outbox SET attempts = attempts + ?, next_at = coalesce(?, next_at), error = ?"
                    " WHERE id = ? AND state = 'pending'", (added, settlement.next_at, error, item.id)).rowcount
            else:
                changed = conn.execute(
                    "UPDATE outbox SET state = ?, attempts = attempts + ?, error = ?, done_at = ?"
                    " WHERE id = ? AND state = 'pending'",
                    (settlement.state, added, error, stamp, item.id)).rowcount
            if changed and settlement.state == DEAD:
                self.event(conn, "notify.dead", item.env, item.deploy_id, "andon", stamp, receiver=item.receiver,
                           event_id=item.event_id, outbox_id=item.id, reason=error)
        return changed > 0

    # -- reading -------------------------------------------------------------------

    @guard
    def outbox(self, states: Sequence[str] = (PENDING, DEAD), *, limit: int = 500,
               newest: bool = False) -> list[OutboxItem]:
        """Rows in ``states``, oldest first (at most ``limit``): what waits, what is dead.
        ``newest``: the newest ``limit`` rows, newest first (what the dashboard's messages list shows)."""
        wanted = [state for state in states if state in OUTBOX_STATES]
        if not wanted or limit <= 0:
            return []
        marks = ", ".join("?" * len(wanted))
        order = "o.id DESC" if newest else "o.id"
        with self._lock:
            rows = self._conn.execute(_SELECT + f" WHERE o.state IN ({marks}) ORDER BY {order} LIMIT ?",
                                      (*wanted, limit)).fetchall()
        return _items(rows)

    @guard
    def outbox_counts(self) -> dict[str, int]:
        """How many rows are in each state (a cheap summary for a status line)."""
        with self._lock:
            rows = self._conn.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall()
        return {state: count for state, count in rows if state in OUTBOX_STATES}

    # -- a person's decisions ------------------------------------------------------

    @guard
    def retry_dead(self, *, who: str, ids: Sequence[int] | None = None) -> int:
        """Send dead rows again (all, or those ``ids``): after fixing a URL or a receiver. The count."""
        return self._reopen_dead(PENDING, "notify.retried", who, ids)

    @guard
    def dismiss_dead(self, *, who: str, ids: Sequence[int] | None = None) -> int:
        """Put dead rows aside (all, or those ``ids``): kept, no longer listed as dead. The count."""
        return self._reopen_dead(DISMISSED, "notify.dismissed", who, ids)

    def _reopen_dead(self, state: str, kind: str, who: str, ids: Sequence[int] | None) -> int:
        now = self.now()
        where, params = "state = 'dead'", []
        if ids is not None:
            where += f" AND id IN ({', '.join('?' * len(ids))})"
            params = [int(id_) for id_ in ids]
            if not params:
                return 0
        with self.immediate() as conn:
            if state == PENDING:
                count = conn.execute(f"UPDATE outbox SET state = 'pending', attempts = 0, next_at = ?, error = '',"
                                     f" done_at = NULL WHERE {where}", (now, *params)).rowcount
            else:
                count = conn.execute(f"UPDATE outbox SET state = ?, done_at = ? WHERE {where}",
                                     (state, now, *params)).rowcount
            if count:
                self.event(conn, kind, None, None, who, now, count=count)
        return count


def _items(rows: Iterable[tuple[Any, ...]]) -> list[OutboxItem]:
    """Rows as items; one that is not what andon writes (another program's) is left out."""
    items = []
    for (id_, event_id, receiver, state, attempts, next_at, error, created, done, repository,
         kind, env, deploy_id, who, at, detail) in rows:
        if state not in OUTBOX_STATES or type(event_id) is not int or not isinstance(receiver, str):
            continue
        if kind is None:  # no such event: nothing to announce
            kind, at, detail = "", "", "{}"
        items.append(OutboxItem(
            id_, event_id, cell_text(receiver), state, attempts if type(attempts) is int else 0,
            cell_text(next_at), cell_text(error), cell_text(created), None if done is None else cell_text(done),
            cell_text(repository), cell_text(kind), None if env is None else cell_text(env),
            deploy_id if type(deploy_id) is int else None, cell_text(who), cell_text(at), clean_detail(detail)))
    return items


def detail_of(item: OutboxItem) -> dict[str, Any]:
    """The event's detail as a dict (always one: clean_detail wrote valid JSON)."""
    found = json.loads(item.detail)
    return found if isinstance(found, dict) else {}
