"""Health verification: watching an environment after a deploy or a rollback, and the verdict.

:func:`backend.deployer.deploy` and :func:`backend.rollback.run_rollback` both call
:func:`verify` once their action succeeded, when the environment has health checks and
``verify_seconds > 0``. The row stays ``running`` meanwhile (a ``deploy.verifying`` event says
since when and until when, for the dashboard's "watching 0:23 / 1:00"); then a
``deploy.verified`` event gives the verdict and why, and the caller finishes the row.

A round probes every check of the environment through the prober
(:func:`backend.health.probe_round`), every shortest check interval, and one last round
when the window ends. A round **fails** when any counted check is down (no answer, or a
status it does not expect), not only when all are (the environment's state is then
``degraded``, and a broken API beside a working home page is still a broken deploy); a
check that is only slow (``degraded_ms``) is shown and does not fail a round. The result is
``unhealthy`` when ``verify_failures`` rounds in a row fail, or when the window ends without
one round in which every counted check that reports a version reports the new SHA
(:func:`backend.health.version_drift` says ``match``). The samples are recorded for everyone,
as a watcher records them, when the environment's lease is free or already ours
(:mod:`backend.watcher`). Ctrl-C or SIGTERM during verification ends it ``interrupted``.

**The state before** (:func:`before`). A deploy is judged against the environment as it was
just before it: ``andon deploy`` probes one round before running its action, and a check that
was already down in that round is not counted: the verification says so once ("api was
already down before this deploy: not counted"), and that check's failures fail no round, nor
does its missing version, until it is seen up; from then on it counts like any other (it came
back, and the deploy must not break it again), its version included: a new version seen before
it came back no longer suffices, and a round in which it too reports the new SHA is needed
(it may come back running the old code). Only ``down`` is excused, because only ``down``
fails a round; a slow check fails nothing either way. A **rollback** is judged without a state
before (``baseline`` None): it is there to bring health back, so a check still down after it
is exactly what it must report (:func:`backend.rollback.run_rollback`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from backend import AndonError
from backend.models import DOWN, INTERRUPTED, SUCCEEDED, UNHEALTHY, UP, Deploy, HealthSample, to_iso
from backend.text import short

if TYPE_CHECKING:
    from backend.config import Environment, HealthCheck
    from backend.store import DeployLog
    from backend.world import World

SyncProbe = Callable[[Mapping[str, Sequence["HealthCheck"]]], list[HealthSample]]
POLL = 0.1  # seconds between two looks at a stop request while waiting for the next round
STOPPED_BY = {"SIGINT": "Ctrl-C", "SIGTERM": "SIGTERM"}


class Verdict(NamedTuple):
    """How a verification ended: the row's final status, and why (one line)."""

    status: str  # SUCCEEDED, UNHEALTHY or INTERRUPTED
    reason: str
    rounds: int
    stopped: str | None = None  # "SIGINT" or "SIGTERM" when a signal stopped it
    failing: tuple[str, ...] = ()  # the counted checks down in the last round
    excused: tuple[str, ...] = ()  # the checks already down before, never seen up since (not counted)


class Baseline(NamedTuple):
    """The round probed just before a deploy's action: which checks were already down."""

    down: tuple[str, ...]
    said: str  # its line for the deploy's output ("" when every check answered)


def minutes(seconds: float) -> str:
    """``83.4`` as ``1:23``."""
    whole = max(0, int(seconds + 0.5))
    return f"{whole // 60}:{whole % 60:02d}"


def _prober(world: World, probe: SyncProbe | None) -> SyncProbe:
    if probe is not None:
        return probe
    from backend.health import probe_round

    def probe_now(env_checks: Mapping[str, Sequence[HealthCheck]]) -> list[HealthSample]:
        return probe_round(env_checks, clock=world.clock)

    return probe_now


def before(world: World, env: str, settings: Environment, probe: SyncProbe | None = None) -> Baseline:
    """One round of ``env``'s checks now, before the action: the checks already down (see above)."""
    from backend.watcher import problems

    samples = _prober(world, probe)({env: tuple(settings.health)})
    down = tuple(sample.check for sample in samples if sample.state == DOWN)
    why = problems(sample for sample in samples if sample.state == DOWN)
    return Baseline(down, f"[andon: before the deploy: {why}]\n" if down else "")


def verify(
    world: World,
    deploy: Deploy,
    settings: Environment,
    *,
    say: Callable[[str], None],
    interrupted: Callable[[], str | None],
    probe: SyncProbe | None = None,
    baseline: Baseline | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Verdict:
    """Watch ``deploy``'s environment for ``settings.verify_seconds`` (see the module's docstring).

    ``baseline``: the checks already down before (not counted until seen up); None judges every
    check. Writes ``deploy.verifying`` first and ``deploy.verified`` last; the caller finishes the row.
    """
    from backend.health import environment_state, version_drift
    from backend.store import holder_id
    from backend.watcher import lease_name, lease_seconds, problems, shortest_interval

    probe = _prober(world, probe)
    env, sha, log = deploy.env, deploy.sha, world.log
    checks = tuple(settings.health)
    window, needed = settings.verify_seconds, settings.verify_failures
    interval = shortest_interval(checks)
    versioned = [check.name for check in checks if check.version]
    excused = [name for name in (baseline.down if baseline else ()) if name in {check.name for check in checks}]
    holder, lease, took = holder_id(), lease_name(env), False
    _event(log, "deploy.verifying", deploy, seconds=window, failures=needed,
           checks=[check.name for check in checks], until=to_iso(world.clock() + timedelta(seconds=window)),
           **({"excused": excused} if excused else {}))
    names = ", ".join(check.name for check in checks)
    say(f"[andon: verifying {env} for {window:g}s ({names}): unhealthy after {needed} failed round"
        f"{'s' if needed != 1 else ''} in a row (a check down)"
        f"{', or if the new version is not reported' if versioned else ''}]\n")
    for name in excused:
        say(f"[andon: {name} was already down before this deploy: not counted]\n")
    start = monotonic()
    end = start + window
    rounds = down_in_row = 0
    reached = False
    last_state: str | None = None
    versions = ""  # what the versioned checks reported last, for the reason
    status: str | None = None
    reason = ""
    stopped: str | None = None
    failing: list[str] = []
    try:
        while True:
            stopped = interrupted()
            if stopped:
                break
            began = monotonic()
            samples = probe({env: checks})
            rounds += 1
            latest = {sample.check: sample for sample in samples}
            for name in [name for name in excused if name in latest and latest[name].state == UP]:
                excused.remove(name)  # back up: from now on it counts, its version too
                say(f"[andon: {minutes(began - start)} / {minutes(window)} {name} is up again: counted from now]\n")
                if name in versioned:
                    reached = False  # the new version must now be seen in a round that counts it as well
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
            failing = [sample.check for sample in samples if sample.state == DOWN and sample.check not in excused]
            down_in_row = down_in_row + 1 if failing else 0
            counted = [name for name in versioned if name not in excused]
            if not reached and counted:
                reported = {name: latest[name].version if name in latest else None for name in counted}
                drifts = _drifts(world, reported, sha, version_drift)
                versions = ", ".join(_reported(name, reported[name], drifts[name]) for name in counted)
                if all(drift == "match" for drift in drifts.values()):
                    reached = True
                    say(f"[andon: {minutes(began - start)} / {minutes(window)} the new version {short(sha)} "
                        "is reported]\n")
            if down_in_row >= needed:
                status = UNHEALTHY
                counted_why = problems(sample for sample in samples if sample.check not in excused)
                reason = f"{down_in_row} failed round{'s' if down_in_row != 1 else ''} in a row" + (
                    f" ({counted_why})" if counted_why else "")
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
    not_counted = "; " + ", ".join(excused) + " already down before, not counted" if excused else ""
    if stopped:
        status, reason = INTERRUPTED, f"verification stopped by {STOPPED_BY.get(stopped, stopped)}"
    elif status is None and not reached and any(name not in excused for name in versioned):
        status = UNHEALTHY
        reason = f"the new version {short(sha)} was not reported within {window:g}s" + (
            f" ({versions})" if versions else "")
    elif status is None:
        status = SUCCEEDED
        reason = (f"{last_state} for {window:g}s" if last_state != "healthy" else f"healthy for {window:g}s") \
            + not_counted
    verdict = Verdict(status, reason, rounds, stopped, tuple(failing), tuple(excused))
    _event(log, "deploy.verified", deploy, status=status, reason=reason, rounds=rounds)
    say(f"[andon: {status}: {reason}]\n")
    return verdict


def verify_output(
    world: World,
    deploy: Deploy,
    settings: Environment,
    output: str,
    *,
    live: Callable[[str], None],
    on_output: Callable[[str], None] | None,
    interrupted: Callable[[], str | None],
    stopped: Callable[[str], None],
    probe: SyncProbe | None = None,
    baseline: Baseline | None = None,
) -> tuple[Verdict, str]:
    """:func:`verify` after a deploy's or a rollback's action, its lines added to the row's ``output``.

    Each line goes to ``live`` (every dashboard sees it as it comes) and ``on_output`` (the
    terminal; a failing display never fails the deploy). Returns the verdict and the output with
    the verification's lines. A stop or a broken log mid-way is handed to ``stopped`` with the
    output so far and a last line saying so (the caller ends the row as it must), then raised.
    """
    lines: list[str] = []

    def say(text: str) -> None:
        lines.append(text)
        live(text)
        if on_output is not None:
            try:
                on_output(text)
            except Exception:  # noqa: BLE001 - a failing display must not fail the deploy
                pass

    if output and not output.endswith("\n"):
        say("\n")
    try:
        verdict = verify(world, deploy, settings, say=say, interrupted=interrupted, probe=probe, baseline=baseline)
    except BaseException as error:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        stopped(output + "".join(lines) + f"[andon: verification stopped: {text}]\n")
        raise
    return verdict, output + "".join(lines)


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
