"""The ``andon`` command: parse arguments, build the backend, run a command or open the dashboard.

Textual is imported only when the dashboard opens, so the CI commands start fast.
"""

from __future__ import annotations

import argparse
import codecs
import gc
import importlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from backend import AndonError
from backend.config import check_environment_name
from backend.history import FULL_SHA
from backend.store.line import Busy, LineStopped, RollbackUnderWay
from backend.text import clean_line, short
from backend.world import World, resolve_world

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNHEALTHY = 3  # andon health: an environment is degraded, down or unknown
EXIT_DEPLOY_UNHEALTHY = 4  # andon deploy: the command succeeded, the health verification did not
EXIT_LINE_STOPPED = 5  # andon deploy: the line is stopped (refused; --force overrides)
EXIT_BUSY = 6  # andon deploy: another deploy of the environment still ran when --wait ran out
EXIT_ROLLBACK_UNDER_WAY = 7  # andon rollback/resume: a rollback is already pending or running
EXIT_MIGRATION_HOLD = 9  # andon rollback: a migration holds it (--despite-migration NAME overrides)
EXIT_STEP_REFUSED = 10  # andon migration STEP: not a step the migration can take now
EXIT_HELD = 11  # andon deploy, andon line --check --sha: commits held after a rollback are in the SHA
EXIT_FROZEN = 12  # andon deploy, andon line --check: a freeze is in force


class UsageError(AndonError):
    """A usage mistake argparse cannot see (exit 2, one line)."""


def when_seconds(stamp: str) -> str:
    """A log time as ``2026-11-20 14:03:05`` (UTC)."""
    return stamp[:19].replace("T", " ")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with a pointer to --help), not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"andon: error: {message} (see {self.prog} --help)\n")


def _common(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--repo", type=Path, default=default, help="the git repository (default: the current directory)")
    parser.add_argument("--db", type=Path, default=default, help="the deploy log (default: $ANDON_DB, the config's db, or inside .git)")
    parser.add_argument("--config", type=Path, default=default, help="the configuration file (default: andon.toml or pyproject.toml)")


def build_parser() -> Parser:
    parser = Parser(prog="andon", description="See and steer continuous deployment from the terminal.")
    _common(parser, None)
    read_only = "a dashboard that cannot stop the line, roll back or resume (for a wall display)"
    parser.add_argument("--read-only", action="store_true", help=read_only)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        _common(sub, argparse.SUPPRESS)
        return sub

    dashboard = command("dashboard", "open the dashboard (the same as plain andon)")
    dashboard.add_argument("--read-only", action="store_true", default=argparse.SUPPRESS, help=read_only)
    demo = command("demo", "build a throw-away demo world and open the dashboard on it")
    demo.add_argument("--dir", type=Path, help="build the world here and keep it (must not exist yet)")
    demo.add_argument("--no-open", action="store_true", help="build the world and print where it is, without opening the dashboard")

    from tui import cli_check, cli_deploy, cli_history, cli_line

    cli_deploy.add_parser(command)

    def internal(name: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, description=description)  # no help line: not for people
        _common(sub, argparse.SUPPRESS)
        return sub

    cli_line.add_parsers(command, internal)
    cli_check.add_parser(command)
    cli_deploy.add_record_parsers(command)

    health = command("health", "probe every health check once now (exit 3 when an environment is not healthy)")
    health.add_argument("--env", help="only this environment")
    health.add_argument("--json", action="store_true", help="one JSON document")

    watch = command("watch", "probe health for everyone on the log until stopped (Ctrl-C, SIGTERM)")
    watch.add_argument("--env", action="append", metavar="ENV",
                       help="only this environment (repeat for several; default: every one with checks)")

    cli_history.add_status_parser(command)

    from tui import cli_migrations, cli_notify

    cli_notify.add_parser(command)
    cli_migrations.add_parsers(command)

    cli_history.add_log_parser(command)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


# Commands whose writes may be news for chat: after one, this process delivers what is due
# (backend.notify; the outbox rows were written with the events, so the action never waited).
ANNOUNCING = frozenset({"deploy", "record", "stop", "resume", "rollback", "run-rollback", "release"})
_OPENED: list[World] = []  # the worlds this invocation opened: delivered for after the command


def _world(args: argparse.Namespace) -> World:
    world = resolve_world(args.repo, args.db, args.config)
    world.reading_only = args.command in (None, "dashboard", "status", "log", "migrations")
    if args.command in ANNOUNCING:
        _OPENED.append(world)
    return world


def _deliver_news() -> None:
    """Deliver the chat messages due, through each world this command opened (never fails the command)."""
    from backend.notify import deliver_pending

    while _OPENED:
        world = _OPENED.pop()
        try:
            if not world.config.notifiers:
                continue
            report = deliver_pending(world)
        except AndonError as error:
            print(f"andon: warning: chat: {clean_line(str(error))}", file=sys.stderr)
            continue
        finally:
            world.close()
        if report.dead:
            count = len(report.dead)
            print(f"andon: warning: chat: {count} message{'s' if count != 1 else ''} could not be delivered "
                  "(a receiver refused them: andon notify says why)", file=sys.stderr)


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _stdout_is_utf8() -> bool:
    try:
        return codecs.lookup(sys.stdout.encoding or "").name == "utf-8"
    except LookupError:
        return False


def _dump(data: Any) -> None:
    # Exact JSON whatever stdout can encode: \u escapes where it is not UTF-8.
    # One dumps and one write: json.dump to a stream makes a write call per token.
    sys.stdout.write(json.dumps(data, ensure_ascii=not _stdout_is_utf8(), separators=(",", ":")) + "\n")


# -- commands ------------------------------------------------------------------------


def _known_environment(world: World, env: str) -> None:
    """Refuse (one line) an environment neither configured nor ever deployed."""
    check_environment_name(env)
    if env in world.config.environments or env in world.log.environments():
        return
    known = ", ".join(world.environments()) or "none"
    raise AndonError(f"unknown environment {env!r} (known: {known})")


def cmd_health(args: argparse.Namespace) -> int:
    """One round of every check now. Records it too when nobody else is probing (see the README)."""
    from backend.health import environment_state, probe_round, version_drift
    from backend.models import HEALTHY, HealthSample
    from backend.store import holder_id
    from backend.watcher import checked_environments, contains, lease_name, lease_seconds

    if args.env:
        check_environment_name(args.env)
    world = _world(args)
    try:
        checked = checked_environments(world, [args.env] if args.env else None)
        if not checked:
            where = world.config.source.name if world.config.source else "andon.toml"
            raise AndonError(f"no health checks configured: add [[environments.NAME.health]] with a name and "
                             f"a url to {where}")
        names = [args.env] if args.env else list(world.config.environments)
        samples = probe_round(checked, clock=world.clock)
        now = world.clock()
        by_env: dict[str, dict[str, HealthSample]] = {env: {} for env in checked}
        for sample in samples:
            by_env.setdefault(sample.env, {})[sample.check] = sample
        states = {env: environment_state({check.name: by_env[env].get(check.name) for check in checks}, checks, now)
                  for env, checks in checked.items()}
        live = {env: world.log.live(env) for env in checked}
        recorded: dict[str, bool] = {}
        holder, who = holder_id(), world.who()
        for env, checks in checked.items():
            # Recorded for everyone only when nobody else is probing: never waits, never doubles.
            recorded[env] = world.log.take_lease(lease_name(env), holder, lease_seconds(checks))
            if recorded[env]:
                try:
                    world.log.record_health(list(by_env[env].values()), states[env], who=who, env=env)
                finally:
                    world.log.release_lease(lease_name(env), holder)
        report = []
        for env in names:
            checks = checked.get(env, ())
            deployed = live.get(env)
            entries = []
            for check in checks:
                probed = by_env.get(env, {}).get(check.name)
                if probed is None:
                    continue
                entry = probed.to_json()
                entry["drift"] = (version_drift(probed.version, deployed.sha, contains(world))
                                  if deployed is not None and probed.version else None)
                entries.append(entry)
            report.append({"env": env, "state": states.get(env), "live_sha": deployed.sha if deployed else None,
                           "recorded": recorded.get(env, False), "checks": entries})
    finally:
        world.close()
    if args.json:
        _dump({"environments": report})
    else:
        for env_report in report:
            _show_health(env_report)
    return 0 if all(states[env] == HEALTHY for env in checked) else EXIT_UNHEALTHY


def _show_health(report: dict[str, Any]) -> None:
    if report["state"] is None:
        _out(f"{report['env']}: no health checks")
        return
    _out(f"{report['env']}: {report['state']}")
    width = max(len(entry["check"]) for entry in report["checks"])
    for entry in report["checks"]:
        code = str(entry["status_code"]) if entry["status_code"] is not None else "-"
        latency = f"{entry['latency_ms']:.0f} ms" if entry["latency_ms"] is not None else "-"
        parts = [f"  {entry['check']:<{width}}  {entry['state']:<8}  {code:>3}  {latency:>8}"]
        if entry["version"]:
            version = f"version {short(entry['version']) if FULL_SHA.match(entry['version']) else entry['version']}"
            drift = entry["drift"]
            if drift and drift != "match" and report["live_sha"]:
                version += f" ({drift}: live is {short(report['live_sha'])})"
            elif drift == "match":
                version += " (live)"
            parts.append(version)
        if entry["error"]:
            parts.append(entry["error"])
        _out("  ".join(parts))


def cmd_watch(args: argparse.Namespace) -> int:
    """Hold the health leases and probe until SIGINT or SIGTERM; one line per change of state."""
    import threading

    from backend.watcher import HealthWatcher, StateChange

    for env in args.env or ():
        check_environment_name(env)
    world = _world(args)
    stop = threading.Event()

    def request_stop(_signum: int, _frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    watcher = None
    chat: threading.Thread | None = None
    try:
        watcher = HealthWatcher(world, args.env)
        if not watcher.checks:
            where = world.config.source.name if world.config.source else "andon.toml"
            raise AndonError(f"no health checks configured: add [[environments.NAME.health]] with a name and "
                             f"a url to {where}")
        print(f"andon: watching {', '.join(watcher.checks)} (Ctrl-C or SIGTERM to stop)", file=sys.stderr)
        last_error = ""

        def changed(change: StateChange) -> None:
            _out(f"{change.at[:19].replace('T', ' ')} {change.describe()}")
            sys.stdout.flush()

        def failed(error: AndonError) -> None:
            nonlocal last_error
            if str(error) != last_error:  # a lasting problem is said once, not every interval
                print(f"andon: warning: {error}", file=sys.stderr)
                last_error = str(error)

        if world.config.notifiers:
            # The headless deliverer: chat messages go out within a second of their event,
            # beside the rounds (a slow receiver never holds up probing).
            chat = threading.Thread(target=_deliver_until, args=(world, stop, failed), name="andon-chat", daemon=True)
            chat.start()
        watcher.run_forever(stop, on_change=changed, on_error=failed)
    finally:
        stop.set()
        try:
            if watcher is not None:
                watcher.close()  # releases the leases: another andon takes over at its next round
            if chat is not None:
                chat.join(CHAT_STOP_WAIT)
        finally:
            world.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return 0


CHAT_EVERY = 1.0  # seconds between two looks at the outbox in andon watch
CHAT_STOP_WAIT = 12.0  # seconds andon watch waits at exit for a send in flight (one try is capped at 10)
REMIND_EVERY = 60.0  # seconds between two looks for overdue migration cleanups in andon watch


def _deliver_until(world: World, stop: threading.Event, failed: Callable[[AndonError], None]) -> None:
    """Chat for andon watch: the outbox each second and, once a minute first, the digest of the
    overdue migration cleanups (written at most once a day per migration, whoever looks); every
    half minute, the reminders of a line stopped for long (backend.line_reminder)."""
    import time

    from backend import line_reminder, migrations
    from backend.notify import deliver_pending

    looked = -REMIND_EVERY
    stopped_looked = -line_reminder.REMIND_EVERY
    while not stop.wait(CHAT_EVERY):
        if time.monotonic() - stopped_looked >= line_reminder.REMIND_EVERY:
            stopped_looked = time.monotonic()
            try:
                line_reminder.remind(world)
            except Exception as error:  # noqa: BLE001 - the reminders' trouble must not stop the line's chat
                failed(error if isinstance(error, AndonError) else
                       AndonError(f"line reminders: {type(error).__name__}: {error}"))
        if time.monotonic() - looked >= REMIND_EVERY:
            looked = time.monotonic()
            try:
                migrations.remind(world, migrations.evaluate(world, evidence=False))
            except Exception as error:  # noqa: BLE001 - the reminders' trouble must not stop the line's chat
                failed(error if isinstance(error, AndonError) else
                       AndonError(f"migration reminders: {type(error).__name__}: {error}"))
        try:
            deliver_pending(world)
        except AndonError as error:
            failed(error)


def open_dashboard(find_world: Callable[[], World], *, read_only: bool = False, greeting: str = "") -> None:
    """Run the dashboard on the world ``find_world`` returns (``read_only``: without the keys that act;
    ``greeting``: a toast once it is up).

    Finding the world (git rev-parse, the config), opening the log and reading the
    first screen happen in a thread while Textual is being imported; a problem with
    any of them is reported before the screen takes over.
    """
    import threading

    from tui.first_screen import load_first_screen

    loaded: dict[str, Any] = {}

    def read() -> None:
        try:
            loaded["world"] = find_world()
            loaded["first"] = load_first_screen(loaded["world"])
        except BaseException as error:  # noqa: BLE001 - raised again in the main thread, as it was
            loaded["error"] = error

    reader = threading.Thread(target=read, name="andon-first-screen")
    reader.start()
    from tui.app import make_app  # about 0.2 s of imports, overlapping the read

    # The imports left some 36,000 objects that live as long as the process. Freezing
    # them keeps the collector from walking them all again: a full collection (10-20 ms)
    # used to fall just before the first frame, and every later one is cheaper too.
    gc.freeze()

    reader.join()
    if "error" in loaded:
        if loaded.get("world") is not None:
            loaded["world"].close()
        raise loaded["error"]
    world: World = loaded["world"]
    try:
        make_app(world, first=loaded["first"], read_only=read_only, greeting=greeting).run()
    finally:
        world.close()  # the reader set both world and first, or an error


def cmd_dashboard(args: argparse.Namespace) -> int:
    open_dashboard(lambda: _world(args), read_only=args.read_only)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from backend.demo import build
    from backend.models import utc_now

    if args.dir is not None:
        if args.dir.exists():
            raise AndonError(f"--dir {args.dir}: already exists; give a new directory")
        root, keep = args.dir, True
    else:
        root, keep = Path(tempfile.mkdtemp(prefix="andon-demo-")) / "world", args.no_open

    def leave(signum: int, _frame: Any) -> None:
        # A closed terminal (SIGHUP) or a kill (SIGTERM) still removes the throw-away
        # world, then ends the process as the signal would have.
        shutil.rmtree(root.parent, ignore_errors=True)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    if not keep:
        for sig in (signal.SIGHUP, signal.SIGTERM):
            signal.signal(sig, leave)
    try:
        world_files = build(root, utc_now())
        if args.no_open:
            _out(f"demo world in {world_files.root}")
            _out(f"  andon --repo {world_files.repo} --db {world_files.db}")
            _out("  (its health service and chat receiver run only inside andon demo: opened this way its checks "
                 "are down and its chat messages wait in the log)")
            return 0
        kept = "kept: --dir" if keep else "removed on quit; --dir DIR keeps one"
        lines = [f"Demo world: {world_files.root} ({kept})",
                 f"Deploy from its repository: cd {world_files.repo} && andon deploy --env production"]
        if world_files.chat is not None:
            receiver = world_files.chat
            # The dashboard (once a second, whoever wrote the message: an andon run from another
            # shell lacks these, and its messages wait in the log for one that has them) and every
            # andon it starts (a rollback's runner) deliver with these; chat.env is for a shell of
            # the user's own.
            os.environ.update(receiver.variables())
            receiver.write_env(world_files.root / "chat.env")
            lines += [f"Chat, what the team hears: {receiver.url} and {world_files.chat_log}",
                      f"The receiver's variables for another shell: . {world_files.root / 'chat.env'}"]
        greeting = "\n".join(lines)
        _out(greeting)
        open_dashboard(lambda: resolve_world(world_files.repo, world_files.db, None), greeting=greeting)
    finally:
        if not keep:
            shutil.rmtree(root.parent, ignore_errors=True)
    return 0


def _later(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """The command ``name`` of ``module``, imported only when it runs."""

    def run(args: argparse.Namespace) -> int:
        command: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), name)
        return command(args)

    return run


COMMANDS = {
    None: cmd_dashboard,
    "dashboard": cmd_dashboard,
    "demo": cmd_demo,
    "deploy": _later("tui.cli_deploy", "cmd_deploy"),
    "record": _later("tui.cli_deploy", "cmd_record"),
    "import": _later("tui.cli_deploy", "cmd_import"),
    "status": _later("tui.cli_history", "cmd_status"),
    "log": _later("tui.cli_history", "cmd_log"),
    "health": cmd_health,
    "watch": cmd_watch,
    "stop": _later("tui.cli_line", "cmd_stop"),
    "resume": _later("tui.cli_line", "cmd_resume"),
    "rollback": _later("tui.cli_line", "cmd_rollback"),
    "run-rollback": _later("tui.cli_line", "cmd_run_rollback"),
    "release": _later("tui.cli_line", "cmd_release"),
    "notify": _later("tui.cli_notify", "cmd_notify"),
    "migrations": _later("tui.cli_migrations", "cmd_migrations"),
    "migration": _later("tui.cli_migrations", "cmd_migration"),
    "line": _later("tui.cli_check", "cmd_line"),
}


def _exit_code(error: AndonError) -> int:
    codes: list[tuple[type[AndonError], int]] = [
        (UsageError, EXIT_USAGE), (LineStopped, EXIT_LINE_STOPPED), (Busy, EXIT_BUSY),
        (RollbackUnderWay, EXIT_ROLLBACK_UNDER_WAY)]
    # Errors of modules only some commands import: mapped when loaded (nothing else raised them).
    for module, name, code in (("backend.rollback", "MigrationHold", EXIT_MIGRATION_HOLD),
                               ("backend.migrations", "StepRefused", EXIT_STEP_REFUSED),
                               ("backend.gate", "Frozen", EXIT_FROZEN), ("backend.gate", "HeldCommits", EXIT_HELD)):
        kind = getattr(sys.modules.get(module), name, None)
        if kind is not None:
            codes.append((kind, code))
    return next((code for kind, code in codes if isinstance(error, kind)), EXIT_ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    # Commit text and command output may hold any character: on a stdout that cannot
    # encode one (a non-UTF-8 locale, PYTHONIOENCODING=ascii) print a stand-in, never crash.
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="replace")
    args = build_parser().parse_args(argv)
    try:
        try:
            return COMMANDS[args.command](args)
        finally:
            if _OPENED:
                _deliver_news()
    except AndonError as error:
        print(f"andon: error: {clean_line(str(error))}", file=sys.stderr)
        return _exit_code(error)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `andon log | head`: the reader went away; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    # python -m tui.cli (the rollback runner, the tests): run the main of tui.cli as imported, not of
    # this __main__ copy, so the command modules (tui.cli_line, ...) and this share one set of
    # globals and exception classes (the commands opened, UsageError's exit code).
    from tui.cli import main as imported_main

    sys.exit(imported_main())
