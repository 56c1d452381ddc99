"""The gate: may a deploy of an environment go ahead now, and if not, why not.

Three things refuse a deploy, each with the exit code ``andon deploy`` and ``andon line
--check`` give it (tui/cli.py's table):

* **stopped** (5): the environment's line is stopped (:meth:`backend.store.DeployLog.line`);
* **frozen** (12): a scheduled freeze is in force (:func:`backend.freeze.frozen`);
* **held** (11): the SHA contains commits held after a rollback (:func:`backend.held.blocking`);
  asked only when a SHA is given, since it is the one part that reads git.

:func:`check` returns every refusal that applies, in that order (a :class:`Gate`); its
:attr:`Gate.code` is the first one's. ``andon line --check`` is this and nothing more: one
SELECT and the freeze schedule, no git walk without ``--sha`` (it must answer in well under
the time ``andon status`` takes: benchmarks/line_check.py).

:func:`admit` is the deploy's side (called by :func:`backend.deployer.deploy` before it takes
its turn): it raises the first refusal as an error, or, with ``force``, lets the deploy through
and returns what was overridden (recorded in ``deploy.forced``); with ``wait`` it waits up to
that many seconds for a stopped line to resume or a freeze to open, looking again every
:data:`WAIT_LINE_POLL` seconds (one SELECT each). Decisions:

* without ``wait`` the refusal raised is the first in :func:`check`'s order (stopped, frozen,
  held), so that ``andon deploy`` exits as ``andon line --check --sha`` does;
* held commits are never waited for: they clear by a revert (a new SHA, so a new deploy) or by
  a person's release, not by time; with ``wait``, a deploy of a SHA with held commits is refused
  at once (exit 11) even when the line is stopped too: waiting could not let it through;
* with ``force``, git failing to say which held commits the SHA contains does not stop the
  deploy: the gate records that the check could not be made (``held``: ``error``);
* a freeze that opens only after the wait would end is not waited for either: refused at once,
  saying when it opens (waiting 60 s for a weekend freeze helps nobody);
* the stopped line is looked at again inside the deploy's own transaction
  (:meth:`backend.store.line.LineMixin.try_start`): a line stopped again in the moment between
  the wait and the start still refuses.

Rollbacks never come here (:mod:`backend.rollback` starts its deploy row itself): a rollback is
not blocked by what it fixes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from backend import AndonError
from backend.freeze import Window, frozen, next_freeze
from backend.models import from_iso, to_iso
from backend.text import short

if TYPE_CHECKING:
    from backend.repository import GitError
    from backend.store.line import LineState
    from backend.world import World

STOPPED, FROZEN, HELD = "stopped", "frozen", "held"
EXIT_LINE_STOPPED = 5
EXIT_HELD = 11
EXIT_FROZEN = 12
CODES = {STOPPED: EXIT_LINE_STOPPED, FROZEN: EXIT_FROZEN, HELD: EXIT_HELD}
WAIT_LINE_POLL = 0.5  # seconds between two looks at a stopped line or a freeze while waiting
NAMED = 5  # held commits named in a one-line message; the rest are counted


def span(seconds: float) -> str:
    """A length of time for people: ``45 s``, ``14 min``, ``2 h 14 min``, ``3 d 2 h``."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def moment(stamp: datetime | None) -> str:
    """``2026-11-23 06:00 UTC`` (``never`` for a freeze that leaves no gap)."""
    return stamp.strftime("%Y-%m-%d %H:%M UTC") if stamp is not None else "never"


def describe_window(window: Window, now: datetime) -> str:
    """``weekend, opens 2026-11-23 06:00 UTC (in 14 h 3 min)``."""
    if window.opens is None:
        return f"{window.reason}, and its schedule never leaves a gap"
    return f"{window.reason}, opens {moment(window.opens)} (in {span((window.opens - now).total_seconds())})"


def describe_next(window: Window, now: datetime) -> str:
    """``weekend from 2026-11-27 18:00 UTC (in 3 d 2 h) until 2026-11-30 06:00 UTC``."""
    return (f"{window.reason} from {moment(window.start)} (in {span((window.start - now).total_seconds())})"
            f" until {moment(window.opens)}")


class Refusal(NamedTuple):
    """One reason a deploy may not go ahead: its kind, exit code, one line, and the facts (JSON-ready)."""

    kind: str  # STOPPED, FROZEN or HELD
    code: int
    message: str
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "code": self.code, "message": self.message, **self.detail}


class Gate(NamedTuple):
    """What :func:`check` found for ``env`` (and ``checked_sha``, whose held commits were asked about)."""

    env: str
    refusals: tuple[Refusal, ...]
    checked_sha: str | None

    @property
    def ok(self) -> bool:
        return not self.refusals

    @property
    def code(self) -> int:
        """0 when deploys may go ahead, else the first refusal's exit code (stopped, frozen, held)."""
        return self.refusals[0].code if self.refusals else 0

    def refusal(self, kind: str) -> Refusal | None:
        return next((refusal for refusal in self.refusals if refusal.kind == kind), None)

    def to_json(self) -> dict[str, Any]:
        return {"env": self.env, "ok": self.ok, "code": self.code, "sha": self.checked_sha,
                "reasons": [refusal.to_json() for refusal in self.refusals]}


def _stopped(state: LineState, now: datetime) -> Refusal:
    try:
        seconds: float | None = (now - from_iso(state.since)).total_seconds()
    except (ValueError, TypeError):
        seconds = None
    ago = f" ({span(seconds)} ago)" if seconds is not None else ""
    message = (f"the line of {state.env} is stopped by {state.who or 'someone'} since "
               f"{state.since[:19].replace('T', ' ')} UTC{ago}" + (f": {state.reason}" if state.reason else ""))
    return Refusal(STOPPED, EXIT_LINE_STOPPED, message, {
        "who": state.who, "reason": state.reason, "since": state.since, "automatic": state.automatic,
        "seconds": round(seconds) if seconds is not None else None})


def _frozen(env: str, window: Window, now: datetime) -> Refusal:
    return Refusal(FROZEN, EXIT_FROZEN, f"{env} is frozen: {describe_window(window, now)}", {
        "reason": window.reason, "since": to_iso(window.start),
        "opens": to_iso(window.opens) if window.opens is not None else None})


def _held(env: str, sha: str, commits: list[Any]) -> Refusal:
    named = ", ".join(f"{short(c.sha)} ({c.subject})" if c.subject else short(c.sha) for c in commits[:NAMED])
    more = f" and {len(commits) - NAMED} more" if len(commits) > NAMED else ""
    count = f"{len(commits)} commit{'s' if len(commits) != 1 else ''}"
    return Refusal(HELD, EXIT_HELD, f"{short(sha)} contains {count} held in {env} after a rollback: {named}{more}", {
        "commits": [{"sha": c.sha, "subject": c.subject, "rollback_id": c.rollback_id, "held_at": c.held_at}
                    for c in commits]})


def _blocking(world: World, env: str, sha: str) -> list[Any]:
    """The held commits of ``env`` that ``sha`` contains (:func:`backend.held.blocking`: git, when any are held)."""
    from backend.held import blocking

    return list(blocking(world, env, sha))


def _unchecked(env: str, sha: str, error: GitError) -> Refusal:
    """The held commits could not be checked (git failed): what a forced deploy records it went past."""
    why = str(error)
    return Refusal(HELD, EXIT_HELD, f"the commits held in {env} could not be checked for {short(sha)}: {why}",
                   {"commits": [], "error": why})


def check(world: World, env: str, sha: str | None = None, now: datetime | None = None, *,
          forcing: bool = False) -> Gate:
    """Every reason a deploy of ``env`` (of the full SHA ``sha``, when given) may not go ahead at ``now``.

    Without ``sha``: one SELECT and the freeze schedule, no git. :class:`GitError` (one line) when
    git cannot say which held commits ``sha`` contains; with ``forcing`` (a forced deploy, which
    goes whatever they are) that is a held refusal saying so instead (``error``, no ``commits``).
    """
    now = now if now is not None else world.clock()
    refusals = []
    state = world.log.line(env)
    if state.stopped:
        refusals.append(_stopped(state, now))
    window = frozen(world.config.environment(env).freezes, now)
    if window is not None:
        refusals.append(_frozen(env, window, now))
    if sha is not None:
        from backend.repository import GitError

        try:
            commits = _blocking(world, env, sha)
        except GitError as error:
            if not forcing:
                raise
            refusals.append(_unchecked(env, sha, error))
        else:
            if commits:
                refusals.append(_held(env, sha, commits))
    return Gate(env, tuple(refusals), sha)


# -- the deploy's side ------------------------------------------------------------------------


class Refused(AndonError):
    """``andon deploy`` refused by a freeze or held commits (the stopped line is
    :class:`backend.store.line.LineStopped`)."""

    def __init__(self, refusal: Refusal, message: str) -> None:
        super().__init__(message)
        self.refusal = refusal
        self.exit_code = refusal.code


class Frozen(Refused):
    """A freeze is in force (exit 12)."""


class HeldCommits(Refused):
    """The SHA contains commits held after a rollback (exit 11)."""


def _raise(gate: Gate, refusal: Refusal, waited: float | None = None) -> None:
    from backend.store.line import LineStopped

    env = gate.env
    after = f"after {waited:g}s of waiting, " if waited else ""
    if refusal.kind == STOPPED:
        if not waited:
            raise LineStopped(_state(gate))  # the store's own words, as when try_start refuses
        raise LineStopped(_state(gate), f"{after}{refusal.message}; nothing was deployed (andon resume --env {env}, "
                                        "or --force --reason WHY in an emergency)")
    if refusal.kind == FROZEN:
        raise Frozen(refusal, f"{after}{refusal.message}; nothing was deployed (--wait-line SECONDS waits for it "
                              "to open, or --force --reason WHY in an emergency)")
    raise HeldCommits(refusal, f"{refusal.message}; nothing was deployed (revert them, andon release SHA --env "
                               f"{env} --reason WHY, or --force --reason WHY)")


def _state(gate: Gate) -> LineState:
    from backend.store.line import LineState

    refusal = gate.refusal(STOPPED)
    detail = refusal.detail if refusal is not None else {}
    return LineState(gate.env, True, detail.get("who", ""), detail.get("reason", ""), detail.get("since", ""),
                     bool(detail.get("automatic")))


def overridden(gate: Gate) -> dict[str, Any]:
    """What a forced deploy overrode besides a stopped line, for ``deploy.forced``'s detail:
    ``frozen`` (reason, opens) and ``held`` (shas)."""
    detail: dict[str, Any] = {}
    if (refusal := gate.refusal(FROZEN)) is not None:
        detail["frozen"] = {"reason": refusal.detail["reason"], "opens": refusal.detail["opens"]}
    if (refusal := gate.refusal(HELD)) is not None:
        detail["held"] = {"shas": [commit["sha"] for commit in refusal.detail["commits"]]}
        if "error" in refusal.detail:
            detail["held"]["error"] = refusal.detail["error"]  # the check could not be made
    return detail


def admit(world: World, env: str, sha: str, *, force: bool, wait: float = 0.0,
          interrupted: Callable[[], str | None] = lambda: None,
          on_wait: Callable[[Refusal, float], None] | None = None,
          monotonic: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Gate:
    """Let a deploy of ``sha`` to ``env`` through the gate, or raise why not (see the module's docstring).

    Returns the gate as it stood when the deploy was let through: with ``force``, the refusals it
    overrides (:func:`overridden`). Raises :class:`~backend.store.line.LineStopped` (5),
    :class:`Frozen` (12), :class:`HeldCommits` (11) or :class:`backend.deployer.Interrupted`.
    ``on_wait`` hears, once, what is waited for and for how long at most.
    """
    gate = check(world, env, sha, forcing=force)
    if gate.ok or force:
        return gate
    deadline = monotonic() + max(0.0, wait)
    told = False
    while True:
        held = gate.refusal(HELD)
        if held is not None and wait > 0:
            _raise(gate, held)  # not cleared by waiting; without waiting, the first refusal as in check
        left = deadline - monotonic()
        now = world.clock()
        for refusal in gate.refusals:
            if refusal.kind != FROZEN or wait <= 0:
                continue
            opens = refusal.detail["opens"]
            if opens is None or (from_iso(opens) - now).total_seconds() > left:
                raise Frozen(refusal, f"{refusal.message}; --wait-line {wait:g} would not reach it: nothing was "
                                      "deployed (--force --reason WHY in an emergency)")
        if left <= 0:
            _raise(gate, gate.refusals[0], wait)
        if not told and on_wait is not None:
            on_wait(gate.refusals[0], wait)
            told = True
        stopped = interrupted()
        if stopped:
            from backend.deployer import Interrupted

            raise Interrupted(stopped)
        sleep(min(WAIT_LINE_POLL, max(0.0, left)))
        gate = check(world, env)
        if gate.ok:
            # Cleared: ask about held commits once more (a rollback that ended meanwhile may hold some).
            gate = check(world, env, sha)
            if gate.ok:
                return gate


def freeze_json(world: World, env: str, now: datetime | None = None) -> dict[str, Any]:
    """``{"frozen": {reason, since, opens} | null, "next": {reason, starts, opens} | null}``: the freeze
    in force, or else the next one to begin (``andon status``)."""
    now = now if now is not None else world.clock()
    freezes = world.config.environment(env).freezes
    window = frozen(freezes, now)
    upcoming = None if window is not None else next_freeze(freezes, now)

    def opens(found: Window) -> str | None:
        return to_iso(found.opens) if found.opens is not None else None

    return {"frozen": None if window is None else {"reason": window.reason, "since": to_iso(window.start),
                                                    "opens": opens(window)},
            "next": None if upcoming is None else {"reason": upcoming.reason, "starts": to_iso(upcoming.start),
                                                   "opens": opens(upcoming)}}


def windows(facts: dict[str, Any]) -> tuple[Window | None, Window | None]:
    """``freeze_json``'s facts back as windows: (the freeze in force, the next one)."""
    found: list[Window | None] = []
    for key, begins in (("frozen", "since"), ("next", "starts")):
        window = facts.get(key)
        found.append(None if window is None else Window(
            window["reason"], from_iso(window[begins]), from_iso(window["opens"]) if window["opens"] else None))
    return found[0], found[1]


def freeze_lines(facts: dict[str, Any], now: datetime) -> list[str]:
    """``freeze_json``'s facts for people (``andon status``, ``andon line``): none without freezes."""
    in_force, upcoming = windows(facts)
    lines = []
    if in_force is not None:
        lines.append(f"FROZEN   since {moment(in_force.start)}: {describe_window(in_force, now)}")
    if upcoming is not None:
        lines.append(f"freeze   next: {describe_next(upcoming, now)}")
    return lines
