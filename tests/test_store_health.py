"""Leases and health samples in the deploy log: real SQLite files, real processes, real races."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import backend.store as store
import backend.store.health as health
from backend.models import DEGRADED, DOWN, HEALTHY, UNKNOWN, UP, HealthSample, to_iso
from backend.store import SCHEMA_VERSION, DeployLog, StoreError, holder_id
from backend.store.leases import hostname
from tests.conftest import one_line, raw

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ROOT = str(Path(__file__).resolve().parents[1])


class Clock:
    """A clock that moves only when told."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def sha(n: int) -> str:
    return f"{n:040x}"


def sample(check: str = "api", at: datetime = T0, state: str = UP, env: str = "production",
           code: int | None = 200, latency: float | None = 12.5, version: str | None = sha(1),
           error: str = "") -> HealthSample:
    return HealthSample(env, check, to_iso(at), state, code, latency, version, error)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def health_events(log: DeployLog) -> list[tuple[str | None, dict[str, object]]]:
    """(env, detail) of every health.changed event, oldest first."""
    return [(e.env, json.loads(e.detail)) for e in reversed(log.events(limit=10_000)) if e.kind == "health.changed"]


def count(path: Path, env: str = "production", check: str = "api") -> int:
    with raw(path) as other:
        return int(other.execute("SELECT count(*) FROM health_samples WHERE env = ? AND check_name = ?",
                                 (env, check)).fetchone()[0])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def clocked(tmp_path: Path, clock: Clock) -> Iterator[DeployLog]:
    opened = DeployLog.open(tmp_path / "deploys.db", clock=clock)
    yield opened
    opened.close()


# -- leases ------------------------------------------------------------------------------


def test_a_free_lease_is_taken_renewed_by_its_holder_and_refused_to_others(clocked: DeployLog, clock: Clock) -> None:
    mine, theirs = holder_id(), holder_id()
    assert clocked.lease("health:production") is None
    assert clocked.take_lease("health:production", mine, 10)
    held = clocked.lease("health:production")
    assert held == store.Lease("health:production", mine, hostname(), os.getpid(), to_iso(T0),
                               to_iso(T0 + timedelta(seconds=10)))
    assert not clocked.take_lease("health:production", theirs, 10)
    clock.advance(seconds=5)
    assert clocked.take_lease("health:production", mine, 10)  # renewed
    assert clocked.lease("health:production").expires_at == to_iso(T0 + timedelta(seconds=15))  # type: ignore[union-attr]
    clock.advance(seconds=9.999)
    assert not clocked.take_lease("health:production", theirs, 10)  # renewed: not expired yet
    assert clocked.take_lease("health:staging", theirs, 10)  # another lease is another row
    with raw(clocked.path) as other:
        acquired, renewed = other.execute("SELECT acquired_at, renewed_at FROM leases WHERE name = ?",
                                          ("health:production",)).fetchone()
    assert (acquired, renewed) == (to_iso(T0), to_iso(T0 + timedelta(seconds=5)))


def test_an_expired_lease_is_taken_by_another_holder_and_the_old_one_is_refused(
        clocked: DeployLog, clock: Clock) -> None:
    mine, theirs = holder_id(), holder_id()
    assert clocked.take_lease("outbox", mine, 10)
    clock.advance(seconds=10)  # expires_at == now: expired
    assert clocked.take_lease("outbox", theirs, 3)
    held = clocked.lease("outbox")
    assert held is not None and held.holder == theirs
    assert held.expires_at == to_iso(T0 + timedelta(seconds=13))
    assert not clocked.take_lease("outbox", mine, 10)  # it lost the lease: it must stop working
    with raw(clocked.path) as other:
        assert other.execute("SELECT acquired_at FROM leases").fetchone()[0] == to_iso(T0 + timedelta(seconds=10))


def test_release_frees_only_ones_own_lease(clocked: DeployLog) -> None:
    mine, theirs = holder_id(), holder_id()
    assert clocked.take_lease("outbox", mine, 60)
    assert clocked.release_lease("outbox", theirs) is False
    assert clocked.lease("outbox").holder == mine  # type: ignore[union-attr]
    assert clocked.release_lease("outbox", mine) is True
    assert clocked.lease("outbox") is None
    assert clocked.take_lease("outbox", theirs, 60)  # free at once, no expiry to wait for


def test_a_lease_held_by_a_dead_process_on_this_host_is_taken_at_once(clocked: DeployLog) -> None:
    later = to_iso(T0 + timedelta(hours=1))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with raw(clocked.path) as other:
            other.executemany(
                "INSERT INTO leases (name, holder, host, pid, acquired_at, renewed_at, expires_at)"
                " VALUES (?, 'them', ?, ?, ?, ?, ?)",
                [("dead-here", hostname(), dead_pid(), to_iso(T0), to_iso(T0), later),
                 ("alive-here", hostname(), sleeper.pid, to_iso(T0), to_iso(T0), later),
                 ("dead-elsewhere", "some-other-host", dead_pid(), to_iso(T0), to_iso(T0), later)])
        mine = holder_id()
        assert clocked.take_lease("dead-here", mine, 10)
        assert not clocked.take_lease("alive-here", mine, 10)
        assert not clocked.take_lease("dead-elsewhere", mine, 10)  # its pids mean nothing here: wait
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_lease_row_another_program_garbled_reads_cleaned_and_a_bad_expiry_counts_as_expired(
        clocked: DeployLog) -> None:
    with raw(clocked.path) as other:
        other.execute("INSERT INTO leases (name, holder, host, pid, acquired_at, renewed_at, expires_at)"
                      " VALUES ('outbox', ?, ?, 'abc', 'now', ?, 'never')",
                      ("\x1b]0;pwned\x07mallory\u202e", "host\x1b[2J", b"\x1b[31m"))
    held = clocked.lease("outbox")
    assert held == store.Lease("outbox", "mallory", "host", None, "", "never")
    assert clocked.take_lease("outbox", holder_id(), 10)  # 'never' would sort after every time


def test_holder_ids_name_the_host_and_process_and_are_unique() -> None:
    first, second = holder_id(), holder_id()
    assert first != second
    assert first.startswith(f"{hostname()}:{os.getpid()}:") and second.startswith(f"{hostname()}:{os.getpid()}:")


def test_a_lease_needs_a_positive_time_to_live(clocked: DeployLog) -> None:
    for ttl in (0, -1, float("nan")):
        with pytest.raises(StoreError) as caught:
            clocked.take_lease("outbox", holder_id(), ttl)
        assert "time to live" in one_line(caught.value)
    assert clocked.lease("outbox") is None


LEASER = """
import sys, time
sys.path.insert(0, {root!r})
import backend.store.leases as leases
from backend.store import DeployLog, StoreError, holder_id
path, name, ttl, host = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
if host != "-":
    leases.hostname = lambda: host  # an andon on another machine sharing the file
log = DeployLog.open(path)
me = holder_id()
print(me, flush=True)
while True:
    try:
        log.take_lease(name, me, ttl)
    except StoreError:
        pass
    time.sleep(0.2)
"""


class Leaser:
    """A real andon process that takes lease ``name`` and renews it every 0.2 s until killed."""

    def __init__(self, tmp_path: Path, name: str, ttl: float, host: str = "-") -> None:
        script = tmp_path / "leaser.py"
        script.write_text(LEASER.format(root=ROOT))
        self.proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "deploys.db"), name, str(ttl), host],
                                     stdout=subprocess.PIPE, text=True)
        self.holder = self.proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert self.holder, "the leaser did not start"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()  # reaped: its pid no longer exists

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self.proc.stdout.close()  # type: ignore[union-attr]


def wait_for_holder(log: DeployLog, name: str, holder: str, timeout: float) -> float:
    """Seconds until ``holder`` holds lease ``name``; fails after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        held = log.lease(name)
        if held is not None and held.holder == holder:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{holder} did not get {name} within {timeout}s: {log.lease(name)}")


def test_a_killed_holder_on_this_host_is_taken_over_at_once_not_after_its_ttl(tmp_path: Path) -> None:
    reader = DeployLog.open(tmp_path / "deploys.db")
    first = second = None
    try:
        first = Leaser(tmp_path, "health:production", ttl=30)
        wait_for_holder(reader, "health:production", first.holder, 10)
        second = Leaser(tmp_path, "health:production", ttl=30)
        time.sleep(1.0)  # five rounds of trying
        assert reader.lease("health:production").holder == first.holder  # type: ignore[union-attr]
        first.kill()
        took = wait_for_holder(reader, "health:production", second.holder, 10)
        assert took < 5, took  # far within the 30 s time to live
    finally:
        for leaser in (first, second):
            if leaser is not None:
                leaser.stop()
        reader.close()


def test_a_killed_holder_on_another_host_is_taken_over_once_its_lease_expires(tmp_path: Path) -> None:
    ttl = 2.0
    reader = DeployLog.open(tmp_path / "deploys.db")
    first = second = None
    try:
        first = Leaser(tmp_path, "health:production", ttl=ttl, host="host-a")
        wait_for_holder(reader, "health:production", first.holder, 10)
        second = Leaser(tmp_path, "health:production", ttl=ttl, host="host-b")
        time.sleep(1.0)
        assert reader.lease("health:production").holder == first.holder  # type: ignore[union-attr]
        first.kill()
        last = reader.lease("health:production")
        assert last is not None and last.holder == first.holder and last.host == "host-a"
        took = wait_for_holder(reader, "health:production", second.holder, ttl + 5)
        assert took < ttl + 1.5, took  # within the ttl (and the 0.2 s between tries)
        with raw(tmp_path / "deploys.db") as other:
            acquired = other.execute("SELECT acquired_at FROM leases").fetchone()[0]
        assert acquired >= last.expires_at  # not before the dead holder's lease ran out
    finally:
        for leaser in (first, second):
            if leaser is not None:
                leaser.stop()
        reader.close()


def test_leases_write_no_events(clocked: DeployLog, clock: Clock) -> None:
    me = holder_id()
    for _ in range(3):
        assert clocked.take_lease("health:production", me, 10)
        clock.advance(seconds=5)
    clocked.release_lease("health:production", me)
    assert clocked.events() == []


# -- recording health --------------------------------------------------------------------


def test_a_state_that_flaps_writes_one_event_per_change(clocked: DeployLog, clock: Clock) -> None:
    results = []
    for state in (HEALTHY, HEALTHY, DOWN, DOWN, HEALTHY, DEGRADED, DEGRADED):
        clock.advance(seconds=5)
        results.append(clocked.record_health([sample(at=clock.now, state=UP if state == HEALTHY else DOWN)], state,
                                             who="andon watch"))
    assert results == [True, False, True, False, True, True, False]
    assert health_events(clocked) == [
        ("production", {"state": HEALTHY, "previous": None}),
        ("production", {"state": DOWN, "previous": HEALTHY}),
        ("production", {"state": HEALTHY, "previous": DOWN}),
        ("production", {"state": DEGRADED, "previous": HEALTHY}),
    ]
    assert {e.who for e in clocked.events() if e.kind == "health.changed"} == {"andon watch"}
    assert clocked.health_state("production") == (DEGRADED, to_iso(T0 + timedelta(seconds=30)))
    assert clocked.health_state("staging") is None


def test_ten_dashboards_recording_the_same_change_at_once_write_one_event(tmp_path: Path) -> None:
    path = tmp_path / "deploys.db"
    first = DeployLog.open(path, clock=Clock())
    first.record_health([sample()], HEALTHY)
    logs = [DeployLog.open(path, clock=Clock()) for _ in range(10)]
    start = threading.Barrier(10)
    results: list[bool] = []
    errors: list[BaseException] = []

    def record(log: DeployLog, number: int) -> None:
        try:
            start.wait()
            results.append(log.record_health([sample(f"check{n}", T0 + timedelta(seconds=number), DOWN,
                                                     code=None, latency=None, version=None, error="refused")
                                              for n in range(20)], DOWN))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=record, args=(log, n)) for n, log in enumerate(logs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert sorted(results) == [False] * 9 + [True]
        assert health_events(first) == [("production", {"state": HEALTHY, "previous": None}),
                                        ("production", {"state": DOWN, "previous": HEALTHY})]
        assert first.health_state("production")[0] == DOWN  # type: ignore[index]
        assert sum(len(kept) for kept in first.health_samples("production", per_check=100).values()) == 201
    finally:
        for log in (first, *logs):
            log.close()


def test_a_change_another_andon_records_just_before_our_round_is_not_announced_twice(tmp_path: Path) -> None:
    """The comparison with the last state is inside our write transaction, not before it.

    SQLite's trace hook lets the other andon's round run at the exact moment ours begins
    (what the ten-dashboard race produces only now and then).
    """
    path = tmp_path / "deploys.db"
    mine, theirs = DeployLog.open(path, clock=Clock()), DeployLog.open(path, clock=Clock())
    mine.record_health([sample()], HEALTHY)
    raced: list[bool] = []

    def trace(statement: str) -> None:
        if statement.startswith("BEGIN IMMEDIATE") and not raced:
            raced.append(theirs.record_health([sample("api", T0, DOWN)], DOWN))

    mine._conn.set_trace_callback(trace)
    try:
        assert mine.record_health([sample("api", T0, DOWN)], DOWN) is False
        assert raced == [True]
        assert [detail["state"] for _, detail in health_events(theirs)] == [HEALTHY, DOWN]
    finally:
        mine._conn.set_trace_callback(None)
        mine.close()
        theirs.close()


RECORDER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from backend.models import HealthSample, to_iso, utc_now
from backend.store import DeployLog
path, number, go = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
log = DeployLog.open(path)
while not go.exists():
    time.sleep(0.005)
changed = log.record_health([HealthSample("production", "api", to_iso(utc_now()), "down",
                                          503, 4.0, None, "HTTP 503")], "down", who="proc%d" % number)
print(changed)
log.close()
"""


def test_processes_recording_the_same_change_at_once_write_one_event(tmp_path: Path) -> None:
    path = tmp_path / "deploys.db"
    log = DeployLog.open(path)  # the real clock, as in the recorders
    log.record_health([sample(at=datetime.now(UTC))], HEALTHY)
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER.format(root=ROOT))
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, str(script), str(path), str(n), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(6)]
    time.sleep(0.5)  # all opened
    go.touch()
    outputs = [proc.communicate(timeout=120) for proc in procs]
    try:
        assert [proc.returncode for proc in procs] == [0] * 6, [err for _, err in outputs]
        assert sorted(out.strip() for out, _ in outputs) == ["False"] * 5 + ["True"]
        assert [detail for _, detail in health_events(log)] == [{"state": HEALTHY, "previous": None},
                                                                {"state": DOWN, "previous": HEALTHY}]
        assert count(path) == 7
    finally:
        log.close()


def test_changes_report_a_change_of_health_but_not_samples_alone(tmp_path: Path) -> None:
    path = tmp_path / "deploys.db"
    mine, theirs = DeployLog.open(path, clock=Clock()), DeployLog.open(path, clock=Clock())
    try:
        theirs.record_health([sample()], HEALTHY)
        seen = mine.changes(0)
        assert seen.kinds == {("health.changed", "production")}
        version = mine.data_version()
        theirs.record_health([sample(at=T0 + timedelta(seconds=5))], HEALTHY)  # samples only
        theirs.take_lease("health:production", holder_id(), 10)
        assert mine.data_version() != version  # something was written (dashboards re-read samples)...
        assert mine.changes(seen.last) == store.Changes(seen.last, frozenset())  # ...but no event to reload on
        assert len(mine.health_samples("production")["api"]) == 2
    finally:
        mine.close()
        theirs.close()


def test_a_round_with_no_samples_names_its_environment(clocked: DeployLog) -> None:
    assert clocked.record_health([], UNKNOWN, env="staging")
    assert clocked.health_state("staging") == (UNKNOWN, to_iso(T0))
    assert clocked.health_samples("staging") == {}
    with pytest.raises(StoreError) as caught:
        clocked.record_health([], HEALTHY)
    assert "one environment at a time" in one_line(caught.value)


@pytest.mark.parametrize(("samples", "env_state", "message"), [
    ([sample()], "fine", "not 'fine'"),
    ([sample(env="production"), sample(env="staging")], HEALTHY, "one environment at a time"),
    ([sample(), sample(state="sideways")], HEALTHY, "state 'sideways' is not one of up, degraded, down"),
    ([HealthSample("production", "api", "yesterday", UP, 200, 1.0, None)], HEALTHY, "time 'yesterday'"),
    ([sample(latency=float("inf"))], HEALTHY, "latency is not a duration"),
    ([sample(code=-1)], HEALTHY, "status code"),
    ([sample(check="")], HEALTHY, "no check name"),
], ids=["env-state", "two-envs", "check-state", "time", "latency", "code", "check"])
def test_a_round_andon_could_not_have_produced_is_refused_and_writes_nothing(
        clocked: DeployLog, samples: list[HealthSample], env_state: str, message: str) -> None:
    with pytest.raises(StoreError) as caught:
        clocked.record_health(samples, env_state)
    assert message in one_line(caught.value)
    assert count(clocked.path) == 0 and clocked.health_states() == {} and clocked.events() == []


def test_samples_are_read_per_check_newest_last_and_limited(clocked: DeployLog, clock: Clock) -> None:
    for n in range(10):
        clock.advance(seconds=5)
        clocked.record_health([sample("api", clock.now, UP, latency=float(n)),
                               sample("web", clock.now, DEGRADED if n % 2 else UP, latency=900.0 + n),
                               sample("db", clock.now, DOWN, code=None, latency=None, version=None,
                                      error="connection refused")],
                              DOWN)
    clocked.record_health([sample("api", T0 + timedelta(hours=1), env="staging")], HEALTHY)
    read = clocked.health_samples("production", per_check=4)
    assert list(read) == ["api", "db", "web"]
    assert [s.latency_ms for s in read["api"]] == [6.0, 7.0, 8.0, 9.0]
    assert [s.at for s in read["web"]] == [to_iso(T0 + timedelta(seconds=5 * n)) for n in range(7, 11)]
    assert read["db"][-1] == HealthSample("production", "db", to_iso(T0 + timedelta(seconds=50)), DOWN,
                                          None, None, None, "connection refused")
    assert [len(kept) for kept in clocked.health_samples("production").values()] == [10, 10, 10]
    assert list(clocked.health_samples("staging")) == ["api"]
    assert clocked.health_samples("nowhere") == {}
    assert clocked.health_states() == {"production": (DOWN, to_iso(T0 + timedelta(seconds=5))),
                                       "staging": (HEALTHY, to_iso(T0 + timedelta(seconds=50)))}


def test_reads_from_other_threads_while_rounds_are_recorded(clocked: DeployLog, clock: Clock) -> None:
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                for kept in clocked.health_samples("production").values():
                    assert [s.at for s in kept] == sorted(s.at for s in kept)
                clocked.health_states()
                clocked.health_state("production")
                clocked.lease("health:production")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    me = holder_id()
    try:
        for n in range(150):
            clocked.take_lease("health:production", me, 10)
            clocked.record_health([sample(f"c{k}", T0 + timedelta(seconds=n)) for k in range(5)],
                                  HEALTHY if n % 3 else DEGRADED)
    finally:
        done.set()
        for thread in readers:
            thread.join()
    assert errors == []
    assert len(health_events(clocked)) == 100


# -- retention ---------------------------------------------------------------------------


def test_a_check_keeps_its_newest_two_thousand_samples(clocked: DeployLog) -> None:
    clocked.record_health([sample("api", T0 - timedelta(seconds=n)) for n in range(2100)]
                          + [sample("web", T0 - timedelta(seconds=n)) for n in range(1500)], HEALTHY)
    assert count(clocked.path, check="api") == 2000
    assert count(clocked.path, check="web") == 1500
    with raw(clocked.path) as other:
        oldest = other.execute("SELECT min(at) FROM health_samples WHERE check_name = 'api'").fetchone()[0]
    assert oldest == to_iso(T0 - timedelta(seconds=1999))


def test_retention_keeps_the_bound_round_after_round(clocked: DeployLog, clock: Clock,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "KEEP_PER_CHECK", 20)
    monkeypatch.setattr(health, "COUNT_EVERY", 4)
    counts = []
    for _ in range(60):
        clock.advance(seconds=5)
        clocked.record_health([sample("api", clock.now), sample("web", clock.now)], HEALTHY)
        counts.append(count(clocked.path))
        assert count(clocked.path, check="web") == counts[-1]
    assert max(counts) == 20 + 4 - 1  # between two walks of the count rule
    assert counts[:20] == list(range(1, 21))  # nothing within the bound is deleted
    assert min(counts[20:]) == 20
    kept = clocked.health_samples("production", per_check=100)["api"]
    assert kept[-1].at == to_iso(clock.now)
    assert kept[0].at == to_iso(clock.now - timedelta(seconds=5 * (len(kept) - 1)))  # the newest ones


def test_samples_older_than_a_day_go_even_of_checks_no_longer_probed(clocked: DeployLog, clock: Clock) -> None:
    for _ in range(10):
        clocked.record_health([sample("api", clock.now), sample("old-check", clock.now)], HEALTHY)
        clocked.record_health([sample("api", clock.now, env="staging")], HEALTHY)
        clock.advance(hours=1)
    assert count(clocked.path, check="old-check") == 10
    clock.now = T0 + timedelta(days=1, hours=4, minutes=30)  # the first five rounds are over a day old
    clocked.record_health([sample("api", clock.now)], HEALTHY)
    assert count(clocked.path) == 6  # five left, and the new one
    assert count(clocked.path, check="old-check") == 5  # not in the round, still trimmed
    assert count(clocked.path, "staging") == 5  # another environment's prober has stopped
    clock.advance(days=2)
    clocked.record_health([], HEALTHY, env="production")
    with raw(clocked.path) as other:
        assert other.execute("SELECT count(*) FROM health_samples").fetchone()[0] == 0


# -- untrusted rows ------------------------------------------------------------------------


def test_samples_and_states_another_program_wrote_are_cleaned_or_skipped(clocked: DeployLog) -> None:
    clocked.record_health([sample("api", T0)], HEALTHY)
    good = to_iso(T0 + timedelta(seconds=1))
    planted = [
        # (check_name, at, state, status_code, latency_ms, version, error): cleaned
        ("api", good, "down", 503, 3.5, "v1\x1b[2J\u202e", "\x1b]0;pwned\x07HTTP 503\r\nboom"),
        ("evil\x1b[31m", good, "up", 200, 1, None, ""),
        # damaged: skipped
        ("api", "yesterday", "up", 200, 1.0, None, ""),
        ("api", good, "sideways", 200, 1.0, None, ""),
        ("api", good, "up", "two hundred", 1.0, None, ""),
        ("api", good, "up", 200, "fast", None, ""),
        ("api", good, "up", 200, 1e300 * 10, None, ""),
        ("api", good, "up", 200, -5.0, None, ""),
        ("api", good, "up", 200, 1.0, b"\x1b[31m", ""),
        ("api", good, "up", 200, 1.0, None, b"\x00\xff"),
        (b"\x1b[2Jbinary", good, "up", 200, 1.0, None, ""),
        ("", good, "up", 200, 1.0, None, ""),
        ("\x1b[0m", good, "up", 200, 1.0, None, ""),  # nothing left once cleaned
    ]
    with raw(clocked.path) as other:
        other.executemany("INSERT INTO health_samples (env, check_name, at, state, status_code, latency_ms,"
                          " version, error) VALUES ('production', ?, ?, ?, ?, ?, ?, ?)", planted)
        other.execute("INSERT INTO health_state (env, state, since) VALUES ('staging', 'on fire', ?)", (good,))
        other.execute("INSERT INTO health_state (env, state, since) VALUES ('qa', 'healthy', 'tuesday')")
        other.execute("INSERT INTO health_state (env, state, since) VALUES (?, 'down', ?)", ("x\x1b[2J", good))
        other.execute("INSERT INTO health_state (env, state, since) VALUES (?, 'down', ?)", (b"bin", good))
    read = clocked.health_samples("production")
    assert list(read) == ["api", "evil"]
    assert read["api"] == [sample("api", T0),
                           HealthSample("production", "api", good, DOWN, 503, 3.5, "v1", "HTTP 503  boom")]
    assert read["evil"] == [HealthSample("production", "evil", good, UP, 200, 1.0, None, "")]
    assert clocked.health_state("staging") is None and clocked.health_state("qa") is None
    assert clocked.health_states() == {"production": (HEALTHY, to_iso(T0))}
    # A damaged state is replaced by the next round, which says it changed (from nothing known).
    assert clocked.record_health([sample("api", T0, env="staging")], HEALTHY)
    assert health_events(clocked)[-1] == ("staging", {"state": HEALTHY, "previous": None})


def test_a_huge_planted_error_is_read_back_bounded(clocked: DeployLog) -> None:
    with raw(clocked.path) as other:
        other.execute("INSERT INTO health_samples (env, check_name, at, state, version, error)"
                      " VALUES ('production', 'api', ?, 'down', ?, ?)", (to_iso(T0), "v" * 100_000, "e" * 1_000_000))
    (kept,) = clocked.health_samples("production")["api"]
    assert len(kept.error) == health.TEXT_LIMIT and len(kept.version or "") == health.TEXT_LIMIT


# -- schema --------------------------------------------------------------------------------


class Schema4(DeployLog):
    """The andon before leases and health samples."""

    MIGRATIONS = store.MIGRATIONS[:4]


def test_an_older_log_migrates_keeps_its_deploys_and_older_andons_still_write_it(tmp_path: Path) -> None:
    path = tmp_path / "deploys.db"
    older = Schema4.open(path)
    first = older.record("production", sha(1), "succeeded", who="ci")
    older.close()
    with raw(path) as other:
        assert other.execute("PRAGMA user_version").fetchone()[0] == 4
    log = DeployLog.open(path)
    try:
        assert [d.sha for d in log.deploys()] == [sha(1)]
        assert log.live("production") == first
        assert log.record_health([sample()], HEALTHY)
        assert log.take_lease("health:production", holder_id(), 10)
    finally:
        log.close()
    with raw(path) as other:
        assert other.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        meta = dict(other.execute("SELECT key, value FROM andon_meta").fetchall())
        index = other.execute("SELECT sql FROM sqlite_master WHERE name = 'health_samples_check_at'").fetchone()[0]
    assert meta["writer_min_schema"] == "3"  # only added: older andons keep writing
    assert "(env, check_name, at)" in index
    older = Schema4.open(path)  # a teammate not upgraded yet
    try:
        older.record("production", sha(2), "succeeded", who="ci")
        assert [d.sha for d in older.deploys()] == [sha(2), sha(1)]
    finally:
        older.close()
