"""Migration markers in git: ``Migration:`` trailers, read with one walk of the history.

A commit marks a step of a migration with trailers in its message's last
paragraph (where git looks for trailers; a ``Migration:`` line anywhere else is
not one)::

    users: read both name shapes

    Migration: users-split-name expand
    Migration-Kind: database
    Migration-Refs: User.full_name, full_name =

:func:`scan` reads every marker reachable from a set of tips (the deploy branch's
head and every SHA ever deployed) with ONE ``git log --topo-order -z`` over all
of them, then answers "which markers does each tip contain?" as a bitmask per tip
(bit ``i`` set: ``markers[i]`` is the tip or one of its ancestors), computed in one
pass over the log, parents first. Whether an expand is live in an environment is
then a bit test on the live deploy's mask, for every migration and every deploy
at once, with no further git call.

The rules, decided here:

* Keys are matched case-insensitively, as git matches them (``migration:`` and
  ``MIGRATION:`` are ``Migration:``); steps and kinds too (``Expand`` is
  ``expand``); names are case-sensitive (``Users`` and ``users`` are two
  migrations). Only ``:`` separates a key from its value, whatever the
  repository's ``trailer.separators`` says. Folded lines are unfolded.
* ``Migration: <name> <step>``: exactly two words. ``<name>`` follows
  :data:`MIGRATION_NAME`; ``<step>`` is ``expand`` or ``contract``. Anything else
  (no step, an unknown step, a name with spaces or markup, a name over 80
  characters) is a :class:`MarkerProblem`, never an exception. A commit may carry
  several ``Migration:`` trailers: each is a marker (the same one written twice
  counts once). Several commits may carry the same trailer (a cherry-pick): each
  is a marker.
* ``Migration-Kind`` and ``Migration-Refs`` apply to every ``Migration:`` trailer
  of the same commit (two migrations in one commit with one ``Migration-Kind``
  are both of that kind). Two different kinds in one commit, or an unknown kind,
  is a problem, and that commit's markers get kind None (the migration's kind is
  then decided elsewhere: an ``andon migration add``, or the default).
  ``Migration-Refs`` is a comma-separated list of patterns; several such trailers
  add up; one with no pattern is a problem. A kind or refs trailer in a commit
  without any ``Migration:`` trailer is a problem.
* Trailer text comes from anyone who can push a commit: it is cleaned
  (:func:`backend.text.clean_line`: escape sequences and control characters go)
  and cut (a problem's text to :data:`PROBLEM_TEXT_LIMIT` characters, a pattern
  to :data:`PATTERN_LIMIT`). A valid name cannot hold markup; a problem's text
  can, and is shown as plain text by whoever shows it.
* ``markers`` are oldest first by committer date (ties: ancestors first); only
  commits reachable from the tips are seen at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import NamedTuple

from backend.config import MIGRATION_KINDS
from backend.history import FULL_SHA, History
from backend.repository import GitError, GitTimeout, Repository, run
from backend.text import clean_line, decode, has_controls

__all__ = ["MIGRATION_NAME", "STEPS", "Marker", "MarkerProblem", "Scan", "scan"]

MIGRATION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}\Z")  # \Z: "$" would accept a trailing newline
NAME_LIMIT = 80
STEPS = ("expand", "contract")
PROBLEM_TEXT_LIMIT = 200  # characters of a malformed trailer kept in its MarkerProblem
PATTERN_LIMIT = 200  # characters of one Migration-Refs pattern kept
_QUOTED_LIMIT = 60  # characters of a value quoted in a problem's one line

_KEY, _KIND, _REFS = "migration", "migration-kind", "migration-refs"
# Between two trailers of a commit, and between a trailer's key and value: characters
# git never writes itself (a message holding them only confuses its own markers).
_SEP, _KV = "\x1e", "\x1f"
_FORMAT = ("--format=%H%x00%P%x00%cI%x00%(trailers:key=Migration,key=Migration-Kind,key=Migration-Refs,"
           "unfold,separator=%x1e,key_value_separator=%x1f)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CONTROLS_PROBLEM = "escape sequences or control characters in the trailer (shown here removed)"


class Marker(NamedTuple):
    """One valid ``Migration: <name> <step>`` trailer of one commit."""

    sha: str
    name: str
    step: str  # "expand" or "contract"
    kind: str | None  # from the commit's Migration-Kind; None: not given (or a problem)
    refs: tuple[str, ...]  # the commit's Migration-Refs patterns
    at: str  # the commit's committer date, ISO 8601 as git writes it


class MarkerProblem(NamedTuple):
    """A trailer that could not be read: which commit, the trailer as written (cleaned, cut), why (one line)."""

    sha: str
    text: str
    problem: str


class Scan(NamedTuple):
    markers: tuple[Marker, ...]  # oldest first (committer date)
    problems: tuple[MarkerProblem, ...]
    masks: Mapping[str, int]  # tip -> bitmask over markers (bit i: markers[i] is the tip or an ancestor)
    missing: frozenset[str]  # tips asked about that are not commits in this clone
    error: str | None  # git could not answer at all (no repository, a timeout): one line


def scan(history: History, tips: Iterable[str], *, timeout: float | None = None) -> Scan:
    """Every marker reachable from ``tips``, and for each tip the markers it contains.

    ``masks`` is keyed by each tip's full SHA, and also by the tip as given when
    that differs (a short SHA, a branch name). A tip that is not a commit in this
    clone (force-pushed away, never fetched) is in ``missing`` and nowhere else.
    ``timeout`` bounds the ``git log`` (default: the git layer's). Never raises
    for a git problem: ``error`` says what went wrong, in one line.

    Optimistic, as :meth:`History.ranges` is: tips given as full SHAs (deploys) are
    handed to ``git log`` unchecked, since asking ``git cat-file`` about ten thousand
    of them first (peeling each to its commit) costs a fifth of the log itself;
    ``git log`` refuses the whole batch if one is missing, and only then are they
    checked (one ``git cat-file --batch-check``) and the log run again without the
    missing ones. Other tips (a branch) are resolved first, in one call.
    """
    wanted = [tip for tip in dict.fromkeys(tips) if tip]
    repository = history.repository
    if repository is None:
        return Scan((), (), {}, frozenset(wanted), "migration markers unavailable: not in a git repository")
    given = {tip: tip for tip in wanted if FULL_SHA.match(tip)}
    try:
        present: dict[str, str] = dict(given)
        others = [tip for tip in wanted if tip not in given]
        if others:
            present.update({tip: sha for tip, sha in history.resolve_many(others).items() if sha is not None})
        try:
            done = _log(repository, set(present.values()), timeout)
        except GitTimeout:
            raise
        except GitError:  # most likely a tip that is not in this clone: check them all, then again
            present = {tip: sha for tip, sha in history.resolve_many(wanted).items() if sha is not None}
            given = {}
            done = _log(repository, set(present.values()), timeout)
    except GitError as error:
        return Scan((), (), {}, frozenset(), f"migration markers unavailable: {error}")
    missing = frozenset(tip for tip in wanted if tip not in present)
    if done is None:
        return Scan((), (), {}, missing, None)
    fields = decode(done).split("\x00")
    if len(fields) % 4 != 1 or fields[-1]:
        return Scan((), (), {}, missing, "migration markers unavailable: git log's output could not be read")
    shas, parents, trailers = fields[0:-1:4], fields[1::4], fields[3::4]
    if given:
        # A full SHA git took for a tip without being a commit's own (an annotated tag's):
        # ask which commit it names (rare; one more call).
        listed = set(shas)
        odd = [tip for tip in given if tip not in listed]
        if odd:
            try:
                peeled = history.resolve_many(odd)
            except GitError as error:
                return Scan((), (), {}, missing, f"migration markers unavailable: {error}")
            for tip in odd:
                sha = peeled.get(tip)
                if sha is None:
                    del present[tip]
                else:
                    present[tip] = sha
            missing = frozenset(tip for tip in wanted if tip not in present)
    markers, problems, bits_at = _read(shas, fields[2::4], trailers)
    masks = _masks(shas, parents, bits_at)
    result: dict[str, int] = {}
    for tip, sha in present.items():
        mask = masks.get(sha, 0)
        result[sha] = mask
        result[tip] = mask
    return Scan(markers, problems, result, missing, None)


def _log(repository: Repository, shas: set[str], timeout: float | None) -> bytes | None:
    """The one ``git log`` over ``shas`` (None when there are none): raw output."""
    if not shas:
        return None
    # trailer.separators: only ":" separates a key from its value, whatever the repository's
    # configuration says. The tips go on standard input, where git takes none for an option.
    args = ["-c", "trailer.separators=:", "log", "-z", "--topo-order", _FORMAT, "--stdin"]
    stdin = "".join(f"{sha}\n" for sha in sorted(shas)).encode()
    # GIT_FLUSH=0: git log writes to a pipe once per commit otherwise (50,000 writes, and as
    # many wake-ups of the reader here); with it, a buffer at a time. What Repository.run
    # does, with that one variable more.
    with repository.repo() as repo:
        env = {"GIT_DIR": str(repo.git_dir), "GIT_WORK_TREE": str(repository.root), "GIT_FLUSH": "0"}
        return run(args, repo=repo, env=env, stdin=stdin, timeout=timeout).stdout


def _masks(shas: list[str], parents: list[str], bits_at: dict[int, int]) -> dict[str, int]:
    """Each commit's mask (its own bits | its parents'), zero masks left out: one pass, parents first.

    ``git log --topo-order`` lists children before parents, so walking its output
    backwards meets every parent first. A parent the log did not list (where a
    shallow clone's history stops) contributes nothing. A commit with one parent
    and no bits of its own shares its parent's int (no new object): most commits.
    """
    masks: dict[str, int] = {}
    get = masks.get
    index = len(shas)
    for sha, parent in zip(reversed(shas), reversed(parents), strict=True):
        index -= 1
        if len(parent) == 40:  # one parent (SHA-1): the common case
            mask = get(parent, 0)
        elif parent:
            mask = 0
            for each in parent.split(" "):
                mask |= get(each, 0)
        else:
            mask = 0
        if index in bits_at:
            mask |= bits_at[index]
        if mask:
            masks[sha] = mask
    return masks


class _Found(NamedTuple):
    position: int  # in the log (children first)
    sha: str
    name: str
    step: str


def _read(shas: list[str], dates: list[str], trailers: list[str]
          ) -> tuple[tuple[Marker, ...], tuple[MarkerProblem, ...], dict[int, int]]:
    """Markers (oldest first), problems, and the bits each marked commit (by log position) sets."""
    problems: list[MarkerProblem] = []
    found: list[_Found] = []
    kinds: dict[int, str | None] = {}
    refs: dict[int, tuple[str, ...]] = {}
    for index in range(len(trailers) - 1, -1, -1):  # parents first: problems oldest first, roughly
        text = trailers[index]
        if not text:
            continue  # no trailer of ours: the common case, no object made
        sha = shas[index]
        steps: list[_Found] = []
        kind_values: list[tuple[str, str]] = []
        patterns: list[str] = []
        others: list[str] = []  # the kind and refs trailers as written, for a problem
        any_migration = False
        for entry in text.split(_SEP):
            # Parsed as written (an escape sequence in a name makes it a bad name, not
            # a good one once cleaned); shown cleaned.
            key, separator, value = entry.partition(_KV)
            key, value = key.strip(), value.strip()
            written = _cut(clean_line(f"{key}: {value}" if separator else key).strip(), PROBLEM_TEXT_LIMIT)
            lowered = key.lower()
            if not separator or lowered not in (_KEY, _KIND, _REFS):
                problems.append(MarkerProblem(sha, written, "unreadable trailer (a control character in it?)"))
            elif lowered == _KEY:
                any_migration = True
                name_step = _name_step(value)
                if isinstance(name_step, str):
                    problems.append(MarkerProblem(sha, written, name_step))
                elif all(name_step != (f.name, f.step) for f in steps):
                    steps.append(_Found(index, sha, *name_step))
            elif lowered == _KIND:
                others.append(written)
                kind_values.append((value.lower(), written))
            else:
                others.append(written)
                cut = [_cut(clean_line(p).strip(), PATTERN_LIMIT) for p in value.split(",")]
                got = [p for p in cut if p]
                if not got:
                    problems.append(MarkerProblem(sha, written, "Migration-Refs names no pattern "
                                                                "(write comma-separated patterns)"))
                patterns += got
        if not any_migration:
            for written in others:
                key = written.partition(":")[0]
                problems.append(MarkerProblem(sha, written, f"{key} without a Migration: trailer in the same commit"))
            continue
        kind = _kind(sha, kind_values, problems)
        if steps:
            found += steps
            kinds[index] = kind
            refs[index] = tuple(dict.fromkeys(patterns))
    # Oldest first by committer date; on a tie, the one further down the log (an ancestor) first.
    ordered = sorted(found, key=lambda f: (_when(dates[f.position]), -f.position))
    markers = tuple(Marker(f.sha, f.name, f.step, kinds[f.position], refs[f.position], dates[f.position]) for f in ordered)
    bits_at: dict[int, int] = {}
    for bit, f in enumerate(ordered):
        bits_at[f.position] = bits_at.get(f.position, 0) | (1 << bit)
    return markers, tuple(problems), bits_at


def _name_step(value: str) -> tuple[str, str] | str:
    """``(name, step)`` from a ``Migration:`` value, or the problem with it (one line)."""
    if has_controls(value):
        return _CONTROLS_PROBLEM
    words = value.split()
    if not words:
        return "no migration name or step (write 'Migration: <name> expand' or '... contract')"
    if len(words) == 1:
        step = words[0].lower()
        if step in STEPS:
            return f"no migration name before {step!r} (write 'Migration: <name> {step}')"
        return f"no step after the name (write 'Migration: {_cut(clean_line(words[0]), _QUOTED_LIMIT)} expand' or '... contract')"
    if len(words) > 2:
        if words[-1].lower() in STEPS:
            return "the migration name holds spaces (names are letters, digits, '.', '_' and '-')"
        return "expected 'Migration: <name> expand' or 'Migration: <name> contract'"
    name, step = words[0], words[1].lower()
    if step not in STEPS:
        return f"unknown step {_quoted(words[1])} (expected expand or contract)"
    if len(name) > NAME_LIMIT:
        return f"the migration name is longer than {NAME_LIMIT} characters"
    if not MIGRATION_NAME.match(name):
        return (f"bad migration name {_quoted(name)} (letters, digits, '.', '_' and '-', "
                "starting with a letter or digit)")
    return name, step


def _kind(sha: str, values: list[tuple[str, str]], problems: list[MarkerProblem]) -> str | None:
    """The commit's one kind from its Migration-Kind trailers (None: none given, or a problem reported)."""
    if not values:
        return None
    for value, written in values:
        if has_controls(value):
            problems.append(MarkerProblem(sha, written, _CONTROLS_PROBLEM))
            return None
        if value not in MIGRATION_KINDS:
            problems.append(MarkerProblem(sha, written, f"unknown migration kind {_quoted(value)} "
                                                        f"(expected {', '.join(MIGRATION_KINDS)})"))
            return None
    distinct = dict.fromkeys(value for value, _ in values)
    if len(distinct) > 1:
        problems.append(MarkerProblem(sha, values[1][1], f"two different migration kinds in one commit: "
                                                         f"{' and '.join(distinct)}"))
        return None
    return values[0][0]


def _when(date: str) -> datetime:
    try:
        return datetime.fromisoformat(date)
    except ValueError:
        return _EPOCH


def _quoted(text: str) -> str:
    """A piece of a trailer quoted in a problem's one line: cleaned and cut."""
    return repr(_cut(clean_line(text), _QUOTED_LIMIT))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"
