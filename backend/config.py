"""Reading ``andon.toml`` (or ``[tool.andon]`` in ``pyproject.toml``).

Every mistake is reported as one line naming the file, the key and, where it can
be found, the line: ``andon.toml:7: environments.production.timeout must be a
number of seconds, not "ten"``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from backend import AndonError
from backend.freeze import Freeze, parse_freezes
from backend.text import clean_line

DEFAULT_TIMEOUT = 1800.0
DEFAULT_HEALTH_INTERVAL = 5.0
DEFAULT_HEALTH_TIMEOUT = 2.0
DEFAULT_VERIFY_FAILURES = 3
DEFAULT_ROLLBACK_GRACE = 5.0  # seconds to cancel a rollback before its action starts
DEFAULT_STOP_REMINDER = 60.0  # minutes a line may stay stopped before chat is reminded (then once per interval)
# What a [[notify]] receiver may hear of (``events = [...]``): groups of event kinds. Which
# events fall in which group is backend/store/outbox.py's (the outbox writes a receiver's row
# only for the groups it wants). Every successful deploy ("deploys") is off by default.
NOTIFY_EVENTS = ("stops", "resumes", "rollbacks", "failures", "forced", "holds", "reminders", "deploys")
DEFAULT_NOTIFY_EVENTS = frozenset(NOTIFY_EVENTS) - {"deploys"}
NOTIFY_KINDS = ("slack", "mattermost", "discord", "teams", "webhook")
HTTP_METHODS = ("POST", "PUT", "PATCH")
# Kinds of migration (``Migration-Kind:``); database is the default. Only database moves data
# unless a kind's table says ``moves_data = true`` (see MigrationRules).
MIGRATION_KINDS = ("database", "config", "infrastructure", "third-party")
# \Z, not $: "$" also matches before a trailing newline, letting "prod\n" through.
ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")


class ConfigError(AndonError):
    pass


# Immutable records as NamedTuples; why: backend/models.py.


class HealthCheck(NamedTuple):
    """One ``[[environments.NAME.health]]`` check, as configured (probed by backend/health.py)."""

    name: str
    url: str
    interval: float = DEFAULT_HEALTH_INTERVAL  # seconds between probes
    timeout: float = DEFAULT_HEALTH_TIMEOUT  # seconds for the whole probe, body included; <= interval
    version: str | None = None  # a JSON key path ("build.sha") or "header:X-Version"
    expect: tuple[int, ...] | None = None  # status codes that count as up; None: any 2xx
    degraded_ms: float | None = None  # slower than this (and expected) is degraded; < timeout
    # (header name, NAME of the environment variable holding its value), read when probing:
    # the secret itself is never in the file, nor in this record.
    headers: tuple[tuple[str, str], ...] = ()


class HttpAction(NamedTuple):
    """A deploy or rollback action that is an HTTP request (a CI system's API) instead of a command.

    Success is a 2xx answer. ``{sha}`` (and the other placeholders a command takes) is
    substituted in every string of the body; the URL and the header values come from
    environment variables, read when the action runs: never from the file.
    """

    url_env: str  # NAME of the environment variable holding the URL
    body: str = "null"  # the JSON body, as JSON text (immutable; placeholders substituted per string)
    headers: tuple[tuple[str, str], ...] = ()  # (header name, NAME of the variable holding its value)
    method: str = "POST"


# A command (argv, placeholders in each part) or an HTTP request.
Action = tuple[str, ...] | HttpAction


class Environment(NamedTuple):
    name: str
    deploy: Action | None = None
    rollback: Action | None = None  # None: a rollback runs the deploy action with the target SHA
    timeout: float = DEFAULT_TIMEOUT
    health: tuple[HealthCheck, ...] = ()
    verify_seconds: float = 0.0  # after a deploy, watch its health this long (0: no verification)
    verify_failures: int = DEFAULT_VERIFY_FAILURES  # failed rounds in a row that make it unhealthy
    rollback_grace_seconds: float = DEFAULT_ROLLBACK_GRACE  # cancel window before a rollback runs (0: none)
    auto_stop: bool = True  # a deploy that fails its health verification stops the line
    auto_rollback: bool = False  # ...and rolls back without a person (needs auto_stop)
    freezes: tuple[Freeze, ...] = ()  # scheduled windows without deploys (backend/freeze.py)
    stop_reminder_minutes: float = DEFAULT_STOP_REMINDER  # a line stopped this long is recalled in chat (0: never)


class Notifier(NamedTuple):
    """One ``[[notify]]`` receiver: where the line's news goes (delivered by backend/notify.py)."""

    kind: str  # one of NOTIFY_KINDS
    url_env: str  # NAME of the environment variable holding the webhook URL
    environments: tuple[str, ...] | None = None  # None: every environment
    secret_env: str | None = None  # webhook only: NAME of the variable holding the HMAC key
    events: frozenset[str] = DEFAULT_NOTIFY_EVENTS  # which news it hears of: groups of NOTIFY_EVENTS

    @property
    def key(self) -> str:
        """The receiver's identity in the log's outbox (unique within a configuration)."""
        return f"{self.kind}:{self.url_env}"

    def wants(self, env: str | None) -> bool:
        """Whether news of ``env`` goes to this receiver (news of no environment goes everywhere)."""
        return env is None or self.environments is None or env in self.environments


class MigrationRules(NamedTuple):
    """How long a migration may sit in a phase before andon nags (``[migrations]``, per kind overrides)."""

    cleanup_due_days: float = 14.0  # cleanup_due -> overdue after this many days (critical after twice)
    soak_hours: float = 24.0  # a kind with no data to move: expand live this long -> cleanup_due
    stall_minutes: float = 30.0  # a running migration with no heartbeat for this long is stalled
    moves_data: bool = True  # whether the migrate step moves data (must be finished) or only soaks


class MigrationSettings(NamedTuple):
    """``[migrations]``: the defaults and each kind's overrides (merged over them)."""

    defaults: MigrationRules = MigrationRules()
    kinds: Mapping[str, MigrationRules] = MappingProxyType({})

    def rules(self, kind: str | None) -> MigrationRules:
        """The rules for a kind (None, or a kind no table names: database's defaults for database,
        the defaults without data to move for the others)."""
        kind = kind or "database"
        found = self.kinds.get(kind)
        if found is not None:
            return found
        return self.defaults._replace(moves_data=kind not in _NO_DATA_KINDS)


_NO_DATA_KINDS = frozenset(MIGRATION_KINDS) - {"database"}


class Config(NamedTuple):
    branch: str | None = None
    db: str | None = None
    environments: Mapping[str, Environment] = MappingProxyType({})  # read-only: a default is shared
    source: Path | None = None
    notifiers: tuple[Notifier, ...] = ()
    migrations: MigrationSettings = MigrationSettings()

    def environment(self, name: str) -> Environment:
        """The named environment; one that is not configured gets the defaults."""
        return self.environments.get(name) or Environment(name)


_TOP_KEYS = {"branch", "db", "environments", "migrations", "notify"}
_MIGRATION_KEYS = ("cleanup_due_days", "soak_hours", "stall_minutes")  # [migrations] and each kind's table
_ENV_KEYS = {"auto_rollback", "auto_stop", "deploy", "freeze", "health", "rollback", "rollback_grace_seconds",
             "stop_reminder_minutes", "timeout",
             "verify_failures", "verify_seconds"}
_HTTP_ACTION_KEYS = {"body", "headers", "method", "url_env"}
_NOTIFY_KEYS = {"environments", "events", "kind", "secret_env", "url_env"}
_CHECK_KEYS = {"degraded_ms", "expect", "headers", "interval", "name", "timeout", "url", "version"}
# An HTTP header name (RFC 9110 token) and an environment variable name (POSIX, portable).
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
# A JSON key path: keys (or list indexes) joined by dots, no spaces or control characters.
_JSON_PATH = re.compile(r"^[^.\s\x00-\x1f\x7f]+(\.[^.\s\x00-\x1f\x7f]+)*\Z")


def _header(line: str) -> str | None:
    """The dotted name of a ``[table]`` header line (quotes and spaces dropped), else None."""
    match = re.match(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$", line)
    return re.sub(r"[\s\"']", "", match.group(1)) if match else None


def _array_header(line: str) -> str | None:
    """The dotted name of a ``[[array.of.tables]]`` header line, else None."""
    match = re.match(r"^\s*\[\[([^\[\]]+)\]\]\s*(#.*)?$", line)
    return re.sub(r"[\s\"']", "", match.group(1)) if match else None


def _line_in_array_table(lines: list[str], table: str, index: int, rest: str | None) -> int | None:
    """The line of ``rest`` (its first key) in the ``index``-th ``[[table]]``, else that header's line."""
    count = -1
    for number, line in enumerate(lines):
        if _array_header(line) != table:
            continue
        count += 1
        if count != index:
            continue
        if rest is None:
            return number + 1
        first = rest.split(".")[0]
        assign = re.compile(rf"^\s*[\"']?{re.escape(first)}[\"']?\s*=")
        for inner_number, inner in enumerate(lines[number + 1:], number + 2):
            if inner.lstrip().startswith("["):
                # A sub-table of this element ([table.headers]) is where its keys are.
                name = _header(inner)
                if name == f"{table}.{first}":
                    return inner_number
                if name is None or not name.startswith(table + "."):
                    break
                continue
            if assign.search(inner):
                return inner_number
        return number + 1  # a required key that is missing: point at its table
    return None


def _line_of(text: str, key: str) -> int | None:
    """Best-effort line number of the dotted ``key`` in a TOML text (tomllib gives none).

    A key inside an array of tables is written ``environments.prod.health[1].url``
    (the second ``[[environments.prod.health]]``, counted from 0).
    """
    lines = text.splitlines()
    indexed = re.match(r"^(.*?)\[(\d+)\](?:\.(.*))?\Z", key)
    if indexed:
        found = _line_in_array_table(lines, indexed.group(1), int(indexed.group(2)), indexed.group(3))
        if found:
            return found
        key = indexed.group(1)  # an inline array (health = [{...}]): the line of the array's key
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


def _is_number(value: Any) -> bool:
    # TOML has nan and inf: nan <= 0 is False, so finiteness is checked explicitly.
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _seconds(value: float) -> str:
    return f"{value:g}"


def _url_problem(url: str) -> str | None:
    """Why ``url`` cannot be probed, or None."""
    from urllib.parse import urlsplit  # here: only a config with health checks pays its import
    if any(char.isspace() or not char.isprintable() for char in url):
        return "must be a URL without spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError:
        return f"must be an http:// or https:// URL, not {_describe(url)}"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return f"must be an http:// or https:// URL, not {_describe(url)}"
    if parts.username is not None or parts.password is not None:
        # Secrets never live in the file: a token goes in headers, from an environment variable.
        return "must not hold a user or password: send credentials with headers = { Authorization = \"VARIABLE\" }"
    return None


def _parse_check(raw: Any, key: str, taken: dict[str, int], index: int,
                 fail: Callable[[str, str], ConfigError]) -> HealthCheck:
    if not isinstance(raw, dict):
        raise fail(key, "must be a table with name and url ([[environments.NAME.health]])")
    for sub in raw:
        if sub not in _CHECK_KEYS:
            raise fail(f"{key}.{sub}", f"is not a known key (known: {', '.join(sorted(_CHECK_KEYS))})")
    name = raw.get("name")
    if name is None:
        raise fail(key, "needs a name (name = \"api\")")
    if not isinstance(name, str) or not ENV_NAME.match(name):
        raise fail(f"{key}.name", f"must be a name of letters, digits, '.', '_' or '-', not {_describe(name)}")
    if name in taken:
        raise fail(f"{key}.name", f"{name!r} is already the name of health[{taken[name]}]: names must differ")
    taken[name] = index
    url = raw.get("url")
    if url is None:
        raise fail(key, "needs a url (url = \"https://example.com/healthz\")")
    if not isinstance(url, str):
        raise fail(f"{key}.url", f"must be an http:// or https:// URL, not {_describe(url)}")
    problem = _url_problem(url)
    if problem:
        raise fail(f"{key}.url", problem)
    interval = raw.get("interval", DEFAULT_HEALTH_INTERVAL)
    if not _is_number(interval) or interval <= 0:
        raise fail(f"{key}.interval", f"must be a positive number of seconds, not {_describe(interval)}")
    timeout = raw.get("timeout", DEFAULT_HEALTH_TIMEOUT)
    if not _is_number(timeout) or timeout <= 0:
        raise fail(f"{key}.timeout", f"must be a positive number of seconds, not {_describe(timeout)}")
    if timeout > interval:
        # A probe still running when the next is due would overlap it: one at a time per check.
        raise fail(f"{key}.timeout", f"must not be longer than the interval ({_seconds(interval)} s), "
                                     f"not {_describe(timeout)}")
    version = raw.get("version")
    if version is not None:
        header = version[len("header:"):] if isinstance(version, str) and version.startswith("header:") else None
        if not isinstance(version, str) or (
            not HEADER_NAME.match(header) if header is not None else not _JSON_PATH.match(version)
        ):
            raise fail(f"{key}.version", 'must be a JSON key path like "build.sha" or a header like '
                                         f'"header:X-Version", not {_describe(version)}')
    expect = raw.get("expect")
    if expect is not None:
        if (not isinstance(expect, list) or not expect
                or not all(isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599
                           for code in expect)):
            raise fail(f"{key}.expect", f"must be a list of HTTP status codes (100-599) like [200, 204], "
                                        f"not {_describe(expect)}")
        expect = tuple(dict.fromkeys(expect))
    degraded_ms = raw.get("degraded_ms")
    if degraded_ms is not None:
        if not _is_number(degraded_ms) or degraded_ms <= 0:
            raise fail(f"{key}.degraded_ms", f"must be a positive number of milliseconds, not {_describe(degraded_ms)}")
        if degraded_ms >= timeout * 1000:
            # A probe slower than the timeout is down, so such a check could never be degraded.
            raise fail(f"{key}.degraded_ms", f"must be less than the timeout ({_seconds(timeout * 1000)} ms), "
                                             f"not {_describe(degraded_ms)}")
    headers = _variable_headers(raw.get("headers", {}), f"{key}.headers", fail, example="HEALTH_TOKEN")
    return HealthCheck(name, url, float(interval), float(timeout), version, expect,
                       None if degraded_ms is None else float(degraded_ms), headers)


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
        actions: dict[str, Action | None] = {}
        for action in ("deploy", "rollback"):
            value = raw.get(action)
            actions[action] = None if value is None else _parse_action(value, f"{key}.{action}", fail)
        timeout = raw.get("timeout", DEFAULT_TIMEOUT)
        if not _is_number(timeout) or timeout <= 0:
            raise fail(f"{key}.timeout", f"must be a positive number of seconds, not {_describe(timeout)}")
        verify_seconds = raw.get("verify_seconds", 0)
        if not _is_number(verify_seconds) or verify_seconds < 0:
            raise fail(f"{key}.verify_seconds",
                       f"must be a number of seconds (0: no verification), not {_describe(verify_seconds)}")
        verify_failures = raw.get("verify_failures", DEFAULT_VERIFY_FAILURES)
        if isinstance(verify_failures, bool) or not isinstance(verify_failures, int) or verify_failures < 1:
            raise fail(f"{key}.verify_failures",
                       f"must be a whole number of rounds, 1 or more, not {_describe(verify_failures)}")
        raw_health = raw.get("health", [])
        if not isinstance(raw_health, list):
            raise fail(f"{key}.health", f"must be a list of checks ([[{key}.health]]), not {_describe(raw_health)}")
        taken: dict[str, int] = {}
        health = tuple(_parse_check(check, f"{key}.health[{index}]", taken, index, fail)
                       for index, check in enumerate(raw_health))
        grace = raw.get("rollback_grace_seconds", DEFAULT_ROLLBACK_GRACE)
        if not _is_number(grace) or grace < 0 or grace > 600:
            raise fail(f"{key}.rollback_grace_seconds",
                       f"must be a number of seconds from 0 (no grace) to 600, not {_describe(grace)}")
        switches = {}
        for switch, default in (("auto_stop", True), ("auto_rollback", False)):
            value = raw.get(switch, default)
            if not isinstance(value, bool):
                raise fail(f"{key}.{switch}", f"must be true or false, not {_describe(value)}")
            switches[switch] = value
        if switches["auto_rollback"] and not switches["auto_stop"]:
            raise fail(f"{key}.auto_rollback", "needs auto_stop = true: a rollback stops the line first")
        freezes = parse_freezes(raw.get("freeze", []), f"{key}.freeze", fail, _describe)
        reminder = raw.get("stop_reminder_minutes", DEFAULT_STOP_REMINDER)
        if not _is_number(reminder) or not (reminder == 0 or reminder >= 1):
            raise fail(f"{key}.stop_reminder_minutes",
                       f"must be a number of minutes, 0 (no reminder) or at least 1, not {_describe(reminder)}")
        environments[name] = Environment(
            name, actions["deploy"], actions["rollback"], float(timeout),
            health, float(verify_seconds), verify_failures, float(grace),
            switches["auto_stop"], switches["auto_rollback"], freezes, float(reminder),
        )
    notifiers = _parse_notifiers(data.get("notify", []), environments, fail)
    migrations = _parse_migrations(data.get("migrations", {}), fail)
    return Config(branch=branch, db=db, environments=environments, source=path, notifiers=notifiers,
                  migrations=migrations)


def _variable(value: Any, key: str, what: str, fail: Callable[[str, str], ConfigError]) -> str:
    """The NAME of an environment variable (never echo a value that is not one: it may be the secret)."""
    if not isinstance(value, str) or not ENV_VAR_NAME.match(value):
        raise fail(key, f"must be the NAME of an environment variable that holds {what} "
                        "(letters, digits, '_'), not the value itself")
    return value


def _variable_headers(raw: Any, key: str, fail: Callable[[str, str], ConfigError], *,
                      example: str = "CI_TOKEN") -> tuple[tuple[str, str], ...]:
    """Request headers as (name, NAME of the environment variable holding the value): a health
    check's and an HTTP action's alike."""
    if not isinstance(raw, dict):
        raise fail(key, 'must be a table of header names and environment variable names, '
                        f'like {{ Authorization = "{example}" }}')
    headers: list[tuple[str, str]] = []
    seen: set[str] = set()
    for header, variable in raw.items():
        if not HEADER_NAME.match(header):
            raise fail(key, f"has a header name that is not allowed: {_describe(header)}")
        if header.lower() in seen:
            raise fail(key, f"names the header {header!r} twice")
        seen.add(header.lower())
        if not isinstance(variable, str) or not ENV_VAR_NAME.match(variable):
            # Never echo the value: it may be the secret itself, pasted by mistake.
            raise fail(key, f"{header} must be the NAME of an environment variable that holds "
                            "the value (letters, digits, '_'), not the value itself")
        headers.append((header, variable))
    return tuple(headers)


def _parse_action(value: Any, key: str, fail: Callable[[str, str], ConfigError]) -> Action:
    """A command (a non-empty list of strings) or an HTTP request (a table with url_env)."""
    if isinstance(value, dict):
        for sub in value:
            if sub not in _HTTP_ACTION_KEYS:
                raise fail(f"{key}.{sub}", f"is not a known key (known: {', '.join(sorted(_HTTP_ACTION_KEYS))})")
        if "url_env" not in value:
            raise fail(key, 'as an HTTP request needs url_env = "VARIABLE" (the variable holds the URL)')
        url_env = _variable(value["url_env"], f"{key}.url_env", "the URL", fail)
        method = value.get("method", "POST")
        if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
            raise fail(f"{key}.method", f"must be one of {', '.join(HTTP_METHODS)}, not {_describe(method)}")
        import json

        body = json.dumps(value.get("body"), separators=(",", ":"), default=str)  # TOML dates become text
        headers = _variable_headers(value.get("headers", {}), f"{key}.headers", fail)
        return HttpAction(url_env, body, headers, method.upper())
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(part, str) for part in value)
        or not value[0].strip()
    ):
        raise fail(key, f'must be a command like ["./deploy.sh", "{{sha}}"] or a request like '
                        f'{{ url_env = "CI_URL" }}, not {_describe(value)}')
    return tuple(value)


def _parse_notifiers(raw: Any, environments: Mapping[str, Environment],
                     fail: Callable[[str, str], ConfigError]) -> tuple[Notifier, ...]:
    if not isinstance(raw, list):
        raise fail("notify", f"must be a list of receivers ([[notify]]), not {_describe(raw)}")
    found: list[Notifier] = []
    taken: dict[str, int] = {}
    for index, entry in enumerate(raw):
        key = f"notify[{index}]"
        if not isinstance(entry, dict):
            raise fail(key, "must be a table with kind and url_env ([[notify]])")
        for sub in entry:
            if sub not in _NOTIFY_KEYS:
                raise fail(f"{key}.{sub}", f"is not a known key (known: {', '.join(sorted(_NOTIFY_KEYS))})")
        kind = entry.get("kind")
        if kind not in NOTIFY_KINDS:
            raise fail(f"{key}.kind", f"must be one of {', '.join(NOTIFY_KINDS)}, not {_describe(kind)}")
        if "url_env" not in entry:
            raise fail(key, 'needs url_env = "VARIABLE" (the variable holds the webhook URL: never the file)')
        url_env = _variable(entry["url_env"], f"{key}.url_env", "the webhook URL", fail)
        secret_env = entry.get("secret_env")
        if secret_env is not None:
            if kind != "webhook":
                raise fail(f"{key}.secret_env", f'is for kind = "webhook" only (this one is {kind!r})')
            secret_env = _variable(secret_env, f"{key}.secret_env", "the signing secret", fail)
        envs = entry.get("environments")
        if envs is not None:
            if not isinstance(envs, list) or not envs or not all(isinstance(e, str) for e in envs):
                raise fail(f"{key}.environments", f'must be a list of environment names like ["production"], '
                                                  f"not {_describe(envs)}")
            for env in envs:
                if not ENV_NAME.match(env):
                    raise fail(f"{key}.environments", f"names {env!r}, which is not a valid environment name")
            envs = tuple(dict.fromkeys(envs))
        events = entry.get("events")
        if events is None:
            wanted = DEFAULT_NOTIFY_EVENTS
        else:
            if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
                raise fail(f"{key}.events", f'must be a list like ["stops", "rollbacks"], not {_describe(events)}')
            for event in events:
                if event not in NOTIFY_EVENTS:
                    raise fail(f"{key}.events", f"names {clean_line(event)[:40]!r}, which is not a kind of news "
                                                f"(kinds: {', '.join(NOTIFY_EVENTS)})")
            wanted = frozenset(events)
        notifier = Notifier(kind, url_env, envs, secret_env, wanted)
        if notifier.key in taken:
            raise fail(f"{key}.url_env", f"{url_env} is already the {kind} receiver of notify[{taken[notifier.key]}]:"
                                         " each receiver once")
        taken[notifier.key] = index
        found.append(notifier)
    return tuple(found)


def _parse_migrations(raw: Any, fail: Callable[[str, str], ConfigError]) -> MigrationSettings:
    """``[migrations]`` with its ``[migrations.kinds.KIND]`` tables (same keys, plus ``moves_data``)."""
    if not isinstance(raw, dict):
        raise fail("migrations", f"must be a table ([migrations]), not {_describe(raw)}")

    def rules(table: dict[str, Any], key: str, base: MigrationRules, allowed: tuple[str, ...]) -> MigrationRules:
        for sub in table:
            if sub not in allowed:
                raise fail(f"{key}.{sub}", f"is not a known key (known: {', '.join(sorted(allowed))})")
        values: dict[str, Any] = {}
        for name in _MIGRATION_KEYS:
            if name in table:
                value = table[name]
                if not _is_number(value) or value <= 0:
                    unit = name.rsplit("_", 1)[1]
                    raise fail(f"{key}.{name}", f"must be a positive number of {unit}, not {_describe(value)}")
                values[name] = float(value)
        if "moves_data" in table:
            if not isinstance(table["moves_data"], bool):
                raise fail(f"{key}.moves_data", f"must be true or false, not {_describe(table['moves_data'])}")
            values["moves_data"] = table["moves_data"]
        return base._replace(**values)

    defaults = rules({k: v for k, v in raw.items() if k != "kinds"}, "migrations", MigrationRules(),
                     (*_MIGRATION_KEYS, "kinds"))
    raw_kinds = raw.get("kinds", {})
    if not isinstance(raw_kinds, dict):
        raise fail("migrations.kinds", f"must be a table of kinds ([migrations.kinds.KIND]), not {_describe(raw_kinds)}")
    kinds: dict[str, MigrationRules] = {}
    for kind, table in raw_kinds.items():
        key = f"migrations.kinds.{kind}"
        if kind not in MIGRATION_KINDS:
            raise fail(key, f"is not a kind of migration (kinds: {', '.join(MIGRATION_KINDS)})")
        if not isinstance(table, dict):
            raise fail(key, f"must be a table of overrides, not {_describe(table)}")
        base = defaults._replace(moves_data=kind not in _NO_DATA_KINDS)
        kinds[kind] = rules(table, key, base, (*_MIGRATION_KEYS, "moves_data"))
    return MigrationSettings(defaults, MappingProxyType(kinds))


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
