"""The health of the environment shown: one row per check, the environment's state in the title.

A row reads, left to right: the check's state as a mark that means the same without
colour (✔ up, ▲ degraded, ✘ down, ? no samples yet), its name, the latest latency, a
latency sparkline over the samples shown (Textual's ``Sparkline``), the availability
over them (the share of probes that were not down), the version the service reports
against the live deploy's SHA with any drift called out, and the error of the latest
probe. Everything that came from a server or the log is plain ``Content``, never markup.

The main screen's health feed (:mod:`tui.health_feed`) mounts the panel after the first
frame (this module and ``Sparkline`` are not on the path to it) and hands it a
:class:`~tui.loading.HealthView` whenever a worker has read the samples
(:meth:`HealthPanel.show`). An environment may have a hundred checks, read again after
every round: a show draws only the rows in view whose check changed (the others when
they scroll into view), none of them asks for a layout of the screen unless its size
changes, and the rows are kept from one environment to the next rather than mounted anew.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import Sparkline, Static

from backend.models import DEGRADED, DOWN, HEALTHY, UNKNOWN, UP, HealthSample
from tui.format import age, moment, when
from tui.loading import CheckHealth, HealthView

# Marks that read without colour; the colour is a theme variable.
CHECK_MARK = {UP: "✔", DEGRADED: "▲", DOWN: "✘"}
ENV_MARK = {HEALTHY: "●", DEGRADED: "▲", DOWN: "✘", UNKNOWN: "?"}
STATE_STYLE = {UP: "$success", HEALTHY: "$success", DEGRADED: "$warning", DOWN: "$error", UNKNOWN: "$text-muted"}
DRIFT_WORD = {"behind": "behind", "drift": "drift", "unknown": "unknown version"}

VERIFY_GRACE = 30  # seconds past its end a verification without a verdict is still shown
NAME_WIDTH = 16  # at most: longer names are cut; the column is as wide as the longest name


def minutes(seconds: float) -> str:
    """``83.4`` as ``1:23``."""
    whole = max(0, int(seconds + 0.5))
    return f"{whole // 60}:{whole % 60:02d}"


def latency_text(latency_ms: float | None) -> str:
    if latency_ms is None:
        return "—"
    if latency_ms >= 1000:
        return f"{latency_ms / 1000:.1f} s"
    return f"{latency_ms:.0f} ms"


def availability(samples: Sequence[HealthSample]) -> str:
    """The share of ``samples`` that were not down, as "99.2%" ("100%" and "0%" exactly)."""
    if not samples:
        return "—"
    share = 100 * sum(sample.state != DOWN for sample in samples) / len(samples)
    if share in (0, 100):
        return f"{share:.0f}%"
    return f"{min(share, 99.9):.1f}%"  # 99.96% is not 100%: one probe failed


def short_version(version: str) -> str:
    """A SHA as its first 7 characters; any other version as reported, cut to 20."""
    if 7 <= len(version) <= 64 and all(c in "0123456789abcdefABCDEF" for c in version):
        return version[:7]
    return version if len(version) <= 20 else version[:19] + "…"


def latencies(samples: Sequence[HealthSample]) -> list[float]:
    """The sparkline's data: each probe's latency; one that never answered counts as the slowest."""
    known = [s.latency_ms for s in samples if s.latency_ms is not None]
    worst = max(known, default=0.0)
    data = [s.latency_ms if s.latency_ms is not None else worst for s in samples]
    return data if len(data) > 1 else []  # one bar stretched over the width says nothing


def version_text(check: CheckHealth, live_sha: str | None) -> Content:
    """The reported version against the live deploy's, drift called out."""
    latest = check.samples[-1] if check.samples else None
    if latest is None or latest.version is None:
        return Content("")
    running = short_version(latest.version)
    if live_sha is None:
        return Content.assemble("running ", (running, "bold"), " · nothing live")
    if check.drift in (None, "match"):
        return Content.assemble("running ", (running, "bold"), (" = live", "$text-muted"))
    word = DRIFT_WORD.get(check.drift, check.drift)
    return Content.assemble("running ", (running, "bold"), f" · live {live_sha[:7]} — ",
                            (word, "bold $warning"))


def row_head(check: CheckHealth, width: int = NAME_WIDTH) -> Content:
    """Mark, name (in a column ``width`` wide) and the latest latency: the row's fixed start."""
    latest = check.samples[-1] if check.samples else None
    name = check.name if len(check.name) <= width else check.name[:width - 1] + "…"
    if latest is None:
        mark, style, latency = "?", "$text-muted", ""
    else:
        mark, style, latency = CHECK_MARK.get(latest.state, "?"), STATE_STYLE.get(latest.state, ""), \
            latency_text(latest.latency_ms)
    return Content.assemble((mark, f"bold {style}"), " ", Content(name.ljust(width)), f" {latency:>7}")


def row_tail(check: CheckHealth, live_sha: str | None) -> Content:
    """Availability, version and error: the row's rest, cut at the panel's edge."""
    latest = check.samples[-1] if check.samples else None
    if latest is None:
        return Content.styled("no samples yet", "$text-muted")
    parts = [Content(f"{availability(check.samples):>5}")]
    if latest.state == DOWN and latest.error:
        parts.append(Content.styled(latest.error, "$error"))
    version = version_text(check, live_sha)
    if version:
        parts.append(version)
    if latest.state != DOWN and latest.error:
        parts.append(Content.styled(latest.error, "$warning" if latest.state == DEGRADED else "$text-muted"))
    return Content("  ").join(parts)


class CheckRow(Horizontal):
    """One check: head (mark, name, latency), sparkline, tail (availability, version, error).

    The check's state is a class of the sparkline (``-down``, ``-degraded``, ``-nodata``),
    the one part whose look follows it through CSS (the head's mark and the tail are styled
    content): a class changed on the row would restyle its three children too, and a
    hundred checks going down at once held the screen up a quarter of a second.
    """

    def __init__(self, name: str) -> None:
        super().__init__(classes="check")
        self.check_name = name
        self.head = Static(classes="check-head")
        self.spark = Sparkline([], classes="check-spark")
        self.tail = Static(classes="check-tail")
        self._shown: tuple[object, ...] | None = None  # what draw() last drew
        self._pending: tuple[CheckHealth, str | None, int] | None = None  # what show() gave, not drawn yet
        self._head_width = -1

    def compose(self) -> ComposeResult:
        yield self.head
        yield self.spark
        yield self.tail

    def show(self, check: CheckHealth, live_sha: str | None, name_width: int = NAME_WIDTH, *,
             draw: bool = True) -> None:
        """Show ``check`` in this row: drawn now, or (``draw`` False) when :meth:`draw` is called."""
        self.check_name = check.name  # rows are reused from one environment to the next
        self._pending = (check, live_sha, name_width)
        if draw:
            self.draw()

    def draw(self) -> None:
        """Draw what :meth:`show` was given last; a row whose check, samples, drift and live
        SHA are those it shows is left alone.

        No row asks for a layout unless its head changes width (the head's width is fixed
        for a name column): drawing a row costs the screen a repaint, not a reflow.
        """
        if self._pending is None:
            return
        check, live_sha, name_width = self._pending
        self._pending = None
        shown = (check.name, check.samples, check.drift, live_sha, name_width)
        if shown == self._shown:
            return
        self._shown = shown
        latest = check.samples[-1] if check.samples else None
        spark = self.spark
        spark.set_class(latest is not None and latest.state == DOWN, "-down")
        spark.set_class(latest is not None and latest.state == DEGRADED, "-degraded")
        spark.set_class(latest is None, "-nodata")
        head = row_head(check, name_width)
        self.head.update(head, layout=head.cell_length != self._head_width)
        self._head_width = head.cell_length
        spark.data = latencies(check.samples)
        self.tail.update(row_tail(check, live_sha), layout=False)


class HealthPanel(Vertical):
    """Every check of the shown environment; its state (and since when) in the border title."""

    DEFAULT_CSS = """
    HealthPanel {
        height: auto;
        max-height: 10;
        overflow-y: auto;
        border: round $secondary 60%;
        border-title-color: $text;
        padding: 0 1;
    }
    HealthPanel > #health-rows { height: auto; }
    HealthPanel .check { height: 1; }
    HealthPanel .check-head { width: auto; margin-right: 1; }
    HealthPanel .check-spark { width: 24; margin-right: 1; }
    HealthPanel .check-tail { width: 1fr; height: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    HealthPanel .check-spark > .sparkline--min-color { color: $success 50%; }
    HealthPanel .check-spark > .sparkline--max-color { color: $success; }
    HealthPanel .check-spark.-degraded > .sparkline--max-color { color: $warning; }
    HealthPanel .check-spark.-down > .sparkline--max-color { color: $error; }
    HealthPanel .check-spark.-nodata { visibility: hidden; }
    HealthPanel > #health-none { color: $text-muted; height: 1; display: none; }
    """

    def __init__(self, clock: Callable[[], datetime], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.view: HealthView | None = None
        self._showing = asyncio.Lock()  # one show at a time: rows are replaced across awaits
        self._rows: list[CheckRow] = []  # the rows shown, in the order of the view's checks
        self._none_text: Content | None = None  # what #health-none says
        # andon deploy verifying a deploy here: (deploy id, watching since, until), counted down.
        self.verification: tuple[int | None, datetime, datetime] | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="health-none")
        yield Vertical(id="health-rows")

    def on_mount(self) -> None:
        self.border_title = "Health"
        self.set_interval(1, self._tick)
        self.watch(self, "scroll_y", self._draw_in_view, init=False)

    def on_resize(self) -> None:
        self._draw_in_view()

    def _in_view(self) -> range:
        """The indexes of the rows in view (each row is one line; none more: drawing a row
        out of view, even the next one, costs the repaint a new map of every widget)."""
        top = self.scroll_y
        return range(max(0, math.floor(top)), min(len(self._rows), math.ceil(top + self.size.height)))

    def _draw_in_view(self) -> None:
        for index in self._in_view():
            self._rows[index].draw()

    def verifying(self, deploy_id: int | None, started: str | None, until: str | None) -> None:
        """A deploy is being verified (``andon deploy`` watches its health) from ``started``
        until ``until``; None: no verification running."""
        begun, ends = moment(started), moment(until)
        self.verification = (deploy_id, begun, ends) if begun and ends and ends > begun else None
        self._retitle()

    def _tick(self) -> None:
        if self.verification is not None:
            self._retitle()

    def _retitle(self) -> None:
        if self.view is not None:
            self.border_title = self.title(self.view)
    async def show(self, view: HealthView) -> None:
        """Show ``view`` (the environment's checks and their samples, as just read)."""
        async with self._showing:
            if self.view is not None and self.view.env != view.env:
                self.scroll_home(animate=False)  # another environment's checks: from the first
            self.view = view
            self.border_title = self.title(view)
            window = max((len(check.samples) for check in view.checks), default=0)
            self.border_subtitle = f"latency and availability over the last {window} probes" if window > 1 else ""
            names = [check.name for check in view.checks]
            none_text = self.none_text(view)
            if none_text != self._none_text:  # a Static's update asks for a layout of the whole screen
                self._none_text = none_text
                self.query_one("#health-none", Static).update(none_text)
            self.query_one("#health-none", Static).display = not names
            # The rows shown are kept and redrawn for the new checks (another environment's):
            # mounting a hundred rows costs the screen a third of a second, redrawing them little.
            rows = self._rows
            if len(rows) > len(names):
                surplus, self._rows = rows[len(names):], rows[:len(names)]
                await self.query_one("#health-rows", Vertical).remove_children(surplus)
            elif len(rows) < len(names):
                more = [CheckRow(name) for name in names[len(rows):]]
                self._rows = rows + more
                await self.query_one("#health-rows", Vertical).mount_all(more)
            rows = self._rows
            if names:
                # Only the rows in view are drawn now, the others as they scroll into view:
                # a Textual widget redrawn out of view costs the screen a new map of every
                # widget (~40 ms with a hundred checks), and a read is made every round.
                width = min(NAME_WIDTH, max(len(name) for name in names))
                for row, check in zip(rows, view.checks, strict=True):
                    row.show(check, view.live_sha, width, draw=False)
                self._draw_in_view()

    def title(self, view: HealthView) -> Content:
        env = Content.styled(view.env, "bold")
        if view.error:
            return Content.assemble("Health of ", env, ": ", Content.styled(view.error, "$error"))
        if not view.checks:
            return Content.assemble("Health of ", env)
        state = view.state
        mark = Content.styled(f"{ENV_MARK.get(state, '?')} {state}", f"bold {STATE_STYLE.get(state, '')}")
        since = ""
        if view.since:
            now = self.clock()
            stamp = when(view.since)
            # The time alone when it was today (UTC), else the date too.
            shown = stamp[11:] if stamp.startswith(now.strftime("%Y-%m-%d")) else stamp
            since = f" since {shown} ({age(view.since, now)} ago)"
        return Content.assemble("Health of ", env, ": ", mark, since, self.verification_text())

    def verification_text(self) -> Content:
        """" · verifying deploy #67 0:04 / 0:10" while andon deploy watches it, else nothing."""
        if self.verification is None:
            return Content("")
        deploy_id, begun, ends = self.verification
        now = self.clock()
        if now > ends + timedelta(seconds=VERIFY_GRACE):  # its verdict never came: the deploy was stopped
            return Content("")
        which = f"deploy #{deploy_id}" if deploy_id is not None else "the deploy"
        watched = minutes(min((now - begun).total_seconds(), (ends - begun).total_seconds()))
        return Content.assemble(" · ", Content.styled(f"verifying {which} {watched} / "
                                                      f"{minutes((ends - begun).total_seconds())}", "bold $accent"))

    @staticmethod
    def none_text(view: HealthView) -> Content:
        if view.error:
            return Content("")
        env = view.env
        return Content(f"No health checks for {env}: add [[environments.{env}.health]] with a name and a url "
                       "to andon.toml to watch it")
