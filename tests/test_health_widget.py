"""Pilot tests of the health panel and the environment bar's health marks.

Real repositories and real deploy logs holding real samples (written as the prober
writes them, through ``record_health``); the lease of every environment is held by
"another andon", so the dashboard under test never probes and what it shows is exactly
what the test wrote.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from textual.content import Content
from textual.widgets import Sparkline, Static

from backend.demo import DemoService
from backend.models import DEGRADED, DOWN, UP, HealthSample, to_iso
from backend.store import DeployLog
from backend.world import World, resolve_world
from tests.conftest import Repo, raw, wait_for
from tui.app import make_app
from tui.first_screen import load_first_screen
from tui.loading import health_news
from tui.screenshots import settle
from tui.widgets.envbar import EnvBar
from tui.widgets.health import CheckRow, HealthPanel, availability, latency_text, short_version

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)

CONFIG = """\
[environments.production]
deploy = ["true"]

[[environments.production.health]]
name = "api"
url = "http://127.0.0.1:9/healthz"
interval = 2
timeout = 1
version = "build.sha"
degraded_ms = 500

[[environments.production.health]]
name = "web"
url = "http://127.0.0.1:9/"
interval = 2
timeout = 1

[environments.staging]
deploy = ["true"]

[[environments.staging.health]]
name = "api"
url = "http://127.0.0.1:9/healthz"
interval = 2
timeout = 1

[environments.qa]
deploy = ["true"]
"""


def sample(env: str, check: str, seconds_ago: float, state: str = UP, latency: float | None = 20.0,
           version: str | None = None, error: str = "", status: int | None = 200) -> HealthSample:
    return HealthSample(env, check, to_iso(NOW - timedelta(seconds=seconds_ago)), state, status, latency, version,
                        error)


class World_(dict):  # noqa: N801 - a small record of what the fixture made
    pass


@pytest.fixture
def health_world(repo: Repo, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Commits c0..c5; production and staging live at c4; its checks' leases held elsewhere."""
    (repo.path / "andon.toml").write_text(CONFIG)
    repo.git("add", "andon.toml")
    shas = [repo.commit(f"c{n}") for n in range(6)]
    db = tmp_path / "deploys.db"
    log = DeployLog.open(db, clock=lambda: NOW)
    log.record("production", shas[4], "succeeded", who="ci", at=NOW - timedelta(hours=1))
    log.record("staging", shas[4], "succeeded", who="ci", at=NOW - timedelta(hours=2))
    for env in ("production", "staging"):
        # "andon watch" on another host: this dashboard never probes.
        assert log.take_lease(f"health:{env}", "watch-elsewhere", 3600)
    made = World_(repo=repo, db=db, shas=shas, log=log)
    yield made
    log.close()


def record_round(log: DeployLog, samples: list[HealthSample], state: str, env: str = "production") -> None:
    log.record_health(samples, state, who="probe", env=env)


def history_of(env: str, check: str, count: int, *, version: str | None = None, state: str = UP,
               latency: float = 20.0, error: str = "", end: float = 1.0) -> list[HealthSample]:
    """``count`` samples two seconds apart, the newest ``end`` seconds before NOW."""
    return [sample(env, check, end + 2 * (count - 1 - n), state, latency + (n % 5) * 3, version, error)
            for n in range(count)]


def world_for(made: World_) -> World:
    return resolve_world(made["repo"].path, made["db"], None, clock=lambda: NOW)


def plain(text: object) -> str:
    """What a person reads: a Content's text without its styles (a border title is kept as markup)."""
    if isinstance(text, str):
        return Content.from_markup(text).plain
    return str(getattr(text, "plain", text))


def panel_of(app) -> HealthPanel:  # type: ignore[no-untyped-def]
    return app.screen.query_one(HealthPanel)


def row_text(row: CheckRow) -> str:
    head = plain(row.query_one(".check-head", Static).render())
    tail = plain(row.query_one(".check-tail", Static).render())
    return f"{head} | {tail}"


def rows_of(app) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {row.check_name: row_text(row) for row in panel_of(app).query(CheckRow)}


async def open_dashboard(made: World_, size: tuple[int, int] = (120, 40), **kwargs):  # type: ignore[no-untyped-def]
    world = world_for(made)
    return make_app(world, first=load_first_screen(world), **kwargs)


# -- pure formatting ----------------------------------------------------------------------


def test_latency_availability_and_versions_read_as_a_person_expects() -> None:
    assert latency_text(None) == "—" and latency_text(12.4) == "12 ms" and latency_text(1234) == "1.2 s"
    ups = [sample("p", "api", n) for n in range(3)]
    assert availability([]) == "—" and availability(ups) == "100%"
    assert availability([*ups, sample("p", "api", 9, DOWN)]) == "75.0%"
    many = [sample("p", "api", n) for n in range(2000)] + [sample("p", "api", 1, DOWN)]
    assert availability(many) == "99.9%"  # one failure is never rounded away to 100%
    assert availability([sample("p", "api", 1, DOWN)]) == "0%"
    assert short_version("9f8e7d6c5b4a39281706f5e4d3c2b1a098765432") == "9f8e7d6"
    assert short_version("v1.2.3") == "v1.2.3"
    assert short_version("x" * 30) == "x" * 19 + "…"


def test_a_toast_names_the_environment_the_state_and_why() -> None:
    down = {"api": sample("production", "api", 1, DOWN, None, error="timed out after 2s", status=None)}
    assert health_news("production", DOWN, down) == "production is down: api timed out after 2s"
    slow = {"api": sample("production", "api", 1, DEGRADED, 900.0), "web": sample("production", "web", 1)}
    assert health_news("production", DEGRADED, slow) == "production is degraded: api"
    assert health_news("production", "healthy", {}, DOWN) == "production is healthy again"
    assert health_news("production", "healthy", {}) == "production is healthy"


# -- the panel on the dashboard -------------------------------------------------------------


async def test_healthy_checks_show_marks_latency_sparkline_availability_and_the_live_version(health_world) -> None:
    made = health_world
    live = made["shas"][4]
    record_round(made["log"], history_of("production", "api", 30, version=live)
                 + history_of("production", "web", 30), "healthy")
    app = await open_dashboard(made)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        panel = panel_of(app)
        assert "Health of production: ● healthy since 15:00 (0s ago)" == plain(panel.border_title)
        rows = rows_of(app)
        assert list(rows) == ["api", "web"]  # in the configured order
        assert rows["api"].startswith("✔ api")
        assert "32 ms" in rows["api"] and "100%" in rows["api"]
        assert f"running {live[:7]} = live" in rows["api"]
        assert "running" not in rows["web"]  # web reports no version: nothing to compare
        spark = panel.query(CheckRow).first().query_one(Sparkline)
        assert spark.data is not None and len(spark.data) == 30
        assert "over the last 30 probes" in plain(panel.border_subtitle)


async def test_a_slow_check_is_degraded_and_so_is_the_environment(health_world) -> None:
    made = health_world
    live = made["shas"][4]
    record_round(made["log"], history_of("production", "api", 10, version=live, latency=900, state=DEGRADED)
                 + history_of("production", "web", 10), "degraded")
    app = await open_dashboard(made)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert "▲ degraded" in plain(panel_of(app).border_title)
        rows = rows_of(app)
        assert rows["api"].startswith("▲ api") and "912 ms" in rows["api"]
        assert rows["web"].startswith("✔ web")
        assert panel_of(app).query(CheckRow).first().spark.has_class("-degraded")


async def test_a_down_check_shows_its_error_and_the_availability_it_cost(health_world) -> None:
    made = health_world
    ups = history_of("production", "api", 8, version=made["shas"][4], end=5)
    downs = [sample("production", "api", 3, DOWN, None, error="timed out after 1s", status=None),
             sample("production", "api", 1, DOWN, None, error="timed out after 1s", status=None)]
    web = [sample("production", "web", 1, DOWN, 3.0, error="HTTP 500", status=500)]
    record_round(made["log"], ups + downs + web, "down")
    app = await open_dashboard(made)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert "✘ down" in plain(panel_of(app).border_title)
        rows = rows_of(app)
        assert rows["api"].startswith("✘ api") and "—" in rows["api"]
        assert "80.0%" in rows["api"] and "timed out after 1s" in rows["api"]
        assert rows["web"].startswith("✘ web") and "HTTP 500" in rows["web"] and "0%" in rows["web"]
        assert all(row.spark.has_class("-down") for row in panel_of(app).query(CheckRow))


async def test_a_version_behind_the_live_deploy_or_elsewhere_is_called_out(health_world) -> None:
    made = health_world
    shas = made["shas"]
    record_round(made["log"], history_of("production", "api", 5, version=shas[2])
                 + history_of("production", "web", 5), "healthy")
    app = await open_dashboard(made)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert f"running {shas[2][:7]} · live {shas[4][:7]} — behind" in rows_of(app)["api"]
        # A newer build than the one deployed (not an ancestor of it): drift.
        record_round(made["log"], [sample("production", "api", 0.5, version=shas[5])], "healthy")
        panel_of(app).screen.health.read()
        assert await wait_for(pilot, lambda: "— drift" in rows_of(app)["api"])
        assert f"running {shas[5][:7]} · live {shas[4][:7]} — drift" in rows_of(app)["api"]
        # A version that is not a commit andon can place.
        record_round(made["log"], [sample("production", "api", 0.2, version="v1.2.3")], "healthy")
        panel_of(app).screen.health.read()
        assert await wait_for(pilot, lambda: "— unknown version" in rows_of(app)["api"])
        assert f"running v1.2.3 · live {shas[4][:7]} — unknown version" in rows_of(app)["api"]


async def test_server_text_is_shown_literally_never_as_markup(health_world) -> None:
    made = health_world
    nasty = "[bold red]pwned[/] [/]"
    record_round(made["log"], [sample("production", "api", 1, DOWN, 5.0, version="[b]v1[/b]", error=nasty,
                                      status=500), sample("production", "web", 1)], "degraded")
    app = await open_dashboard(made)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.is_running
        text = rows_of(app)["api"]
        assert nasty in text and "running [b]v1[/b]" in text


async def test_an_environment_without_checks_says_how_to_add_them(health_world) -> None:
    made = health_world
    app = await open_dashboard(made)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.screen.switch_to("qa")
        await settle(pilot)
        panel = panel_of(app)
        assert plain(panel.border_title) == "Health of qa"
        assert not panel.query(CheckRow)
        line = plain(panel.query_one("#health-none", Static).render())
        assert line.startswith("No health checks for qa: add [[environments.qa.health]]")
        assert panel.region.height == 3  # one quiet line in its border


async def test_checks_without_samples_yet_are_listed_and_the_state_is_unknown(health_world) -> None:
    app = await open_dashboard(health_world)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert "? unknown" in plain(panel_of(app).border_title)
        assert rows_of(app)["api"].startswith("? api") and "no samples yet" in rows_of(app)["api"]


async def test_old_samples_say_nothing_the_state_is_unknown(health_world) -> None:
    made = health_world
    record_round(made["log"], history_of("production", "api", 5, end=600) + history_of("production", "web", 5,
                                                                                        end=600), "healthy")
    app = await open_dashboard(made)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        # Recorded healthy ten minutes ago, by a prober that has stopped: not known now.
        assert "? unknown" in plain(panel_of(app).border_title)


async def test_the_environment_bar_marks_each_environments_health(health_world) -> None:
    made = health_world
    record_round(made["log"], history_of("production", "api", 3, state=DOWN, error="connection refused",
                                         latency=0) + history_of("production", "web", 3), "degraded")
    record_round(made["log"], history_of("staging", "api", 3, state=DOWN, error="connection refused"), "down",
                 env="staging")
    app = await open_dashboard(made)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        bar = app.screen.query_one(EnvBar)
        assert bar.health == {"production": DEGRADED, "staging": DOWN}
        # qa has no checks: no mark.
        assert bar.render_line(0).text.startswith(" ▲ production  ✘ staging  qa ")
        # The marks are coloured through the theme.
        colours = app.get_css_variables()
        styles = {seg.text: seg.style for seg in bar.render_line(0) if seg.text in ("▲", "✘")}
        assert styles["▲"].color.name.lower() == colours["warning"].lower()
        assert styles["✘"].color.name.lower() == colours["error"].lower()
        # A click on a name with a mark still chooses it ("staging" starts at column 17).
        assert await pilot.click(EnvBar, offset=(19, 0))
        await settle(pilot)
        assert app.screen.env == "staging"


async def test_a_change_of_health_from_another_andon_is_a_toast_and_shows_within_a_second(health_world) -> None:
    made = health_world
    live = made["shas"][4]
    record_round(made["log"], history_of("production", "api", 5, version=live)
                 + history_of("production", "web", 5), "healthy")
    app = await open_dashboard(made)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert "● healthy" in plain(panel_of(app).border_title)
        assert not app._notifications
        other = DeployLog.open(made["db"], clock=lambda: NOW)
        record_round(other, [sample("production", "api", 0.5, DOWN, None, error="timed out after 1s", status=None),
                             sample("production", "web", 0.5, DOWN, None, error="connection refused",
                                    status=None)], "down")
        written = time.monotonic()
        assert await wait_for(pilot, lambda: "✘ down" in plain(panel_of(app).border_title), seconds=1.0)
        assert await wait_for(pilot, lambda: bool(app._notifications), seconds=1.0 - (time.monotonic() - written))
        assert time.monotonic() - written < 1.0
        toast = list(app._notifications)[0]
        assert toast.message == "production is down: api timed out after 1s; web connection refused"
        assert toast.severity == "error"
        assert app.screen.query_one(EnvBar).health["production"] == DOWN
        other.close()


async def test_sample_writes_do_not_reload_the_deploys(health_world) -> None:
    made = health_world
    record_round(made["log"], history_of("production", "api", 3) + history_of("production", "web", 3), "healthy")
    app = await open_dashboard(made, poll_interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        reloads: list[str] = []
        loader = screen.loader
        deploys, first_screen, details = loader.deploys, loader.first_screen, loader.details
        loader.deploys = lambda *args, **kwargs: (reloads.append("deploys"), deploys(*args, **kwargs))[-1]
        loader.first_screen = lambda *args: (reloads.append("all"), first_screen(*args))[-1]
        loader.details = lambda *args, **kwargs: (reloads.append("details"), details(*args, **kwargs))[-1]
        other = DeployLog.open(made["db"], clock=lambda: NOW)
        version = loader.version
        for n in range(5):  # rounds of samples with no change of state: no event
            record_round(other, [sample("production", "api", 0.5 - n / 10, latency=500.0 + n),
                                 sample("production", "web", 0.5 - n / 10)], "healthy")
        assert await wait_for(pilot, lambda: loader.version != version)
        # The samples are shown, read on the panel's own interval (2 s here), and nothing else was read.
        assert await wait_for(pilot, lambda: "504 ms" in rows_of(app)["api"], seconds=5)
        await pilot.pause(0.3)
        await settle(pilot)
        assert reloads == []
        other.close()


async def test_another_environment_shows_its_own_checks_and_back_again(health_world) -> None:
    made = health_world
    live = made["shas"][4]
    record_round(made["log"], history_of("production", "api", 5, version=live)
                 + history_of("production", "web", 5, state=DOWN, error="HTTP 500"), "degraded")
    record_round(made["log"], history_of("staging", "api", 5, version=made["shas"][2]), "healthy", env="staging")
    # staging is live at c4 as well, and its api reports c2: behind.
    app = await open_dashboard(made)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert list(rows_of(app)) == ["api", "web"] and rows_of(app)["web"].startswith("✘ web")
        app.screen.switch_to("staging")
        await settle(pilot)
        assert plain(panel_of(app).border_title).startswith("Health of staging: ● healthy")
        rows = rows_of(app)
        assert list(rows) == ["api"]  # one check: no row left over from production
        assert rows["api"].startswith("✔ api") and f"running {made['shas'][2][:7]} · live {live[:7]} — behind" in rows["api"]
        assert not panel_of(app).query(CheckRow).first().spark.has_class("-down")
        app.screen.switch_to("production")
        await settle(pilot)
        rows = rows_of(app)
        assert list(rows) == ["api", "web"]
        assert rows["web"].startswith("✘ web") and "HTTP 500" in rows["web"]
        assert f"running {live[:7]} = live" in rows["api"]
        assert [row.spark.has_class("-down") for row in panel_of(app).query(CheckRow)] == [False, True]


async def test_rows_beyond_the_panels_height_are_drawn_as_they_scroll_into_view(repo: Repo, tmp_path: Path) -> None:
    checks = "".join(f'[[environments.production.health]]\nname = "c{n:02}"\nurl = "http://127.0.0.1:9/{n}"\n'
                     "interval = 2\ntimeout = 1\n" for n in range(20))
    (repo.path / "andon.toml").write_text('[environments.production]\ndeploy = ["true"]\n' + checks)
    sha = repo.commit("live")
    db = tmp_path / "deploys.db"
    log = DeployLog.open(db, clock=lambda: NOW)
    log.record("production", sha, "succeeded", who="ci", at=NOW - timedelta(hours=1))
    assert log.take_lease("health:production", "watch-elsewhere", 3600)  # this dashboard never probes
    record_round(log, [s for n in range(20) for s in history_of("production", f"c{n:02}", 3, latency=10.0 + n)],
                 "healthy")
    world = resolve_world(repo.path, db, None, clock=lambda: NOW)
    app = make_app(world, first=load_first_screen(world))
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            panel = panel_of(app)
            assert panel.size.height == 8  # eight of the twenty rows in view
            rows = rows_of(app)
            assert list(rows) == [f"c{n:02}" for n in range(20)]
            assert rows["c00"].startswith("✔ c00") and rows["c07"].startswith("✔ c07")
            assert rows["c19"] == " | "  # far out of view: not drawn yet
            panel.scroll_end(animate=False)
            await pilot.pause()
            assert rows_of(app)["c19"].startswith("✔ c19") and "35 ms" in rows_of(app)["c19"]
            # A read while scrolled down draws the rows in view with their new samples.
            record_round(log, [sample("production", "c19", 0.5, DOWN, None, error="connection refused",
                                      status=None)], "degraded")
            app.screen.health.read()
            assert await wait_for(pilot, lambda: rows_of(app)["c19"].startswith("✘ c19"))
            assert "connection refused" in rows_of(app)["c19"]
    finally:
        world.close()
        log.close()


async def test_on_a_narrow_terminal_the_health_rows_fit_the_width(health_world) -> None:
    made = health_world
    record_round(made["log"], history_of("production", "api", 5, version=made["shas"][2])
                 + history_of("production", "web", 5), "healthy")
    app = await open_dashboard(made)
    async with app.run_test(size=(90, 30)) as pilot:
        await settle(pilot)
        panel = panel_of(app)
        assert app.screen.has_class("-narrow")
        assert panel.region.width == 90 and panel.region.height == 4
        for row in panel.query(CheckRow):
            assert row.region.right <= panel.region.right


# -- probing: the dashboard's own watcher, only when nobody else probes ------------------------


def probing_world(repo: Repo, tmp_path: Path, url: str, *, timeout: float = 1.0,
                  interval: float = 1.0) -> tuple[Path, str]:
    """One environment, one check at ``url`` (probed every second); nobody else holds its lease."""
    (repo.path / "andon.toml").write_text(
        '[environments.production]\ndeploy = ["true"]\n\n'
        f'[[environments.production.health]]\nname = "api"\nurl = "{url}"\ninterval = {interval}\n'
        f'timeout = {timeout}\nversion = "build.sha"\n')
    sha = repo.commit("live")
    db = tmp_path / "deploys.db"
    log = DeployLog.open(db)
    log.record("production", sha, "succeeded", who="ci", at=datetime.now(UTC) - timedelta(hours=1))
    log.close()
    return db, sha


async def test_the_dashboard_probes_when_nobody_else_does(repo: Repo, tmp_path: Path) -> None:
    state = tmp_path / "service"
    state.mkdir()
    service = DemoService(state)
    try:
        db, sha = probing_world(repo, tmp_path, service.url("production"))
        (state / "production.json").write_text(json.dumps({"sha": sha}))
        world = resolve_world(repo.path, db, None)  # the real clock: these are real probes
        app = make_app(world, first=load_first_screen(world))
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            assert await wait_for(pilot, lambda: rows_of(app).get("api", "").startswith("✔ api"), seconds=10)
            assert f"running {sha[:7]} = live" in rows_of(app)["api"]
            assert "● healthy" in plain(panel_of(app).border_title)
            watcher = app.screen.health.watcher
            assert watcher is not None and watcher.held == {"production"}
            lease = world.log.lease("health:production")
            assert lease is not None and lease.holder == watcher.holder
            # The service breaks: the panel, the bar and a toast say so, from this dashboard's own probes.
            (state / "production.json").write_text(json.dumps({"sha": sha, "broken": True}))
            assert await wait_for(pilot, lambda: "✘ down" in plain(panel_of(app).border_title), seconds=10)
            assert "HTTP 503" in rows_of(app)["api"]
            assert await wait_for(pilot, lambda: any(n.message == "production is down: api HTTP 503"
                                                      for n in app._notifications))
        # Closed: the lease is free at once for another andon.
        other = DeployLog.open(db)
        assert other.lease("health:production") is None
        other.close()
        world.close()
    finally:
        service.stop()


def probing_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "andon-health"]


async def test_samples_probed_appear_in_the_panel_without_waiting_for_the_read_interval(
    repo: Repo, tmp_path: Path
) -> None:
    state = tmp_path / "service"
    state.mkdir()
    service = DemoService(state)
    try:
        # Probed and read every 30 s: only the dashboard's own round can show a sample sooner.
        # (Its writes go through the dashboard's own connection, which its poller never sees.)
        db, sha = probing_world(repo, tmp_path, service.url("production"), timeout=2, interval=30)
        (state / "production.json").write_text(json.dumps({"sha": sha}))
        world = resolve_world(repo.path, db, None)
        app = make_app(world, first=load_first_screen(world))
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            opened = time.monotonic()
            assert rows_of(app)["api"].startswith("? api")  # read before anything was probed
            assert await wait_for(pilot, lambda: rows_of(app)["api"].startswith("✔ api"), seconds=5)
            assert time.monotonic() - opened < 5  # the first probe is a second after the first frame
            assert f"running {sha[:7]} = live" in rows_of(app)["api"]
        world.close()
    finally:
        service.stop()


async def test_the_dashboard_probes_on_a_thread_of_its_own_that_stops_with_it(repo: Repo, tmp_path: Path) -> None:
    # A listening socket that never accepts: the probe waits for its 5 s timeout.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        db, _ = probing_world(repo, tmp_path, f"http://127.0.0.1:{silent.getsockname()[1]}/healthz",
                              timeout=5, interval=5)
        world = resolve_world(repo.path, db, None)
        app = make_app(world, first=load_first_screen(world))
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            assert await wait_for(pilot, lambda: (watcher := app.screen.health.watcher) is not None
                                  and watcher.held == {"production"})
            assert len(probing_threads()) == 1
            await pilot.pause(0.3)  # the probe has sent its request and waits for an answer
            leaving = time.monotonic()
        # Quitting does not wait for the probe: the thread is stopped and gone, the lease free.
        assert time.monotonic() - leaving < 1.5
        assert probing_threads() == []
        other = DeployLog.open(db)
        assert other.lease("health:production") is None
        assert other.health_samples("production") == {}
        other.close()
        world.close()
    finally:
        silent.close()


async def test_a_second_dashboard_does_not_probe_while_the_first_holds_the_lease(
    repo: Repo, tmp_path: Path
) -> None:
    state = tmp_path / "service"
    state.mkdir()
    service = DemoService(state)
    try:
        db, sha = probing_world(repo, tmp_path, service.url("production"))
        (state / "production.json").write_text(json.dumps({"sha": sha}))
        first_world, second_world = resolve_world(repo.path, db, None), resolve_world(repo.path, db, None)
        first = make_app(first_world, first=load_first_screen(first_world))
        second = make_app(second_world, first=load_first_screen(second_world))
        async with first.run_test(size=(120, 40)) as first_pilot:
            await settle(first_pilot)
            assert await wait_for(first_pilot, lambda: (watcher := first.screen.health.watcher) is not None
                                  and watcher.held == {"production"})
            async with second.run_test(size=(120, 40)) as second_pilot:
                await settle(second_pilot)
                assert await wait_for(second_pilot, lambda: second.screen.health.watcher is not None)
                await second_pilot.pause(2.5)  # two intervals and more
                assert second.screen.health.watcher.held == frozenset()
                # It shows the first one's probes all the same (they reach it as anyone's writes do).
                assert rows_of(second)["api"].startswith("✔ api")
                assert first.screen.health.watcher.held == {"production"}
        assert probing_threads() == []
        first_world.close()
        second_world.close()
    finally:
        service.stop()


async def test_a_dashboard_does_not_probe_what_another_andon_probes(repo: Repo, tmp_path: Path) -> None:
    state = tmp_path / "service"
    state.mkdir()
    service = DemoService(state)
    try:
        db, sha = probing_world(repo, tmp_path, service.url("production"))
        (state / "production.json").write_text(json.dumps({"sha": sha}))
        other = DeployLog.open(db)
        assert other.take_lease("health:production", "andon watch elsewhere", 3600)
        world = resolve_world(repo.path, db, None)
        app = make_app(world, first=load_first_screen(world))
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            assert await wait_for(pilot, lambda: app.screen.health.watcher is not None)
            await pilot.pause(2.5)  # two intervals and more
            assert app.screen.health.watcher.held == frozenset()
            assert other.health_samples("production") == {}
            assert rows_of(app)["api"].startswith("? api")  # nobody probed: nothing to show
        other.close()
        world.close()
    finally:
        service.stop()


async def test_probing_a_service_that_never_answers_never_blocks_the_screen(repo: Repo, tmp_path: Path) -> None:
    # A listening socket that never accepts: the connection waits in the backlog, no answer ever comes.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        db, _ = probing_world(repo, tmp_path, f"http://127.0.0.1:{silent.getsockname()[1]}/healthz", timeout=1.0)
        world = resolve_world(repo.path, db, None)
        app = make_app(world, first=load_first_screen(world))
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            ticks: list[float] = []
            app.set_interval(0.02, lambda: ticks.append(time.monotonic()))
            assert await wait_for(pilot, lambda: "timed out after 1s" in rows_of(app).get("api", ""), seconds=10)
            assert rows_of(app)["api"].startswith("✘ api")
            # The event loop went on while the probe waited: no gap between two ticks near the timeout.
            gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
            assert len(ticks) > 20 and max(gaps) < 0.5, max(gaps)
        world.close()
    finally:
        silent.close()


async def test_a_deploy_being_verified_is_counted_down_in_the_health_title(health_world) -> None:
    made = health_world
    record_round(made["log"], history_of("production", "api", 5, version=made["shas"][4])
                 + history_of("production", "web", 5), "healthy")
    app = await open_dashboard(made, poll_interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert "verifying" not in plain(panel_of(app).border_title)
        # andon deploy (another process) starts watching deploy #7 for ten seconds, four seconds ago.
        detail = json.dumps({"seconds": 10, "failures": 3, "checks": ["api", "web"],
                             "until": to_iso(NOW + timedelta(seconds=6))})
        with raw(made["db"]) as conn:
            conn.execute("INSERT INTO events (at, kind, env, deploy_id, who, detail) VALUES (?, ?, ?, ?, ?, ?)",
                         (to_iso(NOW), "deploy.verifying", "production", 7, "ci", detail))
        assert await wait_for(pilot, lambda: "verifying" in plain(panel_of(app).border_title), seconds=1.0)
        assert plain(panel_of(app).border_title).endswith(" · verifying deploy #7 0:04 / 0:10")
        # Its verdict ends it; a verification in another environment is not this one's.
        with raw(made["db"]) as conn:
            conn.execute("INSERT INTO events (at, kind, env, deploy_id, who, detail) VALUES (?, ?, ?, ?, ?, ?)",
                         (to_iso(NOW), "deploy.verifying", "staging", 8, "ci", detail))
            conn.execute("INSERT INTO events (at, kind, env, deploy_id, who, detail) VALUES (?, ?, ?, ?, ?, ?)",
                         (to_iso(NOW), "deploy.verified", "production", 7, "ci", '{"status": "succeeded"}'))
        assert await wait_for(pilot, lambda: "verifying" not in plain(panel_of(app).border_title), seconds=1.0)
