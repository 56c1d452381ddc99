"""Review of issue 10 (stop the line, part two): defects proven with real parts.

Each test asserts the behaviour the issue asks for and is marked ``xfail(strict=True)`` while the
defect exists: when a fix lands, the test passes, the strict xfail fails, and the mark goes.
Real git repositories (tests/conftest.py ``Repo``), a real SQLite log, ``andon`` as real
processes (the rollback's runner too), the real configuration parser and freeze schedule.
"""

from __future__ import annotations

import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

from backend.config import parse
from backend.freeze import frozen
from tests.conftest import Repo
from tests.test_cli import andon, ok
from tests.test_held import ENV, Line


def _config(text: str):  # type: ignore[no-untyped-def]
    return parse(tomllib.loads(text), Path("andon.toml"), text)


# -- held commits -------------------------------------------------------------------------------


def test_a_second_rollback_further_back_holds_what_it_took_out(repo: Repo, tmp_path: Path) -> None:
    line = Line(repo, tmp_path)
    line.record(line.good, line.bad1, line.bad2)  # three deploys: good, then bad one, then bad two
    ok("rollback", "--env", ENV, "--reason", "bad two is bad", cwd=line.path)
    first = line.rolled_back()
    assert first.status == "succeeded" and first.target_sha == line.bad1
    # Still broken: a person rolls back further, to the good deploy (the line is still stopped).
    ok("rollback", "--env", ENV, "--to", line.good, "--reason", "bad one is bad too", cwd=line.path)
    second = line.rolled_back()
    assert second.id != first.id and second.status == "succeeded" and second.target_sha == line.good
    assert line.ran_shas() == [line.bad1, line.good]
    ok("resume", "--env", ENV, "--reason", "rolled back", cwd=line.path)
    # bad one left the environment with the second rollback: it must stay out like bad two.
    refused = andon("deploy", "--env", ENV, "--sha", line.bad1, cwd=line.path)
    assert refused.code == 11, (refused.code, refused.err)  # was: 0, and bad one was live again
    assert line.ran_shas() == [line.bad1, line.good]
    assert line.bad1[:7] in refused.err
    # Each rollback held what it took out: bad two, then bad one (what the first left live, not in good).
    [(_, one), (_, two)] = line.events("commit.held")
    assert (one["shas"], one["live_sha"], one["target_sha"]) == ([line.bad2], line.bad2, line.bad1)
    assert (two["shas"], two["live_sha"], two["target_sha"]) == ([line.bad1], line.bad1, line.good)
    assert two["rollback_id"] == second.id and "range_error" not in two
    assert andon("deploy", "--env", ENV, "--sha", line.bad2, cwd=line.path).code == 11


# -- scheduled freezes ----------------------------------------------------------------------------

WEEKEND = """
[environments.production]
deploy = ["true"]
[[environments.production.freeze]]
reason = "weekend"
days = ["sat", "sun"]
start = "00:00"
duration = "24h"
timezone = "Europe/Berlin"
"""


def test_a_whole_weekend_freeze_covers_sunday_night_on_the_autumn_change_of_summer_time() -> None:
    freezes = _config(WEEKEND).environments["production"].freezes
    # An ordinary weekend: frozen at Sunday 23:30 Berlin time (21:30 UTC in summer time).
    assert frozen(freezes, datetime(2026, 10, 18, 21, 30, tzinfo=UTC)) is not None
    # 25 October 2026: clocks go back at 03:00. Sunday 23:30 Berlin time is 22:30 UTC.
    sunday_night = datetime(2026, 10, 25, 22, 30, tzinfo=UTC)
    window = frozen(freezes, sunday_night)
    assert window is not None, "Sunday 23:30 in Berlin is in the weekend freeze"
    assert window.opens == datetime(2026, 10, 25, 23, 0, tzinfo=UTC)  # Monday 00:00 Berlin time
    assert window.start == datetime(2026, 10, 23, 22, 0, tzinfo=UTC)  # since Saturday 00:00 Berlin time
    assert frozen(freezes, datetime(2026, 10, 25, 23, 0, tzinfo=UTC)) is None  # Monday: open


def test_a_git_revert_of_the_bad_merge_lets_the_reverted_branch_ship(repo: Repo, tmp_path: Path) -> None:
    line = Line(repo, tmp_path)
    line.repo.git("checkout", "--quiet", "-b", "feature", line.good)
    line.change("f1", "feature part one")
    line.change("f2", "feature part two")
    line.repo.git("checkout", "--quiet", "main")
    line.repo.git("merge", "--quiet", "--no-ff", "-m", "Merge branch 'feature'", "feature")
    merge = line.repo.head()
    line.record(line.bad2, merge)  # the merge went out on top of what was live, and broke it
    ok("rollback", "--env", ENV, "--reason", "the feature broke it", cwd=line.path)
    assert line.rolled_back().status == "succeeded"
    ok("resume", "--env", ENV, "--reason", "rolled back", cwd=line.path)
    assert andon("deploy", "--env", ENV, "--sha", merge, cwd=line.path).code == 11  # the bad merge stays out
    line.repo.git("revert", "--no-edit", "-m", "1", merge)  # "This reverts commit <merge>, reversing changes ..."
    reverted = line.repo.head()
    done = andon("deploy", "--env", ENV, "--sha", reverted, cwd=line.path)
    assert done.code == 0, done.err
    assert line.ran_shas()[-1] == reverted
    # A revert of that revert brings the merge and its branch back in: held again, all three.
    line.repo.git("revert", "--no-edit", reverted)
    again = andon("deploy", "--env", ENV, "--sha", line.repo.head(), cwd=line.path)
    assert again.code == 11, (again.code, again.err)
    assert "3 commits" in again.err and merge[:7] in again.err
    assert line.ran_shas()[-1] == reverted


def test_deploy_refuses_in_the_same_order_as_line_check(repo: Repo, tmp_path: Path) -> None:
    line = Line(repo, tmp_path)
    line.record(line.good, line.bad2)
    ok("rollback", "--env", ENV, "--reason", "bad two is bad", cwd=line.path)
    assert line.rolled_back().status == "succeeded"  # the line stays stopped after a rollback
    checked = andon("line", "--env", ENV, "--check", "--sha", line.bad2, cwd=line.path)
    assert checked.code == 5, (checked.code, checked.out, checked.err)
    refused = andon("deploy", "--env", ENV, "--sha", line.bad2, cwd=line.path)
    assert line.ran_shas() == [line.good]
    assert refused.code == checked.code, (refused.code, refused.err)
    assert "stopped" in refused.err
    # Waiting for the line cannot clear held commits: with --wait-line they refuse at once (README).
    started = time.monotonic()
    waited = andon("deploy", "--env", ENV, "--sha", line.bad2, "--wait-line", "30", cwd=line.path)
    assert waited.code == 11 and line.bad2[:7] in waited.err, (waited.code, waited.err)
    assert time.monotonic() - started < 20
    assert line.ran_shas() == [line.good]


def test_a_revert_ships_when_the_held_ranges_lower_end_is_gone_from_the_clone(repo: Repo, tmp_path: Path) -> None:
    line = Line(repo, tmp_path)
    line.repo.git("checkout", "--quiet", "-b", "hotfix", line.good)
    hotfix = line.change("hotfix", "hotfix")
    line.repo.git("checkout", "--quiet", "main")
    line.record(line.good, hotfix, line.bad2)  # a hotfix branch went out, then main on top of it
    ok("rollback", "--env", ENV, "--reason", "bad two is bad", cwd=line.path)
    rollback = line.rolled_back()
    assert rollback.status == "succeeded" and rollback.target_sha == hotfix
    ok("resume", "--env", ENV, "--reason", "rolled back", cwd=line.path)
    # The hotfix branch is deleted (squash-merged elsewhere, say) and collected.
    line.repo.git("branch", "-D", "--quiet", "hotfix")
    line.repo.git("reflog", "expire", "--expire=now", "--all")
    line.repo.git("gc", "--quiet", "--prune=now")
    # The held commits are still told, not an error (was: exit 1, fatal: bad object).
    checked = andon("line", "--env", ENV, "--check", "--sha", line.bad2, cwd=line.path)
    assert checked.code == 11, (checked.code, checked.out, checked.err)
    refused = andon("deploy", "--env", ENV, "--sha", line.bad2, cwd=line.path)
    assert refused.code == 11 and line.bad1[:7] in refused.err, (refused.code, refused.err)
    reverted = line.revert(line.bad2, line.bad1)
    done = andon("deploy", "--env", ENV, "--sha", reverted, cwd=line.path)
    assert done.code == 0, (done.code, done.err)
    assert line.ran_shas() == [hotfix, reverted]
    # Half reverted: bad one is still in, and still held.
    half = andon("deploy", "--env", ENV, "--sha", f"{reverted}~1", cwd=line.path)
    assert half.code == 11 and line.bad1[:7] in half.err and line.bad2[:7] not in half.err, (half.code, half.err)
    # A person forces the held SHA through: it goes, and what it went past is recorded.
    forced = andon("deploy", "--env", ENV, "--sha", line.bad2, "--force", "--reason", "we know", cwd=line.path)
    assert forced.code == 0, (forced.code, forced.err)
    assert line.ran_shas()[-1] == line.bad2
    [(_, detail)] = line.events("deploy.forced")
    assert detail["held"] == {"shas": [line.bad2, line.bad1]}


def test_a_chained_freeze_is_in_force_since_its_first_window_began() -> None:
    text = WEEKEND.replace('timezone = "Europe/Berlin"', 'timezone = "UTC"')
    freezes = _config(text).environments["production"].freezes
    sunday_noon = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    window = frozen(freezes, sunday_noon)
    assert window is not None
    assert window.opens == datetime(2026, 11, 23, 0, 0, tzinfo=UTC)  # Monday: the chain ends
    assert window.start == datetime(2026, 11, 21, 0, 0, tzinfo=UTC)  # frozen since Saturday
    saturday = frozen(freezes, datetime(2026, 11, 21, 12, 0, tzinfo=UTC))
    assert saturday == window  # the same chain, seen from either day


def test_a_tiny_stop_reminder_minutes_is_refused_or_harmless(repo: Repo) -> None:
    from backend import AndonError
    from backend.config import ConfigError
    from backend.line_reminder import remind
    from backend.world import resolve_world

    repo.commit("one")
    (repo.path / "andon.toml").write_text('[environments.production]\ndeploy = ["true"]\n'
                                          "stop_reminder_minutes = 1e-300\n")
    try:
        world = resolve_world(repo.path)
    except ConfigError as refused:  # refused as a config mistake, in one line: fine
        assert "stop_reminder_minutes" in str(refused) and "\n" not in str(refused), str(refused)
        # and the reminders stay harmless for an interval that got past a check all the same
        (repo.path / "andon.toml").write_text('[environments.production]\ndeploy = ["true"]\n')
        world = resolve_world(repo.path)
        world.config.environments["production"] = world.config.environments["production"]._replace(
            stop_reminder_minutes=1e-300)
    try:
        world.log.stop_line("production", who="alice", reason="api down")
        time.sleep(0.05)  # stopped for a moment
        try:
            assert remind(world) == ["production"]
        except AndonError as error:
            assert "\n" not in str(error)  # one line for the watcher to show: fine
    finally:
        world.close()


# -- verification against the state before ------------------------------------------------------


def test_a_check_that_comes_back_after_the_new_version_was_seen_must_report_it_too(repo: Repo,
                                                                                   tmp_path: Path) -> None:
    from backend.deployer import deploy
    from backend.models import UNHEALTHY
    from backend.runner import Runner
    from tests.test_verify_baseline import Two

    two = Two(repo, tmp_path)  # web reports the deployed SHA; api is down (503) and, when up, reports "v1"
    try:
        def show(text: str) -> None:
            if "is reported]" in text:  # web reported the new version: now api comes back, still on v1
                two.api.status = 200

        outcome = deploy(two.world, "ok", two.shas[1], runner=Runner(), on_output=show)
        output = two.world.log.get(outcome.deploy.id).output
        assert "api is up again: counted from now" in output
        assert outcome.verdict is not None
        assert outcome.verdict.status == UNHEALTHY, outcome.verdict.reason  # api never reported the new SHA
        assert "was not reported" in outcome.verdict.reason and "api reports v1" in outcome.verdict.reason
    finally:
        two.close()
