"""The migration-cleanup backlog: every migration's phase in every environment, and its steps.

A migration is marked in git (``Migration: NAME expand`` / ``contract`` trailers, read by
:mod:`backend.markers`) or recorded with ``andon migration add``; what people and jobs
report (progress, finish, notes, snoozes, waivers, aborts) is kept in the deploy log
(:mod:`backend.store.migrations`). :func:`evaluate` puts both together with the deploys
into a :class:`Backlog`, by the rules of :mod:`backend.migration_rules` (also the README's
"Migration phases" table).

What git says (the markers, when each expand and contract went live, the code search) is
worked out and cached by :mod:`backend.migration_facts`; warm, no history walk runs.

**Evidence** is searched for the migrations that are not done or ended; "looks cleaned up —
ship the contract?" is said only in ``cleanup_due`` (before, "no old-shape code found yet"). A migration added with ``andon migration add`` counts as expand-live from its add time in
the environments it named (all configured ones when none was named); it has no expand
commit, so :func:`rollback_holds` cannot hold a rollback for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from backend import AndonError, migration_facts
from backend.config import MIGRATION_KINDS, MigrationRules
from backend.history import CONTAINS_CHUNK, FULL_SHA, GitError
from backend.markers import MIGRATION_NAME, MarkerProblem, scan
from backend.migration_facts import Evidence, Known, Marked
from backend.migration_rules import (
    ACTIONS,
    CLEANUP_DUE,
    CRITICAL,
    DONE,
    DUE_SOON,
    MAX_COUNT,
    MIGRATING,
    OVERDUE,
    PHASES,
    SEVERITIES,
    TERMINAL,
    Facts,
    Judgement,
    StepRefused,
    allowed,
    decide,
    eta,
    judge,
    next_step,
    rate,
    severity,
    stalled,
)
from backend.models import to_iso, when
from backend.store.migrations import AddedMigration, MigrationState, Reminder, Step, parse_time
from backend.text import clean_line, short
from backend.world import World

__all__ = ["ACTIONS", "PHASES", "SEVERITIES", "Backlog", "Evidence", "Hold", "Progress", "Status", "StepRefused",
           "UnknownMigration", "allowed", "apply", "evaluate", "remind", "rollback_holds"]

ASK_GIT_UP_TO = CONTAINS_CHUNK  # expand commits rollback_holds asks History.contains about; beyond, one scan
TEXT_LIMIT = 500  # characters of a reason or note kept


class UnknownMigration(AndonError):
    """No migration of that name in git or added (exit 1)."""


class Progress(NamedTuple):
    done: int
    total: int | None
    rate: float | None  # per hour, over the recent reports
    eta: datetime | None
    at: datetime | None  # the last report (heartbeat)


class Hold(NamedTuple):
    """A migration that holds a rollback of an environment back."""

    name: str
    phase: str
    expand: str
    message: str


def _iso(moment: datetime | None) -> str | None:
    return to_iso(moment) if moment is not None else None


@dataclass(frozen=True)
class Status:
    """One migration in one environment."""

    name: str
    kind: str
    env: str
    phase: str
    since: datetime | None
    due: datetime | None
    severity: str
    progress: Progress | None
    stalled: bool
    snoozes: int
    snoozed_until: datetime | None
    evidence: Evidence | None
    flags: tuple[str, ...]
    reason: str | None
    note: str | None
    expand: str | None
    contract: str | None
    next_step: str

    def to_json(self) -> dict[str, Any]:
        """The ``andon migrations --json`` item."""
        progress = None if self.progress is None else {
            "done": self.progress.done, "total": self.progress.total, "rate": self.progress.rate,
            "eta": _iso(self.progress.eta)}
        evidence = None if self.evidence is None else {
            "count": self.evidence.count, "text": self.evidence.text,
            "places": [{"path": p.path, "line": p.line, "text": p.text} for p in self.evidence.places]}
        return {"name": self.name, "kind": self.kind, "env": self.env, "phase": self.phase,
                "since": _iso(self.since), "due": _iso(self.due), "severity": self.severity, "progress": progress,
                "stalled": self.stalled, "snoozes": self.snoozes, "snoozed_until": _iso(self.snoozed_until),
                "evidence": evidence, "flags": list(self.flags), "reason": self.reason, "note": self.note,
                "expand": self.expand, "contract": self.contract, "next": self.next_step}


_URGENCY = {CRITICAL: 0, OVERDUE: 1, DUE_SOON: 2}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _urgency(status: Status) -> tuple[Any, ...]:
    """Most urgent first: critical, overdue, due soon, stalled, flagged; then open before ended;
    then the earliest due (or since)."""
    return (_URGENCY.get(status.severity, 3), not status.stalled, not status.flags, status.phase in TERMINAL,
            status.due or status.since or _EPOCH, status.name, status.env)


@dataclass(frozen=True)
class Backlog:
    statuses: tuple[Status, ...]  # most urgent first
    problems: tuple[MarkerProblem, ...]
    error: str | None

    def overdue(self, env: str | None = None) -> int:
        """Cleanups overdue or critical (in ``env``, or anywhere)."""
        return sum(1 for s in self.statuses if s.severity in (OVERDUE, CRITICAL) and (env is None or s.env == env))

    def find(self, name: str, env: str) -> Status | None:
        return next((s for s in self.statuses if s.name == name and s.env == env), None)


# -- the evaluation ------------------------------------------------------------------------


class _Migration(NamedTuple):
    name: str
    kind: str
    refs: tuple[str, ...]
    marked: Marked | None
    added: AddedMigration | None


def _universe(known: Known, added: Mapping[str, AddedMigration]) -> dict[str, _Migration]:
    names = sorted({*known.migrations, *added})
    result = {}
    for name in names:
        marked, extra = known.migrations.get(name), added.get(name)
        kind = (marked.kind if marked else None) or (extra.kind if extra and extra.kind in MIGRATION_KINDS else None)
        refs = tuple(dict.fromkeys([*(marked.refs if marked else ()), *(extra.refs if extra else ())]))
        result[name] = _Migration(name, kind or "database", refs, marked, extra)
    return result


def _facts(migration: _Migration, env: str, known: Known) -> Facts:
    expand_at, contract_at = known.live.get(env, {}).get(migration.name, (None, None))
    expand_live = parse_time(expand_at)
    marked_at = parse_time(migration.marked.marked_at) if migration.marked else None
    extra = migration.added
    if extra is not None:
        added_at = parse_time(extra.at)
        if env in extra.envs and added_at is not None:
            expand_live = min(expand_live, added_at) if expand_live else added_at
        if marked_at is None:
            marked_at = added_at
    left = parse_time(known.left.get(env, {}).get(migration.name)) if expand_live is None else None
    return Facts(expand_live, parse_time(contract_at), marked_at, left)


def _environments(world: World, env: str | None) -> list[str]:
    names = world.environments()
    if env is None:
        return names
    if env not in names:
        known = ", ".join(names[:8]) or "none yet"
        raise AndonError(f"unknown environment {clean_line(env)[:64]!r} (known: {known})")
    return [env]


def evaluate(world: World, *, env: str | None = None, now: datetime | None = None, evidence: bool = True) -> Backlog:
    """Every migration's :class:`Status` in every environment (or ``env``), most urgent first."""
    return _evaluate(world, env, now, evidence)[0]


def _evaluate(world: World, env: str | None, now: datetime | None, evidence: bool) -> tuple[Backlog, Known]:
    now = now or world.clock()
    envs = _environments(world, env)
    known = migration_facts.known(world)
    log = world.log
    added = log.added_migrations()
    states = log.migration_states()
    samples = log.migration_samples()
    settings = world.config.migrations
    universe = _universe(known, added)
    judged: list[tuple[_Migration, str, Judgement, MigrationRules, MigrationState | None]] = []
    for migration in universe.values():
        rules = settings.rules(migration.kind)
        for name_env in envs:
            state = states.get((migration.name, name_env))
            judgement = judge(_facts(migration, name_env, known), state, rules, now)
            judged.append((migration, name_env, judgement, rules, state))
    error = known.error
    found: dict[str, Evidence] = {}
    if evidence:
        wanted = {m.name: m.refs for m, _, j, _, _ in judged if m.refs and j.phase not in TERMINAL}
        found, problem = migration_facts.evidence(world, known.head, wanted)
        error = error or problem
    statuses = [_status(m, e, j, r, s, samples.get((m.name, e), []), found.get(m.name), now)
                for m, e, j, r, s in judged]
    statuses.sort(key=_urgency)
    return Backlog(tuple(statuses), known.problems, error), known


def _status(migration: _Migration, env: str, judgement: Judgement, rules: MigrationRules,
            state: MigrationState | None, samples: Sequence[tuple[str, int]], evidence: Evidence | None,
            now: datetime) -> Status:
    phase, since, flags = judgement
    due, level = severity(phase, since, rules, now)
    is_stalled = stalled(phase, state, rules, now)
    progress = None
    if state is not None and state.done is not None:
        at = parse_time(state.heartbeat_at)
        per_hour = rate(samples)
        last = parse_time(samples[-1][0]) if samples else at
        progress = Progress(state.done, state.total, per_hour, eta(state.done, state.total, per_hour, last or now), at)
    snoozed = parse_time(state.snoozed_until) if state else None
    marked = migration.marked
    expand = marked.expand[0] if marked and marked.expand else None
    shown = (migration_facts.for_phase(evidence, phase == CLEANUP_DUE)
             if evidence is not None and phase not in TERMINAL else None)
    return Status(
        name=migration.name, kind=migration.kind, env=env, phase=phase, since=since, due=due, severity=level,
        progress=progress, stalled=is_stalled, snoozes=state.snoozes if state else 0,
        snoozed_until=snoozed if snoozed is not None and snoozed > now else None, evidence=shown, flags=flags,
        reason=(state.reason or None) if state and state.ended else None, note=(state.note or None) if state else None,
        expand=expand, contract=marked.contract[0] if marked and marked.contract else None,
        next_step=next_step(migration.name, env, judgement, stalled=is_stalled, rules=rules, expand=expand,
                            evidence_count=shown.count if shown else None, state=state))


# -- steps -------------------------------------------------------------------------------------


def _one_line(value: str | None, what: str) -> str:
    text = clean_line(value or "").strip()[:TEXT_LIMIT]
    if not text:
        raise AndonError(f"{what} must not be empty")
    return text


def _check_name(name: str) -> None:
    if not MIGRATION_NAME.match(name):
        raise AndonError(f"bad migration name {clean_line(name)[:80]!r}: letters, digits, '.', '_' and '-', "
                         "starting with a letter or digit, at most 80 characters")


def apply(world: World, action: str, name: str, env: str | None, *, who: str, done: int | None = None,
          total: int | None = None, until: datetime | None = None, reason: str | None = None, text: str | None = None,
          kind: str | None = None, refs: Sequence[str] = ()) -> str:
    """One step (``progress finish note snooze waive abort add``) on a migration; the line to print.

    Values are checked first (:class:`AndonError`, one line); an unknown migration is
    :class:`UnknownMigration`; a step its phase does not allow is :class:`StepRefused`
    naming the allowed ones. A step that already took effect says "already ..." and
    writes nothing. The phase is judged again inside the step's ``BEGIN IMMEDIATE``
    against the row as it is then (git's part as evaluated just before).
    """
    if action not in ACTIONS:
        raise AndonError(f"unknown migration step {clean_line(action)[:40]!r} (one of {', '.join(ACTIONS)})")
    _check_name(name)
    now = world.clock()
    who = clean_line(who)
    if action == "add":
        return _add(world, name, env, who=who, kind=kind, refs=refs, now=now)
    if env is None:
        raise AndonError(f"migration {action} needs an environment (--env)")
    _environments(world, env)
    clean_reason, clean_text = "", ""
    if action == "progress":
        if done is None or done < 0:
            raise AndonError(f"--done must be a number of at least 0, not {done}")
        for option, count in (("--done", done), ("--total", total)):
            if count is not None and count > MAX_COUNT:
                raise AndonError(f"{option} must be at most {MAX_COUNT} (what the deploy log holds)")
        if total is not None and total < done:
            raise AndonError(f"--total {total} is less than --done {done}")
    elif action == "snooze":
        if until is None:
            raise AndonError("snooze needs --until DATE")
        until = until if until.tzinfo else until.replace(tzinfo=UTC)
        if until <= now:
            raise AndonError(f"--until {when(to_iso(until))} UTC is in the past (now {when(to_iso(now))} UTC)")
        clean_reason = _one_line(reason, "--reason")
    elif action in ("waive", "abort"):
        clean_reason = _one_line(reason, "--reason")
    elif action == "note":
        clean_text = _one_line(text, "the note")
    known = migration_facts.known(world)
    log = world.log
    migration = _universe(known, log.added_migrations()).get(name)
    if migration is None:
        raise UnknownMigration(f"no migration {name!r} in git (a 'Migration: {name} expand' trailer on the deploy "
                               f"branch or a deployed commit) or added (andon migration add {name} --kind KIND)")
    rules = world.config.migrations.rules(migration.kind)
    facts = _facts(migration, env, known)

    def step(state: MigrationState | None) -> Step:
        judgement = judge(facts, state, rules, now)
        return decide(action, name, env, judgement, state, now, who=who, done=done, total=total, until=until,
                      reason=clean_reason, text=clean_text)

    return log.migration_step(name, env, step, who=who, now=now)


def _add(world: World, name: str, env: str | None, *, who: str, kind: str | None, refs: Sequence[str],
         now: datetime) -> str:
    kind = kind or "database"
    if kind not in MIGRATION_KINDS:
        raise AndonError(f"unknown migration kind {clean_line(kind)[:40]!r} (one of {', '.join(MIGRATION_KINDS)})")
    patterns = []
    for ref in refs:
        pattern = clean_line(ref).strip()
        if not pattern or "\n" in ref:
            raise AndonError(f"--refs {clean_line(ref)[:40]!r} is not a pattern")
        patterns.append(pattern[:200])
    if env is not None:
        envs = _environments(world, env)
    else:
        envs = list(world.config.environments) or world.environments()
        if not envs:
            raise AndonError("no environment configured or deployed to yet: name one with --env")
    known = migration_facts.known(world)
    marked = known.migrations.get(name)
    if marked is not None:
        where = f" (expand {short(marked.expand[0])})" if marked.expand else ""
        return f"already tracked: {name} is marked in git{where}; nothing added"
    existing = world.log.add_migration(name, kind, patterns, envs, who=who, now=now)
    if existing is None:
        return f"added: {name} ({kind}), live from now in {', '.join(envs)}"
    if (existing.kind, existing.refs, existing.envs) == (kind, tuple(patterns), tuple(envs)):
        return f"already added: {name} ({kind}) at {when(existing.at)} UTC"
    raise StepRefused(f"{name} was already added at {when(existing.at)} UTC as {existing.kind} in "
                      f"{', '.join(existing.envs)}; a migration is added once (allowed now: progress, finish, note, "
                      "snooze, waive, abort)")


# -- rollbacks and reminders ---------------------------------------------------------------------


def rollback_holds(world: World, env: str, target_sha: str) -> list[Hold]:
    """The migrations ``migrating`` or later in ``env`` whose expand commit the rollback target lacks.

    Their old code cannot read the new shape. Answered from the cached masks when the
    target is a deployed SHA (the usual rollback: no git at all), else with one batch of
    :meth:`History.contains` when there are few expand commits to ask about, else with one
    scan of the target's history (:func:`backend.markers.scan`: one ``git log``, where
    ``contains`` would walk once per 32 expand commits). A target git cannot place holds
    too (it may lack the expand).
    """
    backlog, known = _evaluate(world, env, None, False)
    candidates = [s for s in backlog.statuses if s.phase in (MIGRATING, CLEANUP_DUE, DONE) and s.expand]
    if not candidates:
        return []
    target = target_sha.strip()
    if not FULL_SHA.match(target):
        try:
            target = world.history.resolve_many([target]).get(target) or target
        except GitError:
            pass
    kept = world.log.migration_cache("masks", known.key)
    contained: dict[str, bool | None] = {}
    try:
        if isinstance(kept, dict) and target in kept.get("masks", {}):
            mask = int(kept["masks"][target], 16)
            for status in candidates:
                contained[status.name] = bool(mask & int(kept["bits"].get(status.name, "0"), 16))
    except (TypeError, ValueError, AttributeError):
        contained = {}
    missing = [s for s in candidates if s.name not in contained]
    expands = {s.name: known.migrations[s.name].expand if s.name in known.migrations else () for s in missing}
    asked = {sha for shas in expands.values() for sha in shas}
    answers: dict[str, bool | None]
    if len(asked) <= ASK_GIT_UP_TO:
        by_pair = world.history.contains([(sha, target) for sha in asked])
        answers = {sha: by_pair.get((sha, target)) for sha in asked}
    else:
        found = scan(world.history, [target])
        holding = {marker.sha for marker in found.markers}
        unknown = found.error is not None or target in found.missing
        answers = {sha: None if unknown else sha in holding for sha in asked}
    for name, shas in expands.items():
        said = [answers.get(sha) for sha in shas]
        contained[name] = True if any(said) else None if None in said or not said else False
    holds = []
    for status in candidates:
        answer = contained.get(status.name)
        if answer:
            continue
        assert status.expand is not None
        why = (f"the rollback target {short(target)} predates its expand {short(status.expand)}" if answer is False
               else f"andon cannot tell whether the rollback target {short(target)} holds its expand "
                    f"{short(status.expand)} (not in this clone?)")
        holds.append(Hold(status.name, status.phase, status.expand,
                          f"{status.name} is {status.phase} in {env} and {why}: the old code cannot read the new "
                          f"shape (--despite-migration {status.name} to roll back anyway)"))
    return holds


def remind(world: World, backlog: Backlog) -> list[int]:
    """Write the ``migration.reminder`` digests of the overdue and critical cleanups due a reminder:
    one per environment (an event of that environment, so each receiver hears only of the
    environments it wants), each item with its next step.

    Each (migration, environment) at most once per 24 hours and not while snoozed, decided
    inside ``BEGIN IMMEDIATE`` (:meth:`~backend.store.migrations.MigrationsMixin.remind_migrations`):
    two andons at once never both send. Returns the events' ids (empty when nobody is due).
    """
    now = world.clock()
    candidates = [Reminder(s.name, s.env, s.severity, _iso(s.due), s.next_step) for s in backlog.statuses
                  if s.severity in (OVERDUE, CRITICAL) and not (s.snoozed_until and s.snoozed_until > now)]
    if not candidates:
        return []
    return world.log.remind_migrations(candidates, who=world.who(), now=now)
