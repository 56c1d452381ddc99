"""What the migration backlog needs git for, worked out once and kept in the deploy log.

* :func:`known`: the markers (:func:`backend.markers.scan`, one ``git log`` over the deploy
  branch's head and every succeeded deploy's SHA), and per environment when each
  migration's expand and contract went live. **When an expand went live**: the
  environment's succeeded deploys are walked newest first, intersecting their marker masks
  (the live deploy's & each older one's); the current run of deploys that all hold the
  expand starts at the deploy after the one where the intersection loses its last expand
  bit, and that deploy's finish time (its start time when it has none) is ``live_since``.
  A rollback past the expand ends the run; deploying it again starts a new one. The same
  for the contract. An expand that was live but the live deploy lacks **left** when the
  deploy after the newest one holding it finished (``Known.left``). A deploy whose SHA is not in this clone is left out of the walk (the
  live one is named in ``Known.error``).
* :func:`evidence`: every ``Migration-Refs`` pattern searched for with one ``git grep`` at
  the branch head (another for the patterns a search that reached its limit may have
  starved), lines attributed to patterns here. Found nothing, it says "no old-shape code
  found yet"; :func:`for_phase` makes that "looks cleaned up — ship the contract?" in
  ``cleanup_due`` only (before, data may still be moving).

**Cache.** Both are kept in the log (:meth:`~backend.store.migrations.MigrationsMixin.keep_migration_cache`):
the markers and live-since times (``facts``) and the tips' masks of expand bits, for
:func:`backend.migrations.rollback_holds` (``masks``), under the branch head's SHA and the
succeeded deploys' fingerprint (count and newest id); the search (``grep``) under the head and
the patterns. Warm (nothing changed) no ``git log`` and no ``git grep`` runs: only the two small
commands that find the branch head. A ``git fetch`` can bring in a deployed SHA that was missing
without moving either: facts worked out while deployed SHAs were missing keep them (``missing``),
and are used again only while one batch (:meth:`History.existing`) says they still are. :data:`CACHE_VERSION` is in every key: change it when what
is kept (or how markers are read) changes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from backend.history import FULL_SHA, GitError, GrepMatch, History
from backend.markers import Marker, MarkerProblem, scan
from backend.models import from_iso, to_iso
from backend.text import clean_line, short
from backend.world import World

CACHE_VERSION = "3"  # part of every cache key: a change to what is kept makes old entries unreadable
EVIDENCE_LIMIT = 1000  # lines one git grep returns at most
PLACES_SHOWN = 3  # places named in an evidence text
PLACES_KEPT = 20  # places kept in Evidence.places
NOTHING_FOUND = "no old-shape code found yet"  # before the cleanup is due: data may still be moving
CLEANED_UP = "looks cleaned up — ship the contract?"  # in cleanup_due only


@dataclass(frozen=True)
class Evidence:
    """What ``git grep`` at the deploy branch's head found of a migration's ``Migration-Refs`` patterns.

    (A dataclass, not a NamedTuple: a field named ``count`` would hide ``tuple.count``.)
    """

    places: tuple[GrepMatch, ...]
    count: int  # places found (at least this many when the search reached its limit)
    text: str


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
    left: Mapping[str, Mapping[str, str]]  # env -> name -> when a deploy took its (once live) expand back out
    problems: tuple[MarkerProblem, ...]
    error: str | None
    key: str  # the cache key it was kept (or would be kept) under
    missing: frozenset[str] = frozenset()  # deployed SHAs not in this clone when it was worked out

    def to_json(self) -> dict[str, Any]:
        return {"head": self.head, "migrations": {name: list(m) for name, m in self.migrations.items()},
                "live": {env: {name: list(pair) for name, pair in names.items()} for env, names in self.live.items()},
                "left": {env: dict(names) for env, names in self.left.items()},
                "problems": [list(p) for p in self.problems], "error": self.error,
                "missing": sorted(self.missing)}


def _known_from_json(value: Any, key: str) -> Known | None:
    """A cached :class:`Known`, or None when it is not what andon writes (worked out again)."""
    try:
        migrations = {clean_line(name): Marked(kind, tuple(refs), tuple(expand), tuple(contract), at)
                      for name, (kind, refs, expand, contract, at) in value["migrations"].items()}
        live = {env: {name: (pair[0], pair[1]) for name, pair in names.items()} for env, names in value["live"].items()}
        left = {env: {name: to_iso(from_iso(at)) for name, at in names.items()} for env, names in value["left"].items()}
        problems = tuple(MarkerProblem(*(clean_line(str(part)) for part in p)) for p in value["problems"])
        missing = frozenset(sha for sha in value["missing"] if isinstance(sha, str) and FULL_SHA.match(sha))
        return Known(value["head"], migrations, live, left, problems, value["error"], key, missing)
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


def known(world: World) -> Known:
    head, error = _head(world)
    log = world.log
    key = f"{CACHE_VERSION}:{head or '-'}:{log.succeeded_fingerprint()}"
    if error is None:
        kept = _known_from_json(log.migration_cache("facts", key), key)
        if kept is not None and not _fetched(world.history, kept.missing):
            return kept
    timelines = log.succeeded_deploys()
    tips = ([head] if head else []) + list(dict.fromkeys(d.sha for deploys in timelines.values() for d in deploys))
    found = scan(world.history, tips)
    if found.error is not None:
        return Known(head, {}, {}, {}, found.problems, found.error, key)
    markers = found.markers
    migrations = _migrations(markers)
    expand_bits: dict[str, int] = {}
    contract_bits: dict[str, int] = {}
    for bit, marker in enumerate(markers):
        target = expand_bits if marker.step == "expand" else contract_bits
        target[marker.name] = target.get(marker.name, 0) | (1 << bit)
    live: dict[str, dict[str, tuple[str | None, str | None]]] = {}
    left: dict[str, dict[str, str]] = {}
    lost: list[str] = []
    for env, deploys in timelines.items():
        present = [(found.masks[d.sha], d.at) for d in deploys if d.sha in found.masks]
        if deploys and deploys[-1].sha not in found.masks:
            lost.append(f"{short(deploys[-1].sha)} live in {env}")
        expands = _run_starts(present, expand_bits)
        contracts = _run_starts(present, contract_bits)
        live[env] = {name: (expands.get(name), contracts.get(name)) for name in {*expands, *contracts}}
        left[env] = _left_at(present, expand_bits)
    if lost:
        error = (f"not in this clone (git fetch): {', '.join(lost[:3])}{' …' if len(lost) > 3 else ''}; "
                 "phases there are as of the newest deploy found")
    known = Known(head, migrations, live, left, found.problems, error, key, found.missing)
    all_expands = 0
    for bits in expand_bits.values():
        all_expands |= bits
    masks = {sha: format(mask & all_expands, "x") for sha, mask in found.masks.items() if FULL_SHA.match(sha)}
    log.keep_migration_cache("masks", key, {"bits": {name: format(bits, "x") for name, bits in expand_bits.items()},
                                            "masks": masks})
    log.keep_migration_cache("facts", key, known.to_json())
    return known


def _fetched(history: History, missing: frozenset[str]) -> bool:
    """Whether any of the deployed SHAs a cached answer lacked is in the clone now (a ``git
    fetch`` brought it): one batch, and only when something was missing."""
    if not missing:
        return False
    try:
        return bool(history.existing(sorted(missing)))
    except GitError:
        return False  # git cannot say now: the kept answer stands


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


def _left_at(timeline: Sequence[tuple[int, str]], bits: Mapping[str, int]) -> dict[str, str]:
    """For each migration whose bits the newest deploy lacks but an older one held: when the
    deploy that took them out (the one after the newest holding them) finished."""
    if not timeline or not bits:
        return {}
    live_mask, newer_at = timeline[-1]
    gone = {name: b for name, b in bits.items() if not b & live_mask}
    combined = 0
    for b in gone.values():
        combined |= b
    left: dict[str, str] = {}
    for mask, at in reversed(timeline[:-1]):
        if not gone:
            break
        if mask & combined:
            for name, b in list(gone.items()):
                if b & mask:
                    left[name] = newer_at
                    del gone[name]
            combined = 0
            for b in gone.values():
                combined |= b
        newer_at = at
    return left


# -- evidence --------------------------------------------------------------------------------


def _search(history: History, patterns: Sequence[str], head: str) -> dict[str, tuple[list[GrepMatch], bool]]:
    """Each pattern's matching lines at ``head`` (and whether the list may be short): as few greps as can be."""
    found: dict[str, list[GrepMatch]] = {p: [] for p in patterns}
    short_lists: set[str] = set()
    todo = list(patterns)
    while todo:
        # Attributed by what git read (the whole line), not the text kept: that is cut and cleaned.
        matches = history.grep_holding(todo, head, limit=EVIDENCE_LIMIT)
        new = False
        for match, held in matches:
            for pattern in held:
                if pattern in found:
                    found[pattern].append(match)
                    new = True
        if len(matches) < EVIDENCE_LIMIT or not new:
            break
        # The search stopped at its limit: patterns with lines found may have more; those
        # with none may have been starved by the others, and are searched again alone.
        short_lists.update(p for p in todo if found[p])
        todo = [p for p in todo if not found[p]]
    return {p: (found[p], p in short_lists) for p in patterns}


def evidence(world: World, head: str | None, wanted: Mapping[str, tuple[str, ...]]
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
            text = NOTHING_FOUND
        evidence[name] = Evidence(tuple(places[:PLACES_KEPT]), count, text)
    return evidence, None


def for_phase(found: Evidence, cleanup_due: bool) -> Evidence:
    """The evidence as said of a (migration, environment) in its phase: finding no old code
    suggests the contract only once the cleanup is due (before, data may still be moving)."""
    if found.count == 0 and cleanup_due:
        return Evidence(found.places, 0, CLEANED_UP)
    return found
