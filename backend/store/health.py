"""Health samples: what the prober saw, shared by every dashboard on the log.

One process per environment probes (whoever holds its lease, :mod:`~backend.store.leases`)
and records each round here with :meth:`HealthMixin.record_health`: the round's samples,
and the environment's state worked out from them. Every dashboard reads the same samples.

**One event per change of state.** ``health_state`` keeps each environment's current
state; a round compares against it and writes it in the same ``BEGIN IMMEDIATE``
transaction, so ten andons recording the same change at once write one
``health.changed`` event (the second one already sees the new state). Samples alone
write no event: a dashboard's change detection (:meth:`~backend.store.core.LogCore.changes`)
then has nothing to reload, and re-reads samples whenever ``data_version`` moves.

**Retention.** Samples are not append-only, unlike deploys and events. A sample is kept
while it is both less than a day old (by the recording andon's clock) *and* among the
newest 2,000 of its check (environment and check name); the rest is deleted in the
transaction of a later round. The age rule runs every round for the round's checks, and
for the whole table's oldest rows (checks no longer probed go a day after their last
sample). The count rule walks 2,000 index entries per check (~0.26 ms here): it runs for a
check on the first round an andon records it and then every 32nd sample of it, so a
check holds 2,000 samples right after, and never more than 2,031 (2 h 46 min at a 5 s
interval); the 500-check benchmark pays it once per check every 32 rounds, not every round.

Rows are read as untrusted: another program may have written anything into the file.
A sample that is not what andon writes (a time that is not one, a state andon does not
know, a number that is text) is skipped; text is cleaned.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from backend.config import ENV_NAME
from backend.models import CHECK_STATES, ENV_STATES, HealthSample, to_iso
from backend.store.core import LogCore, StoreError, guard
from backend.store.deploys import _TIME, _TIME_GLOB
from backend.text import clean_line, has_controls

SCHEMA = """
CREATE TABLE health_samples (
    id INTEGER PRIMARY KEY,
    env TEXT NOT NULL,
    check_name TEXT NOT NULL,
    at TEXT NOT NULL,                -- when the probe started (to_iso)
    state TEXT NOT NULL,             -- up, degraded, down
    status_code INTEGER,             -- NULL: no response
    latency_ms REAL,                 -- NULL: it never answered
    version TEXT,                    -- the version the service reported, if any
    error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX health_samples_check_at ON health_samples(env, check_name, at);
CREATE TABLE health_state (
    env TEXT PRIMARY KEY,
    state TEXT NOT NULL,             -- healthy, degraded, down, unknown
    since TEXT NOT NULL
);
"""

RETENTION = timedelta(days=1)
KEEP_PER_CHECK = 2000
COUNT_EVERY = 32  # samples of a check recorded between two walks of the count rule
TEXT_LIMIT = 1000  # characters of a version or error read back (andon writes short lines)

# The newest ``per_check`` samples of each check of an environment, in one statement (one
# snapshot). The check names come from a skip-scan of the index, a seek per check, and each
# check's newest rows from another seek: never a walk over every kept sample.
_NEWEST = f"""
WITH RECURSIVE checks(name) AS (
    SELECT (SELECT min(check_name) FROM health_samples WHERE env = :env)
    UNION ALL
    SELECT (SELECT min(check_name) FROM health_samples WHERE env = :env AND check_name > checks.name)
    FROM checks WHERE checks.name IS NOT NULL
)
SELECT s.id, s.check_name, s.at, s.state, s.status_code, s.latency_ms,
       substr(s.version, 1, {TEXT_LIMIT}), substr(s.error, 1, {TEXT_LIMIT})
FROM checks c JOIN health_samples s ON s.id IN (
    SELECT id FROM health_samples WHERE env = :env AND check_name = c.name AND at GLOB '{_TIME_GLOB}'
    ORDER BY at DESC, id DESC LIMIT :n
)
WHERE c.name IS NOT NULL
  AND typeof(s.check_name) = 'text' AND s.check_name != '' AND typeof(s.at) = 'text'
  AND s.state IN ({", ".join(f"'{state}'" for state in CHECK_STATES)})
  AND (s.status_code IS NULL OR (typeof(s.status_code) = 'integer' AND s.status_code BETWEEN 0 AND 999))
  AND (s.latency_ms IS NULL OR (typeof(s.latency_ms) IN ('real', 'integer') AND s.latency_ms BETWEEN 0 AND 1e15))
  AND (s.version IS NULL OR typeof(s.version) = 'text') AND typeof(s.error) = 'text'
"""

class HealthMixin(LogCore):
    """The health_samples and health_state tables (mixed into :class:`backend.store.DeployLog`)."""

    # -- writing -----------------------------------------------------------------

    @guard
    def record_health(self, samples: Sequence[HealthSample], env_state: str, *, who: str = "",
                      env: str | None = None) -> bool:
        """Record one round of an environment's probes and its state; True when the state changed.

        The samples must all be of one environment (``env`` names it when there are none).
        A change of state writes one ``health.changed`` event (detail: ``state``, and
        ``previous``, null the first time). Then the samples beyond retention are deleted.
        """
        if env_state not in ENV_STATES:
            raise StoreError(f"an environment's health is one of {', '.join(ENV_STATES)}, not {env_state!r}")
        envs = {sample.env for sample in samples} | ({env} if env is not None else set())
        if len(envs) != 1:
            raise StoreError("health samples are recorded one environment at a time"
                             f" (got {', '.join(sorted(map(repr, envs))) or 'none'})")
        (name,) = envs
        rows = [_row(sample) for sample in samples]
        moment = self._clock()
        now, cutoff = to_iso(moment), to_iso(moment - RETENTION)
        with self.immediate() as conn:
            # One prepared INSERT, not sqlite-utils' insert_all: its per-row Python cost was
            # 22 ms a round of 500 checks (of 49 ms), and its import 70-100 ms in the prober.
            conn.executemany(
                "INSERT INTO health_samples (env, check_name, at, state, status_code, latency_ms, version, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            found = conn.execute("SELECT state FROM health_state WHERE env = ?", (name,)).fetchone()
            previous = found[0] if found else None
            changed = previous != env_state
            if changed:
                conn.execute(
                    "INSERT INTO health_state (env, state, since) VALUES (?, ?, ?)"
                    " ON CONFLICT (env) DO UPDATE SET state = excluded.state, since = excluded.since",
                    (name, env_state, now),
                )
                self.event(conn, "health.changed", name, None, who, now, state=env_state,
                           previous=previous if previous in ENV_STATES else None)
            self._trim(conn, name, [row[1] for row in rows], cutoff)
        return changed

    _since_count: dict[tuple[str, str], int] | None = None  # samples per check since its count rule ran

    def _trim(self, conn: sqlite3.Connection, env: str, checks: Sequence[str], cutoff: str) -> None:
        """Delete samples beyond retention (the rule is in the module's docstring)."""
        if self._since_count is None:
            self._since_count = {}
        for check in dict.fromkeys(checks):
            # Seeks on (env, check_name, at): only the rows deleted are visited.
            conn.execute("DELETE FROM health_samples WHERE env = ? AND check_name = ? AND at < ?",
                         (env, check, cutoff))
            key = (env, check)
            seen = self._since_count.get(key)
            if seen is not None and seen + 1 < COUNT_EVERY:
                self._since_count[key] = seen + 1
                continue
            self._since_count[key] = 0
            edge = conn.execute(
                "SELECT at, id FROM health_samples WHERE env = ? AND check_name = ?"
                " ORDER BY at DESC, id DESC LIMIT 1 OFFSET ?", (env, check, KEEP_PER_CHECK - 1)
            ).fetchone()
            if edge is not None:
                conn.execute("DELETE FROM health_samples WHERE env = ? AND check_name = ? AND (at, id) < (?, ?)",
                             (env, check, *edge))
        # Checks no longer probed (renamed, removed, an environment no longer watched): their
        # rows are the oldest ids. Walk ids from the lowest to the first row within the day
        # (at steady state, the first row) and delete the old ones before it.
        first_recent = conn.execute("SELECT id FROM health_samples WHERE at >= ? ORDER BY id LIMIT 1",
                                    (cutoff,)).fetchone()
        if first_recent is None:
            conn.execute("DELETE FROM health_samples WHERE at < ?", (cutoff,))
        else:
            conn.execute("DELETE FROM health_samples WHERE id < ? AND at < ?", (first_recent[0], cutoff))

    # -- reading -----------------------------------------------------------------

    @guard
    def health_samples(self, env: str, *, per_check: int = 60) -> dict[str, list[HealthSample]]:
        """The newest ``per_check`` samples of each of ``env``'s checks, newest last.

        Damaged rows are skipped; text is cleaned.
        """
        if per_check <= 0:
            return {}
        with self._lock:
            rows = self._conn.execute(_NEWEST, {"env": env, "n": per_check}).fetchall()
        # Rows that are not what andon writes were left out by the query (_NEWEST).
        name = clean_line(env)
        found: dict[str, list[tuple[str, int, HealthSample]]] = {}
        for id_, check, at, state, code, latency, version, error in rows:
            # Another writer may have put anything in the file: one scan finds the rare row to clean.
            if has_controls(f"{check}{version}{error}"):
                check, error = clean_line(check), clean_line(error)
                version = None if version is None else clean_line(version)
                if not check:
                    continue
            sample = HealthSample(name, check, at, state, code, None if latency is None else float(latency),
                                  version, error)
            found.setdefault(check, []).append((at, id_, sample))
        # Two stored names may clean to the same one: merged, in time order.
        return {check: [sample for _, _, sample in sorted(kept)[-per_check:]]
                for check, kept in sorted(found.items())}

    @guard
    def health_state(self, env: str) -> tuple[str, str] | None:
        """``env``'s current state and since when, or None (never recorded, or damaged)."""
        with self._lock:
            row = self._conn.execute("SELECT state, since FROM health_state WHERE env = ?", (env,)).fetchone()
        return _state(row) if row else None

    @guard
    def health_states(self) -> dict[str, tuple[str, str]]:
        """Every environment's current state and since when (damaged rows skipped)."""
        with self._lock:
            rows = self._conn.execute("SELECT env, state, since FROM health_state ORDER BY env").fetchall()
        states = {}
        for env, *rest in rows:
            state = _state(rest)
            # Another writer may have put anything in the file: only names andon accepts.
            if state is not None and isinstance(env, str) and ENV_NAME.match(env):
                states[env] = state
        return states


def _row(sample: HealthSample) -> tuple[Any, ...]:
    """A sample as stored; one that andon could not have produced is refused in one line."""
    problem = _problem(sample.env, sample.check, sample.at, sample.state, sample.status_code,
                       sample.latency_ms, sample.version, sample.error)
    if problem:
        raise StoreError(f"health sample of {clean_line(str(sample.check))[:40]!r}: {problem}")
    return (sample.env, clean_line(sample.check), sample.at, sample.state, sample.status_code,
            None if sample.latency_ms is None else float(sample.latency_ms),
            None if sample.version is None else clean_line(sample.version), clean_line(sample.error))


def _problem(env: object, check: object, at: object, state: object, code: object, latency: object,
             version: object, error: object) -> str:
    """Why a sample is not what andon writes, in a few words; "" when it is sound."""
    if type(env) is not str or not env:
        return "no environment"
    if type(check) is not str or not check:
        return "no check name"
    if type(at) is not str or not _TIME.match(at):
        return f"time {clean_line(str(at))[:40]!r} is not one andon writes"
    if state not in CHECK_STATES:
        return f"state {clean_line(str(state))[:40]!r} is not one of {', '.join(CHECK_STATES)}"
    if code is not None and (type(code) is not int or not 0 <= code < 1000):
        return "status code is not an HTTP status"
    if latency is not None and not (isinstance(latency, int | float) and not isinstance(latency, bool)
                                    and math.isfinite(latency) and latency >= 0):
        return "latency is not a duration"
    if version is not None and type(version) is not str:
        return "version is not text"
    if type(error) is not str:
        return "error is not text"
    return ""


def _state(row: Sequence[Any]) -> tuple[str, str] | None:
    state, since = row
    if state not in ENV_STATES or type(since) is not str or not _TIME.match(since):
        return None
    return state, since


