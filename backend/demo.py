"""The demo world: a repository with weeks of history, a deploy log and a deploy script.

Deterministic for a given ``now`` (a seeded generator, times relative to ``now``),
so screenshots made with a fixed clock are the same on every machine.
"""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from backend.models import FAILED, SUCCEEDED
from backend.store import DeployLog

AUTHORS = [
    ("Ada Lovelace", "ada@example.com"),
    ("Grace Hopper", "grace@example.com"),
    ("Linus Ng", "linus@example.com"),
    ("Margaret Hamilton", "margaret@example.com"),
    ("Ken Okafor", "ken@example.com"),
]
AREAS = ["api", "billing", "search", "auth", "ui", "db", "jobs", "docs"]
VERBS = ["fix", "add", "tidy", "speed up", "log", "test", "refactor", "guard"]
THINGS = [
    "retry on timeout", "invoice totals", "empty result page", "token refresh",
    "dark theme colours", "slow query on orders", "nightly export", "README example",
    "pagination cursor", "rate limiter", "cache warm-up", "error message",
]
# Untrusted text the demo shows on purpose: it must appear literally.
NASTY_SUBJECTS = [
    "fix [/] parsing of [section] headers",
    "[bold red]hello[/] from the markup parser",
    "strip \x1b[31mred\x1b[0m escapes from logs",
]
COMMITS = 240
DEPLOY_SCRIPT = '''\
"""Demo deploy script: pretends to ship a commit to an environment."""
import sys
import time

env, sha = sys.argv[1], sys.argv[2]
steps = ["building image", "pushing image", "running smoke tests", "switching traffic"]
for number, step in enumerate(steps, 1):
    print(f"[{number}/{len(steps)}] {step} for {env} at {sha[:7]}", flush=True)
    time.sleep(0.3)
print(f"deployed {sha[:7]} to {env}", flush=True)
'''


@dataclass(frozen=True)
class DemoWorld:
    root: Path
    repo: Path
    db: Path
    config: Path


def _fast_import(repo: Path, now: datetime, rng: random.Random) -> None:
    start = now - timedelta(days=42)
    step = (now - timedelta(hours=2) - start) / COMMITS
    lines: list[bytes] = []
    mark = 0
    main_mark = None
    moment = start

    def data(text: str) -> None:
        raw = text.encode()
        lines.append(b"data %d\n" % len(raw) + raw + b"\n")

    def commit(ref: str, subject: str, body: str, parents: list[int], when: datetime) -> int:
        nonlocal mark
        mark += 1
        name, email = rng.choice(AUTHORS)
        stamp = int(when.timestamp())
        lines.append(f"commit {ref}\nmark :{mark}\n".encode())
        lines.append(f"author {name} <{email}> {stamp} +0000\n".encode())
        lines.append(f"committer {name} <{email}> {stamp} +0000\n".encode())
        data(subject + ("\n\n" + body if body else "") + "\n")
        if parents:
            lines.append(f"from :{parents[0]}\n".encode())
        for other in parents[1:]:
            lines.append(f"merge :{other}\n".encode())
        area = rng.choice(AREAS)
        path = f"src/{area}/module_{rng.randrange(6)}.py"
        content = f"# {subject}\nVALUE = {mark}\n"
        lines.append(f"M 100644 inline {path}\n".encode())
        data(content)
        lines.append(b"\n")
        return mark

    nasty = iter(NASTY_SUBJECTS)
    for number in range(COMMITS):
        moment = start + step * number
        if number % 80 == 40:
            subject = next(nasty, None) or "tidy"
        elif number % 25 == 24 and main_mark is not None:
            # A short feature branch, merged back with a merge commit.
            side = commit("refs/heads/feature", f"{rng.choice(AREAS)}: start feature {number}", "",
                          [main_mark], moment - step / 2)
            main_mark = commit("refs/heads/main", f"Merge branch 'feature-{number}'", "",
                               [main_mark, side], moment)
            continue
        else:
            subject = f"{rng.choice(AREAS)}: {rng.choice(VERBS)} {rng.choice(THINGS)}"
        body = ""
        if number == 7:
            body = "\n".join(f"line {i} of a very long body" for i in range(10_000))
        main_mark = commit("refs/heads/main", subject, body, [main_mark] if main_mark else [], moment)
    lines.append(b"done\n")
    subprocess.run(["git", "fast-import", "--quiet", "--done"], cwd=repo, input=b"".join(lines),
                   check=True)


def build(root: Path, now: datetime, *, python: str = sys.executable) -> DemoWorld:
    """Create the demo world under ``root`` (which must be empty or missing)."""
    rng = random.Random(20261126)
    repo = root / "repo"
    repo.mkdir(parents=True)
    git = ["git", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "--quiet", str(repo)], check=True)
    _fast_import(repo, now, rng)
    subprocess.run(["git", "-C", str(repo), "branch", "-D", "feature"], check=True,
                   capture_output=True)
    (repo / "deploy.py").write_text(DEPLOY_SCRIPT)
    config = repo / "andon.toml"
    config.write_text(
        'branch = "main"\n\n'
        "[environments.staging]\n"
        f'deploy = [{python!r}, "deploy.py", "staging", "{{sha}}"]\n'
        "timeout = 120\n\n"
        "[environments.production]\n"
        f'deploy = [{python!r}, "deploy.py", "production", "{{sha}}"]\n'
        f'rollback = [{python!r}, "deploy.py", "production", "{{sha}}"]\n'
        "timeout = 300\n"
    )
    subprocess.run(["git", "-C", str(repo), "checkout", "--quiet", "-f", "main"], check=True)
    shas = subprocess.run(
        ["git", "-C", str(repo), "rev-list", "--first-parent", "--reverse", "main"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    times = subprocess.run(
        ["git", "-C", str(repo), "log", "--first-parent", "--reverse", "--format=%ct", "main"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    db = root / "deploys.db"
    log = DeployLog.open(db, clock=lambda: now)
    people = [name for name, _ in AUTHORS] + ["ci"]
    # Staging follows main every few commits; production follows staging.
    staged: list[tuple[int, datetime]] = []
    index = 4
    while index < len(shas) - 6:
        at = datetime.fromtimestamp(int(times[index]), now.tzinfo) + timedelta(minutes=12)
        failed = rng.random() < 0.12
        log.record(
            "staging", shas[index], FAILED if failed else SUCCEEDED, who="ci", at=at, trigger="ci",
            exit_code=1 if failed else 0,
            output=_output("staging", shas[index], failed),
        )
        if not failed:
            staged.append((index, at))
        index += rng.randint(3, 7)
    rollback_done = False
    for number, (index, at) in enumerate(staged):
        if number % 2:
            continue
        at = at + timedelta(hours=1)
        failed = rng.random() < 0.1
        who = rng.choice(people)
        deploy = log.record(
            "production", shas[index], FAILED if failed else SUCCEEDED, who=who, at=at,
            trigger="ci" if who == "ci" else "manual", exit_code=1 if failed else 0,
            output=_output("production", shas[index], failed),
        )
        if not rollback_done and not failed and number > len(staged) // 2 and deploy.prev_sha:
            log.record(
                "production", deploy.prev_sha, SUCCEEDED, who="Grace Hopper",
                at=at + timedelta(minutes=9), trigger="rollback", exit_code=0,
                reason="error rate above 5% after deploy", reverts=deploy.id,
                output=_output("production", deploy.prev_sha, False),
            )
            rollback_done = True
    log.close()
    return DemoWorld(root, repo, db, config)


def _output(env: str, sha: str, failed: bool) -> str:
    lines = [
        f"[1/4] building image for {env} at {sha[:7]}",
        f"[2/4] pushing image for {env} at {sha[:7]}",
        f"[3/4] running smoke tests for {env} at {sha[:7]}",
    ]
    if failed:
        lines += ["smoke test checkout_flow: FAILED (HTTP 500 from /cart)", "deploy aborted"]
    else:
        lines += [f"[4/4] switching traffic for {env} at {sha[:7]}", f"deployed {sha[:7]} to {env}"]
    return "\n".join(lines) + "\n"
