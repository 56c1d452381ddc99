"""The rules a migration is judged by: its phase, severity, stall, rate, next step and legal steps.

Pure functions of what git and the deploys say (:class:`Facts`), what was reported
(:class:`~backend.store.migrations.MigrationState`), the kind's rules
(:class:`~backend.config.MigrationRules`) and the time: no git, no SQLite, no clock of
their own. :mod:`backend.migrations` gathers the inputs and builds the statuses; the
README's table "Migration phases" is this module in words.

**Phase** of a (migration, environment), first match wins:

1. a waive or an abort was recorded -> ``waived`` / ``aborted`` (terminal);
2. a contract commit is live -> ``done`` (flag ``contract_before_finish`` when the kind
   moves data, or progress was ever reported, and no finish was recorded);
3. the expand is not live -> ``expand_pending`` since the deploy that took it out finished
   when it was live before, else since it was marked (flag ``expand_rolled_back`` when
   progress had been reported: a rollback took the expand out);
4. a finish was recorded -> ``cleanup_due`` since the finish;
5. progress was reported -> ``migrating`` since the first report;
6. the kind moves no data and the expand has been live ``soak_hours`` -> ``cleanup_due``
   since the end of the soak;
7. otherwise ``expanded`` since the expand went live.

**Severity** (``cleanup_due`` only; ``ok`` otherwise): the window is the kind's
``cleanup_due_days``; ``due`` = since + window; ``critical`` from since + 2 windows,
``overdue`` from ``due``, ``due_soon`` in the window's last quarter. Snoozes move the
reminder, never the due date.

**Legal steps** per phase (:func:`allowed`): ``note`` always; ``progress`` and ``finish``
while the expand is live and the migration is not finished (``expanded``, ``migrating``,
a soaked ``cleanup_due``; also ``done`` flagged ``contract_before_finish``, so the job
still moving data can report it and clear the flag); ``snooze`` in ``expanded``,
``migrating`` and ``cleanup_due``; ``waive`` and ``abort`` before ``done``. A step that
already took effect (the same finish, note, snooze, waive or abort again, or after the finish
the last progress report again, as a job retrying it sends it) is harmless: "already ...",
nothing written. A progress report with other values after the finish is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from backend import AndonError
from backend.config import MigrationRules
from backend.models import to_iso, when
from backend.store.migrations import ABORTED, WAIVED, MigrationState, Step, parse_time

EXPAND_PENDING = "expand_pending"
EXPANDED = "expanded"
MIGRATING = "migrating"
CLEANUP_DUE = "cleanup_due"
DONE = "done"
PHASES = (EXPAND_PENDING, EXPANDED, MIGRATING, CLEANUP_DUE, DONE, ABORTED, WAIVED)
TERMINAL = frozenset({DONE, ABORTED, WAIVED})

OK = "ok"
DUE_SOON = "due_soon"
OVERDUE = "overdue"
CRITICAL = "critical"
SEVERITIES = (OK, DUE_SOON, OVERDUE, CRITICAL)

CONTRACT_BEFORE_FINISH = "contract_before_finish"
EXPAND_ROLLED_BACK = "expand_rolled_back"
FLAGS = (CONTRACT_BEFORE_FINISH, EXPAND_ROLLED_BACK)

ACTIONS = ("progress", "finish", "note", "snooze", "waive", "abort", "add")
MAX_COUNT = 2**63 - 1  # the largest done or total the log holds (SQLite's INTEGER)
RATE_SAMPLES = 12  # the newest progress reports the rate is worked out from


class StepRefused(AndonError):
    """An illegal migration step (``andon migration ...`` exit 10): one line naming the allowed ones."""


class Facts(NamedTuple):
    """What git and the deploy log say about one migration in one environment."""

    expand_live: datetime | None  # when the expand went live (the current run of deploys holding it); None: not live
    contract_live: datetime | None  # likewise the contract
    marked_at: datetime | None  # the expand commit's committer date, or the add time
    expand_left: datetime | None = None  # when a deploy took the (once live) expand back out; None: it never left


class Judgement(NamedTuple):
    phase: str
    since: datetime | None
    flags: tuple[str, ...] = ()


def judge(facts: Facts, state: MigrationState | None, rules: MigrationRules, now: datetime) -> Judgement:
    """The phase of a (migration, environment): the module's rules 1-7."""
    state = state or MigrationState("", "")
    reported = state.started_at is not None
    if state.ended is not None:
        return Judgement(state.ended, parse_time(state.ended_at))
    if facts.contract_live is not None:
        moving = rules.moves_data or reported
        flags = (CONTRACT_BEFORE_FINISH,) if moving and state.finished_at is None else ()
        return Judgement(DONE, facts.contract_live, flags)
    if facts.expand_live is None:
        since = facts.expand_left or facts.marked_at
        return Judgement(EXPAND_PENDING, since, (EXPAND_ROLLED_BACK,) if reported else ())
    if state.finished_at is not None:
        return Judgement(CLEANUP_DUE, parse_time(state.finished_at))
    if reported:
        return Judgement(MIGRATING, parse_time(state.started_at))
    soaked = facts.expand_live + timedelta(hours=rules.soak_hours)
    if not rules.moves_data and now >= soaked:
        return Judgement(CLEANUP_DUE, soaked)
    return Judgement(EXPANDED, facts.expand_live)


def severity(phase: str, since: datetime | None, rules: MigrationRules, now: datetime) -> tuple[datetime | None, str]:
    """(due, severity): only ``cleanup_due`` has a due date."""
    if phase != CLEANUP_DUE or since is None:
        return None, OK
    window = timedelta(days=rules.cleanup_due_days)
    due = since + window
    if now >= since + 2 * window:
        return due, CRITICAL
    if now >= due:
        return due, OVERDUE
    if now >= since + window * 0.75:
        return due, DUE_SOON
    return due, OK


def stalled(phase: str, state: MigrationState | None, rules: MigrationRules, now: datetime) -> bool:
    """A running migration whose last report is older than ``stall_minutes``."""
    if phase != MIGRATING or state is None:
        return False
    heartbeat = parse_time(state.heartbeat_at or state.started_at)
    return heartbeat is not None and now - heartbeat >= timedelta(minutes=rules.stall_minutes)


def rate(samples: Sequence[tuple[str, int]]) -> float | None:
    """Units done per hour over the newest reports (since the count last went down); None: not enough."""
    recent: list[tuple[datetime, int]] = []
    for at, done in samples[-RATE_SAMPLES:]:
        moment = parse_time(at)
        if moment is None:
            continue
        if recent and done < recent[-1][1]:
            recent = []  # the job started over: only what came after counts
        recent.append((moment, done))
    if len(recent) < 2:
        return None
    hours = (recent[-1][0] - recent[0][0]).total_seconds() / 3600
    if hours <= 0:
        return None
    return (recent[-1][1] - recent[0][1]) / hours


def eta(done: int, total: int | None, per_hour: float | None, at: datetime) -> datetime | None:
    """When the migration should be finished at this rate (None: no total, no rate, or done)."""
    if total is None or per_hour is None or per_hour <= 0 or done >= total:
        return None
    return at + timedelta(hours=(total - done) / per_hour)


def allowed(phase: str, flags: Sequence[str], state: MigrationState | None) -> tuple[str, ...]:
    """The steps a person or job may take now (the module's "legal steps")."""
    finished = state is not None and state.finished_at is not None
    if phase in (EXPANDED, MIGRATING) or (phase == CLEANUP_DUE and not finished):
        return ("progress", "finish", "note", "snooze", "waive", "abort")
    if phase == CLEANUP_DUE:
        return ("note", "snooze", "waive", "abort")
    if phase == EXPAND_PENDING:
        return ("note", "waive", "abort")
    if phase == DONE and CONTRACT_BEFORE_FINISH in flags:
        return ("progress", "finish", "note")
    return ("note",)


def _why(phase: str, flags: Sequence[str], state: MigrationState | None) -> str:
    if phase == EXPAND_PENDING:
        return "its expand is not live there" + (" any more (rolled back)" if EXPAND_ROLLED_BACK in flags else "")
    if phase == CLEANUP_DUE and state is not None and state.finished_at is not None:
        return f"it was finished at {when(state.finished_at)} UTC"
    if phase == DONE:
        return "its contract is live there"
    if phase in (WAIVED, ABORTED) and state is not None:
        return f"{phase} by {state.ended_by or 'someone'}" + (f": {state.reason}" if state.reason else "")
    return phase


def decide(action: str, name: str, env: str, judgement: Judgement, state: MigrationState | None, now: datetime, *,
           who: str, done: int | None = None, total: int | None = None, until: datetime | None = None,
           reason: str = "", text: str = "") -> Step:
    """What ``action`` does to (name, env) now, given its current row: a :class:`Step`, or
    :class:`StepRefused` naming the allowed steps. Values were checked by the caller; a total
    smaller than done (with the stored total) is an :class:`AndonError` here."""
    state = state or MigrationState(name, env)
    at = to_iso(now)
    where = f"{name} in {env}"
    # A step that already took effect is harmless, whatever the phase says now.
    if action == "finish" and state.finished_at is not None:
        return Step(f"already finished: {where} at {when(state.finished_at)} UTC")
    if (action == "progress" and state.finished_at is not None and done == state.done
            and (total is None or total == state.total)):
        # The job's last report again (a retry after the finish): it took effect before the finish.
        shown = f"{done}" + (f" of {state.total}" if state.total is not None else "")
        return Step(f"already finished: {where} at {when(state.finished_at)} UTC ({shown} recorded); nothing changed")
    if action == "note" and state.note and state.note == text:
        return Step(f"already noted on {where}")
    if action == "snooze" and until is not None and state.snoozed_until == to_iso(until):
        return Step(f"already snoozed: {where} until {when(state.snoozed_until)} UTC")
    if action in ("waive", "abort") and state.ended == _ENDED[action]:
        return Step(f"already {state.ended}: {where}" + (f" ({state.reason})" if state.reason else ""))
    phase, flags = judgement.phase, judgement.flags
    permitted = allowed(phase, flags, state)
    if action not in permitted:
        raise StepRefused(f"cannot {action} {where}: {_why(phase, flags, state)}; allowed now: {', '.join(permitted)}")
    if action == "progress":
        assert done is not None
        new_total = total if total is not None else state.total
        if new_total is not None and done > new_total:
            raise AndonError(f"--done {done} is more than the total {new_total} of {where}"
                             + ("" if total is not None else " (give --total)"))
        shown = f"{done}" + (f" of {new_total}" if new_total is not None else "")
        if state.done == done and state.total == new_total:
            return Step(f"already at {shown} in {env}: heartbeat recorded for {name}", {"heartbeat_at": at})
        changes: dict[str, Any] = {"heartbeat_at": at, "done": done, "total": new_total}
        if state.started_at is None:
            changes["started_at"] = at
        return Step(f"recorded: {where} {shown} done", changes, "migration.progressed",
                    {"done": done, "total": new_total}, sample=done)
    if action == "finish":
        return Step(f"recorded: {where} finished; the cleanup is due (ship the contract)",
                    {"finished_at": at, "finished_by": who}, "migration.finished", {})
    if action == "note":
        return Step(f"noted on {where}", {"note": text, "note_at": at, "note_by": who}, "migration.noted",
                    {"text": text})
    if action == "snooze":
        assert until is not None
        count = state.snoozes + 1
        return Step(f"snoozed: {where} until {when(to_iso(until))} UTC (snoozed {count} time{'s' * (count != 1)}; "
                    "the due date stays)",
                    {"snoozed_until": to_iso(until), "snoozes": count, "snooze_reason": reason},
                    "migration.snoozed", {"until": to_iso(until), "reason": reason, "snoozes": count})
    ended = _ENDED[action]
    return Step(f"{ended}: {where} ({reason})", {"ended": ended, "ended_at": at, "ended_by": who, "reason": reason},
                f"migration.{ended}", {"reason": reason, "phase": phase})


_ENDED = {"waive": WAIVED, "abort": ABORTED}


def next_step(name: str, env: str, judgement: Judgement, *, stalled: bool, rules: MigrationRules,
              expand: str | None, evidence_count: int | None, state: MigrationState | None) -> str:
    """One line: what a person does next about (name, env)."""
    phase, since, flags = judgement
    if phase == EXPAND_PENDING:
        if EXPAND_ROLLED_BACK in flags:
            return f"the expand was rolled back out of {env} while data moved: deploy it again before the migration goes on"
        what = f"the expand ({expand[:7]})" if expand else "the expand"
        return f"deploy {what} to {env}"
    if phase == EXPANDED:
        if rules.moves_data:
            return f"run the migration: andon migration progress {name} --env {env} --done N [--total M]"
        soaked = since + timedelta(hours=rules.soak_hours) if since else None
        return (f"let it soak until {when(to_iso(soaked))} UTC" if soaked else "let it soak") + \
            f" (or andon migration finish {name} --env {env})"
    if phase == MIGRATING:
        if stalled:
            last = state.heartbeat_at if state else None
            return f"the migration job has not reported since {when(last)} UTC: check it"
        return f"let it run; andon migration finish {name} --env {env} when it is done"
    if phase == CLEANUP_DUE:
        if evidence_count:
            return (f"remove the old code ({evidence_count} place{'s' * (evidence_count != 1)}), then ship a commit "
                    f"with 'Migration: {name} contract'")
        return f"ship the contract: a commit with 'Migration: {name} contract'"
    if phase == DONE and CONTRACT_BEFORE_FINISH in flags:
        return (f"the contract went live before the migration finished: check the data, then "
                f"andon migration finish {name} --env {env}")
    return "nothing: " + phase
