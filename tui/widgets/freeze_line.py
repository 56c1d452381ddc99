"""The main screen's freeze line: "❄ production is frozen: release week, opens 2026-12-02 04:15 UTC (in 59 min)".

One line under the environment names, shown only when some environment has freezes configured
(``[[environments.NAME.freeze]]``, :mod:`backend.freeze`): the freeze in force in the
environment shown and when it opens, or else its next freeze; and any other environment that
is frozen now (a deploy there is refused too). Loud (``-frozen``) while the environment shown
is frozen, quiet otherwise.

It reads nothing from the log or git: the windows come from the configuration and the clock.
Working them out (cronsim) still runs in a thread worker, when the environment shown changes
(it watches the screen's ``env``) and every :data:`REFRESH` seconds (windows open and close
with time alone). The text is plain :class:`~textual.content.Content` (a freeze's reason comes
from the configuration, never read as markup).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from textual.content import Content
from textual.message import Message
from textual.widgets import Static

if TYPE_CHECKING:
    from backend.world import World

REFRESH = 30.0  # seconds between two workings-out of the windows with nothing else changed


class FreezesRead(Message):
    """Each environment with freezes: :func:`backend.gate.freeze_json` at ``now``."""

    def __init__(self, freezes: dict[str, dict[str, Any]], now: datetime) -> None:
        super().__init__()
        self.freezes = freezes
        self.now = now


def freeze_text(env: str | None, freezes: dict[str, dict[str, Any]], now: datetime) -> tuple[str, bool]:
    """The line for the environment ``env`` shown (and whether it is frozen); "" when nothing to say."""
    from backend.gate import describe_next, describe_window, windows

    parts = []
    here = freezes.get(env or "")
    in_force, upcoming = windows(here) if here is not None else (None, None)
    if in_force is not None:
        parts.append(f"❄ {env} is frozen: {describe_window(in_force, now)}")
    elif upcoming is not None:
        parts.append(f"next freeze of {env}: {describe_next(upcoming, now)}")
    others = [f"{name} ({facts['frozen']['reason']})" for name, facts in freezes.items()
              if name != env and facts["frozen"]]
    if others:
        parts.append("also frozen: " + ", ".join(others))
    return " · ".join(parts), in_force is not None


class FreezeLine(Static):
    DEFAULT_CSS = """
    FreezeLine {
        display: none;
        height: 1;
        padding: 0 1;
        color: $text-muted;
    }
    FreezeLine.-frozen {
        background: $warning 30%;
        color: $text;
        text-style: bold;
    }
    """

    def __init__(self, world: World, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.world = world
        self.freezes: dict[str, dict[str, Any]] = {}
        self.now: datetime | None = None

    @classmethod
    async def start(cls, screen: Any, after: str) -> None:
        """Mount one after ``after`` on ``screen`` (after the first frame), when any environment has freezes."""
        world = screen.world
        if not any(settings.freezes for settings in world.config.environments.values()):
            return
        line = cls(world, id="freeze")
        await screen.mount(line, after=screen.query_one(after))

    def on_mount(self) -> None:
        self.set_interval(REFRESH, self.read)
        self.watch(self.screen, "env", lambda _env: self.read(), init=False)
        self.read()

    def read(self) -> None:
        self.run_worker(self._work, thread=True, exclusive=True, group="freeze", exit_on_error=False)

    def _work(self) -> None:
        from backend.gate import freeze_json

        world = self.world
        now = world.clock()
        found = {name: freeze_json(world, name, now) for name, settings in world.config.environments.items()
                 if settings.freezes}
        self.post_message(FreezesRead(found, now))

    def on_freezes_read(self, message: FreezesRead) -> None:
        message.stop()
        self.freezes, self.now = message.freezes, message.now
        text, frozen = freeze_text(getattr(self.screen, "env", None), self.freezes, self.now)
        self.set_class(frozen, "-frozen")
        self.display = bool(text)
        if text:
            self.update(Content(text))
