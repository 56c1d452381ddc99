"""``make bench`` (the gate): ``andon line --check`` against ``andon status`` in the same run.

On the generated dataset (benchmarks/generate.py: 50,000 commits, 10,000 deploys), with a
configuration that gives the environment of the newest deploy a weekly cron freeze (so the
freeze schedule is worked out, as it is where freezes are configured), each figure is the
median of several runs, the commands interleaved in this one process (status, check, check
--sha, status, ...; one warm-up each), each a real ``andon`` process from spawn to reaped,
its output to a file (andon's bytecode written first, as :func:`benchmarks.run.compile_andon` does):

* **baseline**: ``andon status`` (every environment: the live deploy, the latest, the pending
  commits: a git walk per environment), what a person or a script ran before there was a check;
* **andon line --env E --check**: one row of the log and the freeze schedule, no git walk, no
  GitPython, sqlite-utils or httpx;
* **andon line --env E --check --sha HEAD**: the same, plus resolving the SHA and asking about
  held commits (none are held in the dataset: :func:`backend.held.blocking` then asks no git);
* **andon line --help**: andon's start-up alone (Python, ``tui.cli``'s imports, the parser), the
  floor under every command. The target (at most 0.5x: "well under" the status) is on the CPU
  time beyond that floor (each median less the floor's; wall time is too noisy for a difference): on this dataset ``andon status`` is itself
  only about twice the start-up (its git walk is short: 23 pending commits), so the whole-process
  ratio of any command that starts andon cannot go far below 0.5x; those ratios are printed too.

The log is a copy of the dataset's (SQLite's backup API, not timed), so the dataset stays as
generated. Exit codes 0, 5 and 12 of the check all count as answers (the freeze may be in force
when this runs). Run alone: ``python -m benchmarks.line_check [--repeat 15]`` (and the
generator's ``--commits``, ``--deploys``, ``--seed``, ``--migrations``). Exit 0 whatever the
ratios say (a report), 1 when a measured command failed.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
from contextlib import closing
from pathlib import Path

from benchmarks.generate import Dataset, Params, andon_bin, ensure
from benchmarks.run import CommandFailed, Sample, Series, compile_andon, run_plain

CHECK_TARGET = 0.5
ANSWERS = (0, 5, 11, 12)  # andon line --check: go, stopped, held, frozen


def copy_log(data: Dataset, into: Path) -> Path:
    target = into / "deploys.db"
    with closing(sqlite3.connect(data.db)) as source, closing(sqlite3.connect(target)) as copy:
        source.backup(copy)
    return target


def run(argv: list[str], out: Path, *, cwd: Path, answers: tuple[int, ...] = (0,)) -> Sample:
    """Spawn to reaped, stdout to a file; the CPU time (user + system, its git commands' included) beside."""
    return run_plain(argv, out, cwd=cwd, answers=answers, cpu=True)


def row(subject: Series, baseline: Series, target: float | None) -> str:
    ratio = subject.median / baseline.median
    verdict = f"  (target {target:g}x: {'PASS' if ratio <= target else 'FAIL'})" if target is not None else ""
    cpu = subject.extra_median("cpu") / baseline.extra_median("cpu")
    return (f"{subject.label:44} {subject.median * 1000:7.1f} ms  {ratio:5.2f}x{verdict}\n"
            f"    cpu {subject.extra_median('cpu') * 1000:.1f} ms ({cpu:.2f}x); samples: "
            + " ".join(f"{s.seconds * 1000:.0f}" for s in subject.samples) + " ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.line_check", description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=Params.commits)
    parser.add_argument("--deploys", type=int, default=Params.deploys)
    parser.add_argument("--seed", type=int, default=Params.seed)
    parser.add_argument("--migrations", type=int, default=Params.migrations)
    parser.add_argument("--repeat", type=int, default=15, help="measured runs of each command (after one warm-up)")
    args = parser.parse_args(argv)
    compile_andon(notes := [])  # andon's bytecode written, as for an installed wheel (benchmarks/run.py)
    data = ensure(Params(args.commits, args.deploys, args.seed, args.migrations))
    repeat = max(3, args.repeat)
    env = data.newest_env
    andon = str(andon_bin())
    with tempfile.TemporaryDirectory(prefix="andon-bench-check-") as folder:
        out = Path(folder)
        db = copy_log(data, out)
        config = out / "andon.toml"
        config.write_text(f'[environments.{env}]\n[[environments.{env}.freeze]]\nreason = "weekend"\n'
                          'timezone = "Europe/Berlin"\ncron = "0 18 * * fri"\nduration = "62h"\n')
        common = ["--repo", str(data.repo), "--db", str(db), "--config", str(config)]
        commands = {
            "andon status": ([andon, "status", *common], (0,)),
            f"andon line --env {env} --check": ([andon, "line", "--env", env, "--check", *common], ANSWERS),
            f"andon line --env {env} --check --sha HEAD": (
                [andon, "line", "--env", env, "--check", "--sha", "HEAD", *common], ANSWERS),
            "andon line --help (start-up alone)": ([andon, "line", "--help"], (0,)),
        }
        series = {label: Series(label) for label in commands}
        try:
            for round_ in range(repeat + 1):  # the first round warms up (page cache, the log's schema)
                for n, (label, (argv_, answers)) in enumerate(commands.items()):
                    sample = run(argv_, out / f"out-{n}.txt", cwd=data.repo, answers=answers)
                    if round_:
                        series[label].samples.append(sample)
        except CommandFailed as error:
            print(f"benchmarks: {error.what} failed: {error.detail}", file=sys.stderr)
            return 1
        answer = (out / "out-1.txt").read_text(errors="replace").strip()
    baseline, *subjects, floor = series.values()
    print(f"line check: {data.commits} commits, {data.deploys} deploys, environment {env} with a weekly freeze; "
          f"baseline `andon status` {baseline.median * 1000:.1f} ms (cpu {baseline.extra_median('cpu') * 1000:.1f} "
          f"ms); medians of {repeat} runs each, interleaved")
    for subject in (*subjects, floor):
        print(row(subject, baseline, None))
    # CPU time (the command's and its git's): steadier than wall time on a shared machine.
    own = subjects[0].extra_median("cpu") - floor.extra_median("cpu")
    status_own = baseline.extra_median("cpu") - floor.extra_median("cpu")
    ratio = own / status_own
    print(f"cpu beyond start-up: the check {own * 1000:.1f} ms, andon status {status_own * 1000:.1f} ms: {ratio:.2f}x "
          f"(target {CHECK_TARGET:g}x: {'PASS' if ratio <= CHECK_TARGET else 'FAIL'})")
    for note in notes:
        print(f"  note: {note}")
    print(f"  note: the check answered {answer!r} (exit {int(subjects[0].samples[-1].extra['code'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
