"""Settings as a user writes them: durations with units, one TOML file for several commands,
and mistakes named with what to type instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from task.apps.retry import RetrySettings
from task.cli import COMMANDS, build_parser
from task.errors import ConfigError
from task.settings import WorkerSettings, gen_config, load_settings, show_config


def load_worker(config: Path | None = None, **flags: object) -> WorkerSettings:
    """What ``taskbus worker -c CONFIG`` builds: its own table applies, other commands' are skipped."""
    return load_settings(WorkerSettings, str(config) if config else None, section="worker",
                         sections=COMMANDS, **flags)


@pytest.fixture(autouse=True)
def no_task_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("TASK_")]:
        monkeypatch.delenv(name)


# ------------------------------------------------------------------------------- durations


def test_durations_take_units_from_flags_toml_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a duration in each of the three places a setting comes from
    config = tmp_path / "w.toml"
    config.write_text('worker_kill_time = "1m"\nheartbeat_interval = 2\n')
    monkeypatch.setenv("TASK_TASK_TIMEOUT", "2m")
    settings = load_worker(config)
    # Then each is seconds; a plain number is seconds too
    assert (settings.task_timeout, settings.worker_kill_time, settings.heartbeat_interval) == (120, 60, 2)
    # And a flag wins over the environment, with its unit
    assert load_worker(config, task_timeout="30s").task_timeout == 30
    assert load_worker(heartbeat_interval="250ms").heartbeat_interval == 0.25


def test_a_bad_duration_is_one_line_naming_the_setting_and_the_forms_that_work() -> None:
    with pytest.raises(ConfigError) as caught:
        load_worker(task_timeout="soon")
    message = str(caught.value)
    assert "'task_timeout'" in message and "'soon' is not a duration" in message and "30s" in message
    assert "\n" not in message and "Value error" not in message


def test_durations_show_with_units_and_read_back(tmp_path: Path) -> None:
    shown = show_config(load_worker(task_timeout="120", worker_kill_time="1.5", heartbeat_interval="90s"))
    assert 'task_timeout = "2m"' in shown and 'worker_kill_time = "1.5s"' in shown
    assert "heartbeat_interval = 90.0" in shown  # "1m30s" would not read back: plain seconds
    config = tmp_path / "gen.toml"
    config.write_text(gen_config(WorkerSettings))
    assert 'worker_kill_time = "10s"' in config.read_text()
    assert load_worker(config).worker_kill_time == 10


# ---------------------------------------------------------------------- one file, sections


def test_the_commands_own_table_is_applied_over_the_top_level(tmp_path: Path) -> None:
    # Given one file for several commands: shared keys at the top (valid for each command
    # that reads the file), a table per command
    config = tmp_path / "taskbus.toml"
    config.write_text(
        'bus = "nats://127.0.0.1:4222"\ndone_topic = "top"\n'
        '[worker]\nmax_in_progress = 8\ntask_timeout = "5m"\ntopic = "mine"\n'
        '[retry]\npoll_interval = 3\n[[retry.rule]]\ntype = "t"\n'
    )
    # When the worker loads it
    settings = load_worker(config, worker="nop")
    # Then [worker] is applied (it used to be dropped without a word), the top level fills the
    # rest, and [retry] is left to retry
    assert (settings.max_in_progress, settings.task_timeout, settings.topic) == (8, 300, "mine")
    assert (settings.bus, settings.done_topic, settings.worker) == ("nats://127.0.0.1:4222", "top", "nop")
    # And the same file configures retry, which skips [worker]
    retry = load_settings(RetrySettings, str(config), section="retry", sections=COMMANDS)
    assert (retry.poll_interval, [r.type for r in retry.rule], retry.bus) == (3, ["t"], "nats://127.0.0.1:4222")


def test_flags_and_environment_still_win_over_the_commands_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "w.toml"
    config.write_text('[worker]\nmax_in_progress = 8\ntopic = "toml"\n')
    monkeypatch.setenv("TASK_MAX_IN_PROGRESS", "5")
    settings = load_worker(config, topic="flag")
    assert (settings.max_in_progress, settings.topic) == (5, "flag")


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[wroker]\nmax_in_progress = 3\n", "unknown setting 'wroker' in"),
        ("[wroker]\nmax_in_progress = 3\n", "did you mean 'worker'?"),
        ("[worker]\nmax_inprogress = 3\n", "did you mean 'max_in_progress'?"),
        ("[extras]\nx = 1\n", "unknown setting 'extras'"),
        ('[worker]\ntask_timeout = "soon"\n', "'soon' is not a duration"),
    ],
)
def test_an_unknown_table_or_a_bad_key_in_the_commands_table_is_an_error(
    tmp_path: Path, toml: str, expected: str
) -> None:
    config = tmp_path / "w.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_worker(config)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_without_a_command_a_table_is_not_taken_for_one(tmp_path: Path) -> None:
    # A library caller that names no command gets the plain model: a table is an error
    config = tmp_path / "w.toml"
    config.write_text("[retry]\npoll_interval = 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'retry'"):
        load_settings(WorkerSettings, str(config))


# ------------------------------------------------------------------ nested models: rules


def test_a_typo_inside_a_rule_names_the_rule_its_keys_and_the_likely_one(tmp_path: Path) -> None:
    # Given a retry file whose second rule misspells delay
    config = tmp_path / "retry.toml"
    config.write_text('[[rule]]\ntype = "a"\n\n[[rule]]\ntype = "b"\ndlay = "30s"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(RetrySettings, str(config), section="retry", sections=COMMANDS)
    message = str(caught.value)
    assert message.startswith(
        "unknown key 'dlay' in rule 2; did you mean 'delay'? keys: type, count, delay, backoff, max_delay")
    assert "retry.toml" in message and "\n" not in message


def test_a_bad_value_inside_a_rule_names_the_rule() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(RetrySettings, None, rule=[{"type": "a", "count": "many"}])
    assert str(caught.value).startswith("setting 'count' in rule 1 in flags or environment:")


# -------------------------------------------------------------------------------- --help


def test_help_shows_each_flags_default_but_never_a_secret() -> None:
    text = build_parser("worker", WorkerSettings, "run a worker").format_help()
    flat = " ".join(text.split())
    assert "tasks run at once (also the prefetch) (default: 1)" in flat
    assert "(default: 10s)" in flat and "(default: done)" in flat and "(default: off)" in flat
    assert "bus password --bus-token" in flat  # no default shown for a secret


def test_help_never_shows_a_secrets_default() -> None:
    from pydantic import Field, SecretStr

    from task.settings import AppSettings

    class WithSecret(AppSettings):
        api_key: SecretStr = Field(SecretStr("hunter2"), description="the key")

    text = build_parser("x", WithSecret, "x").format_help()
    assert "hunter2" not in text and "the key\n" in text.replace(" " * 24, "")
