"""The deploy log: one SQLite file shared by every dashboard and CI writer on a host.

:mod:`backend.store.core` owns the file, the schema versions, the write transaction,
events and change detection; each concept has its own module with its tables and
methods (:mod:`~backend.store.deploys`, :mod:`~backend.store.ranges`,
:mod:`~backend.store.leases`, :mod:`~backend.store.health`, :mod:`~backend.store.outbox`,
:mod:`~backend.store.output`, :mod:`~backend.store.migrations`), mixed into
:class:`DeployLog`. A new concept is a new module, one base class below and its
schema steps appended to :data:`MIGRATIONS`.
"""

from __future__ import annotations

from backend.store import deploys, health, held, leases, line, migrations, outbox, output, ranges, reminders
from backend.store.core import EVENTS_SCHEMA, Changes, LogCore, Migration, StoreError, create_meta
from backend.store.deploys import DeploysMixin, ImportResult
from backend.store.health import HealthMixin
from backend.store.held import HeldMixin
from backend.store.leases import Lease, LeasesMixin, holder_id
from backend.store.line import LineMixin
from backend.store.migrations import MigrationsMixin
from backend.store.outbox import OutboxItem, OutboxMixin
from backend.store.output import OutputMixin, Streamed
from backend.store.ranges import RangesMixin
from backend.store.reminders import RemindersMixin

# Applied in this order, once each, never edited; append only. ``breaking=True`` for a
# step older andons must not write past (see core's docstring).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(deploys.SCHEMA + EVENTS_SCHEMA),  # 1: deploys and events
    Migration(ranges.SCHEMA),  # 2: release ranges, computed once
    Migration(create=create_meta),  # 3: the compatibility rule
    Migration(deploys.SUCCEEDED_INDEX),  # 4: previous SHAs worked out when read
    Migration(leases.SCHEMA),  # 5: leases (one prober per environment), additive
    Migration(health.SCHEMA),  # 6: health samples and each environment's state, additive
    Migration(line.SCHEMA),  # the line, rollbacks, deploys' process groups (issue 8), additive
    Migration(outbox.SCHEMA),  # the chat outbox, written with the events it announces (issue 8), additive
    Migration(output.SCHEMA),  # running deploys' output as it comes (issue 8), additive
    Migration(line.STARTS),  # processes' start times beside their numbers (reused pids told apart), additive
    Migration(migrations.SCHEMA),  # migrations' reports, added migrations, the evaluation's cache (issue 9), additive
    Migration(held.SCHEMA),  # commits held after a rollback, releases kept (issue 10), additive
    Migration(reminders.SCHEMA),  # reminders of a line stopped for long, once per interval (issue 10), additive
)
SCHEMA_VERSION = len(MIGRATIONS)


class DeployLog(LineMixin, DeploysMixin, RangesMixin, LeasesMixin, HealthMixin, OutboxMixin, OutputMixin,
                MigrationsMixin, HeldMixin, RemindersMixin, LogCore):
    """The deploy log at a path: open with :meth:`DeployLog.open`."""

    MIGRATIONS = MIGRATIONS


__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Changes", "DeployLog", "ImportResult", "Lease", "OutboxItem", "StoreError",
           "Streamed", "holder_id"]
