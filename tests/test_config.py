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
    assert config_error(path) == "andon.toml:2: colour is not a known key (known: branch, db, environments)"


def test_unknown_key_inside_an_environment_names_the_full_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[environments.prod]\ndeploy = ["x"]\ntimout = 5\n')
    message = config_error(path)
    assert message.startswith("andon.toml:3: environments.prod.timout is not a known key")
    assert "deploy, rollback, timeout" in message


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
    ['"./deploy.sh {sha}"', "[]", '["./deploy.sh", 3]', "[1, 2]", '["  ", "x"]', "42", "{ cmd = 'x' }"],
)
def test_deploy_must_be_a_non_empty_list_of_strings(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"[environments.prod]\ndeploy = {value}\n")
    message = config_error(path)
    assert message.startswith("andon.toml:2: environments.prod.deploy must be a command as a list of strings")


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
        "pyproject.toml:6: tool.andon.colour is not a known key (known: branch, db, environments)"
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
