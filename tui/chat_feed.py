"""The main screen's chat: this dashboard delivers the outbox, and says when a message could not go out.

Like :mod:`tui.health_feed` and :mod:`tui.line_feed`, the part of the main screen that
runs one concern. Any running andon delivers what the log's outbox holds
(:func:`backend.notify.deliver_pending`; several at once send each message once per
receiver, under a lease): with receivers configured (``[[notify]]``) this dashboard looks
once a second, in a thread worker (a look with nothing due is one read, no request), and
at once after one of its own keys wrote news (a stop, a rollback, a resume). Its first
look waits :data:`CHAT_DELAY` after the first frame: the first delivery imports httpx and
builds the TLS context (0.2-0.3 s, in the worker's thread, never on the screen's loop).

Every :data:`~backend.line_reminder.REMIND_EVERY` seconds the same worker first writes the
reminders of a line stopped for long (:func:`backend.line_reminder.remind`: of several andons
looking at once, one writes each), so they go out with that look.

A message that a receiver refused for good (a dead letter) is a toast, once, naming the
receiver and why; the messages screen (``m``, :mod:`tui.screens.messages`) lists what went
out, what waits and what is dead, and retries or puts aside the dead ones.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from textual.message import Message

from backend import AndonError

if TYPE_CHECKING:
    from backend.notify import Report
    from tui.screens.main import MainScreen

CHAT_DELAY = 1.5  # seconds after the first frame before this dashboard's first delivery
CHAT_EVERY = 1.0  # seconds between two looks at the outbox


class ChatDelivered(Message):
    """A delivery ended: its report (None when the log could not be read: ``error``); ``error``
    beside a report: the reminders of a stopped line failed, and delivery went on."""

    def __init__(self, report: Report | None, error: str = "") -> None:
        super().__init__()
        self.report = report
        self.error = error


class ChatFeed:
    """This dashboard's deliveries: see the module docstring. Every method runs on the screen's loop."""

    def __init__(self, screen: MainScreen) -> None:
        self.screen = screen
        self.world = screen.world
        self.dead_seen: set[int] | None = None  # outbox ids known dead (None: not looked yet)
        self._again = False  # a delivery was asked for while one ran
        self._reminded: float | None = None  # time.monotonic() of the last look for stopped-line reminders
        self.report: Report | None = None

    @property
    def configured(self) -> bool:
        return bool(self.world.config.notifiers)

    def start(self) -> None:
        """After the first frame: deliver once a second (only with receivers configured)."""
        if self.configured:
            self.screen.set_timer(CHAT_DELAY, self._begin)

    def _begin(self) -> None:
        self.deliver()
        self.screen.set_interval(CHAT_EVERY, self.deliver)

    def deliver(self) -> None:
        """Deliver what is due now, in a thread worker (one at a time: a look already running is enough)."""
        if not self.configured:
            return
        screen = self.screen
        running = [w for w in screen.workers if w.group == "chat" and w.is_running]
        if running:
            self._again = True  # news written after that look began: look once more when it ends
            return
        self._again = False
        screen.run_worker(self._deliver, thread=True, group="chat", exit_on_error=False)

    def _deliver(self) -> None:
        from backend import line_reminder
        from backend.notify import deliver_pending

        trouble = ""
        if self._reminded is None or time.monotonic() - self._reminded >= line_reminder.REMIND_EVERY:
            self._reminded = time.monotonic()
            try:
                line_reminder.remind(self.world)
            except Exception as error:  # noqa: BLE001 - the reminders' trouble must not stop the chat
                trouble = str(error) if isinstance(error, AndonError) else \
                    f"line reminders: {type(error).__name__}: {error}"
        try:
            report = deliver_pending(self.world)
        except AndonError as error:
            self.screen.post_message(ChatDelivered(None, "; ".join(filter(None, (trouble, str(error))))))
            return
        self.screen.post_message(ChatDelivered(report, trouble))

    def delivered(self, message: ChatDelivered) -> None:
        screen = self.screen
        if self._again:
            screen.call_later(self.deliver)
        if message.error:  # the log could not be read, or the reminders failed (delivery went on)
            screen.log.warning(f"chat: {message.error}")
        if message.report is None:
            return
        self.report = message.report
        dead = {item.id: item for item in message.report.dead}
        if self.dead_seen is not None:
            new = [item for item_id, item in dead.items() if item_id not in self.dead_seen]
            if new:
                first = new[0]
                more = f" (and {len(new) - 1} more)" if len(new) > 1 else ""
                screen.notify(f"A message to {first.receiver} could not be delivered{more}: {first.error} "
                              "— m lists the messages", title="Chat", severity="error", markup=False)
        self.dead_seen = set(dead)
