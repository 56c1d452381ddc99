"""A running deploy's output in the log as it comes: written by the process that runs the command,
read by any other, bounded, dropped when the row gets its final output, never failing the deploy.

Real parts: repositories made by git, SQLite files, ``andon deploy`` and its command as real
processes, a real write lock held by another connection. The commands wait for a gate file
between their lines, so a test says when they go on instead of guessing with sleeps.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backend.deployer import DeployOutcome, deploy
from backend.live_output import LiveOutput
from backend.models import RUNNING, SUCCEEDED
from backend.runner import Runner
from backend.store import DeployLog, Streamed
from backend.world import resolve_world
from tests.conftest import Repo, raw

SHA = "a" * 40

# Prints a line, then waits for each gate file named after it before printing the next line.
GATED_SCRIPT = """\
import sys, time
from pathlib import Path
lines, gates = sys.argv[1].split("|"), sys.argv[2:]
for number, line in enumerate(lines):
    if number:
        gate = Path(gates[number - 1])
        while not gate.exists():
            time.sleep(0.02)
    print(line, flush=True)
"""


def until(condition: Callable[[], object], seconds: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what or "timed out"
        time.sleep(0.02)


def gated(folder: Path, *lines: str) -> list[str]:
    """The argv of a command printing ``lines``, each after the one before it and its gate file in ``folder``."""
    script = folder / "gated.py"
    script.write_text(GATED_SCRIPT)
    return [sys.executable, str(script), "|".join(lines), *(str(folder / f"gate{n}") for n in range(1, len(lines)))]


def open_gate(folder: Path, number: int) -> None:
    (folder / f"gate{number}").touch()


@pytest.fixture
def log(tmp_path: Path) -> Iterator[DeployLog]:
    opened = DeployLog.open(tmp_path / "deploys.db")
    yield opened
    opened.close()


def chunks(db: Path) -> list[tuple[int, int, str]]:
    with raw(db) as conn:
        return conn.execute("SELECT deploy_id, start, text FROM deploy_output ORDER BY deploy_id, start").fetchall()


# -- andon deploy, read by another process ------------------------------------------------------


def test_another_process_reads_a_running_deploys_output_before_its_command_ends(
        repo: Repo, tmp_path: Path) -> None:
    repo.commit("first")
    db = tmp_path / "deploys.db"
    reader = DeployLog.open(db)  # this test's process: not the one running the command
    process = subprocess.Popen([sys.executable, "-m", "tui.cli", "--repo", str(repo.path), "--db", str(db),
                                "deploy", "--env", "staging", "--", *gated(tmp_path, "first line", "second line")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        until(lambda: reader.count() == 1, what="the deploy never started")
        [running] = reader.deploys()
        until(lambda: reader.streamed(running.id).text == "first line\n", what=str(reader.streamed(running.id)))
        assert process.poll() is None and reader.get(running.id).status == RUNNING
        assert reader.get(running.id).output == ""  # the row gets its output once, at the end
        first = reader.streamed(running.id)
        assert first == Streamed(running.id, 0, len("first line\n"), "first line\n")
        assert reader.streamed(running.id, first.end).text == ""  # nothing new after it yet
        open_gate(tmp_path, 1)
        assert process.wait(timeout=30) == 0, process.stderr.read() if process.stderr else ""
        done = reader.get(running.id)
        assert (done.status, done.output) == (SUCCEEDED, "first line\nsecond line\n")
        # The stream went with the row's end (the final output holds it all), and no chunk was news.
        assert reader.streamed(running.id) == Streamed(running.id, 0, 0, "")
        assert chunks(db) == []
        assert [event.kind for event in reader.events()] == ["deploy.finished", "deploy.started"]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()
        reader.close()


def test_a_log_locked_longer_than_the_busy_timeout_holds_back_the_live_output_and_never_fails_the_deploy(
        repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer holds the log: a chunk's write gives up after the busy timeout (0.2 s here,
    10 s in andon), is tried again, and lands once the log is free; the deploy goes on meanwhile."""
    monkeypatch.setattr("backend.store.core.BUSY_TIMEOUT", 0.2)
    repo.commit("first")
    db = tmp_path / "deploys.db"
    world = resolve_world(repo.path, db, None)
    world.log  # noqa: B018 - created now, before the holder below
    reader = DeployLog.open(db)
    outcome: list[DeployOutcome] = []
    worker = threading.Thread(target=lambda: outcome.append(deploy(
        world, "staging", "HEAD", command=gated(tmp_path, "one", "two", "three"), runner=Runner())))
    worker.start()
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        until(lambda: reader.count() == 1 and reader.streamed(reader.deploys()[0].id).text == "one\n")
        deploy_id = reader.deploys()[0].id
        holder.execute("BEGIN IMMEDIATE")  # the write lock, for longer than the busy timeout
        open_gate(tmp_path, 1)
        time.sleep(1.2)  # "two" is printed and its write gives up (0.2 s), again and again
        assert reader.streamed(deploy_id).text == "one\n"
        assert reader.get(deploy_id).status == RUNNING  # the command went on
        holder.execute("COMMIT")
        until(lambda: reader.streamed(deploy_id).text == "one\ntwo\n", what="the held-back chunk never landed")
        open_gate(tmp_path, 2)
        worker.join(30)
        assert not worker.is_alive()
        [done] = outcome
        assert (done.deploy.status, done.exit_code, done.deploy.output) == (SUCCEEDED, 0, "one\ntwo\nthree\n")
    finally:
        holder.close()
        reader.close()
        world.close()


# -- the writer --------------------------------------------------------------------------------


def test_a_write_that_fails_is_tried_again_at_the_next_turn(log: DeployLog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("backend.store.core.BUSY_TIMEOUT", 0.1)
    held = DeployLog.open(log.path)  # opened with the short busy timeout
    started = held.start("staging", SHA, who="ci")
    holder = sqlite3.connect(log.path, isolation_level=None)
    with LiveOutput(held, started.id, every=0.05) as live:
        holder.execute("BEGIN IMMEDIATE")
        live.write("one\n")
        until(lambda: live.failures >= 2, what="the write never failed")  # tried again, with no new output
        assert "locked" in live.error and live.writes == 0
        holder.execute("COMMIT")
        until(lambda: log.streamed(started.id).text == "one\n")
        assert live.writes >= 1
    holder.close()
    held.close()


def test_writes_are_throttled_and_rows_are_cut_to_the_chunk_size(log: DeployLog) -> None:
    started = log.start("staging", SHA, who="ci")
    with LiveOutput(log, started.id, every=0.4, chunk=10) as live:
        live.write("first\n")
        until(lambda: live.writes == 1)  # the first output goes at once
        began = time.monotonic()
        for number in range(20):
            live.write(f"line {number:02d}\n")
            time.sleep(0.01)
        until(lambda: log.streamed(started.id).text.endswith("line 19\n"))
        assert time.monotonic() - began >= 0.35  # the rest waited for its turn
        assert live.writes <= 3
    stored = chunks(log.path)
    assert max(len(text) for _, _, text in stored) <= 10
    assert log.streamed(started.id).text == "first\n" + "".join(f"line {n:02d}\n" for n in range(20))


def test_the_stream_is_bounded_keeping_its_start_and_its_end(log: DeployLog) -> None:
    """As the final output: the first quarter of the limit and the most recent rest; readers see what was cut."""
    started = log.start("staging", SHA, who="ci")
    lines = [f"line {number:04d}\n" for number in range(2000)]  # 20,000 characters
    with LiveOutput(log, started.id, every=0.0, chunk=100, limit=1000) as live:
        for line in lines:
            live.write(line)
        until(lambda: log.streamed(started.id).text.endswith(lines[-1]))
    stored = chunks(log.path)
    assert sum(len(text) for _, _, text in stored) <= 250 + 750 + 2 * 100  # head and tail, each to a whole chunk
    text = log.streamed(started.id).text
    assert text.startswith("".join(lines[:25]))  # the first 250 characters
    assert "characters of output not kept ...]\n" in text
    assert text.endswith("".join(lines[-75:]))  # the last 750


def test_the_writers_buffer_is_bounded_while_the_log_cannot_be_written(log: DeployLog) -> None:
    started = log.start("staging", SHA, who="ci")
    live = LiveOutput(log, started.id, every=3600.0, limit=1000)
    live.write("start\n")
    until(lambda: live.writes == 1)
    for number in range(5000):  # nothing is written for an hour: all of it waits in the buffer
        live.write(f"line {number:04d}\n")
    assert live._buffered <= 2 * 1000 + 10
    live.close()


# -- the store ---------------------------------------------------------------------------------


def test_the_stream_is_dropped_when_the_row_gets_its_final_output_and_a_late_chunk_is_ignored(
        log: DeployLog) -> None:
    started = log.start("staging", SHA, who="ci")
    log.append_output(started.id, [(0, "one\n")], keep_head=100, keep_tail=100)
    assert log.streamed(started.id).text == "one\n"
    log.finish(started.id, SUCCEEDED, exit_code=0, output="one\ntwo\n")
    assert chunks(log.path) == []
    log.append_output(started.id, [(4, "late\n")], keep_head=100, keep_tail=100)  # a writer slow to stop
    assert chunks(log.path) == []
    assert log.get(started.id).output == "one\ntwo\n"


def test_a_reader_asks_for_what_came_after_its_position_and_sees_a_jump_as_output_not_kept(
        log: DeployLog) -> None:
    started = log.start("staging", SHA, who="ci")
    log.append_output(started.id, [(0, "aaaa\n"), (5, "bbbb\n")], keep_head=5, keep_tail=10)
    seen = log.streamed(started.id)
    assert (seen.text, seen.end) == ("aaaa\nbbbb\n", 10)
    log.append_output(started.id, [(10, "cccc\n"), (15, "dddd\n")], keep_head=5, keep_tail=10)
    assert chunks(log.path) == [(started.id, 0, "aaaa\n"), (started.id, 10, "cccc\n"), (started.id, 15, "dddd\n")]
    later = log.streamed(started.id, seen.end)
    assert (later.text, later.since, later.end) == ("cccc\ndddd\n", 10, 20)
    assert log.streamed(started.id).text == "aaaa\n\n[... 5 characters of output not kept ...]\ncccc\ndddd\n"
    assert log.streamed_tail(started.id, 7) == "c\ndddd\n"
    assert log.streamed_tail(started.id) == log.streamed(started.id).text  # short: all of it


def test_chunks_another_program_wrote_are_cleaned_as_they_are_read(log: DeployLog) -> None:
    started = log.start("staging", SHA, who="ci")
    with raw(log.path) as conn:
        conn.executemany("INSERT INTO deploy_output (deploy_id, start, text) VALUES (?, ?, ?)", [
            (started.id, 0, "\x1b[31mred\x1b[0m [b]x[/b]\x07\n"),
            (started.id, 30, b"\xff\x1b]8;;http://evil\x07link\n"),
            (started.id, "x", "not a position\n"),
        ])
    text = log.streamed(started.id).text
    assert "\x1b" not in text and "\x07" not in text
    assert text.startswith("red [b]x[/b]\n\n[... 7 characters of output not kept ...]\n")
    assert text.endswith("\ufffdlink\n") and "not a position" not in text
    assert log.streamed_tail(started.id).endswith("\ufffdlink\n")
