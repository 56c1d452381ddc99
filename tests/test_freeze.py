"""Scheduled freezes: windows at fixed clock times, across midnight and a change of summer time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.config import ConfigError, load_file
from backend.freeze import Freeze, frozen, next_freeze

BERLIN_WEEKEND = """
[[environments.production.freeze]]
reason = "weekend"
timezone = "Europe/Berlin"
cron = "0 18 * * fri"
duration = "62h"
"""


def freezes(tmp_path: Path, text: str, env: str = "production") -> tuple[Freeze, ...]:
    path = tmp_path / "andon.toml"
    path.write_text(text)
    return load_file(path).environment(env).freezes


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_weekend_freeze_before_inside_and_after(tmp_path: Path) -> None:
    weekend = freezes(tmp_path, BERLIN_WEEKEND)
    # Friday 2026-11-20, 17:59 Berlin (UTC+1) is 16:59 UTC: not yet.
    assert frozen(weekend, utc(2026, 11, 20, 16, 59)) is None
    inside = frozen(weekend, utc(2026, 11, 20, 17, 0))
    assert inside is not None and inside.reason == "weekend"
    assert inside.start == utc(2026, 11, 20, 17, 0) and inside.opens == utc(2026, 11, 23, 7, 0)
    assert frozen(weekend, utc(2026, 11, 23, 6, 59)) is not None
    assert frozen(weekend, utc(2026, 11, 23, 7, 0)) is None  # Monday 08:00 Berlin: open
    coming = next_freeze(weekend, utc(2026, 11, 23, 7, 0))
    assert coming is not None and coming.start == utc(2026, 11, 27, 17, 0)


def test_a_window_across_a_change_of_summer_time_lasts_its_duration_on_the_local_clock(tmp_path: Path) -> None:
    weekend = freezes(tmp_path, BERLIN_WEEKEND)
    # Summer time begins on Sunday 2026-03-29: Friday 18:00 is UTC+1, Monday is UTC+2.
    window = frozen(weekend, utc(2026, 3, 28, 12, 0))
    assert window is not None
    assert window.start == utc(2026, 3, 27, 17, 0)
    assert window.opens == utc(2026, 3, 30, 6, 0)  # Monday 08:00 local: 61 elapsed hours
    assert window.opens - window.start == timedelta(hours=61)
    assert frozen(weekend, utc(2026, 3, 30, 5, 59)) is not None
    assert frozen(weekend, utc(2026, 3, 30, 6, 0)) is None
    # The next Friday's window begins at 18:00 local, now UTC+2.
    coming = next_freeze(weekend, window.opens)
    assert coming is not None and coming.start == utc(2026, 4, 3, 16, 0)
    # Summer time ends on Sunday 2026-10-25: Friday 18:00 is UTC+2, Monday 08:00 is UTC+1.
    autumn = frozen(weekend, utc(2026, 10, 24, 12, 0))
    assert autumn is not None
    assert autumn.start == utc(2026, 10, 23, 16, 0)
    assert autumn.opens == utc(2026, 10, 26, 7, 0)  # Monday 08:00 local: 63 elapsed hours
    assert frozen(weekend, utc(2026, 10, 26, 6, 59)) is not None
    assert frozen(weekend, utc(2026, 10, 26, 7, 0)) is None


def test_a_window_that_ends_in_the_skipped_or_the_repeated_hour(tmp_path: Path) -> None:
    night = freezes(tmp_path, '[[environments.production.freeze]]\nreason = "batch"\ntimezone = "Europe/Berlin"\n'
                              'cron = "30 2 * * sat"\nduration = "24h"\n')
    # Saturday 2026-03-28 02:30 (UTC+1) + 24h on the clock is Sunday 02:30, which is skipped:
    # the later instant, 03:30 summer time (01:30 UTC).
    spring = frozen(night, utc(2026, 3, 28, 12, 0))
    assert spring is not None and spring.start == utc(2026, 3, 28, 1, 30)
    assert spring.opens == utc(2026, 3, 29, 1, 30)
    # Saturday 2026-10-24 02:30 (UTC+2) + 24h is Sunday 02:30, which comes twice: the first (UTC+2).
    autumn = frozen(night, utc(2026, 10, 24, 12, 0))
    assert autumn is not None and autumn.start == utc(2026, 10, 24, 0, 30)
    assert autumn.opens == utc(2026, 10, 25, 0, 30)


def test_a_nightly_window_across_midnight(tmp_path: Path) -> None:
    nightly = freezes(tmp_path, '[[environments.production.freeze]]\nreason = "backups"\n'
                                'days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\nstart = "23:30"\n'
                                'duration = "1h"\n')
    assert frozen(nightly, utc(2026, 12, 1, 23, 29)) is None
    assert frozen(nightly, utc(2026, 12, 1, 23, 30)) is not None
    window = frozen(nightly, utc(2026, 12, 2, 0, 10))
    assert window is not None and window.opens == utc(2026, 12, 2, 0, 30)
    assert frozen(nightly, utc(2026, 12, 2, 0, 30)) is None


def test_one_off_dates_cover_whole_days_in_their_time_zone(tmp_path: Path) -> None:
    holidays = freezes(tmp_path, '[[environments.production.freeze]]\nreason = "holidays"\n'
                                 'timezone = "America/New_York"\nfrom = 2026-12-24\nuntil = 2026-12-26\n')
    assert frozen(holidays, utc(2026, 12, 24, 4, 59)) is None  # 23:59 on the 23rd in New York
    assert frozen(holidays, utc(2026, 12, 24, 5, 0)) is not None
    window = frozen(holidays, utc(2026, 12, 26, 12, 0))
    assert window is not None and window.opens == utc(2026, 12, 27, 5, 0)
    assert next_freeze(holidays, utc(2026, 12, 1)) == window


def test_overlapping_windows_chain_until_the_last_one_ends(tmp_path: Path) -> None:
    both = freezes(tmp_path, BERLIN_WEEKEND + '[[environments.production.freeze]]\nreason = "release week"\n'
                                               'from = 2026-11-23T00:00:00Z\nuntil = 2026-11-25T12:00:00Z\n')
    window = frozen(both, utc(2026, 11, 21, 12, 0))
    assert window is not None and window.reason == "weekend" and window.opens == utc(2026, 11, 25, 12, 0)


@pytest.mark.parametrize(("text", "message"), [
    ('freeze = 3\n', "freeze must be a list of freezes"),
    ('[[environments.production.freeze]]\ncron = "0 18 * * fri"\nduration = "1h"\n', "freeze[0].reason must say why"),
    ('[[environments.production.freeze]]\nreason = "x"\n', "needs exactly one schedule"),
    ('[[environments.production.freeze]]\nreason = "x"\ncron = "0 18 * * fri"\n', "duration must be a length of time"),
    ('[[environments.production.freeze]]\nreason = "x"\ncron = "61 18 * * fri"\nduration = "1h"\n',
     "freeze[0].cron is not a cron schedule"),
    ('[[environments.production.freeze]]\nreason = "x"\ncron = "0 18 * * fri"\nduration = "ten hours"\n',
     'duration must be a length of time like "62h"'),
    ('[[environments.production.freeze]]\nreason = "x"\ncron = "0 18 * * fri"\nduration = "0h"\n',
     "must be more than nothing"),
    ('[[environments.production.freeze]]\nreason = "x"\ntimezone = "Mars/Olympus"\ncron = "0 18 * * fri"\n'
     'duration = "1h"\n', "freeze[0].timezone is not a time zone this machine knows: 'Mars/Olympus'"),
    ('[[environments.production.freeze]]\nreason = "x"\ndays = ["someday"]\nduration = "1h"\n', "freeze[0].days must be"),
    ('[[environments.production.freeze]]\nreason = "x"\ndays = ["sat"]\nstart = "25:00"\nduration = "1h"\n',
     "freeze[0].start must be a time of day"),
    ('[[environments.production.freeze]]\nreason = "x"\nfrom = 2026-12-24\nuntil = 2026-12-23\n',
     "freeze[0].until must be after from"),
    ('[[environments.production.freeze]]\nreason = "x"\nfrom = "soon"\nuntil = 2026-12-23\n',
     "freeze[0].from must be a TOML date"),
    ('[[environments.production.freeze]]\nreason = "x"\ncron = "0 1 * * *"\ndays = ["sat"]\nduration = "1h"\n',
     "found cron and weekly"),
    ('[[environments.production.freeze]]\nreason = "x"\ncron = "0 1 * * *"\nduration = "1h"\nuntil = 2026-01-01\n',
     "found cron and one-off"),
    ('[[environments.production.freeze]]\nreason = "x"\ncron = "0 1 * * *"\nduration = "1h"\nwhen = 1\n',
     "freeze[0].when is not a known key"),
])
def test_freeze_mistakes_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    if not text.startswith("[["):
        text = "[environments.production]\n" + text
    with pytest.raises(ConfigError) as caught:
        freezes(tmp_path, text)
    assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_stop_reminder_and_notifier_events(tmp_path: Path) -> None:
    path = tmp_path / "andon.toml"
    path.write_text('[environments.production]\nstop_reminder_minutes = 15\n'
                    '[[notify]]\nkind = "slack"\nurl_env = "A"\n'
                    '[[notify]]\nkind = "webhook"\nurl_env = "B"\nevents = ["deploys", "stops"]\n')
    config = load_file(path)
    assert config.environment("production").stop_reminder_minutes == 15.0
    assert config.environment("staging").stop_reminder_minutes == 60.0
    for fine in ("0", "1", "1.5"):
        path.write_text(f"[environments.production]\nstop_reminder_minutes = {fine}\n")
        assert load_file(path).environment("production").stop_reminder_minutes == float(fine)
    slack, hook = config.notifiers
    assert "deploys" not in slack.events and {"stops", "rollbacks", "failures", "resumes"} <= slack.events
    assert hook.events == frozenset({"deploys", "stops"})
    for bad, message in (('events = ["everything"]', "names 'everything', which is not a kind of news"),
                         ('events = "stops"', "events must be a list"),
                         ('stop_reminder_minutes = -1', "stop_reminder_minutes must be a number of minutes"),
                         ('stop_reminder_minutes = 0.5', "must be a number of minutes, 0 \\(no reminder\\) or at least 1"),
                         ('stop_reminder_minutes = 1e-300', "or at least 1, not 1e-300"),
                         ('stop_reminder_minutes = inf', "stop_reminder_minutes must be a number of minutes")):
        table = "[environments.production]\n" if "stop_reminder" in bad else '[[notify]]\nkind = "slack"\nurl_env = "A"\n'
        path.write_text(table + bad + "\n")
        with pytest.raises(ConfigError, match=message):
            load_file(path)
