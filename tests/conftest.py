"""Shared fixtures: real git repositories in tmp_path, isolated from the developer's config."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from backend import AndonError
from backend.store import DeployLog

ISOLATED_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.com",
}


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's git config, ANDON_* variables or CI flag."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for key, value in ISOLATED_ENV.items():
        monkeypatch.setenv(key, value)
    for key in ("ANDON_DB", "ANDON_USER", "CI", "GIT_DIR", "GIT_WORK_TREE", *PROXY_VARIABLES):
        monkeypatch.delenv(key, raising=False)


PROXY_VARIABLES = tuple(f"{name}_proxy" for name in ("http", "https", "all", "no")) + tuple(
    f"{name.upper()}_PROXY" for name in ("http", "https", "all", "no"))


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The prober's tests run on both loops it runs on (backend.health.new_event_loop): uvloop's and asyncio's.

    Every other async test gets asyncio's loop alone (one factory adds no test id): pytest-asyncio
    1.5 refuses a None from this hook, failing the collection of every module with an async test.
    """
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
    if item.path.name != "test_health.py":
        return factories
    try:
        import uvloop
    except ImportError:  # not installed on this platform: new_event_loop falls back to asyncio's
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


def one_line(error: BaseException) -> str:
    """The message of an andon error, checked to be what a person should see: one line."""
    message = str(error)
    assert isinstance(error, AndonError), repr(error)
    assert message and "\n" not in message and "\r" not in message, message
    return message


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """Another program's connection to a deploy log, in autocommit mode, closed after use."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


async def wait_for(pilot, condition, seconds: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    """Let a Pilot-driven app run until ``condition()`` holds (True) or ``seconds`` pass (False)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        await pilot.pause(0.02)
    return condition()


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          env=full_env, check=True)
    return done.stdout.strip()


class Repo:
    """A real git repository in tmp_path with helpers to make commits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        git(path, "-c", "init.defaultBranch=main", "init", "--quiet")
        git(path, "config", "user.name", "Test Author")
        git(path, "config", "user.email", "author@example.com")
        self._counter = 0

    def commit(self, subject: str = "", *, author: str = "Test Author", body: str = "",
               date: str | None = None) -> str:
        self._counter += 1
        (self.path / "file.txt").write_text(f"change {self._counter}\n")
        git(self.path, "add", "file.txt")
        message = (subject or f"commit {self._counter}") + (f"\n\n{body}" if body else "")
        env = {"GIT_AUTHOR_NAME": author}
        if date:
            env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
        git(self.path, "commit", "--quiet", "-m", message, env=env)
        return self.head()

    def head(self) -> str:
        return git(self.path, "rev-parse", "HEAD")

    def git(self, *args: str) -> str:
        return git(self.path, *args)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "repo")


@pytest.fixture
def log(tmp_path: Path) -> Iterator[DeployLog]:
    opened = DeployLog.open(tmp_path / "deploys.db")
    yield opened
    opened.close()
