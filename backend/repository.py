"""The git layer: finding the repository, and running every git command andon runs.

Every git call goes through :func:`run`, which sets what each needs whatever the
user's configuration and environment say: plain, predictable output (no pager,
no colours, no signature checks, no quoted paths, the C locale), no prompts, no
replace refs, a timeout (a hung git is killed with everything it started, and
becomes a one-line :class:`GitError` naming the command and the timeout),
``--end-of-options`` before every revision that comes from data, and git's
complaint as one clean line.

Commands run through a GitPython ``Repo``'s command layer (``repo.git.execute``),
one ``Repo`` per thread at a time (:class:`Repository` lends them out and closes
them). GitPython is imported only when the first ``Repo`` is opened: it costs about
100 ms of imports (and a ``git version``). Finding the repository through
``git.Repo(path, search_parent_directories=True)`` before the dashboard's first
frame measured 1.51x the instructions of a bare Textual app (1.63x its wall time;
the target is 1.5x) against 1.35x without it, so :func:`discover` is one
``git rev-parse`` through :func:`run` without a ``Repo``; the dashboard asks git
nothing else before its first frame (``make bench``, README's Performance).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from backend import AndonError
from backend.text import clean_line, decode

if TYPE_CHECKING:
    import git

# Seconds any one git command may take. Reading the whole history of 50,000 commits
# takes about half a second; only a hung git (a stalled network filesystem, a
# blocked lock or pipe) gets near this.
TIMEOUT = 60.0
# git's own options for every command: the user's configuration must not change
# what andon parses or shows.
OPTIONS = ("--no-pager", "-c", "color.ui=never", "-c", "log.showSignature=false", "-c", "core.quotePath=off")
ENVIRONMENT = {
    "GIT_TERMINAL_PROMPT": "0",  # never ask for a password: nobody is there to answer
    "GIT_PAGER": "cat",
    "PAGER": "cat",
    "LC_ALL": "C",  # messages in English, so that the one line shown is predictable
    "LANGUAGE": "C",
    # Replace refs rewrite history as git shows it; a range kept in the log must be the real one.
    "GIT_NO_REPLACE_OBJECTS": "1",
    "GIT_OPTIONAL_LOCKS": "0",  # a dashboard reading must never hold a lock the user's git wants
}
# Commands that do not know ``--end-of-options`` (git grep before 2.44 takes it
# for a revision): revisions given to them must be full object names, which
# cannot be taken for an option.
_NO_END_OF_OPTIONS = frozenset({"grep"})
_HEX = frozenset("0123456789abcdef")
_STDERR_KEPT = 64 * 1024  # bytes of git's complaints kept (only the first lines are shown)
_IDLE_REPOS = 4  # Repos kept open for the next call; more are closed when returned


class GitError(AndonError):
    """A git command failed, or no repository: one line saying why."""


class GitTimeout(GitError):
    """A git command took longer than its timeout and was killed."""


class Done(NamedTuple):
    status: int
    stdout: bytes
    stderr: bytes
    stopped: bool = False  # ``stop`` ended it early; git was killed, ``status`` means nothing


def problem(stderr: bytes | str, fallback: str) -> str:
    """The line of git's complaint that says what went wrong (not the usage hint after it), cleaned."""
    text = stderr if isinstance(stderr, str) else decode(stderr)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    chosen = next((line for line in lines if line.startswith(("fatal:", "error:"))), lines[0] if lines else fallback)
    return clean_line(chosen)[:300]


def executable() -> str:
    """The git command: GitPython's ``GIT_PYTHON_GIT_EXECUTABLE`` if set, as GitPython would run."""
    return os.environ.get("GIT_PYTHON_GIT_EXECUTABLE") or "git"


def environment(changes: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The environment of a git command: ours over the process's, then ``changes`` (None removes)."""
    env = dict(os.environ)
    env.update(ENVIRONMENT)
    for key, value in (changes or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run(
    args: Sequence[str],
    *,
    repo: git.Repo | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str | None] | None = None,
    revisions: Sequence[str] = (),
    paths: Sequence[str] | None = None,
    stdin: bytes | None = None,
    timeout: float | None = None,
    check: bool = True,
    stop: Callable[[bytes], bool] | None = None,
) -> Done:
    """Run ``git OPTIONS args [--end-of-options revisions] [-- paths]``: the one way andon runs git.

    Through ``repo``'s command layer when given (in its working tree), else as a
    plain process in ``cwd`` (finding the repository, before any ``Repo`` exists).
    ``env`` changes the environment (a value of None removes a variable; only
    without ``repo``, whose command layer always starts from ``os.environ``).
    ``revisions`` come from data: they go after ``--end-of-options``, so that one
    starting with ``-`` is never taken for an option. ``stdin`` is written to git
    while its output is read. ``stop`` sees each piece of output as it comes and
    can end the command early (True: git is killed, the output so far returned).

    Raises :class:`GitError` (one line) when git exits non-zero and ``check`` is
    set, cannot be started, or runs longer than ``timeout`` seconds
    (:data:`TIMEOUT` by default; :class:`GitTimeout`: git and every process it
    started are killed, whatever ``check`` says).
    """
    limit = TIMEOUT if timeout is None else timeout
    name = _command_name(args)
    argv = [executable(), *OPTIONS, *args]
    if revisions:
        if name.removeprefix("git ") in _NO_END_OF_OPTIONS:
            bad = next((r for r in revisions if len(r) < 40 or not set(r) <= _HEX), None)
            if bad is not None:
                raise GitError(f"{name}: {clean_line(bad)[:80]!r} is not a full object name")
            argv += revisions
        else:
            argv += ["--end-of-options", *revisions]
    if paths is not None:
        argv += ["--", *paths]
    deadline = time.monotonic() + limit
    proc = _start(argv, repo=repo, cwd=cwd, env=env, stdin=stdin is not None)
    finished = False
    try:
        out, err, stopped, timed_out = _exchange(proc, stdin, deadline, stop)
        if not stopped and not timed_out:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                finished = True
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        if not finished:
            _kill(proc)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with suppress(OSError):
                    stream.close()
    if timed_out:
        raise GitTimeout(f"{name} took longer than {limit:g} s and was stopped")
    status = proc.returncode if finished else -signal.SIGKILL
    if check and not stopped and status != 0:
        raise GitError(problem(err, f"{name} failed (exit status {status})"))
    return Done(status, out, err, stopped)


def _command_name(args: Sequence[str]) -> str:
    """``git <subcommand>``: the first argument that is not a global option (``-c x=y`` included)."""
    index = 0
    while index < len(args) and args[index].startswith("-"):
        index += 2 if args[index] in ("-c", "-C") else 1
    return f"git {args[index]}" if index < len(args) else "git"


def _start(argv: list[str], *, repo: git.Repo | None, cwd: Path | None, env: Mapping[str, str | None] | None,
           stdin: bool) -> subprocess.Popen[bytes]:
    # Its own session: the timeout kills git's whole process group (hooks, helpers,
    # pagers git may start), and git can never open the terminal to ask anything.
    try:
        if repo is not None:
            from git.exc import GitCommandNotFound

            changes = dict(env or {})
            if any(value is None for value in changes.values()):
                raise ValueError("a Repo's command layer cannot remove environment variables")
            try:
                handle = repo.git.execute(argv, istream=subprocess.PIPE if stdin else None, as_process=True,
                                          env={**ENVIRONMENT, **changes}, start_new_session=True)
            except GitCommandNotFound:
                raise GitError("git is not installed (andon needs the git command)") from None
            proc = handle.proc
            assert proc is not None
            handle.proc = None  # ours to wait for and kill now, not the wrapper's on collection
            return proc
        return subprocess.Popen(argv, cwd=cwd, env=environment(env), start_new_session=True,
                                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise GitError("git is not installed (andon needs the git command)") from None
    except OSError as error:
        raise GitError(f"cannot run git: {clean_line(str(error))}") from None


def _exchange(proc: subprocess.Popen[bytes], stdin: bytes | None, deadline: float,
              stop: Callable[[bytes], bool] | None) -> tuple[bytes, bytes, bool, bool]:
    """Write ``stdin`` and read both outputs at once until git closes them, ``stop`` or the deadline.

    Where the system can (Linux), also until git has exited, seen through a pidfd:
    waiting for it with a timeout afterwards would poll, a millisecond or more a call.
    Returns (stdout, stderr, stopped, timed out).
    """
    pidfd = None
    with suppress(AttributeError, OSError):
        pidfd = os.pidfd_open(proc.pid)
    try:
        return _select(proc, stdin, deadline, stop, pidfd)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _select(proc: subprocess.Popen[bytes], stdin: bytes | None, deadline: float,
            stop: Callable[[bytes], bool] | None, pidfd: int | None) -> tuple[bytes, bytes, bool, bool]:
    out: list[bytes] = []
    err: list[bytes] = []
    err_size = 0
    view = memoryview(stdin or b"")
    written = 0
    with selectors.DefaultSelector() as selector:
        if pidfd is not None:
            selector.register(pidfd, selectors.EVENT_READ)
        if proc.stdin is not None:
            if view:
                os.set_blocking(proc.stdin.fileno(), False)
                selector.register(proc.stdin, selectors.EVENT_WRITE)
            else:
                proc.stdin.close()
        assert proc.stdout is not None and proc.stderr is not None
        selector.register(proc.stdout, selectors.EVENT_READ)
        selector.register(proc.stderr, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return b"".join(out), b"".join(err), False, True
            for key, _ in selector.select(remaining):
                if key.fileobj == pidfd:
                    selector.unregister(pidfd)  # git has exited
                    continue
                if key.fileobj is proc.stdin:
                    try:
                        written += os.write(key.fd, view[written:written + 65536])
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        written = len(view)  # git stopped reading (it failed, or needs no more)
                    if written >= len(view):
                        selector.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                elif key.fileobj is proc.stdout:
                    out.append(chunk)
                    if stop is not None and stop(chunk):
                        return b"".join(out), b"".join(err), True, False
                elif err_size < _STDERR_KEPT:
                    err.append(chunk)
                    err_size += len(chunk)
    return b"".join(out), b"".join(err), False, False


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill git and everything it started (its process group), and reap it."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


# -- finding the repository ------------------------------------------------------------------


class Location(NamedTuple):
    root: Path  # the top of the working tree
    git_dir: Path  # this working tree's git directory
    common_dir: Path  # the git directory all worktrees share (where the deploy log goes by default)


def discover(path: Path, *, honour_git_dir: bool = True) -> Location:
    """The repository containing ``path``, found by one ``git rev-parse`` (no GitPython import).

    With ``honour_git_dir``, ``GIT_DIR`` and ``GIT_WORK_TREE`` in the environment
    name the repository as they do for git itself (from inside a git hook, or a
    repository whose git directory is elsewhere); the working tree is then what
    git says: ``GIT_WORK_TREE``, else ``core.worktree``, else ``path``. Without it
    (``--repo`` was given: a path named on the command line wins over the
    environment) they are ignored, so that andon run from a hook of another
    repository reads the one it was pointed at.
    """
    if not path.exists():
        raise GitError(f"{path}: no such directory")
    if not path.is_dir():
        raise GitError(f"{path}: not a directory")
    changes: dict[str, str | None] = {} if honour_git_dir else {"GIT_DIR": None, "GIT_WORK_TREE": None}
    done = run(["rev-parse", "--is-bare-repository", "--absolute-git-dir", "--git-common-dir", "--show-toplevel"],
               cwd=path, env=changes, check=False)
    lines = decode(done.stdout).splitlines()
    if done.status != 0 or len(lines) != 4:
        if lines[:1] == ["true"]:
            raise GitError(f"{path} is a bare repository: andon needs a clone with a working tree")
        if lines[:1] == ["false"]:
            raise GitError(f"{path} is inside a git directory, not a working tree (use --repo)")
        complaint = problem(done.stderr, "")
        if not complaint or "not a git repository" in complaint:
            raise GitError(f"{path} is not inside a git repository (use --repo)")
        raise GitError(f"{path}: {complaint}")
    git_dir, common_dir = Path(lines[1]), Path(lines[2])
    if not common_dir.is_absolute():  # relative to where git ran (git before 2.31 has no --path-format)
        common_dir = (path / common_dir).resolve()
    return Location(Path(lines[3]), git_dir, common_dir)


# -- the Repos that run commands -----------------------------------------------------------


class Repository:
    """One repository's GitPython ``Repo`` objects, lent out one per thread at a time.

    A ``Repo`` shared by several threads hangs (LIBRARIES.md), and the dashboard runs
    git from several workers at once; but Textual starts a new thread for every
    worker, so a ``Repo`` per thread (``threading.local``) would mean a new one for
    every refresh, never closed. Instead a thread borrows a ``Repo`` for the length
    of one call (:meth:`repo`), and gives it back for the next caller: as many
    ``Repo`` objects as git calls running at once, at most :data:`_IDLE_REPOS`
    kept between calls, all closed by :meth:`close` (``Repo.close()`` ends the
    ``git cat-file`` helpers it may have started).
    """

    def __init__(self, root: Path, git_dir: Path | None = None) -> None:
        self.root = root
        self.git_dir = git_dir  # None: found by GitPython from root (the .git directory or file)
        self._lock = threading.Lock()
        self._idle: list[git.Repo] = []
        self._lent: dict[int, git.Repo] = {}
        self._generation = 0

    def _open(self) -> git.Repo:
        try:
            import git as gitpython
        except ImportError as error:  # GitPython missing, or it found no git to run
            raise GitError(f"cannot use GitPython: {clean_line(str(error).splitlines()[0] if str(error) else '')}"
                           ) from None
        try:
            return gitpython.Repo(str(self.git_dir or self.root))
        except (gitpython.exc.GitError, OSError) as error:
            kind = type(error).__name__
            raise GitError(f"{self.root}: not a git repository any more ({kind})") from None

    @contextmanager
    def repo(self) -> Iterator[git.Repo]:
        """A ``Repo`` for this thread alone until the block ends."""
        with self._lock:
            generation = self._generation
            opened = self._idle.pop() if self._idle else None
        if opened is None:
            opened = self._open()
        with self._lock:
            self._lent[id(opened)] = opened
        try:
            yield opened
        finally:
            with self._lock:
                self._lent.pop(id(opened), None)
                keep = generation == self._generation and len(self._idle) < _IDLE_REPOS
                if keep:
                    self._idle.append(opened)
            if not keep:
                opened.close()

    def run(self, args: Sequence[str], *, revisions: Sequence[str] = (), paths: Sequence[str] | None = None,
            stdin: bytes | None = None, timeout: float | None = None, check: bool = True,
            stop: Callable[[bytes], bool] | None = None) -> Done:
        """:func:`run` in this repository, through a borrowed ``Repo``.

        ``GIT_DIR`` and ``GIT_WORK_TREE`` are set to the repository found, whatever
        the environment says, so every command reads the same repository.
        """
        with self.repo() as repo:
            env = {"GIT_DIR": str(repo.git_dir), "GIT_WORK_TREE": str(self.root)}
            return run(args, repo=repo, env=env, revisions=revisions, paths=paths, stdin=stdin, timeout=timeout,
                       check=check, stop=stop)

    def open_repos(self) -> int:
        """How many ``Repo`` objects are open now (idle and lent)."""
        with self._lock:
            return len(self._idle) + len(self._lent)

    def close(self) -> None:
        """Close every idle ``Repo`` now, and each lent one when it is given back."""
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
        for repo in idle:
            repo.close()
