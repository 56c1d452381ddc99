"""andon.toml and [tool.andon]: good files load, every mistake is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend import AndonError
from backend.config import (
    DEFAULT_TIMEOUT,
    Config,
    ConfigError,
    Environment,
    HealthCheck,
    HttpAction,
    Notifier,
    check_environment_name,
    find,
    load,
    load_file,
)

GOOD = """\
branch = "main"
db = "var/deploys.db"

[environments.staging]
deploy = ["./deploy.sh", "staging", "{sha}"]
timeout = 120

[environments.production]
deploy = ["./deploy.sh", "production", "{sha}"]
rollback = ["./rollback.sh", "{sha}"]
timeout = 2.5
"""


def write(directory: Path, text: str, name: str = "andon.toml") -> Path:
    path = directory / name
    path.write_bytes(text.encode())
    return path


def config_error(path: Path) -> str:
    """Load ``path`` expecting a ConfigError; check it is one line and the file is unchanged."""
    before = path.read_bytes()
    with pytest.raises(ConfigError) as caught:
        load_file(path)
    message = str(caught.value)
    assert isinstance(caught.value, AndonError)
    assert "\n" not in message and "\r" not in message and "\x1b" not in message
    assert path.read_bytes() == before
    return message


# -- good files ----------------------------------------------------------------------


def test_andon_toml_loads_branch_db_and_environments_in_file_order(tmp_path: Path) -> None:
    config = load_file(write(tmp_path, GOOD))
    assert config.branch == "main"
    assert config.db == "var/deploys.db"
    assert list(config.environments) == ["staging", "production"]
    assert config.environments["staging"] == Environment(
        "staging", ("./deploy.sh", "staging", "{sha}"), None, 120.0
    )
    production = config.environments["production"]
    assert production.rollback == ("./rollback.sh", "{sha}")
    assert production.timeout == 2.5
    assert config.source == tmp_path / "andon.toml"


def test_unconfigured_environment_gets_defaults(tmp_path: Path) -> None:
    config = load_file(write(tmp_path, GOOD))
    qa = config.environment("qa")
    assert qa == Environment("qa")
    assert qa.deploy is None and qa.timeout == DEFAULT_TIMEOUT


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    config = load_file(write(tmp_path, ""))
    assert config.environments == {} and config.branch is None and config.db is None


def test_pyproject_tool_andon_section_loads(tmp_path: Path) -> None:
    write(tmp_path, '[project]\nname = "x"\n\n[tool.andon]\nbranch = "trunk"\n\n'
                    '[tool.andon.environments.prod]\ndeploy = ["make", "deploy"]\n', "pyproject.toml")
    config = load(tmp_path)
    assert config.branch == "trunk"
    assert config.environments["prod"].deploy == ("make", "deploy")
    assert config.source == tmp_path / "pyproject.toml"


def test_find_prefers_andon_toml_over_pyproject(tmp_path: Path) -> None:
    write(tmp_path, "[tool.andon]\nbranch = 'a'\n", "pyproject.toml")
    write(tmp_path, "branch = 'b'\n")
    assert find(tmp_path) == tmp_path / "andon.toml"
    assert load(tmp_path).branch == "b"


def test_pyproject_without_tool_andon_is_not_a_config(tmp_path: Path) -> None:
    write(tmp_path, '[project]\nname = "x"\n[tool.ruff]\nline-length = 100\n', "pyproject.toml")
    assert find(tmp_path) is None
    assert load(tmp_path) == Config()


def test_no_root_and_no_file_give_defaults(tmp_path: Path) -> None:
    assert load(None) == Config()
    assert load(tmp_path) == Config()


def test_explicit_path_wins_over_the_repository_file(tmp_path: Path) -> None:
    write(tmp_path, "branch = 'repo'\n")
    other = tmp_path / "elsewhere"
    other.mkdir()
    explicit = write(other, "branch = 'explicit'\n", "custom.toml")
    assert load(tmp_path, explicit).branch == "explicit"


def test_integer_timeout_becomes_float(tmp_path: Path) -> None:
    config = load_file(write(tmp_path, "[environments.a]\ntimeout = 7\n"))
    assert config.environments["a"].timeout == 7.0
    assert isinstance(config.environments["a"].timeout, float)


# -- mistakes: one line each, the file untouched -----------------------------------------


def test_missing_explicit_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, tmp_path / "nope.toml")
    assert str(caught.value) == f"{tmp_path / 'nope.toml'}: no such configuration file"


def test_unknown_top_level_key_names_file_line_and_known_keys(tmp_path: Path) -> None:
    path = write(tmp_path, 'branch = "main"\ncolour = "red"\n')
    assert config_error(path) == "andon.toml:2: colour is not a known key (known: branch, db, environments, migrations, notify)"


def test_unknown_key_inside_an_environment_names_the_full_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[environments.prod]\ndeploy = ["x"]\ntimout = 5\n')
    message = config_error(path)
    assert message.startswith("andon.toml:3: environments.prod.timout is not a known key")
    assert message.endswith("(known: auto_rollback, auto_stop, deploy, freeze, health, rollback, "
                            "rollback_grace_seconds, stop_reminder_minutes, timeout, verify_failures, verify_seconds)")


@pytest.mark.parametrize(
    ("value", "shown"),
    [('"ten"', "'ten'"), ("true", "True"), ("-5", "-5"), ("0", "0"), ("nan", "nan"), ("inf", "inf"),
     ("[1]", "[1]")],
)
def test_timeout_must_be_a_positive_finite_number(tmp_path: Path, value: str, shown: str) -> None:
    path = write(tmp_path, f"[environments.prod]\ntimeout = {value}\n")
    assert config_error(path) == (
        f"andon.toml:2: environments.prod.timeout must be a positive number of seconds, not {shown}"
    )


def test_error_line_points_at_the_environment_that_is_wrong(tmp_path: Path) -> None:
    """Two environments both set timeout: the message names the bad one's line, not the first."""
    path = write(tmp_path, '[environments.staging]\ntimeout = 120\n\n'
                           '[environments.production]\ndeploy = ["x"]\ntimeout = "ten"\n')
    assert config_error(path).startswith("andon.toml:6: environments.production.timeout ")


@pytest.mark.parametrize(
    "value",
    ['"./deploy.sh {sha}"', "[]", '["./deploy.sh", 3]', "[1, 2]", '["  ", "x"]', "42"],
)
def test_deploy_must_be_a_non_empty_list_of_strings(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"[environments.prod]\ndeploy = {value}\n")
    message = config_error(path)
    assert message.startswith("andon.toml:2: environments.prod.deploy must be a command like "
                              '["./deploy.sh", "{sha}"] or a request like { url_env = "CI_URL" }, not ')


def test_rollback_is_checked_like_deploy(tmp_path: Path) -> None:
    path = write(tmp_path, '[environments.prod]\ndeploy = ["x"]\nrollback = "y"\n')
    assert config_error(path).startswith("andon.toml:3: environments.prod.rollback must be a command")


def test_long_bad_values_are_shortened_in_the_message(tmp_path: Path) -> None:
    path = write(tmp_path, f'[environments.prod]\ndeploy = "{"x" * 500}"\n')
    message = config_error(path)
    assert "..." in message and len(message) < 200


def test_environments_must_be_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, 'environments = ["prod"]\n')
    assert config_error(path) == (
        "andon.toml:1: environments must be a table of environments ([environments.NAME])"
    )


def test_an_environment_must_be_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, "[environments]\nprod = 3\n")
    assert config_error(path) == (
        "andon.toml:2: environments.prod must be a table with deploy, rollback and timeout"
    )


def test_invalid_environment_name_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[environments."pro duction"]\ntimeout = 1\n')
    assert "environments.pro duction is not a valid environment name" in config_error(path)


@pytest.mark.parametrize(("text", "key"), [("branch = 3\n", "branch"), ('branch = "  "\n', "branch"),
                                           ("db = false\n", "db"), ('db = ""\n', "db")])
def test_branch_and_db_must_be_non_empty_strings(tmp_path: Path, text: str, key: str) -> None:
    assert config_error(write(tmp_path, text)).startswith(f"andon.toml:1: {key} must be a ")


def test_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'branch = "main"\n\n[environments.prod]\ndeploy = ["x"\ntimeout = 5\n')
    message = config_error(path)
    assert message.startswith("andon.toml:5: invalid TOML: ")
    assert "at line" not in message  # the position is said once, at the front


def test_toml_syntax_error_in_pyproject_names_pyproject(tmp_path: Path) -> None:
    path = write(tmp_path, "[tool.andon]\nbranch = \n", "pyproject.toml")
    assert config_error(path).startswith("pyproject.toml:2: invalid TOML: ")


def test_non_utf8_bytes_do_not_crash_the_loader(tmp_path: Path) -> None:
    path = tmp_path / "andon.toml"
    path.write_bytes(b'branch = "ma\xffin"\n')
    assert load_file(path).branch == "ma\ufffdin"


def test_pyproject_errors_say_tool_andon_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[tool.other]\ncolour = 1\n\n[tool.andon]\nbranch = "main"\ncolour = 2\n',
                 "pyproject.toml")
    # The line is the one under [tool.andon], not the same key in another tool's table.
    assert config_error(path) == (
        "pyproject.toml:6: tool.andon.colour is not a known key (known: branch, db, environments, migrations, notify)"
    )


def test_pyproject_environment_errors_say_tool_andon_environments(tmp_path: Path) -> None:
    path = write(tmp_path, "[tool.andon.environments.prod]\ntimeout = -1\n", "pyproject.toml")
    assert config_error(path) == (
        "pyproject.toml:2: tool.andon.environments.prod.timeout must be a positive number of seconds, not -1"
    )


def test_pyproject_tool_andon_not_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, "[tool]\nandon = 3\n", "pyproject.toml")
    assert config_error(path) == "pyproject.toml: tool.andon must be a table"


def test_a_key_with_a_newline_or_escape_still_gives_one_line(tmp_path: Path) -> None:
    """Quoted TOML keys can hold any character; the message stays one safe line."""
    path = write(tmp_path, '"evil\\nkey\\u001b[2J" = 1\n')
    message = config_error(path)
    assert "is not a known key" in message
    path = write(tmp_path, '[environments."bad\\nname"]\ntimeout = 1\n')
    assert "is not a valid environment name: 'bad\\nname'" in config_error(path)
    path = write(tmp_path, '[environments."prod\\n"]\ntimeout = 1\n')  # a trailing newline too
    assert "is not a valid environment name: 'prod\\n'" in config_error(path)


def test_unreadable_config_path_is_one_line(tmp_path: Path) -> None:
    directory = tmp_path / "andon.toml"
    directory.mkdir()
    with pytest.raises(ConfigError) as caught:
        load_file(directory)
    assert "cannot read" in str(caught.value) and "\n" not in str(caught.value)


# -- environment names ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["prod", "eu-west.1", "a_b", "9lives"])
def test_good_environment_names_pass(name: str) -> None:
    assert check_environment_name(name) == name


@pytest.mark.parametrize("name", ["", "-prod", "a b", "x" * 64, "a/b", "prod\n", "\x1b[31m"])
def test_bad_environment_names_are_refused_on_one_line(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_environment_name(name)
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)


# -- health checks and verification ----------------------------------------------------------

HEALTH = """\
[environments.production]
deploy = ["./deploy.sh", "{sha}"]
verify_seconds = 60
verify_failures = 2

[[environments.production.health]]
name = "api"
url = "https://api.example.com/healthz"
interval = 10
timeout = 3.5
version = "build.sha"
expect = [200, 204, 200]
degraded_ms = 800
headers = { Authorization = "HEALTH_TOKEN", "X-Api-Key" = "API_KEY" }

[[environments.production.health]]
name = "web"
url = "http://127.0.0.1:8080/"
version = "header:X-Version"
"""


def test_health_checks_and_verification_load(tmp_path: Path) -> None:
    production = load_file(write(tmp_path, HEALTH)).environments["production"]
    assert (production.verify_seconds, production.verify_failures) == (60.0, 2)
    assert production.timeout == DEFAULT_TIMEOUT  # the positional fields keep their meaning
    api, web = production.health
    assert api == HealthCheck(
        "api", "https://api.example.com/healthz", 10.0, 3.5, "build.sha", (200, 204), 800.0,
        (("Authorization", "HEALTH_TOKEN"), ("X-Api-Key", "API_KEY")),
    )
    assert web == HealthCheck("web", "http://127.0.0.1:8080/", version="header:X-Version")
    assert (web.interval, web.timeout, web.expect, web.degraded_ms, web.headers) == (5.0, 2.0, None, None, ())


def test_health_and_verification_defaults(tmp_path: Path) -> None:
    config = load_file(write(tmp_path, '[environments.prod]\ndeploy = ["x"]\n'))
    prod = config.environments["prod"]
    assert (prod.health, prod.verify_seconds, prod.verify_failures) == ((), 0.0, 3)
    assert Environment("qa", None, None, 5.0) == Environment("qa", timeout=5.0)  # the old positional form


def test_health_checks_as_an_inline_array_and_in_pyproject(tmp_path: Path) -> None:
    write(tmp_path, '[tool.andon.environments.prod]\n'
                    'health = [{ name = "a", url = "http://a/" }, { name = "b", url = "https://b:8443/x?y=1" }]\n',
          "pyproject.toml")
    checks = load(tmp_path).environments["prod"].health
    assert [(c.name, c.url) for c in checks] == [("a", "http://a/"), ("b", "https://b:8443/x?y=1")]


def test_secrets_are_not_in_the_loaded_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A header holds the variable's name; its value is read when probing, not at load."""
    monkeypatch.setenv("HEALTH_TOKEN", "Bearer s3cret")
    config = load_file(write(tmp_path, HEALTH))
    assert "s3cret" not in repr(config)
    monkeypatch.delenv("HEALTH_TOKEN")
    assert load_file(write(tmp_path, HEALTH)) == config  # a missing variable is no load error


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("verify_seconds = -1", "verify_seconds must be a number of seconds (0: no verification), not -1"),
        ("verify_seconds = 'soon'", "verify_seconds must be a number of seconds (0: no verification), not 'soon'"),
        ("verify_seconds = nan", "verify_seconds must be a number of seconds (0: no verification), not nan"),
        ("verify_seconds = true", "verify_seconds must be a number of seconds (0: no verification), not True"),
        ("verify_failures = 0", "verify_failures must be a whole number of rounds, 1 or more, not 0"),
        ("verify_failures = 2.5", "verify_failures must be a whole number of rounds, 1 or more, not 2.5"),
        ("verify_failures = true", "verify_failures must be a whole number of rounds, 1 or more, not True"),
        ("health = 3", "health must be a list of checks ([[environments.prod.health]]), not 3"),
        ("health = { name = 'a' }", "health must be a list of checks ([[environments.prod.health]]), not {'name': 'a'}"),
    ],
)
def test_verification_and_health_list_errors(tmp_path: Path, line: str, error: str) -> None:
    path = write(tmp_path, f'[environments.prod]\ndeploy = ["x"]\n{line}\n')
    assert config_error(path) == f"andon.toml:3: environments.prod.{error}"


def test_verify_seconds_zero_is_no_verification(tmp_path: Path) -> None:
    config = load_file(write(tmp_path, "[environments.prod]\nverify_seconds = 0\nverify_failures = 1\n"))
    assert (config.environments["prod"].verify_seconds, config.environments["prod"].verify_failures) == (0.0, 1)


CHECK = '[environments.prod]\ndeploy = ["x"]\n\n[[environments.prod.health]]\nname = "api"\nurl = "http://a/"\n'


@pytest.mark.parametrize(
    ("line", "key", "error"),
    [
        ("interval = 0", "interval", "must be a positive number of seconds, not 0"),
        ("interval = 'fast'", "interval", "must be a positive number of seconds, not 'fast'"),
        ("interval = inf", "interval", "must be a positive number of seconds, not inf"),
        ("timeout = -1", "timeout", "must be a positive number of seconds, not -1"),
        ("timeout = false", "timeout", "must be a positive number of seconds, not False"),
        ("timeout = 6", "timeout", "must not be longer than the interval (5 s), not 6"),
        ("version = ''", "version", 'must be a JSON key path like "build.sha" or a header like "header:X-Version", not \'\''),
        ("version = 'build..sha'", "version", 'must be a JSON key path like "build.sha" or a header like "header:X-Version", not \'build..sha\''),
        ("version = 'build sha'", "version", 'must be a JSON key path like "build.sha" or a header like "header:X-Version", not \'build sha\''),
        ("version = 'header:'", "version", 'must be a JSON key path like "build.sha" or a header like "header:X-Version", not \'header:\''),
        ("version = 'header:X Version'", "version", 'must be a JSON key path like "build.sha" or a header like "header:X-Version", not \'header:X Version\''),
        ("version = 7", "version", 'must be a JSON key path like "build.sha" or a header like "header:X-Version", not 7'),
        ("expect = 200", "expect", "must be a list of HTTP status codes (100-599) like [200, 204], not 200"),
        ("expect = []", "expect", "must be a list of HTTP status codes (100-599) like [200, 204], not []"),
        ("expect = [200, 600]", "expect", "must be a list of HTTP status codes (100-599) like [200, 204], not [200, 600]"),
        ("expect = [99]", "expect", "must be a list of HTTP status codes (100-599) like [200, 204], not [99]"),
        ("expect = ['200']", "expect", "must be a list of HTTP status codes (100-599) like [200, 204], not ['200']"),
        ("expect = [true]", "expect", "must be a list of HTTP status codes (100-599) like [200, 204], not [True]"),
        ("degraded_ms = 0", "degraded_ms", "must be a positive number of milliseconds, not 0"),
        ("degraded_ms = '800'", "degraded_ms", "must be a positive number of milliseconds, not '800'"),
        ("degraded_ms = 2000", "degraded_ms", "must be less than the timeout (2000 ms), not 2000"),
        ("headers = 'HEALTH_TOKEN'", "headers",
         'must be a table of header names and environment variable names, like { Authorization = "HEALTH_TOKEN" }'),
        ("headers = { 'Bad Header' = 'X' }", "headers", "has a header name that is not allowed: 'Bad Header'"),
        ("headers = { Authorization = 'A', authorization = 'B' }", "headers", "names the header 'authorization' twice"),
        ("headers = { Authorization = 3 }", "headers",
         "Authorization must be the NAME of an environment variable that holds the value (letters, digits, '_'), "
         "not the value itself"),
        ("url = 'ftp://a/'", "url", "must be an http:// or https:// URL, not 'ftp://a/'"),
        ("url = 'api.example.com/healthz'", "url", "must be an http:// or https:// URL, not 'api.example.com/healthz'"),
        ("url = 'http:///healthz'", "url", "must be an http:// or https:// URL, not 'http:///healthz'"),
        ("url = 'http://a:99999/'", "url", "must be an http:// or https:// URL, not 'http://a:99999/'"),
        ("url = 'http://a/ b'", "url", "must be a URL without spaces or control characters"),
        ("url = 3", "url", "must be an http:// or https:// URL, not 3"),
        ("url = 'https://user:pw@a/'", "url",
         'must not hold a user or password: send credentials with headers = { Authorization = "VARIABLE" }'),
        ("name = 'a b'", "name", "must be a name of letters, digits, '.', '_' or '-', not 'a b'"),
        ("name = 5", "name", "must be a name of letters, digits, '.', '_' or '-', not 5"),
        ("colour = 'red'", "colour",
         "is not a known key (known: degraded_ms, expect, headers, interval, name, timeout, url, version)"),
    ],
)
def test_each_health_check_key_is_checked(tmp_path: Path, line: str, key: str, error: str) -> None:
    # The line replaces the check's own name or url when it sets one of those.
    text = CHECK
    if line.startswith(("name ", "url ")):
        text = "\n".join(old for old in CHECK.splitlines() if not old.startswith(line.split()[0] + " ")) + "\n"
    path = write(tmp_path, text + line + "\n")
    line_number = len(text.splitlines()) + 1
    assert config_error(path) == f"andon.toml:{line_number}: environments.prod.health[0].{key} {error}"


def test_a_bearer_token_pasted_as_a_header_value_is_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, CHECK + "headers = { Authorization = 'Bearer s3cret-token' }\n")
    message = config_error(path)
    assert "s3cret" not in message
    assert message.startswith("andon.toml:7: environments.prod.health[0].headers Authorization must be the NAME")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('[[environments.prod.health]]\nurl = "http://a/"\n',
         'andon.toml:1: environments.prod.health[0] needs a name (name = "api")'),
        ('[[environments.prod.health]]\nname = "api"\n',
         'andon.toml:1: environments.prod.health[0] needs a url (url = "https://example.com/healthz")'),
        ("[environments.prod]\nhealth = [3]\n",
         "andon.toml:2: environments.prod.health[0] must be a table with name and url ([[environments.NAME.health]])"),
    ],
)
def test_a_check_needs_a_name_and_a_url(tmp_path: Path, text: str, error: str) -> None:
    assert config_error(write(tmp_path, text)) == error


def test_check_names_are_unique_within_an_environment(tmp_path: Path) -> None:
    text = (CHECK + '\n[[environments.prod.health]]\nname = "web"\nurl = "http://b/"\n'
            '\n[[environments.prod.health]]\nname = "api"\nurl = "http://c/"\n'
            '\n[[environments.staging.health]]\nname = "api"\nurl = "http://d/"\n')  # another env may reuse it
    assert config_error(write(tmp_path, text)) == (
        "andon.toml:13: environments.prod.health[2].name 'api' is already the name of health[0]: names must differ"
    )
    fine = text.replace('name = "api"\nurl = "http://c/"', 'name = "db"\nurl = "http://c/"')
    config = load_file(write(tmp_path, fine))
    assert [c.name for c in config.environments["prod"].health] == ["api", "web", "db"]
    assert [c.name for c in config.environments["staging"].health] == ["api"]


def test_the_error_points_at_the_check_that_is_wrong(tmp_path: Path) -> None:
    """Two checks set timeout: the line is the second check's, in the second environment."""
    text = ('[[environments.staging.health]]\nname = "api"\nurl = "http://a/"\ntimeout = 1\n\n'
            '[[environments.prod.health]]\nname = "api"\nurl = "http://a/"\ntimeout = 1\n\n'
            '[[environments.prod.health]]\nname = "web"\nurl = "http://b/"\ntimeout = 0\n')
    assert config_error(write(tmp_path, text)) == (
        "andon.toml:14: environments.prod.health[1].timeout must be a positive number of seconds, not 0"
    )


def test_headers_written_as_a_sub_table_point_at_it(tmp_path: Path) -> None:
    text = CHECK + "\n[environments.prod.health.headers]\nAuthorization = 'not a name'\n"
    assert config_error(write(tmp_path, text)).startswith(
        "andon.toml:8: environments.prod.health[0].headers Authorization must be the NAME")


def test_pyproject_health_errors_say_tool_andon(tmp_path: Path) -> None:
    path = write(tmp_path, '[[tool.andon.environments.prod.health]]\nname = "api"\nurl = "gopher://a/"\n',
                 "pyproject.toml")
    assert config_error(path) == (
        "pyproject.toml:3: tool.andon.environments.prod.health[0].url must be an http:// or https:// URL, "
        "not 'gopher://a/'"
    )


def test_an_inline_health_array_error_points_at_the_array(tmp_path: Path) -> None:
    path = write(tmp_path, '[environments.prod]\ndeploy = ["x"]\nhealth = [{ name = "a", url = "http://a/", x = 1 }]\n')
    assert config_error(path).startswith("andon.toml:3: environments.prod.health[0].x is not a known key")


def test_a_url_with_an_escape_sequence_gives_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, CHECK.replace('url = "http://a/"', 'url = "http://a/\\u001b[2J"'))
    assert config_error(path) == (
        "andon.toml:6: environments.prod.health[0].url must be a URL without spaces or control characters"
    )


# -- stop the line: actions, grace, automatic stop, receivers --------------------------------


def test_an_action_may_be_an_http_request(tmp_path: Path) -> None:
    path = write(tmp_path, '[environments.prod]\ndeploy = ["./deploy.sh", "{sha}"]\n'
                           'rollback = { url_env = "ANDON_ROLLBACK_URL", body = { ref = "main", inputs = { sha = "{sha}" } },'
                           ' headers = { Authorization = "CI_TOKEN" } }\n')
    env = load(None, path).environment("prod")
    assert env.deploy == ("./deploy.sh", "{sha}")
    assert env.rollback == HttpAction("ANDON_ROLLBACK_URL", '{"ref":"main","inputs":{"sha":"{sha}"}}',
                                      (("Authorization", "CI_TOKEN"),), "POST")
    assert (env.rollback_grace_seconds, env.auto_stop, env.auto_rollback) == (5.0, True, False)


def test_an_http_action_with_a_method_and_no_body(tmp_path: Path) -> None:
    path = write(tmp_path, '[environments.prod.deploy]\nurl_env = "HOOK"\nmethod = "put"\n')
    assert load(None, path).environment("prod").deploy == HttpAction("HOOK", "null", (), "PUT")


@pytest.mark.parametrize(("value", "error"), [
    ('{ url = "https://ci.example.com" }',
     "environments.prod.rollback.url is not a known key (known: body, headers, method, url_env)"),
    ('{ body = {} }', 'environments.prod.rollback as an HTTP request needs url_env = "VARIABLE"'),
    ('{ url_env = "https://ci.example.com/hook?token=s3cret" }',
     "environments.prod.rollback.url_env must be the NAME of an environment variable that holds the URL"),
    ('{ url_env = "HOOK", method = "DELETE" }', "environments.prod.rollback.method must be one of POST, PUT, PATCH"),
    ('{ url_env = "HOOK", headers = { Authorization = "Bearer s3cret" } }',
     "environments.prod.rollback.headers Authorization must be the NAME of an environment variable"),
    ('{ url_env = "HOOK", headers = "CI_TOKEN" }', "environments.prod.rollback.headers must be a table"),
])
def test_http_action_errors_are_one_line_and_never_echo_a_secret(tmp_path: Path, value: str, error: str) -> None:
    path = write(tmp_path, f'[environments.prod]\nrollback = {value}\n')
    message = config_error(path)
    assert error in message and "s3cret" not in message, message


@pytest.mark.parametrize(("line", "error"), [
    ("rollback_grace_seconds = -1", "rollback_grace_seconds must be a number of seconds from 0 (no grace) to 600, not -1"),
    ("rollback_grace_seconds = 601", "from 0 (no grace) to 600, not 601"),
    ("rollback_grace_seconds = nan", "from 0 (no grace) to 600, not nan"),
    ('rollback_grace_seconds = "5"', "not '5'"),
    ('auto_stop = "yes"', "environments.prod.auto_stop must be true or false, not 'yes'"),
    ("auto_rollback = 1", "environments.prod.auto_rollback must be true or false, not 1"),
    ("auto_stop = false\nauto_rollback = true",
     "environments.prod.auto_rollback needs auto_stop = true: a rollback stops the line first"),
])
def test_grace_and_automatic_stop_errors(tmp_path: Path, line: str, error: str) -> None:
    path = write(tmp_path, f"[environments.prod]\n{line}\n")
    assert error in config_error(path)


def test_grace_zero_and_automatic_rollback_load(tmp_path: Path) -> None:
    path = write(tmp_path, "[environments.prod]\nrollback_grace_seconds = 0\nauto_rollback = true\n")
    env = load(None, path).environment("prod")
    assert (env.rollback_grace_seconds, env.auto_stop, env.auto_rollback) == (0.0, True, True)


def test_receivers_load_in_order(tmp_path: Path) -> None:
    path = write(tmp_path, '[[notify]]\nkind = "slack"\nurl_env = "ANDON_SLACK_URL"\nenvironments = ["production"]\n\n'
                           '[[notify]]\nkind = "webhook"\nurl_env = "HOOK_URL"\nsecret_env = "HOOK_SECRET"\n')
    first, second = load(None, path).notifiers
    assert first == Notifier("slack", "ANDON_SLACK_URL", ("production",), None)
    assert second == Notifier("webhook", "HOOK_URL", None, "HOOK_SECRET")
    assert (first.key, second.key) == ("slack:ANDON_SLACK_URL", "webhook:HOOK_URL")
    assert (first.wants("production"), first.wants("staging"), first.wants(None), second.wants("staging")) == (
        True, False, True, True)


def test_no_receivers_by_default(tmp_path: Path) -> None:
    assert load(None, write(tmp_path, "")).notifiers == ()


@pytest.mark.parametrize(("text", "error"), [
    ('notify = "slack"', "notify must be a list of receivers ([[notify]])"),
    ('[[notify]]\nkind = "irc"\nurl_env = "X"', "notify[0].kind must be one of slack, mattermost, discord, teams, webhook"),
    ('[[notify]]\nkind = "slack"', 'notify[0] needs url_env = "VARIABLE"'),
    ('[[notify]]\nkind = "slack"\nurl = "https://hooks.slack.com/x"', "notify[0].url is not a known key"),
    ('[[notify]]\nkind = "slack"\nurl_env = "https://hooks.slack.com/services/s3cret"',
     "notify[0].url_env must be the NAME of an environment variable that holds the webhook URL"),
    ('[[notify]]\nkind = "slack"\nurl_env = "X"\nsecret_env = "S"', 'notify[0].secret_env is for kind = "webhook" only'),
    ('[[notify]]\nkind = "webhook"\nurl_env = "X"\nsecret_env = "s3cret value"',
     "notify[0].secret_env must be the NAME of an environment variable that holds the signing secret"),
    ('[[notify]]\nkind = "slack"\nurl_env = "X"\nenvironments = "production"',
     'notify[0].environments must be a list of environment names like ["production"]'),
    ('[[notify]]\nkind = "slack"\nurl_env = "X"\nenvironments = ["prod uction"]',
     "notify[0].environments names 'prod uction', which is not a valid environment name"),
    ('[[notify]]\nkind = "slack"\nurl_env = "X"\n\n[[notify]]\nkind = "slack"\nurl_env = "X"',
     "notify[1].url_env X is already the slack receiver of notify[0]"),
])
def test_receiver_errors(tmp_path: Path, text: str, error: str) -> None:
    message = config_error(write(tmp_path, text + "\n"))
    assert error in message and "s3cret" not in message, message


def test_migrations_defaults_and_kind_overrides(tmp_path: Path) -> None:
    path = tmp_path / "andon.toml"
    path.write_text("[migrations]\ncleanup_due_days = 10\nstall_minutes = 5\n"
                    "[migrations.kinds.config]\ncleanup_due_days = 3\n"
                    "[migrations.kinds.third-party]\nmoves_data = true\n")
    settings = load_file(path).migrations
    assert settings.rules(None) == settings.rules("database")
    assert settings.rules("database").cleanup_due_days == 10.0 and settings.rules("database").moves_data
    config = settings.rules("config")
    assert (config.cleanup_due_days, config.stall_minutes, config.soak_hours, config.moves_data) == (3.0, 5.0, 24.0, False)
    assert settings.rules("infrastructure").cleanup_due_days == 10.0 and not settings.rules("infrastructure").moves_data
    assert settings.rules("third-party").moves_data
    assert load_file(write(tmp_path, "")).migrations.rules("database").cleanup_due_days == 14.0


@pytest.mark.parametrize(("text", "message"), [
    ("migrations = 3\n", "andon.toml:1: migrations must be a table ([migrations]), not 3"),
    ("[migrations]\nsoak_hours = 'a day'\n", "andon.toml:2: migrations.soak_hours must be a positive number of hours"),
    ("[migrations]\ncleanup_due_days = 0\n", "migrations.cleanup_due_days must be a positive number of days, not 0"),
    ("[migrations]\nstall_minutes = nan\n", "migrations.stall_minutes must be a positive number of minutes"),
    ("[migrations]\ndue = 3\n", "andon.toml:2: migrations.due is not a known key (known: cleanup_due_days, kinds"),
    ("[migrations.kinds.schema]\ncleanup_due_days = 3\n", "migrations.kinds.schema is not a kind of migration"),
    ("[migrations.kinds.config]\nmoves_data = 'no'\n", "migrations.kinds.config.moves_data must be true or false"),
    ("[migrations.kinds.config]\nkinds = 1\n", "migrations.kinds.config.kinds is not a known key"),
    ("[migrations]\nkinds = 1\n", "migrations.kinds must be a table of kinds"),
])
def test_migrations_mistakes_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_file(write(tmp_path, text))
    assert message in str(caught.value) and "\n" not in str(caught.value)
