"""Held commits: the commits a rollback took out of an environment stay out (issue 10, part A).

When a rollback's deploy succeeds, :func:`hold_reverted` holds in that environment the commits
it took out of it: those in what was live before it (the SHA of the deploy it reverts, the
environment's newest) and not in its target, ``target..live`` (:meth:`History.ranges`). For a
rollback of the newest deploy to the one before, that is the newest deploy's own range; a
rollback ``--to`` further back takes out (and holds) the deploys in between too, and so does a
second rollback in the same stop (what it reverts is the first rollback's own deploy, whose own
range is empty; it holds ``target..live`` all the same: what the first left live). The
``commit.held`` event names ``live_sha`` and ``target_sha``. When that range cannot be worked
out (the target gone from the clone, git failing), the reverted deploy's own range is held
instead, or failing that its own SHA, and the event says why (``range_error``).

A held commit stays out of every ``andon deploy`` to that environment (part B's gate calls
:func:`blocking`; exit 11) until either

* the SHA deployed also contains a commit that reverts it: its message says
  ``This reverts commit <full sha>`` (as ``git revert`` writes). A revert of that revert puts
  it back in. A revert of a merge (``git revert -m 1 M``: ``This reverts commit M, reversing
  changes made to P.``) takes out all the merge brought in, ``P..M``: the held commits of the
  merged branch count as reverted too (one ``git rev-list`` per merge reverted). A fix that lands
  on top is not enough: nothing but a revert or a person says so;
* or a person releases it (:func:`release`: ``andon release SHA --env E --reason TEXT`` or
  ``u`` on the dashboard). The row is kept, released, with who and why; ``commit.released``.
  :func:`release_all` (``andon release --all``, or "all" in ``u``'s form) releases every commit
  held in the environment with ONE ``commit.released`` event (``shas``, ``count``): a rollback of
  a deploy of 11 commits whose build broke, not its code, is one decision, not eleven.

A revert is per SHA, not a state of the hold: an older SHA without the revert is still refused.

Cost (:func:`blocking`, on the way of every deploy): an environment with nothing held asks no
git at all (one SQLite read). Otherwise one :meth:`History.contains` batch tells which held
commits the SHA contains; none: done. Some: ONE ``git log --format=%H%x00%B SHA ^bound...``
reads the messages of the commits that could revert them. The bound of each hold is the lower
end of the range it was held from (the rollback's target, or the commit itself): a revert of a
held commit descends from it, so cannot be reachable from that bound, and the walk covers only
what was written since. (Bounding by the held commits themselves would miss a revert lying
between two held commits, as when a later rollback holds a range that holds both a bad commit
and its revert.) Only bounds still in the clone are used (one ``cat-file`` batch): a hold whose
bound is gone (a deployed branch deleted and collected) is bounded by its parents that are not
held themselves (one ``rev-list``, only then), which hide no more than the bound did. Nothing is
cached: holds, releases and the clone change. A git failure is :class:`GitError`; the gate lets
a forced deploy through all the same (:func:`backend.gate.check`).

Held rows whose commits were reverted stay held (a read never writes): they cost the
contains batch of a deploy whose SHA contains them, and are shown until released.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from backend import AndonError
from backend.history import FULL_SHA
from backend.models import SUCCEEDED
from backend.repository import GitError, Repository
from backend.store.held import HeldCommit
from backend.store.line import Rollback
from backend.text import clean_line, decode, short
from backend.world import World

__all__ = ["HeldCommit", "blocking", "held", "hold_reverted", "release", "release_all"]

# "This reverts commit X." or, for a merge reverted with git revert -m, "This reverts commit X, reversing
# changes made to P." (P: the mainline parent; git wraps the line after "reversing").
REVERTS = re.compile(rb"This reverts commit ([0-9a-f]{40})(?:,\s+reversing\s+changes\s+made\s+to\s+([0-9a-f]{40}))?")
HEX = re.compile(r"\A[0-9a-fA-F]{4,40}\Z")


def held(world: World, env: str) -> list[HeldCommit]:
    """The commits still held in ``env`` (one SQLite read, no git): the pending panel's marks."""
    return world.log.held_commits(env)


def hold_reverted(world: World, rollback: Rollback) -> list[HeldCommit]:
    """Hold in the rollback's environment the commits it took out of it (see the module's
    docstring); returns those newly held (one ``commit.held`` event for them)."""
    if rollback.reverts is None:
        return []
    log = world.log
    reverted = log.get(rollback.reverts)  # the deploy live when the rollback was asked for
    if reverted.damaged or not FULL_SHA.match(reverted.sha):
        return []
    live = reverted.sha
    own = (reverted.prev_sha, live)  # that deploy's own range: the fallback, usually known already
    target = rollback.target_sha if FULL_SHA.match(rollback.target_sha) else None
    out = (target, live) if target is not None else own
    found = world.history.ranges(list(dict.fromkeys([out, own])))
    taken, fallback = found[out], found[own]
    detail: dict[str, object] = {"live_sha": live, "target_sha": target}
    if not taken.error:
        commits = [(c.sha, c.subject) for c in taken.commits]
        bound = target or reverted.prev_sha or live
    elif out != own and not fallback.error:
        commits = [(c.sha, c.subject) for c in fallback.commits]
        bound = reverted.prev_sha or live
        detail["range_error"] = (f"{taken.error}; only the commits of deploy #{reverted.id} "
                                 f"({short(reverted.prev_sha or '') or 'first'}..{short(live)}) are held")
    else:
        subject = next((c.subject for c in fallback.commits if c.sha == live), "") if not fallback.error else ""
        commits = [(live, subject)]
        bound = live
        detail["range_error"] = f"{taken.error}; only {short(live)}, the deploy's own commit, is held"
    if not commits:
        return []
    return log.hold_commits(rollback.env, commits, bound=bound, who=rollback.who or "andon",
                            rollback_id=rollback.id, reverts=reverted.id, **detail)


def blocking(world: World, env: str, sha: str) -> list[HeldCommit]:
    """The held commits of ``env`` that ``sha`` contains and does not revert (released ones are
    not held): what refuses a deploy of ``sha``. See the module's docstring for the cost.

    :class:`GitError` (one line) when git cannot say (``sha`` is not a commit in this clone).
    """
    holds = world.log.held_commits(env)
    if not holds:
        return []
    history = world.history
    answers = history.contains([(hold.sha, sha) for hold in holds])
    inside = [hold for hold in holds if answers.get((hold.sha, sha))]
    if any(answer is None for answer in answers.values()) and history.resolve_many([sha])[sha] is None:
        # contains() says None for a commit the clone lacks: a held one gone is not in sha, but sha must be there.
        raise GitError(f"cannot check the commits held in {env}: {clean_line(sha)[:80]!r} is not a commit in "
                       "this clone")
    if not inside:
        return []
    reverted = _reverted(world, sha, inside, {hold.sha for hold in holds})
    return [hold for hold in inside if hold.sha not in reverted]


def _reverted(world: World, sha: str, holds: Sequence[HeldCommit], all_held: set[str]) -> set[str]:
    """Which of ``holds`` a commit in ``sha``'s history reverts (one ``git log``, oldest first;
    see the module's docstring for its bounds, and for reverts of merges)."""
    history = world.history
    repository = history.repository
    if repository is None:
        return set()
    bounds = _bounds(world, holds, all_held)
    revisions = f"{sha}\n" + "".join(f"^{bound}\n" for bound in sorted(bounds))
    done = repository.run(["log", "-z", "--topo-order", "--reverse", "--format=%H%x00%B", "--stdin"],
                          stdin=revisions.encode())
    wanted = {hold.sha for hold in holds}
    reverted: set[str] = set()
    # A revert -> (the held commits it concerns, whether it takes them out): a revert of a revert puts them back.
    undoes: dict[str, tuple[frozenset[str], bool]] = {}
    fields = done.stdout.split(b"\x00")
    for index in range(0, len(fields) - 1, 2):
        commit = decode(fields[index]).strip()
        for match in REVERTS.finditer(fields[index + 1]):
            target = match.group(1).decode()
            if target in undoes:
                concerned, out = undoes[target][0], not undoes[target][1]
            else:
                concerned, out = frozenset({target} & wanted), True
                if match.group(2) is not None:  # a merge reverted (git revert -m): all it brought in
                    concerned |= _brought(repository, target, match.group(2).decode()) & wanted
                if not concerned:
                    continue
            undoes[commit] = (concerned, out)
            for held_sha in concerned:
                (reverted.add if out else reverted.discard)(held_sha)
    return reverted


def _bounds(world: World, holds: Sequence[HeldCommit], all_held: set[str]) -> set[str]:
    """Where the search for reverts of ``holds`` may stop: each hold's bound (the lower end of the
    range it was held from), when it is still a commit in this clone (one ``cat-file`` batch).
    A hold whose bound is gone (a branch deleted and collected) is bounded by its parents that are
    not held themselves (one ``rev-list``, only then): of a range ``target..live`` those are
    reachable from ``target``, so they hide no more than it did; a held parent would hide the
    reverts lying between two held commits. :class:`GitError` when git cannot say."""
    history = world.history
    wanted = {hold.bound for hold in holds if FULL_SHA.match(hold.bound)}
    there = history.existing(wanted) if wanted else set()
    lost = sorted({hold.sha for hold in holds if hold.bound not in there})
    if not lost or history.repository is None:
        return there
    done = history.repository.run(["rev-list", "--no-walk", "--parents", "--stdin"],
                                  stdin="".join(f"{sha}\n" for sha in lost).encode())
    parents = {parent for line in decode(done.stdout).splitlines() for parent in line.split()[1:]}
    return there | {parent for parent in parents if FULL_SHA.match(parent) and parent not in all_held}


def _brought(repository: Repository, merge: str, mainline: str) -> set[str]:
    """The commits ``merge`` brought in on top of ``mainline`` (``git rev-list merge ^mainline``):
    what a ``git revert -m`` of it takes out. Empty when git cannot say (the merge is then all)."""
    done = repository.run(["rev-list"], revisions=[merge, f"^{mainline}"], paths=[], check=False)
    if done.status != 0:
        return set()
    return {line for line in decode(done.stdout).split() if FULL_SHA.match(line)}


def resolve_held(world: World, env: str, text: str) -> tuple[str, HeldCommit | None]:
    """The full SHA ``text`` names and its hold in ``env`` (None: not held). A SHA or a unique
    prefix of a held commit needs no git (it may be gone from the clone); anything else is
    resolved by git. :class:`AndonError` (one line) when it names no commit."""
    value = text.strip()
    shown = clean_line(value)[:60]
    holds = world.log.held_commits(env)
    if HEX.match(value):
        matching = [hold for hold in holds if hold.sha.startswith(value.lower())]
        if len(matching) == 1:
            return matching[0].sha, matching[0]
        if len(matching) > 1:
            raise AndonError(f"{shown!r} names several commits held in {env} ("
                             + ", ".join(hold.short_sha for hold in matching[:5]) + "): give more of the SHA")
    if not value or value.startswith("-"):
        raise AndonError(f"{shown!r} is not a commit")
    try:
        full = world.history.resolve_many([value])[value] if world.history.root is not None else None
    except GitError as error:
        raise AndonError(f"cannot resolve {shown!r}: {error}") from None
    if full is None:
        raise AndonError(f"{shown!r} is not a commit in this clone, nor one held in {env}")
    return full, next((hold for hold in holds if hold.sha == full), None)


def release(world: World, env: str, sha: str, who: str, reason: str) -> str:
    """A person releases a held commit of ``env``: deploys may ship it again. One line saying what
    happened; releasing a commit not held (never, or released already) is harmless and says so.

    :class:`AndonError` (one line): an environment neither configured nor ever held in, an empty
    reason, a SHA that names no commit (a held one gone from the clone is named by its SHA).
    """
    from backend.config import check_environment_name

    check_environment_name(env)
    reason = clean_line(reason).strip()
    if not reason:
        raise AndonError("a release needs a reason: why may this commit ship again?")
    if env not in world.config.environments and env not in world.log.environments() \
            and not world.log.held_commits(env):
        known = ", ".join(world.environments()) or "none"
        raise AndonError(f"unknown environment {env!r} (known: {known})")
    full, hold = resolve_held(world, env, sha)
    if hold is None:
        return f"{short(full)} is not held in {env}: nothing to release"
    released = world.log.release_commit(env, full, who=who or "unknown", reason=reason)
    if released is None:
        return f"{short(full)} is not held in {env} any more: nothing to release"
    left = len(world.log.held_commits(env))
    about = f" ({released.subject})" if released.subject else ""
    return (f"released {short(full)}{about} in {env}: deploys may ship it again"
            + (f"; {left} commit{'s' if left != 1 else ''} still held there" if left else ""))


def release_all(world: World, env: str, who: str, reason: str) -> str:
    """A person releases every commit held in ``env`` at once (``andon release --all``, the
    dashboard's "all"): the rollback's commits were fine (the build broke, not the code). One
    line; ONE ``commit.released`` event naming them all; nothing held is harmless and says so.

    :class:`AndonError` (one line): an environment neither configured nor ever held in, an empty reason.
    """
    from backend.config import check_environment_name

    check_environment_name(env)
    reason = clean_line(reason).strip()
    if not reason:
        raise AndonError("a release needs a reason: why may these commits ship again?")
    if env not in world.config.environments and env not in world.log.environments() \
            and not world.log.held_commits(env):
        known = ", ".join(world.environments()) or "none"
        raise AndonError(f"unknown environment {env!r} (known: {known})")
    released = world.log.release_all_commits(env, who=who or "unknown", reason=reason)
    if not released:
        return f"no commit is held in {env}: nothing to release"
    named = ", ".join(commit.short_sha for commit in released[:5]) + (
        f" and {len(released) - 5} more" if len(released) > 5 else "")
    count = len(released)
    return (f"released {count} commit{'s' if count != 1 else ''} held in {env} ({named}): "
            f"deploys may ship {'them' if count != 1 else 'it'} again")


def rollback_succeeded(world: World, rollback: Rollback) -> list[HeldCommit]:
    """What :func:`backend.rollback.run_rollback` calls once the rollback's deploy ended: holds the
    reverted commits when it succeeded. Never raises: the rollback is done whatever this says."""
    if rollback.status != SUCCEEDED:
        return []
    try:
        return hold_reverted(world, rollback)
    except AndonError:
        return []  # the log cannot be written: nothing else could record it either
