"""Deploy verification against the state before: real health services on 127.0.0.1, a real deploy
script, a real git repository and SQLite log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.deployer import deploy
from backend.models import SUCCEEDED, UNHEALTHY
from backend.runner import Runner
from backend.world import World, resolve_world
from tests.conftest import Repo
from tests.test_cli import toml_list
from tests.test_deployer import VERIFY_SCRIPT
from tests.test_watcher import Service


class Two:
    """production with two checks: ``web`` (reports the deployed SHA; ``break`` deploys break it)
    and ``api`` (answers 503 from the start: already down before any deploy)."""

    def __init__(self, repo: Repo, tmp_path: Path) -> None:
        running = tmp_path / "running-version"
        self.web = Service(version_file=running, broken_file=Path(f"{running}.broken"))
        self.api = Service()
        self.api.status = 503
        (tmp_path / "deploy.sh").write_text(VERIFY_SCRIPT)
        config = 'branch = "main"\n'
        for mode in ("ok", "break"):
            config += (f"[environments.{mode}]\n"
                       f"deploy = {toml_list('sh', str(tmp_path / 'deploy.sh'), '{sha}', str(running), mode)}\n"
                       "verify_seconds = 1.2\nverify_failures = 2\nauto_stop = false\n"
                       f'[[environments.{mode}.health]]\nname = "web"\nurl = "{self.web.url}"\ninterval = 0.2\n'
                       'timeout = 0.2\nversion = "build.sha"\n'
                       f'[[environments.{mode}.health]]\nname = "api"\nurl = "{self.api.url}"\ninterval = 0.2\n'
                       'timeout = 0.2\nversion = "build.sha"\n')
        (repo.path / "andon.toml").write_text(config)
        self.shas = [repo.commit(f"change {n}") for n in range(2)]
        self.world: World = resolve_world(repo.path, None, None)

    def close(self) -> None:
        self.world.close()
        self.web.close()
        self.api.close()


@pytest.fixture
def two(repo: Repo, tmp_path: Path) -> Iterator[Two]:
    made = Two(repo, tmp_path)
    yield made
    made.close()


def test_a_check_already_down_before_the_deploy_is_reported_and_not_counted(two: Two) -> None:
    outcome = deploy(two.world, "ok", two.shas[1], runner=Runner())
    assert outcome.verdict is not None and outcome.verdict.status == SUCCEEDED
    assert outcome.verdict.excused == ("api",)
    assert outcome.verdict.reason == "degraded for 1.2s; api already down before, not counted"
    output = two.world.log.get(outcome.deploy.id).output
    assert output.startswith("[andon: before the deploy: api: HTTP 503]\n")
    assert "[andon: api was already down before this deploy: not counted]\n" in output
    assert outcome.deploy.status == SUCCEEDED


def test_a_check_healthy_before_and_failing_after_makes_the_deploy_unhealthy(two: Two) -> None:
    outcome = deploy(two.world, "break", two.shas[1], runner=Runner())
    assert outcome.verdict is not None and outcome.verdict.status == UNHEALTHY
    assert outcome.verdict.reason == "2 failed rounds in a row (web: HTTP 503)"  # api, down before, not named
    assert outcome.verdict.failing == ("web",)
    assert outcome.deploy.status == UNHEALTHY


def test_a_check_down_before_that_comes_back_counts_from_then_on(two: Two) -> None:
    two.api.status = 503
    seen: list[str] = []

    def show(text: str) -> None:
        seen.append(text)
        if "verifying ok" in text:
            two.api.status = 200  # back up as the deploy is watched
        elif "api is up again" in text:
            two.api.status = 500  # and broken again: now it counts

    outcome = deploy(two.world, "ok", two.shas[1], runner=Runner(), on_output=show)
    assert any("api is up again: counted from now" in text for text in seen)
    assert outcome.verdict is not None and outcome.verdict.status == UNHEALTHY
    assert outcome.verdict.reason == "2 failed rounds in a row (api: HTTP 500)"


def test_a_check_that_comes_back_on_the_new_version_after_it_was_seen_elsewhere_passes(two: Two) -> None:
    def show(text: str) -> None:
        if "is reported]" in text and two.api.status != 200:  # web reported it: api comes back, on the new SHA
            two.api.version = two.shas[1]
            two.api.status = 200

    outcome = deploy(two.world, "ok", two.shas[1], runner=Runner(), on_output=show)
    output = two.world.log.get(outcome.deploy.id).output
    assert "api is up again: counted from now" in output
    assert output.count("is reported]") == 2  # seen again in a round that counts api too
    assert outcome.verdict is not None and outcome.verdict.status == SUCCEEDED, outcome.verdict.reason
    assert outcome.verdict.excused == ()
