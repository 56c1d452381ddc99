"""Asking the system about processes: whether one, or a process group, still exists.

Signal 0 is sent: nothing is delivered, only the existence and permission checks of
``kill(2)`` run. A process owned by someone else exists all the same (the check fails
with ``EPERM``), and a zombie not yet reaped still counts as existing.
"""

from __future__ import annotations

import os


def alive(pid: int, *, group: bool = False) -> bool:
    """Whether process ``pid`` exists, or with ``group=True`` any process of group ``pid``.

    A pid of 0 or below is never a process (``kill(2)`` would read it as "my own group" or
    "every process"), so it is not alive.
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
        return True
    return True
