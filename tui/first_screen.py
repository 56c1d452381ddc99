"""What the dashboard shows first, read before the screen exists (no Textual import here).

The command line reads it in a thread while Textual is being imported, so the very
first frame already shows the deploys; git is asked nothing (commit counts come from
the ranges kept in the log, the rest follow from a worker).
"""

from __future__ import annotations

from typing import NamedTuple

from backend.history import Range
from backend.models import Deploy
from backend.world import World

PAGE = 100  # deploys loaded at a time (a screenful and more); more load as the cursor nears the end


class FirstScreen(NamedTuple):
    names: list[str]
    env: str | None
    deploys: list[Deploy]
    total: int
    live: Deploy | None
    ranges: dict[tuple[str | None, str], Range]
    version: int | None  # SQLite's data_version, read before the rest
    last_event: int | None  # the newest event id, read before the rest: later events are news


def load_first_screen(world: World, env: str | None = None, *, limit: int = PAGE) -> FirstScreen:
    """Environments, the first ``limit`` deploys of ``env`` (default: the first one), what is live."""
    log = world.log
    # The marks first: anything written after them is seen by the poller, at worst twice.
    version = log.data_version()
    last_event = log.last_event_id()
    names = world.environments()
    chosen = env if env in names else (names[0] if names else None)
    if chosen is None:
        return FirstScreen(names, None, [], 0, None, {}, version, last_event)
    deploys = log.deploys(chosen, limit=limit)
    ranges = world.history.ranges([(d.prev_sha, d.sha) for d in deploys], compute=False)
    return FirstScreen(names, chosen, deploys, log.count(chosen), log.live(chosen), ranges, version, last_event)
