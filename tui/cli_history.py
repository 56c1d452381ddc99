"""``andon status`` and ``andon log``: what is live and pending per environment, and the deploy history.

:func:`add_status_parser` and :func:`add_log_parser` add them to ``andon``'s parser (given
:func:`tui.cli.build_parser`'s ``command(name, help)`` factory; two functions so ``andon --help``
keeps its order); :func:`cmd_status` and :func:`cmd_log` run them (:data:`tui.cli.COMMANDS`).
Their reports are :mod:`backend.report`, imported when a command runs; the log is opened with
``reading_only`` (:func:`tui.cli._world`: a named log that does not exist is a mistake, not a new one).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime

from backend.config import check_environment_name
from backend.models import from_iso, when
from backend.text import short
from tui.cli import _dump, _out, _positive, _stdout_is_utf8, _world, when_seconds


def add_status_parser(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    status = command("status", "per environment: what is live and what is pending")
    status.add_argument("--json", action="store_true", help="one JSON document")


def add_log_parser(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    log = command("log", "deploy history with each deploy's commits")
    log.add_argument("--env", help="only this environment")
    log.add_argument("--limit", type=_positive, help="at most N deploys (newest first)")
    log.add_argument("--json", action="store_true", help="one JSON document")


def cmd_status(args: argparse.Namespace) -> int:
    from backend.deployer import reap
    from backend.gate import freeze_lines, span
    from backend.report import status

    world = _world(args)
    try:
        reap(world.log)  # deploys whose andon was killed: their orphaned commands stopped, rows finished
        report = status(world)
        lines = world.log.lines()
        now = world.clock()
        for env in report:
            state = lines.get(env["env"])
            env["line"] = ({"state": "stopped" if state.stopped else "running", "who": state.who,
                            "reason": state.reason, "since": state.since, "automatic": state.automatic,
                            "deploy_id": state.deploy_id,
                            "seconds": _seconds_since(state.since, now) if state.stopped else None}
                           if state is not None
                           else {"state": "running", "who": None, "reason": None, "since": None,
                                 "automatic": False, "deploy_id": None, "seconds": None})
            active = world.log.active_rollback(env["env"])
            env["rollback"] = None if active is None else {
                "id": active.id, "status": active.status, "who": active.who, "reason": active.reason,
                "requested_at": active.requested_at, "run_at": active.run_at, "target_sha": active.target_sha,
                "target_deploy_id": active.target_deploy_id, "reverts": active.reverts,
                "deploy_id": active.deploy_id}
    finally:
        world.close()
    _warn_damaged(list(dict.fromkeys(
        env[key]["damaged"] for env in report for key in ("live", "latest") if env[key] and env[key]["damaged"])))
    if args.json:
        _dump({"environments": report})
        return 0
    if not report:
        _out("no environments yet: configure some in andon.toml, or record a deploy")
    for env in report:
        live = env["live"]
        line = env["line"]
        ago = f" ({span(line['seconds'])} ago)" if line["seconds"] is not None else ""
        _out(f"{env['env']}:" + (f"  LINE STOPPED by {line['who'] or 'someone'} since {when(line['since'])} UTC{ago}"
                                 + (f": {line['reason']}" if line["reason"] else "")
                                 if line["state"] == "stopped" else ""))
        for text in freeze_lines(env["freeze"], now):
            _out(f"  {text}")
        rollback = env["rollback"]
        if rollback:
            target = short(rollback["target_sha"]) + (f" (deploy #{rollback['target_deploy_id']})"
                                                      if rollback["target_deploy_id"] else "")
            doing = (f"pending, runs at {when_seconds(rollback['run_at'])} UTC unless cancelled"
                     if rollback["status"] == "pending" else
                     f"running as deploy #{rollback['deploy_id']}" if rollback["deploy_id"] else "starting")
            _out(f"  rollback #{rollback['id']} to {target} by {rollback['who']}: {doing}")
        if live:
            _out(f"  live     {short(live['sha'])}  deployed {when(live['started_at'])} by {live['who']} (#{live['id']})")
        else:
            _out("  live     nothing deployed yet")
        latest = env["latest"]
        if latest and (not live or latest["id"] != live["id"]):
            _out(f"  latest   {short(latest['sha'])}  {latest['status']} {when(latest['started_at'])} by {latest['who']} (#{latest['id']})")
        if env["pending_error"]:
            _out(f"  pending  {env['pending_error'].removeprefix('pending commits ')}")
        else:
            _out(f"  pending  {env['pending_count']} commits on {env['branch']}")
            for commit in env["pending"][:5]:
                _out(f"           {short(commit['sha'])}  {commit['subject']}")
            if env["pending_count"] > 5:
                _out(f"           ... and {env['pending_count'] - 5} more")
    return 0


def _seconds_since(stamp: str, now: datetime) -> int | None:
    try:
        return max(0, round((now - from_iso(stamp)).total_seconds()))
    except (ValueError, TypeError):
        return None


def cmd_log(args: argparse.Namespace) -> int:
    from backend.deployer import reap
    from backend.report import iter_log_json, log_chunks, range_json

    if args.env:
        check_environment_name(args.env)
    world = _world(args)
    damaged: list[str] = []
    try:
        reap(world.log, args.env)  # deploys whose andon was killed: their orphaned commands stopped, rows finished
        if args.json:
            # Written as it is read: memory stays flat however long the history.
            utf8 = _stdout_is_utf8()
            pieces = []
            for piece in iter_log_json(world, args.env, args.limit, damaged=damaged):
                if utf8:
                    sys.stdout.write(piece)
                else:
                    pieces.append(piece)
            if utf8:
                sys.stdout.write("\n")
            else:
                _dump(json.loads("".join(pieces)))
        else:
            shown = False
            for chunk in log_chunks(world, args.env, args.limit):
                lines = []
                for deploy, found in chunk:
                    shown = True
                    if deploy.damaged:
                        damaged.append(deploy.damaged)
                    entry = range_json(found)
                    count = len(entry["commits"]) + entry["commits_truncated"]
                    what = entry["commits_error"] or f"{count} commit{'s' if count != 1 else ''}"
                    status = "damaged" if deploy.damaged else deploy.status
                    lines.append(f"#{deploy.id:<5} {when(deploy.started_at)}  {deploy.env:<12} {short(deploy.sha)}"
                                 f"  {status:<11} {deploy.who or '-':<16} {what}")
                    if deploy.reason:
                        lines.append(f"       reason: {deploy.reason}")
                    for commit in entry["commits"]:
                        lines.append(f"       {short(commit['sha'])}  {commit['author'][:20]:<20} {commit['subject']}")
                if lines:
                    sys.stdout.write("\n".join(lines) + "\n")
            if not shown:
                _out("no deploys yet" + (f" to {args.env}" if args.env else ""))
    finally:
        world.close()
    _warn_damaged(damaged)
    return 0


def _warn_damaged(reasons: list[str]) -> None:
    """Name each damaged row (another program wrote it) on stderr; the rest was shown."""
    for reason in reasons[:10]:
        print(f"andon: warning: {reason}", file=sys.stderr)
    if len(reasons) > 10:
        print(f"andon: warning: ... and {len(reasons) - 10} more damaged deploys", file=sys.stderr)


