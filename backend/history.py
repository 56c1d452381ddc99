"""Reading git history: full SHAs, release ranges, pending commits, ancestry, grep.

Lists of commits come from one ``git log`` per batch with a format string, never
from loading commit objects one at a time (about 12x faster than GitPython's
``iter_commits``, see LIBRARIES.md). A release range between two SHAs never
changes, so each is kept once computed: in the deploy log (``cache``) and in a
bounded in-memory LRU. Every git command runs through :mod:`backend.repository`.

Nothing here raises for a history problem: a SHA missing from the clone, an
empty repository or no repository at all gives a :class:`Range` whose ``error``
says so in one line (or None from :meth:`History.contains`), and the caller
shows it.
"""

from __future__ import annotations

import heapq
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

from backend.models import Commit
from backend.repository import Done, GitError, GitTimeout, Repository, discover, problem
from backend.text import bytes_need_cleaning, clean_line, decode, short

__all__ = ["FULL_SHA", "GitError", "GrepMatch", "History", "Range", "RangeCache"]

FULL_SHA = re.compile(r"^[0-9a-f]{40}\Z")  # \Z: "$" would accept a trailing newline
PENDING_LIMIT = 1000
# Ranges are computed in chunks of deploys close together in time, each bounded below
# by a common ancestor; past WHOLE_HISTORY_PAIRS ranges, one log of everything is cheaper.
CHUNK_PAIRS = 32
WHOLE_HISTORY_PAIRS = 1000
# Ranges kept in memory (least recently used dropped first). The dashboard shows a
# page of 100 deploys per environment and reloads it on every change to the log, so
# a few thousand covers what anyone scrolls through; every range is in the deploy
# log as well. A range is about 2 KB (a first deploy to a long history can be far
# more), so this is some 8 MB at most in the usual case.
RANGE_CACHE_SIZE = 4096
# Ancestry questions answered with one walk of git's graph each (see contains()).
CONTAINS_CHUNK = 32
GREP_LIMIT = 200  # matching lines returned at most
GREP_TEXT_LIMIT = 500  # characters of each matching line kept
_FORMAT = "--format=%H%x00%P%x00%an%x00%aI%x00%s"


class GrepMatch(NamedTuple):
    """One line ``git grep`` found: its file, its line number (from 1) and its text, cleaned."""

    path: str
    line: int
    text: str


class Range:
    """The commits a deploy shipped (newest first), or why they cannot be shown.

    A range read back from the cache keeps its commits as JSON text and parses them
    only when asked, so `andon log --json` can pass them through untouched.
    """

    __slots__ = ("_commits", "_json", "_size", "error", "first", "truncated")

    def __init__(self, commits: Sequence[Commit] = (), error: str | None = None, first: bool = False,
                 truncated: int = 0, *, commits_json: str | None = None, size: int | None = None) -> None:
        self._commits: tuple[Commit, ...] | None = None if commits_json is not None else tuple(commits)
        self._json = commits_json
        self._size = size if size is not None else (None if self._commits is None else len(self._commits))
        self.error = error
        self.first = first
        self.truncated = truncated

    @property
    def commits(self) -> tuple[Commit, ...]:
        if self._commits is None:
            self._commits = _commits_from_json(self._json or "[]")
        return self._commits

    def commits_json(self) -> str:
        """The commits as a JSON array (what `andon log --json` prints)."""
        if self._json is not None and "\\u" in self._json and self._commits is None:
            # andon writes no \u escapes (control characters are removed before); text
            # that has them came from elsewhere: rebuild it from the cleaned commits.
            self.commits  # noqa: B018 - parse and clean
            self._json = None
        if self._json is None:
            self._json = json.dumps([c.to_json() for c in self.commits], ensure_ascii=False,
                                    separators=(",", ":"))
        return self._json

    @property
    def count(self) -> int | None:
        if self.error:
            return None
        return (self._size if self._size is not None else len(self.commits)) + self.truncated

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Range):
            return NotImplemented
        return (self.commits, self.error, self.first, self.truncated) == (
            other.commits, other.error, other.first, other.truncated)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Range(count={self.count}, error={self.error!r}, first={self.first})"


def _commits_from_json(text: str) -> tuple[Commit, ...]:
    """Commits kept in the log, read back as untrusted text (cleaned; malformed entries dropped)."""
    try:
        items = json.loads(text)
    except ValueError:
        return ()
    commits = []
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict) and all(isinstance(item.get(k), str) for k in ("sha", "author", "date", "subject")):
            commits.append(Commit(clean_line(item["sha"]), clean_line(item["author"]),
                                  clean_line(item["date"]), clean_line(item["subject"])))
    return tuple(commits)


class RangeCache(Protocol):
    """Where computed ranges are kept across processes (the deploy log)."""

    def cached_ranges(
        self, pairs: Iterable[tuple[str | None, str]]
    ) -> dict[tuple[str | None, str], tuple[bool, int, str]]: ...

    def cache_ranges(self, ranges: dict[tuple[str | None, str], tuple[bool, int, str]]) -> None: ...


@dataclass
class _Graph:
    position: dict[str, int] = field(default_factory=dict)
    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    _order: list[str] | None = None
    _breaks: list[int] | None = None

    def straight(self, sha: str, prev: str) -> list[str] | None:
        """``prev..sha`` as a slice of the log's order, when it is a straight line there.

        In topological order a run of single-parent commits usually comes out
        consecutively, each followed by its parent. ``_breaks`` counts, up to each
        position, the places where that is not so; no break between the two
        positions means the range is exactly that slice (found without a walk).
        """
        start, end = self.position.get(sha), self.position.get(prev)
        if start is None or end is None or start >= end:
            return None
        if self._order is None:
            order = sorted(self.position, key=self.position.__getitem__)
            breaks = [0]
            for index, node in enumerate(order):
                parents = self.parents.get(node, ())
                linked = len(parents) == 1 and index + 1 < len(order) and parents[0] == order[index + 1]
                breaks.append(breaks[-1] + (0 if linked else 1))
            self._order, self._breaks = order, breaks
        assert self._breaks is not None
        if self._breaks[end] - self._breaks[start] == 0:
            return self._order[start:end]
        return None


class History:
    """Git history of one repository (``root`` None: no repository, every answer says so).

    ``git_dir`` is the git directory all worktrees of the clone share (where the
    deploy log is by default); ``worktree_git_dir`` this working tree's own (None:
    found from ``root``). Used from several threads at once; :meth:`close` when done.
    """

    def __init__(self, root: Path | None, git_dir: Path | None = None, *,
                 worktree_git_dir: Path | None = None) -> None:
        self.root = root
        self.git_dir = git_dir
        self.cache: RangeCache | None = None  # set once the deploy log is open
        self._repository = Repository(root, worktree_git_dir) if root is not None else None
        self._branches: dict[str | None, str] = {}
        self._cache: OrderedDict[tuple[str | None, str], Range] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def discover(cls, path: Path, *, honour_git_dir: bool = True) -> History:
        """The repository containing ``path``; :class:`GitError` (one line) if there is none.

        One ``git rev-parse``, without GitPython: the dashboard finds its repository
        before its first frame, and importing GitPython there took the frame from
        1.35x to 1.51x the instructions of a bare Textual app (target 1.5x). See
        :func:`backend.repository.discover`, also for ``honour_git_dir``.
        """
        found = discover(path, honour_git_dir=honour_git_dir)
        return cls(found.root, found.common_dir, worktree_git_dir=found.git_dir)

    @property
    def repository(self) -> Repository | None:
        """The git layer of this repository (None without one): ``with history.repository.repo() as repo:``
        lends a GitPython ``Repo`` to this thread."""
        return self._repository

    def close(self) -> None:
        """Close the GitPython ``Repo`` objects (and any helper processes they started)."""
        if self._repository is not None:
            self._repository.close()

    # -- running git ---------------------------------------------------------------

    def _run(self, *args: str, revisions: Sequence[str] = (), stdin: bytes | None = None,
             check: bool = True) -> Done:
        """One git command in this repository (:class:`GitError` if it fails and ``check``)."""
        if self._repository is None:
            raise GitError("not in a git repository")
        return self._repository.run(args, revisions=revisions, stdin=stdin, check=check)

    def user_name(self) -> str | None:
        """git's ``user.name`` as git itself reads it (None if unset or git cannot say).

        ``git config`` rather than GitPython's ``config_reader()``, which reads the
        files itself and so misses what only git knows: ``GIT_CONFIG_GLOBAL``,
        ``GIT_CONFIG_NOSYSTEM``, ``GIT_CONFIG_COUNT``/``-c`` settings, ``includeIf``
        conditions, per-worktree configuration.
        """
        if self._repository is None:
            return None
        try:
            done = self._run("config", "--get", "user.name", check=False)
        except GitError:
            return None
        name = decode(done.stdout).strip()
        return clean_line(name) if done.status == 0 and name else None

    # -- revisions -------------------------------------------------------------------

    def resolve_many(self, revisions: Sequence[str]) -> dict[str, str | None]:
        """Full commit SHAs for revisions (None where not a commit in this clone); one git call.

        :class:`GitError` if git cannot answer at all (it timed out, the repository is gone).
        """
        if self.root is None or not revisions:
            return {revision: None for revision in revisions}
        unique = list(dict.fromkeys(revisions))
        safe = [r for r in unique if r and "\n" not in r and "\r" not in r and not r.startswith("-")]
        result: dict[str, str | None] = {r: None for r in unique}
        if not safe:
            return result
        lines = "".join(f"{r}^{{commit}}\n" for r in safe).encode()
        done = self._run("cat-file", "--batch-check=%(objectname) %(objecttype)", stdin=lines)
        answers = decode(done.stdout).splitlines()
        for revision, answer in zip(safe, answers, strict=False):
            parts = answer.split()
            if len(parts) == 2 and parts[1] == "commit" and FULL_SHA.match(parts[0]):
                result[revision] = parts[0]
        return result

    def resolve(self, revision: str) -> str:
        """One revision as a full SHA, or :class:`GitError` saying why not."""
        if self.root is None:
            if FULL_SHA.match(revision.lower()):
                return revision.lower()
            raise GitError(f"cannot resolve {revision!r}: not in a git repository (give a full SHA)")
        sha = self.resolve_many([revision])[revision]
        if sha is None:
            raise GitError(f"{clean_line(revision)!r} is not a commit in this clone")
        return sha

    def existing(self, shas: Iterable[str]) -> set[str]:
        """Those of ``shas`` that are commits in this clone (:class:`GitError` if git cannot say)."""
        found = self.resolve_many([s for s in shas if s])
        return {sha for sha, full in found.items() if full == sha}

    def branch(self, configured: str | None) -> str | None:
        """The deploy branch as a ref git knows: configured, else origin's HEAD, else the current one.

        The ref found is remembered and only checked again next time (one git call,
        not up to five), and looked for anew if it has gone.
        """
        if self.root is None:
            return None
        try:
            known = self._branches.get(configured)
            if known is not None and self._resolves(known):
                return known
            found = self._find_branch(configured)
        except GitError:
            return None  # git cannot answer now (timed out): pending commits say so when asked
        if found is not None:
            self._branches[configured] = found
        return found

    def _find_branch(self, configured: str | None) -> str | None:
        candidates: list[str] = []
        if configured:
            candidates += [f"refs/heads/{configured}", f"refs/remotes/origin/{configured}", configured]
        else:
            done = self._run("symbolic-ref", "--quiet", "refs/remotes/origin/HEAD", check=False)
            if done.status == 0:
                candidates.append(decode(done.stdout).strip())
            done = self._run("symbolic-ref", "--quiet", "HEAD", check=False)
            if done.status == 0:
                candidates.append(decode(done.stdout).strip())
            candidates += ["refs/heads/main", "refs/heads/master"]
        return next((candidate for candidate in candidates if self._resolves(candidate)), None)

    def _resolves(self, ref: str) -> bool:
        return self._run("rev-parse", "--verify", "--quiet", revisions=[f"{ref}^{{commit}}"], check=False).status == 0

    # -- commits -----------------------------------------------------------------------

    def _log(self, positives: Iterable[str], negatives: Iterable[str] = (), *, limit: int | None = None,
             topo: bool = True, refs: Sequence[str] = ()) -> _Graph:
        """One ``git log`` over ``positives --not negatives``: commits, parents, topo positions.

        ``refs`` are git's own ref options (``--branches``), given on the command line.
        """
        graph = _Graph()
        revs = "".join(f"{p}\n" for p in positives)
        revs += "".join(f"^{n}\n" for n in negatives)
        args = ["log", "-z", _FORMAT, *refs, "--stdin"]
        if topo:
            args.append("--topo-order")
        if limit is not None:
            args.append(f"--max-count={limit}")
        # The revisions go on standard input, where git takes none for an option.
        done = self._run(*args, stdin=revs.encode())
        text = decode(done.stdout)
        fields = text.split("\x00")
        # Clean each field only when the output may hold anything to clean at all
        # (a control, bidi or zero-width character): in the common case it does not.
        dirty = bytes_need_cleaning(done.stdout)
        position, parents_of, commits = graph.position, graph.parents, graph.commits
        for index in range(0, len(fields) - 4, 5):
            sha = fields[index]
            author, date, subject = fields[index + 2], fields[index + 3], fields[index + 4]
            if dirty:
                sha = sha.strip()
                author, date, subject = clean_line(author), clean_line(date), clean_line(subject)
            position[sha] = len(position)
            parents_of[sha] = tuple(fields[index + 1].split())
            commits[sha] = Commit(sha, author, date, subject)
        return graph

    def ranges(self, pairs: Iterable[tuple[str | None, str]], *, compute: bool = True
               ) -> dict[tuple[str | None, str], Range]:
        """Release ranges ``prev..sha`` for many deploys with one ``git log`` for all of them.

        With ``compute=False`` only ranges already known (in memory or in the log) are
        returned, without running git: cheap enough for a first screen.
        """
        wanted = list(dict.fromkeys(pairs))
        result = self._recall(wanted)
        todo = [pair for pair in wanted if pair not in result]
        if not todo:
            return result
        if self.cache is not None:
            kept = self.cache.cached_ranges(todo)
            if kept:
                loaded = {pair: Range(first=first, commits_json=commits, size=count)
                          for pair, (first, count, commits) in kept.items()}
                result.update(loaded)
                self._remember(loaded)
                todo = [pair for pair in todo if pair not in loaded]
        if not todo or not compute:
            return result
        if self.root is None:
            return result | {pair: Range(error="commits unavailable: not in a git repository") for pair in todo}
        try:
            # Optimistic: every SHA is usually in the clone, and asking git about each
            # first costs a third as much as the log itself. git log fails on a missing one.
            computed = self._compute(todo)
        except GitTimeout as error:
            # git hangs (a stalled filesystem): asking again, SHA by SHA, would only wait again.
            computed = {pair: Range(error=f"commits unavailable: {error}") for pair in todo}
        except GitError:
            computed = self._compute_checked(todo)
        result.update(computed)
        good = {pair: found for pair, found in computed.items() if not found.error}
        self._remember(good)
        if self.cache is not None and good:
            self.cache.cache_ranges({pair: (found.first, len(found.commits), found.commits_json())
                                     for pair, found in good.items()})
        return result

    def _recall(self, pairs: list[tuple[str | None, str]]) -> dict[tuple[str | None, str], Range]:
        """The ranges among ``pairs`` kept in memory (each now the most recently used)."""
        found = {}
        with self._lock:
            cache = self._cache
            for pair in pairs:
                kept = cache.get(pair)
                if kept is not None:
                    cache.move_to_end(pair)
                    found[pair] = kept
        return found

    def _remember(self, ranges: dict[tuple[str | None, str], Range]) -> None:
        """Keep ranges in memory, dropping the least recently used beyond RANGE_CACHE_SIZE."""
        if not ranges:
            return
        with self._lock:
            cache = self._cache
            cache.update(ranges)
            for pair in ranges:
                cache.move_to_end(pair)
            while len(cache) > RANGE_CACHE_SIZE:
                cache.popitem(last=False)

    def _compute_checked(self, todo: list[tuple[str | None, str]]) -> dict[tuple[str | None, str], Range]:
        """The ranges whose SHAs are all in this clone, and an explanation for the others."""
        try:
            present = self.existing({s for pair in todo for s in pair if s})
        except GitError as error:
            return {pair: Range(error=f"commits unavailable: {error}") for pair in todo}
        result: dict[tuple[str | None, str], Range] = {}
        computable: list[tuple[str | None, str]] = []
        for prev, sha in todo:
            missing = [s for s in (sha, prev) if s and s not in present]
            if missing:
                result[(prev, sha)] = Range(error=f"commits unavailable: {short(missing[0])} is not in this clone")
            else:
                computable.append((prev, sha))
        if computable:
            try:
                result.update(self._compute(computable))
            except GitError as error:
                result.update({pair: Range(error=f"commits unavailable: {error}") for pair in computable})
        return result

    def commits(self, prev: str | None, sha: str) -> Range:
        return self.ranges([(prev, sha)])[(prev, sha)]

    def _compute(self, pairs: list[tuple[str | None, str]]) -> dict[tuple[str | None, str], Range]:
        if len(pairs) > WHOLE_HISTORY_PAIRS:
            # So many ranges cover most of the history: one log of it all is cheapest.
            return self._compute_batch(pairs, bounded=False)
        result: dict[tuple[str | None, str], Range] = {}
        for start in range(0, len(pairs), CHUNK_PAIRS):
            result.update(self._compute_batch(pairs[start:start + CHUNK_PAIRS], bounded=True))
        return result

    def _whole_history(self, wanted: set[str]) -> _Graph:
        """The graph of every branch, plus whatever of ``wanted`` no branch reaches.

        Handing git ten thousand deploy SHAs as starting points costs far more than
        walking from the few branch heads, which reach nearly all of them anyway.
        """
        heads = ("HEAD", "--branches", "--remotes", "--tags") if self._head_exists() else (
            "--branches", "--remotes", "--tags")
        graph = self._log([], refs=heads)
        missing = sorted(wanted - graph.position.keys())
        if missing:
            # Commits no branch reaches are never parents of branch commits, so
            # placing them first keeps the order topological (children first).
            reached = {parent for parents in graph.parents.values() for parent in parents}
            tips = [sha for sha in graph.position if sha not in reached]
            extra = self._log(missing, tips)
            offset = len(extra.position)
            for sha, index in graph.position.items():
                extra.position[sha] = index + offset
            extra.parents.update(graph.parents)
            extra.commits.update(graph.commits)
            graph = extra
        return graph

    def _head_exists(self) -> bool:
        return self._run("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False).status == 0

    def _shallow(self) -> set[str]:
        """The commits where a shallow clone's history is cut off (their parents are missing)."""
        if self.git_dir is None:
            return set()
        try:
            return set((self.git_dir / "shallow").read_text().split())
        except OSError:
            return set()

    def _compute_batch(self, pairs: list[tuple[str | None, str]], *, bounded: bool) -> dict[tuple[str | None, str], Range]:
        result: dict[tuple[str | None, str], Range] = {}
        firsts = sorted({sha for prev, sha in pairs if prev is None})
        if firsts:
            # A first deploy shows only its own commit: one short log for all of them.
            own = self._log(firsts, topo=False, refs=("--no-walk",)).commits
            result.update({(None, sha): Range((own[sha],) if sha in own else (), first=True) for sha in firsts})
        pairs = [(prev, sha) for prev, sha in pairs if prev is not None]
        if not pairs:
            return result
        shallow = self._shallow()
        prevs = sorted({prev for prev, _ in pairs if prev})
        shas = {sha for _, sha in pairs}
        if bounded:
            boundary: list[str] = []
            if prevs:
                # Every ancestor of a common ancestor of all the previous SHAs is outside
                # every range, so the log can stop there. merge-base --octopus walks once
                # per SHA, so it is only asked about a few deploys close together in time.
                done = self._run("merge-base", "--octopus", revisions=prevs, check=False)
                if done.status == 0:
                    boundary = decode(done.stdout).split()[:1]
            graph = self._log(sorted(shas | set(prevs)), boundary)
        else:
            graph = self._whole_history(shas | set(prevs))
        for prev, sha in pairs:
            assert prev is not None
            found = _walk(graph, sha, prev)
            cut = next((node for node in found if node in shallow), None)
            if cut is not None:
                # The walk reached where this shallow clone's history stops: the range
                # may go on beyond it, so it is not shown (nor kept) as if complete.
                result[(prev, sha)] = Range(error=f"commits unavailable: this clone's history stops at "
                                                  f"{short(cut)} (git fetch --unshallow)")
            else:
                result[(prev, sha)] = Range(tuple(graph.commits[s] for s in found))
        return result

    def pending(self, branch: str | None, live_sha: str | None, configured: str | None = None) -> Range:
        """Commits on the deploy branch that are not live yet (at most PENDING_LIMIT listed)."""
        if self.root is None:
            return Range(error="pending commits unavailable: not in a git repository")
        if branch is None:
            if configured:
                return Range(error=f"pending commits unavailable: the deploy branch {clean_line(configured)!r} "
                                   "is not in this clone (check branch in andon.toml)")
            return Range(error="pending commits unavailable: the deploy branch has no commits yet")
        try:
            if live_sha and not self.existing([live_sha]):
                return Range(error=f"pending commits unavailable: {short(live_sha)} is not in this clone")
            negatives = [live_sha] if live_sha else []
            graph = self._log([branch], negatives, limit=PENDING_LIMIT, topo=True)
            truncated = 0
            if len(graph.commits) == PENDING_LIMIT:
                revisions = [branch] + ([f"^{live_sha}"] if live_sha else [])
                done = self._run("rev-list", "--count", revisions=revisions, check=False)
                if done.status == 0:
                    truncated = max(0, int(decode(done.stdout).strip() or 0) - PENDING_LIMIT)
        except GitError as error:
            return Range(error=f"pending commits unavailable: {error}")
        return Range(tuple(graph.commits.values()), truncated=truncated)

    # -- ancestry ------------------------------------------------------------------------

    def contains(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], bool | None]:
        """For each ``(ancestor, descendant)``: is ``ancestor`` the descendant or one of its ancestors?

        Is the expand commit live (an ancestor of the live SHA)? Is the rollback
        target older than it? Asked in a batch: one ``git cat-file`` for all the
        revisions, then one ``git rev-list`` for up to CONTAINS_CHUNK distinct
        ancestors (and one ``git merge-base`` when there are several), whatever the
        number of descendants. None where either revision is not a commit in this
        clone, or git cannot answer (no repository, a timeout): never an exception.
        """
        wanted = list(dict.fromkeys(pairs))
        result: dict[tuple[str, str], bool | None] = dict.fromkeys(wanted)
        if self.root is None or not wanted:
            return result
        try:
            full = self.resolve_many([revision for pair in wanted for revision in pair])
        except GitError:
            return result
        descendants_of: dict[str, set[str]] = {}
        for ancestor, descendant in wanted:
            a, d = full.get(ancestor), full.get(descendant)
            if a is None or d is None:
                continue
            if a == d:
                result[(ancestor, descendant)] = True
            else:
                descendants_of.setdefault(a, set()).add(d)
        ancestors = sorted(descendants_of)
        reached: dict[tuple[str, str], bool] = {}
        for start in range(0, len(ancestors), CONTAINS_CHUNK):
            chunk = ancestors[start:start + CONTAINS_CHUNK]
            descendants = sorted({d for a in chunk for d in descendants_of[a]})
            try:
                masks = self._reached_from(chunk, descendants)
            except GitError:
                continue  # these stay None: git cannot say
            bits = {d: 1 << index for index, d in enumerate(descendants)}
            for a in chunk:
                for d in descendants_of[a]:
                    reached[(a, d)] = bool(masks.get(a, 0) & bits[d])
        for ancestor, descendant in wanted:
            a, d = full.get(ancestor), full.get(descendant)
            if a is not None and d is not None and (a, d) in reached:
                result[(ancestor, descendant)] = reached[(a, d)]
        return result

    def _reached_from(self, ancestors: list[str], descendants: list[str]) -> dict[str, int]:
        """For commits down to the ancestors: which descendants reach each (bit i: ``descendants[i]``).

        One walk, ``git rev-list --topo-order --parents --boundary descendants
        ^bound``, where ``bound`` is a common ancestor of all the ancestors asked
        about (the ancestor itself when there is one). An ancestor other than
        ``bound`` is a descendant of it, so is never hidden by ``^bound``: it is in
        the walk exactly when some descendant reaches it, and so is every commit on
        the way. ``bound`` itself comes as a boundary commit. Children come before
        their parents, so one pass hands each commit's bits on to its parents.
        """
        bound: str | None = ancestors[0]
        if len(ancestors) > 1:
            done = self._run("merge-base", "--octopus", revisions=ancestors, check=False)
            found = decode(done.stdout).split()
            bound = found[0] if done.status == 0 and found and FULL_SHA.match(found[0]) else None
        revs = "".join(f"{d}\n" for d in descendants) + (f"^{bound}\n" if bound else "")
        done = self._run("rev-list", "--topo-order", "--parents", "--boundary", "--stdin", stdin=revs.encode())
        masks = {d: 1 << index for index, d in enumerate(descendants)}
        for line in decode(done.stdout).splitlines():
            if line.startswith("-"):
                continue  # a boundary commit: reached, but what lies below it is not walked
            shas = line.split()
            mask = masks.get(shas[0], 0) if shas else 0
            if mask:
                for parent in shas[1:]:
                    masks[parent] = masks.get(parent, 0) | mask
        return masks

    # -- searching files -----------------------------------------------------------------

    def grep(self, patterns: Iterable[str], rev: str, *, limit: int = GREP_LIMIT,
             fixed: bool = True) -> list[GrepMatch]:
        """Lines of the files at ``rev`` that hold any of ``patterns``: at most ``limit``, in git's order.

        Fixed strings by default (``fixed=False``: basic regular expressions), case
        sensitive, binary files skipped. One ``git grep``, stopped as soon as
        ``limit`` lines are read. Paths and text are cleaned (text cut to
        GREP_TEXT_LIMIT characters). A pattern may start with ``-``; empty ones,
        and ones holding a newline (which no line can match), are ignored.
        :class:`GitError` (one line) when ``rev`` is not a commit in this clone or
        git fails.
        """
        return [match for match, _ in self._grep(patterns, rev, limit, fixed)]

    def grep_holding(self, patterns: Iterable[str], rev: str, *,
                     limit: int = GREP_LIMIT) -> list[tuple[GrepMatch, tuple[str, ...]]]:
        """:meth:`grep` for fixed strings, each line with the patterns it holds: looked for in
        the whole line as git read it, not in the text kept (cut and cleaned)."""
        wanted = list(dict.fromkeys(patterns))
        return [(match, tuple(p for p in wanted if p and p in line))
                for match, line in self._grep(wanted, rev, limit, True)]

    def _grep(self, patterns: Iterable[str], rev: str, limit: int, fixed: bool) -> list[tuple[GrepMatch, str]]:
        wanted = [p for p in dict.fromkeys(patterns) if p and "\n" not in p and "\x00" not in p]
        if self.root is None:
            raise GitError("cannot search files: not in a git repository")
        # git grep takes a revision starting with "-" for an option (--open-files-in-pager
        # runs a command) and knows no --end-of-options before git 2.44: give it the SHA.
        sha = self.resolve_many([rev])[rev]
        if sha is None:
            raise GitError(f"{clean_line(rev)[:80]!r} is not a commit in this clone")
        if not wanted or limit <= 0:
            return []
        args = ["grep", "-z", "-n", "-I", "--no-color", "--no-column", "--no-recurse-submodules",
                "-F" if fixed else "-G"]
        for pattern in wanted:
            args += ["-e", pattern]
        # Each match is "<sha>:<path>\0<line>\0<text>\n": 2 NULs each. Once the one after
        # the limit has begun, the limit's own text is complete.
        needed = 2 * limit + 1
        seen = 0

        def enough(chunk: bytes) -> bool:
            nonlocal seen
            seen += chunk.count(0)
            return seen >= needed

        assert self._repository is not None
        done = self._repository.run(args, revisions=[sha], paths=[], check=False, stop=enough)
        if not done.stopped and done.status not in (0, 1):  # 1: nothing found
            raise GitError(problem(done.stderr, f"git grep failed (exit status {done.status})"))
        return _grep_matches(done.stdout, sha, limit)


def _grep_matches(output: bytes, sha: str, limit: int) -> list[tuple[GrepMatch, str]]:
    """``git grep -z -n`` output as matches, each with its whole line: paths hold no NUL, a line's text no newline."""
    fields = decode(output).split("\x00")
    prefix = f"{sha}:"
    matches: list[tuple[GrepMatch, str]] = []
    head = fields[0] if fields else ""
    for index in range(1, len(fields) - 1, 2):
        number, rest = fields[index], fields[index + 1]
        text, _, following = rest.partition("\n")
        path = head.removeprefix(prefix)
        if number.isdigit():
            matches.append((GrepMatch(clean_line(path), int(number), clean_line(text[:GREP_TEXT_LIMIT])), text))
            if len(matches) >= limit:
                break
        head = following
    return matches


def _walk(graph: _Graph, sha: str, prev: str) -> list[str]:
    """Commits reachable from ``sha`` but not from ``prev``, newest first.

    Walks the graph in topological order (children before parents) painting
    ancestors of ``sha`` as wanted and ancestors of ``prev`` as not, and stops as
    soon as nothing wanted is left to visit, as git itself does. A parent missing
    from the graph lies behind the batch's boundary, so it is an ancestor of
    every previous SHA: not wanted.
    """
    wanted, unwanted = 1, 2
    position = graph.position
    if sha == prev or sha not in position:
        return []
    line = graph.straight(sha, prev)
    if line is not None:
        return line
    # Fast path, the usual case: a straight line of single-parent commits from sha
    # down to prev. Then nothing else can be reachable from sha but not from prev.
    parents_of = graph.parents
    chain = [sha]
    node = sha
    while True:
        parents = parents_of.get(node, ())
        if len(parents) != 1:
            break
        node = parents[0]
        if node == prev:
            return chain
        if node not in position:
            break
        chain.append(node)
        if len(chain) > 10_000:
            break
    flags = {sha: wanted}
    heap = [(position[sha], sha)]
    if prev in position:
        flags[prev] = unwanted
        heap.append((position[prev], prev))
        heapq.heapify(heap)
    found: list[str] = []
    live_wanted = 1  # queued entries whose flag is exactly "wanted"
    while heap and live_wanted:
        _, node = heapq.heappop(heap)
        flag = flags[node]
        if flag == wanted:
            live_wanted -= 1
            found.append(node)
        for parent in graph.parents.get(node, ()):
            if parent not in position:
                continue
            old = flags.get(parent)
            new = (old or 0) | flag
            if old == new:
                continue
            flags[parent] = new
            if old is None:
                heapq.heappush(heap, (position[parent], parent))
                if new == wanted:
                    live_wanted += 1
            elif old == wanted:
                live_wanted -= 1  # now also an ancestor of prev
    found.sort(key=position.__getitem__)
    return found
