"""The demo's migrations: trailers in its repository, what jobs and people reported, and one running now.

Eight migrations, in commits of the demo repository (:func:`trailers`, :func:`files`), put
through their steps (:func:`record_steps`) at times relative to the demo's ``now`` so that
together, in staging and production, they show every phase:

=====================  ===========================================  ==========================================
migration              staging                                      production
=====================  ===========================================  ==========================================
orders-amount-cents    cleanup_due, **critical** (finished 31d ago)  cleanup_due, **overdue**, snoozed, a note
search-index-v2        done, flagged: contract before finish         done
payments-ledger-split  aborted                                      aborted (after a rollback took it out)
feature-flags-v2       cleanup_due (config: no data; soaked), soon   cleanup_due, due soon; evidence: cleaned up
audit-log-archive      cleanup_due (infrastructure: soaked)          waived
sessions-redis         migrating, **stalled**                       expanded
users-email-split      cleanup_due (finished)                       migrating, **moving** (:class:`MovingMigration`)
invoices-pdf-store     expand_pending                               expand_pending
=====================  ===========================================  ==========================================

``users-email-split``'s expand went live in production with the newest deploy only, so
``!`` there (a rollback to the deploy before) is held: the dashboard asks first. A commit
carries a malformed trailer (a name in markup), shown literally as a problem.

The commit numbers are places in the demo's linear history of :data:`backend.demo.COMMITS`
commits; the deploys follow from the demo's seeded generator, so which deploy first
contains each expand is fixed. ``tests/test_migrations_tui.py`` checks the table above.

:class:`MovingMigration` is the migration job of the live demo: a thread that reports
``users-email-split``'s progress in production every :data:`TICK` seconds (a heartbeat
each time, the count moving), as ``andon migration progress`` would; when it reaches the
total it finishes the migration. Screenshots and tests (``service=False``) do not start it:
their progress ends at the fixed clock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

TICK = 1.5  # seconds between two of the moving migration's reports
MOVING = "users-email-split"
MOVING_TOTAL = 2_000_000  # rows
MOVING_RATE = 100.0  # rows a second: the count moves at every report, the share every 20 seconds
MOVING_SINCE = timedelta(hours=2, minutes=15)  # before now: started then, 40% done now


class Marked(NamedTuple):
    """A commit of the demo's history that carries a migration trailer (and the files it touches)."""

    subject: str
    trailer: str
    files: tuple[tuple[str, str | None], ...] = ()  # (path, content); None deletes the file


ORDERS_CODE = ("# orders: the amount in cents, and the legacy column still read by reports\n"
               "def total(order):\n    return order.amount_cents or order.amount_cents_legacy\n\n"
               "def legacy_total(order):\n    return order.amount_cents_legacy\n")
USERS_CODE = ("# users: the e-mail in two parts; email_legacy until the backfill is done\n"
              "def email(user):\n    return user.email_local + '@' + user.email_domain if user.email_local "
              "else user.email_legacy\n\ndef find(email):\n    return User.where(email_legacy=email)\n")

MARKED: dict[int, Marked] = {
    18: Marked("billing: orders.amount_cents beside amount_cents_legacy (expand)",
               "Migration: orders-amount-cents expand\nMigration-Kind: database\n"
               "Migration-Refs: amount_cents_legacy",
               (("src/billing/orders.py", ORDERS_CODE),
                ("src/api/invoices.py", "def invoice_total(order):\n    return order.amount_cents_legacy / 100\n"))),
    42: Marked("search: write to index v2 beside v1 (expand)",
               "Migration: search-index-v2 expand\nMigration-Refs: search_v1_",
               (("src/search/index.py", "INDEX = 'search_v2'\nOLD_INDEX = 'search_v1_products'\n"),)),
    118: Marked("search: drop index v1 (contract)", "Migration: search-index-v2 contract",
                (("src/search/index.py", "INDEX = 'search_v2'\n"),)),
    140: Marked("payments: the ledger in tables of its own (expand)",
                "Migration: payments-ledger-split expand\nMigration-Kind: database"),
    160: Marked("config: feature flags from flags v2 (expand)",
                "Migration: feature-flags-v2 expand\nMigration-Kind: config\nMigration-Refs: FLAGS_V1",
                (("src/ui/flags.py", "from flags import FLAGS_V1, FLAGS_V2\nFLAGS = FLAGS_V2 or FLAGS_V1\n"),)),
    176: Marked("infra: archive audit logs to the cold bucket (expand)",
                "Migration: audit-log-archive expand\nMigration-Kind: infrastructure"),
    201: Marked("auth: sessions in Redis beside the sessions table (expand)",
                "Migration: sessions-redis expand\nMigration-Refs: SESSIONS_TABLE",
                (("src/auth/sessions.py", "SESSIONS_TABLE = 'sessions'\nSTORE = 'redis'\n"),)),
    210: Marked("config: stop reading flags v1", "",
                (("src/ui/flags.py", "from flags import FLAGS_V2\nFLAGS = FLAGS_V2\n"),)),
    222: Marked("auth: users.email split into local part and domain (expand)",
                "Migration: users-email-split expand\nMigration-Kind: database\nMigration-Refs: email_legacy",
                (("src/auth/users.py", USERS_CODE),)),
    226: Marked("jobs: warm the cache on deploy", "Migration: [bold]cache warm-up[/bold] expand"),
    236: Marked("billing: invoice PDFs in object storage (expand)",
                "Migration: invoices-pdf-store expand\nMigration-Kind: third-party"),
}


def marked(number: int) -> Marked | None:
    """The migration commit at ``number`` of the demo's history, if it is one."""
    return MARKED.get(number)


class _Clock:
    """A clock the demo moves by hand: each step happens at its own time."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def record_steps(repo: Path, db: Path, now: datetime) -> None:
    """What jobs and people reported, each step at its time (relative to ``now``)."""
    from backend.migrations import apply
    from backend.world import resolve_world

    clock = _Clock(now)
    world = resolve_world(repo, db, None, clock=clock)
    day, hour = timedelta(days=1), timedelta(hours=1)

    def at(moment: datetime, action: str, name: str, env: str, who: str, **fields: object) -> None:
        clock.at = moment
        apply(world, action, name, env, who=who, **fields)  # type: ignore[arg-type]

    def run(name: str, env: str, start: datetime, end: datetime, done: int, total: int, who: str = "migrate-job",
            reports: int = 12) -> None:
        """Progress from 0 at ``start`` to ``done`` at ``end``, evenly."""
        for step in range(reports + 1):
            share = step / reports
            at(start + (end - start) * share, "progress", name, env, who, done=int(done * share), total=total)

    try:
        # orders-amount-cents: moved long ago in both; the cleanup is critical in staging, overdue in production.
        run("orders-amount-cents", "staging", now - 38 * day, now - 32 * day, 380_000, 380_000)
        at(now - 31 * day, "finish", "orders-amount-cents", "staging", "Ken Okafor")
        run("orders-amount-cents", "production", now - 37 * day, now - 24 * day, 9_400_000, 9_400_000)
        at(now - 23 * day, "finish", "orders-amount-cents", "production", "Ken Okafor")
        at(now - 2 * day, "note", "orders-amount-cents", "production", "Ken Okafor",
           text="contract PR #412 is ready; it waits for the reporting export to read amount_cents")
        at(now - 1 * day, "snooze", "orders-amount-cents", "production", "Ken Okafor",
           until=now + 3 * day, reason="the reporting export moves to amount_cents on Monday")
        # search-index-v2: staging never finished before its contract went live (flagged); production did.
        run("search-index-v2", "staging", now - 33 * day, now - 31 * day, 51_000, 120_000, reports=6)
        run("search-index-v2", "production", now - 31 * day, now - 27 * day, 1_180_000, 1_180_000)
        at(now - 26 * day, "finish", "search-index-v2", "production", "Linus Ng")
        # payments-ledger-split: given up in both (a rollback took the expand out of production once).
        for env in ("staging", "production"):
            at(now - 13 * day, "abort", "payments-ledger-split", env, "Margaret Hamilton",
               reason="the new payments provider keeps its own ledger")
        # audit-log-archive: nothing of ours to clean up in production.
        at(now - 8 * day, "waive", "audit-log-archive", "production", "Grace Hopper",
           reason="the platform team owns the archive bucket and its retention")
        # sessions-redis: the staging backfill stopped reporting (stalled); production waits to start.
        run("sessions-redis", "staging", now - 4 * day, now - 29 * hour, 310_000, 880_000, reports=8)
        at(now - 1 * day, "note", "sessions-redis", "production", "Ada Lovelace",
           text="starts after the staging run is understood")
        # users-email-split: done moving in staging; running in production right now.
        run("users-email-split", "staging", now - 3 * day, now - 45 * hour, 64_000, 64_000, reports=6)
        at(now - 44 * hour, "finish", "users-email-split", "staging", "migrate-job")
        since = now - MOVING_SINCE
        for step in range(28):  # every five minutes until now
            moment = since + (now - since) * step / 27
            at(moment, "progress", MOVING, "production", "migrate-job",
               done=moving_done(moment, since), total=MOVING_TOTAL)
    finally:
        world.close()


def moving_done(moment: datetime, since: datetime) -> int:
    """The moving migration's count at ``moment``: :data:`MOVING_RATE` rows a second since ``since``."""
    return min(MOVING_TOTAL, int(MOVING_RATE * max(0.0, (moment - since).total_seconds())))


class MovingMigration:
    """``users-email-split`` in production, moving while you watch: a daemon thread of the demo's process."""

    def __init__(self, repo: Path, db: Path, since: datetime, clock: Callable[[], datetime]) -> None:
        self.repo, self.db, self.since, self.clock = repo, db, since, clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="andon-demo-migration", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from backend import AndonError
        from backend.migrations import apply
        from backend.world import resolve_world

        world = resolve_world(self.repo, self.db, None, clock=self.clock)  # its own connection
        try:
            while not self._stop.wait(TICK) and self.db.exists():  # the demo's world goes when it quits
                done = moving_done(self.clock(), self.since)
                try:
                    apply(world, "progress", MOVING, "production", who="migrate-job", done=done, total=MOVING_TOTAL)
                    if done >= MOVING_TOTAL:
                        apply(world, "finish", MOVING, "production", who="migrate-job")
                        return
                except AndonError:
                    # Refused (a rollback took the expand out, someone aborted it) or the log is
                    # busy: a real job would log it and try again at its next report.
                    continue
        finally:
            world.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
