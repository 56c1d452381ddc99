"""Rolling back: request it (stopping the line), let anyone cancel it in the grace, run it once.

The dashboard and the command line do the same three things, through these functions:

* :func:`request_rollback` stops the line of the environment and requests a rollback
  to ``to`` (a deploy id or a revision) or, by default, to the last good deploy
  (:meth:`backend.store.line.LineMixin.last_good`), to run at now + the environment's
  ``rollback_grace_seconds``; then it starts a detached runner (:func:`spawn_runner`)
  and returns a :class:`Requested`. Of many callers at once exactly one gets it; the
  others get :class:`~backend.store.line.RollbackUnderWay`, naming who requested the
  one under way and when.
* :func:`cancel_rollback`, during the grace: the line stays stopped, nothing runs.
* :func:`run_rollback` is what the runner does (``andon run-rollback``, started by
  :func:`spawn_runner` in a session of its own, so closing the dashboard or the terminal
  that asked for it does not stop it): it waits out the grace, watching for a cancel,
  takes the rollback (from then on it cannot be cancelled), stops any deploy of the
  environment still running on this host (the one being rolled back: it never waits
  behind it), and runs the environment's ``rollback`` action, else its ``deploy`` action,
  with the target SHA as a new deploy row (trigger ``rollback``, ``reverts`` the deploy
  rolled back, the reason). The line stays stopped whatever the outcome: resuming is
  a person's decision.

If the runner is killed (even SIGKILL), the next andon to look (:func:`backend.deployer.reap`)
stops the action's orphaned process group and records the row ``interrupted``.

**Never blocked by what it fixes.** A rollback goes through a stopped line, a freeze, held
commits and red health: none of them is asked. Its ``rollback.requested`` and
``rollback.started`` events say what it went past (detail ``ignored``: ``"line stopped"``,
``"freeze: REASON"``, ``"held commits"``, ``"unhealthy"``, as applies; :func:`ignored`).

**Verified like a deploy.** When the environment has health checks and ``verify_seconds > 0``,
the runner watches health after a rollback action that succeeded (:func:`backend.verify.verify`,
the rollback's row ``running`` meanwhile, so that nobody resumes the line under it), without a
state before: a rollback is there to bring health back, so every check counts. The row then
finishes ``succeeded`` (the action did what it was asked: the old code is back, and this stop
counts as rolled back), and when health did not come back a ``rollback.unhealthy`` event (deploy:
the rollback's row; detail: why, checks, rollback_id, target_sha; announced in chat) says so:
the line stays stopped and **no second automatic rollback follows in this stop** (the log refuses
any rollback without ``--to`` once this stop was rolled back:
:meth:`backend.store.line.LineMixin.request_rollback`). A person decides.

:func:`stop_after_unhealthy` is the automatic stop: ``andon deploy`` calls it when verification
finds a deploy unhealthy and the environment has ``auto_stop`` (and requests the rollback with
``auto_rollback``, honouring the grace so that a person can still cancel it).

**Migrations hold a rollback** (issue 9). A rollback whose target does not contain the expand of a
migration that is ``migrating`` or later in the environment (:func:`backend.migrations.rollback_holds`)
would put back code that cannot read the data's new shape. :func:`request_rollback` then raises
:class:`MigrationHold` (exit 9 on the command line) and writes a ``rollback.held`` event (announced
in chat); nothing is requested, nothing runs. Naming every holding migration in ``despite`` (``andon
rollback --despite-migration NAME``, the dashboard's explicit second key) rolls back anyway, and the
rollback's reason says despite which. The automatic rollback is held the same way: the line stays
stopped and the event and the ``andon deploy`` line say why. A request that would be refused anyway
(a rollback under way, this stop already rolled back) is refused as before (exit 7), not held. The
check reads the last good deploy just before the request's transaction; should the request's own
choice differ (a deploy recorded in between), that target is checked again before any runner starts,
and a held one is cancelled.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from backend import AndonError
from backend.config import Environment, check_environment_name
from backend.deployer import reap, run_action
from backend.held import rollback_succeeded
from backend.live_output import LiveOutput
from backend.models import DEGRADED, DOWN, FAILED, INTERRUPTED, RUNNING, SUCCEEDED, UNHEALTHY, Deploy
from backend.processes import alive
from backend.runner import STOP_GRACE, RunError, Runner
from backend.store import StoreError
from backend.store.line import PENDING, LineState, Rollback, Target
from backend.text import clean_line, short
from backend.world import World

if TYPE_CHECKING:
    from backend.migrations import Hold

# The andon command line, as an argv (never an import: backend does not import tui).
RUNNER_COMMAND: tuple[str, ...] = (sys.executable, "-m", "tui.cli")
SPAWN_TIMEOUT = 30.0  # seconds for the runner to detach itself and say its pid
POLL = 0.1  # seconds between two looks at a cancel during the grace
STOP_WAIT = STOP_GRACE + 10.0  # seconds a stopped deploy's andon gets to record it interrupted
DEPLOY_ID = re.compile(r"#?([0-9]{1,6})\Z")  # --to 12 or #12; seven digits and more are a SHA


class Requested(NamedTuple):
    """A rollback this call requested: the rollback, whether this request stopped the line
    (False: it was already stopped), and the runner's pid (None when not spawned)."""

    rollback: Rollback
    stopped_line: bool
    runner_pid: int | None


class AutoStop(NamedTuple):
    """What an unhealthy deploy did to the line (``auto_stop``)."""

    stopped: bool  # this deploy stopped it (False: it was stopped already)
    line: LineState | None  # the line after (None when the stop itself failed)
    rollback: Requested | None  # auto_rollback: the rollback requested
    error: str = ""  # why the stop or the rollback could not be done


class MigrationHold(AndonError):
    """A rollback held by migrations (exit 9): its target predates the expand of each of ``holds``."""

    def __init__(self, env: str, target: Target, holds: Sequence[Hold]) -> None:
        self.env, self.target, self.holds = env, target, tuple(holds)
        to = short(target.sha) + (f" (deploy #{target.deploy_id})" if target.deploy_id else "")
        # Each hold's message names the migration, its phase, its expand and --despite-migration NAME.
        super().__init__(f"rollback of {env} to {to} held, nothing runs: "
                         + "; ".join(clean_line(hold.message) for hold in self.holds))


def _rollback_action(world: World, env: str) -> Environment:
    """The environment's settings, refusing (one line) one that is not configured or has no action."""
    check_environment_name(env)
    settings = world.config.environments.get(env)
    where = world.config.source.name if world.config.source else "andon.toml"
    if settings is None:
        known = ", ".join(world.config.environments) or "none"
        raise AndonError(f"unknown environment {env!r}: a rollback needs it configured in {where} (configured: {known})")
    if settings.rollback is None and settings.deploy is None:
        raise AndonError(f"environment {env!r} has no rollback or deploy action in {where}: configure "
                         f"environments.{env}.rollback (or .deploy, run with the target SHA)")
    return settings


def resolve_target(world: World, env: str, to: str) -> Target:
    """``--to``: a deploy id of ``env`` (``12`` or ``#12``) or a revision git has, as a :class:`Target`."""
    text = to.strip()
    shown = clean_line(text)[:60]
    match = DEPLOY_ID.match(text)
    if match:
        number = int(match.group(1))
        try:
            found = world.log.get(number)
        except StoreError:
            raise AndonError(f"--to {shown}: there is no deploy #{number}") from None
        if found.damaged:
            raise AndonError(f"--to {shown}: {found.damaged}")
        if found.env != env:
            raise AndonError(f"--to {shown}: deploy #{number} is of {found.env}, not {env}")
        return Target(found.sha, found.id)
    if not text or text.startswith("-"):
        raise AndonError(f"--to {shown!r} is neither a deploy id nor a commit")
    try:
        sha = world.history.resolve(text)
    except AndonError as error:
        raise AndonError(f"--to {shown}: {error}") from None
    good = [deploy for deploy in world.log.deploys(env, limit=200)
            if deploy.sha == sha and deploy.status == SUCCEEDED and not deploy.damaged]
    return Target(sha, good[0].id if good else None)


def request_rollback(world: World, env: str, who: str, reason: str = "", to: str | None = None, *,
                     automatic: bool = False, cause: int | None = None, spawn: bool = True,
                     despite: Iterable[str] = ()) -> Requested:
    """Stop the line of ``env``, request its rollback and start the runner (see the module's docstring).

    Raises :class:`~backend.store.line.RollbackUnderWay` when one is pending or running (exit 7
    on the command line), :class:`MigrationHold` when a migration not named in ``despite`` holds
    it (exit 9; a ``rollback.held`` event is the only thing written), :class:`AndonError` (one
    line) for anything else: an environment that is not configured or has no action, a ``to``
    that is not a deploy of ``env`` nor a commit git has, nothing to roll back to. Nothing is
    written then. ``cause`` is the deploy whose verdict stopped the line (``automatic``).
    """
    settings = _rollback_action(world, env)
    target = resolve_target(world, env, to) if to else None
    reap(world.log, env)  # a rollback whose runner died must not block this one
    who = who or "unknown"
    named = frozenset(despite)
    checked = target if target is not None else world.log.last_good(env)
    hold = _Check(world, env, who, reason, automatic, cause, named)
    overridden = hold.check(checked, refused_anyway=_refused_anyway(world, env, to))
    if overridden:
        reason = "; ".join(filter(None, [reason, "despite migration " + ", ".join(
            f"{found.name} ({found.phase}, expand {short(found.expand)})" for found in overridden)]))
    rollback, stopped = world.log.request_rollback(
        env, who=who, reason=reason, grace=settings.rollback_grace_seconds, to=target,
        automatic=automatic, cause=cause, ignored=ignored(world, env, settings))
    if checked is None or rollback.target_sha != checked.sha:
        # The log moved between the check and the request: its own target is checked before anything runs.
        try:
            hold.check(Target(rollback.target_sha, rollback.target_deploy_id))
        except MigrationHold:
            world.log.cancel_rollback(env, who=who)
            raise
    pid = None
    if spawn:
        try:
            pid = spawn_runner(world, rollback.id)
        except AndonError as error:
            world.log.end_rollback(rollback.id, FAILED, str(error))
            raise AndonError(f"rollback #{rollback.id} of {env} could not start: {error}; the line stays stopped") \
                from None
    return Requested(world.log.rollback(rollback.id), stopped, pid)


class _Check(NamedTuple):
    """The migration check of one rollback request (see the module's docstring)."""

    world: World
    env: str
    who: str
    reason: str
    automatic: bool
    cause: int | None
    despite: frozenset[str]

    def check(self, target: Target | None, *, refused_anyway: bool = False) -> list[Hold]:
        """The holds ``despite`` overrides; raises :class:`MigrationHold` (writing ``rollback.held``)
        for any other. Nothing to check without a target or for a request refused anyway."""
        if target is None or refused_anyway:
            return []
        from backend.migrations import rollback_holds

        holds = rollback_holds(self.world, self.env, target.sha)
        held = [hold for hold in holds if hold.name not in self.despite]
        if not held:
            return holds
        error = MigrationHold(self.env, target, held)
        log = self.world.log
        with log.immediate() as conn:
            log.event(conn, "rollback.held", self.env, self.cause, self.who, log.now(), reason=self.reason,
                      automatic=self.automatic, target_sha=target.sha, target_deploy_id=target.deploy_id,
                      holds=[{"name": hold.name, "phase": hold.phase, "expand": hold.expand} for hold in held],
                      message=str(error))
        raise error


def _refused_anyway(world: World, env: str, to: str | None) -> bool:
    """Whether the log will refuse this request whatever the migrations (exit 7): a rollback is under
    way, or this stop was rolled back already and no ``to`` asks to go further."""
    if world.log.active_rollback(env) is not None:
        return True
    line = world.log.line(env)
    return to is None and line.stopped and any(
        found.status == SUCCEEDED and found.requested_at >= line.since for found in world.log.rollbacks(env))


def cancel_rollback(world: World, env: str, who: str) -> Rollback:
    """Cancel the pending rollback of ``env`` (its runner sees it and ends); the line stays stopped.

    Raises :class:`~backend.store.line.RollbackUnderWay` once it runs (too late),
    :class:`AndonError` when none is pending.
    """
    check_environment_name(env)
    reap(world.log, env)
    return world.log.cancel_rollback(env, who=who or "unknown")


def spawn_runner(world: World, rollback_id: int, command: tuple[str, ...] = RUNNER_COMMAND) -> int:
    """Start ``andon run-rollback`` for ``rollback_id``, detached: returns the runner's pid.

    The runner starts in a new session and forks once more, its first process exiting at
    once, so it is nobody's child: closing the dashboard or the terminal that asked for the
    rollback neither stops it nor leaves a zombie behind. It is told the repository, the log
    and the configuration by absolute path.
    """
    argv = [*command, "--db", str(world.db_path.resolve())]
    if world.history.root is not None:
        argv += ["--repo", str(Path(world.history.root).resolve())]
    if world.config.source is not None:
        argv += ["--config", str(world.config.source.resolve())]
    argv += ["run-rollback", "--id", str(rollback_id), "--detach"]
    cwd = world.history.root or world.db_path.resolve().parent
    try:
        starter = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True)
    except OSError as error:
        raise AndonError(f"cannot start the rollback runner: {error.strerror}") from None
    try:
        out, err = starter.communicate(timeout=SPAWN_TIMEOUT)
    except subprocess.TimeoutExpired:
        starter.kill()
        starter.wait()
        raise AndonError(f"the rollback runner did not start within {SPAWN_TIMEOUT:g}s") from None
    text = out.decode("ascii", "replace").strip()
    if starter.returncode != 0 or not text.isdigit():
        why = clean_line(err.decode("utf-8", "replace").strip().splitlines()[-1] if err.strip() else "")
        raise AndonError(f"the rollback runner did not start (exit code {starter.returncode})"
                         + (f": {why}" if why else ""))
    pid = int(text)
    world.log.claim_rollback(rollback_id, pid)  # known before this returns (the requester may exit now)
    return pid


def stop_after_unhealthy(world: World, deploy: Deploy, why: str, settings: Environment) -> AutoStop:
    """``auto_stop``: the line stops by itself (who ``andon``) after an unhealthy deploy and, with
    ``auto_rollback``, a rollback is requested (with the grace, so that a person may cancel it)."""
    reason = f"deploy #{deploy.id} of {deploy.short_sha} is unhealthy: {why}"
    try:
        stopped, line = world.log.stop_line(deploy.env, who="andon", reason=reason, automatic=True,
                                            deploy_id=deploy.id)
    except AndonError as error:
        return AutoStop(False, None, None, f"could not stop the line: {error}")
    if not settings.auto_rollback:
        return AutoStop(stopped, line, None)
    try:
        requested = request_rollback(world, deploy.env, "andon", reason, automatic=True, cause=deploy.id)
    except AndonError as error:  # a MigrationHold too: its rollback.held event says why, in chat as well
        return AutoStop(stopped, line, None, f"no automatic rollback: {error}")
    return AutoStop(stopped, line, requested)


# -- the runner ---------------------------------------------------------------------------


def run_rollback(world: World, rollback_id: int, *, runner: Runner,
                 interrupted: Callable[[], str | None] = lambda: None,
                 on_output: Callable[[str], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> Rollback:
    """Run rollback ``rollback_id`` once (see the module's docstring); returns it as it ended.

    Returns at once when it is no longer pending (cancelled, or another runner has it).
    ``interrupted`` tells of a SIGTERM or Ctrl-C during the grace (the runner hears it
    during the action).
    """
    log = world.log
    me = os.getpid()
    claimed = log.claim_rollback(rollback_id, me)
    if claimed is None:
        return log.rollback(rollback_id)
    env = claimed.env
    reap(log, env)
    while True:  # the grace: anyone may cancel
        current = log.rollback(rollback_id)
        if current.status != PENDING:
            return current
        stopped = interrupted()
        if stopped:
            log.end_rollback(rollback_id, INTERRUPTED, f"its runner was stopped by {stopped} before it started")
            return log.rollback(rollback_id)
        if log.now() >= current.run_at:
            break
        sleep(POLL)
    if log.begin_rollback(rollback_id, me) is None:  # cancelled at the last moment
        return log.rollback(rollback_id)
    settings = world.config.environments.get(env)
    action = None if settings is None else settings.rollback or settings.deploy
    if settings is None or action is None:
        log.end_rollback(rollback_id, FAILED, f"environment {env!r} has no rollback or deploy action any more")
        return log.rollback(rollback_id)
    notes = stop_running_deploys(world, env)
    started = log.start_rollback_deploy(rollback_id, me, ignored=ignored(world, env, settings))
    target = f"[andon: rolling {env} back to {short(started.sha)}" + (
        f", reverting deploy #{started.reverts}" if started.reverts else "") + "]\n"
    # Every dashboard shows the output as it comes (the row's final output is written at the end).
    with LiveOutput(log, started.id) as live:
        live.write(notes + target)
        try:
            result = run_action(world, started, action, runner=runner, timeout=settings.timeout, on_output=on_output,
                                live=live.write)
        except RunError as error:
            log.finish_action(started.id, FAILED, exit_code=error.exit_code, output=notes + target + f"{error}\n")
            world.keep_ranges([started])
            return log.rollback(rollback_id)
        except BaseException:
            log.finish_action(started.id, INTERRUPTED, exit_code=None,
                              output=notes + target + "andon stopped unexpectedly\n")
            raise
        if result.stopped:
            status = INTERRUPTED
            note = {"timeout": f"\n[andon: stopped after the {settings.timeout:g}s timeout]\n",
                    "SIGINT": "\n[andon: stopped by Ctrl-C]\n",
                    "SIGTERM": "\n[andon: stopped by SIGTERM]\n"}.get(result.stopped, "")
        else:
            status = SUCCEEDED if result.exit_code == 0 else FAILED
            note = ""
        output = notes + target + result.output + note
        verdict = None
        if status == SUCCEEDED and settings.verify_seconds > 0 and settings.health:
            from backend.verify import verify_output

            def cut_short(said: str) -> None:  # a stop or a broken log: the action itself succeeded
                log.finish_action(started.id, SUCCEEDED, exit_code=0, output=said)

            verdict, output = verify_output(world, started, settings, output, live=live.write, on_output=on_output,
                                            interrupted=interrupted, stopped=cut_short)
        # Health did not come back: said in the transaction that ends the rollback.
        news = [("rollback.unhealthy", {"why": verdict.reason, "checks": list(verdict.failing),
                                        "rollback_id": rollback_id, "target_sha": started.sha})
                ] if verdict is not None and verdict.status == UNHEALTHY else []
        finished = log.finish_action(started.id, status, exit_code=result.exit_code, output=output, news=news)
    world.keep_ranges([finished])
    ended = log.rollback(rollback_id)
    # Succeeded: the commits it took out stay out of the next deploys until reverted or released.
    rollback_succeeded(world, ended)
    return ended


def ignored(world: World, env: str, settings: Environment) -> list[str]:
    """What a rollback of ``env`` goes past now, for its events (see the module's docstring)."""
    from backend.freeze import frozen

    found = []
    if world.log.line(env).stopped:
        found.append("line stopped")
    window = frozen(settings.freezes, world.clock())
    if window is not None:
        found.append(f"freeze: {clean_line(window.reason)}" if window.reason else "freeze")
    if _holds_commits(world, env):
        found.append("held commits")
    health = world.log.health_state(env)
    if health is not None and health[0] in (DOWN, DEGRADED):
        found.append("unhealthy")
    return found


def _holds_commits(world: World, env: str) -> bool:
    from backend.held import held

    return bool(held(world, env))


def stop_running_deploys(world: World, env: str) -> str:
    """Stop every deploy of ``env`` still running (the one rolled back among them), recording each
    ``interrupted``; returns notes for the rollback's output.

    A deploy whose ``andon deploy`` is alive here is sent SIGTERM: that andon stops its command's
    whole process group and records it interrupted, as when CI cancels it. One whose andon died is
    an orphan: its group is stopped and its row finished (:func:`~backend.deployer.reap`). One of
    another host cannot be stopped from here: the note says so.
    """
    log = world.log
    notes = []
    me = os.getpid()
    for deploy_id, pid, pgid in log.running_here(env):
        if pid == me:
            continue
        if pid is not None and alive(pid) and _is_andon(pid):
            _signal(pid, signal.SIGTERM)
            end = time.monotonic() + STOP_WAIT
            while time.monotonic() < end and log.get(deploy_id).status == RUNNING and alive(pid):
                time.sleep(POLL)
            if log.get(deploy_id).status == RUNNING and alive(pid):
                _signal(pid, signal.SIGKILL)  # it did not answer: its command is stopped below, as an orphan's
                end = time.monotonic() + 5.0
                while time.monotonic() < end and alive(pid):
                    time.sleep(0.05)
        reap(log, env)
        found = log.get(deploy_id)
        notes.append(f"[andon: deploy #{deploy_id} was still running: stopped first, "
                     f"{'recorded ' + found.status if found.status != RUNNING else 'but it could not be stopped'}"
                     + (f" (process group {pgid})" if pgid else "") + "]\n")
    here = {deploy_id for deploy_id, _, _ in log.running_here(env)}
    for deploy in log.deploys(env, limit=20):
        if deploy.status == RUNNING and not deploy.damaged and deploy.id not in here:
            notes.append(f"[andon: deploy #{deploy.id} is running on another host: andon cannot stop it from here]\n")
    return "".join(notes)


def _is_andon(pid: int) -> bool:
    """Whether ``pid`` looks like an andon process (a pid may have been reused: never signal a stranger)."""
    if not os.path.isdir("/proc"):
        return True  # no /proc here: trust the log
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            command = handle.read()
    except OSError:
        return False
    return b"andon" in command or b"tui.cli" in command


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
