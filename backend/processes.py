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
"""

from __future__ import annotations

import os
import signal
import time

_PROC = "/proc"


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


def alive(pid: int, *, group: bool = False) -> bool:
    """Whether process ``pid`` runs, or with ``group=True`` any process of group ``pid``.

    A pid of 0 or below is never a process (``kill(2)`` would read it as "my own group" or
    "every process"), so it is not alive. Zombies are not alive (see the module's docstring).
    """
    if pid <= 0:
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


def stop_group(pgid: int, grace: float = 5.0, *, poll: float = 0.05) -> str | None:
    """Stop process group ``pgid``: SIGTERM, then SIGKILL for whatever is left after ``grace``.

    Returns None when the group is gone (or never existed), else one line saying why it
    could not be stopped (it belongs to someone else, or survived SIGKILL).
    """
    if pgid <= 1:  # never "my own group", "everyone" or init's
        return f"process group {pgid} is not one andon may stop"
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
