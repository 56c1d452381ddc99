"""Asking the system about processes, and stopping a process group left behind.

Signal 0 is sent: nothing is delivered, only the existence and permission checks of
``kill(2)`` run. A process owned by someone else exists all the same (the check fails
with ``EPERM``).

A zombie (a process that has exited, waiting for its parent to collect its status)
runs no code and holds nothing: it does **not** count as alive. This matters because
andon's processes are often orphans: a deploy command whose ``andon deploy`` was killed,
or a rollback runner that detached itself, is adopted by PID 1, and a PID 1 that never
collects its children (a container's first process) would leave them zombies for ever,
so a dead andon would look alive and its deploy would look running. Where ``/proc``
exists (Linux) the process's state is read from it; elsewhere ``kill(2)``'s answer is
taken as it is.

**Reused numbers.** The kernel hands a dead process's number to a new one sooner or later
(in a CI container, pids start from small numbers for every job). So andon records a
process's start time (:func:`started_at`, from ``/proc``) with its number, and
:func:`alive` and :func:`stop_group` given that ``started`` time take a process with the
same number but another start time for what it is: another program, never signalled. A
group whose leader has exited cannot have been reused (Linux keeps a number in use while a
group holds it), so only a living leader is asked. Without ``/proc``, or for a row written
before start times were kept, the check is skipped.
"""

from __future__ import annotations

import os
import signal
import time

_PROC = "/proc"
START_SLACK = 1.0  # seconds two readings of one process's start time may differ by (clock ticks, boot time)


def _boot_time() -> float | None:
    try:
        with open(f"{_PROC}/stat", "rb") as handle:
            for line in handle:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def started_at(pid: int) -> float | None:
    """When process ``pid`` started, as a Unix time (None when it is gone or /proc cannot tell)."""
    boot = _boot_time()
    if boot is None or pid <= 0:
        return None
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat(5): the start time in clock ticks after boot
    except (OSError, ValueError, IndexError):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _reused(pid: int, started: float | None) -> bool:
    """Whether the process numbered ``pid`` is another one than the one andon recorded starting at ``started``."""
    if started is None:
        return False
    now = started_at(pid)
    return now is not None and abs(now - started) > START_SLACK


def _state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from /proc (``R``, ``S``, ``Z`` ...); ``X`` when it is
    gone, None when it cannot be read."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as handle:
            # The command name (in parentheses) may hold spaces and ')': split after the last.
            return handle.read().rsplit(b")", 1)[1].split()[0].decode("ascii", "replace")
    except FileNotFoundError:
        return "X"
    except (OSError, IndexError):
        return None


def _running(state: str | None) -> bool:
    return state not in ("Z", "X")


def _group_has_live_member(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is not a zombie (one pass over /proc)."""
    try:
        entries = os.listdir(_PROC)
    except OSError:
        return True  # cannot tell: kill(2) said the group exists
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"{_PROC}/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid).encode() and _running(fields[0].decode("ascii", "replace")):
            return True
    return False


def alive(pid: int, *, group: bool = False, started: float | None = None) -> bool:
    """Whether process ``pid`` runs, or with ``group=True`` any process of group ``pid``.

    A pid of 0 or below is never a process (``kill(2)`` would read it as "my own group" or
    "every process"), so it is not alive. Zombies are not alive (see the module's docstring).
    ``started``: the recorded process's start time; a process (a group's leader) with the same
    number and another start time has reused it, and the recorded one is not alive.
    """
    if pid <= 0 or _reused(pid, started):
        return False
    try:
        if group:
            os.killpg(pid, 0)
        else:
            os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if not os.path.isdir(_PROC):
        return True
    if group:
        return _group_has_live_member(pid)
    return _running(_state(pid))  # None (unreadable): kill(2) said it exists


def stop_group(pgid: int, grace: float = 5.0, *, poll: float = 0.05, started: float | None = None) -> str | None:
    """Stop process group ``pgid``: SIGTERM, then SIGKILL for whatever is left after ``grace``.

    Returns None when the group is gone (or never existed, or its number now belongs to a
    group whose leader did not start at ``started``: never signalled), else one line saying why it could not be
    stopped (it belongs to someone else, or survived SIGKILL).
    """
    if pgid <= 1:  # never "my own group", "everyone" or init's
        return f"process group {pgid} is not one andon may stop"
    if not alive(pgid, group=True, started=started):
        return None
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not alive(pgid, group=True):
            return None
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return None
        except PermissionError:
            return f"process group {pgid}: permission denied (another user's processes)"
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if not alive(pgid, group=True):
                return None
            time.sleep(poll)
    return None if not alive(pgid, group=True) else f"process group {pgid} is still running after SIGKILL"
