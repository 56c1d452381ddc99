"""A line stopped for long is recalled in chat: :func:`remind`, called by whoever delivers chat.

``andon watch`` (its chat thread) and the dashboard (its chat feed) call :func:`remind` at most
every :data:`REMIND_EVERY` seconds; each environment's ``stop_reminder_minutes`` says how often a
stopped line is recalled (0: never). The log decides, under ``BEGIN IMMEDIATE``, so that several
andons looking at once send each reminder once (:mod:`backend.store.reminders`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backend.world import World

REMIND_EVERY = 30.0  # seconds between two looks for a line stopped past its reminder, per andon


def remind(world: World) -> list[str]:
    """Write the ``line.reminder`` events due now; the environments reminded by this call."""
    intervals = {env: settings.stop_reminder_minutes for env, settings in world.config.environments.items()}
    return world.log.remind_stopped_lines(intervals)
