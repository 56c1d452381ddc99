"""One prober per environment, shared by everyone on the log: the health watcher and its leases.

Real parts throughout: a real health endpoint on 127.0.0.1 (:class:`Service`, also used by
the CLI and deploy tests), a real git repository and andon.toml, real SQLite log files with
a connection per watcher, and real processes where one is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from backend import AndonError
from backend.models import DOWN, HEALTHY, UP
from backend.store import DeployLog
from backend.watcher import HealthWatcher, WatcherThread, lease_name
from backend.world import World, resolve_world
from tests.conftest import Repo, one_line

INTERVAL = 0.3  # seconds between probes in these tests (the timeout is the same)


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default backlog of 5 gave false timeouts under load
    daemon_threads = True


class Service:
    """A health endpoint on 127.0.0.1: ``GET /health`` answers ``status`` with
    ``{"build": {"sha": VERSION}}``, where VERSION is ``version``, or the text of
    ``version_file`` when it is set (a deploy script writes it); 503 while ``broken_file``
    exists (a deploy script that breaks the service creates it). Counts the requests."""

    def __init__(self, version: str = "v1", version_file: Path | None = None,
                 broken_file: Path | None = None) -> None:
        self.status = 200
        self.version = version
        self.version_file = version_file
        self.broken_file = broken_file
        self.requests = 0
        self._lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                with service._lock:
                    service.requests += 1
                    status = service.status
                if service.broken_file is not None and service.broken_file.exists():
                    status = 503
                version = service.current_version()
                body = json.dumps({"build": {"sha": version}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def current_version(self) -> str:
        if self.version_file is not None:
            try:
                return self.version_file.read_text().strip()
            except FileNotFoundError:
                return "none-yet"
        return self.version

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/health"

    def count(self) -> int:
        with self._lock:
            return self.requests

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service() -> Iterator[Service]:
    running = Service()
    yield running
    running.close()


def health_config(checks: dict[str, list[tuple[str, str]]], *, interval: float = INTERVAL,
                  extra: str = "", env_extra: str = "") -> str:
    """andon.toml with ``[[environments.ENV.health]]`` tables: {env: [(check name, url), ...]}."""
    lines = ['branch = "main"', extra]
    for env, env_checks in checks.items():
        lines += [f"[environments.{env}]", env_extra]
        for name, url in env_checks:
            lines += [f"[[environments.{env}.health]]", f'name = "{name}"', f'url = "{url}"',
                      f"interval = {interval}", f"timeout = {interval}", 'version = "build.sha"']
    return "\n".join(lines) + "\n"


@pytest.fixture
def world(repo: Repo, service: Service, tmp_path: Path) -> Iterator[World]:
    repo.commit("first")
    (repo.path / "andon.toml").write_text(health_config({"production": [("api", service.url)]}))
    made = resolve_world(repo.path, tmp_path / "deploys.db", None)
    yield made
    made.close()


def wait_for(condition: Callable[[], Any], seconds: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Running:
    """A watcher running in a thread of its own (as ``andon watch`` runs it), stopped by ``stop()``."""

    def __init__(self, watcher: HealthWatcher) -> None:
        self.watcher = watcher
        self.event = threading.Event()
        self.errors: list[BaseException] = []

        def run() -> None:
            try:
                watcher.run_forever(self.event)
            except BaseException as error:  # noqa: BLE001 - reported by stop()
                self.errors.append(error)
                traceback.print_exc()  # shown by pytest when the test fails

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.event.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        self.watcher.close()
        assert not self.errors, self.errors


def health_events(db: Path) -> list[dict[str, Any]]:
    log = DeployLog.open(db)
    try:
        return [json.loads(e.detail) | {"env": e.env} for e in reversed(log.events(1000))
                if e.kind == "health.changed"]
    finally:
        log.close()


# -- one prober per environment ------------------------------------------------------------------


def test_of_two_watchers_on_one_log_only_one_probes(world: World, service: Service) -> None:
    first, second = HealthWatcher(world), HealthWatcher(world)
    runs = [Running(first), Running(second)]
    try:
        wait_for(lambda: first.held or second.held, what="a holder")
        begin, began = service.count(), time.monotonic()
        time.sleep(10 * INTERVAL)
        probed, elapsed = service.count() - begin, time.monotonic() - began
        assert (first.held, second.held) in (({"production"}, frozenset()), (frozenset(), {"production"}))
        holder = first if first.held else second
        lease = world.log.lease(lease_name("production"))
        assert lease is not None and lease.holder == holder.holder
        # One prober: a request per interval (two would make twice as many).
        assert 0.6 * elapsed / INTERVAL <= probed <= elapsed / INTERVAL + 2, (probed, elapsed)
    finally:
        for run in runs:
            run.stop()
    assert world.log.lease(lease_name("production")) is None  # released on close


def test_when_the_holder_closes_the_other_watcher_takes_over_within_an_interval(
    world: World, service: Service
) -> None:
    first = HealthWatcher(world)
    asyncio.run(first.round())
    assert first.held == {"production"}
    second = HealthWatcher(world)
    assert asyncio.run(second.round()) == [] and not second.held  # someone probes already
    run = Running(second)
    try:
        first.close()  # releases the lease
        closed = time.monotonic()
        wait_for(lambda: second.held, seconds=3 * INTERVAL + 1, what="the takeover")
        assert time.monotonic() - closed <= 3 * INTERVAL + 1
        before = service.count()
        wait_for(lambda: service.count() >= before + 2, what="the new holder's probes")
    finally:
        run.stop()


WATCH_SCRIPT = """\
import sys, threading
from backend.watcher import HealthWatcher
from backend.world import resolve_world
from pathlib import Path

world = resolve_world(Path(sys.argv[1]), Path(sys.argv[2]), None)
watcher = HealthWatcher(world)

def said(change):
    print(change.describe(), flush=True)

watcher.run_forever(threading.Event(), on_change=said)
"""


def test_when_the_holder_is_killed_another_process_takes_over(
    world: World, service: Service, repo: Repo, tmp_path: Path
) -> None:
    """The holder dies without a word (SIGKILL): the lease is taken over, probing goes on."""
    script = tmp_path / "watch.py"
    script.write_text(WATCH_SCRIPT)
    holder = subprocess.Popen([sys.executable, str(script), str(repo.path), str(world.db_path)],
                              cwd=Path(__file__).parent.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              start_new_session=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().decode().strip() == "production: healthy"
        lease = world.log.lease(lease_name("production"))
        assert lease is not None and lease.pid == holder.pid
        survivor = HealthWatcher(world)
        assert asyncio.run(survivor.round()) == [] and not survivor.held  # the other process probes
        run = Running(survivor)
        try:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait(30)
            killed = time.monotonic()
            wait_for(lambda: survivor.held, seconds=3 * INTERVAL + 2, what="the takeover")
            assert time.monotonic() - killed <= 3 * INTERVAL + 2
            lease = world.log.lease(lease_name("production"))
            assert lease is not None and lease.holder == survivor.holder and lease.pid == os.getpid()
            before = service.count()
            wait_for(lambda: service.count() >= before + 2, what="the survivor's probes")
        finally:
            run.stop()
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait(30)
    # The state did not change hands as a change: the holder recorded healthy, the survivor found it so.
    assert [e["state"] for e in health_events(world.db_path)] == [HEALTHY]


def test_ten_watchers_write_one_event_per_change_of_state(world: World, service: Service) -> None:
    watchers = [HealthWatcher(world) for _ in range(10)]
    runs = [Running(watcher) for watcher in watchers]
    try:
        wait_for(lambda: [e["state"] for e in health_events(world.db_path)] == [HEALTHY], what="healthy")
        service.status = 503
        wait_for(lambda: len(health_events(world.db_path)) >= 2, what="down")
        time.sleep(4 * INTERVAL)  # every watcher has had rounds while down
        service.status = 200
        wait_for(lambda: len(health_events(world.db_path)) >= 3, what="healthy again")
        time.sleep(4 * INTERVAL)
        assert sum(1 for watcher in watchers if watcher.held) == 1
    finally:
        for run in runs:
            run.stop()
    events = health_events(world.db_path)
    assert [(e["previous"], e["state"]) for e in events] == [(None, HEALTHY), (HEALTHY, DOWN), (DOWN, HEALTHY)]
    assert {e["env"] for e in events} == {"production"}


class CountingLog(DeployLog):
    """A real log that counts the writes a watcher makes."""

    takes = 0
    records = 0

    def take_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        type(self).takes += 1
        return super().take_lease(name, holder, ttl_seconds)

    def record_health(self, *args: Any, **kwargs: Any) -> bool:
        type(self).records += 1
        return super().record_health(*args, **kwargs)


def test_a_watcher_that_does_not_hold_the_lease_costs_one_lease_write_per_interval(
    world: World, service: Service
) -> None:
    holder = Running(HealthWatcher(world))
    counting = CountingLog.open(world.db_path)
    idle = HealthWatcher(world, log=counting)
    try:
        wait_for(lambda: holder.watcher.held, what="the first holder")
        probed = service.count()
        began = time.monotonic()
        run = Running(idle)
        time.sleep(10 * INTERVAL)
        run.stop()
        elapsed = time.monotonic() - began
        assert not idle.held
        assert CountingLog.records == 0
        assert 1 <= CountingLog.takes <= elapsed / INTERVAL + 1, (CountingLog.takes, elapsed)
        assert service.count() - probed <= elapsed / INTERVAL + 2  # the holder's probes only
    finally:
        holder.stop()
        counting.close()


# -- what a round does ------------------------------------------------------------------------------


async def test_a_round_can_be_awaited_from_an_event_loop_and_records_the_change(
    world: World, service: Service
) -> None:
    """A round awaited on an event loop (a WatcherThread's own, say) lets the loop turn while it writes."""
    watcher = HealthWatcher(world)
    try:
        ticks = 0

        async def ticker() -> None:  # the event loop keeps turning while the round writes to SQLite
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        beat = asyncio.create_task(ticker())
        (change,) = await watcher.round()
        beat.cancel()
        assert ticks > 1
        assert (change.env, change.state) == ("production", HEALTHY)
        assert change.describe() == "production: healthy"
        assert watcher.latest("production")["api"].state == UP
        assert await watcher.round() == []  # nothing due yet
        service.status = 500
        await asyncio.sleep(watcher.seconds_until_due())
        (change,) = await watcher.round()
        assert change.describe() == "production: down (api: HTTP 500)"
    finally:
        watcher.close()
    samples = world.log.health_samples("production")["api"]
    assert [s.state for s in samples] == [UP, DOWN]
    assert world.log.health_state("production")[0] == DOWN  # type: ignore[index]


def test_each_check_is_probed_on_its_own_interval(repo: Repo, tmp_path: Path) -> None:
    fast, slow = Service(), Service()
    try:
        repo.commit("first")
        (repo.path / "andon.toml").write_text(
            'branch = "main"\n[environments.production]\n'
            f'[[environments.production.health]]\nname = "fast"\nurl = "{fast.url}"\ninterval = 1\ntimeout = 1\n'
            f'[[environments.production.health]]\nname = "slow"\nurl = "{slow.url}"\ninterval = 3\ntimeout = 1\n')
        made = resolve_world(repo.path, tmp_path / "deploys.db", None)
        now = [100.0]
        watcher = HealthWatcher(made, monotonic=lambda: now[0])
        try:
            for _ in range(9):  # nine seconds, a tick a second
                asyncio.run(watcher.round())
                now[0] += 1.0
            assert (fast.count(), slow.count()) == (9, 3)
            assert watcher.states == {"production": HEALTHY}
        finally:
            watcher.close()
            made.close()
    finally:
        fast.close()
        slow.close()


def test_a_named_environment_without_checks_is_an_error(world: World, repo: Repo) -> None:
    with pytest.raises(AndonError) as caught:
        HealthWatcher(world, ["staging"])
    assert one_line(caught.value) == (
        "environment 'staging' has no health checks: add [[environments.staging.health]] "
        "with a name and a url to andon.toml")
    with pytest.raises(AndonError):
        HealthWatcher(world, ["bad name"])
    assert HealthWatcher(world, ["production"]).checks.keys() == {"production"}


# -- the dashboard's prober: a thread with an event loop of its own ------------------------------


@pytest.mark.filterwarnings("error")  # no unclosed socket, unawaited coroutine or thread exception
def test_a_watcher_thread_probes_on_its_own_thread_and_says_so_after_each_round(
    world: World, service: Service
) -> None:
    made_in: list[str] = []
    rounds: list[tuple[frozenset[str], str]] = []

    def make() -> HealthWatcher:
        made_in.append(threading.current_thread().name)
        return HealthWatcher(world)

    running = WatcherThread(make, on_round=lambda envs: rounds.append((envs, threading.current_thread().name)))
    running.start()
    try:
        wait_for(lambda: len(rounds) >= 2, what="two rounds")
        assert made_in == ["andon-health"]  # made there too: httpx is imported off the caller's thread
        assert set(rounds) == {(frozenset({"production"}), "andon-health")}
        assert running.watcher is not None and running.watcher.held == {"production"}
        assert len(world.log.health_samples("production")["api"]) >= 2
    finally:
        assert running.stop()
    assert not running.alive
    assert world.log.lease(lease_name("production")) is None  # released by stop()
    probed = service.count()
    time.sleep(3 * INTERVAL)
    assert service.count() == probed  # nothing probes any more


def test_on_round_is_not_called_for_a_round_that_someone_elses_lease_kept_from_probing(
    world: World, service: Service
) -> None:
    assert world.log.take_lease(lease_name("production"), "andon watch elsewhere", 3600)
    rounds: list[frozenset[str]] = []
    running = WatcherThread(lambda: HealthWatcher(world), on_round=rounds.append)
    running.start()
    try:
        wait_for(lambda: running.watcher is not None, what="the watcher")
        time.sleep(4 * INTERVAL)  # several rounds, each asking for the lease
        assert rounds == [] and service.count() == 0
    finally:
        assert running.stop()


@pytest.mark.filterwarnings("error")
def test_stopping_a_watcher_thread_while_a_probe_waits_is_prompt_and_frees_the_lease(
    repo: Repo, tmp_path: Path
) -> None:
    # A listening socket that never accepts: the probe waits in the backlog for its 10 s timeout.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    repo.commit("first")
    (repo.path / "andon.toml").write_text(health_config(
        {"production": [("api", f"http://127.0.0.1:{silent.getsockname()[1]}/health")]}, interval=10))
    world = resolve_world(repo.path, tmp_path / "deploys.db", None)
    try:
        running = WatcherThread(lambda: HealthWatcher(world))
        running.start()
        wait_for(lambda: running.watcher is not None and running.watcher.held, what="the lease")
        time.sleep(0.3)  # the probe has sent its request and waits for an answer
        began = time.monotonic()
        assert running.stop()
        assert time.monotonic() - began < 0.5
        assert world.log.lease(lease_name("production")) is None
        assert world.log.health_samples("production") == {}  # the abandoned round recorded nothing
        assert running.stop()  # twice is fine
    finally:
        world.close()
        silent.close()


def test_a_watcher_thread_that_cannot_start_says_why_and_ends(world: World) -> None:
    errors: list[Exception] = []
    running = WatcherThread(lambda: HealthWatcher(world, ["staging"]), on_error=errors.append)
    running.start()
    wait_for(lambda: not running.alive, what="the thread's end")
    assert [one_line(error) for error in errors] == [
        "environment 'staging' has no health checks: add [[environments.staging.health]] "
        "with a name and a url to andon.toml"]
    assert running.stop()  # nothing to stop: still fine


def test_a_watcher_thread_stopped_before_it_starts_never_probes(world: World, service: Service) -> None:
    running = WatcherThread(lambda: HealthWatcher(world))
    assert running.stop()
    running.start()
    wait_for(lambda: not running.alive, what="the thread's end")
    assert service.count() == 0
    assert world.log.lease(lease_name("production")) is None
