"""Running a deploy end to end: resolve, record the start, run the command, verify, record the end.

**Verification.** When the environment has health checks and ``verify_seconds > 0``, a
deploy whose command succeeded is watched for that long before it is called good
(:func:`backend.verify.verify`: how rounds are judged). The deploy row stays ``running``
meanwhile, then finishes ``succeeded`` or ``unhealthy``, the verification's lines appended to
its output. A row changes only once, so this is the one honest order: nothing is called
succeeded that may yet turn out unhealthy. One round is probed just before the command runs
(:func:`backend.verify.before`): a check already down then is reported and not counted
against this deploy. A running ``andon watch`` keeps probing and recording, and the deploy
still judges by its own probes. Ctrl-C or SIGTERM during verification records
``interrupted``, as during the command.

**The line and one deploy at a time** (:mod:`backend.store.line`). A deploy starts only
when the environment's line runs (else :class:`~backend.store.line.LineStopped`, unless
``force``: then ``deploy.forced`` is written) and no other deploy of it is running; it
waits for one that is, up to ``wait`` seconds (:class:`~backend.store.line.Busy` after).
While waiting it stops an orphan: a deploy whose andon was killed and whose command
still runs (:func:`reap`). When verification finds the deploy unhealthy and the
environment has ``auto_stop``, the line stops by itself (who ``andon``) and, with
``auto_rollback``, a rollback is requested (:func:`backend.rollback.stop_after_unhealthy`).

**Actions.** A deploy or rollback action is a command (run by :class:`~backend.runner.Runner`
in a process group of its own, which is recorded in the log as soon as it exists) or an
HTTP request (:meth:`~backend.runner.Runner.request`). :func:`run_action` runs either.

**Killed andons** (:func:`reap`). When the andon running a deploy or a rollback dies (even
by SIGKILL), its row is left ``running`` and its command's process group orphaned. Whoever
notices first (``andon deploy`` and ``andon rollback`` before they start, a rollback runner,
``andon status`` and ``andon log``, and the dashboard when it reads an environment) stops that
group (SIGTERM, SIGKILL after the runner's grace) and records the row ``interrupted``, its
output saying so, or saying why the group could not be stopped. Until then the row reads as
``running`` while the group lives (:meth:`backend.store.line.LineMixin._deploy`).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backend import AndonError
from backend.config import Action, Environment, HttpAction, check_environment_name
from backend.live_output import LiveOutput
from backend.models import FAILED, INTERRUPTED, RUNNING, SUCCEEDED, UNHEALTHY, Deploy
from backend.processes import alive, stop_group
from backend.runner import STOP_GRACE, RunError, Runner, RunResult, substitute
from backend.store.line import Busy, LineState, Turn
from backend.text import clean_line
from backend.verify import STOPPED_BY, SyncProbe, Verdict, before, verify_output
from backend.world import World

if TYPE_CHECKING:
    from backend.gate import Refusal
    from backend.rollback import AutoStop
    from backend.store import DeployLog

DEFAULT_WAIT = 300.0  # seconds andon deploy waits for another deploy of its environment
WAIT_POLL = 0.2  # seconds between two looks at the deploy being waited for
# A running deploy of another host blocks for at most its environment's timeout plus its
# verification window plus this: by then its andon has stopped it, or died.
STALE_MARGIN = 60.0


class Interrupted(AndonError):
    """Ctrl-C or SIGTERM while waiting for the environment: nothing was started."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"stopped by {STOPPED_BY.get(signal_name, signal_name)} while waiting; nothing was deployed")
        self.exit_code = 128 + int(getattr(signal, signal_name, signal.SIGINT))


@dataclass(frozen=True)
class DeployOutcome:
    deploy: Deploy
    exit_code: int  # the command's; 128 + the signal's number when verification was stopped
    verdict: Verdict | None = None  # None: not verified (no checks, verify_seconds = 0, or the command failed)
    forced: LineState | None = None  # the stop this deploy overrode with force
    auto: AutoStop | None = None  # what an unhealthy verdict did to the line (auto_stop)
    overrode: tuple[Refusal, ...] = ()  # every refusal of the gate force overrode (backend.gate)


def stale_after(settings: Environment) -> float:
    """Seconds after which another host's running deploy of this environment stops blocking."""
    return settings.timeout + settings.verify_seconds + STALE_MARGIN


def reap(log: DeployLog, env: str | None = None, *, grace: float = STOP_GRACE) -> list[Deploy]:
    """Finish the deploys (of ``env``) whose andon died on this host, stopping their orphaned
    process groups first; end the rollbacks whose runner died before they started.

    Cheap when nothing died (one query). Safe to call from any andon at any time, several at
    once: the first to finish a row writes its events, the others find it finished. Returns
    the rows this call finished.
    """
    finished = []
    for orphan in log.orphans(env):
        what = f"[andon: the andon running this {'rollback' if orphan.trigger == 'rollback' else 'deploy'} " \
               f"(pid {orphan.pid}) died"
        if orphan.pgid is not None and alive(orphan.pgid, group=True, started=orphan.group_started):
            problem = stop_group(orphan.pgid, grace, started=orphan.group_started)
            note = (f"{what}; its command's process group {orphan.pgid} could not be stopped: {problem}]\n"
                    if problem else f"{what}; its command's process group {orphan.pgid} was stopped]\n")
        elif orphan.pgid is not None:
            note = f"{what}; its command had ended]\n"
        else:
            note = f"{what}]\n"
        done = log.end_orphan(orphan.deploy_id, note)
        if done is not None:
            finished.append(done)
    for rollback in log.orphan_rollbacks(env):
        log.end_rollback(rollback.id, INTERRUPTED, f"its runner (pid {rollback.runner_pid}) died before it started")
    return finished


def take_turn(world: World, env: str, sha: str, *, who: str, trigger: str, reason: str, force: bool,
              wait: float, settings: Environment, interrupted: Callable[[], str | None] = lambda: None,
              on_wait: Callable[[Deploy], None] | None = None,
              monotonic: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
              overriding: Mapping[str, Any] | None = None) -> Turn:
    """Start a deploy of ``env`` once no other deploy of it runs (see the module's docstring).

    Raises :class:`~backend.store.line.LineStopped` (the line is stopped, no ``force``),
    :class:`~backend.store.line.Busy` (still blocked after ``wait`` seconds) or
    :class:`Interrupted`. ``on_wait`` hears of the deploy it waits for, once.
    """
    log = world.log
    reap(log, env)
    deadline = monotonic() + max(0.0, wait)
    told = False
    while True:
        stopped = interrupted()
        if stopped:
            raise Interrupted(stopped)
        turn = log.try_start(env, sha, who=who, trigger=trigger, reason=reason, force=force,
                             stale_after=stale_after(settings), overriding=overriding)
        if turn.blocker is None:
            return turn
        blocker = turn.blocker
        if reap(log, env):  # it was an orphan (its andon died, its command ran on): stopped now
            continue
        if monotonic() >= deadline:
            raise Busy(blocker, wait)
        if not told and on_wait is not None:
            on_wait(blocker)
            told = True
        # Read-only looks until it ends (or the deadline): no write lock is taken while waiting,
        # unless its andon dies meanwhile and its orphaned command must be stopped.
        while monotonic() < deadline and not interrupted():
            sleep(min(WAIT_POLL, max(0.0, deadline - monotonic())))
            if log.get(blocker.id).status != RUNNING or reap(log, env):
                break


def run_action(world: World, started: Deploy, action: Action, *, runner: Runner, timeout: float,
               on_output: Callable[[str], None] | None = None,
               live: Callable[[str], None] | None = None) -> RunResult:
    """Run a deploy's or rollback's action for the row ``started``: a command (its process group
    recorded in the log as soon as it exists) or an HTTP request. Raises :class:`RunError`.
    ``live`` (a :meth:`~backend.live_output.LiveOutput.write`) gets the output as it comes."""
    values = {"sha": started.sha, "env": started.env}
    if isinstance(action, HttpAction):
        return runner.request(action, values, timeout=timeout, on_output=on_output, live=live)
    child_env = dict(os.environ)
    child_env.update(
        ANDON_ENV=started.env, ANDON_SHA=started.sha, ANDON_PREV_SHA=started.prev_sha or "",
        ANDON_DEPLOY_ID=str(started.id),
    )
    return runner.run(substitute(action, values), cwd=world.history.root, env=child_env, timeout=timeout,
                      on_output=on_output, on_start=lambda pgid: world.log.record_process(started.id, pgid),
                      live=live)


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
    force: bool = False,
    wait: float = DEFAULT_WAIT,
    on_wait: Callable[[Deploy], None] | None = None,
    wait_line: float = 0.0,
    on_wait_line: Callable[[Refusal, float], None] | None = None,
) -> DeployOutcome:
    """Run ``command`` (default: the environment's deploy action) for ``revision`` and record it.

    ``interrupted`` tells whether a stop was asked for ("SIGINT", "SIGTERM") while waiting
    for the environment or while the deploy is being verified (the runner hears it during
    the command); ``probe`` replaces :func:`backend.health.probe_round`. ``force`` deploys
    through a stopped line, a freeze or held commits (recorded); ``wait`` is how long to wait for
    another deploy of the environment, ``on_wait`` hears which one, once. The gate
    (:func:`backend.gate.admit`) comes first: ``wait_line`` is how long to wait for a stopped line
    to resume or a freeze to open, ``on_wait_line`` hears what it waits for, once.
    """
    check_environment_name(env)
    settings = world.config.environment(env)
    action: Action
    if command:
        action = tuple(command)
    elif settings.deploy is None:
        where = world.config.source.name if world.config.source else "andon.toml"
        raise AndonError(
            f"environment {env!r} has no deploy action in {where}: configure "
            f"environments.{env}.deploy or give the command after --"
        )
    else:
        action = settings.deploy
    sha = world.history.resolve(revision)
    trigger = trigger or ("ci" if os.environ.get("CI") else "manual")
    from backend.gate import admit, overridden

    gate = admit(world, env, sha, force=force, wait=wait_line, interrupted=interrupted or (lambda: None),
                 on_wait=on_wait_line)
    turn = take_turn(world, env, sha, who=world.who(), trigger=trigger, reason=clean_line(reason), force=force,
                     wait=wait, settings=settings, interrupted=interrupted or (lambda: None), on_wait=on_wait,
                     overriding=overridden(gate))
    started = turn.started
    assert started is not None
    verifying = settings.verify_seconds > 0 and bool(settings.health)
    # The output goes into the log as it comes, for every dashboard (and the row's final output at the end).
    with LiveOutput(world.log, started.id) as live:
        try:
            # The state before: checks already down now are not counted against this deploy.
            baseline = before(world, env, settings, probe) if verifying else None
            if baseline is not None and baseline.said:
                live.write(baseline.said)
                if on_output is not None:
                    on_output(baseline.said)
            result = run_action(world, started, action, runner=runner, timeout=settings.timeout, on_output=on_output,
                                live=live.write)
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
        if baseline is not None and baseline.said:
            output = baseline.said + output
        exit_code = result.exit_code
        verdict = None
        if status == SUCCEEDED and verifying:
            def cut_short(said: str, code: int | None = result.exit_code) -> None:
                world.log.finish(started.id, INTERRUPTED, exit_code=code, output=said)

            verdict, output = verify_output(world, started, settings, output, live=live.write, on_output=on_output,
                                            interrupted=interrupted or (lambda: None), stopped=cut_short, probe=probe,
                                            baseline=baseline)
            status = verdict.status
            if verdict.stopped:
                exit_code = 128 + int(getattr(signal, verdict.stopped, signal.SIGINT))
        finished = world.log.finish(started.id, status, exit_code=result.exit_code, output=output)
    world.keep_ranges([finished])
    auto = None
    if finished.status == UNHEALTHY and verdict is not None and settings.auto_stop:
        from backend.rollback import stop_after_unhealthy  # it runs actions through this module

        auto = stop_after_unhealthy(world, finished, verdict.reason, settings)
    return DeployOutcome(finished, exit_code, verdict, turn.forced, auto, gate.refusals if force else ())

