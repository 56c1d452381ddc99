"""Reading git history: full SHAs, release ranges, pending commits.

Lists of commits come from one ``git log`` per batch with a format string, never
from loading commit objects one at a time (about 12x faster than GitPython's
``iter_commits``, see LIBRARIES.md). A release range between two SHAs never
changes, so each is computed once per process and cached.

Nothing here raises for a history problem: a SHA missing from the clone, an
empty repository or no repository at all gives a :class:`Range` whose ``error``
says so in one line, and the caller shows it.
"""

from __future__ import annotations

import heapq
import os
import re
import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from backend import AndonError
from backend.models import Commit
from backend.text import clean_line, decode, short

FULL_SHA = re.compile(r"^[0-9a-f]{40}\Z")  # \Z: "$" would accept a trailing newline
PENDING_LIMIT = 1000
_FORMAT = "--format=%H%x00%P%x00%an%x00%aI%x00%s"
# Keep git's output plain and predictable whatever the user's configuration says.
_GIT = ("git", "-c", "log.showSignature=false", "-c", "color.ui=never", "-c", "core.quotePath=off")


class GitError(AndonError):
    pass


@dataclass(frozen=True)
class Range:
    """The commits a deploy shipped (newest first), or why they cannot be shown."""

    commits: tuple[Commit, ...] = ()
    error: str | None = None
    first: bool = False  # no previous deploy: only the deployed commit itself
    truncated: int = 0  # commits beyond a limit that are not listed

    @property
    def count(self) -> int | None:
        return None if self.error else len(self.commits) + self.truncated


@dataclass
class _Graph:
    position: dict[str, int] = field(default_factory=dict)
    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GIT_TERMINAL_PROMPT="0", GIT_PAGER="cat", LC_ALL="C")
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    return env


class History:
    """Git history of one repository (``root`` None: no repository, every answer says so)."""

    def __init__(self, root: Path | None, git_dir: Path | None = None) -> None:
        self.root = root
        self.git_dir = git_dir
        self._cache: dict[tuple[str | None, str], Range] = {}
        self._lock = threading.Lock()

    @classmethod
    def discover(cls, path: Path) -> History:
        """The repository containing ``path``; :class:`GitError` if there is none."""
        if not path.exists():
            raise GitError(f"{path}: no such directory")
        if not path.is_dir():
            raise GitError(f"{path}: not a directory")
        try:
            done = subprocess.run(
                ["git", "-C", str(path), "rev-parse", "--show-toplevel", "--git-common-dir"],
                capture_output=True, env=_git_env(), check=False,
            )
        except FileNotFoundError:
            raise GitError("git is not installed (andon needs the git command)") from None
        if done.returncode != 0:
            raise GitError(f"{path} is not inside a git repository (use --repo)")
        lines = decode(done.stdout).splitlines()
        if len(lines) != 2:
            raise GitError(f"{path}: a bare repository has no working tree (use a clone)")
        root = Path(lines[0])
        git_dir = Path(lines[1])
        if not git_dir.is_absolute():
            git_dir = (path / git_dir).resolve()
        return cls(root, git_dir)

    # -- running git ---------------------------------------------------------------

    def _run(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        assert self.root is not None
        return subprocess.run(
            [*_GIT, "-C", str(self.root), *args],
            input=stdin, capture_output=True, env=_git_env(), check=False,
        )

    def user_name(self) -> str | None:
        if self.root is None:
            return None
        done = self._run("config", "user.name")
        name = decode(done.stdout).strip()
        return clean_line(name) if done.returncode == 0 and name else None

    # -- revisions -------------------------------------------------------------------

    def resolve_many(self, revisions: Sequence[str]) -> dict[str, str | None]:
        """Full commit SHAs for revisions (None where not a commit in this clone); one git call."""
        if self.root is None or not revisions:
            return {revision: None for revision in revisions}
        unique = list(dict.fromkeys(revisions))
        safe = [r for r in unique if r and "\n" not in r and not r.startswith("-")]
        lines = "".join(f"{r}^{{commit}}\n" for r in safe).encode()
        done = self._run("cat-file", "--batch-check=%(objectname) %(objecttype)", stdin=lines)
        answers = decode(done.stdout).splitlines() if done.returncode == 0 else []
        result: dict[str, str | None] = {r: None for r in unique}
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
        found = self.resolve_many([s for s in shas if s])
        return {sha for sha, full in found.items() if full == sha}

    def branch(self, configured: str | None) -> str | None:
        """The deploy branch as a ref git knows: configured, else origin's HEAD, else the current one."""
        if self.root is None:
            return None
        candidates: list[str] = []
        if configured:
            candidates += [f"refs/heads/{configured}", f"refs/remotes/origin/{configured}", configured]
        else:
            done = self._run("symbolic-ref", "--quiet", "refs/remotes/origin/HEAD")
            if done.returncode == 0:
                candidates.append(decode(done.stdout).strip())
            done = self._run("symbolic-ref", "--quiet", "HEAD")
            if done.returncode == 0:
                candidates.append(decode(done.stdout).strip())
            candidates += ["refs/heads/main", "refs/heads/master"]
        for candidate in candidates:
            done = self._run("rev-parse", "--verify", "--quiet", "--end-of-options", f"{candidate}^{{commit}}")
            if done.returncode == 0:
                return candidate
        return None

    # -- commits -----------------------------------------------------------------------

    def _log(self, positives: Iterable[str], negatives: Iterable[str] = (), *, limit: int | None = None,
             topo: bool = True) -> _Graph:
        """One ``git log`` over ``positives --not negatives``: commits, parents, topo positions."""
        graph = _Graph()
        revs = "".join(f"{p}\n" for p in positives)
        revs += "".join(f"^{n}\n" for n in negatives)
        args = ["log", "-z", _FORMAT, "--stdin"]
        if topo:
            args.append("--topo-order")
        if limit is not None:
            args.append(f"--max-count={limit}")
        done = self._run(*args, stdin=revs.encode())
        if done.returncode != 0:
            raise GitError(clean_line(decode(done.stderr).strip().splitlines()[-1] if done.stderr else "git log failed"))
        fields = done.stdout.split(b"\x00")
        for index in range(0, len(fields) - 4, 5):
            sha = fields[index].decode("ascii", "replace").strip()
            parents = tuple(fields[index + 1].decode("ascii", "replace").split())
            graph.position[sha] = len(graph.position)
            graph.parents[sha] = parents
            graph.commits[sha] = Commit(
                sha,
                clean_line(decode(fields[index + 2])),
                decode(fields[index + 3]),
                clean_line(decode(fields[index + 4])),
            )
        return graph

    def ranges(self, pairs: Iterable[tuple[str | None, str]]) -> dict[tuple[str | None, str], Range]:
        """Release ranges ``prev..sha`` for many deploys with one ``git log`` for all of them."""
        wanted = list(dict.fromkeys(pairs))
        with self._lock:
            result = {pair: self._cache[pair] for pair in wanted if pair in self._cache}
        todo = [pair for pair in wanted if pair not in result]
        if not todo:
            return result
        if self.root is None:
            return result | {pair: Range(error="commits unavailable: not in a git repository") for pair in todo}
        present = self.existing({s for pair in todo for s in pair if s})
        computable: list[tuple[str | None, str]] = []
        for prev, sha in todo:
            missing = [s for s in (sha, prev) if s and s not in present]
            if missing:
                result[(prev, sha)] = Range(
                    error=f"commits unavailable: {short(missing[0])} is not in this clone"
                )
            else:
                computable.append((prev, sha))
        if computable:
            try:
                computed = self._compute(computable)
            except GitError as error:
                computed = {pair: Range(error=f"commits unavailable: {error}") for pair in computable}
            result.update(computed)
            with self._lock:
                self._cache.update(computed)
        return result

    def commits(self, prev: str | None, sha: str) -> Range:
        return self.ranges([(prev, sha)])[(prev, sha)]

    def _compute(self, pairs: list[tuple[str | None, str]]) -> dict[tuple[str | None, str], Range]:
        prevs = sorted({prev for prev, _ in pairs if prev})
        shas = {sha for _, sha in pairs}
        boundary: list[str] = []
        if prevs:
            # Every ancestor of a common ancestor of all the previous SHAs is outside
            # every range, so the one log can stop there.
            done = self._run("merge-base", "--octopus", *prevs)
            if done.returncode == 0:
                boundary = decode(done.stdout).split()[:1]
        graph = self._log(sorted(shas | set(prevs)), boundary)
        result: dict[tuple[str | None, str], Range] = {}
        for prev, sha in pairs:
            if prev is None:
                commit = graph.commits.get(sha)
                if commit is None:  # sha is behind the boundary
                    commit = self._log([sha], limit=1, topo=False).commits.get(sha)
                result[(prev, sha)] = Range((commit,) if commit else (), first=True)
            else:
                result[(prev, sha)] = Range(tuple(graph.commits[s] for s in _walk(graph, sha, prev)))
        return result

    def pending(self, branch: str | None, live_sha: str | None) -> Range:
        """Commits on the deploy branch that are not live yet (at most PENDING_LIMIT listed)."""
        if self.root is None:
            return Range(error="pending commits unavailable: not in a git repository")
        if branch is None:
            return Range(error="pending commits unavailable: the deploy branch has no commits yet")
        if live_sha and not self.existing([live_sha]):
            return Range(error=f"pending commits unavailable: {short(live_sha)} is not in this clone")
        negatives = [live_sha] if live_sha else []
        try:
            graph = self._log([branch], negatives, limit=PENDING_LIMIT, topo=True)
        except GitError as error:
            return Range(error=f"pending commits unavailable: {error}")
        truncated = 0
        if len(graph.commits) == PENDING_LIMIT:
            args = ["rev-list", "--count", branch] + ([f"^{live_sha}"] if live_sha else [])
            done = self._run(*args)
            if done.returncode == 0:
                truncated = max(0, int(decode(done.stdout).strip() or 0) - PENDING_LIMIT)
        return Range(tuple(graph.commits.values()), truncated=truncated)


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
