"""``make bench``: andon against baselines measured in the same run, reported as ratios.

The machine is shared and noisy, so no absolute time is compared across runs:
each figure is the median of several runs of andon divided by the median of
several runs of a baseline, the two interleaved (baseline, andon, baseline, ...)
in this one process. See benchmarks/README.md.

1. First dashboard frame: ``andon --repo R --db D`` in a real pseudo-terminal until
   the newest deploy's short sha is on screen, against a bare Textual app showing
   one Label. Target: at most 1.5x.
2. ``andon log --json`` over every deploy and its commits, against one plain
   ``git log -z --format=...`` over all of main. Target: at most 2x.
3. Peak memory (max RSS) of each andon run and its baseline, in MiB; for
   ``andon log --json`` against git log's. Target: at most 2x.

Exit status 0 whatever the ratios (this is a report), 1 if a measured command failed.
"""

from __future__ import annotations

import argparse
import codecs
import fcntl
import functools
import json
import os
import pty
import re
import select
import shutil
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.generate import DATA, PROJECT, Dataset, Params, andon_bin, ensure, isolated_env

COLUMNS, ROWS = 120, 40
DASHBOARD_TARGET = 1.5
LOG_TARGET = 2.0
LOG_MEMORY_TARGET = 2.0  # andon log --json's peak memory against git log's
BARE_MARKER = "ANDON-BENCH-BARE-READY"
GIT_LOG_FORMAT = "--format=%H%x00%P%x00%an%x00%aI%x00%s"

BARE_APP = f'''\
"""Written by benchmarks/run.py: the baseline for the dashboard's first frame."""

from textual.app import App, ComposeResult
from textual.widgets import Label


class Bare(App[None]):
    def compose(self) -> ComposeResult:
        yield Label("{BARE_MARKER}")


if __name__ == "__main__":
    Bare().run()
'''

# Used only while tui/app.py does not exist yet: the same work a dashboard must do
# at the least (open the world, read the newest deploys, draw them in a table).
PLACEHOLDER_APP = '''\
"""Written by benchmarks/run.py: a stand-in dashboard, used only while tui/app.py is missing."""

import sys
from pathlib import Path

from textual.app import App, ComposeResult
from textual.widgets import DataTable

from backend.world import resolve_world


class Placeholder(App[None]):
    def __init__(self, world) -> None:
        super().__init__()
        self.world = world

    def compose(self) -> ComposeResult:
        yield DataTable()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("#", "env", "sha", "status", "who", "when")
        for deploy in self.world.log.deploys(limit=200):
            table.add_row(str(deploy.id), deploy.env, deploy.short_sha, deploy.status, deploy.who,
                          deploy.started_at[:16])


if __name__ == "__main__":
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    world = resolve_world(Path(args["--repo"]), Path(args["--db"]), None)
    Placeholder(world).run()
    world.close()
'''

# Escape sequences as a terminal parses them: CSI, OSC, DCS/SOS/PM/APC strings,
# charset designations, and any other two-byte ESC sequence.
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
    r"|\x1b[PX^_][^\x1b]*\x1b\\"
    r"|\x1b[()*+][0-~]"
    r"|\x1b[ -/]*[0-~]"
)


# A cursor move to a row and column starts a new piece of the screen: a line of its own.
_CURSOR_TO = re.compile(r"\x1b\[[0-9;]*[Hf]")


def strip_ansi(text: str) -> str:
    """What a terminal shows of ``text``, roughly: escapes removed, each cursor jump a new line."""
    return _ANSI.sub("", _CURSOR_TO.sub("\n", text))


@dataclass(frozen=True)
class Marker:
    """Something to wait for in the plain text of what an app wrote."""

    name: str
    pattern: re.Pattern[str]

    @classmethod
    def text(cls, name: str, text: str) -> Marker:
        return cls(name, re.compile(re.escape(text)))

    @classmethod
    def row(cls, name: str, deploy_id: int, sha: str) -> Marker:
        """A deploy's row in a table: its id, then its short sha, in one piece of a line.

        Only the id's first four digits need be there: a narrow column may cut the rest.
        """
        digits = str(deploy_id)
        number = rf"{digits[:4]}\d{{0,{max(0, len(digits) - 4)}}}" if len(digits) > 4 else digits
        return cls(name, re.compile(rf"(?m)^[^\n]*\b{number}\b[^\n]*{re.escape(sha)}"))


# -- measuring ---------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float
    max_rss_kib: int
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Failure:
    what: str
    detail: str


@dataclass
class Series:
    label: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def rss_mib(self) -> float:
        return max(s.max_rss_kib for s in self.samples) / 1024

    def spread(self) -> str:
        return " ".join(f"{s.seconds:.3f}" for s in self.samples)

    def extra_median(self, name: str) -> float:
        return statistics.median(s.extra[name] for s in self.samples)


class CommandFailed(Exception):
    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"{what}: {detail}")
        self.what = what
        self.detail = detail


def run_plain(argv: list[str], out: Path, *, cwd: Path, answers: tuple[int, ...] = (0,), cpu: bool = False) -> Sample:
    """Run a command with stdout to a file; wall time from spawn to reaped, and its max RSS.

    ``answers``: the exit codes that count as an answer (any other is a failure). ``cpu``: also
    keep the CPU time (user + system, the children it waited for included: its git commands) and
    the exit code as the sample's extras ``cpu`` and ``code``.
    """
    with open(out, "wb") as stdout, open(out.with_suffix(".err"), "wb") as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                env=isolated_env(), cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in answers:
        error = out.with_suffix(".err").read_text(errors="replace").strip().splitlines()
        raise CommandFailed(" ".join(argv), f"exit code {proc.returncode}: " + (error[-1] if error else "no output"))
    extra = {"cpu": usage.ru_utime + usage.ru_stime, "code": proc.returncode} if cpu else {}
    return Sample(elapsed, usage.ru_maxrss, extra)


def _spawn_in_pty(argv: list[str], *, cwd: Path, env: dict[str, str]) -> tuple[int, int]:
    """Start ``argv`` in a new 120x40 pseudo-terminal: (its pid, the terminal's other end)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: size the terminal before anything reads it, then exec
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        except BaseException as error:  # noqa: BLE001 - report anything, then leave
            os.write(2, f"benchmark child: cannot start {argv[0]}: {error}\n".encode())
        finally:
            os._exit(127)
    return pid, fd


def run_in_pty(argv: list[str], markers: list[Marker], *, cwd: Path, timeout: float, settle: float,
               env: dict[str, str], record: Path | None = None) -> Sample:
    """Start ``argv`` in a 120x40 pseudo-terminal; the time until each marker is on screen.

    Output is read continuously (a full pty would block the app), escape sequences
    are stripped from everything read so far, and the markers searched for in the
    plain text. The sample's time is the first marker's; the others go in
    ``extra``. After the last marker, the app runs ``settle`` seconds more (so its
    peak memory covers what it loads just after the first frame), then its whole
    process group gets SIGTERM, SIGKILL if still alive after 2 s, and is reaped.
    What was read until the last marker is saved in ``record``.
    """
    started = time.perf_counter()
    pid, fd = _spawn_in_pty(argv, cwd=cwd, env=env)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = ""
    found: dict[str, float] = {}
    all_found_at: float | None = None
    exited = False
    status = 0
    usage = None
    try:
        deadline = started + timeout
        while True:
            now = time.perf_counter()
            if all_found_at is None and now >= deadline:
                break
            if all_found_at is not None and now >= all_found_at + settle:
                break
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(fd, 1 << 16)
                except OSError:  # EIO: every copy of the terminal's other end is closed
                    chunk = b""
                if not chunk:
                    exited = True
                    break
                if all_found_at is None:
                    read_at = time.perf_counter()
                    text += decoder.decode(chunk)
                    screen = strip_ansi(text)
                    for marker in markers:
                        if marker.name not in found and marker.pattern.search(screen):
                            found[marker.name] = read_at - started
                    if len(found) == len(markers):
                        all_found_at = read_at
            elif all_found_at is None:
                done, status, reaped = os.wait4(pid, os.WNOHANG)
                if done:
                    usage = reaped
                    exited = True
                    break
    finally:
        if usage is None:
            usage, status = _stop(pid, fd)
        os.close(fd)
    if record is not None:
        record.write_text(text)
    missing = [marker for marker in markers if marker.name not in found]
    if missing:
        tail = " ".join(strip_ansi(text).split())[-600:]
        what = missing[0].name
        why = (f"exited ({_describe(status)}) before {what} appeared" if exited
               else f"{what} did not appear within {timeout:.0f}s")
        raise CommandFailed(" ".join(argv), f"{why}; last output: {tail or '(none)'}")
    first, *others = markers
    return Sample(found[first.name], usage.ru_maxrss, {m.name: found[m.name] for m in others})


def _stop(pid: int, fd: int) -> tuple[os.struct_rusage, int]:
    """SIGTERM the process group, SIGKILL it after 2 s, drain the terminal meanwhile, reap."""
    for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        until = time.perf_counter() + grace
        while time.perf_counter() < until:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                return usage, status
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    os.read(fd, 1 << 16)
                except OSError:
                    pass
    _, status, usage = os.wait4(pid, 0)
    return usage, status


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def compare(baseline: Series, subject: Series, run_baseline: Callable[[], Sample],
            run_subject: Callable[[], Sample], repeat: int, budget: float) -> None:
    """Interleave the two; one warm-up each (kept as a sample when a run is slow)."""
    first_baseline = run_baseline()
    first_subject = run_subject()
    slow = first_subject.seconds > 5.0
    if slow:  # a cold-cache effect is noise at this size; the run is too dear to waste
        baseline.samples.append(first_baseline)
        subject.samples.append(first_subject)
    per_round = first_baseline.seconds + first_subject.seconds
    rounds = max(3, min(repeat, int(budget // max(per_round, 1e-3))))
    for _ in range(rounds - len(subject.samples)):
        baseline.samples.append(run_baseline())
        subject.samples.append(run_subject())
        print(f"  {subject.label}: {subject.samples[-1].seconds:.3f}s, "
              f"{baseline.label}: {baseline.samples[-1].seconds:.3f}s", file=sys.stderr)


def run_to_exit_in_pty(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> int:
    """Run ``argv`` in a 120x40 pseudo-terminal until it exits by itself; its exit code.

    Output is drained (a full terminal would block it) and thrown away. After
    ``timeout`` seconds it is stopped and CommandFailed raised.
    """
    pid, fd = _spawn_in_pty(argv, cwd=cwd, env=env)
    deadline = time.perf_counter() + timeout
    try:
        while time.perf_counter() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    os.read(fd, 1 << 16)
                except OSError:  # EIO: the terminal's other end is closed
                    pass
            done, status, _ = os.wait4(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
        _stop(pid, fd)
        raise CommandFailed(" ".join(argv), f"did not finish within {timeout:.0f}s")
    finally:
        os.close(fd)


def count_instructions(argv: list[str], marker: str, *, cwd: Path, env: dict[str, str], timeout: float) -> int:
    """Instructions ``argv`` executes (valgrind, no cache simulation) until it has handed the
    terminal a frame showing ``marker``: benchmarks/firstframe.py stops it right there."""
    log = DATA / "valgrind.log"
    log.unlink(missing_ok=True)
    valgrind = [shutil.which("valgrind") or "valgrind", "--tool=cachegrind", "--cache-sim=no",
                "--cachegrind-out-file=/dev/null", f"--log-file={log}"]
    command = [*valgrind, sys.executable, str(PROJECT / "benchmarks" / "firstframe.py"), marker, *argv]
    code = run_to_exit_in_pty(command, cwd=cwd, env=env, timeout=timeout)
    text = log.read_text(errors="replace") if log.exists() else ""
    found = re.search(r"I\s+refs:\s+([\d,]+)", text)
    if code != 0 or found is None:  # exit code 0 only comes from firstframe.py seeing the marker
        tail = " ".join(text.split())[-300:]
        raise CommandFailed(" ".join(command), f"exit code {code} before its first frame; valgrind: {tail}")
    return int(found.group(1).replace(",", ""))


def bench_instructions(data: Dataset, args: argparse.Namespace) -> tuple[list[int], list[int]]:
    """Instructions to the first frame, bare app then dashboard, ``args.instruction_runs`` each."""
    env = isolated_env()
    env.update(TERM="xterm-256color", COLORTERM="truecolor")
    bare, andon = [], []
    print("benchmarks: instructions to the first frame (valgrind), dashboard vs bare Textual app ...",
          file=sys.stderr)
    for _ in range(args.instruction_runs):
        bare.append(count_instructions(["--bare", str(DATA / "bare_app.py")], BARE_MARKER, cwd=DATA, env=env,
                                       timeout=args.timeout * 10))
        andon.append(count_instructions(["--andon", "--repo", str(data.repo), "--db", str(data.db)],
                                        data.newest_short, cwd=data.root, env=env, timeout=args.timeout * 10))
    return bare, andon


def compile_andon(notes: list[str]) -> None:
    """Write the bytecode of andon's own modules, as installing a wheel does.

    The baseline's Textual was byte-compiled by pip when it was installed; andon is
    installed editable (``pip install -e``), so its modules are compiled when first
    imported, and on a machine with PYTHONDONTWRITEBYTECODE set (as CI and this one
    have) on every start: about 25 ms that no installed andon pays. Compiling them
    here, into the git-ignored ``__pycache__`` directories, measures both the same way.
    """
    import compileall

    for package in ("backend", "tui"):
        if not compileall.compile_dir(PROJECT / package, quiet=1):
            raise SystemExit(f"benchmarks: cannot byte-compile {package}/")
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        notes.append("PYTHONDONTWRITEBYTECODE is set: andon's bytecode was written by the benchmark "
                     "(as pip does for an installed wheel)")


# -- the two comparisons ----------------------------------------------------------------------


def dashboard_ready(data: Dataset) -> bool:
    return (PROJECT / "tui" / "app.py").exists()


def bench_dashboard(data: Dataset, args: argparse.Namespace, notes: list[str]) -> tuple[Series, Series]:
    DATA.mkdir(parents=True, exist_ok=True)
    bare_app = DATA / "bare_app.py"
    bare_app.write_text(BARE_APP)
    python = sys.executable
    env = isolated_env()
    env.update(TERM="xterm-256color", COLORTERM="truecolor")
    if dashboard_ready(data) and not args.placeholder:
        argv = [str(andon_bin()), "--repo", str(data.repo), "--db", str(data.db)]
        label = "andon dashboard"
    else:
        placeholder = DATA / "placeholder_dashboard.py"
        placeholder.write_text(PLACEHOLDER_APP)
        argv = [python, str(placeholder), "--repo", str(data.repo), "--db", str(data.db)]
        label = "PLACEHOLDER dashboard"
        why = "--placeholder was given" if args.placeholder else "tui/app.py does not exist yet"
        notes.append(f"{why}: the dashboard row measures a placeholder "
                     f"({placeholder.relative_to(PROJECT)}), not andon")
    bare = Series("bare Textual app")
    subject = Series(label)
    print(f"benchmarks: first frame, {label} vs bare Textual app ...", file=sys.stderr)
    markers = [Marker.text(f"newest sha {data.newest_short}", data.newest_short)]
    newest_id = _newest_deploy_id(data)
    if newest_id is not None:
        markers.append(Marker.row(f"table row of deploy #{newest_id}", newest_id, data.newest_short))
    bare_marker = [Marker.text("bare marker", BARE_MARKER)]
    (data.root / "out").mkdir(exist_ok=True)
    compare(
        bare, subject,
        lambda: run_in_pty([python, str(bare_app)], bare_marker, cwd=DATA, timeout=args.timeout,
                           settle=args.settle, env=env),
        lambda: run_in_pty(argv, markers, cwd=data.root, timeout=args.timeout,
                           settle=args.settle, env=env, record=data.root / "out" / "dashboard.tty"),
        args.frame_repeat, args.budget,
    )
    return bare, subject


def _newest_deploy_id(data: Dataset) -> int | None:
    """The id of the newest deploy (read-only; None if the log cannot be read this way)."""
    try:
        with closing(sqlite3.connect(f"file:{data.db}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT id FROM deploys WHERE sha = ? ORDER BY started_at DESC, id DESC"
                               " LIMIT 1", (data.newest_sha,)).fetchone()
    except sqlite3.Error:
        return None
    return int(row[0]) if row else None


def _pristine_log(data: Dataset, out: Path) -> Path:
    """A copy of the deploy log without the ranges andon keeps (as right after the import)."""
    pristine = out / "pristine.db"
    for path in (pristine, pristine.with_name("pristine.db-wal"), pristine.with_name("pristine.db-shm")):
        path.unlink(missing_ok=True)
    with closing(sqlite3.connect(data.db)) as source, closing(sqlite3.connect(pristine)) as target:
        source.backup(target)
        tables = {row[0] for row in target.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "ranges" in tables:
            target.execute("DELETE FROM ranges")
            target.commit()
        target.execute("VACUUM")
    return pristine


def bench_log(data: Dataset, args: argparse.Namespace, notes: list[str], *, warm: bool) -> tuple[Series, Series]:
    """``andon log --json`` against one git log, on a log without kept ranges (cold: every
    range comes from git) or with them (warm: a range between two SHAs never changes, so
    andon keeps each in the log the first time it computes it)."""
    out = data.root / "out"
    out.mkdir(exist_ok=True)
    pristine = _pristine_log(data, out)
    db = out / ("warm.db" if warm else "cold.db")
    git_argv = ["git", "-C", str(data.repo), "log", "-z", GIT_LOG_FORMAT, "main"]
    andon_argv = [str(andon_bin()), "log", "--json", "--repo", str(data.repo), "--db", str(db)]

    def fresh_copy() -> None:
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            path.unlink(missing_ok=True)
        shutil.copyfile(pristine, db)

    fresh_copy()
    if warm:  # one run keeps every range; the measured runs read them back
        run_plain(andon_argv, out / "andon-log.json", cwd=data.root)

    def run_andon() -> Sample:
        if not warm:
            fresh_copy()  # not timed: each cold run starts from a log without kept ranges
        return run_plain(andon_argv, out / "andon-log.json", cwd=data.root)

    git = Series("git log")
    andon = Series(f"andon log --json ({'warm' if warm else 'cold'})")
    print(f"benchmarks: andon log --json ({'warm' if warm else 'cold'}) vs one git log over main ...",
          file=sys.stderr)
    compare(
        git, andon,
        lambda: run_plain(git_argv, out / "git-log.out", cwd=data.root),
        run_andon,
        args.repeat, args.budget,
    )
    if warm:
        notes.extend(_check_log_output(data, out))
    return git, andon


def _check_log_output(data: Dataset, out: Path) -> list[str]:
    """What the two commands listed (a sanity check that they did the work compared)."""
    notes = []
    listed = (out / "git-log.out").read_bytes().count(b"\x00") // 5
    notes.append(f"git log listed {listed:,} commits")
    if listed != data.commits:
        notes.append(f"WARNING: git log listed {listed:,} commits, the repository has {data.commits:,}")
    try:
        deploys = json.loads((out / "andon-log.json").read_bytes())["deploys"]
        entries = sum(len(d["commits"]) for d in deploys)
        distinct = len({c["sha"] for d in deploys for c in d["commits"]})
        errors = sum(1 for d in deploys if d.get("commits_error"))
    except (ValueError, KeyError, TypeError) as error:
        return notes + [f"WARNING: could not read andon log --json output: {error!r}"]
    notes.append(f"andon log --json listed {len(deploys):,} deploys with {entries:,} commit entries "
                 f"({distinct:,} distinct commits; {errors} deploys with commits_error)")
    if len(deploys) != data.deploys:
        notes.append(f"WARNING: andon log --json listed {len(deploys):,} deploys, the log has {data.deploys:,}")
    return notes


# -- profiling (not part of make bench) ---------------------------------------------------------


def profile_log(data: Dataset) -> None:
    """cProfile of ``andon log --json`` (python -m benchmarks.run --profile)."""
    import pstats

    prof = data.root / "out" / "andon-log.prof"
    prof.parent.mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "tui.cli", "log", "--json",
            "--repo", str(data.repo), "--db", str(data.db)]
    with open(os.devnull, "wb") as devnull:
        subprocess.run(argv, stdout=devnull, env=isolated_env(), cwd=data.root, check=True)
    stats = pstats.Stats(str(prof))
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(15)
    print(f"profile saved in {prof}")


# -- the report ------------------------------------------------------------------------------


def _fmt_ratio(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x" if ratio < 100 else f"{ratio:.0f}x"


def report(data: Dataset, rows: list[tuple[str, Series, Series, float | None]], notes: list[str],
           failures: list[Failure], instructions: tuple[list[int], list[int]] | None = None) -> None:
    print()
    print(f"andon benchmarks: {data.commits:,} commits ({data.merges:,} merges), {data.deploys:,} deploys "
          f"({data.failed} failed, {data.rollbacks} rollbacks), terminal {COLUMNS}x{ROWS}")
    print("Ratios are medians of andon over medians of a baseline measured in this same run;")
    print("absolute times are shown for reference only and are not comparable across runs.")
    print()
    header = f"{'measurement':<44} {'andon':>9} {'baseline':>9} {'ratio':>8} {'target':>8}  result"
    print(header)
    print("-" * len(header))
    for title, baseline, subject, target in rows:
        ratio = subject.median / baseline.median
        verdict = "info" if target is None else "PASS" if ratio <= target else "FAIL"
        print(f"{title:<44} {subject.median:>8.3f}s {baseline.median:>8.3f}s {_fmt_ratio(ratio):>8} "
              f"{'-' if target is None else '<= ' + format(target, 'g') + 'x':>8}  {verdict}")
        for name in subject.samples[0].extra:
            extra = subject.extra_median(name)
            print(f"{'  (info) ' + name:<44} {extra:>8.3f}s {baseline.median:>8.3f}s "
                  f"{_fmt_ratio(extra / baseline.median):>8} {'-':>8}  info")
    for what in {f.what for f in failures}:
        print(f"{what:<44} {'-':>9} {'-':>9} {'-':>8} {'':>8}  ERROR")
    if rows:
        print()
        print(f"{'peak memory (max RSS)':<44} {'andon':>9} {'baseline':>9} {'ratio':>8} {'target':>8}  result")
        print("-" * len(header))
        for _, baseline, subject, _ in rows:
            ratio = subject.rss_mib / baseline.rss_mib
            target = LOG_MEMORY_TARGET if subject.label == "andon log --json (warm)" else None
            verdict = "info" if target is None else "PASS" if ratio <= target else "FAIL"
            print(f"{subject.label:<44} {subject.rss_mib:>6.1f}MiB {baseline.rss_mib:>6.1f}MiB "
                  f"{_fmt_ratio(ratio):>8} {'-' if target is None else '<= ' + format(target, 'g') + 'x':>8}  "
                  f"{verdict}  ({baseline.label})")
        print()
        print("samples (seconds, in run order):")
        for _, baseline, subject, _ in rows:
            print(f"  {subject.label:<30} {subject.spread()}")
            for name in subject.samples[0].extra:
                print(f"  {'  ' + name:<30} " + " ".join(f"{s.extra[name]:.3f}" for s in subject.samples))
            print(f"  {baseline.label:<30} {baseline.spread()}")
    if instructions is not None:
        bare, andon = instructions
        ratio = statistics.median(andon) / statistics.median(bare)
        print()
        print("instructions to the first frame (valgrind; repeatable, so small changes show):")
        print(f"  {'andon dashboard':<30} {statistics.median(andon) / 1e6:>9,.1f}M   "
              f"runs: {' '.join(f'{n / 1e6:,.1f}M' for n in andon)}")
        print(f"  {'bare Textual app':<30} {statistics.median(bare) / 1e6:>9,.1f}M   "
              f"runs: {' '.join(f'{n / 1e6:,.1f}M' for n in bare)}")
        print(f"  {'ratio':<30} {_fmt_ratio(ratio):>10}   (the wall-time target: <= {DASHBOARD_TARGET:g}x)")
    for note in notes:
        print(f"note: {note}")
    for failure in failures:
        print(f"ERROR: {failure.what} failed: {failure.detail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=Params.commits)
    parser.add_argument("--deploys", type=int, default=Params.deploys)
    parser.add_argument("--seed", type=int, default=Params.seed)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command (default 5)")
    parser.add_argument("--frame-repeat", type=int, default=15,
                        help="runs of each app for the first frame (default 15: a run is cheap, and its time "
                             "swings most with the machine's load)")
    parser.add_argument("--budget", type=float, default=90.0,
                        help="seconds per comparison beyond which fewer runs are made (at least 3)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a first frame")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds a dashboard keeps running after its first frame (for its peak memory)")
    parser.add_argument("--only", choices=["dashboard", "log"], help="run one comparison")
    parser.add_argument("--placeholder", action="store_true",
                        help="measure the placeholder dashboard even if tui/app.py exists")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of andon log --json and stop")
    parser.add_argument("--instruction-runs", type=int, default=2,
                        help="valgrind runs of each app for the instruction count (0: skip; default 2)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    compile_andon(notes := [])
    data = ensure(Params(args.commits, args.deploys, args.seed))
    if args.profile:
        profile_log(data)
        return 0
    rows: list[tuple[str, Series, Series, float | None]] = []
    failures: list[Failure] = []
    plans = [
        ("dashboard", "first frame: dashboard / bare Textual app", bench_dashboard, DASHBOARD_TARGET),
        # Cold: a log another tool wrote, read once (then it is warm). Reported, no target.
        ("log", "andon log --json, cold / one git log", functools.partial(bench_log, warm=False), None),
        ("log", "andon log --json, warm / one git log", functools.partial(bench_log, warm=True), LOG_TARGET),
    ]
    for key, title, bench, target in plans:
        if args.only and args.only != key:
            continue
        try:
            baseline, subject = bench(data, args, notes)
        except CommandFailed as error:
            failures.append(Failure(title, f"{error.what}: {error.detail}"))
            continue
        rows.append((title, baseline, subject, target))
    instructions = None
    if args.instruction_runs > 0 and args.only in (None, "dashboard") and dashboard_ready(data):
        if shutil.which("valgrind") is None:
            notes.append("valgrind is not installed: no instruction count")
        else:
            try:
                instructions = bench_instructions(data, args)
            except CommandFailed as error:
                failures.append(Failure("instructions to the first frame", f"{error.what}: {error.detail}"))
    report(data, rows, notes, failures, instructions)
    print(f"(benchmark took {time.perf_counter() - started:.0f}s; data in {data.root.relative_to(PROJECT)})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
