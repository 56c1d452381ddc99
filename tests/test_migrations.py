"""The migration backlog: phases derived from real git trailers and a real deploy log, at fixed clock times."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from backend import AndonError
from backend.config import Config, Environment, MigrationRules, MigrationSettings
from backend.history import History
from backend.migrations import (
    StepRefused,
    UnknownMigration,
    apply,
    evaluate,
    remind,
    rollback_holds,
)
from backend.store import StoreError
from backend.world import World
from tests.conftest import Repo, git, one_line

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
ENVS = ("staging", "production")


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def make_world(repo: Repo, db: Path, clock: Clock, settings: MigrationSettings | None = None) -> World:
    config = Config(branch="main", environments=MappingProxyType({e: Environment(e) for e in ENVS}),
                    migrations=settings or MigrationSettings())
    return World(History.discover(repo.path), config, db, clock)


class Setup:
    """A repository with a base commit, an andon world over it, and helpers for trailers and deploys."""

    def __init__(self, tmp_path: Path, settings: MigrationSettings | None = None) -> None:
        self.repo = Repo(tmp_path / "repo")
        self.clock = Clock(T0)
        self.base = self.repo.commit("base", date=stamp(T0 - 10 * DAY))
        self.world = make_world(self.repo, tmp_path / "deploys.db", self.clock, settings)

    def commit(self, subject: str, *trailers: str, at: datetime, files: dict[str, str] | None = None) -> str:
        for path, text in (files or {}).items():
            target = self.repo.path / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            git(self.repo.path, "add", path)
        return self.repo.commit(subject, body="\n".join(trailers), date=stamp(at))

    def deploy(self, env: str, sha: str, at: datetime, status: str = "succeeded") -> None:
        self.world.log.record(env, sha, status, who="ci", at=at)

    def status(self, name: str, env: str, at: datetime | None = None, **kwargs: Any) -> Any:
        found = evaluate(self.world, now=at or self.clock.at, **kwargs).find(name, env)
        assert found is not None, (name, env)
        return found

    def step(self, action: str, name: str, env: str | None, at: datetime, **kwargs: Any) -> str:
        self.clock.at = at
        return apply(self.world, action, name, env, who="alice", **kwargs)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    made = Setup(tmp_path)
    yield made
    made.world.close()


def expand_commit(setup: Setup, name: str = "users-split", at: datetime = T0, *extra: str, **kwargs: Any) -> str:
    return setup.commit(f"{name}: expand", f"Migration: {name} expand", *extra, at=at, **kwargs)


# -- phases ----------------------------------------------------------------------------------


def test_phases_across_deploys_from_expand_pending_to_done(setup: Setup) -> None:
    expand = expand_commit(setup, at=T0)
    status = setup.status("users-split", "staging", T0 + HOUR)
    assert (status.phase, status.since, status.expand) == ("expand_pending", T0, expand)
    assert status.next_step == f"deploy the expand ({expand[:7]}) to staging"

    setup.deploy("staging", expand, T0 + 2 * HOUR)
    assert setup.status("users-split", "staging").phase == "expanded"
    staging = setup.status("users-split", "staging", T0 + 3 * HOUR)
    assert (staging.phase, staging.since, staging.severity, staging.due) == ("expanded", T0 + 2 * HOUR, "ok", None)
    assert "andon migration progress users-split --env staging" in staging.next_step
    assert setup.status("users-split", "production", T0 + 3 * HOUR).phase == "expand_pending"
    assert setup.status("users-split", "staging", T0 + 5 * DAY).phase == "expanded"  # data to move: no soaking

    setup.step("progress", "users-split", "staging", T0 + 4 * HOUR, done=10, total=100)
    migrating = setup.status("users-split", "staging", T0 + 4 * HOUR)
    assert (migrating.phase, migrating.since) == ("migrating", T0 + 4 * HOUR)
    assert migrating.progress is not None and (migrating.progress.done, migrating.progress.total) == (10, 100)

    setup.step("finish", "users-split", "staging", T0 + 5 * HOUR)
    due = setup.status("users-split", "staging", T0 + 6 * HOUR)
    assert (due.phase, due.since, due.due, due.severity) == ("cleanup_due", T0 + 5 * HOUR, T0 + 5 * HOUR + 14 * DAY, "ok")
    assert "Migration: users-split contract" in due.next_step

    contract = setup.commit("users-split: contract", "Migration: users-split contract", at=T0 + 6 * HOUR)
    setup.deploy("staging", contract, T0 + 7 * HOUR)
    done = setup.status("users-split", "staging", T0 + 8 * HOUR)
    assert (done.phase, done.since, done.flags, done.contract, done.severity) == (
        "done", T0 + 7 * HOUR, (), contract, "ok")
    json.dumps(done.to_json())  # JSON-able
    assert done.to_json()["phase"] == "done" and done.to_json()["next"] == "nothing: done"


def test_a_rollback_past_the_expand_undoes_it_and_a_redeploy_starts_a_new_run(setup: Setup) -> None:
    expand = expand_commit(setup, at=T0)
    later = setup.commit("feature", at=T0 + HOUR)
    setup.deploy("staging", setup.base, T0)
    setup.deploy("staging", expand, T0 + 2 * HOUR)
    setup.deploy("staging", later, T0 + 3 * HOUR)  # still holds the expand: the run goes on
    assert setup.status("users-split", "staging", T0 + 4 * HOUR).since == T0 + 2 * HOUR

    setup.deploy("staging", setup.base, T0 + 5 * HOUR)  # a rollback past the expand
    rolled = setup.status("users-split", "staging", T0 + 6 * HOUR)
    assert (rolled.phase, rolled.flags) == ("expand_pending", ())

    setup.deploy("staging", later, T0 + 7 * HOUR)  # deployed again: live since the re-deploy
    again = setup.status("users-split", "staging", T0 + 8 * HOUR)
    assert (again.phase, again.since) == ("expanded", T0 + 7 * HOUR)


def test_a_rollback_while_data_moves_is_flagged_expand_rolled_back(setup: Setup) -> None:
    expand = expand_commit(setup, at=T0)
    setup.deploy("staging", setup.base, T0)
    setup.deploy("staging", expand, T0 + HOUR)
    setup.step("progress", "users-split", "staging", T0 + 2 * HOUR, done=5, total=50)
    setup.deploy("staging", setup.base, T0 + 3 * HOUR)
    status = setup.status("users-split", "staging", T0 + 4 * HOUR)
    assert (status.phase, status.flags) == ("expand_pending", ("expand_rolled_back",))
    assert "rolled back" in status.next_step
    with pytest.raises(StepRefused) as refused:
        setup.step("progress", "users-split", "staging", T0 + 4 * HOUR, done=6)
    assert "allowed now: note, waive, abort" in one_line(refused.value)


def test_a_failed_deploy_does_not_make_the_expand_live(setup: Setup) -> None:
    expand = expand_commit(setup, at=T0)
    setup.deploy("staging", expand, T0 + HOUR, status="failed")
    assert setup.status("users-split", "staging", T0 + 2 * HOUR).phase == "expand_pending"


def test_a_contract_live_before_the_finish_is_flagged(setup: Setup) -> None:
    expand = expand_commit(setup, at=T0)
    setup.deploy("staging", expand, T0 + HOUR)
    setup.step("progress", "users-split", "staging", T0 + 2 * HOUR, done=5, total=50)
    contract = setup.commit("contract", "Migration: users-split contract", at=T0 + 3 * HOUR)
    setup.deploy("staging", contract, T0 + 4 * HOUR)
    status = setup.status("users-split", "staging", T0 + 5 * HOUR)
    assert (status.phase, status.flags) == ("done", ("contract_before_finish",))
    assert status.next_step.startswith("the contract went live before the migration finished")
    # The job still moving data may report, and its finish clears the flag.
    setup.step("finish", "users-split", "staging", T0 + 6 * HOUR)
    assert setup.status("users-split", "staging", T0 + 7 * HOUR).flags == ()


def test_a_kind_without_data_soaks_into_cleanup_due_by_its_own_rules(tmp_path: Path) -> None:
    settings = MigrationSettings(kinds=MappingProxyType(
        {"config": MigrationRules(cleanup_due_days=3.0, soak_hours=24.0, moves_data=False)}))
    made = Setup(tmp_path, settings)
    try:
        expand = made.commit("flag", "Migration: new-flag expand", "Migration-Kind: config", at=T0)
        made.deploy("production", expand, T0 + HOUR)
        soaking = made.status("new-flag", "production", T0 + 24 * HOUR)
        assert (soaking.kind, soaking.phase, soaking.since) == ("config", "expanded", T0 + HOUR)
        assert soaking.next_step.startswith("let it soak until 2026-03-03 10:00 UTC")
        soaked = made.status("new-flag", "production", T0 + 25 * HOUR)
        assert (soaked.phase, soaked.since, soaked.due) == ("cleanup_due", T0 + 25 * HOUR, T0 + 25 * HOUR + 3 * DAY)
        # A contract with no data moved and no progress: nothing to flag.
        contract = made.commit("flag gone", "Migration: new-flag contract", at=T0 + 26 * HOUR)
        made.deploy("production", contract, T0 + 27 * HOUR)
        assert made.status("new-flag", "production", T0 + 28 * HOUR).flags == ()
    finally:
        made.world.close()


def test_severity_boundaries_at_fixed_times(tmp_path: Path) -> None:
    settings = MigrationSettings(kinds=MappingProxyType({"database": MigrationRules(cleanup_due_days=4.0)}))
    made = Setup(tmp_path, settings)
    try:
        expand = expand_commit(made, at=T0)
        made.deploy("staging", expand, T0)
        made.step("finish", "users-split", "staging", T0 + HOUR)
        since = T0 + HOUR
        second = timedelta(seconds=1)
        expected = [(since, "ok"), (since + 3 * DAY - second, "ok"), (since + 3 * DAY, "due_soon"),
                    (since + 4 * DAY - second, "due_soon"), (since + 4 * DAY, "overdue"),
                    (since + 8 * DAY - second, "overdue"), (since + 8 * DAY, "critical")]
        for moment, level in expected:
            status = made.status("users-split", "staging", moment)
            assert (status.severity, status.due) == (level, since + 4 * DAY), moment
        backlog = evaluate(made.world, now=since + 8 * DAY)
        assert backlog.overdue() == 1 and backlog.overdue("production") == 0
        assert backlog.statuses[0].name == "users-split" and backlog.statuses[0].env == "staging"  # most urgent first
    finally:
        made.world.close()


# -- progress, stalls, snoozes, waivers ---------------------------------------------------------


def test_progress_rate_and_eta_from_the_reports(setup: Setup) -> None:
    expand = expand_commit(setup, at=T0)
    setup.deploy("staging", expand, T0)
    setup.step("progress", "users-split", "staging", T0 + HOUR, done=0, total=1000)
    setup.step("progress", "users-split", "staging", T0 + 2 * HOUR, done=100)
    setup.step("progress", "users-split", "staging", T0 + 3 * HOUR, done=200)
    progress = setup.status("users-split", "staging", T0 + 3 * HOUR).progress
    assert progress is not None
    assert (progress.done, progress.total, progress.rate) == (200, 1000, 100.0)
    assert progress.eta == T0 + 3 * HOUR + 8 * HOUR and progress.at == T0 + 3 * HOUR
    item = setup.status("users-split", "staging", T0 + 3 * HOUR).to_json()["progress"]
    assert item == {"done": 200, "total": 1000, "rate": 100.0, "eta": "2026-03-02T20:00:00.000000Z"}
    # A job that started over: the rate counts from there.
    setup.step("progress", "users-split", "staging", T0 + 4 * HOUR, done=0)
    setup.step("progress", "users-split", "staging", T0 + 6 * HOUR, done=100)
    again = setup.status("users-split", "staging", T0 + 6 * HOUR).progress
    assert again is not None and again.rate == 50.0


def test_a_heartbeat_keeps_a_migration_from_stalling(setup: Setup) -> None:
    expand = expand_commit(setup, at=T0)
    setup.deploy("staging", expand, T0)
    setup.step("progress", "users-split", "staging", T0, done=1, total=10)
    assert not setup.status("users-split", "staging", T0 + timedelta(minutes=29)).stalled
    stalled = setup.status("users-split", "staging", T0 + timedelta(minutes=30))
    assert stalled.stalled and stalled.next_step.startswith("the migration job has not reported since")
    message = setup.step("progress", "users-split", "staging", T0 + timedelta(minutes=31), done=1)
    assert message.startswith("already at 1 of 10")
    assert not setup.status("users-split", "staging", T0 + timedelta(minutes=32)).stalled
    events = [e.kind for e in setup.world.log.events() if e.kind.startswith("migration.")]
    assert events == ["migration.progressed"]  # the heartbeat wrote no event


def test_a_snooze_moves_the_reminder_not_the_due_date(setup: Setup) -> None:
    expand = expand_commit(setup, at=T0)
    setup.deploy("staging", expand, T0)
    setup.step("finish", "users-split", "staging", T0)
    overdue_at = T0 + 15 * DAY
    until = overdue_at + 2 * DAY
    setup.step("snooze", "users-split", "staging", overdue_at, until=until, reason="after the freeze")
    status = setup.status("users-split", "staging", overdue_at)
    assert (status.severity, status.due, status.snoozes, status.snoozed_until) == (
        "overdue", T0 + 14 * DAY, 1, until)
    assert remind(setup.world, evaluate(setup.world, now=overdue_at)) == []  # snoozed: no reminder
    assert setup.step("snooze", "users-split", "staging", overdue_at, until=until,
                      reason="again").startswith("already snoozed")
    setup.step("snooze", "users-split", "staging", overdue_at, until=until + DAY, reason="longer")
    assert setup.status("users-split", "staging", overdue_at).snoozes == 2
    after = until + 2 * DAY
    setup.clock.at = after
    backlog = evaluate(setup.world, now=after)
    assert backlog.find("users-split", "staging").snoozed_until is None  # type: ignore[union-attr]
    [event_id] = remind(setup.world, backlog)
    event = next(e for e in setup.world.log.events() if e.id == event_id)
    assert event.env == "staging"
    assert json.loads(event.detail) == {"items": [{
        "name": "users-split", "env": "staging", "severity": "overdue", "due": "2026-03-16T09:00:00.000000Z",
        "next": "ship the contract: a commit with 'Migration: users-split contract'"}]}
    assert remind(setup.world, backlog) == []  # once a day
    setup.clock.at = after + DAY
    assert len(remind(setup.world, evaluate(setup.world, now=after + DAY))) == 1


def test_waive_and_abort_are_terminal_and_repeatable(setup: Setup) -> None:
    expand = expand_commit(setup, at=T0)
    setup.deploy("staging", expand, T0)
    setup.deploy("production", expand, T0)
    assert setup.step("waive", "users-split", "staging", T0 + HOUR, reason="table dropped") == \
        "waived: users-split in staging (table dropped)"
    waived = setup.status("users-split", "staging", T0 + 2 * HOUR)
    assert (waived.phase, waived.reason, waived.since, waived.severity) == ("waived", "table dropped", T0 + HOUR, "ok")
    assert setup.step("waive", "users-split", "staging", T0 + 2 * HOUR, reason="x").startswith("already waived")
    with pytest.raises(StepRefused) as refused:
        setup.step("abort", "users-split", "staging", T0 + 2 * HOUR, reason="x")
    assert one_line(refused.value).endswith("allowed now: note")
    setup.step("abort", "users-split", "production", T0 + 3 * HOUR, reason="[red]gave up[/red]\x1b[2J")
    aborted = setup.status("users-split", "production", T0 + 4 * HOUR)
    assert (aborted.phase, aborted.reason) == ("aborted", "[red]gave up[/red]")  # cleaned, kept as plain text
    kinds = [e.kind for e in setup.world.log.events() if e.kind.startswith("migration.")]
    assert sorted(kinds) == ["migration.aborted", "migration.waived"]


# -- steps refused, repeated, bad input ------------------------------------------------------


def test_illegal_steps_name_the_allowed_ones_and_repeats_change_nothing(setup: Setup) -> None:
    expand = expand_commit(setup, at=T0)
    with pytest.raises(StepRefused) as refused:
        setup.step("finish", "users-split", "staging", T0)
    assert one_line(refused.value) == ("cannot finish users-split in staging: its expand is not live there; "
                                       "allowed now: note, waive, abort")
    setup.deploy("staging", expand, T0)
    setup.step("finish", "users-split", "staging", T0 + HOUR)
    before = setup.world.log.last_event_id()
    assert setup.step("finish", "users-split", "staging", T0 + 2 * HOUR) == \
        "already finished: users-split in staging at 2026-03-02 10:00 UTC"
    with pytest.raises(StepRefused) as again:
        setup.step("progress", "users-split", "staging", T0 + 2 * HOUR, done=3)
    assert "it was finished at 2026-03-02 10:00 UTC; allowed now: note, snooze, waive, abort" in one_line(again.value)
    setup.step("note", "users-split", "staging", T0 + 2 * HOUR, text="backfill verified")
    assert setup.step("note", "users-split", "staging", T0 + 3 * HOUR, text="backfill verified").startswith("already")
    assert setup.world.log.last_event_id() == before + 1  # the note alone
    assert setup.status("users-split", "staging", T0 + 3 * HOUR).note == "backfill verified"


@pytest.mark.parametrize(("action", "env", "kwargs", "expected"), [
    ("progress", "staging", {"done": -1}, "--done must be a number of at least 0"),
    ("progress", "staging", {"done": 5, "total": 4}, "--total 4 is less than --done 5"),
    ("snooze", "staging", {"until": T0 - HOUR, "reason": "x"}, "is in the past"),
    ("snooze", "staging", {"until": T0 + HOUR, "reason": "  "}, "--reason must not be empty"),
    ("waive", "staging", {"reason": ""}, "--reason must not be empty"),
    ("note", "staging", {"text": "\x1b[2J"}, "the note must not be empty"),
    ("finish", "nowhere", {}, "unknown environment 'nowhere'"),
    ("finish", None, {}, "needs an environment"),
    ("jump", "staging", {}, "unknown migration step 'jump'"),
])
def test_bad_values_are_one_line(setup: Setup, action: str, env: str | None, kwargs: dict[str, Any],
                                 expected: str) -> None:
    expand_commit(setup, at=T0)
    with pytest.raises(AndonError) as error:
        setup.step(action, "users-split", env, T0, **kwargs)
    assert expected in one_line(error.value)
    assert not isinstance(error.value, StepRefused)


def test_a_total_below_done_across_reports_is_refused(setup: Setup) -> None:
    setup.deploy("staging", expand_commit(setup, at=T0), T0)
    setup.step("progress", "users-split", "staging", T0, done=1, total=10)
    with pytest.raises(AndonError) as error:
        setup.step("progress", "users-split", "staging", T0, done=11)
    assert one_line(error.value) == "--done 11 is more than the total 10 of users-split in staging (give --total)"


def test_unknown_and_badly_named_migrations(setup: Setup) -> None:
    expand_commit(setup, at=T0)
    with pytest.raises(UnknownMigration) as unknown:
        setup.step("finish", "users-merge", "staging", T0)
    assert one_line(unknown.value).startswith("no migration 'users-merge'")
    with pytest.raises(AndonError) as bad:
        setup.step("finish", "[b]x y", "staging", T0)
    assert one_line(bad.value).startswith("bad migration name '[b]x y'")


def test_add_a_migration_without_a_trailer(setup: Setup) -> None:
    setup.deploy("staging", setup.base, T0 - DAY)
    assert setup.step("add", "queue-move", "staging", T0, kind="infrastructure", refs=["old-queue"]) == \
        "added: queue-move (infrastructure), live from now in staging"
    staging = setup.status("queue-move", "staging", T0 + HOUR)
    production = setup.status("queue-move", "production", T0 + HOUR)
    assert (staging.phase, staging.kind, staging.since, staging.expand) == ("expanded", "infrastructure", T0, None)
    assert (production.phase, production.since) == ("expand_pending", T0)
    assert setup.step("add", "queue-move", "staging", T0 + HOUR, kind="infrastructure",
                      refs=["old-queue"]).startswith("already added")
    with pytest.raises(StepRefused):
        setup.step("add", "queue-move", "staging", T0 + HOUR, kind="database")
    with pytest.raises(AndonError) as error:
        setup.step("add", "other", None, T0, kind="mainframe")
    assert "unknown migration kind 'mainframe'" in one_line(error.value)
    expand_commit(setup, at=T0)
    assert setup.step("add", "users-split", None, T0, kind="database").startswith("already tracked")
    assert setup.step("add", "everywhere", None, T0 + HOUR, kind="config") == \
        "added: everywhere (config), live from now in staging, production"


# -- evidence --------------------------------------------------------------------------------


def test_evidence_from_git_grep_at_the_branch_head(setup: Setup) -> None:
    model = "class User:\n" + "\n" * 39 + "    full_name = Column()\n"
    expand = expand_commit(setup, "users-split", T0, "Migration-Refs: full_name, fullName",
                           files={"app/models/user.py": model, "app/views.py": "x = user.fullName\n"})
    setup.commit("queue", "Migration: queue-move expand", "Migration-Refs: old_queue", at=T0,
                 files={"app/q.py": "nothing here\n"})
    setup.deploy("staging", expand, T0)
    status = setup.status("users-split", "staging", T0 + HOUR)
    assert status.evidence is not None and status.evidence.count == 2
    assert status.evidence.text == "old code still referenced in 2 places: app/models/user.py:41, app/views.py:1"
    assert status.next_step.startswith("run the migration")
    assert setup.status("queue-move", "staging", T0 + HOUR).evidence.text == "no old-shape code found yet"
    setup.step("finish", "users-split", "staging", T0 + HOUR)
    assert setup.status("users-split", "staging", T0 + 2 * HOUR).next_step.startswith("remove the old code (2 places)")
    setup.commit("drop", at=T0 + 2 * HOUR, files={"app/models/user.py": "class User:\n", "app/views.py": "\n"})
    cleaned = setup.status("users-split", "staging", T0 + 3 * HOUR)
    assert cleaned.evidence is not None and cleaned.evidence.count == 0
    assert cleaned.evidence.text == "looks cleaned up — ship the contract?"
    assert setup.status("users-split", "staging", T0 + 3 * HOUR, evidence=False).evidence is None


def test_malformed_trailers_are_problems_cold_and_warm(setup: Setup) -> None:
    setup.commit("bad", "Migration: [bold]x[/] expand", at=T0)
    expand_commit(setup, at=T0 + HOUR)
    for _ in range(2):  # worked out, then read back from the cache
        backlog = evaluate(setup.world, now=T0 + 2 * HOUR)
        assert [p.text for p in backlog.problems] == ["Migration: [bold]x[/] expand"]
        assert [s.name for s in backlog.statuses] == ["users-split", "users-split"]


def test_without_a_repository_added_migrations_still_show(tmp_path: Path) -> None:
    clock = Clock(T0)
    config = Config(environments=MappingProxyType({"staging": Environment("staging")}))
    world = World(History(None), config, tmp_path / "deploys.db", clock)
    try:
        apply(world, "add", "queue-move", None, who="alice", kind="config")
        backlog = evaluate(world, now=T0 + HOUR)
        assert backlog.error == "migration markers unavailable: not in a git repository"
        assert [(s.name, s.phase) for s in backlog.statuses] == [("queue-move", "expanded")]
    finally:
        world.close()


# -- the cache -------------------------------------------------------------------------------------


class GitCalls:
    """The git commands run from now on (every process, whichever layer started it), from GIT_TRACE."""

    def __init__(self, trace: Path) -> None:
        self.trace = trace
        self.clear()

    def clear(self) -> None:
        self.trace.write_text("")

    def commands(self) -> list[str]:
        found = []
        for line in self.trace.read_text().splitlines():
            _, marker, rest = line.partition("trace: built-in: git ")
            if marker:
                found.append(next(word for word in rest.split() if not word.startswith("-")))
        return found

    def count(self, command: str) -> int:
        return self.commands().count(command)

    def __contains__(self, command: str) -> bool:
        return command in self.commands()


@pytest.fixture
def git_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GitCalls:
    trace = tmp_path / "git-trace.txt"
    monkeypatch.setenv("GIT_TRACE", str(trace))
    return GitCalls(trace)


def test_a_warm_evaluation_runs_no_git_walk_and_a_new_deploy_invalidates_it(setup: Setup, git_calls: GitCalls) -> None:
    expand = expand_commit(setup, at=T0, files={"a.py": "full_name\n"})
    setup.commit("more", "Migration-Refs: full_name", "Migration: users-split expand", at=T0 + HOUR)
    setup.deploy("staging", expand, T0)
    calls = git_calls
    calls.clear()
    cold = evaluate(setup.world, now=T0 + HOUR)
    assert "log" in calls and "grep" in calls
    calls.clear()
    warm = evaluate(setup.world, now=T0 + HOUR)
    assert warm == cold
    assert "log" not in calls and "grep" not in calls and len(calls.commands()) <= 2, calls.commands()
    setup.deploy("production", expand, T0 + 2 * HOUR)
    calls.clear()
    after = evaluate(setup.world, now=T0 + 3 * HOUR)
    assert calls.count("log") == 1 and "grep" not in calls  # same head: the search is still good
    assert after.find("users-split", "production").phase == "expanded"  # type: ignore[union-attr]


def test_a_cache_entry_that_is_not_ours_is_worked_out_again(setup: Setup) -> None:
    expand = expand_commit(setup, at=T0)
    setup.deploy("staging", expand, T0)
    evaluate(setup.world, now=T0)
    with setup.world.log.immediate() as conn:
        conn.execute("UPDATE migration_cache SET value = '{\"migrations\": 3}'")
    assert setup.status("users-split", "staging", T0 + HOUR).phase == "expanded"


# -- rollbacks -------------------------------------------------------------------------------------


def test_rollback_holds_for_a_target_before_the_expand(setup: Setup, git_calls: GitCalls) -> None:
    expand = expand_commit(setup, at=T0)
    later = setup.commit("later", at=T0 + HOUR)
    setup.deploy("staging", setup.base, T0)
    setup.deploy("staging", expand, T0 + HOUR)
    setup.deploy("staging", later, T0 + 2 * HOUR)
    setup.clock.at = T0 + 3 * HOUR
    assert rollback_holds(setup.world, "staging", setup.base) == []  # only expanded: nothing moved yet
    setup.step("progress", "users-split", "staging", T0 + 3 * HOUR, done=1)
    calls = git_calls
    calls.clear()
    holds = rollback_holds(setup.world, "staging", setup.base)
    assert "rev-list" not in calls and "log" not in calls  # a deployed target: answered from the cache
    assert [(h.name, h.phase, h.expand) for h in holds] == [("users-split", "migrating", expand)]
    assert holds[0].message == (f"users-split is migrating in staging and the rollback target {setup.base[:7]} "
                                f"predates its expand {expand[:7]}: the old code cannot read the new shape "
                                "(--despite-migration users-split to roll back anyway)")
    assert rollback_holds(setup.world, "staging", expand) == []
    # A target never deployed: asked of git in one batch.
    other = setup.repo.git("commit-tree", "-m", "x", "-p", setup.base, f"{setup.base}^{{tree}}")
    calls.clear()
    assert [h.name for h in rollback_holds(setup.world, "staging", other)] == ["users-split"]
    assert calls.count("rev-list") + calls.count("merge-base") >= 1
    assert [h.name for h in rollback_holds(setup.world, "staging", "f" * 40)] == ["users-split"]  # cannot tell
    assert "cannot tell" in rollback_holds(setup.world, "staging", "f" * 40)[0].message


def test_rollback_holds_with_many_expands_scan_the_target_once(setup: Setup, monkeypatch: pytest.MonkeyPatch,
                                                               git_calls: GitCalls) -> None:
    monkeypatch.setattr("backend.migrations.ASK_GIT_UP_TO", 0)
    expand = expand_commit(setup, at=T0)
    setup.deploy("staging", expand, T0)
    setup.step("progress", "users-split", "staging", T0 + HOUR, done=1)
    other = setup.repo.git("commit-tree", "-m", "x", "-p", setup.base, f"{setup.base}^{{tree}}")
    child = setup.repo.git("commit-tree", "-m", "y", "-p", expand, f"{expand}^{{tree}}")
    calls = git_calls
    calls.clear()
    assert [h.name for h in rollback_holds(setup.world, "staging", other[:12])] == ["users-split"]
    assert calls.count("log") == 1 and "rev-list" not in calls
    assert rollback_holds(setup.world, "staging", child) == []
    assert "cannot tell" in rollback_holds(setup.world, "staging", "f" * 40)[0].message


# -- reminders across processes, a broken log -------------------------------------------------------


REMINDER_SCRIPT = """
import sys, time
from datetime import datetime
from types import MappingProxyType
from backend.config import Config, Environment
from backend.history import History
from backend.migrations import evaluate, remind
from backend.world import World
from pathlib import Path
now = datetime.fromisoformat(sys.argv[3])
config = Config(branch="main", environments=MappingProxyType({e: Environment(e) for e in ("staging", "production")}))
world = World(History.discover(Path(sys.argv[1])), config, Path(sys.argv[2]), lambda: now)
backlog = evaluate(world, now=now)
while time.time() < float(sys.argv[4]):
    time.sleep(0.001)
print(len(remind(world, backlog)))
world.close()
"""


def test_a_reminder_is_sent_once_by_two_processes_at_once(setup: Setup, tmp_path: Path) -> None:
    expand = expand_commit(setup, at=T0)
    setup.deploy("staging", expand, T0)
    setup.deploy("production", expand, T0)
    setup.step("finish", "users-split", "staging", T0)
    setup.step("finish", "users-split", "production", T0)
    evaluate(setup.world, now=T0)  # warm the cache: both processes then decide at the same moment
    script = tmp_path / "remind.py"
    script.write_text(REMINDER_SCRIPT)
    import time
    start = time.time() + 1.5
    now = (T0 + 15 * DAY).isoformat()
    root = Path(__file__).resolve().parent.parent
    processes = [subprocess.Popen([sys.executable, str(script), str(setup.repo.path), str(setup.world.db_path), now,
                                   str(start)], stdout=subprocess.PIPE, text=True, cwd=root) for _ in range(2)]
    answers = [p.communicate(timeout=60)[0].strip() for p in processes]
    assert sorted(answers) == ["0", "2"], answers  # one wrote both digests, the other none
    reminders = [e for e in setup.world.log.events() if e.kind == "migration.reminder"]
    assert sorted((e.env, tuple(item["env"] for item in json.loads(e.detail)["items"])) for e in reminders) == [
        ("production", ("production",)), ("staging", ("staging",))]


def test_a_broken_deploy_log_is_one_line(setup: Setup, tmp_path: Path) -> None:
    expand_commit(setup, at=T0)
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    world = make_world(setup.repo, broken, setup.clock)
    with pytest.raises(StoreError) as error:
        evaluate(world)
    assert "deploy log" in one_line(error.value)
    with pytest.raises(StoreError):
        apply(world, "finish", "users-split", "staging", who="alice")
