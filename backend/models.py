"""The nouns of andon: deploys, commits and events, as plain immutable records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
INTERRUPTED = "interrupted"
UNHEALTHY = "unhealthy"
STATUSES = (RUNNING, SUCCEEDED, FAILED, INTERRUPTED, UNHEALTHY)
FINAL_STATUSES = (SUCCEEDED, FAILED, INTERRUPTED, UNHEALTHY)


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_iso(moment: datetime) -> str:
    """The one textual form of a time in the log: UTC, microseconds, sortable as text."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_iso(text: str) -> datetime:
    """Parse an ISO-8601 time; a time without a zone is taken as UTC."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def when(stamp: str | None) -> str:
    """A log time as ``2026-11-18 11:54`` (UTC, as everywhere in andon)."""
    return stamp[:16].replace("T", " ") if stamp else "-"


# Records are NamedTuples: as immutable and as small as frozen slotted dataclasses,
# built in half the time (0.4 µs against 0.9 µs a commit; a cold `andon log --json`
# builds 100,000), and cheaper to define: a dataclass compiles its generated methods
# with exec() at import. With the other records and messages made the same way, that
# was ~35M instructions (3%) of the dashboard's first frame (callgrind, main thread).


class Commit(NamedTuple):
    sha: str
    author: str
    date: str  # ISO-8601 author date
    subject: str

    def to_json(self) -> dict[str, Any]:
        # Spelled out: dataclasses.asdict deep-copies every field and was the largest
        # single cost of `andon log --json` over 50,000 commits.
        return {"sha": self.sha, "author": self.author, "date": self.date, "subject": self.subject}


class Deploy(NamedTuple):
    id: int
    env: str
    sha: str
    prev_sha: str | None
    status: str
    who: str
    trigger: str
    reason: str
    started_at: str
    finished_at: str | None
    exit_code: int | None
    output: str = ""
    reverts: int | None = None
    # Why the stored row is not what andon writes (another program wrote it): one line,
    # "" for a sound row. The fields then hold cleaned stand-ins; times may not parse.
    damaged: str = ""

    @property
    def short_sha(self) -> str:
        return self.sha[:7]

    def to_json(self, *, output: bool = True) -> dict[str, Any]:
        entry = {
            "id": self.id, "env": self.env, "sha": self.sha, "prev_sha": self.prev_sha,
            "status": self.status, "who": self.who, "trigger": self.trigger, "reason": self.reason,
            "started_at": self.started_at, "finished_at": self.finished_at,
            "exit_code": self.exit_code, "reverts": self.reverts, "damaged": self.damaged or None,
        }
        if output:
            entry["output"] = self.output
        return entry


class Event(NamedTuple):
    id: int
    at: str
    kind: str
    env: str | None
    deploy_id: int | None
    who: str
    detail: str


# -- health ---------------------------------------------------------------------------
# A check's state after one probe, and an environment's state from its checks' latest samples.
UP = "up"
DEGRADED = "degraded"
DOWN = "down"
CHECK_STATES = (UP, DEGRADED, DOWN)
HEALTHY = "healthy"
UNKNOWN = "unknown"
ENV_STATES = (HEALTHY, DEGRADED, DOWN, UNKNOWN)  # "degraded" and "down" are shared with checks


class HealthSample(NamedTuple):
    """One probe of one health check: what andon saw, cleaned (the text came from a server)."""

    env: str
    check: str
    at: str  # to_iso() time the probe started
    state: str  # UP, DEGRADED or DOWN
    status_code: int | None  # None when no response came
    latency_ms: float | None  # the whole probe, body included; None when it never answered
    version: str | None  # the running version it reported, if it reported one
    error: str = ""  # one short line when DOWN (or why the version could not be read)

    def to_json(self) -> dict[str, Any]:
        return dict(self._asdict())
