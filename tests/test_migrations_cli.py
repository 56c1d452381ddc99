"""``andon migrations`` and ``andon migration STEP``, run as real processes on real repositories
whose commits carry ``Migration:`` trailers (malformed ones too), with a real SQLite log; and the
reminder digest ``andon watch`` sends, delivered once to a real webhook receiver on 127.0.0.1
however many watchers run."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backend.store import DeployLog
from tests.conftest import Repo
from tests.test_cli import _argv, _env, fails, ok
from tests.test_notify import Receiver, receiver  # noqa: F401 - the fixture

NOW = datetime.now(UTC)
FUTURE = (NOW + timedelta(days=30)).strftime("%Y-%m-%d")
FUTURE_TIME = (NOW + timedelta(days=40)).strftime("%Y-%m-%dT09:00:00Z")

EXPAND = "Add users.email_address\n\nMigration: users-email expand\nMigration-Refs: old_email"
FLAGS = "Feature flags move to the new service\n\nMigration: flags-service expand\nMigration-Kind: config"
MALFORMED = "Try a trailer\n\nMigration: has space expand"
MARKUP = "Markup in a trailer\n\nMigration: [bold]x[/] expand"


class Shop:
    """A repository with two migrations' expands (users-email moves data, flags-service does not)
    and two malformed trailers; production runs the expands since ``days`` ago, staging runs none."""

    def __init__(self, repo: Repo, *, days: float = 2) -> None:
        self.repo, self.path = repo, repo.path
        self.base = repo.commit("base")
        (repo.path / "app.py").write_text("def old_email(user):\n    return user.email\n")
        repo.git("add", "app.py")
        self.expand = repo.commit(EXPAND)
        self.flags = repo.commit(FLAGS)
        repo.commit(MALFORMED)
        repo.commit(MARKUP)
        self.db = repo.path / ".git" / "andon" / "deploys.db"
        self.configure()
        log = DeployLog.open(self.db, create_parent=True)
        try:
            log.record("staging", self.base, "succeeded", who="ci", at=NOW - timedelta(days=days + 1))
            log.record("production", self.base, "succeeded", who="ci", at=NOW - timedelta(days=days + 1))
            log.record("production", self.flags, "succeeded", who="ci", at=NOW - timedelta(days=days))
        finally:
            log.close()

    def configure(self, extra: str = "") -> None:
        (self.path / "andon.toml").write_text(
            '[environments.production]\ndeploy = ["true"]\n[environments.staging]\ndeploy = ["true"]\n' + extra)

    def backlog(self, *args: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(ok("migrations", "--json", *args, cwd=self.path).out)
        return data

    def phase(self, name: str, env: str) -> str:
        [found] = [m for m in self.backlog()["migrations"] if (m["name"], m["env"]) == (name, env)]
        return str(found["phase"])

    def log_digest(self) -> str:
        """The log's rows, for "left intact" (what a refused command must not change)."""
        conn = sqlite3.connect(self.db)
        try:
            tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                                     " AND name NOT LIKE 'migration_cache%' ORDER BY name")]
            rows = {table: conn.execute(f"SELECT * FROM {table}").fetchall() for table in tables  # noqa: S608
                    if "cache" not in table}
        finally:
            conn.close()
        return hashlib.sha256(repr(rows).encode()).hexdigest()

    def events(self, prefix: str) -> list[tuple[str, str | None, dict[str, Any]]]:
        conn = sqlite3.connect(self.db)
        try:
            rows = conn.execute("SELECT kind, env, detail FROM events WHERE kind LIKE ? ORDER BY id",
                                (prefix + "%",)).fetchall()
        finally:
            conn.close()
        return [(kind, env, json.loads(detail)) for kind, env, detail in rows]


@pytest.fixture
def shop(repo: Repo) -> Shop:
    return Shop(repo)


# -- the steps -----------------------------------------------------------------------------------


def test_every_step_prints_its_line_and_repeating_one_that_took_effect_is_harmless(shop: Shop) -> None:
    cwd = shop.path
    step = ["migration"]
    assert ok(*step, "progress", "users-email", "--env", "production", "--done", "100", "--total", "1000",
              cwd=cwd).out == "recorded: users-email in production 100 of 1000 done\n"
    again = ok(*step, "progress", "users-email", "--env", "production", "--done", "100", cwd=cwd).out
    assert again.startswith("already at 100") and "heartbeat recorded" in again
    assert shop.phase("users-email", "production") == "migrating"
    assert ok(*step, "note", "users-email", "--env", "production", "batch 3 of 10", cwd=cwd).out == \
        "noted on users-email in production\n"
    assert ok(*step, "note", "users-email", "--env", "production", "--text", "batch 3 of 10", cwd=cwd).out == \
        "already noted on users-email in production\n"
    finished = ok(*step, "finish", "users-email", "--env", "production", cwd=cwd).out
    assert finished.startswith("recorded: users-email in production finished")
    assert ok(*step, "finish", "users-email", "--env", "production", cwd=cwd).out.startswith(
        "already finished: users-email in production at ")
    assert shop.phase("users-email", "production") == "cleanup_due"
    snoozed = ok(*step, "snooze", "users-email", "--env", "production", "--until", FUTURE, "--reason", "release freeze",
                 cwd=cwd).out
    assert snoozed.startswith(f"snoozed: users-email in production until {FUTURE} 00:00 UTC (snoozed 1 time")
    assert ok(*step, "snooze", "users-email", "--env", "production", "--until", FUTURE, "--reason", "freeze",
              cwd=cwd).out.startswith("already snoozed: users-email in production until ")
    assert ok(*step, "waive", "flags-service", "--env", "production", "--reason", "kept on purpose", cwd=cwd).out == \
        "waived: flags-service in production (kept on purpose)\n"
    assert ok(*step, "waive", "flags-service", "--env", "production", "--reason", "kept on purpose",
              cwd=cwd).out.startswith("already waived: flags-service in production")
    assert ok(*step, "abort", "users-email", "--env", "staging", "--reason", "never shipped there", cwd=cwd).out == \
        "aborted: users-email in staging (never shipped there)\n"
    assert ok(*step, "abort", "users-email", "--env", "staging", "--reason", "never shipped there",
              cwd=cwd).out.startswith("already aborted: users-email in staging")
    added = ok(*step, "add", "queue-move", "--kind", "infrastructure", "--env", "staging", "--refs", "old_queue",
               "legacy_q", cwd=cwd).out
    assert added == "added: queue-move (infrastructure), live from now in staging\n"
    assert ok(*step, "add", "queue-move", "--kind", "infrastructure", "--env", "staging", "--refs", "old_queue",
              "legacy_q", cwd=cwd).out.startswith("already added: queue-move (infrastructure) at ")
    backlog = {(m["name"], m["env"]): m for m in shop.backlog()["migrations"]}
    users = backlog["users-email", "production"]
    assert (users["phase"], users["snoozes"], users["note"]) == ("cleanup_due", 1, "batch 3 of 10")
    assert users["snoozed_until"].startswith(FUTURE)
    assert (backlog["flags-service", "production"]["phase"], backlog["flags-service", "production"]["reason"]) == \
        ("waived", "kept on purpose")
    assert backlog["users-email", "staging"]["phase"] == "aborted"
    assert backlog["queue-move", "staging"]["phase"] == "expanded"
    assert backlog["queue-move", "production"]["phase"] == "expand_pending"  # added for staging only
    kinds = [kind for kind, _, _ in shop.events("migration.")]
    assert kinds == ["migration.progressed", "migration.noted", "migration.finished", "migration.snoozed",
                     "migration.waived", "migration.aborted", "migration.added"]


def test_snooze_until_takes_a_time_or_a_span_from_now(shop: Shop) -> None:
    cwd = shop.path
    ok("migration", "finish", "users-email", "--env", "production", cwd=cwd)
    before = datetime.now(UTC)  # the span counts from when the command runs (NOW is when the module loaded)
    ok("migration", "snooze", "users-email", "--env", "production", "--until", "3d", "--reason", "freeze", cwd=cwd)
    after = datetime.now(UTC)
    [users] = [m for m in shop.backlog("--env", "production")["migrations"] if m["name"] == "users-email"]
    until = datetime.fromisoformat(users["snoozed_until"].replace("Z", "+00:00"))
    assert before + timedelta(days=3) - timedelta(seconds=1) <= until <= after + timedelta(days=3)
    ok("migration", "snooze", "users-email", "--env", "production", "--until", FUTURE_TIME, "--reason", "freeze",
       cwd=cwd)
    [users] = [m for m in shop.backlog("--env", "production")["migrations"] if m["name"] == "users-email"]
    assert (users["snoozed_until"], users["snoozes"]) == (FUTURE_TIME.replace("Z", ".000000Z"), 2)


def test_a_step_the_migration_cannot_take_now_is_exit_10_naming_the_allowed_ones(shop: Shop) -> None:
    before = shop.log_digest()
    line = fails("migration", "progress", "users-email", "--env", "staging", "--done", "5", cwd=shop.path, code=10)
    assert line == ("andon: error: cannot progress users-email in staging: its expand is not live there; "
                    "allowed now: note, waive, abort")
    assert fails("migration", "finish", "users-email", "--env", "staging", cwd=shop.path, code=10).endswith(
        "allowed now: note, waive, abort")
    assert shop.log_digest() == before
    ok("migration", "waive", "users-email", "--env", "production", "--reason", "not needed", cwd=shop.path)
    assert fails("migration", "finish", "users-email", "--env", "production", cwd=shop.path, code=10).endswith(
        "allowed now: note")


BAD_INPUT = [
    (("progress", "has space", "--env", "production", "--done", "1"), 2, "'has space' is not a migration name"),
    (("finish", "[bold]x[/]", "--env", "production"), 2, "'[bold]x[/]' is not a migration name"),
    (("progress", "users-email", "--env", "production", "--done", "-1"), 2, "must be 0 or more, not -1"),
    (("progress", "users-email", "--env", "production", "--done", "lots"), 2, "must be a whole number, not 'lots'"),
    (("progress", "users-email", "--env", "production"), 2, "the following arguments are required: --done"),
    (("progress", "users-email", "--env", "production", "--done", "9", "--total", "5"), 2,
     "--total 5 is less than --done 9"),
    (("snooze", "users-email", "--env", "production", "--until", "2001-01-01", "--reason", "x"), 2,
     "2001-01-01 00:00 UTC is not in the future"),
    (("snooze", "users-email", "--env", "production", "--until", "next tuesday", "--reason", "x"), 2,
     "'next tuesday' is not a time"),
    (("snooze", "users-email", "--env", "production", "--until", "3d", "--reason", " \x1b[2J "), 2,
     "--reason must say why (migration snooze)"),
    (("waive", "users-email", "--env", "production", "--reason", ""), 2, "--reason must say why (migration waive)"),
    (("abort", "users-email", "--env", "production"), 2, "the following arguments are required: --reason"),
    (("note", "users-email", "--env", "production"), 2, "the note is empty"),
    (("note", "users-email", "--env", "production", "a", "--text", "b"), 2, "give the note once"),
    (("add", "queue-move", "--kind", "database\x1b]0;x"), 2, "argument --kind: invalid choice"),
    (("add", "queue-move", "--env", "production", "--env", "staging"), 2, "migration add takes one --env"),
    (("teleport", "users-email"), 2, "invalid choice: 'teleport'"),
    (("finish", "users-email"), 2, "the following arguments are required: --env"),
    (("finish", "users-email", "--env", "moon"), 1, "unknown environment 'moon'"),
    (("finish", "users-email", "--env", "bad name"), 1, "environment name 'bad name' is not allowed"),
    (("finish", "nobody-knows", "--env", "production"), 1, "no migration 'nobody-knows' in git"),
]


@pytest.mark.parametrize(("args", "code", "says"), BAD_INPUT, ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _, _)
                                                                   in enumerate(BAD_INPUT)])
def test_bad_input_is_one_line_without_a_traceback_and_leaves_the_log_intact(
        shop: Shop, args: tuple[str, ...], code: int, says: str) -> None:
    before = shop.log_digest()
    line = fails("migration", *args, cwd=shop.path, code=code)
    assert says in line, line
    assert "\x1b" not in line
    assert shop.log_digest() == before


def test_read_only_refuses_every_step_before_writing(shop: Shop) -> None:
    before = shop.log_digest()
    line = fails("--read-only", "migration", "finish", "users-email", "--env", "production", cwd=shop.path, code=2)
    assert line == "andon: error: --read-only: andon migration finish writes to the log"
    assert shop.log_digest() == before


# -- the backlog ---------------------------------------------------------------------------------


MIGRATION_KEYS = {"name", "kind", "env", "phase", "since", "due", "severity", "progress", "stalled", "snoozes",
                  "snoozed_until", "evidence", "flags", "reason", "note", "expand", "contract", "next"}


def test_migrations_json_lists_every_migration_and_environment_and_the_malformed_trailers(shop: Shop) -> None:
    ok("migration", "progress", "users-email", "--env", "production", "--done", "40", "--total", "100",
       cwd=shop.path)
    data = shop.backlog()
    assert set(data) == {"migrations", "problems", "error"} and data["error"] is None
    assert all(set(item) == MIGRATION_KEYS for item in data["migrations"])
    found = {(m["name"], m["env"]): m for m in data["migrations"]}
    assert set(found) == {(name, env) for name in ("users-email", "flags-service") for env in ("production",
                                                                                                "staging")}
    users = found["users-email", "production"]
    assert (users["phase"], users["kind"], users["expand"], users["contract"]) == (
        "migrating", "database", shop.expand, None)
    assert (users["progress"]["done"], users["progress"]["total"]) == (40, 100)
    assert users["evidence"]["count"] == 1 and users["evidence"]["places"][0]["path"] == "app.py"
    assert (found["flags-service", "production"]["kind"], found["flags-service", "production"]["phase"]) == (
        "config", "cleanup_due")
    assert found["users-email", "staging"]["phase"] == "expand_pending"
    problems = sorted(data["problems"], key=lambda p: p["text"])
    assert [(p["text"], len(p["sha"])) for p in problems] == [("Migration: [bold]x[/] expand", 40),
                                                               ("Migration: has space expand", 40)]
    assert all(p["problem"] for p in problems)
    only = shop.backlog("--env", "staging")["migrations"]
    assert {m["env"] for m in only} == {"staging"} and len(only) == 2


def test_migrations_for_people_is_an_aligned_table_most_urgent_first_with_problem_lines(shop: Shop) -> None:
    ok("migration", "progress", "users-email", "--env", "production", "--done", "40", "--total", "100",
       cwd=shop.path)
    ok("migration", "note", "users-email", "--env", "production", "[red]not markup[/]", cwd=shop.path)
    out = ok("migrations", cwd=shop.path).out
    lines = out.splitlines()
    header = lines[0]
    assert header.split() == ["SEVERITY", "NAME", "ENV", "PHASE", "PROGRESS", "DUE", "NEXT"]
    rows = [line for line in lines[1:] if line[:1].isalpha() and not line.startswith("2 malformed")]
    assert len(rows) == 4
    for row in rows:  # aligned: every column starts where its heading does
        for heading in ("NAME", "ENV", "PHASE", "NEXT"):
            column = header.index(heading)
            assert row[column - 2:column] == "  " and row[column] != " ", (heading, row)
    [flags] = [row for row in rows if "flags-service" in row and "production" in row]
    due = flags[header.index("DUE"):].split()[0]
    assert flags.split()[3] == "cleanup_due" and due == (NOW + timedelta(days=13)).strftime("%Y-%m-%d")
    [users] = [row for row in rows if "users-email" in row and "production" in row]
    assert "40/100 40%" in users and "migrating" in users
    assert "    note: [red]not markup[/]" in lines
    assert "2 malformed Migration trailers (skipped; fix the commit message, or ignore it):" in lines
    assert any(line.startswith("  ") and "'Migration: has space expand':" in line for line in lines)
    assert "\x1b" not in out


def test_migrations_of_an_unknown_environment_is_one_line_exit_1(shop: Shop) -> None:
    assert fails("migrations", "--env", "moon", cwd=shop.path) == \
        "andon: error: unknown environment 'moon' (known: production, staging)"


def test_migrations_with_none_says_how_to_mark_one(repo: Repo) -> None:
    repo.commit("nothing to see")
    (repo.path / "andon.toml").write_text('[environments.production]\ndeploy = ["true"]\n')
    assert ok("migrations", cwd=repo.path).out == (
        "no migrations yet: mark one in a commit message ('Migration: NAME expand'), or andon migration add NAME\n")
    assert json.loads(ok("migrations", "--json", cwd=repo.path).out) == {"migrations": [], "problems": [],
                                                                          "error": None}


# -- the reminder digest -------------------------------------------------------------------------


def test_two_watchers_send_the_digest_of_overdue_cleanups_once(repo: Repo, receiver: Receiver) -> None:  # noqa: F811
    shop = Shop(repo, days=10)  # flags-service (config): live 10 days, soaked after 1, due 1 day later
    shop.configure(f"[[environments.production.health]]\nname = \"api\"\nurl = \"{receiver.url('/health')}\"\n"
                   "interval = 5\n"
                   "[migrations.kinds.config]\ncleanup_due_days = 1\n"
                   "[[notify]]\nkind = \"webhook\"\nurl_env = \"ANDON_TEST_HOOK\"\n")
    env = _env({"ANDON_TEST_HOOK": receiver.url()})
    watchers = [subprocess.Popen(_argv(("watch",)), cwd=shop.path, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE) for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        while not _digests(receiver) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3)  # both have looked by now (each looks a second after it starts, then once a minute)
    finally:
        for watcher in watchers:
            watcher.terminate()
        errors = [watcher.communicate(timeout=30)[1].decode() for watcher in watchers]
    assert all("Traceback" not in error for error in errors), errors
    [digest] = _digests(receiver)
    assert digest["env"] == "production"
    [item] = digest["detail"]["items"]
    assert (item["name"], item["env"], item["severity"]) == ("flags-service", "production", "critical")
    assert digest["title"] == f"1 migration cleanup overdue in production ({shop.path.name})"
    assert "flags-service in production: critical, 8 days overdue (due " in digest["text"]
    assert "next: ship the contract" in digest["text"]
    assert [kind for kind, _, _ in shop.events("migration.reminder")] == ["migration.reminder"]


def _digests(receiver: Receiver) -> list[dict[str, Any]]:  # noqa: F811
    bodies = [json.loads(received.body) for received in receiver.accepted("/hook")]
    return [body for body in bodies if body["kind"] == "migration.reminder"]
