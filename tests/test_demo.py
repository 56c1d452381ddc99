"""The demo: its chat receiver (signatures checked, one line per message, served at its URL),
and the demo's story in a real demo world: a broken production deploy stops the line by
itself, chat hears it, a rollback brings the previous version back and health recovers."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backend.config import Notifier, load_file
from backend.demo import build
from backend.demo_chat import EMPTY, SECRET_ENV, URL_ENV, DemoChat, line_of, verify
from backend.models import utc_now
from backend.notify import Policy, deliver_pending
from backend.store import DeployLog

NOW = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
FAST = Policy(first_retry=0.05, max_retry=0.1)
HOOK = Notifier("webhook", URL_ENV, None, SECRET_ENV)


def messages_of(demo: Any, count: int) -> list[Any]:
    """The first ``count`` messages the demo's receiver got (waited for)."""
    assert demo.chat is not None
    return list(demo.chat.wait_for(count, 10))


def short(sha: str) -> str:
    return sha[:7]


@pytest.fixture
def chat(tmp_path: Path) -> Any:
    receiver = DemoChat(tmp_path / "chat.log", secret="s3cret")
    yield receiver
    receiver.stop()


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
        return str(answer.read().decode("utf-8"))


def signed(secret: bytes, body: bytes, stamp: int | None = None) -> str:
    stamp = int(time.time()) if stamp is None else stamp
    return f"t={stamp},v1={hmac.new(secret, f'{stamp}.'.encode() + body, hashlib.sha256).hexdigest()}"


# -- the receiver ---------------------------------------------------------------------------


def test_the_receiver_takes_a_real_signed_delivery_and_writes_one_clean_line(tmp_path: Path, chat: DemoChat) -> None:
    log = DeployLog.open(tmp_path / "deploys.db")
    try:
        log.announce_to([HOOK])
        log.stop_line("production", who="ada \x1b[31m@everyone", reason="api \x1b]8;;http://evil\x07down\x1b[0m")
        report = deliver_pending(log, environ=chat.variables(), policy=FAST)
    finally:
        log.close()
    assert [item.receiver for item in report.delivered] == [HOOK.key]
    [got] = chat.messages()
    assert got.message["kind"] == "line.stopped" and got.message["env"] == "production"
    # The line says when, what and why, without the escape sequences the names and reason carried.
    assert got.line.endswith("🛑 Line stopped: production, by ada @everyone — api down")
    assert "\x1b" not in got.line and "\x07" not in got.line
    assert (tmp_path / "chat.log").read_text(encoding="utf-8") == got.line + "\n"
    assert get(chat.url) == got.line + "\n"
    assert chat.refused == 0


def test_the_receiver_refuses_what_the_readmes_scheme_does_not_verify(chat: DemoChat) -> None:
    body = json.dumps({"idempotency_key": "k1", "kind": "line.stopped", "at": "2026-11-20T14:03:05Z",
                       "text": "🛑 Line stopped: production", "detail": {"reason": "api down"}}).encode()
    json_type = {"Content-Type": "application/json"}
    assert post(chat.url, body, json_type) == 401  # unsigned
    assert post(chat.url, body, json_type | {"X-Andon-Signature": signed(b"wrong", body)}) == 401
    tampered = body.replace(b"api down", b"api fine")
    assert post(chat.url, tampered, json_type | {"X-Andon-Signature": signed(b"s3cret", body)}) == 401
    replay = signed(b"s3cret", body, int(time.time()) - 3600)
    assert post(chat.url, body, json_type | {"X-Andon-Signature": replay}) == 401
    not_json = b"[1, 2]"
    assert post(chat.url, not_json, json_type | {"X-Andon-Signature": signed(b"s3cret", not_json)}) == 400
    assert chat.messages() == [] and get(chat.url).startswith(EMPTY)
    assert "5 requests refused" in get(chat.url)
    # Signed: taken once; the same idempotency key again is answered 200 and dropped.
    assert post(chat.url, body, json_type | {"X-Andon-Signature": signed(b"s3cret", body)}) == 200
    assert post(chat.url, body, json_type | {"X-Andon-Signature": signed(b"s3cret", body)}) == 200
    assert [received.line for received in chat.messages()] == [
        "2026-11-20 14:03:05 UTC  🛑 Line stopped: production — api down"]
    assert chat.log_file.read_text(encoding="utf-8").count("\n") == 1


def test_verify_is_the_readmes_scheme() -> None:
    body = b'{"a": 1}'
    header = signed(b"key", body, 1_000_000)
    assert verify(b"key", header, body, now=lambda: 1_000_100)
    assert not verify(b"key", header, body, now=lambda: 1_000_301)  # older than five minutes
    assert not verify(b"key", header, body + b" ", now=lambda: 1_000_000)
    assert not verify(b"key", "v1=abc", body) and not verify(b"key", "garbage", body)


def test_a_message_without_a_time_or_text_is_still_one_line() -> None:
    assert line_of({"kind": "line.resumed"}) == "line.resumed"
    assert line_of({"at": "2026-11-20T14:03:05Z", "text": "a\nb", "detail": {"reason": " "}}) == \
        "2026-11-20 14:03:05 UTC  a"


# -- the demo world --------------------------------------------------------------------------


def test_the_demo_configures_its_receiver_signed_and_production_stops_by_itself(tmp_path: Path) -> None:
    demo = build(tmp_path / "demo", NOW, service=False)
    assert demo.chat is None and demo.service is None
    config = load_file(demo.config)
    assert config.notifiers == (HOOK,)
    production = config.environments["production"]
    assert production.auto_stop and not production.auto_rollback and production.verify_seconds > 0


def andon(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_demo_story_a_broken_deploy_stops_the_line_chat_hears_it_and_a_rollback_recovers(tmp_path: Path) -> None:
    """The README's demo story, with the demo's own service and receiver: every andon here has
    the receiver's variables, as under andon demo (the rollback's runner inherits them)."""
    demo = build(tmp_path / "demo", utc_now())
    assert demo.chat is not None and demo.service is not None
    env = os.environ | demo.chat.variables() | {"ANDON_USER": "ada"}
    try:
        live = json.loads(andon("status", "--json", cwd=demo.repo, env=env).stdout)["environments"][1]["live"]
        broken = andon("deploy", "--env", "production", cwd=demo.repo, env=env)
        assert broken.returncode == 4, broken.stderr  # the first production deploy ships a broken build
        assert "the line is stopped" in broken.stderr
        refused = andon("deploy", "--env", "production", cwd=demo.repo, env=env)
        assert refused.returncode == 5 and "stopped by andon" in refused.stderr
        lines = [received.line for received in demo.chat.wait_for(2, 10)]
        assert "unhealthy" in lines[0] and "🛑 Line stopped: production (repo), by andon (automatically)" in lines[1]

        rolled = andon("rollback", "--env", "production", cwd=demo.repo, env=env)
        assert rolled.returncode == 0, rolled.stderr
        messages = demo.chat.wait_for(4, 30)  # its runner delivers rollback.started and .finished
        assert [m.message["kind"] for m in messages[2:]] == ["rollback.started", "rollback.finished"]
        assert messages[3].message["detail"]["status"] == "succeeded"
        service = json.loads((demo.root / "service" / "production.json").read_text())
        assert service["sha"] == live["sha"] and not service["broken"]  # the previous version runs again
        health = andon("health", "--env", "production", cwd=demo.repo, env=env)
        assert health.returncode == 0, health.stdout  # healthy, and running what the log says is live
        # The rollback held what it took out of production: the commits of the broken deploy.
        held = messages_of(demo, 5)[4]
        assert held.message["kind"] == "commit.held"
        count = held.message["detail"]["count"]
        assert count >= 1 and f"⚠️ {count} commit{'s' if count != 1 else ''} held out of production (repo) after a " \
                              "rollback" in held.line
        assert andon("resume", "--env", "production", cwd=demo.repo, env=env).returncode == 0
        lines = [received.line for received in demo.chat.wait_for(6, 10)]
        assert "✅ Line resumed: production (repo), by ada" in lines[5]

        # The next deploy still contains them: refused, naming them, until a person decides.
        again = andon("deploy", "--env", "production", cwd=demo.repo, env=env)
        assert again.returncode == 11, again.stderr
        assert "held" in again.stderr and short(held.message["detail"]["shas"][0]) in again.stderr
        released = andon("release", "--all", "--env", "production", "--reason", "the build broke, not the code",
                         cwd=demo.repo, env=env)
        assert released.returncode == 0, released.stderr
        assert released.stdout.startswith(f"released {count} commit")
        lines = [received.line for received in demo.chat.wait_for(7, 10)]
        assert lines[6].endswith(f"released in production (repo), by ada: {'they' if count != 1 else 'it'} may be "
                                 "deployed again — the build broke, not the code")
        good = andon("deploy", "--env", "production", cwd=demo.repo, env=env)
        assert good.returncode == 0, good.stderr  # the next deploy ships a good build
        service = json.loads((demo.root / "service" / "production.json").read_text())
        assert not service["broken"] and service["sha"] == held.message["detail"]["live_sha"]
        time.sleep(1)  # a successful deploy is not told (the demo's receiver hears the default groups)
        assert len(demo.chat.messages()) == 7
        assert demo.chat.refused == 0  # every request verified
        assert demo.chat_log.read_text(encoding="utf-8").splitlines() == lines
    finally:
        demo.chat.stop()
        demo.service.stop()


def test_andon_demo_tells_where_chat_goes_and_delivers_what_another_shell_wrote(tmp_path: Path) -> None:
    """`andon demo` in a real pseudo-terminal: it says where the receiver is; an andon run from
    another shell (without the receiver's variables) stops the line, and the demo delivers its
    message; chat.env gives that shell the variables."""
    import pty
    import re
    import select

    world = tmp_path / "world"
    pid, fd = pty.fork()
    if pid == 0:  # the child: andon demo on the pseudo-terminal
        os.environ.update(TERM="xterm-256color")
        os.execv(sys.executable, [sys.executable, "-m", "tui.cli", "demo", "--dir", str(world)])
    seen = b""

    def read_until(marker: bytes, seconds: float = 60) -> None:
        nonlocal seen
        deadline = time.monotonic() + seconds
        while marker not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(fd, 65536)
                except OSError:
                    break
        assert marker in seen, seen[-2000:]

    try:
        read_until(b"Deploys to")
        found = re.search(rb"Chat, what the team hears: (http://127\.0\.0\.1:\d+/) and (\S+)\r?\n", seen)
        assert found, seen[:2000]
        url, chat_log = found.group(1).decode(), Path(found.group(2).decode())
        assert chat_log == world / "chat.log"
        assert f". {world / 'chat.env'}".encode() in seen
        variables = dict(line.removeprefix("export ").split("=", 1)
                         for line in (world / "chat.env").read_text().splitlines())
        assert variables[URL_ENV] == url and len(variables[SECRET_ENV]) >= 32
        assert (world / "chat.env").stat().st_mode & 0o077 == 0  # the secret: the owner's only
        env = {k: v for k, v in os.environ.items() if k not in (URL_ENV, SECRET_ENV)} | {"ANDON_USER": "grace"}
        stopped = andon("stop", "--env", "production", "--reason", "api is down", cwd=world / "repo", env=env)
        assert stopped.returncode == 0, stopped.stderr
        deadline = time.monotonic() + 10
        while "Line stopped" not in get(url) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "🛑 Line stopped: production (repo), by grace — api is down" in get(url)
        assert "Line stopped" in chat_log.read_text(encoding="utf-8")
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) != 0
    assert world.exists()  # --dir keeps it
