"""Running a deploy end to end: resolve, record the start, run the command, verify, record the end.

**Verification.** When the environment has health checks and ``verify_seconds > 0``, a
deploy whose command succeeded is watched for that long before it is called good. The
deploy row stays ``running`` meanwhile (a ``deploy.verifying`` event says since when and
until when, for the dashboard's "watching 0:23 / 1:00"); then a ``deploy.verified``
event gives the verdict and why, and the row finishes ``succeeded`` or ``unhealthy``,
the verification's lines appended to its output. A row changes only once, so this is
the one honest order: nothing is called succeeded that may yet turn out unhealthy.

A round probes every check of the environment through the prober
(:func:`backend.health.probe_round`), every shortest check interval, and one last round
when the window ends. A round **fails** when any check is down (no answer, or a status
it does not expect), not only when all are (the environment's state is then
``degraded``, and a broken API beside a working home page is still a broken deploy);
a check that is only slow (``degraded_ms``) is shown and does not fail a round. The
deploy is ``unhealthy`` when ``verify_failures`` rounds in a row fail, or when the window ends without one round in which every check that
reports a version reports the new SHA (:func:`backend.health.version_drift` says
``match``). The samples are recorded for everyone, as a watcher records them, when the
environment's lease is free or already ours (:mod:`backend.watcher`); a running
``andon watch`` keeps probing and recording, and the deploy still judges by its own probes.
Ctrl-C or SIGTERM during verification records ``interrupted``, as during the command.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from backend import AndonError
from backend.config import Environment, HttpAction, check_environment_name
from backend.models import DOWN, FAILED, INTERRUPTED, SUCCEEDED, UNHEALTHY, Deploy, HealthSample, to_iso
from backend.runner import RunError, Runner, substitute
from backend.text import short
from backend.world import World

if TYPE_CHECKING:
    from backend.config import HealthCheck
    from backend.store import DeployLog

SyncProbe = Callable[[Mapping[str, Sequence["HealthCheck"]]], list[HealthSample]]
POLL = 0.1  # seconds between two looks at a stop request while waiting for the next round
STOPPED_BY = {"SIGINT": "Ctrl-C", "SIGTERM": "SIGTERM"}


class Verdict(NamedTuple):
    """How a deploy's verification ended: the deploy's final status, and why (one line)."""

    status: str  # SUCCEEDED, UNHEALTHY or INTERRUPTED
    reason: str
    rounds: int
    stopped: str | None = None  # "SIGINT" or "SIGTERM" when a signal stopped it


@dataclass(frozen=True)
class DeployOutcome:
    deploy: Deploy
    exit_code: int  # the command's; 128 + the signal's number when verification was stopped
    verdict: Verdict | None = None  # None: not verified (no checks, verify_seconds = 0, or the command failed)


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
    interrupted: Callable[[], str | None] | None = None,
    probe: SyncProbe | None = None,
) -> DeployOutcome:
    """Run ``command`` (default: the environment's deploy action) for ``revision`` and record it.

    ``interrupted`` tells whether a stop was asked for ("SIGINT", "SIGTERM") while the
    deploy is being verified (the runner hears it during the command); ``probe``
    replaces :func:`backend.health.probe_round`.
    """
    check_environment_name(env)
    settings = world.config.environment(env)
    if not command:
        if settings.deploy is None:
            where = world.config.source.name if world.config.source else "andon.toml"
            raise AndonError(
                f"environment {env!r} has no deploy action in {where}: configure "
                f"environments.{env}.deploy or give the command after --"
            )
        if isinstance(settings.deploy, HttpAction):
            # Until the HTTP runner lands (issue 8, in progress): refuse before anything is recorded.
            raise AndonError(f"environment {env!r}: a deploy action that is an HTTP request cannot run yet")
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
    exit_code = result.exit_code
    verdict = None
    if status == SUCCEEDED and settings.verify_seconds > 0 and settings.health:
        lines: list[str] = []

        def say(text: str) -> None:
            lines.append(text)
            if on_output is not None:
                try:
                    on_output(text)
                except Exception:  # noqa: BLE001 - a failing display must not fail the deploy
                    pass

        if output and not output.endswith("\n"):
            say("\n")
        try:
            verdict = verify(world, started, settings, say=say, interrupted=interrupted or (lambda: None),
                             probe=probe)
        except BaseException as error:
            text = str(error).splitlines()[0] if str(error) else type(error).__name__
            world.log.finish(started.id, INTERRUPTED, exit_code=result.exit_code,
                             output=output + "".join(lines) + f"[andon: verification stopped: {text}]\n")
            raise
        output += "".join(lines)
        status = verdict.status
        if verdict.stopped:
            exit_code = 128 + int(getattr(signal, verdict.stopped, signal.SIGINT))
    finished = world.log.finish(started.id, status, exit_code=result.exit_code, output=output)
    world.keep_ranges([finished])
    return DeployOutcome(finished, exit_code, verdict)


# -- verification ------------------------------------------------------------------------


def minutes(seconds: float) -> str:
    """``83.4`` as ``1:23``."""
    whole = max(0, int(seconds + 0.5))
    return f"{whole // 60}:{whole % 60:02d}"


def verify(
    world: World,
    deploy: Deploy,
    settings: Environment,
    *,
    say: Callable[[str], None],
    interrupted: Callable[[], str | None],
    probe: SyncProbe | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Verdict:
    """Watch ``deploy``'s environment for ``settings.verify_seconds`` (see the module's docstring).

    Writes ``deploy.verifying`` first and ``deploy.verified`` last; the caller finishes the row.
    """
    from backend.health import environment_state, version_drift
    from backend.store import holder_id
    from backend.watcher import lease_name, lease_seconds, problems, shortest_interval

    if probe is None:
        from backend.health import probe_round

        def probe(env_checks: Mapping[str, Sequence[HealthCheck]]) -> list[HealthSample]:
            return probe_round(env_checks, clock=world.clock)

    env, sha, log = deploy.env, deploy.sha, world.log
    checks = tuple(settings.health)
    window, needed = settings.verify_seconds, settings.verify_failures
    interval = shortest_interval(checks)
    versioned = [check.name for check in checks if check.version]
    holder, lease, took = holder_id(), lease_name(env), False
    _event(log, "deploy.verifying", deploy, seconds=window, failures=needed,
           checks=[check.name for check in checks],
           until=to_iso(world.clock() + timedelta(seconds=window)))
    names = ", ".join(check.name for check in checks)
    say(f"[andon: verifying {env} for {window:g}s ({names}): unhealthy after {needed} failed round"
        f"{'s' if needed != 1 else ''} in a row (a check down)"
        f"{', or if the new version is not reported' if versioned else ''}]\n")
    start = monotonic()
    end = start + window
    rounds = down_in_row = 0
    reached = not versioned
    last_state: str | None = None
    versions = ""  # what the versioned checks reported last, for the reason
    status: str | None = None
    reason = ""
    stopped: str | None = None
    try:
        while True:
            stopped = interrupted()
            if stopped:
                break
            began = monotonic()
            samples = probe({env: checks})
            rounds += 1
            latest = {sample.check: sample for sample in samples}
            state = environment_state({check.name: latest.get(check.name) for check in checks}, checks,
                                      world.clock())
            if log.take_lease(lease, holder, lease_seconds(checks)):
                took = True
                log.record_health(samples, state, who=deploy.who, env=env)
            why = problems(samples)
            if state != last_state:
                say(f"[andon: {minutes(began - start)} / {minutes(window)} {state}"
                    + (f" ({why})" if why else "") + "]\n")
                last_state = state
            down_in_row = down_in_row + 1 if any(sample.state == DOWN for sample in samples) else 0
            if not reached:
                reported = {name: latest[name].version if name in latest else None for name in versioned}
                drifts = _drifts(world, reported, sha, version_drift)
                versions = ", ".join(_reported(name, reported[name], drifts[name]) for name in versioned)
                if all(drift == "match" for drift in drifts.values()):
                    reached = True
                    say(f"[andon: {minutes(began - start)} / {minutes(window)} the new version {short(sha)} "
                        "is reported]\n")
            if down_in_row >= needed:
                status = UNHEALTHY
                reason = f"{down_in_row} failed round{'s' if down_in_row != 1 else ''} in a row" + (
                    f" ({why})" if why else "")
                break
            if began >= end:
                break
            wake = min(began + interval, end)
            while not interrupted():
                left = wake - monotonic()
                if left <= 0:
                    break
                sleep(min(POLL, left))
    finally:
        if took:
            log.release_lease(lease, holder)
    if stopped:
        status, reason = INTERRUPTED, f"verification stopped by {STOPPED_BY.get(stopped, stopped)}"
    elif status is None and not reached:
        status = UNHEALTHY
        reason = f"the new version {short(sha)} was not reported within {window:g}s" + (
            f" ({versions})" if versions else "")
    elif status is None:
        status = SUCCEEDED
        reason = f"{last_state} for {window:g}s" if last_state != "healthy" else f"healthy for {window:g}s"
    verdict = Verdict(status, reason, rounds, stopped)
    _event(log, "deploy.verified", deploy, status=status, reason=reason, rounds=rounds)
    say(f"[andon: {status}: {reason}]\n")
    return verdict


def _reported(check: str, version: str | None, drift: str | None) -> str:
    """``api reports 1a2b3c4 (behind)``, for the reason a version was not reached."""
    if not version:
        return f"{check} reports no version"
    return f"{check} reports {short(version)}" + (f" ({drift})" if drift and drift != "match" else "")


def _drifts(world: World, reported: Mapping[str, str | None], sha: str,
            version_drift: Callable[..., str | None]) -> dict[str, str | None]:
    from backend.watcher import contains

    return {name: version_drift(version, sha, contains(world)) for name, version in reported.items()}


def _event(log: DeployLog, kind: str, deploy: Deploy, **detail: Any) -> None:
    """One event about ``deploy``, in a write transaction of its own."""
    try:
        with log.immediate() as conn:
            log.event(conn, kind, deploy.env, deploy.id, deploy.who, log.now(), **detail)
    except sqlite3.DatabaseError as error:
        from backend.store.core import explain

        raise AndonError(f"deploy log {log.path}: {explain(error)}") from None
