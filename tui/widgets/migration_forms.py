"""The small forms behind the migrations screen's actions: note, snooze, waive, finish.

Each is a :class:`~textual.screen.ModalScreen` that returns a typed result (``None`` or
``False`` when the person changed their mind with esc); the screen then writes it in a
thread worker. What a person types is theirs to say: it goes to the log as typed (the
backend cleans it) and is shown back as plain ``Content``.

``--until`` for a snooze reads as the command line's does: a date (``2026-12-01``, midnight
UTC), a date and time (``2026-12-01 09:30``, UTC), or a span from now (``3d``, ``12h``, ``2w``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Generic, NamedTuple, TypeVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Static

SPAN = re.compile(r"\A([0-9]{1,4})\s*([mhdw])\Z")
UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
FORM_CSS = """
{name} {{
    align: center middle;
    background: $background 60%;
}}
{name} > Vertical {{
    width: 76;
    height: auto;
    border: round $primary;
    padding: 1 2;
    background: $surface;
}}
{name} .form-about {{
    margin-bottom: 1;
}}
{name} .form-problem {{
    color: $error;
    height: auto;
}}
{name} Input {{
    margin-bottom: 1;
}}
{name} .form-label {{
    color: $text-muted;
    padding: 0 1;
}}
"""


T = TypeVar("T")


class Snooze(NamedTuple):
    """A snooze as the person asked for it: reminders wait until ``until`` (the due date stays)."""

    until: datetime
    reason: str


def parse_until(text: str, now: datetime) -> datetime:
    """``2026-12-01``, ``2026-12-01 09:30`` (UTC) or ``3d`` from ``now``; ValueError (one line) otherwise."""
    value = text.strip()
    match = SPAN.match(value)
    if match:
        until = now + timedelta(seconds=int(match.group(1)) * UNITS[match.group(2)])
    else:
        try:
            until = datetime.fromisoformat(value.replace(" ", "T", 1) if len(value) > 10 else value)
        except ValueError:
            raise ValueError("until: a date (2026-12-01), a date and time (2026-12-01 09:30) or a span "
                             "(3d, 12h, 2w)") from None
        if until.tzinfo is None:
            until = until.replace(tzinfo=UTC)
    if until <= now:
        raise ValueError("until: that is not in the future")
    return until


class _Form(ModalScreen[T | None], Generic[T]):
    """A title, a sentence, inputs; enter goes to the next empty input or saves, esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="cancel-form")]

    def __init__(self, title: str, about: str) -> None:
        super().__init__()
        self.form_title = title
        self.about = about

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = Content(self.form_title)  # it names a migration: data, never markup
            box.border_subtitle = "enter to save · esc to cancel"
            yield Static(Content(self.about), classes="form-about")
            yield from self.fields()
            yield Static("", classes="form-problem")

    def fields(self) -> ComposeResult:
        yield from ()

    def problem(self, text: str) -> None:
        self.query_one(".form-problem", Static).update(Content(text))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        inputs = list(self.query(Input))
        position = inputs.index(event.input)
        empty = [later for later in inputs[position + 1:] if not later.value.strip()]
        if empty:  # the next field still to fill; with all of them filled, enter anywhere saves
            empty[0].focus()
            return
        self.submit()

    def submit(self) -> None:
        raise NotImplementedError

    def action_cancel(self) -> None:
        self.dismiss(None)


class TextForm(_Form[str]):
    """One line of text: a note, or the reason for a waiver. Returns the text, or None."""

    DEFAULT_CSS = FORM_CSS.format(name="TextForm")

    def __init__(self, title: str, about: str, placeholder: str, *, value: str = "") -> None:
        super().__init__(title, about)
        self.placeholder = placeholder
        self.value = value

    def fields(self) -> ComposeResult:
        yield Input(self.value, placeholder=self.placeholder, id="form-text")

    def submit(self) -> None:
        text = self.query_one("#form-text", Input).value.strip()
        if not text:
            self.problem("Say something (esc cancels).")
            return
        self.dismiss(text)


class SnoozeForm(_Form[Snooze]):
    """Until when, and why. Returns a :class:`Snooze`, or None."""

    DEFAULT_CSS = FORM_CSS.format(name="SnoozeForm")

    def __init__(self, title: str, about: str, now: datetime) -> None:
        super().__init__(title, about)
        self.now = now

    def fields(self) -> ComposeResult:
        yield Static("Until", classes="form-label")
        yield Input(placeholder="2026-12-01, 2026-12-01 09:30 (UTC) or 3d, 12h, 2w", id="form-until")
        yield Static("Why", classes="form-label")
        yield Input(placeholder="what the cleanup waits for", id="form-reason")

    def submit(self) -> None:
        try:
            until = parse_until(self.query_one("#form-until", Input).value, self.now)
        except ValueError as error:
            self.problem(str(error))
            self.query_one("#form-until", Input).focus()
            return
        reason = self.query_one("#form-reason", Input).value.strip()
        if not reason:
            self.problem("why: a snooze needs a reason.")
            self.query_one("#form-reason", Input).focus()
            return
        self.dismiss(Snooze(until, reason))


class ConfirmForm(ModalScreen[bool]):
    """A yes or no: ``y`` or enter says yes, ``n`` or esc no."""

    DEFAULT_CSS = FORM_CSS.format(name="ConfirmForm")
    BINDINGS = [
        Binding("y,enter", "answer(True)", "Yes", id="confirm-yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm-no"),
    ]

    def __init__(self, title: str, about: str) -> None:
        super().__init__()
        self.form_title = title
        self.about = about

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = Content(self.form_title)
            box.border_subtitle = "y or enter: yes · n or esc: no"
            yield Static(Content(self.about), classes="form-about")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
