"""Migration markers read from real commits: trailers, one walk, masks checked against git itself."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import pytest

from backend.history import History
from backend.markers import MIGRATION_NAME, Marker, Scan, scan
from tests.conftest import Repo, git

MADE_UP = "abc1234" + "0" * 33


def day(n: int, hour: int = 12) -> str:
    return f"2026-01-{n:02d}T{hour:02d}:00:00+00:00"


def commit(repo: Repo, name: str, message: str, date: str, *args: str) -> str:
    """A commit touching its own file (branches merge cleanly), written with ``git commit -m``."""
    (repo.path / name).write_text(message + "\n")
    repo.git("add", name)
    git(repo.path, "commit", "--quiet", "-m", message, *args,
        env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date})
    return repo.head()


def merge(repo: Repo, revision: str, date: str, message: str) -> str:
    git(repo.path, "merge", "--quiet", "--no-ff", "-m", message, revision,
        env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date})
    return repo.head()


def read(repo: Repo, tips: list[str], **options: float) -> Scan:
    history = History.discover(repo.path)
    try:
        return scan(history, tips, **options)
    finally:
        history.close()


def steps(found: Scan) -> list[tuple[str, str, str]]:
    return [(m.sha, m.name, m.step) for m in found.markers]


def contained(found: Scan, tip: str) -> set[tuple[str, str, str]]:
    return {(m.sha, m.name, m.step) for bit, m in enumerate(found.markers) if found.masks[tip] >> bit & 1}


def is_ancestor(repo: Repo, ancestor: str, descendant: str) -> bool:
    done = subprocess.run(["git", "-C", str(repo.path), "merge-base", "--is-ancestor", ancestor, descendant],
                          check=False)
    assert done.returncode in (0, 1)
    return done.returncode == 0


def test_trailers_of_real_commits_become_markers_oldest_first(repo: Repo) -> None:
    base = commit(repo, "a", "init", day(1))
    expand = commit(repo, "b", "users: read both name shapes\n\nWhy it is safe.\n\n"
                               "Migration: users-split-name expand\nMigration-Kind: database\n"
                               "Migration-Refs: User.full_name, full_name =", day(2))
    plain = commit(repo, "c", "unrelated work", day(3))
    contract = commit(repo, "d", "users: drop full_name\n\nMigration: users-split-name contract", day(4, 9))
    found = read(repo, ["main"])
    assert found.error is None and found.problems == () and found.missing == frozenset()
    head = repo.head()
    assert found.markers == (
        Marker(expand, "users-split-name", "expand", "database", ("User.full_name", "full_name ="),
               "2026-01-02T12:00:00+00:00"),
        Marker(contract, "users-split-name", "contract", None, (), "2026-01-04T09:00:00+00:00"),
    )
    assert found.masks[head] == found.masks["main"] == 0b11
    assert base != plain  # the other commits carry nothing


def test_a_later_committer_date_in_another_timezone_sorts_by_the_instant(repo: Repo) -> None:
    commit(repo, "a", "init", day(1))
    # 10:00+02:00 is 08:00 UTC: older than the next commit's 09:00 UTC although it reads later.
    first = commit(repo, "b", "one\n\nMigration: first expand", "2026-01-02T10:00:00+02:00")
    second = commit(repo, "c", "two\n\nMigration: second expand", "2026-01-02T09:00:00+00:00")
    found = read(repo, ["main"])
    assert [m.sha for m in found.markers] == [first, second]


def test_trailers_added_by_git_itself_and_matched_without_regard_to_case(repo: Repo) -> None:
    commit(repo, "a", "init", day(1))
    added = commit(repo, "b", "orders: both totals", day(2), "--trailer", "Migration: orders-totals expand",
                   "--trailer", "migration-kind: CONFIG")
    # git interpret-trailers writes the message; -F commits it as written. A folded line unfolds.
    message = subprocess.run(["git", "interpret-trailers", "--trailer", "MIGRATION: cache-v2", "--trailer",
                              "Migration-Refs: old_cache"], input="cache: new layout\n\nbody\n",
                             capture_output=True, text=True, check=True).stdout
    message = message.replace("MIGRATION: cache-v2", "MIGRATION: cache-v2\n  Expand")
    (repo.path / "message.txt").write_text(message)
    folded = commit(repo, "c", "placeholder", day(3))
    git(repo.path, "commit", "--quiet", "--amend", "-F", str(repo.path / "message.txt"),
        env={"GIT_COMMITTER_DATE": day(3)})
    folded = repo.head()
    found = read(repo, ["main"])
    assert found.problems == ()
    assert [(m.sha, m.name, m.step, m.kind, m.refs) for m in found.markers] == [
        (added, "orders-totals", "expand", "config", ()),
        (folded, "cache-v2", "expand", None, ("old_cache",)),
    ]


def test_a_trailer_outside_the_last_paragraph_is_not_a_marker(repo: Repo) -> None:
    commit(repo, "a", "init", day(1))
    commit(repo, "b", "Migration: in-the-subject expand", day(2))
    commit(repo, "c", "subject\n\nMigration: in-the-body expand\n\nThe last paragraph is prose.", day(3))
    found = read(repo, ["main"])
    assert found.markers == () and found.problems == ()


def test_two_migrations_in_one_commit_share_its_kind_and_refs(repo: Repo) -> None:
    commit(repo, "a", "init", day(1))
    sha = commit(repo, "b", "two at once\n\nMigration: alpha expand\nMigration-Kind: infrastructure\n"
                            "Migration: beta expand\nMigration-Refs: old_a\nMigration-Refs: old_b, old_a\n"
                            "Migration: alpha expand", day(2))
    found = read(repo, [sha])
    assert found.problems == ()
    assert found.markers == (
        Marker(sha, "alpha", "expand", "infrastructure", ("old_a", "old_b"), "2026-01-02T12:00:00+00:00"),
        Marker(sha, "beta", "expand", "infrastructure", ("old_a", "old_b"), "2026-01-02T12:00:00+00:00"),
    )
    assert found.masks[sha] == 0b11


MALFORMED = [
    ("Migration:", "no migration name or step"),
    ("Migration: audit-log", "no step after the name"),
    ("Migration: expand", "no migration name before 'expand'"),
    ("Migration: orders split totals expand", "the migration name holds spaces"),
    ("Migration: orders split totals", "expected 'Migration: <name> expand'"),
    ("Migration: search-reindex migrate", "unknown step 'migrate'"),
    ("Migration: [bold]sessions[/] expand", "bad migration name '[bold]sessions[/]'"),
    ("Migration: -leading-dash expand", "bad migration name '-leading-dash'"),
    ("Migration: " + "n" * 81 + " expand", "longer than 80 characters"),
]


@pytest.mark.parametrize(("trailer", "problem"), MALFORMED)
def test_a_malformed_trailer_is_a_problem_and_the_rest_still_counts(repo: Repo, trailer: str, problem: str) -> None:
    commit(repo, "a", "init", day(1))
    good = commit(repo, "b", "good\n\nMigration: good-one expand", day(2))
    bad = commit(repo, "c", f"bad\n\n{trailer}\nMigration: other-one contract", day(3))
    found = read(repo, ["main"])
    assert found.error is None
    assert steps(found) == [(good, "good-one", "expand"), (bad, "other-one", "contract")]
    assert len(found.problems) == 1
    (got,) = found.problems
    assert got.sha == bad and got.text == trailer.rstrip() and problem in got.problem
    assert "\n" not in got.problem and len(got.text) <= 200


def test_the_longest_name_allowed_is_80_characters(repo: Repo) -> None:
    commit(repo, "a", "init", day(1))
    commit(repo, "b", "long\n\nMigration: " + "n" * 80 + " expand", day(2))
    found = read(repo, ["main"])
    assert [m.name for m in found.markers] == ["n" * 80] and found.problems == ()
    assert MIGRATION_NAME.match("a.b_c-D9") and not MIGRATION_NAME.match("a b") and not MIGRATION_NAME.match("x\n")


def test_kind_and_refs_problems_keep_the_marker(repo: Repo) -> None:
    commit(repo, "a", "init", day(1))
    unknown = commit(repo, "b", "one\n\nMigration: one expand\nMigration-Kind: spaceship", day(2))
    two = commit(repo, "c", "two\n\nMigration: two expand\nMigration-Kind: config\nMigration-Kind: database", day(3))
    empty = commit(repo, "d", "three\n\nMigration: three expand\nMigration-Refs: , ,", day(4))
    alone = commit(repo, "e", "four\n\nMigration-Kind: config\nMigration-Refs: old", day(5))
    found = read(repo, ["main"])
    assert [(m.name, m.kind) for m in found.markers] == [("one", None), ("two", None), ("three", None)]
    problems = {(p.sha, p.text): p.problem for p in found.problems}
    assert "unknown migration kind 'spaceship'" in problems[(unknown, "Migration-Kind: spaceship")]
    assert "two different migration kinds in one commit: config and database" in problems[
        (two, "Migration-Kind: database")]
    assert "names no pattern" in problems[(empty, "Migration-Refs: , ,")]
    assert "without a Migration: trailer" in problems[(alone, "Migration-Kind: config")]
    assert "without a Migration: trailer" in problems[(alone, "Migration-Refs: old")]
    assert len(found.problems) == 5


def test_escape_sequences_in_trailers_are_problems_shown_clean(repo: Repo) -> None:
    commit(repo, "a", "init", day(1))
    sha = commit(repo, "b", "evil\n\nMigration: users\x1b[2J\x1b]8;;http://x\x07 expand\n"
                            "Migration-Kind: config\x1b[31m\nMigration: fine expand\n"
                            "Migration-Refs: old\x1b[0m_name, \u202eflipped", day(2))
    found = read(repo, ["main"])
    assert [(m.name, m.kind, m.refs) for m in found.markers] == [("fine", None, ("old_name", "flipped"))]
    assert [p.text for p in found.problems] == ["Migration: users expand", "Migration-Kind: config"]
    assert all("escape sequences or control characters" in p.problem and p.sha == sha for p in found.problems)
    for text in [p.text + p.problem for p in found.problems] + [r for m in found.markers for r in m.refs]:
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text


def test_the_repository_trailer_separators_do_not_change_what_is_read(repo: Repo) -> None:
    commit(repo, "a", "init", day(1))
    repo.git("config", "trailer.separators", ":=")
    commit(repo, "b", "x\n\nMigration= sneaky expand", day(2))
    sha = commit(repo, "c", "y\n\nMigration: real expand", day(3))
    assert "sneaky" in repo.git("log", "--format=%(trailers:key=Migration)")  # git itself would read it
    found = read(repo, ["main"])
    assert steps(found) == [(sha, "real", "expand")] and found.problems == ()


@pytest.fixture
def branches(repo: Repo) -> dict[str, str]:
    """A main line, a feature branch merged back, a cherry-picked expand on a release branch.

    Some branch commits are dated before their parents (date order is not ancestry).
    """
    c: dict[str, str] = {}
    c["root"] = commit(repo, "root", "root\n\nMigration: from-root expand", day(1))
    c["expand"] = commit(repo, "e", "expand\n\nMigration: users-split expand", day(3))
    repo.git("checkout", "--quiet", "-b", "feature")
    c["f1"] = commit(repo, "f1", "f1\n\nMigration: feature-flag expand\nMigration-Kind: config", day(2))
    c["f2"] = commit(repo, "f2", "f2", day(4))
    repo.git("checkout", "--quiet", "main")
    c["m1"] = commit(repo, "m1", "m1\n\nMigration: orders expand", day(5))
    c["merge"] = merge(repo, "feature", day(6), "Merge feature\n\nMigration: merged expand")
    c["contract"] = commit(repo, "c", "contract\n\nMigration: users-split contract", day(7))
    repo.git("checkout", "--quiet", "-b", "release", c["root"])
    git(repo.path, "cherry-pick", "-x", c["expand"], env={"GIT_COMMITTER_DATE": day(8)})
    c["picked"] = repo.head()
    c["release"] = commit(repo, "r", "release fix", day(9))
    repo.git("checkout", "--quiet", "main")
    return c


def test_a_cherry_pick_is_a_second_marker_and_each_branch_sees_its_own(repo: Repo, branches: dict[str, str]) -> None:
    c = branches
    found = read(repo, [c["contract"], c["release"], c["m1"], c["root"]])
    assert found.problems == ()
    assert sorted(steps(found)) == sorted([
        (c["expand"], "users-split", "expand"), (c["f1"], "feature-flag", "expand"), (c["m1"], "orders", "expand"),
        (c["contract"], "users-split", "contract"), (c["picked"], "users-split", "expand"),
        (c["root"], "from-root", "expand"), (c["merge"], "merged", "expand")])
    root = (c["root"], "from-root", "expand")
    assert contained(found, c["release"]) == {(c["picked"], "users-split", "expand"), root}
    assert contained(found, c["m1"]) == {(c["expand"], "users-split", "expand"), (c["m1"], "orders", "expand"), root}
    assert {(c["f1"], "feature-flag", "expand"), (c["merge"], "merged", "expand")} <= contained(found, c["contract"])
    assert contained(found, c["root"]) == {root}
    assert [m.kind for m in found.markers if m.name == "feature-flag"] == ["config"]


def test_every_mask_agrees_with_git_merge_base_is_ancestor(repo: Repo, branches: dict[str, str]) -> None:
    tips = list(branches.values())
    found = read(repo, tips)
    assert len(found.markers) == 7
    for tip, (bit, marker) in itertools.product(tips, enumerate(found.markers)):
        assert bool(found.masks[tip] >> bit & 1) == is_ancestor(repo, marker.sha, tip), (tip, marker)


def test_a_tip_missing_from_the_clone_is_reported_and_the_others_answered(repo: Repo,
                                                                          branches: dict[str, str]) -> None:
    c = branches
    blob = repo.git("rev-parse", "HEAD:c")
    found = read(repo, [c["contract"], MADE_UP, "no-such-branch", blob, "", c["release"]])
    assert found.error is None
    assert found.missing == frozenset({MADE_UP, "no-such-branch", blob})
    assert set(found.masks) == {c["contract"], c["release"]}
    assert contained(found, c["release"]) == {(c["picked"], "users-split", "expand"), (c["root"], "from-root", "expand")}
    assert len(found.markers) == 7


def test_a_tip_force_pushed_away_is_missing(repo: Repo) -> None:
    commit(repo, "a", "init", day(1))
    gone = commit(repo, "b", "gone\n\nMigration: lost expand", day(2))
    repo.git("reset", "--quiet", "--hard", "HEAD~1")
    repo.git("reflog", "expire", "--expire=now", "--all")
    repo.git("gc", "--quiet", "--prune=now")
    found = read(repo, [gone, "main"])
    assert found.missing == frozenset({gone}) and found.markers == () and found.error is None


def test_tips_named_by_branch_short_sha_or_annotated_tag_are_keyed_both_ways(repo: Repo) -> None:
    commit(repo, "a", "init", day(1))
    sha = commit(repo, "b", "x\n\nMigration: m expand", day(2))
    repo.git("tag", "-a", "-m", "v1", "v1")
    tag = repo.git("rev-parse", "v1")
    assert tag != sha
    found = read(repo, ["main", sha[:10], tag])
    assert found.masks == {"main": 1, sha[:10]: 1, sha: 1, tag: 1} and found.missing == frozenset()


def test_no_tips_no_walk(repo: Repo) -> None:
    commit(repo, "a", "x\n\nMigration: m expand", day(1))
    assert read(repo, []) == Scan((), (), {}, frozenset(), None)


def test_no_repository_is_an_error_not_an_exception(repo: Repo) -> None:
    found = scan(History(None), ["main"])
    assert found.error == "migration markers unavailable: not in a git repository"
    assert found.markers == () and found.masks == {}


def test_a_repository_gone_is_one_line(repo: Repo) -> None:
    sha = commit(repo, "a", "x\n\nMigration: m expand", day(1))
    history = History.discover(repo.path)
    try:
        shutil.rmtree(repo.path / ".git")
        found = scan(history, [sha, "main"])
    finally:
        history.close()
    assert found.error is not None and found.error.startswith("migration markers unavailable: ")
    assert "\n" not in found.error and found.markers == ()


def test_a_git_log_over_its_time_is_stopped_and_said_in_one_line(repo: Repo) -> None:
    sha = commit(repo, "a", "x\n\nMigration: m expand", day(1))
    found = read(repo, [sha], timeout=0.0)
    assert found.error == "migration markers unavailable: git log took longer than 0 s and was stopped"
    assert found.markers == ()


def test_a_shallow_clone_scans_what_it_has(repo: Repo, tmp_path: Path) -> None:
    commit(repo, "a", "old\n\nMigration: old expand", day(1))
    commit(repo, "b", "mid", day(2))
    head = commit(repo, "c", "new\n\nMigration: new expand", day(3))
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "--quiet", "--depth", "2", f"file://{repo.path}", str(shallow))
    history = History.discover(shallow)
    try:
        found = scan(history, [head])
    finally:
        history.close()
    assert [m.name for m in found.markers] == ["new"] and found.masks[head] == 1 and found.error is None
