"""The main screen's reminder of the cleanup debt: "⚠ 2 overdue cleanups — b shows the backlog".

One line, shown only while some migration's cleanup is overdue (or critical) in some
environment; hidden at 0. A click opens the backlog, as ``b`` does.
"""

from __future__ import annotations

from textual import events
from textual.content import Content
from textual.widgets import Static


def overdue_text(count: int, critical: int = 0) -> str:
    noun = "cleanup" if count == 1 else "cleanups"
    worst = f" ({critical} critical)" if critical else ""
    return f"⚠ {count} overdue {noun}{worst} — b shows the backlog"


class OverdueCount(Static):
    DEFAULT_CSS = """
    OverdueCount {
        display: none;
        height: 1;
        padding: 0 1;
        background: $warning 25%;
        color: $text;
        text-style: bold;
    }
    OverdueCount.-critical {
        background: $error 35%;
    }
    """

    count: int = 0

    def show(self, count: int, critical: int = 0) -> None:
        self.count = count
        self.display = count > 0
        self.set_class(critical > 0, "-critical")
        if count:
            self.update(Content(overdue_text(count, critical)))

    async def on_click(self, event: events.Click) -> None:
        event.stop()
        await self.screen.run_action("backlog")
