"""``make bench`` (migrations): every migration's phase against one ``git log`` over the same history.

On the generated dataset (benchmarks/generate.py: 50,000 commits carrying 200 migrations'
trailers, 10,000 deploys), each figure is the median of several runs divided by the median
of the baseline's, the two interleaved in this one process (baseline, subject, baseline,
...; one warm-up each), as in benchmarks/run.py:

* **baseline**: one plain ``git log <deploy branch>`` (the default format, every commit of
  the branch), its standard output a pipe this process drains and throws away, as andon
  reads git's output.
* **scan** (``backend.markers.scan``, in this process): the markers and every tip's
  mask, the tips being the branch head and every distinct SHA of a succeeded deploy, read
  from the log before the clock starts. It is the one git walk the evaluation makes; its
  budget is 1.5x, leaving the rest of the issue's 2x to everything else. Its peak Python
  memory (``tracemalloc``, a separate untimed run) is printed beside it.
* **andon migrations --json --repo R --db D** (target: at most 2x), its output to a file,
  measured twice, each on its own copy of the log (copied with SQLite's backup API, not
  timed):
  - **cold**: every run on a fresh copy whose ``migration_cache`` is empty, so the
    markers, the live-since times and the evidence all come from git;
  - **warm**: a copy on which one run has filled the cache, and nothing has changed since:
    the normal case of a dashboard or a CI job asking again.
  While ``andon migrations`` does not exist (``andon migrations --help`` fails) these
  rows say so and are skipped.

Run alone: ``python -m benchmarks.migrations [--repeat 5] [--only scan|cli]`` (and the
generator's ``--commits``, ``--deploys``, ``--seed``, ``--migrations``). Exit 0 whatever the
ratios say (a report), 1 when a measured command failed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from benchmarks.generate import Dataset, Params, andon_bin, ensure, isolated_env
from benchmarks.run import CommandFailed, Sample, Series, run_plain

SCAN_BUDGET = 1.5
CLI_TARGET = 2.0


def baseline_argv(data: Dataset) -> list[str]:
    return ["git", "-C", str(data.repo), "log", "main"]


def run_git_log(data: Dataset) -> Sample:
    """The baseline: plain ``git log main``, its output a pipe drained here; spawn to reaped."""
    started = time.perf_counter()
    proc = subprocess.Popen(baseline_argv(data), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=isolated_env())
    assert proc.stdout is not None
    read = proc.stdout.read1  # type: ignore[attr-defined]
    while read(1 << 16):
        pass
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise CommandFailed("git log main", f"exit code {os.waitstatus_to_exitcode(status)}")
    return Sample(elapsed, usage.ru_maxrss, {"cpu": usage.ru_utime + usage.ru_stime})


def run_to_file(argv: list[str], out: Path, *, cwd: Path) -> Sample:
    """benchmarks.run's run_plain (stdout to a file, spawn to reaped), with the CPU time of the
    command and of every child it waited for (its git commands)."""
    return run_plain(argv, out, cwd=cwd, cpu=True)


def tips_of(data: Dataset) -> list[str]:
    """The tips the evaluation asks about: the branch head and every distinct succeeded deploy."""
    with closing(sqlite3.connect(data.db)) as conn:
        shas = [row[0] for row in conn.execute("SELECT DISTINCT sha FROM deploys WHERE status = 'succeeded'")]
    return [data.head_sha, *shas]


def interleave(baseline: Series, subject: Series, run_baseline: Callable[[], Sample],
               run_subject: Callable[[], Sample], repeat: int) -> None:
    run_baseline()
    run_subject()  # warm-ups: the page cache, the first Repo, imports
    for _ in range(repeat):
        baseline.samples.append(run_baseline())
        subject.samples.append(run_subject())
        print(f"  {subject.label}: {subject.samples[-1].seconds:.3f}s, "
              f"{baseline.label}: {baseline.samples[-1].seconds:.3f}s", file=sys.stderr)


# -- scan ------------------------------------------------------------------------------------


def bench_scan(data: Dataset, repeat: int, notes: list[str]) -> tuple[Series, Series]:
    from backend.history import History
    from backend.markers import scan

    tips = tips_of(data)
    history = History.discover(data.repo, honour_git_dir=False)
    found = None

    def run_scan() -> Sample:
        nonlocal found
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = time.process_time()
        started = time.perf_counter()
        found = scan(history, tips)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu += after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
        if found.error:
            raise CommandFailed("backend.markers.scan", found.error)
        return Sample(elapsed, 0, {"cpu": cpu})

    baseline, subject = Series("git log"), Series("scan")
    print(f"benchmarks: backend.markers.scan over {len(tips)} tips vs git log ...", file=sys.stderr)
    try:
        interleave(baseline, subject, lambda: run_git_log(data), run_scan, repeat)
        tracemalloc.start()
        scan(history, tips)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        history.close()
    assert found is not None
    names = {m.name for m in found.markers}
    notes.append(f"scan: {len(tips)} tips ({len(found.missing)} missing), {len(found.markers)} markers of "
                 f"{len(names)} migrations, {len(found.problems)} problems; peak Python memory "
                 f"{peak / 2**20:.1f} MiB (tracemalloc, an untimed run)")
    return baseline, subject


# -- andon migrations --------------------------------------------------------------------------


def cli_ready(data: Dataset) -> str | None:
    """None when ``andon migrations`` exists, else why the rows are skipped."""
    done = subprocess.run([str(andon_bin()), "migrations", "--help"], capture_output=True, env=isolated_env(),
                          cwd=data.root, check=False)
    if done.returncode != 0:
        return f"andon migrations is not there yet (andon migrations --help exits {done.returncode})"
    return None


def copy_log(source: Path, target: Path, *, empty_cache: bool) -> None:
    """A copy of the deploy log (SQLite's backup API: its WAL included), optionally without the scan cache."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
        if empty_cache:
            tables = {row[0] for row in dst.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "migration_cache" in tables:
                dst.execute("DELETE FROM migration_cache")
                dst.commit()


def bench_cli(data: Dataset, repeat: int, notes: list[str]) -> tuple[Series, Series, Series, Series]:
    out = data.root / "out"
    out.mkdir(exist_ok=True)
    template, cold_db, warm_db = out / "migrations-template.db", out / "migrations-cold.db", out / "migrations-warm.db"
    # The template: the dataset's log after andon has opened it once (its schema steps
    # applied: not what is measured), with the cache emptied.
    copy_log(data.db, template, empty_cache=False)
    argv = [str(andon_bin()), "migrations", "--json", "--repo", str(data.repo)]
    run_to_file([*argv, "--db", str(template)], out / "migrations-template.json", cwd=data.root)
    copy_log(template, template.with_suffix(".tmp"), empty_cache=True)
    template.with_suffix(".tmp").replace(template)

    def cold() -> Sample:
        copy_log(template, cold_db, empty_cache=True)
        return run_to_file([*argv, "--db", str(cold_db)], out / "migrations-cold.json", cwd=data.root)

    def warm() -> Sample:
        return run_to_file([*argv, "--db", str(warm_db)], out / "migrations-warm.json", cwd=data.root)

    print("benchmarks: andon migrations --json, cold (no cache) vs git log ...", file=sys.stderr)
    cold_base, cold_series = Series("git log"), Series("andon migrations --json (cold)")
    interleave(cold_base, cold_series, lambda: run_git_log(data), cold, repeat)
    print("benchmarks: andon migrations --json, warm (cache filled, nothing changed) vs git log ...", file=sys.stderr)
    copy_log(template, warm_db, empty_cache=True)
    warm_base, warm_series = Series("git log"), Series("andon migrations --json (warm)")
    interleave(warm_base, warm_series, lambda: run_git_log(data), warm, repeat)
    cold_json, warm_json = (out / "migrations-cold.json").read_bytes(), (out / "migrations-warm.json").read_bytes()
    notes.append(f"andon migrations --json printed {describe_json(cold_json)} (cold) and "
                 f"{describe_json(warm_json)} (warm); the two outputs are "
                 f"{'identical' if cold_json == warm_json else 'DIFFERENT'}")
    return cold_base, cold_series, warm_base, warm_series


def describe_json(data: bytes) -> str:
    try:
        value = json.loads(data)
    except ValueError:
        return f"{len(data)} bytes that are not JSON"
    if isinstance(value, list):
        return f"{len(value)} items"
    if isinstance(value, dict):
        return ", ".join(f"{len(v)} {k}" if isinstance(v, list) else k for k, v in value.items())
    return type(value).__name__


# -- the report ------------------------------------------------------------------------------------


def row(subject: Series, baseline: Series, target: float, what: str) -> str:
    ratio = subject.median / baseline.median
    verdict = "PASS" if ratio <= target else "FAIL"
    return (f"{subject.label:34} {subject.median:7.3f}s  {baseline.label} {baseline.median:6.3f}s  "
            f"{ratio:5.2f}x  ({what} {target:g}x: {verdict})\n"
            f"{cpu_line(subject, baseline)}"
            f"    samples {subject.label}: {subject.spread()}\n"
            f"    samples {baseline.label}: {baseline.spread()}")


def cpu_line(subject: Series, baseline: Series) -> str:
    """The CPU time (user + system, git's included) of each side: steadier than wall time on a busy machine."""
    if not all("cpu" in sample.extra for sample in subject.samples + baseline.samples):
        return ""
    ratio = subject.extra_median("cpu") / baseline.extra_median("cpu")
    return (f"    cpu: {subject.label} {subject.extra_median('cpu'):.3f}s, {baseline.label} "
            f"{baseline.extra_median('cpu'):.3f}s: {ratio:.2f}x\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.migrations", description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=Params.commits)
    parser.add_argument("--deploys", type=int, default=Params.deploys)
    parser.add_argument("--seed", type=int, default=Params.seed)
    parser.add_argument("--migrations", type=int, default=Params.migrations)
    parser.add_argument("--repeat", type=int, default=5, help="measured runs of each side (after one warm-up)")
    parser.add_argument("--only", choices=("scan", "cli"))
    args = parser.parse_args(argv)
    data = ensure(Params(args.commits, args.deploys, args.seed, args.migrations))
    repeat = max(3, args.repeat)
    notes: list[str] = []
    rows: list[str] = []
    try:
        if args.only in (None, "scan"):
            baseline, subject = bench_scan(data, repeat, notes)
            rows.append(row(subject, baseline, SCAN_BUDGET, "budget"))
        if args.only in (None, "cli"):
            why = cli_ready(data)
            if why:
                rows.append(f"andon migrations --json (cold, warm): skipped, {why}")
            else:
                cold_base, cold, warm_base, warm = bench_cli(data, repeat, notes)
                rows.append(row(cold, cold_base, CLI_TARGET, "target"))
                rows.append(row(warm, warm_base, CLI_TARGET, "target"))
    except CommandFailed as error:
        print(f"benchmarks: {error.what} failed: {error.detail}", file=sys.stderr)
        return 1
    print(f"migrations: {data.commits} commits, {data.deploys} deploys, {data.migrations} migrations "
          f"({data.contracts} with a contract, {data.malformed} malformed trailers); baseline: plain "
          f"`git log main`, stdout a pipe drained by the benchmark; medians of {repeat} runs each, interleaved")
    for line in rows:
        print(line)
    for note in notes:
        print(f"  note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
