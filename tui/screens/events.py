"""The events screen: the timeline of who did what, newest first.

Deploys, stops, rollbacks, cancels, resumes, health changes and forced deploys, as the
log's events table has them (:meth:`backend.store.core.LogCore.events`), every
environment together. Each row is one sentence (:func:`describe`) built from the event's
kind and detail; everything in it came from the log, so it is plain ``Text``, never
markup. The screen reads in a thread worker when it opens and again whenever the main
screen's poller hears of new events (it asks the log itself twice a second while open).
"""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static

from backend import AndonError
from backend.models import Event
from backend.world import World
from tui.format import when
from tui.widgets.rowlist import Column, RowList

LIMIT = 500  # events shown

COLUMNS = (Column("at", "When (UTC)", 16), Column("env", "Environment", 14), Column("who", "Who", 16),
           Column("what", "What", 200))


def _sha(value: Any) -> str:
    return value[:7] if isinstance(value, str) else "?"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def describe(event: Event) -> str:
    """One sentence for an event: ``stopped the line: api down``, ``deploy #12 of 1a2b3c4 finished: failed``."""
    try:
        detail = json.loads(event.detail)
    except ValueError:
        detail = {}
    if not isinstance(detail, dict):
        detail = {}
    number = f"#{event.deploy_id}" if event.deploy_id is not None else ""
    reason = _text(detail.get("reason"))
    because = f": {reason}" if reason else ""
    kind = event.kind
    if kind == "deploy.started":
        return f"started deploy {number} of {_sha(detail.get('sha'))} ({_text(detail.get('trigger')) or 'manual'})"
    if kind == "deploy.finished":
        return f"deploy {number} finished: {_text(detail.get('status')) or '?'}"
    if kind == "deploy.recorded":
        return f"recorded deploy {number} of {_sha(detail.get('sha'))}: {_text(detail.get('status')) or '?'}"
    if kind == "deploy.imported":
        return "imported past deploys"
    if kind == "deploy.verifying":
        return f"watching deploy {number}'s health"
    if kind == "deploy.verified":
        verdict = _text(detail.get("status")) or _text(detail.get("verdict")) or "?"
        return f"verified deploy {number}: {verdict}" + (f" ({reason})" if reason else "")
    if kind == "deploy.forced":
        through = [what for what, key in (("the stopped line", "stopped_by"), ("a freeze", "frozen"),
                                          ("held commits", "held")) if key in detail]
        return f"FORCED deploy {number} through {' and '.join(through) or 'the stopped line'}{because}"
    if kind == "line.stopped":
        return ("stopped the line automatically" if detail.get("automatic") else "stopped the line") + because
    if kind == "line.resumed":
        return "resumed the line" + because
    if kind == "rollback.requested":
        return f"requested a rollback to {_sha(detail.get('target_sha'))}{because}"
    if kind == "rollback.cancelled":
        return "cancelled the rollback"
    if kind == "rollback.started":
        return f"rollback deploy {number} to {_sha(detail.get('target_sha'))} started"
    if kind == "rollback.finished":
        return f"rollback deploy {number} finished: {_text(detail.get('status')) or '?'}"
    if kind == "commit.held":
        shas = [_sha(sha) for sha in detail.get("shas", [])] if isinstance(detail.get("shas"), list) else []
        count = detail["count"] if isinstance(detail.get("count"), int) else len(shas)
        more = f" and {count - 5} more" if count > 5 else ""
        return f"held {count} commit{'s' if count != 1 else ''} after a rollback: {', '.join(shas[:5])}{more}"
    if kind == "commit.released":
        if isinstance(detail.get("shas"), list):  # andon release --all: every commit held there, one event
            shas = [_sha(sha) for sha in detail["shas"]]
            count = detail["count"] if isinstance(detail.get("count"), int) else len(shas)
            more = f" and {count - 5} more" if count > 5 else ""
            return (f"released {count} held commit{'s' if count != 1 else ''} ({', '.join(shas[:5])}{more})"
                    f"{because}")
        return f"released held commit {_sha(detail.get('sha'))}{because}"
    if kind == "health.changed":
        previous = _text(detail.get("previous"))
        state = _text(detail.get("state")) or "?"
        return f"health {previous} → {state}" if previous else f"health {state}"
    return kind


class EventsLoaded(Message):
    def __init__(self, events: list[Event], error: str = "") -> None:
        super().__init__()
        self.events = events
        self.error = error


class EventsScreen(Screen[None]):
    DEFAULT_CSS = """
    EventsScreen #events-title {
        height: 1;
        background: $panel;
        text-align: center;
    }
    EventsScreen #events {
        height: 1fr;
    }
    EventsScreen #events-empty {
        height: auto;
        padding: 1 2;
        color: $text-muted;
    }
    """
    BINDINGS = [Binding("escape,q,e", "close", "Close", id="close-events")]

    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world
        self._newest: int | None = None

    def compose(self) -> ComposeResult:
        yield Static("Events — who did what, newest first (esc to close)", id="events-title")
        yield RowList(COLUMNS, zebra=True, id="events")
        yield Static("", id="events-empty")

    def on_mount(self) -> None:
        self.query_one(RowList).focus()
        self.load()
        self.set_interval(0.5, self._poll)

    def _poll(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="events", exit_on_error=False)
    def load(self) -> None:
        try:
            events = self.world.log.events(LIMIT)
        except AndonError as error:
            self.post_message(EventsLoaded([], str(error)))
            return
        self.post_message(EventsLoaded(events))

    def on_events_loaded(self, message: EventsLoaded) -> None:
        empty = self.query_one("#events-empty", Static)
        if message.error:
            empty.update(Text(f"The log could not be read: {message.error}"))
            return
        newest = message.events[0].id if message.events else 0
        if newest == self._newest:
            return
        self._newest = newest
        rows = [(str(event.id), _cells(event)) for event in message.events]
        self.query_one(RowList).replace(rows, keep=None)
        empty.update(Text("" if rows else "Nothing has happened yet."))
        empty.display = not rows

    def action_close(self) -> None:
        self.dismiss(None)


def _cells(event: Event) -> list[Text]:
    return [Text(when(event.at)), Text(event.env or "—"), Text(event.who or "—"), Text(describe(event))]
