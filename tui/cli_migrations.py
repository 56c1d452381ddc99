"""``andon migrations`` (the backlog) and ``andon migration STEP NAME`` (what jobs and people report).

:func:`add_parsers` adds both to ``andon``'s parser (given :func:`tui.cli.build_parser`'s
``command(name, help)`` factory); :func:`cmd_migrations` and :func:`cmd_migration` run them.
The backlog itself is :mod:`backend.migrations`: these only parse, check and print.

Migration jobs call ``andon migration progress`` every few seconds, so this module imports
nothing heavy at the top; :mod:`backend.migrations` is imported when a command runs.

**Arguments** are checked before the log is opened, each mistake one line with exit 2: a
migration name that breaks the rule, a count that is not a whole number of at least 0 (and at
most 2**63-1, what the log holds), a ``--total`` below ``--done``, an ``--until`` that is not a
time or is not in the future, an empty ``--reason`` or note, ``--read-only`` with a step.
``--until`` takes an ISO date
(``2026-12-01``: midnight UTC), an ISO time (``2026-12-01T09:00``, UTC unless it has a zone)
or a span from now (``36h``, ``3d``, ``2w``). An unknown environment or migration is exit 1, a
step the migration cannot take now (:class:`~backend.migrations.StepRefused`) exit 10, naming
the steps it can take.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from backend.config import MIGRATION_KINDS, check_environment_name
from backend.models import from_iso, to_iso, utc_now, when
from backend.text import clean_line, short
from tui.cli import Parser, UsageError, _common, _dump, _out, _world

if TYPE_CHECKING:
    from backend.markers import MarkerProblem
    from backend.migrations import Status

SPAN = re.compile(r"([0-9]{1,5})\s*([hdw])\Z")  # --until 36h, 3d, 2w
SPAN_UNITS = {"h": "hours", "d": "days", "w": "weeks"}
NAME_WIDTH = 40  # characters of a name in the table (longer ones are cut with …)


def add_parsers(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    backlog = command("migrations", "every migration in every environment: phase, progress, due date, next step")
    backlog.add_argument("--env", help="only this environment")
    backlog.add_argument("--json", action="store_true", help="one JSON document")

    migration = command("migration", "report a migration's step: progress, finish, note, snooze, waive, abort, add "
                                     "(exit 10 when the migration cannot take it now)")
    steps = migration.add_subparsers(dest="step", metavar="STEP", required=True, parser_class=_StepParser)

    def step(name: str, help: str, *, env: bool = True) -> argparse.ArgumentParser:
        sub = steps.add_parser(name, help=help, description=help)
        sub.add_argument("name", type=_name, metavar="NAME", help="the migration (as in its Migration: trailer)")
        if env:
            sub.add_argument("--env", required=True, help="the environment")
        _common(sub, argparse.SUPPRESS)  # --repo, --db, --config after the step too
        return sub

    progress = step("progress", "report how far the migration is (also a heartbeat: a job reports every few minutes)")
    progress.add_argument("--done", type=_count, required=True, metavar="N", help="units moved so far")
    progress.add_argument("--total", type=_count, metavar="M", help="units to move in all")
    step("finish", "the migration has moved everything: the cleanup (the contract) is due")
    note = step("note", "leave a note on the migration (shown in the backlog)")
    note.add_argument("text", nargs="?", metavar="TEXT", help="the note")
    note.add_argument("--text", dest="text_option", metavar="TEXT", help="the note (instead of TEXT)")
    snooze = step("snooze", "put off the reminders (not the due date) until a time")
    snooze.add_argument("--until", type=_until, required=True, metavar="WHEN",
                        help="an ISO date or time (UTC unless it has a zone), or a span from now: 36h, 3d, 2w")
    snooze.add_argument("--reason", required=True, help="why (shown to everyone)")
    waive = step("waive", "no cleanup will be done, on purpose (ends the migration in the environment)")
    waive.add_argument("--reason", required=True, help="why (shown to everyone)")
    abort = step("abort", "the migration was abandoned (ends it in the environment)")
    abort.add_argument("--reason", required=True, help="why (shown to everyone)")
    add = step("add", "track a migration that has no Migration: trailer (live from now)", env=False)
    add.add_argument("--kind", choices=MIGRATION_KINDS, help="what it changes (default: database)")
    add.add_argument("--env", action="append", metavar="ENV",
                     help="where it is live (default: every configured environment)")
    add.add_argument("--refs", nargs="+", action="extend", default=[], metavar="PATTERN",
                     help="what the old-shape code looks like (git grep patterns, for the evidence)")


class _StepParser(Parser):
    """A step's parser: ``note NAME --env E TEXT`` takes TEXT after the options too.

    (argparse fills an optional positional in the same pass as the one before it, so a TEXT
    after ``--env`` would come back unrecognised.)
    """

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        found, extras = super().parse_known_args(args, namespace)
        if getattr(found, "text", "") is None and len(extras) == 1 and not extras[0].startswith("-"):
            found.text, extras = extras[0], []
        return found, extras


def _name(text: str) -> str:
    from backend.markers import MIGRATION_NAME

    if not MIGRATION_NAME.match(text):
        raise argparse.ArgumentTypeError(f"{clean_line(text)[:80]!r} is not a migration name (letters, digits, '.', "
                                         "'_' and '-', starting with a letter or digit, at most 80 characters)")
    return text


MAX_COUNT = 2**63 - 1  # backend.migration_rules.MAX_COUNT (not imported: nothing heavy at the top)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {clean_line(text)[:40]!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    if value > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_COUNT} (what the deploy log holds), "
                                         f"not {clean_line(text)[:40]}")
    return value


def _until(text: str) -> datetime:
    """``--until``: an ISO date or time, or a span from now; in the future."""
    now = utc_now()
    span = SPAN.match(text.strip().lower())
    if span:
        moment = now + timedelta(**{SPAN_UNITS[span.group(2)]: int(span.group(1))})
    else:
        try:
            moment = from_iso(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(
                f"{clean_line(text)[:40]!r} is not a time: give an ISO date or time (2026-12-01, 2026-12-01T09:00Z) "
                "or a span from now (36h, 3d, 2w)") from None
    if moment <= now:
        raise argparse.ArgumentTypeError(f"{when(to_iso(moment))} UTC is not in the future")
    return moment


def _reason(args: argparse.Namespace) -> str:
    reason = clean_line(args.reason).strip()
    if not reason:
        raise UsageError(f"--reason must say why (migration {args.step})")
    return reason


# -- andon migration STEP NAME ---------------------------------------------------------------


def cmd_migration(args: argparse.Namespace) -> int:
    if args.read_only:
        raise UsageError(f"--read-only: andon migration {args.step} writes to the log")
    values: dict[str, Any] = {}
    env = args.env
    if args.step == "add":
        envs = list(dict.fromkeys(args.env or ()))
        for name in envs:
            check_environment_name(name)
        if len(envs) > 1:
            raise UsageError("migration add takes one --env (or none: every configured environment)")
        env = envs[0] if envs else None
        values.update(kind=args.kind, refs=args.refs)
    else:
        check_environment_name(env)
    if args.step == "progress":
        if args.total is not None and args.total < args.done:
            raise UsageError(f"--total {args.total} is less than --done {args.done}")
        values.update(done=args.done, total=args.total)
    elif args.step == "note":
        if args.text is not None and args.text_option is not None:
            raise UsageError("give the note once: as TEXT or as --text, not both")
        text = clean_line(args.text if args.text is not None else args.text_option or "").strip()
        if not text:
            raise UsageError("the note is empty: andon migration note NAME --env E TEXT")
        values.update(text=text)
    elif args.step == "snooze":
        values.update(until=args.until, reason=_reason(args))
    elif args.step in ("waive", "abort"):
        values.update(reason=_reason(args))
    from backend.migrations import apply

    world = _world(args)
    try:
        said = apply(world, args.step, args.name, env, who=world.who(), **values)
    finally:
        world.close()
    _out(clean_line(said))
    return 0


# -- andon migrations ----------------------------------------------------------------------------


def cmd_migrations(args: argparse.Namespace) -> int:
    from backend.migrations import evaluate

    if args.env:
        check_environment_name(args.env)
    world = _world(args)
    try:
        backlog = evaluate(world, env=args.env)
    finally:
        world.close()
    if args.json:
        _dump({"migrations": [status.to_json() for status in backlog.statuses],
               "problems": [problem_json(problem) for problem in backlog.problems], "error": backlog.error})
    else:
        show_backlog(backlog.statuses, backlog.problems, args.env)
    if backlog.error:
        print(f"andon: warning: {clean_line(backlog.error)}", file=sys.stderr)
    return 0


def problem_json(problem: MarkerProblem) -> dict[str, str]:
    return {"sha": problem.sha, "text": clean_line(problem.text), "problem": clean_line(problem.problem)}


def show_backlog(statuses: Sequence[Status], problems: Sequence[MarkerProblem], env: str | None) -> None:
    """The backlog for people: an aligned table, most urgent first, each row's warnings under it."""
    if not statuses:
        _out("no migrations yet" + (f" in {env}" if env else "") + ": mark one in a commit message "
             "('Migration: NAME expand'), or andon migration add NAME")
    else:
        rows = [("SEVERITY", "NAME", "ENV", "PHASE", "PROGRESS", "DUE", "NEXT")]
        rows += [(status.severity, _cut(clean_line(status.name), NAME_WIDTH), clean_line(status.env),
                  status.phase + (", stalled" if status.stalled else ""), progress_text(status),
                  _day(status.due), clean_line(status.next_step)) for status in statuses]
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
        lines = []
        for number, row in enumerate(rows):
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
                         + "  " + row[-1])
            if number:
                lines += [f"    {detail}" for detail in details(statuses[number - 1])]
        sys.stdout.write("\n".join(line.rstrip() for line in lines) + "\n")
    if problems:
        _out(f"{len(problems)} malformed Migration trailer{'s' if len(problems) != 1 else ''} (skipped; fix the "
             "commit message, or ignore it):")
        for problem in problems:
            _out(f"  {short(problem.sha)}  {clean_line(problem.text)!r}: {clean_line(problem.problem)}")


FLAG_TEXTS = {
    "contract_before_finish": "contract before finish: the old code was removed while data may still move",
    "expand_rolled_back": "expand rolled back: progress was reported, then a rollback took the expand out",
}


def details(status: Status) -> list[str]:
    """The lines under a row: its warnings first, then what people said."""
    lines = [f"! {FLAG_TEXTS.get(flag, clean_line(flag))}" for flag in status.flags]
    if status.stalled and status.progress is not None and status.progress.at is not None:
        lines.append(f"! stalled: no report since {when(to_iso(status.progress.at))} UTC")
    if status.snoozed_until is not None:
        lines.append(f"snoozed until {when(to_iso(status.snoozed_until))} UTC ({status.snoozes} "
                     f"time{'s' if status.snoozes != 1 else ''})")
    elif status.snoozes:
        lines.append(f"snoozed {status.snoozes} time{'s' if status.snoozes != 1 else ''}")
    if status.reason:
        lines.append(f"{status.phase}: {clean_line(status.reason)}")
    if status.note:
        lines.append(f"note: {clean_line(status.note)}")
    if status.evidence is not None:
        lines.append(clean_line(status.evidence.text))
    return lines


def progress_text(status: Status) -> str:
    """``1,200/5,000 24% 300/h eta 2026-11-21 14:00``, or ``-``."""
    progress = status.progress
    if progress is None:
        return "-"
    text = f"{progress.done:,}"
    if progress.total is not None:
        text += f"/{progress.total:,}"
        if progress.total:
            text += f" {100 * progress.done // progress.total}%"
    if progress.rate is not None:
        text += f" {progress.rate:,.0f}/h"
    if progress.eta is not None:
        text += f" eta {when(to_iso(progress.eta))}"
    return text


def _day(moment: datetime | None) -> str:
    return when(to_iso(moment))[:10] if moment is not None else "-"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"
