"""What ``andon status`` and ``andon log`` report, as plain data (JSON-ready)."""

from __future__ import annotations

from typing import Any

from backend.history import Range
from backend.models import Deploy
from backend.world import World


def range_json(found: Range) -> dict[str, Any]:
    return {
        "commits": [commit.to_json() for commit in found.commits],
        "commits_error": found.error,
        "commits_truncated": found.truncated,
        "first_deploy": found.first,
    }


def log_entries(world: World, env: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Deploys, newest first, each with the commits it shipped (one git call for all)."""
    deploys = world.log.deploys(env, limit=limit)
    ranges = world.history.ranges([(d.prev_sha, d.sha) for d in deploys])
    entries = []
    for deploy in deploys:
        entry = deploy.to_json()
        del entry["output"]
        entry.update(range_json(ranges[(deploy.prev_sha, deploy.sha)]))
        entries.append(entry)
    return entries


def _brief(deploy: Deploy | None) -> dict[str, Any] | None:
    if deploy is None:
        return None
    entry = deploy.to_json()
    del entry["output"]
    return entry


def status(world: World) -> list[dict[str, Any]]:
    """Per environment: what is live, the latest deploy, and the commits waiting to go out."""
    branch = world.history.branch(world.config.branch)
    result = []
    for env in world.environments():
        live = world.log.live(env)
        latest = world.log.deploys(env, limit=1)
        pending = world.history.pending(branch, live.sha if live else None)
        result.append({
            "env": env,
            "line": "running",
            "live": _brief(live),
            "latest": _brief(latest[0] if latest else None),
            "branch": branch.removeprefix("refs/heads/") if branch else None,
            "pending_count": pending.count,
            "pending": [commit.to_json() for commit in pending.commits],
            "pending_error": pending.error,
        })
    return result
