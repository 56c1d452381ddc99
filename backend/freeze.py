"""Scheduled freezes: windows in which an environment takes no deploys (``[[environments.NAME.freeze]]``).

Three forms, each with a ``reason`` and a ``timezone`` (IANA name, default UTC):

* **cron**: ``cron = "0 18 * * fri"`` (five fields, when each window begins, in the time zone)
  and ``duration = "62h"`` (how long it lasts);
* **weekly**: ``days = ["sat", "sun"]``, ``start = "00:00"`` and ``duration = "24h"`` — the
  same thing written for people (it becomes ``0 0 * * sat,sun``);
* **one-off**: ``from`` and ``until``: TOML dates or date-times (a date-time without an offset is
  read in the time zone). A date ``from`` starts at that day's midnight; a date ``until`` ends at
  the end of that day (``from = 2026-12-24``, ``until = 2026-12-26``: three whole days).

A window's duration is on the local clock of its time zone, not elapsed time: a window that
begins on Friday at 18:00 and lasts "62h" ends on Monday at 08:00 local whatever summer time
does in between (61 elapsed hours in spring, 63 in autumn), and ``days = ["sat", "sun"]``,
``start = "00:00"``, ``duration = "24h"`` covers each whole day, the 23- and 25-hour ones too:
that is what people mean by a weekend or a night. The end is the start's local clock time plus
the duration, read in the time zone: an end that falls in the hour skipped in spring is taken
as the later instant (02:30 that does not exist is read as 03:30 summer time, as the clock
shows it), one in the hour repeated in autumn as the earlier (the first 02:30). Cron times are
matched on the local clock by cronsim, which handles the skipped and repeated hour too.
Windows that overlap or touch chain together, both ways: a freeze in force is in force since
the first of them began, and the line opens when the last of them ends.

cronsim (healthchecks.io's cron evaluator: small, pure Python, correct across DST changes) and
zoneinfo are imported only when a freeze is configured.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from backend.config import ConfigError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CRON_DAYS = {"mon": "1", "tue": "2", "wed": "3", "thu": "4", "fri": "5", "sat": "6", "sun": "0"}
_KEYS = ("cron", "days", "duration", "from", "reason", "start", "timezone", "until")
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?\Z")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)\Z")
MAX_DURATION = timedelta(days=366)
REASON_LIMIT = 200
# How far ahead (and back) a cron schedule is searched for windows: a schedule that fires
# less often than this (a yearly freeze: "0 0 24 12 *") still works; windows chain at most
# CHAIN_LIMIT times (a schedule whose windows overlap for ever never opens: said so).
CHAIN_LIMIT = 400


class Freeze(NamedTuple):
    """One configured freeze (times aware; a cron freeze has ``cron`` and ``duration``)."""

    reason: str
    timezone: str = "UTC"
    cron: str | None = None  # when each window begins, on the local clock of ``timezone``
    duration: float = 0.0  # seconds each cron window lasts, on the local clock (see above)
    start: datetime | None = None  # a one-off window: [start, end)
    end: datetime | None = None

    def windows_around(self, moment: datetime) -> Iterable[tuple[datetime, datetime]]:
        """Windows that may contain ``moment`` or follow it, in order of their start (UTC)."""
        if self.cron is None:
            assert self.start is not None and self.end is not None
            yield self.start, self.end
            return
        from cronsim import CronSim

        zone = _zone(self.timezone)
        length = timedelta(seconds=self.duration)
        # The latest start whose window ends at or before ``moment`` cannot reach it; start from
        # there (windows that end before it are not missed: ends follow starts), then go forward.
        local = moment.astimezone(zone)
        back = CronSim(self.cron, local, reverse=True)
        first: datetime | None = None
        for _ in range(CHAIN_LIMIT):
            began = next(back, None)
            if began is None:
                break
            first = began
            if _local_end(began, length, zone) <= moment:
                break
        forward = CronSim(self.cron, (first or local) - timedelta(seconds=1))
        for _ in range(CHAIN_LIMIT):
            began = next(forward, None)
            if began is None:
                return
            yield began.astimezone(UTC), _local_end(began, length, zone)


def _local_end(began: datetime, length: timedelta, zone: tzinfo) -> datetime:
    """When a window that began at ``began`` (aware, in ``zone``) ends: on the local clock (UTC).

    The local clock time of the start plus ``length``, read in ``zone`` with fold=0: in the hour
    skipped in spring that is the later instant (the offset before the change: 02:30 is 03:30
    summer time), in the hour repeated in autumn the earlier (the first 02:30).
    """
    wall = began.replace(tzinfo=None) + length
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


class Window(NamedTuple):
    """A freeze in force: why, since when and when the line opens again (UTC)."""

    reason: str
    start: datetime
    opens: datetime | None  # None: the schedule never leaves a gap (within CHAIN_LIMIT windows)


def frozen(freezes: Sequence[Freeze], now: datetime) -> Window | None:
    """The freeze in force at ``now``, or None.

    Chained with every window that overlaps or touches it, both ways: ``start`` is when the
    first of them began (on Sunday, a Saturday-and-Sunday freeze is in force since Saturday),
    ``opens`` when the last of them ends. The reason is that of the window that contains ``now``
    and began first.
    """
    now = now.astimezone(UTC)
    current: Window | None = None
    for freeze in freezes:
        for start, end in freeze.windows_around(now):
            if start > now:
                break
            if end > now and (current is None or start < current.start):
                current = Window(freeze.reason, start, end)
    if current is None:
        return None
    return current._replace(start=_chain_back(freezes, current.start), opens=_chain(freezes, current.opens))


def next_freeze(freezes: Sequence[Freeze], now: datetime) -> Window | None:
    """The next freeze to begin after ``now`` (with when it opens again), or None."""
    now = now.astimezone(UTC)
    best: Window | None = None
    for freeze in freezes:
        for start, end in freeze.windows_around(now):
            if start > now and end > start:
                if best is None or start < best.start:
                    best = Window(freeze.reason, start, end)
                break
    if best is None:
        return None
    return best._replace(opens=_chain(freezes, best.opens))


def _chain(freezes: Sequence[Freeze], opens: datetime | None) -> datetime | None:
    """Where a window ending at ``opens`` really ends: windows that begin before it extend it."""
    for _ in range(CHAIN_LIMIT):
        if opens is None:
            return None
        later = opens
        for freeze in freezes:
            for start, end in freeze.windows_around(opens - timedelta(microseconds=1)):
                if start > opens:
                    break
                if end > later:
                    later = end
        if later == opens:
            return opens
        opens = later
    return None


def _chain_back(freezes: Sequence[Freeze], since: datetime) -> datetime:
    """Where a window that began at ``since`` really began: windows that end at or after it extend it.

    At most CHAIN_LIMIT steps back (a schedule whose windows overlap for ever: the earliest
    start found by then).
    """
    for _ in range(CHAIN_LIMIT):
        earlier = since
        for freeze in freezes:
            for start, end in freeze.windows_around(since):
                if start >= since:
                    break
                if end >= since and start < earlier:
                    earlier = start
        if earlier == since:
            return since
        since = earlier
    return since


def _zone(name: str) -> tzinfo:
    if name == "UTC":
        return UTC
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


# -- reading the configuration ------------------------------------------------------------


def parse_freezes(raw: Any, key: str, fail: Callable[[str, str], ConfigError],
                  describe: Callable[[Any], str]) -> tuple[Freeze, ...]:
    """``[[environments.NAME.freeze]]``: a list of tables, each one of the three forms."""
    if not isinstance(raw, list):
        raise fail(key, f"must be a list of freezes ([[{key}]]), not {describe(raw)}")
    return tuple(_parse_one(entry, f"{key}[{index}]", fail, describe) for index, entry in enumerate(raw))


def _parse_one(raw: Any, key: str, fail: Callable[[str, str], ConfigError],
               describe: Callable[[Any], str]) -> Freeze:
    if not isinstance(raw, dict):
        raise fail(key, "must be a table with a reason and a schedule (cron, days or from/until)")
    for sub in raw:
        if sub not in _KEYS:
            raise fail(f"{key}.{sub}", f"is not a known key (known: {', '.join(_KEYS)})")
    reason = raw.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise fail(f"{key}.reason", f"must say why deploys stop (a string), not {describe(reason)}")
    from backend.text import clean_line

    reason = clean_line(reason.strip())[:REASON_LIMIT]
    zone_name = raw.get("timezone", "UTC")
    if not isinstance(zone_name, str) or not zone_name:
        raise fail(f"{key}.timezone", f'must be a time zone name like "Europe/Berlin", not {describe(zone_name)}')
    try:
        zone = _zone(zone_name)
    except (ValueError, OSError, LookupError):  # ZoneInfoNotFoundError is a KeyError
        raise fail(f"{key}.timezone", f'is not a time zone this machine knows: {clean_line(zone_name)[:60]!r} '
                                      '(an IANA name like "Europe/Berlin" or "UTC")') from None
    forms = [form for form, keys in (("cron", ("cron",)), ("weekly", ("days", "start")),
                                     ("one-off", ("from", "until"))) if any(k in raw for k in keys)]
    if len(forms) != 1:
        raise fail(key, "needs exactly one schedule: cron with duration, days with start and duration, "
                        f"or from with until (found {' and '.join(forms) or 'none'})")
    if forms[0] == "one-off":
        if "duration" in raw:
            raise fail(f"{key}.duration", "is for cron and weekly freezes; a one-off freeze has from and until")
        start = _moment(raw.get("from"), f"{key}.from", zone, fail, describe, end_of_day=False)
        end = _moment(raw.get("until"), f"{key}.until", zone, fail, describe, end_of_day=True)
        if end <= start:
            raise fail(f"{key}.until", "must be after from")
        return Freeze(reason, zone_name, start=start, end=end)
    duration = _duration(raw.get("duration"), f"{key}.duration", fail, describe)
    if forms[0] == "weekly":
        cron = _weekly(raw, key, fail, describe)
    else:
        cron = raw["cron"]
        if not isinstance(cron, str):
            raise fail(f"{key}.cron", f'must be a cron schedule like "0 18 * * fri", not {describe(cron)}')
    from cronsim import CronSim, CronSimError

    try:
        CronSim(cron, datetime(2026, 1, 1, tzinfo=zone))
    except (CronSimError, ValueError) as error:
        raise fail(f"{key}.cron", f"is not a cron schedule (minute hour day month weekday): {cron!r}: "
                                  f"{clean_line(str(error))[:80]}") from None
    return Freeze(reason, zone_name, cron=cron, duration=duration.total_seconds())


def _weekly(raw: dict[str, Any], key: str, fail: Callable[[str, str], ConfigError],
            describe: Callable[[Any], str]) -> str:
    days = raw.get("days")
    if (not isinstance(days, list) or not days
            or not all(isinstance(d, str) and d.lower()[:3] in _CRON_DAYS for d in days)):
        raise fail(f"{key}.days", f'must be a list of week days like ["sat", "sun"], not {describe(days)}')
    start = raw.get("start", "00:00")
    match = _CLOCK.match(start) if isinstance(start, str) else None
    if match is None:
        raise fail(f"{key}.start", f'must be a time of day like "18:00" (24-hour clock), not {describe(start)}')
    numbers = sorted({_CRON_DAYS[d.lower()[:3]] for d in days})
    return f"{int(match.group(2))} {int(match.group(1))} * * {','.join(numbers)}"


def _duration(value: Any, key: str, fail: Callable[[str, str], ConfigError],
              describe: Callable[[Any], str]) -> timedelta:
    match = _DURATION.match(value) if isinstance(value, str) and value else None
    if match is None:
        raise fail(key, f'must be a length of time like "62h", "2d", "90m" or "1d12h", not {describe(value)}')
    days, hours, minutes = (int(group or 0) for group in match.groups())
    length = timedelta(days=days, hours=hours, minutes=minutes)
    if not timedelta(0) < length <= MAX_DURATION:
        raise fail(key, f"must be more than nothing and at most 366 days, not {value!r}")
    return length


def _moment(value: Any, key: str, zone: tzinfo, fail: Callable[[str, str], ConfigError],
            describe: Callable[[Any], str], *, end_of_day: bool) -> datetime:
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=zone)
    elif isinstance(value, date):
        day = value + timedelta(days=1) if end_of_day else value
        moment = datetime.combine(day, time(0), tzinfo=zone)
    else:
        raise fail(key, f"must be a TOML date (2026-12-24) or date-time (2026-12-24T18:00:00), not {describe(value)}")
    return moment.astimezone(UTC)
