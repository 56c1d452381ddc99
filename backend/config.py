"""Reading ``andon.toml`` (or ``[tool.andon]`` in ``pyproject.toml``).

Every mistake is reported as one line naming the file, the key and, where it can
be found, the line: ``andon.toml:7: environments.production.timeout must be a
number of seconds, not "ten"``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from backend import AndonError
from backend.text import clean_line

DEFAULT_TIMEOUT = 1800.0
# \Z, not $: "$" also matches before a trailing newline, letting "prod\n" through.
ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")


class ConfigError(AndonError):
    pass


# Immutable records as NamedTuples; why: backend/models.py.


class Environment(NamedTuple):
    name: str
    deploy: tuple[str, ...] | None = None
    rollback: tuple[str, ...] | None = None
    timeout: float = DEFAULT_TIMEOUT


class Config(NamedTuple):
    branch: str | None = None
    db: str | None = None
    environments: Mapping[str, Environment] = MappingProxyType({})  # read-only: a default is shared
    source: Path | None = None

    def environment(self, name: str) -> Environment:
        """The named environment; one that is not configured gets the defaults."""
        return self.environments.get(name) or Environment(name)


_TOP_KEYS = {"branch", "db", "environments"}
_ENV_KEYS = {"deploy", "rollback", "timeout"}


def _header(line: str) -> str | None:
    """The dotted name of a ``[table]`` header line (quotes and spaces dropped), else None."""
    match = re.match(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$", line)
    return re.sub(r"[\s\"']", "", match.group(1)) if match else None


def _line_of(text: str, key: str) -> int | None:
    """Best-effort line number of the dotted ``key`` in a TOML text (tomllib gives none)."""
    lines = text.splitlines()
    parent, _, last = key.rpartition(".")
    # Look inside the key's own table first: two environments may both set
    # ``timeout`` and the message must point at the one that is wrong.
    assign = re.compile(rf"^\s*[\"']?{re.escape(last)}[\"']?\s*=")
    if parent:
        for number, line in enumerate(lines):
            if _header(line) == parent:
                for inner_number, inner in enumerate(lines[number + 1:], number + 2):
                    if inner.lstrip().startswith("["):
                        break
                    if assign.search(inner):
                        return inner_number
                break
    pattern = re.compile(rf"^\s*(\[[^\]]*\b{re.escape(last)}\b[^\]]*\]|\"?{re.escape(last)}\"?\s*=)")
    for number, line in enumerate(lines, 1):
        if pattern.search(line):
            return number
    return None


def _where(path: Path, text: str, key: str) -> str:
    line = _line_of(text, key)
    return f"{path.name}:{line}" if line else path.name


def _describe(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def check_environment_name(name: str) -> str:
    if not ENV_NAME.match(name):
        raise ConfigError(
            f"environment name {name!r} is not allowed: use letters, digits, '.', '_' or '-'"
        )
    return name


def parse(data: dict[str, Any], path: Path, text: str, prefix: str = "") -> Config:
    def fail(key: str, message: str) -> ConfigError:
        # A quoted TOML key may hold a newline or an escape sequence: keep the message one line.
        return ConfigError(clean_line(f"{_where(path, text, prefix + key)}: {prefix}{key} {message}"))

    for key in data:
        if key not in _TOP_KEYS:
            raise fail(key, f"is not a known key (known: {', '.join(sorted(_TOP_KEYS))})")
    branch = data.get("branch")
    if branch is not None and (not isinstance(branch, str) or not branch.strip()):
        raise fail("branch", f"must be a branch name, not {_describe(branch)}")
    db = data.get("db")
    if db is not None and (not isinstance(db, str) or not db.strip()):
        raise fail("db", f"must be a file path, not {_describe(db)}")
    raw_envs = data.get("environments", {})
    if not isinstance(raw_envs, dict):
        raise fail("environments", "must be a table of environments ([environments.NAME])")
    environments: dict[str, Environment] = {}
    for name, raw in raw_envs.items():
        key = f"environments.{name}"
        if not ENV_NAME.match(name):
            raise fail(key, f"is not a valid environment name: {name!r} (letters, digits, '.', '_', '-')")
        if not isinstance(raw, dict):
            raise fail(key, "must be a table with deploy, rollback and timeout")
        for sub in raw:
            if sub not in _ENV_KEYS:
                raise fail(f"{key}.{sub}", f"is not a known key (known: {', '.join(sorted(_ENV_KEYS))})")
        actions: dict[str, tuple[str, ...] | None] = {}
        for action in ("deploy", "rollback"):
            value = raw.get(action)
            if value is None:
                actions[action] = None
                continue
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(part, str) for part in value)
                or not value[0].strip()
            ):
                raise fail(
                    f"{key}.{action}",
                    f'must be a command as a list of strings, like ["./deploy.sh", "{{sha}}"], not {_describe(value)}',
                )
            actions[action] = tuple(value)
        timeout = raw.get("timeout", DEFAULT_TIMEOUT)
        # TOML has nan and inf: nan <= 0 is False, so check finiteness explicitly.
        if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                or not math.isfinite(timeout) or timeout <= 0):
            raise fail(f"{key}.timeout", f"must be a positive number of seconds, not {_describe(timeout)}")
        environments[name] = Environment(
            name, actions["deploy"], actions["rollback"], float(timeout)
        )
    return Config(branch=branch, db=db, environments=environments, source=path)


def load_file(path: Path) -> Config:
    """Load one config file: ``andon.toml``, or a ``pyproject.toml`` with ``[tool.andon]``."""
    try:
        raw_bytes = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    text = raw_bytes.decode("utf-8", errors="replace")
    import tomllib  # here, not at the top: a repository without a config file never pays its import

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        match = re.search(r"\(at line (\d+), column \d+\)", message)
        where = f"{path.name}:{match.group(1)}" if match else path.name
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        raise ConfigError(f"{where}: invalid TOML: {reason}") from None
    if path.name == "pyproject.toml":
        tool = data.get("tool", {})
        section = tool.get("andon", {}) if isinstance(tool, dict) else {}
        if not isinstance(section, dict):
            raise ConfigError(f"{path.name}: tool.andon must be a table")
        return parse(section, path, text, prefix="tool.andon.")
    return parse(data, path, text)


def find(root: Path | None) -> Path | None:
    """The config file for a repository root: ``andon.toml``, else a pyproject with ``[tool.andon]``."""
    if root is None:
        return None
    candidate = root / "andon.toml"
    if candidate.is_file():
        return candidate
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        try:
            if re.search(rb"^\s*\[tool\.andon[.\]]", pyproject.read_bytes(), re.MULTILINE):
                return pyproject
        except OSError:
            return None
    return None


def load(root: Path | None, explicit: Path | None = None) -> Config:
    """The configuration in force: ``explicit`` if given, else the repository's, else defaults."""
    path = explicit or find(root)
    return load_file(path) if path else Config()
