"""``andon stop``, ``resume``, ``rollback``, ``release`` and ``run-rollback``: the line's commands.

:func:`add_parsers` adds them to ``andon``'s parser, given :func:`tui.cli.build_parser`'s
``command(name, help)`` factory and ``internal(name, description)`` for the runner (which has no
help line); the ``cmd_*`` functions run them (:data:`tui.cli.COMMANDS`). Their exit codes are at
the top of :mod:`tui.cli`: 5 (the line is stopped), 7 (a rollback is under way) and 9 (a migration
holds the rollback: :class:`backend.rollback.MigrationHold`; ``--despite-migration NAME`` overrides).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from backend import AndonError
from backend.config import check_environment_name
from backend.text import clean_line
from tui.cli import UsageError, _known_environment, _out, _positive, _world, when_seconds


def add_parsers(command: Callable[[str, str], argparse.ArgumentParser],
                internal: Callable[[str, str], argparse.ArgumentParser]) -> None:
    stop = command("stop", "stop the line of an environment: andon deploy refuses until it is resumed")
    stop.add_argument("--env", required=True, help="the environment")
    stop.add_argument("--reason", required=True, help="why (kept in the log, shown to everyone)")

    resume = command("resume", "resume the line of an environment")
    resume.add_argument("--env", required=True, help="the environment")
    resume.add_argument("--reason", default="", help="why (kept in the log)")

    rollback = command("rollback", "stop the line and roll back to the last good deploy (after a grace anyone may "
                                   "cancel in)")
    rollback.add_argument("--env", required=True, help="the environment")
    rollback.add_argument("--to", metavar="DEPLOY-ID|SHA",
                          help="roll back to this deploy (12 or #12) or revision (default: the last good deploy)")
    rollback.add_argument("--reason", default="", help="why (kept in the log, shown to everyone)")
    rollback.add_argument("--cancel", action="store_true", help="cancel the pending rollback instead (the line stays "
                                                                 "stopped)")
    rollback.add_argument("--despite-migration", action="append", default=[], metavar="NAME", type=_migration_name,
                          help="roll back although migration NAME holds it: its expand is not in the target "
                               "(repeat for each; otherwise exit 9)")

    release = command("release", "release a commit held after a rollback: deploys to the environment may ship it again")
    release.add_argument("sha", metavar="SHA", nargs="?", help="the held commit (a SHA, or any revision naming it)")
    release.add_argument("--all", action="store_true", help="release every commit held in the environment instead "
                                                            "(one event, one chat message)")
    release.add_argument("--env", required=True, help="the environment it is held in")
    release.add_argument("--reason", required=True, help="why it may ship again (kept in the log, shown to everyone)")

    # The detached process that runs a requested rollback (started by andon rollback and the
    # dashboard, not by people): no help line.
    runner = internal("run-rollback", "run a requested rollback (internal)")
    runner.add_argument("--id", type=_positive, required=True)
    runner.add_argument("--detach", action="store_true")


def _migration_name(text: str) -> str:
    from backend.markers import MIGRATION_NAME

    if not MIGRATION_NAME.match(text):
        raise argparse.ArgumentTypeError(f"{clean_line(text)[:80]!r} is not a migration name")
    return text


def cmd_stop(args: argparse.Namespace) -> int:
    check_environment_name(args.env)
    reason = clean_line(args.reason).strip()
    if not reason:
        raise UsageError("--reason must say why the line stops")
    world = _world(args)
    try:
        _known_environment(world, args.env)
        won, state = world.log.stop_line(args.env, who=world.who(), reason=reason)
    finally:
        world.close()
    if won:
        _out(f"stopped the line of {args.env}: andon deploy refuses until andon resume --env {args.env}")
    else:
        _out(f"the line of {args.env} was already {state.describe()}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    check_environment_name(args.env)
    world = _world(args)
    try:
        _known_environment(world, args.env)
        from backend.deployer import reap

        reap(world.log, args.env)  # a rollback whose runner died no longer holds the line
        resumed, state = world.log.resume_line(args.env, who=world.who(), reason=clean_line(args.reason).strip())
    finally:
        world.close()
    _out(f"resumed the line of {args.env}" if resumed else f"the line of {args.env} is not stopped")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from backend.rollback import cancel_rollback, request_rollback

    check_environment_name(args.env)
    if args.cancel and args.to is not None:
        raise UsageError("--cancel takes no --to: it cancels the pending rollback, whatever its target")
    if args.to is not None and not args.to.strip():
        # An empty $TARGET in a script must not quietly mean "the last good deploy".
        raise UsageError("--to is empty: give a deploy id (12 or #12) or a revision, or leave --to out "
                         "to roll back to the last good deploy")
    world = _world(args)
    try:
        if args.cancel:
            cancelled = cancel_rollback(world, args.env, world.who())
            _out(f"cancelled rollback #{cancelled.id} of {args.env} ({cancelled.describe()}); nothing runs, the line "
                 f"stays stopped (andon resume --env {args.env})")
            return 0
        requested = request_rollback(world, args.env, world.who(), clean_line(args.reason).strip(), args.to,
                                     despite=args.despite_migration)
    finally:
        world.close()
    rollback = requested.rollback
    grace = world.config.environment(args.env).rollback_grace_seconds
    line = "stopped the line and requested" if requested.stopped_line else "the line was stopped; requested"
    _out(f"{line} rollback #{rollback.id} of {args.env} {rollback.describe()}; it runs at "
         f"{when_seconds(rollback.run_at)} UTC" + (f", in {grace:g}s unless cancelled (andon rollback --cancel "
                                                    f"--env {args.env})" if grace > 0 else ""))
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    """``andon release SHA|--all --env E --reason TEXT`` (backend.held.release, release_all): one
    line, 0 also when nothing was held."""
    from backend.held import release, release_all

    if args.all and args.sha is not None:
        raise UsageError("give SHA or --all, not both")
    if not args.all and args.sha is None:
        raise UsageError("name the held commit (SHA) or release every held commit (--all)")
    check_environment_name(args.env)
    reason = clean_line(args.reason).strip()
    if not reason:
        raise UsageError(f"--reason must say why the commit{'s' if args.all else ''} may ship again")
    if not args.all and not args.sha.strip():
        raise UsageError("SHA is empty: name the held commit")
    world = _world(args)
    try:
        if args.all:
            said = release_all(world, args.env, world.who(), reason)
        else:
            said = release(world, args.env, args.sha, world.who(), reason)
    finally:
        world.close()
    _out(said)
    return 0


def cmd_run_rollback(args: argparse.Namespace) -> int:
    """The detached runner of a requested rollback (see backend.rollback)."""
    from backend.rollback import run_rollback
    from backend.runner import Runner

    if args.detach:
        # Fork once more and let the first process exit: the runner is then nobody's child (no
        # zombie in a dashboard that started it) and, in a session of its own, nobody's terminal's.
        child = os.fork()
        if child:
            sys.stdout.write(f"{child}\n")
            sys.stdout.flush()
            os._exit(0)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
    runner = Runner()
    stopped: list[str] = []

    def stop(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        stopped.append(name)
        runner.stop(name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    world = _world(args)
    try:
        try:
            ended = run_rollback(world, args.id, runner=runner, interrupted=lambda: stopped[0] if stopped else None)
        except AndonError as error:
            # Nobody reads this process's output: the rollback's row says what went wrong.
            with contextlib.suppress(AndonError):
                world.log.end_rollback(args.id, "failed", str(error))
            raise
    finally:
        world.close()
    return 0 if ended.status in ("succeeded", "cancelled") else 1
