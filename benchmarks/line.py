"""``make bench`` (the line): a stop reaching other dashboards and chat, and twelve racing rollbacks.

Three measurements on a small repository and log made in a temporary directory, each with
real processes (the machine is shared and noisy: the figures are percentiles of many
samples, and the baseline of the third is measured in the same run):

* **stop to banner**: two headless dashboards (``make_app(...).run_test()``, the one factory
  the CLI uses) in two processes on one log. One presses ``S`` (stop the line), the other
  looks at its ``LineBanner`` every 5 ms; each writes ``time.time()`` (the clock both
  processes read) when it pressed and when the banner showed. Then ``R`` (resume), the
  banner clears, a random pause of up to 0.5 s (so that the stops do not keep one phase
  against the other dashboard's half-second poll), and again. One warm-up, then
  ``--samples`` (30). Target: p95 under 1 s, aim 250 ms.
* **stop to chat**: a signed webhook receiver on 127.0.0.1 (the demo's,
  :class:`backend.demo_chat.DemoChat`, which checks each signature) in this process, and
  ``andon stop --env production`` started as a process: from just before it is started to the
  message's arrival (the command delivers its own news after writing it). Then ``andon
  resume`` and its message. ``--samples`` of each (20 at most). The same from a headless
  dashboard pressing ``S`` (it delivers at once after its own keys). Target: p95 under 1 s.
* **twelve racing rollbacks**: twelve ``andon rollback --env production`` started at once: the
  time from starting the first to the last one's exit, when every caller has its answer (one
  requested it, exit 0; eleven were told it is under way, exit 7), checked every round: the
  action ran exactly once, to the right SHA. ``--rounds`` (5). With the default
  ``rollback_grace_seconds`` (5): twelve processes starting at once on two cores spread over
  about three seconds, and with no grace a caller that starts after the rollback has ended
  requests another (one good version further back), as ``andon rollback`` run later would.
  Beside it, the baseline in the same run: twelve ``andon resume --env production`` at once on
  a running line (the same start-up and one ``BEGIN IMMEDIATE`` each). The issue gives no target.

Run alone: ``python -m benchmarks.line [--samples 30] [--rounds 5] [--only banner|chat|rollbacks]``.
Exit 0 whatever the figures say (a report), 1 when something measured did not happen.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import queue
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.generate import andon_bin, isolated_env

BANNER_TARGET = 1.0
BANNER_AIM = 0.25
CHAT_TARGET = 1.0
WAIT = 15.0  # seconds for anything awaited before the run is called failed
LOOK = 0.005  # seconds between two looks at the banner
POLL = 0.5  # seconds: how often a dashboard asks the log for news (make_app's default, andon's)
RACE_GRACE = 5.0  # the default rollback_grace_seconds: every caller answers while the rollback is pending
ACTION = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')"
ROOT = Path(__file__).resolve().parent.parent


class Failed(Exception):
    """Something measured did not happen in time."""


def p95(values: Sequence[float]) -> float:
    """The 95th percentile, nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def summary(values: Sequence[float]) -> str:
    return (f"p50 {statistics.median(values) * 1000:.0f} ms, p95 {p95(values) * 1000:.0f} ms, "
            f"max {max(values) * 1000:.0f} ms")


# -- the world --------------------------------------------------------------------------------


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    return isolated_env() | {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
                             "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com"} | (extra or {})


def make_world(root: Path, config: str = "", grace: float = 0) -> tuple[Path, Path, list[str]]:
    """A repository of three commits with ``production`` configured (its action appends the SHA to
    ``root/actions.txt``; ``grace``: its rollback_grace_seconds), a log with its first two deploys:
    (repo, db, shas)."""
    repo, db = root / "repo", root / "deploys.db"
    repo.mkdir(parents=True)
    env = environment()
    subprocess.run(["git", "init", "--quiet", str(repo)], check=True, env=env)
    for number in range(3):
        subprocess.run(["git", "-C", str(repo), "commit", "--quiet", "--allow-empty", "-m", f"commit {number}"],
                       check=True, env=env)
    shas = subprocess.run(["git", "-C", str(repo), "rev-list", "--reverse", "HEAD"], check=True, env=env,
                          capture_output=True, text=True).stdout.split()
    argv = [sys.executable, "-c", ACTION, str(root / "actions.txt"), "{sha}"]
    (repo / "andon.toml").write_text(
        "[environments.production]\n"
        f"deploy = [{', '.join(_toml(arg) for arg in argv)}]\n"
        f"rollback_grace_seconds = {grace:g}\n" + config)
    for sha in shas[:2]:
        andon("record", "--env", "production", "--sha", sha, "--status", "succeeded", repo=repo, db=db)
    return repo, db, shas


def _toml(text: str) -> str:
    import json

    return json.dumps(text)  # a JSON string is a TOML basic string


def andon(*args: str, repo: Path, db: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(andon_bin()), *args, "--repo", str(repo), "--db", str(db)], env=env or environment(),
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise Failed(f"andon {args[0]} exited {done.returncode}: {done.stderr.strip()}")
    return done


# -- headless dashboards in processes of their own ----------------------------------------------


class Child:
    """A headless dashboard in its own process (``--role``), told what to do a line at a time."""

    def __init__(self, role: str, repo: Path, db: Path, env: dict[str, str], poll: float = POLL) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.line", "--role", role, "--repo", str(repo), "--db", str(db),
             "--poll-interval", str(poll)],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.expect("ready", 60)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put("exited")

    def say(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def expect(self, word: str, seconds: float = WAIT) -> float:
        """The time stamp the child wrote after ``word``."""
        try:
            line = self.lines.get(timeout=seconds)
        except queue.Empty:
            raise Failed(f"a dashboard did not say {word!r} within {seconds:g}s") from None
        said, _, stamp = line.partition(" ")
        if said != word:
            raise Failed(f"a dashboard said {line!r}, not {word!r}")
        return float(stamp) if stamp else 0.0

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.say("quit")
                self.process.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def _tell(word: str) -> None:
    # The original stdout: Textual captures print() while an app runs.
    os.write(1, f"{word} {time.time():.6f}\n".encode())


async def _dashboard(role: str, repo: Path, db: Path, poll: float) -> None:
    """A child: ``presser`` presses S or R when told; ``watcher`` says when its banner shows and clears."""
    import gc

    from backend.world import resolve_world
    from tui.app import make_app

    gc.freeze()  # as tui.cli does before the dashboard opens
    world = resolve_world(repo, db, None)
    app = make_app(world, poll_interval=poll)
    loop = asyncio.get_running_loop()
    async with app.run_test(size=(120, 40)) as pilot:
        line = app.screen.line  # type: ignore[attr-defined]
        deadline = loop.time() + 60
        while line.banner is None or line.view is None:  # mounted, and the line read once
            if loop.time() > deadline:
                raise SystemExit("the banner never came")
            await asyncio.sleep(0.05)
        _tell("ready")
        commands = asyncio.ensure_future(loop.run_in_executor(None, sys.stdin.readline))
        shown = line.banner.shown
        while True:
            if role == "watcher":
                await asyncio.sleep(LOOK)
                if line.banner.shown != shown:
                    shown = line.banner.shown
                    _tell("shown" if shown else "cleared")
                if not commands.done():
                    continue
            else:
                await asyncio.wait([commands])
            command = commands.result().strip()
            if command in ("quit", ""):
                break
            if command == "stop":
                _tell("pressed")
                await pilot.press("S")
            elif command == "resume":
                await pilot.press("R")
                _tell("resumed")
            commands = asyncio.ensure_future(loop.run_in_executor(None, sys.stdin.readline))
    world.close()


# -- 1. stop to banner --------------------------------------------------------------------------


def stop_to_banner(samples: int, poll: float = POLL) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="andon-bench-line-") as tmp:
        repo, db, _ = make_world(Path(tmp))
        env = environment()
        presser = Child("presser", repo, db, env, poll)
        watcher = Child("watcher", repo, db, env, poll)
        try:
            delays: list[float] = []
            for number in range(samples + 1):  # the first is a warm-up
                time.sleep(random.uniform(0.0, 0.5))
                presser.say("stop")
                pressed = presser.expect("pressed")
                shown = watcher.expect("shown")
                if number:
                    delays.append(shown - pressed)
                presser.say("resume")
                presser.expect("resumed")
                watcher.expect("cleared")
            return delays
        finally:
            presser.close()
            watcher.close()


# -- 2. stop to chat ------------------------------------------------------------------------------


def stop_to_chat(samples: int) -> tuple[list[float], list[float], list[float]]:
    """(andon stop -> message, andon stop's own run, the dashboard's S -> message)."""
    from backend.demo_chat import SECRET_ENV, URL_ENV, DemoChat

    with tempfile.TemporaryDirectory(prefix="andon-bench-chat-") as tmp:
        root = Path(tmp)
        config = f'\n[[notify]]\nkind = "webhook"\nurl_env = "{URL_ENV}"\nsecret_env = "{SECRET_ENV}"\n'
        repo, db, _ = make_world(root, config)
        chat = DemoChat(root / "chat.log")
        env = environment(chat.variables())
        try:
            arrived, ran = [], []
            for _ in range(samples):
                time.sleep(random.uniform(0.0, 0.5))
                count = len(chat.messages())
                started = time.time()
                andon("stop", "--env", "production", "--reason", "bench", repo=repo, db=db, env=env)
                ended = time.time()
                got = chat.wait_for(count + 1, WAIT)
                if len(got) <= count or got[count].message.get("kind") != "line.stopped":
                    raise Failed("andon stop's message did not arrive")
                arrived.append(got[count].at - started)
                ran.append(ended - started)
                andon("resume", "--env", "production", repo=repo, db=db, env=env)
                if len(chat.wait_for(count + 2, WAIT)) < count + 2:
                    raise Failed("andon resume's message did not arrive")
            from_dashboard: list[float] = []
            presser = Child("presser", repo, db, env)
            try:
                time.sleep(2.0)  # its first delivery (imports, TLS context) is behind it
                for _ in range(samples):
                    time.sleep(random.uniform(0.0, 0.5))
                    count = len(chat.messages())
                    presser.say("stop")
                    pressed = presser.expect("pressed")
                    got = chat.wait_for(count + 1, WAIT)
                    if len(got) <= count:
                        raise Failed("the dashboard's stop message did not arrive")
                    from_dashboard.append(got[count].at - pressed)
                    presser.say("resume")
                    presser.expect("resumed")
                    if len(chat.wait_for(count + 2, WAIT)) < count + 2:
                        raise Failed("the dashboard's resume message did not arrive")
            finally:
                presser.close()
            if chat.refused:
                raise Failed(f"the receiver refused {chat.refused} requests (bad signatures?)")
            return arrived, ran, from_dashboard
        finally:
            chat.stop()


# -- 3. twelve racing rollbacks ---------------------------------------------------------------------


def _race(argv: list[str], env: dict[str, str], callers: int = 12) -> tuple[list[float], list[int]]:
    """Start ``callers`` copies of ``argv`` at once: each one's time to exit, and exit codes."""
    started = time.perf_counter()
    processes = [subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for _ in range(callers)]
    ended: dict[int, float] = {}
    deadline = started + 120
    while len(ended) < callers:
        for index, process in enumerate(processes):
            if index not in ended and process.poll() is not None:
                ended[index] = time.perf_counter() - started
        if time.perf_counter() > deadline:
            for process in processes:
                process.kill()
            raise Failed("twelve racing callers did not all answer within 120 s")
        time.sleep(0.001)
    return [ended[i] for i in range(callers)], [p.returncode for p in processes]


def racing_rollbacks(rounds: int) -> tuple[list[list[float]], list[list[float]], list[str]]:
    """(each round's twelve times, each baseline round's twelve times, what went wrong)."""
    with tempfile.TemporaryDirectory(prefix="andon-bench-race-") as tmp:
        root = Path(tmp)
        repo, db, shas = make_world(root, grace=RACE_GRACE)
        env = environment()
        where = ["--repo", str(repo), "--db", str(db)]
        bin_ = str(andon_bin())
        actions = root / "actions.txt"
        problems: list[str] = []
        times, baseline = [], []
        for number in range(rounds):
            # The newest deploy is a good one to roll back (the first round: the second commit;
            # then the third, recorded after the previous round's rollback to the first).
            if number:
                andon("record", "--env", "production", "--sha", shas[2], "--status", "succeeded", repo=repo, db=db)
            before = actions.read_text().splitlines() if actions.exists() else []
            took, codes = _race([bin_, "rollback", "--env", "production", "--reason", "bench", *where], env)
            times.append(took)
            if sorted(codes) != [0] + [7] * 11:
                problems.append(f"round {number + 1}: exit codes {sorted(codes)}, not one 0 and eleven 7")
            _wait_for_rollback(db)
            time.sleep(0.5)  # a second runner, were there one, would have run by now
            ran = (actions.read_text().splitlines() if actions.exists() else [])[len(before):]
            if ran != [shas[0]]:
                problems.append(f"round {number + 1}: the action ran {len(ran)} times ({ran}), not once to {shas[0][:7]}")
            andon("resume", "--env", "production", repo=repo, db=db)
            took, codes = _race([bin_, "resume", "--env", "production", *where], env)
            baseline.append(took)
            if codes != [0] * 12:
                problems.append(f"baseline round {number + 1}: exit codes {codes}")
        return times, baseline, problems


def _wait_for_rollback(db: Path) -> None:
    deadline = time.monotonic() + RACE_GRACE + WAIT
    while time.monotonic() < deadline:
        with sqlite3.connect(db) as conn:
            active = conn.execute("SELECT count(*) FROM rollbacks WHERE status IN ('pending', 'running')").fetchone()[0]
        if not active:
            return
        time.sleep(0.05)
    raise Failed(f"the rollback did not end within {WAIT:g}s")


# -- the report ---------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.line", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30, help="stops timed for the banner (chat: up to 20)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of twelve racing rollbacks")
    parser.add_argument("--only", choices=["banner", "chat", "rollbacks"])
    parser.add_argument("--poll-interval", type=float, default=POLL,
                        help=f"how often the dashboards ask the log for news (default {POLL:g} s, as andon's)")
    parser.add_argument("--role", choices=["presser", "watcher"], help=argparse.SUPPRESS)
    parser.add_argument("--repo", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        asyncio.run(_dashboard(args.role, args.repo, args.db, args.poll_interval))
        return 0
    try:
        if args.only in (None, "banner"):
            delays = stop_to_banner(args.samples, args.poll_interval)
            polled = "" if args.poll_interval == POLL else f" (dashboards polling every {args.poll_interval:g} s)"
            print(f"stop to banner, S in one headless dashboard process to the LineBanner in another on the same log"
                  f"{polled}, {len(delays)} samples: {summary(delays)} (target: p95 < {BANNER_TARGET:g} s, aim "
                  f"{BANNER_AIM * 1000:.0f} ms)  {verdict(p95(delays) < BANNER_TARGET)}", flush=True)
        if args.only in (None, "chat"):
            arrived, ran, dashboard = stop_to_chat(min(args.samples, 20))
            print(f"stop to chat, andon stop started to its message at a signed webhook on 127.0.0.1, "
                  f"{len(arrived)} samples: {summary(arrived)} (target: p95 < {CHAT_TARGET:g} s)  "
                  f"{verdict(p95(arrived) < CHAT_TARGET)}", flush=True)
            print(f"  andon stop's whole run (start-up, the stop, the delivery): {summary(ran)}")
            print(f"stop to chat, S in a headless dashboard to its message, {len(dashboard)} samples: "
                  f"{summary(dashboard)} (target: p95 < {CHAT_TARGET:g} s)  {verdict(p95(dashboard) < CHAT_TARGET)}",
                  flush=True)
        if args.only in (None, "rollbacks"):
            times, baseline, problems = racing_rollbacks(args.rounds)
            alls = [max(round_) for round_ in times]
            bases = [max(round_) for round_ in baseline]
            print(f"twelve racing andon rollback, {len(times)} rounds: all twelve answered in "
                  f"p50 {statistics.median(alls):.2f} s, max {max(alls):.2f} s (each caller: p50 "
                  f"{statistics.median([t for r in times for t in r]):.2f} s); twelve andon resume at once: p50 "
                  f"{statistics.median(bases):.2f} s ({statistics.median(alls) / statistics.median(bases):.2f}x)",
                  flush=True)
            print(f"  one requested, eleven told it is under way (exit 7), the action ran once to the right SHA, "
                  f"every round (no time target)  {verdict(not problems)}")
            for problem in problems:
                print(f"    {problem}")
    except Failed as error:
        print(f"benchmarks: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
