"""Reminders of a stopped line: a line stopped for long is recalled in chat, once per interval.

An environment's ``stop_reminder_minutes`` (N, default 60; 0: never) asks for a
``line.reminder`` event (announced: group ``reminders``) when its line has been stopped for N
minutes, again at 2N, 3N... of the same stop. Whoever looks (``andon watch``'s chat thread, a
dashboard's chat feed, at most every half minute each) calls
:meth:`RemindersMixin.remind_stopped_lines`; the decision is taken under ``BEGIN IMMEDIATE``
against the table ``line_reminders`` (per environment: the stop reminded of, by its
``since``, and how many intervals of it were reminded), so of several andons looking at once
exactly one writes each reminder. An andon that was not running for a while sends one
reminder for the intervals it missed, not one for each. A new stop starts the count again.
A look with nothing due is one read and takes no write lock.

Also here, what a stopped line tells a person beside the reminders: whether the rollback of
this stop left the environment unhealthy (:meth:`RemindersMixin.still_unhealthy`, the
``rollback.unhealthy`` event of :mod:`backend.rollback`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import datetime

from backend.models import from_iso, to_iso
from backend.store.core import LogCore, guard
from backend.text import cell_text, clean_line

SCHEMA = """
CREATE TABLE line_reminders (
    env TEXT PRIMARY KEY,
    since TEXT NOT NULL,             -- the stop reminded of: its line_state.since
    reminded INTEGER NOT NULL,       -- intervals of that stop reminded so far (N, 2N, 3N... minutes)
    at TEXT NOT NULL                 -- when the last reminder was written
);
"""


# At most this many intervals of one stop are counted (``reminded`` is an SQLite INTEGER): the
# configuration asks for at least a minute, but no interval, however small, may overflow it.
INTERVALS_LIMIT = 1_000_000_000


class RemindersMixin(LogCore):
    """The ``line_reminders`` table (mixed into :class:`backend.store.DeployLog`)."""

    @guard
    def remind_stopped_lines(self, intervals: Mapping[str, float], *, now: datetime | None = None) -> list[str]:
        """Write a ``line.reminder`` for each stopped line of ``intervals`` (environment -> minutes,
        0: never) that is due; the environments reminded, by this call only."""
        moment = now or self._clock()
        wanted = {env: minutes for env, minutes in intervals.items() if minutes > 0}
        if not wanted or not self._due(wanted, moment):
            return []
        reminded = []
        stamp = to_iso(moment)
        with self.immediate() as conn:  # read and write in one: two andons never both remind
            for env, who, reason, since, automatic, count in self._stopped(conn, wanted):
                due = _intervals(since, moment, wanted[env])
                if due <= count:
                    continue
                conn.execute("INSERT INTO line_reminders (env, since, reminded, at) VALUES (?, ?, ?, ?)"
                             " ON CONFLICT (env) DO UPDATE SET since = excluded.since, reminded = excluded.reminded,"
                             " at = excluded.at", (env, since, due, stamp))
                elapsed = (moment - from_iso(since)).total_seconds() / 60
                self.event(conn, "line.reminder", env, None, "andon", stamp, stopped_at=since,
                           stopped_by=cell_text(who), reason=clean_line(cell_text(reason)),
                           automatic=bool(automatic), minutes=int(elapsed), every=wanted[env], count=due)
                reminded.append(env)
        return reminded

    def _stopped(self, conn: sqlite3.Connection, wanted: Mapping[str, float]) -> list[tuple[str, str, str, str, int, int]]:
        """(env, who, reason, since, automatic, intervals reminded of this stop) of the stopped lines wanted."""
        rows = conn.execute(
            "SELECT s.env, s.who, s.reason, s.since, s.automatic, r.since, r.reminded FROM line_state s"
            " LEFT JOIN line_reminders r ON r.env = s.env WHERE s.stopped = 1").fetchall()
        found = []
        for env, who, reason, since, automatic, reminded_since, reminded in rows:
            if env not in wanted or not isinstance(since, str) or _moment(since) is None:
                continue
            count = reminded if reminded_since == since and type(reminded) is int else 0
            found.append((env, who, reason, since, automatic, count))
        return found

    def _due(self, wanted: Mapping[str, float], moment: datetime) -> bool:
        """Whether any reminder is due (one read, no write lock)."""
        with self._lock:
            for env, _who, _reason, since, _automatic, count in self._stopped(self._conn, wanted):
                if _intervals(since, moment, wanted[env]) > count:
                    return True
        return False

    @guard
    def still_unhealthy(self, deploy_id: int) -> str | None:
        """Why the rollback whose deploy row is ``deploy_id`` left its environment unhealthy, or None
        (no ``rollback.unhealthy`` event for it)."""
        with self._lock:
            row = self._conn.execute("SELECT detail FROM events WHERE kind = 'rollback.unhealthy' AND deploy_id = ?"
                                     " ORDER BY id DESC LIMIT 1", (deploy_id,)).fetchone()
        if row is None:
            return None
        try:
            detail = json.loads(row[0]) if isinstance(row[0], str) else {}
        except ValueError:
            detail = {}
        why = detail.get("why") if isinstance(detail, dict) else None
        return clean_line(why) if isinstance(why, str) else ""


def _moment(stamp: str) -> datetime | None:
    try:
        return from_iso(stamp)
    except (TypeError, ValueError):
        return None


def _intervals(since: str, moment: datetime, minutes: float) -> int:
    """Whole intervals of ``minutes`` between ``since`` and ``moment`` (0 when it cannot be told),
    at most :data:`INTERVALS_LIMIT` (a tiny interval: counted in floats, never overflowing)."""
    began = _moment(since)
    if began is None or not minutes > 0:
        return 0
    count = (moment - began).total_seconds() // (minutes * 60)  # inf when minutes * 60 underflows
    return int(min(max(count, 0.0), INTERVALS_LIMIT))
