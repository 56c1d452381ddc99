"""Who is doing this: ``ANDON_USER``, else git's ``user.name``, else the login name."""

from __future__ import annotations

import os
from collections.abc import Callable

from backend.text import clean_line


def who(git_user: Callable[[], str | None] | None = None) -> str:
    name = os.environ.get("ANDON_USER", "").strip()
    if not name and git_user is not None:
        name = (git_user() or "").strip()
    if not name:
        import getpass  # only when nothing else names the user: the dashboard never needs it

        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = "unknown"
    return clean_line(name)[:100]
