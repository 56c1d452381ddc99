"""The demo world: a repository with weeks of history, a deploy log, a deploy script and
a small service to watch.

Deterministic for a given ``now`` (a seeded generator, times relative to ``now``),
so screenshots made with a fixed clock are the same on every machine.

The service (:class:`DemoService`) answers on 127.0.0.1, on a free port, in a thread of
the process that built the world: it ends with that process (``andon demo`` quitting,
or a SIGHUP or SIGTERM, which the demo already handles). ``/ENV/healthz`` reports, as
``build.sha``, the SHA that the demo deploy script last deployed to ENV (the script writes
it to ``service/ENV.json``). Every other deploy to production (the first, the third, ...)
and any deploy of a commit whose subject says "break" ship a broken build: production
answers 503 until the next deploy or a rollback, so its verification fails where the
user can see it, and its health recovers after the next deploy or a rollback.

Production keeps ``auto_stop`` on (the default, written out in the demo's ``andon.toml``): the
broken deploy's failed verification stops the line by itself, so the story a user sees is
deploy, unhealthy, line stopped (``andon deploy`` now refused), ``!`` (roll back to the last
good deploy), healthy again, ``R`` (resume), and the next deploy is a good build.

The demo's chat receiver (:class:`backend.demo_chat.DemoChat`) starts with the service: the
demo's ``andon.toml`` names it as a signed ``webhook`` receiver whose URL and secret live in
the variables :data:`backend.demo_chat.URL_ENV` and :data:`backend.demo_chat.SECRET_ENV`
(``andon demo`` sets them in its own environment), and it writes what it receives to
``chat.log`` in the demo's directory.

The demo's migrations (:mod:`backend.demo_migrations`): trailers in its commits, the steps
jobs and people reported, every phase in staging and production, one overdue, and (with the
service) a job reporting one migration's progress while you watch.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from backend.demo_chat import SECRET_ENV, URL_ENV, DemoChat
from backend.demo_migrations import MOVING_SINCE, MovingMigration, marked, record_steps
from backend.models import FAILED, SUCCEEDED, UP, HealthSample, to_iso, utc_now
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
"""Demo deploy script: pretends to ship a commit to an environment.

    deploy.py ENV SHA [SERVICE_DIR [rollback]]

With SERVICE_DIR it tells the demo's health service what now runs (SERVICE_DIR/ENV.json).
Every other deploy to production (the first, the third, ...) and any commit whose subject
says "break" ship a broken build (the service answers 503); a rollback never does.
"""
import json
import subprocess
import sys
import time
from pathlib import Path

env, sha = sys.argv[1], sys.argv[2]
service = Path(sys.argv[3]) if len(sys.argv) > 3 else None
rollback = sys.argv[4:5] == ["rollback"]
steps = ["building image", "pushing image", "running smoke tests", "switching traffic"]
for number, step in enumerate(steps, 1):
    print(f"[{number}/{len(steps)}] {step} for {env} at {sha[:7]}", flush=True)
    time.sleep(0.3)
if service is not None:
    state_file = service / f"{env}.json"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        state = {}
    deploys = int(state.get("deploys", 0)) + (0 if rollback else 1)
    subject = subprocess.run(["git", "log", "-1", "--format=%s", sha], capture_output=True, text=True).stdout
    broken = not rollback and ((env == "production" and deploys % 2 == 1) or "break" in subject.lower())
    new = state_file.with_suffix(".new")
    new.write_text(json.dumps({"sha": sha, "broken": broken, "deploys": deploys}))
    new.replace(state_file)
    if broken:
        print(f"(demo) {sha[:7]} is a broken build on purpose: {env} answers 503 until the next deploy",
              flush=True)
print(f"deployed {sha[:7]} to {env}", flush=True)
'''
ENVIRONMENTS = ("staging", "production")
HEALTH_INTERVAL = 2  # seconds between probes in the demo: a live-looking panel
SAMPLES = 60  # probes of history written with the world, so the sparklines start full


@dataclass(frozen=True)
class DemoWorld:
    root: Path
    repo: Path
    db: Path
    config: Path
    service: DemoService | None = None  # running, unless built with service=False
    chat: DemoChat | None = None  # the chat receiver: running, unless built with service=False
    migration: MovingMigration | None = None  # a migration job reporting progress: running, unless service=False

    @property
    def chat_log(self) -> Path:
        """Where the chat receiver writes one line per message."""
        return self.root / "chat.log"


class _Handler(BaseHTTPRequestHandler):
    """``GET /ENV/healthz`` (JSON, the deployed SHA as ``build.sha``) and ``GET /ENV/`` (a page)."""

    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        env, _, rest = self.path.split("?")[0].strip("/").partition("/")
        if env not in ENVIRONMENTS or rest not in ("healthz", ""):
            self._answer(404, {"error": "not found"})
            return
        try:
            state = json.loads((self.server.state_dir / f"{env}.json").read_text())
        except (OSError, ValueError):
            state = {}
        sha = str(state.get("sha", ""))
        # A service's latency wanders, now and then a slow request: the sparkline has a shape.
        jitter = self.server.jitter
        time.sleep(jitter.uniform(0.004, 0.03) if jitter.random() > 0.07 else jitter.uniform(0.06, 0.14))
        if state.get("broken"):
            self._answer(503, {"status": "error", "build": {"sha": sha},
                               "error": "worker pool exhausted: connection to db refused"})
        elif rest == "healthz":
            self._answer(200, {"status": "ok", "build": {"sha": sha}})
        else:
            self._answer(200, {"page": f"the demo shop, {env}"})

    def _answer(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the parameter's name upstream
        pass  # the dashboard owns the terminal


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, state_dir: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state_dir = state_dir
        self.jitter = random.Random()


class DemoService:
    """The demo's service on 127.0.0.1, a free port, in a daemon thread: it ends with its process."""

    def __init__(self, state_dir: Path) -> None:
        self._server = _Server(state_dir)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="andon-demo-service", daemon=True)
        self._thread.start()

    def url(self, env: str, path: str = "healthz") -> str:
        return f"http://127.0.0.1:{self.port}/{env}/{path}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


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

    def commit(ref: str, subject: str, body: str, parents: list[int], when: datetime,
               files: tuple[tuple[str, str | None], ...] = ()) -> int:
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
        for extra, text in files:  # a migration commit's own changes (demo_migrations)
            if text is None:
                lines.append(f"D {extra}\n".encode())
            else:
                lines.append(f"M 100644 inline {extra}\n".encode())
                data(text)
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
        files: tuple[tuple[str, str | None], ...] = ()
        migration = marked(number)
        if migration is not None:  # after the generator's draws: the rest of the history stays the same
            subject, body, files = migration.subject, migration.trailer, migration.files
        main_mark = commit("refs/heads/main", subject, body, [main_mark] if main_mark else [], moment, files)
    lines.append(b"done\n")
    subprocess.run(["git", "fast-import", "--quiet", "--done"], cwd=repo, input=b"".join(lines),
                   check=True)


def build(root: Path, now: datetime, *, python: str = sys.executable, service: bool = True) -> DemoWorld:
    """Create the demo world under ``root`` (which must be empty or missing).

    ``service``: start the demo's health service (:class:`DemoService`) and point the
    checks at it, and start its chat receiver (:class:`~backend.demo_chat.DemoChat`, writing
    to ``root/chat.log``); without it (screenshots, tests) the checks name a port nobody
    answers on and nobody receives the chat (the ``[[notify]]`` receiver is configured all
    the same: its variables are not set, so its messages wait in the log), and no migration
    job reports progress (:class:`~backend.demo_migrations.MovingMigration`).
    """
    rng = random.Random(20261126)
    repo = root / "repo"
    repo.mkdir(parents=True)
    git = ["git", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "--quiet", str(repo)], check=True)
    _fast_import(repo, now, rng)
    subprocess.run(["git", "-C", str(repo), "branch", "-D", "feature"], check=True,
                   capture_output=True)
    (repo / "deploy.py").write_text(DEPLOY_SCRIPT)
    state_dir = root / "service"
    state_dir.mkdir()
    running = DemoService(state_dir) if service else None
    chat = DemoChat(root / "chat.log") if service else None
    port = running.port if running else 9  # nobody answers on the discard port
    script = [python, "deploy.py"]

    def argv(*args: str) -> str:
        return json.dumps([*script, *args])  # a JSON list of strings is a TOML array

    def check(env: str) -> str:
        return (f"[[environments.{env}.health]]\n"
                'name = "api"\n'
                f'url = "http://127.0.0.1:{port}/{env}/healthz"\n'
                f"interval = {HEALTH_INTERVAL}\ntimeout = 1\n"
                'version = "build.sha"\ndegraded_ms = 500\n\n'
                f"[[environments.{env}.health]]\n"
                'name = "web"\n'
                f'url = "http://127.0.0.1:{port}/{env}/"\n'
                f"interval = {HEALTH_INTERVAL}\ntimeout = 1\n")

    config = repo / "andon.toml"
    service_dir = str(state_dir)
    config.write_text(
        'branch = "main"\n'
        'db = "../deploys.db"  # the demo\'s log, beside the repository\n\n'
        "[environments.staging]\n"
        f'deploy = {argv("staging", "{sha}", service_dir)}\n'
        "timeout = 120\n\n"
        + check("staging") + "\n"
        "[environments.production]\n"
        f'deploy = {argv("production", "{sha}", service_dir)}\n'
        f'rollback = {argv("production", "{sha}", service_dir, "rollback")}\n'
        "timeout = 300\n"
        "verify_seconds = 10  # after a deploy, watch production this long before calling it good\n"
        "verify_failures = 3\n"
        "auto_stop = true  # an unhealthy deploy stops the line by itself (the default, written out)\n"
        "rollback_grace_seconds = 5  # ! on the dashboard: 5 seconds to cancel (esc) before the rollback runs\n\n"
        + check("production") + "\n"
        "[[notify]]  # the demo's chat receiver: andon demo sets these variables and shows where messages go\n"
        'kind = "webhook"\n'
        f'url_env = "{URL_ENV}"\n'
        f'secret_env = "{SECRET_ENV}"\n'
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
    _health(log, state_dir, now, rng)
    log.close()
    record_steps(repo, db, now)
    moving = MovingMigration(repo, db, now - MOVING_SINCE, utc_now) if service else None
    return DemoWorld(root, repo, db, config, running, chat, moving)


def _health(log: DeployLog, state_dir: Path, now: datetime, rng: random.Random) -> None:
    """What the service runs (each environment's live SHA) and a few minutes of healthy probes."""
    for env in ENVIRONMENTS:
        live = log.live(env)
        sha = live.sha if live else ""
        (state_dir / f"{env}.json").write_text(json.dumps({"sha": sha, "broken": False, "deploys": 0}))
        samples = []
        for number in range(SAMPLES):
            at = to_iso(now - timedelta(seconds=HEALTH_INTERVAL * (SAMPLES - 1 - number)))
            slow = rng.random() < 0.07  # as the service answers: mostly 30-60 ms, now and then slower
            samples += [
                HealthSample(env, "api", at, UP, 200, round(rng.uniform(90, 160) if slow else rng.uniform(30, 60), 1),
                             sha),
                HealthSample(env, "web", at, UP, 200, round(rng.uniform(28, 55), 1), None),
            ]
        log.record_health(samples, "healthy", who="demo", env=env)


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
