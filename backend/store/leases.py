"""Leases: work that one process should do for everyone on the log, done by whoever holds it.

Probing an environment's health (and later delivering the chat outbox) must run once per
log, not once per open dashboard. Whoever wants to do such work calls
:meth:`LeasesMixin.take_lease` before each round with its own holder id
(:func:`holder_id`, one per process and object) and a time to live a few rounds long:

* the lease is taken when nobody holds it, when its holder let it expire, or when it is
  already ours (then it is renewed: a holder renews it every round as it works);
* a holder that dies simply stops renewing, and anyone takes the lease once it expires;
  a holder whose process is known dead (same host, its pid no longer exists: a
  ``kill -9``, a crash) is taken over at once, without waiting for the expiry;
* a holder that stops cleanly calls :meth:`LeasesMixin.release_lease`, freeing it now.

Each take is one ``BEGIN IMMEDIATE`` transaction (read the row, then write it), so two
andons racing for a free lease never both get it. Times come from the log's clock and
are compared as :func:`~backend.models.to_iso` text; andons on different hosts compare
their own clocks, so a lease's time to live should be well above their skew. A row whose
``expires_at`` is not a time andon writes (another program wrote it) counts as expired.
Leases write no event: a renewal every few seconds is not news, and must not make every
dashboard reload.
"""

from __future__ import annotations

import functools
import os
import socket
from datetime import timedelta
from typing import NamedTuple

from backend.models import to_iso
from backend.processes import alive
from backend.store.core import LogCore, StoreError, guard
from backend.store.deploys import _TIME
from backend.text import cell_text

SCHEMA = """
CREATE TABLE leases (
    name TEXT PRIMARY KEY,           -- what the lease is for: 'health:production', 'outbox'
    holder TEXT NOT NULL,            -- holder_id() of whoever holds it
    host TEXT NOT NULL DEFAULT '',   -- the holder's host and pid: a dead local holder is
    pid INTEGER,                     -- taken over at once, without waiting for expires_at
    acquired_at TEXT NOT NULL,
    renewed_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
"""


class Lease(NamedTuple):
    """A lease as read back (cleaned: another program may have written the row)."""

    name: str
    holder: str
    host: str
    pid: int | None
    renewed_at: str
    expires_at: str


@functools.cache
def hostname() -> str:
    return socket.gethostname()


def holder_id() -> str:
    """A new holder id, ``host:pid:random``: one per process and per object that takes leases.

    The random part tells apart two holders in one process (and a pid reused later).
    """
    import secrets  # here, not at the top: it brings hashlib and hmac (3-4 ms) to the first frame

    return f"{hostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class LeasesMixin(LogCore):
    """The leases table (mixed into :class:`backend.store.DeployLog`)."""

    @guard
    def take_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Take or renew lease ``name`` for ``ttl_seconds``; False when someone else holds it."""
        if not ttl_seconds > 0:
            raise StoreError(f"a lease's time to live must be positive, not {ttl_seconds!r}")
        moment = self._clock()
        now = to_iso(moment)
        expires = to_iso(moment + timedelta(seconds=ttl_seconds))
        host, pid = hostname(), os.getpid()
        with self.immediate() as conn:
            row = conn.execute("SELECT holder, host, pid, expires_at FROM leases WHERE name = ?", (name,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO leases (name, holder, host, pid, acquired_at, renewed_at, expires_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)", (name, holder, host, pid, now, now, expires))
                return True
            held_by, held_host, held_pid, held_until = row
            if held_by == holder:  # ours: renew
                conn.execute("UPDATE leases SET host = ?, pid = ?, renewed_at = ?, expires_at = ? WHERE name = ?",
                             (host, pid, now, expires, name))
                return True
            if not _expired(held_until, now) and not _dead_here(held_host, held_pid, host):
                return False
            conn.execute(
                "UPDATE leases SET holder = ?, host = ?, pid = ?, acquired_at = ?, renewed_at = ?, expires_at = ?"
                " WHERE name = ?", (holder, host, pid, now, now, expires, name))
            return True

    @guard
    def release_lease(self, name: str, holder: str) -> bool:
        """Free lease ``name`` now if ``holder`` holds it (True); someone else's is left alone."""
        with self.immediate() as conn:
            return conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder)).rowcount > 0

    @guard
    def lease(self, name: str) -> Lease | None:
        """Who holds lease ``name`` (possibly expired: compare ``expires_at`` with now), or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT name, holder, host, pid, renewed_at, expires_at FROM leases WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            return None
        name_, holder, host, pid, renewed, expires = row
        return Lease(cell_text(name_), cell_text(holder), cell_text(host), pid if type(pid) is int else None,
                     cell_text(renewed), cell_text(expires))


def _expired(expires_at: object, now: str) -> bool:
    """A lease whose expiry is not a time andon writes is expired: it can never be renewed past."""
    return not (isinstance(expires_at, str) and _TIME.match(expires_at)) or expires_at <= now


def _dead_here(host: object, pid: object, here: str) -> bool:
    """The holder ran on this host and its process no longer exists."""
    return host == here and type(pid) is int and 0 < pid < 2**31 and not alive(pid)


