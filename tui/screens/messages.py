"""The messages screen: what the line's news said to chat, newest first, and what did not go out.

One row per outbox row (one event for one receiver, :mod:`backend.store.outbox`): when the
event happened, its environment, the message's state (``✔ sent``, ``… waiting``, ``✘ dead``),
the receiver, what the message says (its title, as :func:`backend.chat.message` words it)
and, for one that waits or is dead, why. Everything in it came from the log or a
receiver's answer: plain ``Text``, never markup. Read in a thread worker when the screen
opens and twice a second while it is open.

``r`` sends the dead messages again (after the receiver was fixed) and ``x`` puts them
aside (kept in the log, no longer reported); neither on a ``--read-only`` dashboard.
"""

from __future__ import annotations

from typing import NamedTuple

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static

from backend import AndonError
from backend.world import World
from tui.format import when
from tui.widgets.rowlist import Column, RowList

LIMIT = 200  # rows shown

COLUMNS = (Column("at", "When (UTC)", 16), Column("env", "Environment", 12), Column("state", "State", 10),
           Column("receiver", "Receiver", 22), Column("what", "Message", 48), Column("why", "Why", 200))
STATE_WORD = {"delivered": "✔ sent", "pending": "… waiting", "dead": "✘ dead", "dismissed": "– put aside",
              "skipped": "– skipped"}


class Row(NamedTuple):
    id: int
    at: str
    env: str
    state: str
    receiver: str
    what: str
    why: str


class MessagesLoaded(Message):
    def __init__(self, rows: list[Row], error: str = "") -> None:
        super().__init__()
        self.rows = rows
        self.error = error


class MessagesActed(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


def read_messages(world: World, limit: int = LIMIT) -> list[Row]:
    """The newest outbox rows, worded (blocking: SQLite)."""
    from backend.chat import gather, message
    from backend.store.outbox import DEAD, DELIVERED, PENDING

    log = world.log
    rows = []
    for item in log.outbox((PENDING, DEAD, DELIVERED), limit=limit, newest=True):
        said = message(gather(log, item))
        rows.append(Row(item.id, item.at, item.env or "—", item.state, item.receiver,
                        said.title if said is not None else item.kind, item.error))
    return rows


class MessagesScreen(Screen[None]):
    DEFAULT_CSS = """
    MessagesScreen #messages-title {
        height: 1;
        background: $panel;
        text-align: center;
    }
    MessagesScreen #messages {
        height: 1fr;
    }
    MessagesScreen #messages-empty {
        height: auto;
        padding: 1 2;
        color: $text-muted;
    }
    """
    BINDINGS = [
        Binding("escape,q,m", "close", "Close", id="close-messages"),
        Binding("r", "retry", "Retry dead", id="retry-dead"),
        Binding("x", "dismiss_dead", "Put dead aside", id="dismiss-dead"),
    ]

    def __init__(self, world: World, *, read_only: bool = False) -> None:
        super().__init__()
        self.world = world
        self.read_only = read_only
        self._shown: list[Row] | None = None

    def compose(self) -> ComposeResult:
        keys = "esc to close" if self.read_only else "r retries the dead ones, x puts them aside, esc closes"
        yield Static(f"Chat messages — newest first ({keys})", id="messages-title")
        yield RowList(COLUMNS, zebra=True, id="messages")
        yield Static("", id="messages-empty")

    def on_mount(self) -> None:
        self.query_one(RowList).focus()
        self.load()
        self.set_interval(0.5, self.load)

    @work(thread=True, exclusive=True, group="messages", exit_on_error=False)
    def load(self) -> None:
        try:
            rows = read_messages(self.world)
        except AndonError as error:
            self.post_message(MessagesLoaded([], str(error)))
            return
        self.post_message(MessagesLoaded(rows))

    def on_messages_loaded(self, message: MessagesLoaded) -> None:
        empty = self.query_one("#messages-empty", Static)
        if message.error:
            empty.update(Text(f"The log could not be read: {message.error}"))
            return
        if message.rows == self._shown:
            return
        self._shown = message.rows
        self.query_one(RowList).replace([(str(row.id), _cells(row)) for row in message.rows], keep=None)
        configured = bool(self.world.config.notifiers)
        empty.update(Text("" if message.rows else
                          "No message has gone to chat yet." if configured else
                          "No chat receivers are configured ([[notify]] in andon.toml)."))
        empty.display = not message.rows

    def _act(self, retry: bool) -> None:
        if self.read_only:
            self.notify("This dashboard is read-only.", title="Chat", severity="warning", markup=False)
            return
        self._change_dead(retry)

    @work(thread=True, group="messages-act", exit_on_error=False)
    def _change_dead(self, retry: bool) -> None:
        log, who = self.world.log, self.world.who()
        try:
            count = log.retry_dead(who=who) if retry else log.dismiss_dead(who=who)
        except AndonError as error:
            self.post_message(MessagesActed(str(error)))
            return
        noun = f"{count} dead message{'s' if count != 1 else ''}"
        self.post_message(MessagesActed(f"{noun} {'will be sent again' if retry else 'put aside'}" if count
                                        else "No message is dead."))

    def on_messages_acted(self, message: MessagesActed) -> None:
        self.notify(message.text, title="Chat", markup=False)
        self.load()

    def action_retry(self) -> None:
        self._act(True)

    def action_dismiss_dead(self) -> None:
        self._act(False)

    def action_close(self) -> None:
        self.dismiss(None)


def _cells(row: Row) -> list[Text]:
    # The marks read without colour; the list's own styles are the theme's.
    return [Text(when(row.at)), Text(row.env), Text(STATE_WORD.get(row.state, row.state)),
            Text(row.receiver), Text(row.what), Text(row.why)]
