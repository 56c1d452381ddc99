"""Git history against real repositories: resolving, release ranges, pending commits."""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path

import pytest

import backend.history as history_module
from backend import AndonError
from backend.history import GitError, History, Range
from backend.models import Commit
from tests.conftest import Repo, git

MADE_UP = "abc1234" + "0" * 33
CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def one_line(error: BaseException) -> str:
    message = str(error)
    assert isinstance(error, AndonError)
    assert message and "\n" not in message and "\r" not in message and "\x1b" not in message
    return message


def rev_list(repo: Repo, prev: str, sha: str) -> list[str]:
    """What git itself says a release range holds."""
    return repo.git("rev-list", sha, f"^{prev}").split()


def parents_of(repo: Repo) -> dict[str, list[str]]:
    lines = repo.git("rev-list", "--parents", "--all").splitlines()
    return {line.split()[0]: line.split()[1:] for line in lines}


def assert_children_before_parents(shas: list[str], parents: dict[str, list[str]]) -> None:
    index = {sha: number for number, sha in enumerate(shas)}
    for sha in shas:
        for parent in parents[sha]:
            if parent in index:
                assert index[parent] > index[sha], f"{parent[:7]} listed before its child {sha[:7]}"


def commit_file(repo: Repo, name: str, subject: str, date: str) -> str:
    """A commit touching its own file (so branches merge without conflicts), at ``date``."""
    (repo.path / name).write_text(subject + "\n")
    repo.git("add", name)
    git(repo.path, "commit", "--quiet", "-m", subject,
        env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date})
    return repo.head()


def merge(repo: Repo, *revisions: str, date: str) -> str:
    git(repo.path, "merge", "--quiet", "--no-ff", "--no-edit", *revisions,
        env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date})
    return repo.head()


def day(n: int) -> str:
    return f"2026-01-{n:02d}T12:00:00+00:00"


@pytest.fixture
def linear(repo: Repo) -> list[str]:
    """Ten commits on main, oldest first."""
    return [repo.commit(f"linear {n}", date=day(n + 1)) for n in range(10)]


@pytest.fixture
def merges(repo: Repo) -> dict[str, str]:
    """A merge-heavy history: feature branches, a back-merge, an octopus and a criss-cross.

    Several branch commits are dated before their parents, so date order is not topo order.
    """
    c: dict[str, str] = {}
    c["m1"] = commit_file(repo, "m1", "m1", day(1))
    c["m2"] = commit_file(repo, "m2", "m2", day(2))
    repo.git("checkout", "--quiet", "-b", "a")
    c["a1"] = commit_file(repo, "a1", "a1", day(5))
    c["a2"] = commit_file(repo, "a2", "a2", day(3))  # older than its parent
    repo.git("checkout", "--quiet", "-b", "b", c["m2"])
    c["b1"] = commit_file(repo, "b1", "b1", day(4))
    repo.git("checkout", "--quiet", "main")
    c["m3"] = commit_file(repo, "m3", "m3", day(6))
    c["M_a"] = merge(repo, "a", date=day(7))
    repo.git("checkout", "--quiet", "b")
    c["b2"] = commit_file(repo, "b2", "b2", day(2))  # very old date
    c["B_back"] = merge(repo, "main", date=day(8))  # main merged back into b
    repo.git("checkout", "--quiet", "-b", "c", c["m3"])
    c["c1"] = commit_file(repo, "c1", "c1", day(1))
    repo.git("checkout", "--quiet", "main")
    c["m4"] = commit_file(repo, "m4", "m4", day(9))
    c["M_b"] = merge(repo, "b", date=day(10))
    c["M_c"] = merge(repo, "c", date=day(11))
    repo.git("checkout", "--quiet", "-b", "d")
    c["d1"] = commit_file(repo, "d1", "d1", day(12))
    repo.git("checkout", "--quiet", "-b", "e", c["M_c"])
    c["e1"] = commit_file(repo, "e1", "e1", day(12))
    repo.git("checkout", "--quiet", "main")
    c["m5"] = commit_file(repo, "m5", "m5", day(13))
    c["M_oct"] = merge(repo, "d", "e", date=day(14))  # octopus
    repo.git("checkout", "--quiet", "-b", "x")
    c["x1"] = commit_file(repo, "x1", "x1", day(15))
    repo.git("checkout", "--quiet", "-b", "y", c["M_oct"])
    c["y1"] = commit_file(repo, "y1", "y1", day(15))
    repo.git("checkout", "--quiet", "x")
    c["X_y"] = merge(repo, c["y1"], date=day(16))
    repo.git("checkout", "--quiet", "y")
    c["Y_x"] = merge(repo, c["x1"], date=day(16))  # criss-cross with X_y
    repo.git("checkout", "--quiet", "main")
    c["M_x"] = merge(repo, "x", date=day(17))
    c["m6"] = commit_file(repo, "m6", "m6", day(18))
    c["M_y"] = merge(repo, "y", date=day(19))
    assert len(repo.git("rev-list", "--merges", "main").split()) >= 8
    return c


# -- discovering the repository ---------------------------------------------------------------


def test_discover_finds_the_root_from_a_subdirectory(repo: Repo) -> None:
    repo.commit("first")
    sub = repo.path / "src" / "deep"
    sub.mkdir(parents=True)
    found = History.discover(sub)
    assert found.root == repo.path
    assert found.git_dir == repo.path / ".git"


def test_discover_outside_a_repository_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(GitError) as caught:
        History.discover(plain)
    assert one_line(caught.value) == f"{plain} is not inside a git repository (use --repo)"


def test_discover_a_missing_path_or_a_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(GitError) as caught:
        History.discover(tmp_path / "nowhere")
    assert "no such directory" in one_line(caught.value)
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(GitError) as caught:
        History.discover(afile)
    assert "not a directory" in one_line(caught.value)


def test_discover_a_bare_repository_is_refused(tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(bare)], check=True)
    with pytest.raises(GitError) as caught:
        History.discover(bare)
    one_line(caught.value)


# -- resolving revisions -----------------------------------------------------------------------


def test_resolve_short_sha_relative_revision_branch_and_tag(repo: Repo, linear: list[str]) -> None:
    found = History.discover(repo.path)
    assert found.resolve(linear[3][:7]) == linear[3]
    assert found.resolve("HEAD~1") == linear[-2]
    assert found.resolve("main") == linear[-1]
    repo.git("tag", "-a", "v1", "-m", "release one", linear[5])
    assert found.resolve("v1") == linear[5]  # the commit, not the tag object
    assert found.resolve(linear[4].upper()) == linear[4]


def test_resolve_an_unknown_revision_is_one_line(repo: Repo, linear: list[str]) -> None:
    found = History.discover(repo.path)
    with pytest.raises(GitError) as caught:
        found.resolve("no-such-branch")
    assert one_line(caught.value) == "'no-such-branch' is not a commit in this clone"


def test_a_well_formed_sha_that_does_not_exist_is_not_resolved(repo: Repo, linear: list[str]) -> None:
    found = History.discover(repo.path)
    assert found.resolve_many([MADE_UP]) == {MADE_UP: None}
    with pytest.raises(GitError):
        found.resolve(MADE_UP)


def test_a_tree_is_not_a_commit(repo: Repo, linear: list[str]) -> None:
    found = History.discover(repo.path)
    tree = repo.git("rev-parse", "HEAD^{tree}")
    assert found.resolve_many([tree]) == {tree: None}


def test_revisions_that_look_like_options_or_hold_newlines_are_not_resolved(
    repo: Repo, linear: list[str], tmp_path: Path
) -> None:
    found = History.discover(repo.path)
    target = tmp_path / "written.txt"
    nasty = [f"--output={target}", "HEAD\nHEAD~1", "", "main\x1b[31m"]
    assert found.resolve_many(nasty) == {revision: None for revision in nasty}
    for revision in nasty:
        with pytest.raises(GitError) as caught:
            found.resolve(revision)
        one_line(caught.value)
    assert not target.exists()


def test_resolve_many_answers_each_revision_in_one_call(repo: Repo, linear: list[str]) -> None:
    found = History.discover(repo.path)
    answers = found.resolve_many(["HEAD", "nope", linear[0][:8], "HEAD", "HEAD~2"])
    assert answers == {"HEAD": linear[-1], "nope": None, linear[0][:8]: linear[0], "HEAD~2": linear[-3]}
    assert found.existing([linear[1], MADE_UP, linear[1][:7]]) == {linear[1]}


# -- release ranges --------------------------------------------------------------------------------


def test_linear_ranges_equal_git_rev_list(repo: Repo, linear: list[str]) -> None:
    found = History.discover(repo.path)
    pairs = [(prev, sha) for prev, sha in itertools.combinations(linear, 2)]
    ranges = found.ranges(pairs)
    for prev, sha in pairs:
        assert [c.sha for c in ranges[(prev, sha)].commits] == rev_list(repo, prev, sha)
        assert ranges[(prev, sha)].error is None and not ranges[(prev, sha)].first


def test_merge_heavy_ranges_equal_git_rev_list_in_one_batch(repo: Repo, merges: dict[str, str]) -> None:
    found = History.discover(repo.path)
    parents = parents_of(repo)
    shas = list(merges.values())
    pairs = list(itertools.product(shas, shas))
    ranges = found.ranges(pairs)
    assert set(ranges) == set(pairs)
    for prev, sha in pairs:
        listed = [c.sha for c in ranges[(prev, sha)].commits]
        assert len(listed) == len(set(listed))
        assert set(listed) == set(rev_list(repo, prev, sha)), (prev[:7], sha[:7])
        assert_children_before_parents(listed, parents)


def test_merge_heavy_ranges_one_at_a_time_equal_git_rev_list(repo: Repo, merges: dict[str, str]) -> None:
    """Computed alone, each range has a different boundary than in a batch: same answers."""
    parents = parents_of(repo)
    names = ["m2", "a2", "M_a", "B_back", "c1", "M_c", "d1", "M_oct", "X_y", "Y_x", "M_y"]
    for prev_name, sha_name in itertools.product(names, names):
        prev, sha = merges[prev_name], merges[sha_name]
        found = History(repo.path)
        listed = [c.sha for c in found.commits(prev, sha).commits]
        assert set(listed) == set(rev_list(repo, prev, sha)), (prev_name, sha_name)
        assert_children_before_parents(listed, parents)


def test_range_commits_carry_author_date_and_subject(repo: Repo) -> None:
    first = repo.commit("first")
    second = repo.commit("second thing", author="Ada Lovelace", date="2026-02-03T04:05:06+00:00")
    found = History.discover(repo.path).commits(first, second)
    assert found.commits == (Commit(second, "Ada Lovelace", "2026-02-03T04:05:06+00:00", "second thing"),)
    assert found.count == 1


def test_a_rollback_range_is_empty(repo: Repo, linear: list[str]) -> None:
    found = History.discover(repo.path).commits(linear[8], linear[3])
    assert rev_list(repo, linear[8], linear[3]) == []
    assert found == Range(())
    assert found.count == 0


def test_redeploying_the_same_sha_ships_nothing(repo: Repo, linear: list[str]) -> None:
    assert History.discover(repo.path).commits(linear[4], linear[4]).commits == ()


def test_a_first_deploy_lists_only_its_own_commit(repo: Repo, linear: list[str]) -> None:
    found = History.discover(repo.path).commits(None, linear[5])
    assert found.first and found.error is None
    assert [c.sha for c in found.commits] == [linear[5]]
    assert found.commits[0].subject == "linear 5"


def test_a_first_deploy_behind_the_batch_boundary_is_still_found(repo: Repo, linear: list[str]) -> None:
    """With prev SHAs in the batch, the one git log stops at their common ancestor."""
    found = History.discover(repo.path)
    ranges = found.ranges([(linear[7], linear[9]), (None, linear[1])])
    assert [c.sha for c in ranges[(None, linear[1])].commits] == [linear[1]]
    assert ranges[(None, linear[1])].first
    assert [c.sha for c in ranges[(linear[7], linear[9])].commits] == [linear[9], linear[8]]


def test_a_sha_missing_from_the_clone_gives_an_error_not_an_exception(repo: Repo, linear: list[str]) -> None:
    found = History.discover(repo.path)
    ranges = found.ranges([(linear[2], MADE_UP), (MADE_UP, linear[2]), (None, MADE_UP), (linear[1], linear[2])])
    for pair in [(linear[2], MADE_UP), (MADE_UP, linear[2]), (None, MADE_UP)]:
        assert ranges[pair].error == "commits unavailable: abc1234 is not in this clone"
        assert ranges[pair].count is None and ranges[pair].commits == ()
    assert [c.sha for c in ranges[(linear[1], linear[2])].commits] == [linear[2]]  # others unaffected


def test_a_force_pushed_away_commit_gives_an_error(repo: Repo) -> None:
    base = repo.commit("base")
    gone = repo.commit("pushed then force-pushed away")
    repo.git("reset", "--quiet", "--hard", "HEAD~1")
    repo.git("reflog", "expire", "--expire=now", "--all")
    repo.git("gc", "--quiet", "--prune=now", "--aggressive")
    assert subprocess.run(["git", "-C", str(repo.path), "cat-file", "-e", f"{gone}^{{commit}}"],
                          capture_output=True).returncode != 0
    found = History.discover(repo.path)
    assert found.commits(base, gone).error == f"commits unavailable: {gone[:7]} is not in this clone"
    assert found.pending("refs/heads/main", gone).error == (
        f"pending commits unavailable: {gone[:7]} is not in this clone"
    )


def test_ranges_are_cached_and_not_recomputed(repo: Repo, linear: list[str], tmp_path: Path) -> None:
    found = History.discover(repo.path)
    first = found.commits(linear[2], linear[6])
    assert len(first.commits) == 4
    # Without its .git directory no git command can answer: only the cache can.
    (repo.path / ".git").rename(tmp_path / "moved-git")
    assert found.commits(linear[2], linear[6]) is first
    assert found.ranges([(linear[2], linear[6])])[(linear[2], linear[6])] is first
    assert History(repo.path).commits(linear[2], linear[6]).error  # a fresh one cannot


# -- pending commits -----------------------------------------------------------------------------


def test_pending_lists_branch_commits_after_the_live_sha(repo: Repo, linear: list[str]) -> None:
    found = History.discover(repo.path)
    branch = found.branch("main")
    assert branch == "refs/heads/main"
    pending = found.pending(branch, linear[6])
    assert [c.sha for c in pending.commits] == linear[:6:-1]
    assert pending.count == 3 and pending.error is None


def test_pending_without_a_live_sha_is_the_whole_branch(repo: Repo, linear: list[str]) -> None:
    found = History.discover(repo.path)
    pending = found.pending(found.branch(None), None)
    assert [c.sha for c in pending.commits] == linear[::-1]


def test_pending_when_the_tip_is_live_is_empty(repo: Repo, linear: list[str]) -> None:
    found = History.discover(repo.path)
    assert found.pending("refs/heads/main", linear[-1]).count == 0


def test_pending_beyond_the_limit_is_truncated_with_a_count(
    repo: Repo, linear: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history_module, "PENDING_LIMIT", 3)
    pending = History.discover(repo.path).pending("refs/heads/main", linear[1])
    assert [c.sha for c in pending.commits] == linear[:-4:-1]
    assert pending.truncated == 5 and pending.count == 8


def test_pending_on_a_merge_heavy_branch_equals_git_rev_list(repo: Repo, merges: dict[str, str]) -> None:
    found = History.discover(repo.path)
    pending = found.pending("refs/heads/main", merges["M_c"])
    assert {c.sha for c in pending.commits} == set(rev_list(repo, merges["M_c"], "main"))
    assert_children_before_parents([c.sha for c in pending.commits], parents_of(repo))


def test_branch_prefers_configured_then_origin_head_then_current(repo: Repo, linear: list[str],
                                                                 tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(repo.path), str(clone)], check=True)
    git(clone, "checkout", "--quiet", "-b", "feature")
    found = History.discover(clone)
    assert found.branch(None) == "refs/remotes/origin/main"  # origin's HEAD, not the checkout
    assert found.branch("main") == "refs/heads/main"
    git(clone, "branch", "--quiet", "-D", "main")
    assert found.branch("main") == "refs/remotes/origin/main"
    assert found.branch("does-not-exist") is None
    assert found.branch("--output=x") is None


# -- repositories without history ----------------------------------------------------------------


def test_an_empty_repository_gives_errors_not_exceptions(repo: Repo) -> None:
    found = History.discover(repo.path)
    assert found.branch(None) is None
    assert found.pending(found.branch(None), None).error == (
        "pending commits unavailable: the deploy branch has no commits yet"
    )
    assert found.commits(None, MADE_UP).error == "commits unavailable: abc1234 is not in this clone"
    with pytest.raises(GitError) as caught:
        found.resolve("HEAD")
    one_line(caught.value)


def test_no_repository_answers_every_question_with_an_error(linear: list[str]) -> None:
    nowhere = History(None)
    assert nowhere.commits(linear[0], linear[1]).error == "commits unavailable: not in a git repository"
    assert nowhere.pending("refs/heads/main", None).error == (
        "pending commits unavailable: not in a git repository"
    )
    assert nowhere.branch("main") is None
    assert nowhere.user_name() is None
    assert nowhere.resolve_many(["HEAD"]) == {"HEAD": None}
    assert nowhere.resolve(MADE_UP.upper()) == MADE_UP  # a full SHA is taken as given
    for revision in ("HEAD", MADE_UP + "\n", MADE_UP[:39]):
        with pytest.raises(GitError) as caught:
            nowhere.resolve(revision)
        one_line(caught.value)


def test_user_name_comes_from_git_config(repo: Repo) -> None:
    assert History.discover(repo.path).user_name() == "Test Author"


# -- untrusted commit text --------------------------------------------------------------------------


def commit_message(repo: Repo, message: bytes) -> str:
    """A commit whose message is exactly these bytes (``git commit -F``)."""
    (repo.path / "file.txt").write_bytes(message[:20] + b"\n")
    repo.git("add", "file.txt")
    message_file = repo.path.parent / "message.txt"
    message_file.write_bytes(message)
    repo.git("commit", "--quiet", "--allow-empty", "--cleanup=verbatim", "-F", str(message_file))
    return repo.head()


def raw_commit(repo: Repo, author: bytes, message: bytes) -> str:
    """A commit object written byte for byte (git commit would repair invalid UTF-8)."""
    tree = repo.git("write-tree")
    parent = repo.head()
    body = (f"tree {tree}\nparent {parent}\n".encode() + b"author " + author + b" 1700000000 +0000\n"
            b"committer C <c@example.com> 1700000000 +0000\n\n" + message)
    done = subprocess.run(["git", "-C", str(repo.path), "hash-object", "-t", "commit", "-w", "--stdin"],
                          input=body, capture_output=True, check=True)
    sha = done.stdout.decode().strip()
    repo.git("update-ref", "refs/heads/main", sha)
    return sha


def test_untrusted_subjects_come_back_literal_without_escape_sequences(repo: Repo) -> None:
    base = repo.commit("base")
    shas = {
        "markup-close": commit_message(repo, b"fix [/] parsing\n"),
        "markup-style": commit_message(repo, b"[bold red]hello\n"),
        "ansi": commit_message(repo, b"\x1b[31mred\x1b[0m\n"),
        "osc": commit_message(repo, b"title \x1b]0;pwned\x07here\n"),
        "long-body": commit_message(repo, b"long body\n\n" + b"line of body\n" * 10_000),
        "latin1": commit_message(repo, b"bad \xff byte\n"),
        "raw": raw_commit(repo, b"\x1b[31mEvil\x1b[0m <e@example.com>", b"raw \xff\xfe byte \x1b[2J\n"),
    }
    found = History.discover(repo.path)
    for listing in (found.pending("refs/heads/main", base).commits,
                    found.commits(base, shas["raw"]).commits):
        by_sha = {c.sha: c for c in listing}
        assert set(by_sha) == set(shas.values())
        for commit in listing:
            assert not CONTROLS.search(commit.subject) and not CONTROLS.search(commit.author)
        assert by_sha[shas["markup-close"]].subject == "fix [/] parsing"
        assert by_sha[shas["markup-style"]].subject == "[bold red]hello"
        assert by_sha[shas["ansi"]].subject == "red"
        assert by_sha[shas["osc"]].subject == "title here"
        assert by_sha[shas["long-body"]].subject == "long body"
        # git itself repairs invalid UTF-8 in `git commit` (as Latin-1); either way, no crash.
        assert by_sha[shas["latin1"]].subject.startswith("bad ")
        assert by_sha[shas["raw"]].subject == "raw \ufffd\ufffd byte "
        assert by_sha[shas["raw"]].author == "Evil"


def test_a_subject_spanning_lines_becomes_one_line(repo: Repo) -> None:
    base = repo.commit("base")
    sha = commit_message(repo, b"first line\nsecond line of the same paragraph\n\nbody\n")
    subject = History.discover(repo.path).commits(base, sha).commits[0].subject
    assert "\n" not in subject and subject.startswith("first line")


def test_bidi_and_zero_width_characters_are_removed_from_commits(repo: Repo) -> None:
    """Text that reads differently on screen than in git: no control character, so only a
    test of the output for these characters too (bytes_need_cleaning) finds them."""
    base = repo.commit("base")
    sha = commit_message(repo, "fix \u202egnp.exe\u202c and \u200bhidden\ufeff\n".encode())
    raw = raw_commit(repo, "Zero\u200dWidth <z@example.com>".encode(), "plain \u2066isolate\u2069\n".encode())
    found = History.discover(repo.path)
    for listing in (found.commits(base, raw).commits, found.pending("refs/heads/main", base).commits):
        by_sha = {c.sha: c for c in listing}
        assert by_sha[sha].subject == "fix gnp.exe and hidden"
        assert by_sha[raw].subject == "plain isolate"
        assert by_sha[raw].author == "ZeroWidth"
