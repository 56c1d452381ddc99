"""Held commits (issue 10, part A): a real rollback holds the reverted deploy's commits; a redeploy
of them is refused until a ``git revert`` of each is in the SHA or a person releases them. Real
git repositories, a real SQLite log, ``andon`` as real processes, the rollback's runner too."""

from __future__ import annotations

import json
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend import AndonError
from backend.held import blocking, held, hold_reverted, release
from backend.models import SUCCEEDED
from backend.repository import GitError
from backend.store import DeployLog
from backend.store.line import Rollback
from backend.world import World, resolve_world
from tests.conftest import Repo, one_line
from tests.test_cli import andon, fails, ok, toml_list
from tests.test_migrations import GitCalls, git_calls  # noqa: F401 - the fixture
from tests.test_rollback import ROLLBACK_SCRIPT

PY = sys.executable
T0 = datetime.now(UTC) - timedelta(days=1)
ENV = "production"


class Line:
    """A repository deployed to production: ``good`` then ``bad`` (which brought ``bad1`` and ``bad2``)."""

    def __init__(self, repo: Repo, tmp_path: Path) -> None:
        self.repo = repo
        self.path = repo.path
        self.ran = tmp_path / "ran.txt"
        (tmp_path / "act.py").write_text(ROLLBACK_SCRIPT)
        action = toml_list(PY, str(tmp_path / "act.py"), "{sha}", str(self.ran))
        (self.path / "andon.toml").write_text(
            f"[environments.{ENV}]\ndeploy = {action}\nrollback = {action}\nrollback_grace_seconds = 0\n"
            f"[environments.staging]\ndeploy = {toml_list(PY, '-c', 'pass')}\n")
        self.repo.git("add", "andon.toml")
        self.good = self.change("base", "good")
        self.bad1 = self.change("one", "bad one")
        self.bad2 = self.change("two", "bad two")
        self.db = self.path / ".git" / "andon" / "deploys.db"

    def change(self, name: str, subject: str) -> str:
        """A commit touching a file of its own (so that any of them reverts cleanly)."""
        (self.path / f"{name}.txt").write_text(f"{subject}\n")
        self.repo.git("add", f"{name}.txt")
        self.repo.git("commit", "--quiet", "-m", subject)
        return self.repo.head()

    def revert(self, *shas: str) -> str:
        for sha in shas:
            self.repo.git("revert", "--no-edit", sha)
        return self.repo.head()

    def record(self, *shas: str, start: datetime = T0) -> None:
        log = self.log()
        try:
            for n, sha in enumerate(shas):
                log.record(ENV, sha, SUCCEEDED, who="ci", at=start + timedelta(seconds=n))
        finally:
            log.close()

    def ran_shas(self) -> list[str]:
        """The SHAs the deploy and rollback actions ran with, in order."""
        return [line.split()[0] for line in self.ran.read_text().splitlines()] if self.ran.exists() else []

    def log(self) -> DeployLog:
        return DeployLog.open(self.db, create_parent=True)

    def world(self) -> World:
        return resolve_world(self.path)

    def roll_back(self) -> None:
        """``andon rollback`` (its runner a process of its own), waited for, then ``andon resume``."""
        ok("rollback", "--env", ENV, "--reason", "bad two is bad", cwd=self.path)
        assert self.rolled_back().status == SUCCEEDED
        ok("resume", "--env", ENV, "--reason", "rolled back", cwd=self.path)

    def rolled_back(self) -> Rollback:
        """The newest rollback, once it has ended."""
        log = self.log()
        try:
            deadline = time.monotonic() + 60
            while not ((found := log.rollbacks(ENV, limit=1)) and not found[0].active):
                assert time.monotonic() < deadline, "the rollback did not end"
                time.sleep(0.05)
            return found[0]
        finally:
            log.close()

    def lose(self, *, deploy: bool = False) -> str:
        """A commit on a branch that is deleted and garbage-collected (``deploy``: rolled back first)."""
        self.repo.git("checkout", "--quiet", "-b", "doomed", self.good)
        lost = self.change("lost", "lost work")
        self.repo.git("checkout", "--quiet", "main")
        if deploy:
            self.record(lost, start=T0 + timedelta(minutes=5))
            self.roll_back()
        self.repo.git("branch", "-D", "--quiet", "doomed")
        self.repo.git("reflog", "expire", "--expire=now", "--all")
        self.repo.git("gc", "--quiet", "--prune=now")
        return lost

    def blocking(self, sha: str) -> list[str]:
        world = self.world()
        try:
            return [hold.sha for hold in blocking(world, ENV, sha)]
        finally:
            world.close()

    def events(self, kind: str) -> list[tuple[str, dict]]:
        log = self.log()
        try:
            return [(event.who, json.loads(event.detail)) for event in reversed(log.events(1000)) if event.kind == kind]
        finally:
            log.close()


@pytest.fixture
def line(repo: Repo, tmp_path: Path) -> Line:
    made = Line(repo, tmp_path)
    made.record(made.good, made.bad2)
    return made


@pytest.fixture
def rolled(line: Line) -> Line:
    line.roll_back()
    return line


def test_a_rollback_holds_the_reverted_deploys_commits_with_one_event(rolled: Line) -> None:
    world = rolled.world()
    try:
        holds = held(world, ENV)
        assert [hold.sha for hold in holds] == [rolled.bad2, rolled.bad1]  # the range, newest first
        assert [hold.subject for hold in holds] == ["bad two", "bad one"]
        rollback = world.log.rollbacks(ENV)[0]
        assert {hold.rollback_id for hold in holds} == {rollback.id}
        assert held(world, "staging") == []
    finally:
        world.close()
    [(who, detail)] = rolled.events("commit.held")
    assert detail["shas"] == [rolled.bad2, rolled.bad1] and detail["subjects"] == ["bad two", "bad one"]
    assert (detail["rollback_id"], detail["reverts"], detail["count"]) == (rollback.id, 2, 2)
    assert "range_error" not in detail


def test_a_failed_rollback_holds_nothing(line: Line, tmp_path: Path) -> None:
    failing = toml_list(PY, str(tmp_path / "act.py"), "{sha}", str(line.ran), "3")
    (line.path / "andon.toml").write_text(f"[environments.{ENV}]\nrollback = {failing}\nrollback_grace_seconds = 0\n")
    ok("rollback", "--env", ENV, cwd=line.path)
    assert line.rolled_back().status == "failed"
    log = line.log()
    try:
        assert log.held_commits(ENV) == []
    finally:
        log.close()


def test_after_resume_the_bad_sha_is_blocked_naming_its_commits_until_a_git_revert_of_each(rolled: Line) -> None:
    assert rolled.blocking(rolled.bad2) == [rolled.bad2, rolled.bad1]
    assert rolled.blocking(rolled.bad1) == [rolled.bad1]
    assert rolled.blocking(rolled.good) == []
    reverted = rolled.revert(rolled.bad2, rolled.bad1)
    assert rolled.blocking(reverted) == []
    ok("deploy", "--env", ENV, "--sha", reverted, cwd=rolled.path)
    assert rolled.ran_shas() == [rolled.good, reverted]  # the rollback, then the revert
    assert rolled.blocking(rolled.bad2) == [rolled.bad2, rolled.bad1]  # per SHA: the old one still is


def test_a_fix_on_top_is_not_enough_and_a_partial_revert_leaves_the_other_held(rolled: Line) -> None:
    fix = rolled.change("fix", "fix bad two")
    assert rolled.blocking(fix) == [rolled.bad2, rolled.bad1]
    one = rolled.revert(rolled.bad2)
    assert rolled.blocking(one) == [rolled.bad1]


def test_a_revert_of_the_revert_puts_the_commit_back(rolled: Line) -> None:
    reverted = rolled.revert(rolled.bad2, rolled.bad1)
    again = rolled.revert(reverted)  # reapplies bad one
    assert rolled.blocking(again) == [rolled.bad1]


def test_a_revert_between_held_commits_of_a_later_rollback_still_counts(line: Line) -> None:
    """A second rollback holds a range holding a bad commit and its revert: the revert still counts
    (the search is bounded by the range's lower end, not by the held commits)."""
    line.roll_back()
    fixed = line.revert(line.bad2, line.bad1)
    worse = line.change("three", "bad three")
    line.record(worse, start=datetime.now(UTC))  # reverts and all on top of good, then rolled back again
    line.roll_back()
    world = line.world()
    try:
        still = {hold.sha for hold in held(world, ENV)}
        assert {line.bad1, line.bad2, worse, fixed} <= still
    finally:
        world.close()
    assert line.bad1 not in line.blocking(worse) and line.bad2 not in line.blocking(worse)
    assert worse in line.blocking(worse)


def test_a_forced_deploy_goes_when_git_cannot_check_the_held_commits_and_records_that(rolled: Line,
                                                                                      tmp_path: Path) -> None:
    """git failing in the search for reverts is an error for a plain deploy (one line, exit 1), but
    never defeats --force: the forced deploy records that the held check could not be made."""
    wrapper = tmp_path / "git"  # a real git that fails the search for reverts, and only it
    wrapper.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = "--format=%H%x00%B" ] && '
                       f'{{ echo "fatal: simulated failure" >&2; exit 128; }}; done\nexec {shutil.which("git")} "$@"\n')
    wrapper.chmod(0o755)
    broken = {"GIT_PYTHON_GIT_EXECUTABLE": str(wrapper)}
    assert "simulated failure" in fails("deploy", "--env", ENV, "--sha", rolled.bad2, cwd=rolled.path, env=broken)
    assert rolled.ran_shas() == [rolled.good]
    forced = andon("deploy", "--env", ENV, "--sha", rolled.bad2, "--force", "--reason", "hotfix now", cwd=rolled.path,
                   env=broken)
    assert forced.code == 0, (forced.code, forced.err)
    assert f"could not be checked for {rolled.bad2[:7]}" in forced.err
    assert rolled.ran_shas() == [rolled.good, rolled.bad2]
    [(_, detail)] = rolled.events("deploy.forced")
    assert detail["held"]["shas"] == [] and "simulated failure" in detail["held"]["error"]


def test_with_the_ranges_lower_end_gone_a_revert_between_held_commits_still_counts(repo: Repo,
                                                                                   tmp_path: Path) -> None:
    """The bound gone from the clone, the search stops at the held commits' parents that are not
    held themselves: a held parent would hide a revert lying between two held commits."""
    line = Line(repo, tmp_path)
    line.repo.git("checkout", "--quiet", "-b", "hotfix", line.good)
    hotfix = line.change("hotfix", "hotfix")
    line.repo.git("checkout", "--quiet", "main")
    fixed = line.revert(line.bad1)
    worse = line.change("three", "bad three")
    line.record(line.good, hotfix, worse)
    line.roll_back()  # to the hotfix: holds bad one, bad two, the revert of bad one and bad three
    line.repo.git("branch", "-D", "--quiet", "hotfix")
    line.repo.git("reflog", "expire", "--expire=now", "--all")
    line.repo.git("gc", "--quiet", "--prune=now")
    world = line.world()
    try:
        assert {hold.sha for hold in held(world, ENV)} == {line.bad1, line.bad2, fixed, worse}
        assert {hold.bound for hold in held(world, ENV)} == {hotfix}
        assert not world.history.existing([hotfix])
    finally:
        world.close()
    assert set(line.blocking(worse)) == {line.bad2, fixed, worse}


def test_a_merge_revert_asks_git_once_more_for_what_the_merge_brought(
        line: Line, git_calls: GitCalls) -> None:  # noqa: F811 - the fixture
    """A ``git revert -m 1`` of a held merge clears the branch it brought in: one rev-list for it."""
    line.repo.git("checkout", "--quiet", "-b", "feature", line.good)
    f1 = line.change("f1", "feature part one")
    line.repo.git("checkout", "--quiet", "main")
    line.repo.git("merge", "--quiet", "--no-ff", "-m", "Merge branch 'feature'", "feature")
    merge = line.repo.head()
    line.record(merge, start=datetime.now(UTC))
    line.roll_back()
    assert set(line.blocking(merge)) == {merge, f1}
    line.repo.git("revert", "--no-edit", "-m", "1", merge)
    fixed = line.change("four", "on top")
    world = line.world()
    try:
        world.open()
        git_calls.clear()
        assert blocking(world, ENV, fixed) == []
        assert (git_calls.count("log"), git_calls.count("rev-list")) == (1, 2)  # contains, then the merge's
    finally:
        world.close()


def test_release_by_a_person_on_the_command_line_with_a_short_sha(rolled: Line) -> None:
    said = ok("release", rolled.bad1[:8], "--env", ENV, "--reason", "harmless after all", cwd=rolled.path,
              env={"ANDON_USER": "alice"}).out
    assert said.strip() == f"released {rolled.bad1[:7]} (bad one) in {ENV}: deploys may ship it again; " \
                           "1 commit still held there"
    assert rolled.blocking(rolled.bad2) == [rolled.bad2]
    [(who, detail)] = rolled.events("commit.released")
    assert (who, detail) == ("alice", {"sha": rolled.bad1, "reason": "harmless after all"})
    again = ok("release", rolled.bad1, "--env", ENV, "--reason", "twice", cwd=rolled.path).out
    assert again.strip() == f"{rolled.bad1[:7]} is not held in {ENV}: nothing to release"
    assert len(rolled.events("commit.released")) == 1
    log = rolled.log()
    try:  # the released row is kept
        with log._lock:
            rows = log._conn.execute("SELECT sha, released_by, release_reason FROM held_commits"
                                     " WHERE released_at IS NOT NULL").fetchall()
        assert rows == [(rolled.bad1, "alice", "harmless after all")]
    finally:
        log.close()
    ok("release", "HEAD", "--env", ENV, "--reason", "the fix is on top", cwd=rolled.path)
    assert rolled.blocking(rolled.bad2) == []
    ok("deploy", "--env", ENV, "--sha", rolled.bad2, cwd=rolled.path)


def test_release_all_lets_every_held_commit_ship_with_one_event_and_repeating_is_harmless(rolled: Line) -> None:
    """A rollback of a deploy whose build broke, not its code: one decision, not one per commit."""
    fails("deploy", "--env", ENV, "--sha", rolled.bad2, cwd=rolled.path, code=11)
    said = ok("release", "--all", "--env", ENV, "--reason", "the build broke, not the code", cwd=rolled.path,
              env={"ANDON_USER": "alice"}).out
    assert said.strip() == (f"released 2 commits held in {ENV} ({rolled.bad2[:7]}, {rolled.bad1[:7]}): "
                            "deploys may ship them again")
    assert rolled.blocking(rolled.bad2) == []
    world = rolled.world()
    try:
        assert held(world, ENV) == []
    finally:
        world.close()
    [(who, detail)] = rolled.events("commit.released")
    assert (who, detail) == ("alice", {"shas": [rolled.bad2, rolled.bad1], "subjects": ["bad two", "bad one"],
                                       "count": 2, "reason": "the build broke, not the code"})
    again = ok("release", "--all", "--env", ENV, "--reason", "twice", cwd=rolled.path).out
    assert again.strip() == f"no commit is held in {ENV}: nothing to release"
    assert len(rolled.events("commit.released")) == 1
    log = rolled.log()
    try:  # the released rows are kept, with who and why
        with log._lock:
            rows = log._conn.execute("SELECT sha, released_by, release_reason FROM held_commits"
                                     " WHERE released_at IS NOT NULL ORDER BY id").fetchall()
        assert rows == [(rolled.bad2, "alice", "the build broke, not the code"),
                        (rolled.bad1, "alice", "the build broke, not the code")]
    finally:
        log.close()
    ok("deploy", "--env", ENV, "--sha", rolled.bad2, cwd=rolled.path)
    assert rolled.ran_shas() == [rolled.good, rolled.bad2]


@pytest.mark.parametrize(("args", "says"), [
    (("--all", "SHA"), "give SHA or --all, not both"),
    ((), "name the held commit (SHA) or release every held commit (--all)"),
    (("--all", "--reason", " "), "--reason must say why the commits may ship again"),
])
def test_release_takes_sha_or_all_and_says_so_in_one_line(rolled: Line, args: tuple[str, ...], says: str) -> None:
    argv = [rolled.bad1 if arg == "SHA" else arg for arg in args]
    reason = [] if "--reason" in argv else ["--reason", "why not"]
    before = _counts(rolled)
    line = fails("release", *argv, "--env", ENV, *reason, cwd=rolled.path, code=2)
    assert says in line, line
    assert _counts(rolled) == before
    assert rolled.blocking(rolled.bad2) == [rolled.bad2, rolled.bad1]


def _counts(line: Line) -> tuple[int, int, int]:
    log = line.log()
    try:
        with log._lock:
            return tuple(log._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[return-value]
                         for table in ("events", "deploys", "held_commits"))
    finally:
        log.close()


@pytest.mark.parametrize(("args", "code", "says"), [
    (("deadbeef",), 1, "'deadbeef' is not a commit in this clone, nor one held in production"),
    (("no-such-branch",), 1, "'no-such-branch' is not a commit in this clone"),
    (("--env", "qa"), 1, "unknown environment 'qa'"),
    (("--reason", "  "), 2, "--reason must say why"),
    (("--reason", "\x1b[31m"), 2, "--reason must say why"),
    (("--env", "bad env"), 1, "environment"),
])
def test_bad_release_input_is_one_line_and_the_log_is_intact(rolled: Line, args: tuple[str, ...], code: int,
                                                             says: str) -> None:
    argv = {"sha": rolled.bad1, "--env": ENV, "--reason": "why not"}
    if args and not args[0].startswith("-"):
        argv["sha"] = args[0]
    else:
        argv[args[0]] = args[1]
    before = _counts(rolled)
    line = fails("release", argv["sha"], "--env", argv["--env"], "--reason", argv["--reason"], cwd=rolled.path,
                 code=code)
    assert says in line, line
    assert _counts(rolled) == before
    assert rolled.blocking(rolled.bad2) == [rolled.bad2, rolled.bad1]


def test_a_held_commit_gone_from_the_clone_is_released_by_its_sha_and_never_blocks(line: Line) -> None:
    lost = line.lose(deploy=True)  # deployed from a branch, rolled back, the branch deleted and collected
    assert line.repo.git("cat-file", "-t", line.good) == "commit"
    world = line.world()
    try:
        assert lost in {hold.sha for hold in held(world, ENV)}
        assert lost not in [hold.sha for hold in blocking(world, ENV, line.bad2)]
        with pytest.raises(GitError) as raised:
            blocking(world, ENV, "0" * 40)  # a SHA the clone does not have: git cannot say
        assert "is not a commit in this clone" in one_line(raised.value)
    finally:
        world.close()
    said = ok("release", lost[:9], "--env", ENV, "--reason", "gone anyway", cwd=line.path).out
    assert said.startswith(f"released {lost[:7]} (lost work)")


def test_nothing_held_asks_git_nothing_and_nothing_contained_costs_one_contains_batch(
        rolled: Line, git_calls: GitCalls) -> None:  # noqa: F811 - the fixture
    world = rolled.world()
    try:
        world.open()
        git_calls.clear()
        assert blocking(world, "staging", rolled.bad2) == []
        assert git_calls.commands() == []
        assert blocking(world, ENV, rolled.good) == []
        assert "log" not in git_calls  # no revert search when nothing held is in the SHA
        assert git_calls.count("rev-list") == 1
        git_calls.clear()
        assert len(blocking(world, ENV, rolled.bad2)) == 2
        assert git_calls.count("log") == 1  # one search for reverts, whatever the number of held commits
    finally:
        world.close()


def test_when_the_range_cannot_be_worked_out_the_deploys_own_sha_is_held_and_the_event_says_so(
        repo: Repo, tmp_path: Path) -> None:
    line = Line(repo, tmp_path)
    lost = line.lose()
    line.record(lost, line.bad2)  # the previous deploy's SHA is gone from the clone
    world = line.world()
    try:
        assert world.log.get(2).prev_sha == lost
        rollback = Rollback(7, ENV, SUCCEEDED, "bob", "", "", "", lost, 1, 2, 3, "", None, False, "", None)
        holds = hold_reverted(world, rollback)
        assert [(hold.sha, hold.subject, hold.rollback_id) for hold in holds] == [(line.bad2, "", 7)]
    finally:
        world.close()
    [(who, detail)] = line.events("commit.held")
    assert who == "bob" and detail["shas"] == [line.bad2]
    assert f"{lost[:7]} is not in this clone" in detail["range_error"]
    assert "only " + line.bad2[:7] in detail["range_error"]


def test_release_from_python_refuses_an_empty_reason_and_says_so_for_a_commit_never_held(rolled: Line) -> None:
    world = rolled.world()
    try:
        with pytest.raises(AndonError) as raised:
            release(world, ENV, rolled.bad1, "me", "   ")
        assert "needs a reason" in one_line(raised.value)
        assert release(world, ENV, rolled.good, "me", "ok") == f"{rolled.good[:7]} is not held in {ENV}: nothing to release"
    finally:
        world.close()


# -- andon deploy refuses (part B's gate calls blocking()) ------------------------------------------


def test_andon_deploy_of_the_bad_sha_after_resume_is_refused_with_exit_11_naming_the_commits(rolled: Line) -> None:
    refused = andon("deploy", "--env", ENV, "--sha", rolled.bad2, cwd=rolled.path)
    assert refused.code == 11, (refused.code, refused.err)
    assert len(refused.err.splitlines()) == 1
    assert rolled.bad2[:7] in refused.err and rolled.bad1[:7] in refused.err
    assert rolled.ran_shas() == [rolled.good]  # only the rollback ran
    reverted = rolled.revert(rolled.bad2, rolled.bad1)
    ok("deploy", "--env", ENV, "--sha", reverted, cwd=rolled.path)
    fails("deploy", "--env", ENV, "--sha", rolled.bad1, cwd=rolled.path, code=11)
    assert rolled.ran_shas() == [rolled.good, reverted]
