"""``make bench`` (health part 2): the dashboard while it probes 500 checks every 5 s.

The dashboard (``make_app``, the one factory the CLI uses) runs headless under Textual's
test driver on the same configuration as ``benchmarks.health``: 500 checks over five
environments against a local service in its own process. Nothing else probes, so the
dashboard holds the leases and probes itself (its watcher's rounds run on a thread of
their own with their own event loop, ``backend.watcher.WatcherThread``; the probes'
CPU still competes for the interpreter's lock), reads the samples after each round and
polls the log, as a dashboard left open does. The shown environment, ``env0``, has 100
checks: its health panel is given 100 of them after each round (and draws those in view).

* event-loop lag: a coroutine on the app's loop sleeps 10 ms again and again; how late
  it wakes is the lag every key press would feel. p50/p99/max over the run (target: p99
  under 50 ms).
* detection: after a warm-up, every check of environment ``env0`` starts answering 503;
  the time until the environment bar shows ``env0`` down (target: within one interval
  plus 1 s).

Headless, so drawing to a real terminal is not counted. Like ``andon`` (``tui.cli``), it
freezes the objects its imports left before the app starts (``gc.freeze``): a full
collection then walks only what the dashboard made since (~110,000 objects, ~100 ms with
the interpreter's lock held, every 20 s or so here). The run starts with the app, so
the first frame and mounting the panel's 100 rows (a few hundred milliseconds, once) are
in the max; the max after the first ``SETTLED`` seconds is printed too. Run alone:
``python -m benchmarks.health_dashboard [--seconds 40]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.generate import isolated_env
from benchmarks.health import SERVER, _config

LAG_TARGET = 0.050
INTERVAL = 5.0
SETTLED = 5.0  # seconds after the start: the first frame and the panel's first rows are behind


async def _run(repo: Path, db: Path, flag: Path, seconds: float,
               warmup: float) -> tuple[list[float], float | None, int]:
    import gc

    from backend.world import resolve_world
    from tui.app import make_app
    from tui.widgets.envbar import EnvBar

    gc.freeze()  # as tui.cli does after its imports: without it every full collection walks them too
    world = resolve_world(repo, db, None)
    app = make_app(world)
    lags: list[float] = []
    detected: float | None = None
    settled = 0  # the first wake-up after SETTLED
    async with app.run_test(size=(120, 40)):
        loop = asyncio.get_running_loop()
        start = loop.time()
        went_down: float | None = None
        while loop.time() - start < seconds:
            before = loop.time()
            await asyncio.sleep(0.01)
            lags.append(max(0.0, loop.time() - before - 0.01))
            now = loop.time()
            if not settled and now - start >= SETTLED:
                settled = len(lags) - 1
            if went_down is None and now - start >= warmup:
                flag.touch()
                went_down = now
            if went_down is not None and detected is None:
                bar = app.screen.query_one(EnvBar)
                if bar.health.get("env0") == "down":
                    detected = now - went_down
                    if now - start >= warmup + INTERVAL + 2:
                        break
    world.close()
    return lags, detected, settled


def measure(checks: int = 500, seconds: float = 40.0,
            warmup: float = 15.0) -> tuple[list[float], float | None, int]:
    """The lags, the detection time and the index of the first lag after ``SETTLED``."""
    with tempfile.TemporaryDirectory(prefix="andon-bench-dash-") as tmp:
        root = Path(tmp)
        repo = root / "repo"
        repo.mkdir()
        subprocess.run(["git", "init", "--quiet", str(repo)], check=True, env=isolated_env())
        flag = root / "down"
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(flag)], stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            (repo / "andon.toml").write_text(_config(port, checks, INTERVAL))
            return asyncio.run(_run(repo, root / "deploys.db", flag, seconds, warmup))
        finally:
            server.kill()
            server.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.health_dashboard",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    lags, detected, settled = measure(args.checks, args.seconds, args.warmup)
    ordered = sorted(lags)
    p99 = ordered[int(len(ordered) * 0.99) - 1] if ordered else float("nan")
    print(f"dashboard probing {args.checks} checks every {INTERVAL:g}s, headless, {time.perf_counter() - started:.0f}s:")
    print(f"  event-loop lag: p50 {statistics.median(lags) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
          f"max {ordered[-1] * 1000:.1f} ms over {len(lags):,} wake-ups (target: p99 < {LAG_TARGET * 1000:.0f} ms)  "
          f"{'PASS' if p99 < LAG_TARGET else 'FAIL'}")
    print(f"  after the first {SETTLED:g}s (first frame, the panel's first rows): "
          f"max {max(lags[settled:], default=0.0) * 1000:.1f} ms")
    limit = INTERVAL + 1.0
    if detected is None:
        print(f"  service down -> dashboard shows it: not shown within the run (target: < {limit:g}s)  FAIL")
    else:
        print(f"  service down -> dashboard shows it: {detected:.2f}s (target: < {limit:g}s)  "
              f"{'PASS' if detected < limit else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
