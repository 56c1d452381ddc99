"""The migration-cleanup backlog: every migration's phase in every environment, and its steps.

A migration is marked in git (``Migration: NAME expand`` / ``contract`` trailers, read by
:mod:`backend.markers`) or recorded with ``andon migration add``; what people and jobs
report (progress, finish, notes, snoozes, waivers, aborts) is kept in the deploy log
(:mod:`backend.store.migrations`). :func:`evaluate` puts both together with the deploys
into a :class:`Backlog`, by the rules of :mod:`backend.migration_rules` (also the README's
"Migration phases" table).

**When an expand went live** in an environment: its succeeded deploys are walked newest
first, intersecting their marker masks (the live deploy's & each older one's); the
current run of deploys that all hold the expand starts at the deploy where the
intersection loses its last expand bit, and that deploy's finish time (its start time
when it has none) is ``live_since``. A rollback past the expand ends the run; deploying
it again starts a new one (``since`` = the re-deploy). The same for the contract. A
deploy whose SHA is not in this clone is left out of the walk (the live one is named in
``Backlog.error``).

**Cache.** What needs git (the markers, their problems, the live-since times, the tips'
masks for :func:`rollback_holds`, code search results) is kept in the log under the
deploy branch head's SHA and the succeeded deploys' fingerprint (count and newest id).
Warm (nothing changed), an evaluation runs no ``git log`` and no ``git grep``: only the
two small commands that find the branch head.

**Evidence.** Every ``Migration-Refs`` pattern of every migration not yet done (or ended)
is searched for with one ``git grep`` at the branch head (another for patterns a first
search that reached its limit may have starved); lines are attributed to patterns here.
A migration added with ``andon migration add`` counts as expand-live from its add time in
the environments it named (all configured ones when none was named); it has no expand
commit, so :func:`rollback_holds` cannot hold a rollback for it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from backend import AndonError
from backend.config import MIGRATION_KINDS, MigrationRules
from backend.history import CONTAINS_CHUNK, FULL_SHA, GitError, GrepMatch, History
from backend.markers import MIGRATION_NAME, Marker, MarkerProblem, scan
from backend.migration_rules import (
    ACTIONS,
    CLEANUP_DUE,
    CRITICAL,
    DONE,
    DUE_SOON,
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
from backend.models import from_iso, to_iso, when
from backend.store.migrations import AddedMigration, MigrationState, Reminder, Step, parse_time
from backend.text import clean_line, short
from backend.world import World

__all__ = ["ACTIONS", "PHASES", "SEVERITIES", "Backlog", "Evidence", "Hold", "Progress", "Status", "StepRefused",
           "UnknownMigration", "allowed", "apply", "evaluate", "remind", "rollback_holds"]

CACHE_VERSION = "1"  # part of every cache key: a change to what is kept makes old entries unreadable
ASK_GIT_UP_TO = CONTAINS_CHUNK  # expand commits rollback_holds asks History.contains about; beyond, one scan
EVIDENCE_LIMIT = 1000  # lines one git grep returns at most
PLACES_SHOWN = 3  # places named in an evidence text
PLACES_KEPT = 20  # places kept in Evidence.places
TEXT_LIMIT = 500  # characters of a reason or note kept


class UnknownMigration(AndonError):
    """No migration of that name in git or added (exit 1)."""


class Progress(NamedTuple):
    done: int
    total: int | None
    rate: float | None  # per hour, over the recent reports
    eta: datetime | None
    at: datetime | None  # the last report (heartbeat)


@dataclass(frozen=True)
class Evidence:
    """What ``git grep`` at the deploy branch's head found of a migration's ``Migration-Refs`` patterns.

    (A dataclass, not a NamedTuple: a field named ``count`` would hide ``tuple.count``.)
    """

    places: tuple[GrepMatch, ...]
    count: int  # places found (at least this many when the search reached its limit)
    text: str


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


# -- what git says (cached) ------------------------------------------------------------


class Marked(NamedTuple):
    """A migration as its trailers describe it."""

    kind: str | None
    refs: tuple[str, ...]
    expand: tuple[str, ...]  # SHAs, oldest first
    contract: tuple[str, ...]
    marked_at: str | None  # the first expand commit's committer date (to_iso)


class Known(NamedTuple):
    """What the evaluation needed git for: kept in the log's cache as JSON."""

    head: str | None
    migrations: Mapping[str, Marked]
    live: Mapping[str, Mapping[str, tuple[str | None, str | None]]]  # env -> name -> (expand since, contract since)
    problems: tuple[MarkerProblem, ...]
    error: str | None
    key: str  # the cache key it was kept (or would be kept) under

    def to_json(self) -> dict[str, Any]:
        return {"head": self.head, "migrations": {name: list(m) for name, m in self.migrations.items()},
                "live": {env: {name: list(pair) for name, pair in names.items()} for env, names in self.live.items()},
                "problems": [list(p) for p in self.problems], "error": self.error}


def _known_from_json(value: Any, key: str) -> Known | None:
    """A cached :class:`Known`, or None when it is not what andon writes (worked out again)."""
    try:
        migrations = {clean_line(name): Marked(kind, tuple(refs), tuple(expand), tuple(contract), at)
                      for name, (kind, refs, expand, contract, at) in value["migrations"].items()}
        live = {env: {name: (pair[0], pair[1]) for name, pair in names.items()} for env, names in value["live"].items()}
        problems = tuple(MarkerProblem(*(clean_line(str(part)) for part in p)) for p in value["problems"])
        return Known(value["head"], migrations, live, problems, value["error"], key)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _head(world: World) -> tuple[str | None, str | None]:
    """(the deploy branch head's SHA, why there is none)."""
    history = world.history
    if history.root is None:
        return None, "migration markers unavailable: not in a git repository"
    ref = history.branch(world.config.branch)
    if ref is None:
        return None, None  # no commits yet, or a configured branch not in this clone: deploys alone
    try:
        return history.resolve_many([ref])[ref], None
    except GitError as error:
        return None, f"migration markers unavailable: {error}"


def _known(world: World) -> Known:
    head, error = _head(world)
    log = world.log
    key = f"{CACHE_VERSION}:{head or '-'}:{log.succeeded_fingerprint()}"
    if error is None:
        kept = _known_from_json(log.migration_cache("facts", key), key)
        if kept is not None:
            return kept
    timelines = log.succeeded_deploys()
    tips = ([head] if head else []) + list(dict.fromkeys(d.sha for deploys in timelines.values() for d in deploys))
    found = scan(world.history, tips)
    if found.error is not None:
        return Known(head, {}, {}, found.problems, found.error, key)
    markers = found.markers
    migrations = _migrations(markers)
    expand_bits: dict[str, int] = {}
    contract_bits: dict[str, int] = {}
    for bit, marker in enumerate(markers):
        target = expand_bits if marker.step == "expand" else contract_bits
        target[marker.name] = target.get(marker.name, 0) | (1 << bit)
    live: dict[str, dict[str, tuple[str | None, str | None]]] = {}
    lost: list[str] = []
    for env, deploys in timelines.items():
        present = [(found.masks[d.sha], d.at) for d in deploys if d.sha in found.masks]
        if deploys and deploys[-1].sha not in found.masks:
            lost.append(f"{short(deploys[-1].sha)} live in {env}")
        expands = _run_starts(present, expand_bits)
        contracts = _run_starts(present, contract_bits)
        live[env] = {name: (expands.get(name), contracts.get(name)) for name in {*expands, *contracts}}
    if lost:
        error = (f"not in this clone (git fetch): {', '.join(lost[:3])}{' …' if len(lost) > 3 else ''}; "
                 "phases there are as of the newest deploy found")
    known = Known(head, migrations, live, found.problems, error, key)
    all_expands = 0
    for bits in expand_bits.values():
        all_expands |= bits
    masks = {sha: format(mask & all_expands, "x") for sha, mask in found.masks.items() if FULL_SHA.match(sha)}
    log.keep_migration_cache("masks", key, {"bits": {name: format(bits, "x") for name, bits in expand_bits.items()},
                                            "masks": masks})
    log.keep_migration_cache("facts", key, known.to_json())
    return known


def _migrations(markers: Sequence[Marker]) -> dict[str, Marked]:
    by_name: dict[str, list[Marker]] = {}
    for marker in markers:
        by_name.setdefault(marker.name, []).append(marker)
    result = {}
    for name, found in by_name.items():
        expands = [m for m in found if m.step == "expand"]
        kind = next((m.kind for m in expands + found if m.kind is not None), None)
        refs = tuple(dict.fromkeys(ref for m in found for ref in m.refs))
        marked = _commit_time(expands[0].at) if expands else None
        result[name] = Marked(kind, refs, tuple(m.sha for m in expands),
                              tuple(m.sha for m in found if m.step == "contract"), marked)
    return result


def _commit_time(text: str) -> str | None:
    try:
        return to_iso(from_iso(text))
    except ValueError:
        return None


def _run_starts(timeline: Sequence[tuple[int, str]], bits: Mapping[str, int]) -> dict[str, str]:
    """For each migration whose bits the newest deploy holds: when the current run of deploys
    holding (one of) them started, walking newest first and intersecting masks."""
    if not timeline or not bits:
        return {}
    live_mask, newer_at = timeline[-1]
    running = {name: b & live_mask for name, b in bits.items() if b & live_mask}
    combined = 0
    for b in running.values():
        combined |= b
    since: dict[str, str] = {}
    for mask, at in reversed(timeline[:-1]):
        if not running:
            break
        if combined & ~mask:
            for name, b in list(running.items()):
                kept = b & mask
                if not kept:
                    since[name] = newer_at
                    del running[name]
                elif kept != b:
                    running[name] = kept
            combined = 0
            for b in running.values():
                combined |= b
        newer_at = at
    for name in running:
        since[name] = newer_at
    return since


# -- evidence --------------------------------------------------------------------------------


def _search(history: History, patterns: Sequence[str], head: str) -> dict[str, tuple[list[GrepMatch], bool]]:
    """Each pattern's matching lines at ``head`` (and whether the list may be short): as few greps as can be."""
    found: dict[str, list[GrepMatch]] = {p: [] for p in patterns}
    short_lists: set[str] = set()
    todo = list(patterns)
    while todo:
        matches = history.grep(todo, head, limit=EVIDENCE_LIMIT)
        new = False
        for match in matches:
            for pattern in todo:
                if pattern in match.text:
                    found[pattern].append(match)
                    new = True
        if len(matches) < EVIDENCE_LIMIT or not new:
            break
        # The search stopped at its limit: patterns with lines found may have more; those
        # with none may have been starved by the others, and are searched again alone.
        short_lists.update(p for p in todo if found[p])
        todo = [p for p in todo if not found[p]]
    return {p: (found[p], p in short_lists) for p in patterns}


def _evidence(world: World, head: str | None, wanted: Mapping[str, tuple[str, ...]]
              ) -> tuple[dict[str, Evidence], str | None]:
    patterns = sorted({p for refs in wanted.values() for p in refs})
    if head is None or not patterns:
        return {}, None
    log = world.log
    key = f"{CACHE_VERSION}:{head}:" + hashlib.sha1(json.dumps(patterns).encode()).hexdigest()
    kept = log.migration_cache("grep", key)
    results: dict[str, tuple[list[GrepMatch], bool]] | None = None
    if isinstance(kept, dict):
        try:
            results = {p: ([GrepMatch(clean_line(a), int(b), clean_line(c)) for a, b, c in kept[p][0]], bool(kept[p][1]))
                       for p in patterns}
        except (KeyError, TypeError, ValueError, IndexError):
            results = None
    if results is None:
        try:
            results = _search(world.history, patterns, head)
        except GitError as error:
            return {}, f"code search failed: {error}"
        log.keep_migration_cache("grep", key, {p: [[list(m) for m in ms], cut] for p, (ms, cut) in results.items()})
    evidence = {}
    for name, refs in wanted.items():
        places = list(dict.fromkeys(m for ref in refs for m in results[ref][0]))
        more = any(results[ref][1] for ref in refs)
        count = len(places)
        if count:
            named = ", ".join(f"{p.path}:{p.line}" for p in places[:PLACES_SHOWN])
            text = (f"old code still referenced in {'at least ' if more else ''}{count} place{'s' * (count != 1)}: "
                    f"{named}{' …' if count > PLACES_SHOWN or more else ''}")
        else:
            text = "looks cleaned up — ship the contract?"
        evidence[name] = Evidence(tuple(places[:PLACES_KEPT]), count, text)
    return evidence, None


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
    return Facts(expand_live, parse_time(contract_at), marked_at)


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
    known = _known(world)
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
        found, problem = _evidence(world, known.head, wanted)
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
    shown = evidence if phase not in TERMINAL else None
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
    known = _known(world)
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
    known = _known(world)
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


def remind(world: World, backlog: Backlog) -> int | None:
    """Write one ``migration.reminder`` digest of the overdue and critical cleanups due a reminder.

    Each (migration, environment) at most once per 24 hours and not while snoozed, decided
    inside ``BEGIN IMMEDIATE`` (:meth:`~backend.store.migrations.MigrationsMixin.remind_migrations`):
    two andons at once never both send. Returns the event's id, or None when nobody is due.
    """
    now = world.clock()
    candidates = [Reminder(s.name, s.env, s.severity, _iso(s.due)) for s in backlog.statuses
                  if s.severity in (OVERDUE, CRITICAL) and not (s.snoozed_until and s.snoozed_until > now)]
    if not candidates:
        return None
    return world.log.remind_migrations(candidates, who=world.who(), now=now)
