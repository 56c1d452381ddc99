"""The git layer against real repositories: discovery, identity, ancestry, grep, options, timeouts, Repos."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import backend.history as history_module
import backend.repository as repository
from backend import AndonError
from backend.history import GitError, GrepMatch, History
from backend.repository import GitTimeout, discover, run
from backend.store import DeployLog
from backend.world import resolve_world
from tests.conftest import Repo
from tests.test_history import MADE_UP, merges  # noqa: F401 - merges is a fixture

PROJECT = Path(__file__).resolve().parent.parent


def one_line(error: BaseException) -> str:
    message = str(error)
    assert isinstance(error, AndonError)
    assert message and "\n" not in message and "\r" not in message and "\x1b" not in message
    return message


def children() -> dict[int, str]:
    """This process's live child processes, pid -> command line (from /proc, every thread's)."""
    found: dict[int, str] = {}
    for listing in Path("/proc/self/task").glob("*/children"):
        try:
            pids = listing.read_text().split()
        except OSError:
            continue
        for pid in pids:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                found[int(pid)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


def git_children() -> dict[int, str]:
    return {pid: cmd for pid, cmd in children().items() if " cat-file " in f" {cmd} " or cmd.startswith("git")}


def processes_running(argv: list[str]) -> list[int]:
    """Live processes (anyone's) whose command line is exactly ``argv``."""
    wanted = "\0".join(argv).encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == wanted:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def linear(repo: Repo) -> list[str]:
    return [repo.commit(f"linear {n}") for n in range(6)]


# -- discovery ------------------------------------------------------------------------------------


def test_discovery_from_a_subfolder_names_the_root_and_both_git_directories(repo: Repo, linear: list[str]) -> None:
    sub = repo.path / "a" / "b"
    sub.mkdir(parents=True)
    found = discover(sub)
    assert found == (repo.path, repo.path / ".git", repo.path / ".git")
    history = History.discover(sub)
    assert history.root == repo.path and history.git_dir == repo.path / ".git"
    assert history.resolve("HEAD") == linear[-1]
    history.close()


def test_a_worktree_shares_the_clones_git_directory_and_its_deploy_log(
    repo: Repo, linear: list[str], tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    repo.git("worktree", "add", "--quiet", "-b", "feature", str(tree), linear[2])
    found = discover(tree / ".")
    assert found.root == tree
    assert found.git_dir == repo.path / ".git" / "worktrees" / "tree"
    assert found.common_dir == repo.path / ".git"
    in_tree = resolve_world(tree)
    in_clone = resolve_world(repo.path)
    assert in_tree.db_path == in_clone.db_path == repo.path / ".git" / "andon" / "deploys.db"
    # git reads the worktree's own HEAD, and the clone's shared history.
    assert in_tree.history.resolve("HEAD") == linear[2]
    assert in_tree.history.branch(None) == "refs/heads/feature"
    assert [c.sha for c in in_tree.history.commits(linear[0], linear[-1]).commits] == linear[:0:-1]
    in_tree.close()
    in_clone.close()


def test_a_bare_repository_is_refused_in_one_line(tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(bare)], check=True)
    (bare / "refs" / "deep").mkdir()
    for where in (bare, bare / "refs" / "deep"):
        with pytest.raises(GitError) as caught:
            History.discover(where)
        assert one_line(caught.value) == f"{where} is a bare repository: andon needs a clone with a working tree"
    with pytest.raises(GitError) as caught:
        resolve_world(bare)
    assert one_line(caught.value).startswith(f"--repo {bare}: ")


def test_inside_the_git_directory_of_a_clone_is_one_line(repo: Repo, linear: list[str]) -> None:
    with pytest.raises(GitError) as caught:
        History.discover(repo.path / ".git")
    assert one_line(caught.value) == f"{repo.path / '.git'} is inside a git directory, not a working tree (use --repo)"


def test_git_dir_in_the_environment_names_the_repository_when_no_repo_is_given(
    repo: Repo, linear: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("GIT_DIR", str(repo.path / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(repo.path))
    world = resolve_world(None, tmp_path / "d.db")
    assert world.history.root == repo.path
    assert world.history.git_dir == repo.path / ".git"
    assert world.history.resolve("HEAD") == linear[-1]
    assert world.history.commits(linear[1], linear[3]).count == 2
    world.close()
    # Without GIT_WORK_TREE the working tree is where andon runs, as for git itself.
    monkeypatch.delenv("GIT_WORK_TREE")
    world = resolve_world(None, tmp_path / "d.db")
    assert (world.history.root, world.history.git_dir) == (elsewhere, repo.path / ".git")
    assert world.history.pending("refs/heads/main", linear[3]).count == 2
    world.close()


def test_repo_on_the_command_line_wins_over_git_dir_in_the_environment(
    repo: Repo, linear: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As from a git hook of another repository: GIT_DIR is set, --repo names the clone to read."""
    other = Repo(tmp_path / "other")
    other.commit("the other repository")
    monkeypatch.setenv("GIT_DIR", str(other.path / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other.path))
    world = resolve_world(repo.path, tmp_path / "d.db")
    assert world.history.root == repo.path and world.history.git_dir == repo.path / ".git"
    # Every later git call reads the repository found, not the one in the environment.
    assert world.history.resolve("HEAD") == linear[-1]
    assert world.history.commits(linear[0], linear[2]).count == 2
    assert world.history.pending(world.history.branch(None), linear[4]).count == 1
    world.close()


# -- identity ---------------------------------------------------------------------------------------


def test_who_is_the_user_name_in_the_repositorys_config(repo: Repo, tmp_path: Path) -> None:
    repo.commit("first")
    repo.git("config", "user.name", "Repo \x1b[31mPerson")
    world = resolve_world(repo.path, tmp_path / "d.db")
    assert world.who() == "Repo Person"
    world.close()


def test_who_reads_user_name_as_git_does_from_git_config_global(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIT_CONFIG_GLOBAL names the global file (GitPython's config_reader() reads ~/.gitconfig)."""
    repo.git("config", "--unset", "user.name")
    global_file = tmp_path / "global.gitconfig"
    global_file.write_text("[user]\n\tname = Global Person\n")
    (Path(os.environ["HOME"]) / ".gitconfig").write_text("[user]\n\tname = Home Person\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(global_file))
    world = resolve_world(repo.path, tmp_path / "d.db")
    assert world.who() == "Global Person"
    world.close()


# -- ancestry ------------------------------------------------------------------------------------------


def test_contains_answers_a_batch_as_git_merge_base_does(repo: Repo, merges: dict[str, str]) -> None:  # noqa: F811
    history = History.discover(repo.path)
    shas = list(merges.values())
    pairs = list(itertools.product(shas, shas))
    answers = history.contains(pairs)
    assert set(answers) == set(pairs)
    for ancestor, descendant in pairs:
        expected = subprocess.run(["git", "-C", str(repo.path), "merge-base", "--is-ancestor", ancestor, descendant],
                                  capture_output=True).returncode == 0
        assert answers[(ancestor, descendant)] is expected, (ancestor[:7], descendant[:7])
    history.close()


def test_contains_uses_a_few_git_calls_for_many_pairs(
    repo: Repo, merges: dict[str, str], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    history = History.discover(repo.path)
    calls: list[list[str]] = []
    real = repository.run

    def counted(args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(list(args))
        return real(args, **kwargs)

    monkeypatch.setattr(repository, "run", counted)
    expand = merges["a1"]
    lives = [merges[name] for name in ("m2", "M_a", "M_b", "M_oct", "M_y", "b1")]
    # "Is the expand commit live in each environment?": one ancestor, many descendants.
    answers = history.contains([(expand, live) for live in lives])
    assert [answers[(expand, live)] for live in lives] == [False, True, True, True, True, False]
    assert [call[0] for call in calls] == ["cat-file", "rev-list"]
    calls.clear()
    # Every pair of 20 commits: 400 questions, three calls.
    shas = list(merges.values())[:20]
    history.contains(list(itertools.product(shas, shas)))
    assert [call[0] for call in calls] == ["cat-file", "merge-base", "rev-list"]
    history.close()


def test_contains_is_none_for_what_is_not_a_commit_in_this_clone(repo: Repo, linear: list[str],
                                                                  tmp_path: Path) -> None:
    history = History.discover(repo.path)
    tree = repo.git("rev-parse", "HEAD^{tree}")
    target = tmp_path / "written"
    pairs = [(MADE_UP, linear[-1]), (linear[0], MADE_UP), (tree, linear[-1]), (f"--output={target}", linear[-1]),
             (linear[0], "-h"), (linear[1], linear[4]), (linear[4], linear[1]), ("HEAD~5", "main"), (MADE_UP, MADE_UP)]
    assert history.contains(pairs) == {
        (MADE_UP, linear[-1]): None, (linear[0], MADE_UP): None, (tree, linear[-1]): None,
        (f"--output={target}", linear[-1]): None, (linear[0], "-h"): None,
        (linear[1], linear[4]): True, (linear[4], linear[1]): False, ("HEAD~5", "main"): True, (MADE_UP, MADE_UP): None,
    }
    assert not target.exists()
    assert History(None).contains([(linear[0], linear[1])]) == {(linear[0], linear[1]): None}
    history.close()


# -- grep ------------------------------------------------------------------------------------------------


def test_grep_finds_lines_at_a_revision_with_paths_and_clean_text(repo: Repo, tmp_path: Path) -> None:
    (repo.path / "src").mkdir()
    (repo.path / "src" / "schema é.sql").write_bytes(b"ALTER TABLE users -- users-split-name\nselect 1;\n")
    (repo.path / "app.py").write_bytes("# users-split-name \x1b[31mclean\u202eup\x1b[0m\nok = True\n".encode())
    (repo.path / "blob.bin").write_bytes(b"\0users-split-name\0")
    repo.git("add", "-A")
    repo.git("commit", "--quiet", "-m", "expand")
    before = repo.head()
    (repo.path / "app.py").write_text("ok = True\n")
    repo.git("commit", "--quiet", "-am", "contract")
    history = History.discover(repo.path)
    assert history.grep(["users-split-name"], before) == [
        GrepMatch("app.py", 1, "# users-split-name cleanup"),
        GrepMatch("src/schema é.sql", 1, "ALTER TABLE users -- users-split-name"),
    ]
    assert history.grep(["users-split-name"], "HEAD") == [
        GrepMatch("src/schema é.sql", 1, "ALTER TABLE users -- users-split-name")]
    assert history.grep(["nowhere"], "HEAD") == []
    assert history.grep(["SELECT"], "HEAD") == []  # case sensitive
    assert history.grep(["sel.ct"], "HEAD") == []  # fixed strings
    assert history.grep(["sel.ct"], "HEAD", fixed=False) == [GrepMatch("src/schema é.sql", 2, "select 1;")]
    with pytest.raises(GitError) as caught:
        history.grep(["x"], MADE_UP)
    assert one_line(caught.value) == f"'{MADE_UP}' is not a commit in this clone"
    history.close()


def test_grep_stops_at_its_limit(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    (repo.path / "many.txt").write_text("".join(f"match {n}\n" for n in range(100_000)))
    (repo.path / "long.txt").write_text("match " + "x" * 100_000 + "\n")
    repo.git("add", "-A")
    repo.git("commit", "--quiet", "-m", "many")
    history = History.discover(repo.path)
    outputs: list[repository.Done] = []
    real = repository.run

    def recorded(args, **kwargs):  # type: ignore[no-untyped-def]
        outputs.append(real(args, **kwargs))
        return outputs[-1]

    monkeypatch.setattr(repository, "run", recorded)
    found = history.grep(["match"], "HEAD", limit=7)
    assert [(m.path, m.line) for m in found] == [("long.txt", 1)] + [("many.txt", n) for n in range(1, 7)]
    assert len(found[0].text) == history_module.GREP_TEXT_LIMIT
    # git was stopped once it had said enough, not read to the end (some 5 MB).
    assert outputs[-1].stopped and len(outputs[-1].stdout) < 1_000_000
    assert len(history.grep(["match"], "HEAD")) == history_module.GREP_LIMIT
    assert len(history.grep(["match 9999"], "HEAD", limit=1000)) == 11  # 9999, 99990-99999
    assert not outputs[-1].stopped
    history.close()


def test_grep_patterns_may_start_with_a_dash(repo: Repo) -> None:
    (repo.path / "notes.txt").write_text("--output=x\n-e\nplain\n")
    repo.git("add", "-A")
    repo.git("commit", "--quiet", "-m", "dashes")
    history = History.discover(repo.path)
    assert history.grep(["--output=x", "-e"], "HEAD") == [GrepMatch("notes.txt", 1, "--output=x"),
                                                         GrepMatch("notes.txt", 2, "-e")]
    assert history.grep(["", "a\nb"], "HEAD") == []
    history.close()


# -- revisions from data never become options ----------------------------------------------------------


def test_a_revision_starting_with_a_dash_is_never_an_option(repo: Repo, linear: list[str], tmp_path: Path) -> None:
    target = tmp_path / "written.txt"
    marker = tmp_path / "ran"
    (repo.path / "file.txt").write_text("hello\n")
    history = History.discover(repo.path)
    nasty = [f"--output={target}", f"--open-files-in-pager=touch {marker}", f"-O touch {marker}", "-h"]
    for revision in nasty:
        with pytest.raises(GitError) as caught:
            history.grep(["hello", "change"], revision)
        one_line(caught.value)
        assert history.resolve_many([revision]) == {revision: None}
        assert history.contains([(revision, linear[-1]), (linear[0], revision)]) == {
            (revision, linear[-1]): None, (linear[0], revision): None}
        assert history.commits(revision, linear[-1]).error
        assert history.commits(linear[0], revision).error
        assert history.pending(revision, None).error
        assert history.pending("refs/heads/main", revision).error
        assert history.branch(revision) is None
    # The one function that runs git: revisions go after --end-of-options.
    with pytest.raises(GitError):
        run(["log", "-1", "--format=%H"], cwd=repo.path, revisions=[f"--output={target}"])
    with pytest.raises(GitError):
        run(["merge-base", "--octopus"], cwd=repo.path, revisions=["--output=x", linear[0]])
    assert run(["rev-list", "--count"], cwd=repo.path, revisions=[linear[3]]).stdout.strip() == b"4"
    assert not target.exists() and not marker.exists()
    history.close()


# -- timeouts ------------------------------------------------------------------------------------------


@pytest.fixture
def hung_objects(repo: Repo) -> Iterator[None]:
    """Every git command that reads objects hangs, as on a stalled filesystem.

    The clone's alternates file becomes a FIFO: git blocks opening it until someone
    opens the other end. Every few seconds a thread does (if a git is waiting), so
    that a git left running without a timeout ends late instead of hanging the test.
    """
    fifo = repo.path / ".git" / "objects" / "info" / "alternates"
    fifo.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(fifo)
    done = threading.Event()

    def release() -> None:
        while not done.wait(6):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass  # nobody waiting

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    yield
    done.set()
    thread.join()


def test_a_hung_git_is_killed_at_its_timeout_and_said_in_one_line(
    repo: Repo, linear: list[str], monkeypatch: pytest.MonkeyPatch, hung_objects: None
) -> None:
    history = History.discover(repo.path)
    monkeypatch.setattr(repository, "TIMEOUT", 0.5)
    before = git_children()
    started = time.monotonic()
    found = history.commits(linear[1], linear[4])
    assert found.error == "commits unavailable: git merge-base took longer than 0.5 s and was stopped"
    with pytest.raises(GitTimeout) as caught:
        history.resolve("HEAD")
    assert one_line(caught.value) == "git cat-file took longer than 0.5 s and was stopped"
    assert history.pending("refs/heads/main", None).error == (
        "pending commits unavailable: git log took longer than 0.5 s and was stopped")
    assert history.contains([(linear[0], linear[1])]) == {(linear[0], linear[1]): None}
    elapsed = time.monotonic() - started
    assert elapsed < 4, elapsed  # four timeouts, not a git released after six seconds
    assert git_children() == before  # killed and reaped
    history.close()


def test_a_timeout_kills_what_git_started_too(tmp_path: Path) -> None:
    """A real slow command: a shell alias running sleep, a grandchild of andon."""
    sleeper = ["sleep", "7.25"]
    started = time.monotonic()
    with pytest.raises(GitTimeout) as caught:
        run(["-c", f"alias.slow=!{' '.join(sleeper)}", "slow"], cwd=tmp_path, timeout=0.5)
    assert time.monotonic() - started < 5
    assert one_line(caught.value) == "git slow took longer than 0.5 s and was stopped"
    deadline = time.monotonic() + 5
    while processes_running(sleeper) and time.monotonic() < deadline:
        time.sleep(0.05)  # killed; its new parent reaps it
    assert processes_running(sleeper) == []


def test_git_failing_is_its_first_fatal_line_cleaned(repo: Repo) -> None:
    with pytest.raises(GitError) as caught:
        run(["rev-parse", "--verify", "no-such-\x1b[31mref"], cwd=repo.path)
    assert one_line(caught.value) == "fatal: Needed a single revision"
    with pytest.raises(GitError) as caught:
        run(["log", "-1"], cwd=repo.path, revisions=["no-such-\x1b[2Jref"])
    assert "\x1b" not in one_line(caught.value) and one_line(caught.value).startswith("fatal: ")


# -- Repos: one per thread at a time, all closed -------------------------------------------------------


def test_closing_history_ends_every_repos_cat_file_helpers(repo: Repo, linear: list[str]) -> None:
    history = History.discover(repo.path)
    assert history.repository is not None
    before = git_children()
    together = threading.Barrier(3)
    errors: list[BaseException] = []

    def use() -> None:
        try:
            assert history.repository is not None
            with history.repository.repo() as lent:
                together.wait(timeout=10)  # three threads, three Repos at once
                assert lent.commit("HEAD").message == "linear 5\n"  # starts git cat-file helpers
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=use) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    helpers = {pid: cmd for pid, cmd in git_children().items() if pid not in before}
    assert len(helpers) >= 3 and all("cat-file" in cmd for cmd in helpers.values())
    assert history.repository.open_repos() == 3
    history.close()
    assert history.repository.open_repos() == 0
    assert git_children() == before


def test_world_close_closes_the_history_repos(repo: Repo, linear: list[str], tmp_path: Path) -> None:
    world = resolve_world(repo.path, tmp_path / "d.db")
    before = git_children()
    assert world.history.repository is not None
    with world.history.repository.repo() as lent:
        lent.commit("HEAD").hexsha  # noqa: B018 - starts a cat-file helper
    assert len(git_children()) > len(before)
    world.close()
    assert git_children() == before
    assert world.history.repository.open_repos() == 0


def test_history_works_from_many_threads_at_once(repo: Repo, linear: list[str]) -> None:
    history = History.discover(repo.path)
    results: list[object] = []
    together = threading.Barrier(6)

    def ask(n: int) -> None:
        together.wait(timeout=10)
        for _ in range(5):
            results.append((n, history.commits(linear[0], linear[n % 5 + 1]).count, history.resolve("HEAD")))
            history._cache.clear()  # compute again every time

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == sorted((n, n % 5 + 1, linear[-1]) for n in range(6) for _ in range(5))
    assert history.repository is not None and history.repository.open_repos() <= repository._IDLE_REPOS
    history.close()


def test_a_history_still_answers_after_close(repo: Repo, linear: list[str]) -> None:
    history = History.discover(repo.path)
    assert history.resolve("HEAD") == linear[-1]
    history.close()
    assert history.resolve("HEAD~1") == linear[-2]
    history.close()
    assert history.repository is not None and history.repository.open_repos() == 0


# -- the in-memory range cache --------------------------------------------------------------------------


def test_the_in_memory_range_cache_keeps_the_most_recently_used(
    repo: Repo, linear: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history_module, "RANGE_CACHE_SIZE", 3)
    history = History.discover(repo.path)
    pairs = [(linear[0], sha) for sha in linear[1:]]  # five ranges
    first = history.commits(*pairs[0])
    for pair in pairs[1:3]:
        history.commits(*pair)
    assert history.commits(*pairs[0]) is first  # used again: now the most recent
    history.ranges(pairs[3:])  # two more: the two least recently used go
    assert list(history._cache) == [pairs[0], pairs[3], pairs[4]]
    assert history.commits(*pairs[0]) is first
    assert history.commits(*pairs[1]) is not None and len(history._cache) == 3
    history.close()


def test_the_range_cache_is_bounded_by_default() -> None:
    assert 1000 <= history_module.RANGE_CACHE_SIZE <= 10_000


# -- the first frame does not wait for GitPython --------------------------------------------------------


def test_finding_the_world_and_the_first_screen_do_not_import_gitpython(repo: Repo, linear: list[str],
                                                                       tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    log = DeployLog.open(db)
    log.record("prod", linear[1], "succeeded", who="ci")
    log.record("prod", linear[4], "succeeded", who="ci")
    log.close()
    world = resolve_world(repo.path, db)
    world.keep_ranges(world.log.deploys("prod"))  # as andon record does
    world.close()
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from backend.world import resolve_world\n"
        "from backend.report import log_json\n"
        "from tui.first_screen import load_first_screen\n"
        f"world = resolve_world(Path({str(repo.path)!r}), Path({str(db)!r}))\n"
        "first = load_first_screen(world)\n"
        "assert first.deploys and all(r.count is not None for r in first.ranges.values()), first\n"
        "assert '\"commits\":[{' in log_json(world)\n"
        "assert 'git' not in sys.modules, 'GitPython imported'\n"
        "world.history.resolve('HEAD')\n"
        "assert 'git' in sys.modules\n"
        "world.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_git_missing_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GitError) as caught:
        discover(tmp_path)
    assert one_line(caught.value) == "git is not installed (andon needs the git command)"

