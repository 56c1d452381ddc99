"""The selected deploy: what it was, the commits it shipped, its command's output.

The screen says which deploy (and its commit range, when known) with :meth:`DeployDetail.show`
and hands over the output when a worker has read it (:meth:`DeployDetail.show_output`).
The output's ``Log`` is created with the first output: nobody needs it for the first frame.

A deploy that is running has no output in its row yet: the worker reads what it has streamed
so far (:mod:`backend.store.output`) and the pane follows it, asking every ``FOLLOW`` seconds
for what came after the position it has (:class:`DeployDetail.OutputWanted`, which the screen
turns into a read) and adding it at the end, until the read finds the deploy finished and
brings its final output. It scrolls with the output only when it was at the end already.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.widgets import Static

from backend.history import Range
from backend.models import Deploy
from backend.text import short
from tui.format import age, duration, status_text, theme_colour, when
from tui.widgets.commits import CommitTable

if TYPE_CHECKING:
    from textual.widgets import Log

    from backend.store import Streamed

FOLLOW = 0.5  # seconds between two reads of a running deploy's output
# Characters added while following before the output is read anew, as the log keeps it: twice its
# bound on a deploy's output (backend.runner.OUTPUT_LIMIT, not imported before the first frame).
FOLLOW_LIMIT = 512 * 1024


class DeployDetail(Vertical):
    class OutputWanted(Message):
        """The running deploy shown wants its output from position ``since`` (the screen reads it)."""

        def __init__(self, deploy_id: int, since: int) -> None:
            super().__init__()
            self.deploy_id = deploy_id
            self.since = since

    def __init__(self, clock: Callable[[], datetime], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.deploy: Deploy | None = None
        self.found: Range | None = None
        self.following: int | None = None  # a running deploy's output shown up to this position
        self._added = 0  # characters added to it since it was read whole

    def compose(self) -> ComposeResult:
        yield Static(id="summary")
        yield CommitTable(dates=False, id="commits")
        yield Vertical(id="output-box")  # the Log is created with the first output

    def on_mount(self) -> None:
        self.border_title = "Deploy"
        self.query_one("#commits").border_title = "Commits"
        self.query_one("#output-box").border_title = "Output"
        self.set_interval(60, self.redraw)  # "(3h ago)" moves on with the clock
        self.set_interval(FOLLOW, self._follow)

    def show(self, deploy: Deploy | None, found: Range | None) -> None:
        """Show ``deploy`` (None: nothing) and the commits it shipped (None: not known yet)."""
        self.deploy, self.found = deploy, found
        self.redraw()

    def redraw(self) -> None:
        deploy, found = self.deploy, self.found
        summary = self.query_one("#summary", Static)
        commits = self.query_one("#commits", CommitTable)
        if deploy is None:
            summary.update("")
            commits.clear()
            self.border_title = "Deploy"
            return
        self.border_title = Content(f"Deploy #{deploy.id}")
        summary.update(self._summary(deploy))
        commits.show(found)
        if found is None:
            commits.border_title = "Commits: loading…"
        elif found.error:
            commits.border_title = Content(found.error)
        elif found.first:
            commits.border_title = "Commits: first deploy here, only its own commit is shown"
        else:
            count = found.count or 0
            commits.border_title = f"Commits shipped: {count}" if count else "Commits shipped: none (a rollback or a redeploy)"

    def _summary(self, deploy: Deploy) -> Content:
        colours = self.app.get_css_variables()
        took = duration(deploy.started_at, deploy.finished_at)
        lines = [
            Content.assemble(
                (deploy.short_sha, "bold"), " → ", (deploy.env, "bold"), "  ",
                Content.from_rich_text(status_text(deploy.status, deploy.trigger, colours, deploy.damaged)),
                f"  exit {deploy.exit_code}" if deploy.exit_code is not None else "",
            ),
        ]
        if deploy.damaged:
            # Another program wrote this row; the fields below are andon's best reading of it.
            lines.append(Content.styled(deploy.damaged, theme_colour(colours, "warning")))
        lines += [
            Content.assemble(
                "by ", (deploy.who or "unknown", "bold"), f" · {deploy.trigger} · {when(deploy.started_at)} UTC",
                f" ({age(deploy.started_at, self.clock())} ago)",
            ),
            Content(
                (f"previous: {short(deploy.prev_sha)}" if deploy.prev_sha else "previous: none (first deploy here)")
                + (f" · took {took}" if took and deploy.finished_at != deploy.started_at else "")
            ),
        ]
        if deploy.reverts:
            lines.append(Content(f"rolls back deploy #{deploy.reverts}"))
        if deploy.reason:
            lines.append(Content.assemble("reason: ", Content(deploy.reason)))
        return Content("\n").join(lines)

    # -- the output ------------------------------------------------------------------------

    def _output(self) -> Log | None:
        found = self.query("#output")
        return found.first() if found else None  # type: ignore[return-value]

    def clear_output(self) -> None:
        self._following(None)
        if output := self._output():
            output.clear()

    async def show_output(self, deploy: Deploy, streamed: Streamed | None = None) -> None:
        """``deploy`` as read with its output (``streamed`` while it runs: its output from a
        position): shown if it is still the selected one."""
        if self.deploy is None or deploy.id != self.deploy.id:
            return
        if streamed is not None and streamed.since not in (0, self.following):
            return  # an older read of the running output, arrived late
        output = self._output()
        if output is None:
            from textual.widgets import Log

            output = Log(id="output", highlight=False)
            await self.query_one("#output-box").mount(output)
        if streamed is None:  # finished: its final output
            self._following(None)
            output.clear()
            output.write(deploy.output or "(no output recorded)")
            output.scroll_end(animate=False)
        elif streamed.since == 0:  # running: everything so far
            self._following(streamed.end)
            self._added = 0
            output.clear()
            output.write(streamed.text)
            output.scroll_end(animate=False)
        else:  # running: what came since the last read
            self._following(streamed.end)
            self._added += len(streamed.text)
            output.write(streamed.text, scroll_end=output.is_vertical_scroll_end)
            if self._added > FOLLOW_LIMIT:
                self.following = 0  # next time read it whole: what the log keeps (bounded), not all it saw

    def _following(self, position: int | None) -> None:
        self.following = position
        self.query_one("#output-box").border_title = "Output" if position is None else "Output · running, as it comes"

    def _follow(self) -> None:
        if self.following is not None and self.deploy is not None and self.query_one("#output-box").display:
            self.post_message(self.OutputWanted(self.deploy.id, self.following))
