"""Chat from the command line, as real processes: ``andon notify``, the CLI delivering after its own
writes, and ``andon watch`` delivering what others wrote. Real receivers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Repo
from tests.test_notify import Receiver, receiver  # noqa: F401 - the fixture

ANDON = [sys.executable, "-m", "tui.cli"]


@pytest.fixture
def shop(tmp_path: Path, receiver: Receiver) -> tuple[Path, dict[str, str]]:  # noqa: F811
    repo = Repo(tmp_path / "shop")
    repo.commit("first")
    (repo.path / "andon.toml").write_text(
        '[environments.production]\ndeploy = ["true"]\n\n'
        '[[notify]]\nkind = "slack"\nurl_env = "ANDON_SLACK_URL"\n')
    env = dict(os.environ, ANDON_SLACK_URL=receiver.url(), ANDON_USER="alice")
    return repo.path, env


def andon(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ANDON, "--repo", str(repo), *args], capture_output=True, text=True, env=env,
                          timeout=60)


def texts(receiver: Receiver) -> list[str]:  # noqa: F811
    return [item.json()["text"] for item in receiver.accepted()]


def test_andon_notify_is_a_command(shop: tuple[Path, dict[str, str]], receiver: Receiver) -> None:  # noqa: F811
    repo, env = shop
    done = andon(repo, env, "notify", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"delivered": [], "waiting": [], "dead": []}


def test_the_cli_delivers_its_own_news_before_it_exits(shop: tuple[Path, dict[str, str]],
                                                       receiver: Receiver) -> None:  # noqa: F811
    repo, env = shop
    done = andon(repo, env, "stop", "--env", "production", "--reason", "api down")
    assert done.returncode == 0, done.stderr
    assert len(texts(receiver)) == 1 and "api down" in texts(receiver)[0]  # already there: no other andon ran
    done = andon(repo, env, "resume", "--env", "production")
    assert done.returncode == 0, done.stderr
    assert len(texts(receiver)) == 2


def test_a_receiver_refusing_is_a_warning_not_a_failure_of_the_command(
        shop: tuple[Path, dict[str, str]], receiver: Receiver) -> None:  # noqa: F811
    from tests.test_notify import Answer

    repo, env = shop
    receiver.default = Answer(404, body=b"no_service")
    done = andon(repo, env, "stop", "--env", "production", "--reason", "api down")
    assert done.returncode == 0
    assert done.stderr.strip().endswith("andon: warning: chat: 1 message could not be delivered "
                                        "(a receiver refused them: andon notify says why)"), done.stderr
    receiver.stop()  # down: a stop still stops (nothing waits on chat), quietly
    done = andon(repo, env, "resume", "--env", "production")
    assert done.returncode == 0, done.stderr


def test_andon_watch_delivers_what_other_andons_wrote(shop: tuple[Path, dict[str, str]],
                                                      receiver: Receiver) -> None:  # noqa: F811
    repo, env = shop
    with (repo / "andon.toml").open("a") as config:
        # andon watch needs a check to watch; a closed port is fine (it is down, and says so)
        config.write('\n[[environments.production.health]]\nname = "api"\nurl = "http://127.0.0.1:9/x"\n'
                     'interval = 5\ntimeout = 1\n')
    quiet = dict(env, ANDON_SLACK_URL="http://127.0.0.1:9/nowhere")  # this stop cannot deliver itself
    assert andon(repo, quiet, "stop", "--env", "production", "--reason", "api down").returncode == 0
    assert texts(receiver) == []
    watch = subprocess.Popen([*ANDON, "--repo", str(repo), "watch"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not texts(receiver):
            time.sleep(0.1)
        assert len(texts(receiver)) == 1 and "api down" in texts(receiver)[0]
    finally:
        watch.send_signal(signal.SIGTERM)
        watch.wait(timeout=20)
    assert watch.returncode == 0, watch.stderr.read() if watch.stderr else ""
