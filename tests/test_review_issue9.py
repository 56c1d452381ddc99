"""Review of issue 9 (the migration-cleanup backlog): the defects found, each proved with a real repository,
a real SQLite log or a real ``andon`` process. Each was first marked ``xfail(strict=True)``; each is fixed
now, and its test guards the fix (it fails again when the fix is undone)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backend import AndonError
from backend.config import Notifier
from backend.migrations import evaluate, remind
from backend.world import World
from tests.conftest import Repo, raw
from tests.test_cli import andon, ok
from tests.test_migrations import DAY, HOUR, T0, GitCalls, Setup, expand_commit, git_calls  # noqa: F401
from tests.test_migrations_cli import Shop


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    made = Setup(tmp_path)
    yield made
    made.world.close()


# -- reminders -----------------------------------------------------------------------------------


def test_a_receiver_limited_to_staging_is_not_told_of_overdue_cleanups_in_production(setup: Setup,
                                                                                        tmp_path: Path) -> None:
    expand = expand_commit(setup, at=T0)
    setup.deploy("production", expand, T0)
    setup.step("progress", "users-split", "production", T0 + HOUR, done=1, total=1)
    setup.step("finish", "users-split", "production", T0 + HOUR)
    setup.world.close()
    staging_only = Notifier("webhook", "HOOK_STAGING", ("staging",))
    everywhere = Notifier("webhook", "HOOK_ALL")
    config = setup.world.config._replace(notifiers=(staging_only, everywhere))
    world = World(setup.world.history, config, tmp_path / "deploys.db", setup.clock)
    try:
        setup.clock.at = T0 + 20 * DAY  # overdue in production only
        backlog = evaluate(world)
        assert backlog.overdue("production") == 1 and backlog.overdue("staging") == 0
        [digest] = remind(world, backlog)
    finally:
        world.close()
    with raw(tmp_path / "deploys.db") as conn:
        assert conn.execute("SELECT env FROM events WHERE id = ?", (digest,)).fetchone() == ("production",)
        told = conn.execute("SELECT receiver, count(*) FROM outbox WHERE event_id = ? GROUP BY receiver",
                            (digest,)).fetchall()
    assert told == [(everywhere.key, 1)]  # nothing of production for a staging-only receiver


# -- bad input -----------------------------------------------------------------------------------


def test_a_count_too_large_for_the_log_is_one_line_not_a_traceback(repo: Repo) -> None:
    shop = Shop(repo)
    ok("migration", "progress", "flags-service", "--env", "production", "--done", "1", cwd=shop.path)
    before = shop.log_digest()
    for done, total in (("5", "99999999999999999999"), (str(2**63), None)):
        result = andon("migration", "progress", "flags-service", "--env", "production", "--done", done,
                       *(("--total", total) if total else ()), cwd=shop.path)  # asserts: no traceback
        assert result.code == 2, result.err
        assert len(result.err.splitlines()) == 1 and "at most 9223372036854775807" in result.err, result.err
        assert shop.log_digest() == before
    largest = str(2**63 - 1)  # what the log holds is taken
    ok("migration", "progress", "flags-service", "--env", "production", "--done", "5", "--total", largest,
       cwd=shop.path)


def test_a_count_too_large_for_the_log_is_refused_by_apply_too(setup: Setup) -> None:
    expand = expand_commit(setup, at=T0)
    setup.deploy("production", expand, T0)
    for done, total in ((5, 2**63), (2**63, None)):
        with pytest.raises(AndonError) as refused:
            setup.step("progress", "users-split", "production", T0 + HOUR, done=done, total=total)
        assert "\n" not in str(refused.value) and "at most" in str(refused.value)
    assert [e for e in setup.world.log.events() if e.kind.startswith("migration.")] == []


# -- evidence ----------------------------------------------------------------------------------------


def test_no_old_code_found_while_data_still_moves_does_not_suggest_shipping_the_contract(setup: Setup) -> None:
    expand = expand_commit(setup, "users-split", T0, "Migration-Refs: User.full_name")
    pending = setup.status("users-split", "production", T0 + HOUR)
    assert (pending.phase, pending.evidence.text) == ("expand_pending", "no old-shape code found yet")
    setup.deploy("production", expand, T0 + HOUR)
    expanded = setup.status("users-split", "production", T0 + HOUR)
    assert (expanded.phase, expanded.evidence.text) == ("expanded", "no old-shape code found yet")
    setup.step("progress", "users-split", "production", T0 + 2 * HOUR, done=10, total=1000)
    status = setup.status("users-split", "production", T0 + 2 * HOUR)
    assert status.phase == "migrating"
    text = status.evidence.text if status.evidence is not None else ""
    assert text == "no old-shape code found yet", text
    assert "contract" not in status.next_step, status.next_step
    setup.step("finish", "users-split", "production", T0 + 3 * HOUR)
    due = setup.status("users-split", "production", T0 + 3 * HOUR)
    assert (due.phase, due.evidence.text) == ("cleanup_due", "looks cleaned up — ship the contract?")
    assert due.next_step.startswith("ship the contract")


def test_old_code_far_along_a_long_line_still_counts_as_evidence(setup: Setup) -> None:
    bundle = "var a=" + "1+" * 300 + "legacy_full_name();\n"  # a generated or minified file
    expand = expand_commit(setup, "users-split", T0, "Migration-Refs: legacy_full_name",
                           files={"static/bundle.js": bundle, "app/a.py": "var a=2\n"})
    setup.commit("queue", "Migration: queue-move expand", "Migration-Refs: var a=", at=T0)  # held by both lines
    setup.deploy("production", expand, T0 + HOUR)
    setup.step("progress", "users-split", "production", T0 + 2 * HOUR, done=1, total=1)
    setup.step("finish", "users-split", "production", T0 + 2 * HOUR)
    for _ in range(2):  # searched, then read back from the cache
        status = setup.status("users-split", "production", T0 + 3 * HOUR)
        assert status.phase == "cleanup_due" and status.evidence is not None
        assert status.evidence.count == 1, status.evidence.text  # not "looks cleaned up — ship the contract?"
        assert status.evidence.text == "old code still referenced in 1 place: static/bundle.js:1"
        other = setup.status("queue-move", "production", T0 + 3 * HOUR)
        assert other.evidence is not None and other.evidence.count == 2, other.evidence.text


# -- since -----------------------------------------------------------------------------------------


def test_since_of_an_expand_rolled_back_is_when_the_rollback_took_it_out(setup: Setup) -> None:
    expand = expand_commit(setup, at=T0)
    assert setup.status("users-split", "staging", T0 + HOUR).since == T0  # never live: since it was marked
    setup.deploy("staging", expand, T0 + HOUR)
    assert setup.status("users-split", "staging", T0 + 2 * HOUR).phase == "expanded"
    setup.deploy("staging", setup.base, T0 + 5 * HOUR)  # a rollback past the expand
    setup.deploy("staging", setup.base, T0 + 6 * HOUR)  # deployed again without it: it left at the first
    for _ in range(2):  # worked out, then read back from the cache
        status = setup.status("users-split", "staging", T0 + 7 * HOUR)
        assert status.phase == "expand_pending"
        assert status.since == T0 + 5 * HOUR, status.since
    assert setup.status("users-split", "production", T0 + 7 * HOUR).since == T0  # never live there
    setup.deploy("staging", expand, T0 + 8 * HOUR)  # back in: a new run
    again = setup.status("users-split", "staging", T0 + 9 * HOUR)
    assert (again.phase, again.since) == ("expanded", T0 + 8 * HOUR)


# -- the cache ---------------------------------------------------------------------------------------


def test_fetching_a_deployed_commit_that_was_missing_is_seen(setup: Setup, tmp_path: Path,
                                                             git_calls: GitCalls) -> None:  # noqa: F811
    other = Repo(tmp_path / "other")  # where a hotfix branch was built and deployed from
    other.git("fetch", "--quiet", str(setup.repo.path), "main:base")
    other.git("checkout", "--quiet", "-b", "hotfix", "base")
    other._counter = 10  # file.txt differs from the base's
    hotfix = other.commit("hotfix: expand", body="Migration: users-split expand",
                          date=T0.strftime("%Y-%m-%dT%H:%M:%S+00:00"))
    setup.deploy("production", hotfix, T0 + HOUR)
    cold = evaluate(setup.world, now=T0 + 2 * HOUR)
    assert cold.error is not None and "not in this clone" in cold.error
    git_calls.clear()
    warm = evaluate(setup.world, now=T0 + 2 * HOUR)  # still missing: the kept answer, no walk
    assert warm == cold and "log" not in git_calls, git_calls.commands()
    setup.repo.git("fetch", "--quiet", str(other.path), "hotfix:hotfix")  # what the error says to do
    git_calls.clear()
    after = evaluate(setup.world, now=T0 + 2 * HOUR)
    assert git_calls.count("log") == 1  # worked out again
    assert after.error is None, after.error
    found = after.find("users-split", "production")
    assert found is not None and found.phase == "expanded"
    git_calls.clear()
    assert evaluate(setup.world, now=T0 + 2 * HOUR) == after and "log" not in git_calls  # nothing missing: kept


# -- repeated steps ----------------------------------------------------------------------------------


def test_a_migration_job_repeating_its_last_report_after_the_finish_is_harmless(repo: Repo) -> None:
    shop = Shop(repo)
    report = ("migration", "progress", "users-email", "--env", "production", "--done", "100", "--total", "100")
    ok("migration", "progress", "users-email", "--env", "production", "--done", "0", "--total", "100",
       cwd=shop.path)
    ok(*report, cwd=shop.path)
    ok("migration", "finish", "users-email", "--env", "production", cwd=shop.path)
    before = shop.events("migration.")
    again = andon(*report, cwd=shop.path)  # the same call, retried (it took effect already)
    assert again.code == 0, again.err
    assert again.out.startswith("already finished: users-email in production"), again.out
    assert ok("migration", "progress", "users-email", "--env", "production", "--done", "100",
              cwd=shop.path).out.startswith("already finished")  # the same count, the total as stored
    assert shop.events("migration.") == before
    for other in (("--done", "99", "--total", "100"), ("--done", "100", "--total", "200")):
        refused = andon("migration", "progress", "users-email", "--env", "production", *other, cwd=shop.path)
        assert refused.code == 10, (other, refused.err)  # a different report after the finish is still refused
        assert "allowed now:" in refused.err
    assert shop.events("migration.") == before
