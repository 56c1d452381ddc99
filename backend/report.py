"""What ``andon status`` and ``andon log`` report, as plain data (JSON-ready)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

from backend.history import Range
from backend.models import Deploy
from backend.world import World


def range_json(found: Range, commit_json: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A range as JSON fields; ``commit_json`` shares one dict per commit across ranges."""
    if commit_json is None:
        commits = [commit.to_json() for commit in found.commits]
    else:
        commits = []
        for commit in found.commits:
            shown = commit_json.get(commit.sha)
            if shown is None:
                shown = commit_json[commit.sha] = commit.to_json()
            commits.append(shown)
    return {
        "commits": commits,
        "commits_error": found.error,
        "commits_truncated": found.truncated,
        "first_deploy": found.first,
    }


_SPLICE = "\x00"  # where a deploy's commits go in `andon log --json`: encoded as below
_SPLICED = '"\\u0000"'

# Ranges not kept yet are worked out this many at a time. Past ~1,000 git is asked for the
# whole history once per batch: over the benchmark's 10,000 deploys, batches of 5,000 took
# 3.7-4.1 s and 119 MB, one batch 2.7-2.9 s and 104 MB (the history's graph dominates).
COMPUTE_BATCH = 20_000


def log_chunks(world: World, env: str | None = None, limit: int | None = None
               ) -> Iterator[list[tuple[Deploy, Range]]]:
    """Deploys newest first with the commits each shipped, a few hundred at a time.

    One pass over the log, memory flat however long the history: each chunk's ranges
    are read back from the log, where they were kept when each deploy was recorded. When
    the first chunk finds some never worked out (a log another tool wrote), all of them
    are worked out first, in a few big batches (one git log each, and kept for next
    time), rather than chunk by chunk.
    """
    pages = world.log.iter_deploys(env, limit=limit)
    first = next(pages, None)
    if first is None:
        return
    if world.history.root is not None and world.log.uncached([(d.prev_sha, d.sha) for d in first]):
        _work_out_missing(world, env, limit)
    for deploys in itertools.chain([first], pages):
        ranges = world.history.ranges([(d.prev_sha, d.sha) for d in deploys])
        yield [(deploy, ranges[(deploy.prev_sha, deploy.sha)]) for deploy in deploys]


def _work_out_missing(world: World, env: str | None, limit: int | None) -> None:
    missing: list[tuple[str | None, str]] = []
    for pairs in world.log.iter_pairs(env, limit=limit):
        missing += world.log.uncached(pairs)
        if len(missing) >= COMPUTE_BATCH:
            world.history.ranges(missing)
            missing = []
    if missing:
        world.history.ranges(missing)


def log_entries(world: World, env: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Deploys, newest first, each with the commits it shipped (one git call per batch)."""
    commit_json: dict[str, dict[str, Any]] = {}
    entries = []
    for chunk in log_chunks(world, env, limit):
        for deploy, found in chunk:
            entry = deploy.to_json(output=False)
            entry.update(range_json(found, commit_json))
            entries.append(entry)
    return entries


def iter_log_json(world: World, env: str | None = None, limit: int | None = None, *,
                  damaged: list[str] | None = None) -> Iterator[str]:
    """``andon log --json`` as UTF-8 JSON text, in pieces written as they are read.

    Each range's commits are already JSON (kept so in the range cache), so they are
    spliced in as they are: over 10,000 deploys this is several times faster than
    building and encoding the same document as Python objects. ``damaged`` collects
    the reasons of damaged rows met on the way.
    """
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    yield '{"deploys":['
    separator = ""
    for chunk in log_chunks(world, env, limit):
        entries = []
        for deploy, found in chunk:
            if deploy.damaged and damaged is not None:
                damaged.append(deploy.damaged)  # the CLI names them on stderr
            entry = deploy.to_json(output=False)
            entry.update(commits=_SPLICE, commits_error=found.error, commits_truncated=found.truncated,
                         first_deploy=found.first)
            entries.append(entry)
        # One encode per chunk; each placeholder then gives way to that deploy's commits.
        # (Text from the log has no NUL, so the placeholder cannot occur otherwise.)
        pieces = dumps(entries)[1:-1].split(_SPLICED)
        text = pieces[0] + "".join(found.commits_json() + piece for (_, found), piece in zip(chunk, pieces[1:],
                                                                                              strict=True))
        yield separator + text
        separator = ","
    yield "]}"


def log_json(world: World, env: str | None = None, limit: int | None = None) -> str:
    """The whole of ``andon log --json`` as one string (tests; the CLI streams it)."""
    return "".join(iter_log_json(world, env, limit))


def _brief(deploy: Deploy | None) -> dict[str, Any] | None:
    return None if deploy is None else deploy.to_json(output=False)


def status(world: World) -> list[dict[str, Any]]:
    """Per environment: what is live, the latest deploy, the commits waiting to go out, and the
    freeze in force or the next one (:func:`backend.gate.freeze_json`)."""
    from backend.gate import freeze_json

    branch = world.history.branch(world.config.branch)
    now = world.clock()
    result = []
    for env in world.environments():
        live = world.log.live(env)
        latest = world.log.deploys(env, limit=1)
        pending = world.history.pending(branch, live.sha if live else None, world.config.branch)
        result.append({
            "env": env,
            "live": _brief(live),
            "latest": _brief(latest[0] if latest else None),
            "branch": branch.removeprefix("refs/heads/") if branch else None,
            "pending_count": pending.count,
            "pending": [commit.to_json() for commit in pending.commits],
            "pending_error": pending.error,
            "freeze": freeze_json(world, env, now),
        })
    return result
