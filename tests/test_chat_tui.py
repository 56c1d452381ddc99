"""Pilot tests of chat on the dashboard: it delivers the outbox, toasts a dead letter once, and the
messages screen lists, retries and puts aside. Real receivers on 127.0.0.1, a real log file."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.world import World, resolve_world
from tests.conftest import Repo, wait_for
from tests.test_notify import Answer, Receiver, receiver  # noqa: F401 - the fixture
from tui.app import make_app
from tui.screens.messages import MessagesScreen
from tui.screenshots import settle


@pytest.fixture
def shop(tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> tuple[Repo, Path]:  # noqa: F811
    repo = Repo(tmp_path / "shop")
    sha = repo.commit("first")
    (repo.path / "andon.toml").write_text('[environments.production]\ndeploy = ["true"]\n\n'
                                          '[[notify]]\nkind = "slack"\nurl_env = "ANDON_SLACK_URL"\n')
    monkeypatch.setenv("ANDON_SLACK_URL", receiver.url())
    db = tmp_path / "deploys.db"
    world = resolve_world(repo.path, db, None)
    try:
        world.log.record("production", sha, "succeeded", who="ci")
    finally:
        world.close()
    return repo, db


def world_of(repo: Repo, db: Path) -> World:
    return resolve_world(repo.path, db, None)


def stop_elsewhere(repo: Repo, db: Path, reason: str) -> None:
    """Another andon stops the line and does not deliver (its outbox row waits for whoever does)."""
    world = world_of(repo, db)
    try:
        world.log.stop_line("production", who="bob", reason=reason)
    finally:
        world.close()


def rows(app) -> list[list[str]]:  # type: ignore[no-untyped-def]
    table = app.screen.query_one("#messages")
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def test_the_dashboard_delivers_what_others_wrote(shop, receiver: Receiver) -> None:  # noqa: F811
    repo, db = shop
    stop_elsewhere(repo, db, "api down")
    app = make_app(world_of(repo, db))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert await wait_for(pilot, lambda: len(receiver.accepted()) == 1, 6.0)
        assert "api down" in receiver.accepted()[0].json()["text"]
        await pilot.pause(1.5)
        assert len(receiver.accepted()) == 1  # once


async def test_a_dead_letter_is_a_toast_once_and_the_messages_screen_retries_it(shop, receiver: Receiver) -> None:  # noqa: F811
    repo, db = shop
    app = make_app(world_of(repo, db))
    toasts: list[str] = []
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        original = app.screen.notify

        def record(message: str, **kwargs) -> None:  # type: ignore[no-untyped-def]
            toasts.append(message)
            original(message, **kwargs)

        app.screen.notify = record  # type: ignore[method-assign]
        receiver.default = Answer(404, body=b"no_service")
        await pilot.pause(2.0)  # the dashboard has looked once: nothing dead yet
        stop_elsewhere(repo, db, "db on fire")
        assert await wait_for(pilot, lambda: any("could not be delivered" in t for t in toasts), 6.0)
        assert "slack:ANDON_SLACK_URL" in toasts[-1] and "HTTP 404" in toasts[-1]
        await pilot.pause(2.5)
        assert sum("could not be delivered" in t for t in toasts) == 1  # once, not at every look
        await pilot.press("m")
        assert await wait_for(pilot, lambda: isinstance(app.screen, MessagesScreen))
        assert await wait_for(pilot, lambda: bool(rows(app)))
        (row,) = rows(app)
        assert row[1:3] == ["production", "✘ dead"] and "stopped" in row[4].lower() and "404" in row[5]
        receiver.default = Answer(200)
        await pilot.press("r")
        assert await wait_for(pilot, lambda: rows(app) and rows(app)[0][2] == "✔ sent", 6.0)
        assert len(receiver.accepted()) == 1


async def test_a_read_only_dashboard_delivers_but_cannot_retry_or_put_aside(shop, receiver: Receiver) -> None:  # noqa: F811
    repo, db = shop
    receiver.default = Answer(404)
    stop_elsewhere(repo, db, "x")
    app = make_app(world_of(repo, db), read_only=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("m")
        assert await wait_for(pilot, lambda: isinstance(app.screen, MessagesScreen))
        assert await wait_for(pilot, lambda: bool(rows(app)) and rows(app)[0][2] == "✘ dead", 6.0)
        receiver.default = Answer(200)
        await pilot.press("x")
        await pilot.press("r")
        await pilot.pause(1.5)
        assert rows(app)[0][2] == "✘ dead" and receiver.accepted() == []


async def test_without_receivers_the_dashboard_never_delivers_and_says_so(repo: Repo, tmp_path: Path) -> None:
    sha = repo.commit("first")
    db = tmp_path / "deploys.db"
    world = resolve_world(repo.path, db, None)
    world.log.record("production", sha, "succeeded", who="ci")
    world.close()
    app = make_app(resolve_world(repo.path, db, None))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.pause(2.0)
        assert not [w for w in app.screen.workers if w.group == "chat"]
        await pilot.press("m")
        assert await wait_for(pilot, lambda: isinstance(app.screen, MessagesScreen))
        assert await wait_for(pilot, lambda: "No chat receivers are configured" in
                              str(app.screen.query_one("#messages-empty").render()))
