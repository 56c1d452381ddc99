"""Benchmark data: a large git repository and a deploy log, generated once and cached.

* The repository is written with ONE ``git fast-import`` stream: a main line with
  short side branches merged back (merge commits), several authors (some with
  non-ASCII names), dates spread over about two years.
* Migration markers: ``Params.migrations`` migrations (200 by default), each an
  expand commit (``Migration: <name> expand`` in the message's trailers), most
  followed a few hundred to a few thousand commits later by a contract commit;
  about a third with ``Migration-Kind``, about 40% with ``Migration-Refs``, a few
  expands cherry-picked (the same trailer on a second commit), and a few malformed
  trailers besides (:data:`MALFORMED`). Chosen with a random generator of their own,
  so authors, dates and files are what they were without them.
* The deploy log is written through the real command line,
  ``andon import --repo R --db D``, fed JSON lines on standard input. Deploys walk
  forward along the main line (first parents), a few commits per deploy, spread
  over two environments, with a few failures and a few rollbacks (a deploy of an
  environment's previous good sha).

Everything lands in ``benchmarks/.data/<key>/`` where the key names the
parameters; ``meta.json`` is written last, so a directory without it is a broken
run and is rebuilt. Run directly to (re)build: ``python -m benchmarks.generate``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
DATA = HERE / ".data"
GENERATOR_VERSION = 2  # bump when the shape of the generated data changes (2: migration trailers)

AUTHORS = [
    ("Ada Lovelace", "ada@example.com"),
    ("Grace Hopper", "grace@example.com"),
    ("Linus Torvalds", "linus@example.com"),
    ("Margaret Hamilton", "margaret@example.com"),
    ("Zoë Quinn", "zoe@example.com"),
    ("José Álvarez", "jose@example.com"),
    ("Katherine Johnson", "katherine@example.com"),
    ("Dennis Ritchie", "dennis@example.com"),
    ("Barbara Liskov", "barbara@example.com"),
    ("Ken Thompson", "ken@example.com"),
    ("Frances Allen", "frances@example.com"),
    ("Jürgen Schmidt", "juergen@example.com"),
]
DEPLOYERS = ["ci-bot", "ci-bot", "ci-bot", "ada", "grace", "margaret", "jose"]
AREAS = ["api", "ui", "db", "auth", "billing", "search", "infra", "docs", "cli", "jobs"]
VERBS = ["fix", "add", "refactor", "speed up", "simplify", "document", "test", "rename", "remove", "log"]
THINGS = ["cache", "retry loop", "query", "handler", "form", "migration", "token check", "index",
          "config parsing", "error message", "timeout", "pagination", "feature flag", "metrics"]
START = datetime(2024, 1, 1, tzinfo=UTC)
SPAN_SECONDS = 2 * 365 * 24 * 3600  # the history covers about two years
PENDING_AT_END = 23  # main-line commits after the newest deploy (not deployed yet)
KINDS = ["database", "config", "infrastructure", "third-party"]
# Trailers andon must report as problems, each on a commit of its own. The fourth holds
# an escape sequence, the last names a kind without any Migration: trailer.
MALFORMED = [
    "Migration: orders split totals expand",
    "Migration: audit-log",
    "Migration: [bold]sessions[/] expand",
    "Migration: cache-warmup\x1b[31m expand",
    "Migration: search-reindex migrate",
    "Migration-Kind: spaceship",
]


@dataclass(frozen=True)
class Params:
    commits: int = 50_000
    deploys: int = 10_000
    seed: int = 1
    migrations: int = 200

    @property
    def key(self) -> str:
        return f"c{self.commits}-d{self.deploys}-m{self.migrations}-s{self.seed}-v{GENERATOR_VERSION}"


@dataclass
class Dataset:
    root: Path
    repo: Path
    db: Path
    commits: int
    mainline: int
    merges: int
    deploys: int
    failed: int
    rollbacks: int
    newest_sha: str
    newest_env: str
    head_sha: str
    generated_seconds: float
    migrations: int = 0  # migrations marked in the history (each has an expand commit)
    contracts: int = 0  # of those, how many have a contract commit
    malformed: int = 0  # commits with a malformed migration trailer

    @property
    def newest_short(self) -> str:
        return self.newest_sha[:7]


def andon_bin() -> Path:
    """The console script next to the running interpreter (the project's venv)."""
    candidate = Path(sys.executable).parent / "andon"
    if candidate.exists():
        return candidate
    found = shutil.which("andon")
    if found:
        return Path(found)
    raise SystemExit("benchmarks: the andon console script is not installed in this environment")


def isolated_env() -> dict[str, str]:
    """The environment for every command the benchmark runs: no user git config or ANDON_*."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANDON_", "GIT_", "TEXTUAL")) and k not in ("COLUMNS", "LINES", "CI")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, LC_ALL="C.UTF-8",
               ANDON_USER="bench")
    return env


# -- the repository ---------------------------------------------------------------------


def plan_migrations(params: Params) -> tuple[dict[int, list[str]], int, int]:
    """The trailers each commit (by fast-import mark) carries; how many migrations, and how many with a contract.

    Every migration marks a commit of its own for each step (no two migrations share
    one, so a commit never holds two kinds). A contract comes 300 to 8,000 commits
    after its expand: far enough that it descends from it whichever branch either is
    on (a side branch is merged back within 5 commits).
    """
    rng = random.Random(f"migrations-{params.seed}")
    total = params.commits
    trailers: dict[int, list[str]] = {}
    free = list(range(2, total + 1))
    rng.shuffle(free)

    def take(near: int | None = None) -> int | None:
        if near is not None:
            if near > total or near in trailers:
                return None
            free.remove(near)
            return near
        while free:
            mark = free.pop()
            if mark not in trailers:
                return mark
        return None

    made = contracts = 0
    for index in range(params.migrations):
        expand = take()
        if expand is None:
            break
        made += 1
        thing = rng.choice(THINGS).replace(" ", "-")
        name = f"{rng.choice(AREAS)}-{thing}-{index}"
        lines = [f"Migration: {name} expand"]
        if rng.random() < 0.33:
            lines.append(f"Migration-Kind: {rng.choice(KINDS)}")
        if rng.random() < 0.4:
            lines.append(f"Migration-Refs: old_{thing.replace('-', '_')}_{index}, Legacy{index}")
        trailers[expand] = lines
        if rng.random() < 0.03:  # cherry-picked: the same expand on a second commit
            again = take(expand + rng.randint(5, 50))
            if again is not None:
                trailers[again] = [lines[0]]
        if rng.random() < 0.6:
            contract = take(expand + rng.randint(300, 8000))
            if contract is not None:
                trailers[contract] = [f"Migration: {name} contract"]
                contracts += 1
    for text in MALFORMED:
        mark = take()
        if mark is not None:
            trailers[mark] = [text]
    return trailers, made, contracts


def _stream(params: Params, rng: random.Random) -> tuple[bytes, int]:
    """The fast-import stream: ``params.commits`` commits on refs/heads/main; returns (stream, merges)."""
    out: list[bytes] = []
    total = params.commits
    gap = SPAN_SECONDS / total
    clock = START.timestamp()
    mark = 0
    merges = 0
    mainline: list[int] = []  # marks of main-line commits, oldest first
    until_branch = rng.randint(20, 60)
    trailers, _, _ = plan_migrations(params)

    def commit(parents: list[int], subject: str) -> int:
        nonlocal mark, clock
        mark += 1
        clock += rng.uniform(0.2, 1.8) * gap
        name, email = rng.choice(AUTHORS)
        stamp = f"{int(clock)} +0000"
        marked = trailers.get(mark)
        footer = "\n" + "\n".join(marked) + "\n" if marked else ""
        message = f"{subject}\n\nChange {mark}.\n{footer}".encode()
        path = f"src/{rng.choice(AREAS)}/mod{rng.randrange(8)}.py"
        content = f"# revision {mark}\nVALUE = {rng.randrange(1_000_000)}\n".encode()
        out.append(b"commit refs/heads/main\n")
        out.append(f"mark :{mark}\n".encode())
        out.append(f"author {name} <{email}> {stamp}\n".encode())
        out.append(f"committer {name} <{email}> {stamp}\n".encode())
        out.append(f"data {len(message)}\n".encode() + message)
        if parents:
            out.append(f"from :{parents[0]}\n".encode())
        for parent in parents[1:]:
            out.append(f"merge :{parent}\n".encode())
        out.append(f"M 100644 inline {path}\ndata {len(content)}\n".encode() + content + b"\n")
        return mark

    def subject() -> str:
        return f"{rng.choice(AREAS)}: {rng.choice(VERBS)} {rng.choice(THINGS)} (#{mark + 1})"

    while mark < total:
        left = total - mark
        until_branch -= 1
        if until_branch <= 0 and left > 8 and len(mainline) > 4:
            # A short side branch from a recent main-line commit, merged back.
            until_branch = rng.randint(20, 60)
            base = mainline[-1 - rng.randrange(3)]
            tip = base
            for _ in range(rng.randint(1, 4)):
                tip = commit([tip], subject())
            mainline.append(commit([mainline[-1], tip], f"Merge branch 'topic-{mark}'"))
            merges += 1
        else:
            mainline.append(commit([mainline[-1]] if mainline else [], subject()))
    # The last commit written must be on the main line (it is what refs/heads/main ends at).
    assert mainline[-1] == mark
    out.append(b"done\n")
    return b"".join(out), merges


def _git(repo: Path, *args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], input=stdin, capture_output=True,
                          env=isolated_env(), check=False)
    if done.returncode != 0:
        raise SystemExit(f"benchmarks: git {' '.join(args)} failed:\n{done.stderr.decode(errors='replace')}")
    return done.stdout.decode()


def build_repo(repo: Path, params: Params, rng: random.Random) -> int:
    repo.mkdir(parents=True)
    _git(repo, "-c", "init.defaultBranch=main", "init", "--quiet")
    stream, merges = _stream(params, rng)
    _git(repo, "fast-import", "--quiet", "--done", stdin=stream)
    _git(repo, "reset", "--hard", "--quiet")  # a working tree, as in a real clone
    return merges


# -- the deploy log -----------------------------------------------------------------------


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def plan_deploys(mainline: list[tuple[str, int]], params: Params, rng: random.Random) -> list[dict[str, str]]:
    """Deploy rows walking forward along the main line (first parents, oldest first).

    The walk advances a pointer a few commits per deploy (on average the main line
    divided by the number of deploys: about 5 for the default sizes) and deploys
    the commit under it to staging or production. About 3% fail (the pointer
    still moves on: the next deploy ships the fix) and about 1% are rollbacks (the
    environment's previous good sha, after which the walk resumes).
    """
    usable = len(mainline) - PENDING_AT_END
    if usable < params.deploys:
        raise SystemExit(f"benchmarks: {params.deploys} deploys need at least {params.deploys + PENDING_AT_END} "
                         f"main-line commits, the repository has {len(mainline)}")
    step = usable / params.deploys
    rows: list[dict[str, str]] = []
    good: dict[str, list[str]] = {"staging": [], "production": []}
    last_time = 0.0
    position = 0.0
    index = 0
    while len(rows) < params.deploys:
        remaining = params.deploys - len(rows)
        env = "staging" if rng.random() < 0.55 else "production"
        if remaining == 1:
            env = "production"  # the newest deploy: a good one, the dashboard's marker
        rollback = remaining > 1 and len(good[env]) >= 2 and rng.random() < 0.01
        if rollback:
            sha = good[env][-2]
            status = "succeeded"
            good[env].append(sha)
            when = last_time + rng.uniform(120, 900)
        else:
            position += rng.uniform(0.2, 1.8) * step
            index = min(max(index + 1, int(position)), usable - 1)
            if remaining == 1:
                index = usable - 1
            sha, committed = mainline[index]
            status = "succeeded"
            if remaining > 1:
                roll = rng.random()
                status = "failed" if roll < 0.03 else "unhealthy" if roll < 0.035 else "succeeded"
            if status == "succeeded":
                good[env].append(sha)
            when = max(last_time + 1, committed + rng.uniform(60, 1800))
        last_time = when
        rows.append({"environment": env, "sha": sha, "status": status, "time": _iso(when),
                     "who": rng.choice(DEPLOYERS), "_rollback": "1" if rollback else ""})
    return rows


def build_log(dataset_root: Path, repo: Path, db: Path, params: Params,
              rng: random.Random) -> tuple[list[dict[str, str]], int]:
    lines = _git(repo, "log", "--first-parent", "--reverse", "--format=%H %ct", "main").split("\n")
    mainline = [(sha, int(stamp)) for sha, stamp in (line.split() for line in lines if line)]
    rows = plan_deploys(mainline, params, rng)
    payload = "".join(
        json.dumps({k: v for k, v in row.items() if not k.startswith("_")}) + "\n" for row in rows
    ).encode()
    (dataset_root / "deploys.jsonl").write_bytes(payload)
    done = subprocess.run([str(andon_bin()), "import", "--repo", str(repo), "--db", str(db)],
                          input=payload, capture_output=True, env=isolated_env(), cwd=dataset_root,
                          check=False)
    if done.returncode != 0:
        raise SystemExit("benchmarks: andon import failed (exit code "
                         f"{done.returncode}):\n{done.stderr.decode(errors='replace')}")
    print(f"  {done.stdout.decode().strip()}", file=sys.stderr)
    return rows, len(mainline)


# -- caching ------------------------------------------------------------------------------


def ensure(params: Params, *, rebuild: bool = False) -> Dataset:
    """The dataset for ``params``: from the cache, else generated now."""
    root = DATA / params.key
    meta = root / "meta.json"
    if meta.exists() and not rebuild:
        info = json.loads(meta.read_text())
        return Dataset(**{**info, "root": Path(info["root"]), "repo": Path(info["repo"]), "db": Path(info["db"])})
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    started = time.perf_counter()
    rng = random.Random(params.seed)
    _, migrations, contracts = plan_migrations(params)
    repo, db = root / "repo", root / "deploys.db"
    print(f"benchmarks: generating {params.commits} commits with git fast-import ...", file=sys.stderr)
    merges = build_repo(repo, params, rng)
    print(f"  repository done in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    print(f"benchmarks: importing {params.deploys} deploys with andon import ...", file=sys.stderr)
    rows, mainline = build_log(root, repo, db, params, rng)
    count = int(_git(repo, "rev-list", "--count", "main").strip())
    if count != params.commits:
        raise SystemExit(f"benchmarks: expected {params.commits} commits, the repository has {count}")
    newest = rows[-1]
    dataset = Dataset(
        root=root, repo=repo, db=db, commits=count, mainline=mainline, merges=merges,
        deploys=len(rows),
        failed=sum(row["status"] != "succeeded" for row in rows),
        rollbacks=sum(bool(row["_rollback"]) for row in rows),
        newest_sha=newest["sha"], newest_env=newest["environment"],
        head_sha=_git(repo, "rev-parse", "main").strip(),
        generated_seconds=round(time.perf_counter() - started, 2),
        migrations=migrations, contracts=contracts, malformed=len(MALFORMED),
    )
    info = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(dataset).items()}
    tmp = meta.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(meta)
    print(f"  generated in {dataset.generated_seconds:.1f}s", file=sys.stderr)
    return dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=Params.commits)
    parser.add_argument("--deploys", type=int, default=Params.deploys)
    parser.add_argument("--seed", type=int, default=Params.seed)
    parser.add_argument("--migrations", type=int, default=Params.migrations)
    parser.add_argument("--rebuild", action="store_true", help="generate again even if cached")
    args = parser.parse_args(argv)
    dataset = ensure(Params(args.commits, args.deploys, args.seed, args.migrations), rebuild=args.rebuild)
    print(json.dumps({k: str(v) for k, v in asdict(dataset).items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
