"""``andon line --env E [--check] [--sha S] [--json]``: the line seen from outside.

For CI systems and other tools to gate on (:func:`backend.gate.check`). With ``--check`` the
exit code says whether a deploy of the environment may go ahead now: 0 yes; otherwise the
first of 5 (the line is stopped), 12 (a freeze is in force) and 11 (``--sha`` contains commits
held after a rollback) that applies. ``--json`` prints every reason, with since/opens/commits.
Without ``--check`` the same is printed for people and the exit code is 0 (1 for an unknown
environment, 2 for a usage mistake).

Without ``--sha`` this reads one row of the deploy log and the configured freezes: no git
walk, and no GitPython, sqlite-utils or httpx imported (``python -X importtime``), so it
answers in a fraction of ``andon status``'s time (benchmarks/line_check.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from backend.config import check_environment_name
from tui.cli import _dump, _known_environment, _out, _world


def add_parser(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    line = command("line", "whether deploys to an environment may go ahead, and why not (--check: as an exit code)")
    line.add_argument("--env", required=True, help="the environment")
    line.add_argument("--check", action="store_true",
                      help="exit 0 when a deploy may go ahead, else 5 (line stopped), 12 (frozen) or 11 (held "
                           "commits in --sha), the first that applies")
    line.add_argument("--sha", metavar="REVISION",
                      help="also refuse when this revision contains commits held after a rollback (reads git)")
    line.add_argument("--json", action="store_true", help="one JSON document listing every reason")


def cmd_line(args: argparse.Namespace) -> int:
    from backend.gate import check, freeze_json, freeze_lines

    check_environment_name(args.env)
    world = _world(args)
    world.reading_only = True  # a named log that does not exist is a mistake, not a new log
    try:
        _known_environment(world, args.env)
        sha = world.history.resolve(args.sha) if args.sha is not None else None
        now = world.clock()
        gate = check(world, args.env, sha, now)
        freeze = freeze_json(world, args.env, now) if not args.check else None
    finally:
        world.close()
    if args.json:
        _dump(gate.to_json())
    elif args.check:
        _out(f"{args.env}: deploys may go ahead" if gate.ok else
             "; ".join(refusal.message for refusal in gate.refusals))
    else:
        if gate.ok:
            _out(f"{args.env}: the line runs; deploys may go ahead" + (f" (nothing held in {sha[:7]})" if sha else ""))
        for refusal in gate.refusals:
            _out(refusal.message)
        assert freeze is not None
        for line in freeze_lines({"next": freeze["next"]}, now):
            _out(f"  {line}")
    return gate.code if args.check else 0
