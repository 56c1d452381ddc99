"""``andon notify``: deliver the chat outbox now, and say what went, what waits and what is dead.

:func:`add_parser` adds the command to ``andon``'s parser (given :func:`tui.cli.build_parser`'s
``command(name, help)`` factory) and :func:`cmd_notify` runs it. Exit 0 when no message is dead,
:data:`EXIT_DEAD_LETTERS` when any is (a receiver refused it for good: fix the receiver, then
``--retry-dead``, or ``--dismiss-dead`` to put them aside).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from backend.store.outbox import OutboxItem

EXIT_DEAD_LETTERS = 8  # andon notify: a message is dead (a receiver refused it for good)


def add_parser(command: Callable[[str, str], argparse.ArgumentParser]) -> argparse.ArgumentParser:
    notify = command("notify", "deliver the chat messages waiting in the log now, and report what waits "
                               f"(exit {EXIT_DEAD_LETTERS} when any is dead)")
    notify.add_argument("--json", action="store_true", help="one JSON document")
    dead = notify.add_mutually_exclusive_group()
    dead.add_argument("--retry-dead", action="store_true",
                      help="send the dead messages again first (after fixing the receiver)")
    dead.add_argument("--dismiss-dead", action="store_true",
                      help="put the dead messages aside first (kept in the log, no longer reported)")
    return notify


def cmd_notify(args: argparse.Namespace) -> int:
    from backend.notify import deliver_pending
    from tui.cli import _dump, _out, _world

    world = _world(args)
    world.reading_only = True  # a mistyped --db must not report an empty outbox (and leave a file)
    try:
        log = world.log
        if args.retry_dead:
            count = log.retry_dead(who=world.who())
            print(f"andon: {_messages(count)} sent again", file=sys.stderr)
        elif args.dismiss_dead:
            count = log.dismiss_dead(who=world.who())
            print(f"andon: {_messages(count)} put aside", file=sys.stderr)
        report = deliver_pending(world)
        configured = bool(world.config.notifiers)
    finally:
        world.close()
    if args.json:
        _dump(report.to_json())
    else:
        if not (report.delivered or report.waiting or report.dead):
            _out("nothing to deliver" + ("" if configured else " (no [[notify]] receivers configured)"))
        for item in report.delivered:
            _out(f"delivered  {_row(item)}  ({_tries(item.attempts)})")
        for waiting in report.waiting:
            later = f"; next try {_time(waiting.next_try)}" if waiting.next_try else ""
            _out(f"waiting    {_row(waiting.item)}  {waiting.why}{later}")
        for item in report.dead:
            _out(f"dead       {_row(item)}  {item.error} ({_tries(item.attempts)}, {_time(item.done_at)})")
    if report.dead:
        print(f"andon: {_messages(len(report.dead))} {'is' if len(report.dead) == 1 else 'are'} dead: fix the receiver, then andon notify --retry-dead "
              "(or --dismiss-dead)", file=sys.stderr)
        return EXIT_DEAD_LETTERS
    return 0


def _row(item: OutboxItem) -> str:
    return f"#{item.id:<4} {item.kind or '?':<17} {item.env or '-':<12} → {item.receiver}"


def _tries(count: int) -> str:
    return f"{count} {'try' if count == 1 else 'tries'}"


def _messages(count: int) -> str:
    return f"{count} message{'s' if count != 1 else ''}"


def _time(stamp: str | None) -> str:
    from backend.chat import when

    return when(stamp) if stamp else "-"
