"""Quieter chat: each receiver hears only the groups of news it chose, every message names the
environment and the repository, and a line stopped for long is recalled once per interval, however
many andons look. Real webhook receivers on 127.0.0.1, real processes, a real SQLite file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backend.config import NOTIFY_EVENTS
from backend.notify import deliver_pending
from backend.store import DeployLog
from backend.world import resolve_world
from tests.conftest import Repo
from tests.test_cli import _argv, _env
from tests.test_notify import Receiver, receiver  # noqa: F401 - the fixture

KINDS = ("slack", "mattermost", "discord", "teams", "webhook")


def configure(repo: Repo, receiver: Receiver, notify: str, env_extra: str = "") -> dict[str, str]:  # noqa: F811
    (repo.path / "andon.toml").write_text(
        f'[environments.production]\ndeploy = ["true"]\n{env_extra}'
        f'[[environments.production.health]]\nname = "api"\nurl = "{receiver.url("/health")}"\ninterval = 5\n'
        + notify)
    return {name: receiver.url(f"/{name.lower()}") for name in ("DEFAULT_URL", "DEPLOYS_URL", *map(str.upper, KINDS))}


def bodies(receiver: Receiver, path: str) -> list[dict[str, Any]]:  # noqa: F811
    return [json.loads(received.body) for received in receiver.accepted(path)]


def test_each_receiver_hears_only_the_groups_it_chose(repo: Repo, receiver: Receiver) -> None:  # noqa: F811
    environ = configure(repo, receiver, '[[notify]]\nkind = "webhook"\nurl_env = "DEFAULT_URL"\n'
                                        '[[notify]]\nkind = "webhook"\nurl_env = "DEPLOYS_URL"\nevents = ["deploys"]\n')
    sha = repo.commit("second")
    world = resolve_world(repo.path, None, None)
    try:
        good = world.log.start("production", sha, who="alice")
        world.log.finish(good.id, "succeeded", exit_code=0)
        bad = world.log.start("production", sha, who="bob")
        world.log.finish(bad.id, "failed", exit_code=3)
        world.log.stop_line("production", who="carol", reason="api down")
        deliver_pending(world, environ=environ)
    finally:
        world.close()
    default = [(body["kind"], body["detail"].get("status")) for body in bodies(receiver, "/default_url")]
    assert default == [("deploy.finished", "failed"), ("line.stopped", None)]  # no successful deploy by default
    [deployed] = bodies(receiver, "/deploys_url")
    assert deployed["title"] == f"Deployed {sha[:7]} to production ({repo.path.name}), by alice"
    assert deployed["detail"]["status"] == "succeeded"


def test_every_format_names_the_environment_and_the_repository(repo: Repo, receiver: Receiver) -> None:  # noqa: F811
    events = "[" + ", ".join(f'"{group}"' for group in NOTIFY_EVENTS) + "]"
    environ = configure(repo, receiver, "".join(f'[[notify]]\nkind = "{kind}"\nurl_env = "{kind.upper()}"\n'
                                                f"events = {events}\n" for kind in KINDS))
    sha = repo.commit("second")
    world = resolve_world(repo.path, None, None)
    log = world.log
    try:
        done = log.start("production", sha, who="alice")
        log.finish(done.id, "succeeded", exit_code=0)
        with log.immediate() as conn:
            now = log.now()
            log.event(conn, "rollback.unhealthy", "production", done.id, "andon", now,
                      why="2 failed rounds in a row (api: HTTP 503)", checks=["api"], rollback_id=1, target_sha=sha)
            log.event(conn, "line.reminder", "production", None, "andon", now, stopped_at=now, stopped_by="carol",
                      reason="api down", automatic=False, minutes=125, every=60, count=2)
            log.event(conn, "commit.held", "production", done.id, "andon", now, rollback_id=1, reverts=done.id,
                      shas=[sha], subjects=["second"], count=1)
            log.event(conn, "commit.released", "production", None, "dave", now, sha=sha, reason="fixed on top")
        deliver_pending(world, environ=environ)
    finally:
        world.close()
    name = repo.path.name
    for kind in KINDS:
        got = receiver.accepted(f"/{kind}")
        assert len(got) == 5, kind
        for received in got:
            text = received.body.decode().replace("\\\\", "")  # markdown escapes (name_with_underscores)
            assert "production" in text and name in text, (kind, text)
    titles = [body["title"] for body in bodies(receiver, "/webhook")]
    assert titles == [
        f"Deployed {sha[:7]} to production ({name}), by alice",
        f"Rolled back production ({name}) to {sha[:7]}, still unhealthy: a person decides",
        f"Line still stopped: production ({name}), for 2 h 5 min",
        f"1 commit held out of production ({name}) after a rollback",
        f"Commit {sha[:7]} released in production ({name}), by dave: it may be deployed again",
    ]


def test_two_watchers_recall_a_long_stopped_line_once_per_interval(repo: Repo, receiver: Receiver) -> None:  # noqa: F811
    environ = configure(repo, receiver, '[[notify]]\nkind = "webhook"\nurl_env = "DEFAULT_URL"\n',
                        "stop_reminder_minutes = 60\n")
    world = resolve_world(repo.path, None, None)
    world.open()
    world.close()
    stopped_at = datetime.now(UTC) - timedelta(minutes=125)  # two intervals ago and more: one reminder, not two
    log = DeployLog.open(world.db_path, clock=lambda: stopped_at)
    try:
        log.stop_line("production", who="carol", reason="api down")
    finally:
        log.close()
    env = _env(environ)
    watchers = [subprocess.Popen(_argv(("watch",)), cwd=repo.path, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE) for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        while not _reminders(receiver) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3)  # both have looked by now (each looks a second after it starts)
    finally:
        for watcher in watchers:
            watcher.terminate()
        errors = [watcher.communicate(timeout=30)[1].decode() for watcher in watchers]
    assert all("Traceback" not in error for error in errors), errors
    [reminder] = _reminders(receiver)
    assert reminder["env"] == "production"
    assert reminder["detail"]["stopped_by"] == "carol" and reminder["detail"]["count"] == 2
    assert 125 <= reminder["detail"]["minutes"] <= 127
    assert reminder["title"] == f"Line still stopped: production ({repo.path.name}), for 2 h 5 min"
    # The next look of anyone, before the third interval, writes nothing more.
    again = resolve_world(repo.path, None, None)
    try:
        from backend.line_reminder import remind

        assert remind(again) == []
        assert [e.kind for e in again.log.events(1000)].count("line.reminder") == 1
    finally:
        again.close()


def _reminders(receiver: Receiver) -> list[dict[str, Any]]:  # noqa: F811
    return [body for body in bodies(receiver, "/default_url") if body["kind"] == "line.reminder"]


RACER = """\
import os, sys, time
from pathlib import Path
from backend.line_reminder import remind
from backend.world import resolve_world
world = resolve_world(Path(sys.argv[1]), None, None)
world.log.lines()  # opened before the start: the race is the decision, not the opening
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
print(len(remind(world)))
world.close()
"""


def test_eight_processes_looking_at_once_write_one_reminder(repo: Repo, tmp_path: Path) -> None:
    (repo.path / "andon.toml").write_text('[environments.production]\ndeploy = ["true"]\nstop_reminder_minutes = 1\n')
    repo.commit("first")
    world = resolve_world(repo.path, None, None)
    world.open()
    world.close()
    log = DeployLog.open(world.db_path, clock=lambda: datetime.now(UTC) - timedelta(minutes=3, seconds=30))
    try:
        log.stop_line("production", who="carol", reason="api down")
    finally:
        log.close()
    (tmp_path / "racer.py").write_text(RACER)
    go = tmp_path / "go"
    source = str(Path(__file__).resolve().parent.parent)  # the andon being tested
    racers = [subprocess.Popen([sys.executable, str(tmp_path / "racer.py"), str(repo.path), str(go)], cwd=repo.path,
                               env=_env({"PYTHONPATH": source}), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
              for _ in range(8)]
    time.sleep(1.5)  # every racer has opened the log and waits
    go.touch()
    results = [racer.communicate(timeout=60) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers), [err.decode() for _, err in results]
    assert sorted(int(out) for out, _ in results) == [0] * 7 + [1]
    again = DeployLog.open(world.db_path)
    try:
        reminders = [json.loads(e.detail) for e in again.events(1000) if e.kind == "line.reminder"]
    finally:
        again.close()
    assert [(r["count"], r["minutes"]) for r in reminders] == [(3, 3)]


def test_a_tiny_interval_counts_at_most_the_limit_and_never_overflows(tmp_path: Path) -> None:
    from backend.store.reminders import INTERVALS_LIMIT

    log = DeployLog.open(tmp_path / "andon.db", clock=lambda: datetime.now(UTC) - timedelta(minutes=5))
    try:
        log.stop_line("production", who="carol", reason="api down")
        now = datetime.now(UTC)
        # 1e-300 minutes: ~1e302 intervals; 5e-324 (the smallest float): the count is inf.
        assert log.remind_stopped_lines({"production": 1e-300}, now=now) == ["production"]
        assert log.remind_stopped_lines({"production": 5e-324}, now=now + timedelta(minutes=1)) == []
        reminders = [json.loads(e.detail) for e in log.events(100) if e.kind == "line.reminder"]
    finally:
        log.close()
    assert [r["count"] for r in reminders] == [INTERVALS_LIMIT]


class _Boom:
    """A reminder look that fails with what is not an AndonError, every time; counts the looks."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, world: object) -> list[str]:
        self.calls += 1
        raise OverflowError("Python int too large to convert to SQLite INTEGER")


def test_andon_watch_chat_goes_on_when_the_reminder_look_fails(monkeypatch: Any) -> None:
    import threading

    from backend import AndonError, line_reminder
    from tui import cli

    boom, delivered, failures = _Boom(), [], []
    monkeypatch.setattr(line_reminder, "remind", boom)
    monkeypatch.setattr(line_reminder, "REMIND_EVERY", 0.0)
    monkeypatch.setattr(cli, "CHAT_EVERY", 0.01)
    monkeypatch.setattr("backend.notify.deliver_pending", lambda world: delivered.append(world))
    monkeypatch.setattr("backend.migrations.evaluate", lambda world, evidence: None)
    monkeypatch.setattr("backend.migrations.remind", lambda world, backlog: None)
    stop = threading.Event()
    thread = threading.Thread(target=cli._deliver_until, args=(object(), stop, failures.append), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while len(delivered) < 3 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(5)
    assert len(delivered) >= 3 and boom.calls >= 3  # still looking, still delivering
    assert all(isinstance(error, AndonError) for error in failures)
    assert str(failures[0]) == "line reminders: OverflowError: Python int too large to convert to SQLite INTEGER"


def test_the_dashboard_chat_feed_goes_on_when_the_reminder_look_fails(monkeypatch: Any) -> None:
    from types import SimpleNamespace

    from backend import line_reminder
    from tui.chat_feed import ChatDelivered, ChatFeed

    posted: list[ChatDelivered] = []
    warnings: list[str] = []
    report = SimpleNamespace(dead=[])
    screen = SimpleNamespace(world=SimpleNamespace(config=SimpleNamespace(notifiers=("x",))),
                             post_message=posted.append, log=SimpleNamespace(warning=warnings.append))
    monkeypatch.setattr(line_reminder, "remind", _Boom())
    monkeypatch.setattr("backend.notify.deliver_pending", lambda world: report)
    feed = ChatFeed(screen)  # type: ignore[arg-type]
    feed._deliver()
    [message] = posted
    assert message.report is report  # delivered all the same
    feed.delivered(message)
    assert feed.report is report
    assert warnings == ["chat: line reminders: OverflowError: Python int too large to convert to SQLite INTEGER"]
