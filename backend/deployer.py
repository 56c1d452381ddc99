"""Running a deploy end to end: resolve, record the start, run the command, record the end."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from backend import AndonError
from backend.config import check_environment_name
from backend.models import FAILED, INTERRUPTED, SUCCEEDED, Deploy
from backend.runner import RunError, Runner, substitute
from backend.world import World


@dataclass(frozen=True)
class DeployOutcome:
    deploy: Deploy
    exit_code: int


def deploy(
    world: World,
    env: str,
    revision: str,
    *,
    command: Sequence[str] | None = None,
    runner: Runner,
    on_output: Callable[[str], None] | None = None,
    trigger: str | None = None,
    reason: str = "",
) -> DeployOutcome:
    check_environment_name(env)
    settings = world.config.environment(env)
    if not command:
        if settings.deploy is None:
            where = world.config.source.name if world.config.source else "andon.toml"
            raise AndonError(
                f"environment {env!r} has no deploy action in {where}: configure "
                f"environments.{env}.deploy or give the command after --"
            )
        command = settings.deploy
    sha = world.history.resolve(revision)
    trigger = trigger or ("ci" if os.environ.get("CI") else "manual")
    started = world.log.start(env, sha, who=world.who(), trigger=trigger, reason=reason)
    argv = substitute(command, {"sha": sha, "env": env})
    child_env = dict(os.environ)
    child_env.update(
        ANDON_ENV=env, ANDON_SHA=sha, ANDON_PREV_SHA=started.prev_sha or "",
        ANDON_DEPLOY_ID=str(started.id),
    )
    try:
        result = runner.run(argv, cwd=world.history.root, env=child_env, timeout=settings.timeout,
                            on_output=on_output)
    except RunError as error:
        world.log.finish(started.id, FAILED, exit_code=error.exit_code, output=str(error) + "\n")
        world.keep_ranges([started])
        raise
    except BaseException:
        world.log.finish(started.id, INTERRUPTED, exit_code=None, output="andon stopped unexpectedly\n")
        raise
    if result.stopped:
        status = INTERRUPTED
        note = {
            "timeout": f"\n[andon: stopped after the {settings.timeout:g}s timeout]\n",
            "SIGINT": "\n[andon: stopped by Ctrl-C]\n",
            "SIGTERM": "\n[andon: stopped by SIGTERM]\n",
        }.get(result.stopped, "")
        output = result.output + note
    else:
        status = SUCCEEDED if result.exit_code == 0 else FAILED
        output = result.output
    finished = world.log.finish(started.id, status, exit_code=result.exit_code, output=output)
    world.keep_ranges([finished])
    return DeployOutcome(finished, result.exit_code)
