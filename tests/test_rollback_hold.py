"""Migrations hold a rollback: ``andon rollback`` refuses (exit 9) a target that predates the expand
of a migration ``migrating`` or later, unless ``--despite-migration NAME`` names it; the automatic
rollback after an unhealthy deploy is held the same way. Real repositories with trailers, the
real rollback runner and script, a real SQLite log, a real webhook receiver for the chat."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backend.models import UNHEALTHY
from backend.rollback import MigrationHold, request_rollback, stop_after_unhealthy
from backend.store import DeployLog
from backend.world import resolve_world
from tests.conftest import Repo, one_line
from tests.test_cli import andon, fails, ok, toml_list
from tests.test_notify import Receiver, receiver  # noqa: F401 - the fixture
from tests.test_rollback import PY, ROLLBACK_SCRIPT

T0 = datetime.now(UTC) - timedelta(days=1)


class Held:
    """production ran ``base`` then the expand of users-email (whose migration is running); the
    chat goes to a webhook; rollbacks run a script that appends the target SHA to ``ran``."""

    def __init__(self, repo: Repo, tmp_path: Path, receiver: Receiver) -> None:  # noqa: F811
        self.repo, self.path = repo, repo.path
        self.ran = tmp_path / "ran.txt"
        (tmp_path / "rollback.py").write_text(ROLLBACK_SCRIPT)
        self.base = repo.commit("base")
        self.expand = repo.commit("Add users.email_address\n\nMigration: users-email expand")
        self.after = repo.commit("Use the new column")
        self.db = repo.path / ".git" / "andon" / "deploys.db"
        self.hook = {"ANDON_TEST_HOOK": receiver.url()}
        self.receiver = receiver
        rollback = toml_list(PY, str(tmp_path / "rollback.py"), "{sha}", str(self.ran))
        (self.path / "andon.toml").write_text(
            f"[environments.production]\nrollback = {rollback}\nrollback_grace_seconds = 0\nauto_rollback = true\n"
            '[[notify]]\nkind = "webhook"\nurl_env = "ANDON_TEST_HOOK"\n')
        self.record(self.base, self.expand, at=T0)

    def record(self, *shas: str, status: str = "succeeded", at: datetime | None = None) -> list[int]:
        """Deploys of ``shas`` in order, a minute apart from ``at`` (default: now)."""
        log = self.log()
        start = at or datetime.now(UTC)
        try:
            return [log.record("production", sha, status, who="ci", at=start + timedelta(minutes=n)).id
                    for n, sha in enumerate(shas)]
        finally:
            log.close()

    def log(self) -> DeployLog:
        return DeployLog.open(self.db, create_parent=True)

    def migrate(self) -> None:
        ok("migration", "progress", "users-email", "--env", "production", "--done", "10", "--total", "100",
           cwd=self.path)

    def rollbacks(self) -> list[Any]:
        log = self.log()
        try:
            return log.rollbacks("production")
        finally:
            log.close()

    def events(self, kind: str) -> list[tuple[int | None, str, dict[str, Any]]]:
        log = self.log()
        try:
            return [(event.deploy_id, event.who, json.loads(event.detail)) for event in reversed(log.events(1000))
                    if event.kind == kind]
        finally:
            log.close()

    def chat(self, kind: str) -> list[dict[str, Any]]:
        bodies = [json.loads(received.body) for received in self.receiver.accepted("/hook")]
        return [body for body in bodies if body["kind"] == kind]


@pytest.fixture
def held(repo: Repo, tmp_path: Path, receiver: Receiver) -> Held:  # noqa: F811
    return Held(repo, tmp_path, receiver)


def wait_for_rollback(held: Held, seconds: float = 60) -> Any:
    import time

    deadline = time.monotonic() + seconds
    while True:
        found = held.rollbacks()
        if found and not found[0].active:
            return found[0]
        assert time.monotonic() < deadline, "the rollback did not end"
        time.sleep(0.05)


def test_a_rollback_past_the_expand_of_a_running_migration_is_exit_9_and_nothing_runs(held: Held) -> None:
    held.migrate()
    line = fails("rollback", "--env", "production", "--reason", "errors up", cwd=held.path, code=9, env=held.hook)
    assert line == (f"andon: error: rollback of production to {held.base[:7]} (deploy #1) held, nothing runs: "
                    f"users-email is migrating in production and the rollback target {held.base[:7]} predates its "
                    f"expand {held.expand[:7]}: the old code cannot read the new shape (--despite-migration "
                    "users-email to roll back anyway)")
    assert held.rollbacks() == [] and not held.ran.exists()
    log = held.log()
    try:
        assert not log.line("production").stopped
    finally:
        log.close()
    [(deploy_id, who, detail)] = held.events("rollback.held")
    assert deploy_id is None and who == "Test Author"
    assert (detail["automatic"], detail["target_sha"], detail["target_deploy_id"], detail["reason"]) == (
        False, held.base, 1, "errors up")
    assert detail["holds"] == [{"name": "users-email", "phase": "migrating", "expand": held.expand}]
    [said] = held.chat("rollback.held")  # told in chat by the refused command itself
    assert said["title"] == f"Rollback of production ({held.path.name}) to {held.base[:7]} held by a migration, " \
                            "requested by Test Author"
    assert f"Migration: users-email: migrating here, its expand {held.expand[:7]} is not in {held.base[:7]}" \
        in said["text"]
    assert "Roll back anyway: andon rollback --env production --despite-migration users-email" in said["text"]


def test_despite_migration_must_name_every_holding_migration_and_then_rolls_back(held: Held) -> None:
    held.migrate()
    fails("rollback", "--env", "production", "--despite-migration", "orders-split", cwd=held.path, code=9,
          env=held.hook)
    assert held.rollbacks() == []
    assert fails("rollback", "--env", "production", "--despite-migration", "not a name", cwd=held.path, code=2) \
        .startswith("andon: error: argument --despite-migration: 'not a name' is not a migration name")
    out = ok("rollback", "--env", "production", "--reason", "errors up", "--despite-migration", "users-email",
             cwd=held.path, env=held.hook).out
    assert out.startswith(f"stopped the line and requested rollback #1 of production to {held.base[:7]}")
    ended = wait_for_rollback(held)
    assert ended.status == "succeeded"
    assert ended.reason == f"errors up; despite migration users-email (migrating, expand {held.expand[:7]})"
    assert held.ran.read_text().split()[0] == held.base
    assert len(held.events("rollback.held")) == 1  # the first, refused attempt


def test_a_target_that_holds_the_expand_or_a_migration_not_yet_running_does_not_hold(held: Held) -> None:
    ok("rollback", "--env", "production", "--to", held.base, cwd=held.path, env=held.hook)  # expanded only
    assert wait_for_rollback(held).status == "succeeded"
    ok("resume", "--env", "production", cwd=held.path)
    held.record(held.expand, held.after)
    held.migrate()
    ok("rollback", "--env", "production", cwd=held.path, env=held.hook)  # to the expand: it contains itself
    assert wait_for_rollback(held).target_sha == held.expand
    assert held.events("rollback.held") == []


def test_the_automatic_rollback_after_an_unhealthy_deploy_is_held_and_the_line_stays_stopped(held: Held) -> None:
    held.migrate()
    # The expand deployed again turned out unhealthy: the last good deploy before it is base.
    [bad] = held.record(held.expand, status=UNHEALTHY)
    world = resolve_world(held.path)
    try:
        deploy = world.log.get(bad)
        auto = stop_after_unhealthy(world, deploy, "3 failed rounds in a row", world.config.environment("production"))
        assert auto.stopped and auto.rollback is None
        assert auto.error.startswith(f"no automatic rollback: rollback of production to {held.base[:7]} (deploy #1) "
                                     "held, nothing runs: users-email is migrating in production")
        assert world.log.line("production").stopped and world.log.rollbacks("production") == []
        from backend.notify import deliver_pending

        deliver_pending(world, environ=held.hook)
    finally:
        world.close()
    [(deploy_id, who, detail)] = held.events("rollback.held")
    assert (deploy_id, who, detail["automatic"]) == (bad, "andon", True)
    [said] = held.chat("rollback.held")
    assert said["title"].endswith("held by a migration, automatically, after an unhealthy deploy")
    assert f"Caused by: deploy #{bad} of {held.expand[:7]}" in said["text"]
    assert "Line: stays stopped until someone resumes it or rolls back" in said["text"]
    assert not held.ran.exists()


def test_despite_from_python_as_the_dashboard_asks(held: Held) -> None:
    held.migrate()
    world = resolve_world(held.path)
    try:
        with pytest.raises(MigrationHold) as caught:
            request_rollback(world, "production", "alice", "bad", spawn=False)
        assert [(hold.name, hold.phase, hold.expand) for hold in caught.value.holds] == [
            ("users-email", "migrating", held.expand)]
        assert caught.value.target.sha == held.base and one_line(caught.value)
        requested = request_rollback(world, "production", "alice", "bad", spawn=False, despite=("users-email",))
        assert requested.rollback.target_sha == held.base
        assert requested.rollback.reason.startswith("bad; despite migration users-email (migrating, ")
    finally:
        world.close()


def test_a_refusal_that_would_come_anyway_is_not_a_hold(held: Held) -> None:
    held.migrate()
    world = resolve_world(held.path)
    try:
        request_rollback(world, "production", "alice", "first", spawn=False, despite=("users-email",))
    finally:
        world.close()
    result = andon("rollback", "--env", "production", cwd=held.path, env=held.hook)
    assert result.code == 7, result.err  # one is under way: that is the answer, not the migration
    assert len(held.events("rollback.held")) == 0


def test_a_target_the_log_chose_after_the_check_is_checked_again_and_a_held_one_cancelled(
        held: Held, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window between the check and the request's transaction: a deploy recorded in between
    changes the last good deploy. (Made here by hiding it from the check: the race itself cannot
    be timed from a test.)"""
    held.migrate()
    monkeypatch.setattr(DeployLog, "last_good", lambda self, env: None)
    world = resolve_world(held.path)
    try:
        with pytest.raises(MigrationHold):
            request_rollback(world, "production", "alice", "bad", spawn=False)
        [cancelled] = world.log.rollbacks("production")
        assert (cancelled.status, cancelled.target_sha) == ("cancelled", held.base)
    finally:
        world.close()
    assert [detail["target_sha"] for _, _, detail in held.events("rollback.held")] == [held.base]
