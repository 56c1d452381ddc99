"""The composition of one andon session: repository, configuration, deploy log, identity.

Both the command line and the dashboard start from a :class:`World`; tests and the
demo build one directly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from backend import AndonError
from backend.config import Config, load
from backend.history import GitError, History
from backend.identity import who
from backend.models import Deploy, utc_now
from backend.store import DeployLog, StoreError


@dataclass
class World:
    history: History
    config: Config
    db_path: Path
    clock: Callable[[], datetime] = utc_now
    explicit_db: bool = False  # named by --db, ANDON_DB or the config, not the default place
    reading_only: bool = False  # a command that only reads: a named log must exist already
    _log: DeployLog | None = field(default=None, repr=False)

    @property
    def log(self) -> DeployLog:
        """The deploy log, opened on first use (and created if it does not exist yet)."""
        if self._log is None:
            if self.reading_only and self.explicit_db and not self.db_path.exists():
                # A mistyped --db must not quietly show an empty history (and leave a file).
                raise StoreError(f"deploy log {self.db_path}: no such file; nothing has been recorded "
                                 "there yet (check --db, ANDON_DB or db in andon.toml)")
            default = self.history.git_dir is not None and self.db_path.parent == self.history.git_dir / "andon"
            self._log = DeployLog.open(self.db_path, clock=self.clock, create_parent=default)
            self.history.cache = self._log  # ranges computed once are kept in the log
            # Events this session writes are announced to the configured receivers (the outbox).
            self._log.announce_to(self.config.notifiers, repository=self.repository_name())
        return self._log

    def open(self) -> DeployLog:
        """Open (and so check) the deploy log now rather than on first use."""
        return self.log

    def keep_ranges(self, deploys: Iterable[Deploy]) -> None:
        """Work out (and keep in the log) the commits these deploys shipped, now.

        A range between two SHAs never changes, so computing it when the deploy is
        recorded, while its commits are surely in the clone, makes every later
        `andon log` and dashboard read it back instead of asking git. Best effort:
        a history problem is kept as nothing and shown when the range is read.
        """
        self.history.ranges([(deploy.prev_sha, deploy.sha) for deploy in deploys])

    def repository_name(self) -> str:
        """The repository as chat messages name it: its working tree's directory name ("" without one)."""
        return self.history.root.name if self.history.root is not None else ""

    def who(self) -> str:
        return who(self.history.user_name)

    def environments(self) -> list[str]:
        """Configured environments in their file order, then any others seen in the log."""
        names = list(self.config.environments)
        names += [name for name in self.log.environments() if name not in names]
        return names

    def close(self) -> None:
        """Close the deploy log and the repository's GitPython ``Repo`` objects (safe to call twice)."""
        if self._log is not None:
            self.history.cache = None
            self._log.close()
            self._log = None
        self.history.close()


def resolve_world(
    repo: Path | None = None,
    db: Path | None = None,
    config: Path | None = None,
    *,
    clock: Callable[[], datetime] = utc_now,
) -> World:
    """Find the repository, read its configuration and decide where the deploy log is.

    The log is ``--db``, else ``$ANDON_DB``, else the config's ``db`` (relative to the
    repository root), else ``<git dir>/andon/deploys.db``: inside the repository's git
    directory, so it is never committed and needs no set-up.
    """
    try:
        start = repo or Path.cwd()
    except FileNotFoundError:
        raise AndonError("the current directory no longer exists: cd to a clone, or use --repo") from None
    try:
        # GIT_DIR (and GIT_WORK_TREE) in the environment name the repository, as they
        # do for git, when no --repo is given: andon run from a git hook, or on a
        # repository whose git directory lives elsewhere, reads that one. A --repo
        # named on the command line wins over them (andon pointed at a clone from a
        # hook of another repository must not read the hook's repository).
        history = History.discover(start, honour_git_dir=repo is None)
    except GitError as error:
        if repo is not None:
            raise GitError(f"--repo {repo}: {error}".replace(" (use --repo)", "")) from None
        history = History(None)  # no repository: still fine with --db, commits unavailable
    settings = load(history.root, config)
    env_db = os.environ.get("ANDON_DB", "").strip()
    if db is not None:
        db_path = db
    elif env_db:
        db_path = Path(env_db)
    elif settings.db:
        base = history.root or (settings.source.parent if settings.source else Path.cwd())
        db_path = base / Path(settings.db).expanduser()
    elif history.git_dir is not None:
        db_path = history.git_dir / "andon" / "deploys.db"
    else:
        raise AndonError(
            f"{start} is not inside a git repository: run andon in a clone, or use --repo, "
            "or name a deploy log with --db or ANDON_DB"
        )
    return World(history, settings, db_path.expanduser(), clock,
                 explicit_db=db is not None or bool(env_db) or bool(settings.db))
