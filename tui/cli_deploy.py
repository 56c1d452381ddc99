"""``andon deploy``, ``andon record`` and ``andon import``: the commands that write deploys to the log.

:func:`add_parser` adds ``andon deploy`` and :func:`add_record_parsers` adds ``record`` and
``import`` to ``andon``'s parser (given :func:`tui.cli.build_parser`'s ``command(name, help)``
factory; two functions so ``andon --help`` keeps its order); the ``cmd_*`` functions run them
(:data:`tui.cli.COMMANDS`). ``andon deploy`` runs the environment's action through
:func:`backend.deployer.deploy` (imported when it runs); its exit codes are at the top of
:mod:`tui.cli`: 4 (the health verification failed), 5 (the line is stopped), 6 (another deploy
still ran when ``--wait`` ran out), 11 (held commits) and 12 (a freeze), else the command's own.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from backend import AndonError
from backend.config import check_environment_name
from backend.history import FULL_SHA
from backend.models import FINAL_STATUSES, SUCCEEDED, UNHEALTHY, Deploy, from_iso, to_iso, when
from backend.text import clean_line, short
from backend.world import World
from tui.cli import EXIT_DEPLOY_UNHEALTHY, UsageError, _out, _world, when_seconds


def add_parser(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    deploy = command("deploy", "run an environment's deploy action and record it")
    deploy.add_argument("--env", required=True, help="the environment")
    deploy.add_argument("--sha", default="HEAD", help="the revision to deploy (default: HEAD)")
    deploy.add_argument("--reason", default="", help="why (kept in the log)")
    deploy.add_argument("--trigger", choices=["ci", "manual"], help="default: ci when $CI is set, else manual")
    deploy.add_argument("--force", action="store_true",
                        help="deploy even though the line is stopped, a freeze is in force or the SHA has held "
                             "commits (needs --reason; recorded as forced)")
    deploy.add_argument("--wait-line", type=_seconds, default=0.0, metavar="SECONDS",
                        help="wait up to this long for a stopped line to resume or a freeze to open (held "
                             "commits and a freeze opening later are refused at once)")
    deploy.add_argument("--wait", type=_seconds, default=300.0, metavar="SECONDS",
                        help="wait this long for another deploy of the environment to end (default 300; then exit 6)")
    deploy.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND... to run instead of the configured action")


def add_record_parsers(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    record = command("record", "record a deploy that something else ran")
    record.add_argument("--env", required=True)
    record.add_argument("--sha", required=True, help="the revision that was deployed")
    record.add_argument("--status", required=True, choices=FINAL_STATUSES)
    record.add_argument("--at", help="when it ran, ISO-8601 (default: now)")
    record.add_argument("--by", help="who ran it (default: $ANDON_USER, git's user.name, the login name)")
    record.add_argument("--reason", default="")
    record.add_argument("--trigger", default="ci", choices=["ci", "manual", "rollback", "auto-rollback"])

    command("import", "import past deploys as JSON lines on standard input")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {clean_line(text)!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {clean_line(text)!r}")
    return value




def cmd_deploy(args: argparse.Namespace) -> int:
    from backend.deployer import Interrupted, deploy
    from backend.runner import RunError, Runner

    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    elif command:
        raise AndonError(f"unexpected arguments {clean_line(' '.join(command))!r}: put the command after --")
    reason = clean_line(args.reason).strip()
    if args.force and not reason:
        raise UsageError("--force needs --reason: say why the stopped line, the freeze or the held commits "
                         "are overridden")
    world = _world(args)
    runner = Runner()
    stopped: list[str] = []  # the first stop request, for the health verification after the command

    def stop(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        stopped.append(name)
        runner.stop(name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def show(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def waiting(blocker: Deploy) -> None:
        print(f"andon: waiting for deploy #{blocker.id} of {blocker.short_sha} to {blocker.env} by "
              f"{blocker.who or 'someone'} (started {when(blocker.started_at)} UTC) to end, up to {args.wait:g}s",
              file=sys.stderr)

    def waiting_line(refusal: Any, seconds: float) -> None:
        print(f"andon: {refusal.message}; waiting up to {seconds:g}s for it to "
              f"{'open' if refusal.kind == 'frozen' else 'resume'}", file=sys.stderr)

    try:
        outcome = deploy(world, args.env, args.sha, command=command or None, runner=runner,
                         on_output=show, trigger=args.trigger, reason=reason,
                         interrupted=lambda: stopped[0] if stopped else None,
                         force=args.force, wait=args.wait, on_wait=waiting,
                         wait_line=args.wait_line, on_wait_line=waiting_line)
    except RunError as error:  # recorded as failed; exit as a shell would (127, 126)
        print(f"andon: error: {error}", file=sys.stderr)
        return error.exit_code
    except Interrupted as error:
        print(f"andon: error: {error}", file=sys.stderr)
        return error.exit_code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        world.close()
    done = outcome.deploy
    verdict = outcome.verdict
    if outcome.forced is not None:
        print(f"andon: deploy #{done.id} was forced through the stopped line ({outcome.forced.describe()})",
              file=sys.stderr)
    for refusal in outcome.overrode:
        if refusal.kind != "stopped":
            print(f"andon: deploy #{done.id} was forced through: {refusal.message}", file=sys.stderr)
    if verdict is not None and done.status == UNHEALTHY:
        auto = outcome.auto
        after = ""
        if auto is not None and auto.line is not None:
            after = "; the line is stopped" if auto.stopped else "; the line stays stopped"
            if auto.rollback is not None:
                requested = auto.rollback.rollback
                target = short(requested.target_sha) + (f" (deploy #{requested.target_deploy_id})"
                                                        if requested.target_deploy_id else "")
                after += (f" and rollback #{requested.id} to {target} runs at {when_seconds(requested.run_at)} UTC"
                          f" unless cancelled (andon rollback --cancel --env {done.env})")
            else:
                after += f" (andon resume --env {done.env})"
        if auto is not None and auto.error:
            after += f"; {auto.error}"
        print(f"andon: deploy #{done.id} of {done.short_sha} to {done.env}: unhealthy: {verdict.reason}{after}",
              file=sys.stderr)
        return EXIT_DEPLOY_UNHEALTHY
    after = f"; {verdict.reason}" if verdict is not None else ""
    print(f"andon: deploy #{done.id} of {done.short_sha} to {done.env}: {done.status}"
          f" (exit code {outcome.exit_code}{after})", file=sys.stderr)
    return outcome.exit_code




def cmd_record(args: argparse.Namespace) -> int:
    check_environment_name(args.env)
    at = _parse_time(args.at, "--at") if args.at else None
    world = _world(args)
    try:
        sha = _resolve_recorded(world, args.sha)
        who = clean_line(args.by).strip() if args.by else world.who()
        recorded = world.log.record(args.env, sha, args.status, who=who or "unknown", at=at,
                                    trigger=args.trigger, reason=clean_line(args.reason))
        later: list[Deploy] = []
        if at is not None and recorded.status == SUCCEEDED:
            # A deploy recorded in the past starts the range of the deploys after it:
            # work those out now too, while their commits are surely in the clone.
            later = [d for d in world.log.deploys(args.env) if (d.started_at, d.id) > (recorded.started_at, recorded.id)]
        world.keep_ranges([recorded, *later])
    finally:
        world.close()
    _out(f"recorded deploy #{recorded.id}: {recorded.short_sha} to {recorded.env}, {recorded.status}")
    return 0


def _parse_time(text: str, what: str) -> datetime:
    try:
        return from_iso(text)
    except (ValueError, TypeError):
        raise AndonError(f"{what}: {clean_line(str(text))!r} is not an ISO-8601 time (like 2026-11-20T14:03:00Z)") from None


def _resolve_recorded(world: World, revision: str) -> str:
    """A revision as a full SHA; a full SHA no longer in this clone is still accepted (history)."""
    found = world.history.resolve_many([revision])[revision]
    if found:
        return found
    if FULL_SHA.match(revision.lower()):
        print(f"andon: warning: {short(revision)} is not in this clone; recorded as given", file=sys.stderr)
        return revision.lower()
    raise AndonError(f"{clean_line(revision)!r} is not a commit in this clone (give a full SHA to record one that is gone)")


def cmd_import(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for number, raw in enumerate(sys.stdin.buffer, 1):
        line = raw.decode("utf-8", errors="replace").strip().lstrip("\ufeff")  # a BOM is not an error
        if not line:
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise AndonError(f"standard input line {number}: not JSON ({error.msg}); nothing imported") from None
        rows.append(_import_row(item, number))
    if not rows:
        raise AndonError("nothing to import: give JSON lines on standard input, one deploy each")
    world = _world(args)
    try:
        revisions = [row["sha"] for row in rows]
        found = world.history.resolve_many(revisions)
        gone = 0
        for row in rows:
            sha = found.get(row["sha"])
            if sha:
                row["sha"] = sha
            elif FULL_SHA.match(row["sha"].lower()):
                row["sha"] = row["sha"].lower()
                gone += 1
            else:
                raise AndonError(
                    f"standard input line {row['line']}: {clean_line(row['sha'])!r} is not a commit in this "
                    "clone (give full SHAs for commits that are gone); nothing imported"
                )
        result = world.log.import_many(rows, who=world.who())
        if result.imported:
            world.keep_ranges(world.log.deploys())  # only ranges not kept yet are computed
    finally:
        world.close()
    note = f" ({result.skipped} already in the log)" if result.skipped else ""
    _out(f"imported {result.imported} deploys{note}")
    if gone:
        print(f"andon: warning: {gone} deploys name commits that are not in this clone", file=sys.stderr)
    return 0


def _import_row(item: Any, number: int) -> dict[str, Any]:
    where = f"standard input line {number}"
    if not isinstance(item, dict):
        raise AndonError(f"{where}: expected a JSON object; nothing imported")

    def text(*keys: str, required: bool = True) -> str | None:
        for key in keys:
            value = item.get(key)
            if value is not None:
                if not isinstance(value, str) or not value.strip():
                    raise AndonError(f"{where}: {key} must be a non-empty string; nothing imported")
                return value.strip()
        if required:
            raise AndonError(f"{where}: missing {keys[0]}; nothing imported")
        return None

    env = text("environment", "env")
    assert env is not None
    try:
        check_environment_name(env)
    except AndonError as error:
        raise AndonError(f"{where}: {error}; nothing imported") from None
    status = text("status")
    if status not in FINAL_STATUSES:
        raise AndonError(f"{where}: status must be one of {', '.join(FINAL_STATUSES)}, not {clean_line(str(status))!r}; nothing imported")
    stamp = text("time", "at", "started_at")
    assert stamp is not None
    try:
        at = to_iso(from_iso(stamp))
    except ValueError:
        raise AndonError(f"{where}: {clean_line(stamp)!r} is not an ISO-8601 time; nothing imported") from None
    who = text("who", required=False) or ""
    return {"env": env, "sha": text("sha"), "status": status, "at": at, "who": clean_line(who),
            "reason": clean_line(text("reason", required=False) or ""), "line": number}


