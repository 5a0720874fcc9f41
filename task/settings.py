"""Settings at the edge: pydantic-settings models for every app, loaded TOML < env < flags.

Library classes take plain keyword arguments; only ``from_settings`` and the CLI see these
models. ``extra="forbid"`` makes a misspelt key an error instead of a silently dropped
option. The environment variable of a setting is ``TASK_<NAME>`` (``TASK_<SECTION>__<NAME>``
when nested), so a Kubernetes Secret in the environment overrides a ConfigMap's TOML.
"""

from __future__ import annotations

import difflib
import tomllib
import typing
from collections.abc import Collection, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from task.credentials import Credentials
from task.duration import Duration, format_duration, parse_duration
from task.errors import ConfigError
from task.url import redact_url

__all__ = [
    "AppSettings",
    "BusSettings",
    "WorkerSettings",
    "gen_config",
    "is_duration",
    "load_settings",
    "positional",
    "show_config",
]

S = TypeVar("S", bound="AppSettings")

#: The TOML values of the ``load_settings`` call under way (a settings source is a class the
#: model builds itself, so the values of one call reach it this way).
_toml_values: ContextVar[dict[str, Any] | None] = ContextVar("_toml_values", default=None)

#: The default bus: the file bus in a local directory, so a newcomer needs no broker.
DEFAULT_BUS = "file:./taskbus-data/"


def positional(default: Any, **kwargs: Any) -> Any:
    """A ``Field`` the CLI takes as a positional argument instead of a flag."""
    return Field(default, json_schema_extra={"positional": True}, **kwargs)


class _TomlSource(PydanticBaseSettingsSource):
    """Values read from the ``-c FILE`` TOML, lowest precedence after defaults."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_toml_values.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_toml_values.get() or {})


class AppSettings(BaseSettings):
    """What every ``taskbus`` app shares: logging and the status endpoint."""

    model_config = SettingsConfigDict(
        env_prefix="TASK_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="log level: debug, info, warning or error"
    )
    log_format: Literal["text", "json"] = Field("text", description="text, or json for log shippers")
    status_port: int = Field(
        0, ge=0, le=65535, description="serve /healthz, /stats and /metrics on this port (0: off)"
    )
    status_host: str = Field(
        "127.0.0.1", description="address the status endpoint binds to (localhost unless told)"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _TomlSource(settings_cls)


class BusSettings(AppSettings):
    """An app that talks to a bus. Secrets live here, not in URLs, so they can be masked."""

    bus: str = Field(DEFAULT_BUS, description="bus URL to read from (file:, memory:, nats://, jetstream://, kafka://, nsq://)")
    out_bus: str = Field("", description="bus URL to send to (default: the same as bus)")
    bus_user: str = Field("", description="bus user name")
    bus_password: SecretStr = Field(SecretStr(""), description="bus password")
    bus_token: SecretStr = Field(SecretStr(""), description="bus token (NATS token, NSQ auth secret)")
    bus_creds_file: str = Field("", description="NATS credentials file")
    bus_nkey_seed_file: str = Field("", description="NATS NKey seed file")
    bus_tls_ca: str = Field("", description="CA certificate file to verify the bus servers")
    bus_tls_cert: str = Field("", description="client certificate file")
    bus_tls_key: str = Field("", description="client key file")
    ledger: str = Field("", description="ledger URL (sqlite:PATH, memory:, cassandra://h:p/keyspace); empty: none")

    def credentials(self) -> Credentials:
        """The secrets and TLS files as the buses take them."""
        return Credentials(
            user=self.bus_user or None,
            password=self.bus_password.get_secret_value() or None,
            token=self.bus_token.get_secret_value() or None,
            creds_file=self.bus_creds_file or None,
            nkey_seed_file=self.bus_nkey_seed_file or None,
            tls_ca=self.bus_tls_ca or None,
            tls_cert=self.bus_tls_cert or None,
            tls_key=self.bus_tls_key or None,
        )

    @property
    def producer_url(self) -> str:
        return self.out_bus or self.bus


class WorkerSettings(BusSettings):
    """``taskbus worker``: run a worker class on a bus."""

    worker: str = positional(
        "", description="MODULE:ATTR of the worker class (or 'nop' for the built-in)"
    )
    type: str = Field("", description="task type (default: the worker class's task_type)")
    topic: str = Field("", description="topic to consume, or topics in priority order: high,default,low (default: the task type)")
    channel: str = Field("", description="channel / consumer group (default: the task type)")
    done_topic: str = Field("done", description="topic done tasks are sent to")
    max_in_progress: int = Field(1, ge=1, description="tasks run at once (also the prefetch)")
    lifetime: int = Field(0, ge=0, description="stop after exactly this many tasks (0: no limit)")
    task_timeout: Duration = Field(0, ge=0, description="how long a task may run, e.g. 30s or 5m (0: no limit)")
    worker_kill_time: Duration = Field(
        10, ge=0, description="how long in-flight tasks get to finish on shutdown, e.g. 10s"
    )
    reject_bad_type: bool = Field(False, description="end tasks of another type as error")
    ignore_bad_type: bool = Field(False, description="acknowledge tasks of another type without running them")
    dead_letter_topic: str = Field("", description="topic for messages that are not tasks (empty: none)")
    processes: int = Field(1, ge=1, description="launcher processes sharing the channel")
    broadcast: bool = Field(True, description="also do every broadcast task (taskbus send --scope all) sent to <type>.all while this worker runs; on by default where the bus can carry them (not nop:, file:-, a file path, or a file directory without ?follow=1)")
    instance: str = Field("", description="this worker's name in broadcast done tasks (meta instance=; default: hostname-pid)")
    heartbeat_interval: Duration = Field(
        5.0, gt=0,
        description="time between heartbeats (bus in_progress, ledger touch) of a running task; keep recover's older_than well above it",
    )
    ledger_unhealthy_after: Duration = Field(
        60.0, gt=0, description="how long the ledger may fail every write before /healthz answers 503, e.g. 60s or 5m"
    )


def is_duration(info: FieldInfo) -> bool:
    """Whether a settings field is a ``Duration`` (seconds that also take ``30s``, ``5m``...)."""
    return any(m in info.metadata for m in typing.get_args(Duration)[1:])


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    """The pydantic models an annotation holds: ``list[Rule]``, ``Rule | None``, ``Rule``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def _place(cls: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[str, str, type[BaseModel]]:
    """Where an error's ``loc`` points: (the key, the nested item holding it or "", that
    item's model). ``('rule', 0, 'dlay')`` in RetrySettings is ('dlay', 'rule 1', RetryRule):
    the walk follows the field annotations, so any nested model gets the same message."""
    model, where, key = cls, "", ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            where = f"{key} {part + 1}"  # people count rules from 1
            continue
        key = str(part)
        info = model.model_fields.get(key)
        nested = next(_models_in(info.annotation), None) if info is not None else None
        if nested is not None and i < len(loc) - 1:
            model = nested
    return key, where, model


def _one_line(err: ValidationError, source: str, cls: type[BaseModel],
              sections: Collection[str] = ()) -> str:
    """The first error of ``err`` as one line a user can act on: what, where, what to do."""
    first = err.errors()[0]
    loc = tuple(first["loc"])
    key, where, model = _place(cls, loc) if loc else ("settings", "", cls)
    if first["type"] == "extra_forbidden":
        fields = list(model.model_fields)
        if where:
            hint = difflib.get_close_matches(key, fields, n=1)
            maybe = f" did you mean {hint[0]!r}?" if hint else ""
            return f"unknown key {key!r} in {where};{maybe} keys: {', '.join(fields)} (in {source})"
        candidates = fields + [s for s in sections if isinstance(first.get("input"), dict)]
        hint = difflib.get_close_matches(key, candidates, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else f"; valid settings: {', '.join(sorted(fields))}"
        return f"unknown setting {key!r} in {source}{suggestion}"
    message = str(first["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    place = where if isinstance(loc[-1], int) else f"{key!r} in {where}" if where else repr(key)
    return f"setting {place} in {source}: {message} (got {first.get('input')!r})"


def _takes_table(cls: type[BaseModel], name: str) -> bool:
    """Whether the field ``name`` of ``cls`` itself takes a TOML table (a model or a dict)."""
    info = cls.model_fields.get(name)
    if info is None:
        return False
    annotation = info.annotation
    return any(True for _ in _models_in(annotation)) or typing.get_origin(annotation) is dict or annotation is dict


def _apply_sections(cls: type[BaseModel], values: dict[str, Any], section: str | None,
                    sections: Collection[str]) -> dict[str, Any]:
    """Top-level keys, with the table named ``section`` merged over them; the tables of the
    other ``sections`` (other commands) dropped. One file can so configure several commands,
    and a ``[worker]`` table is applied, never silently ignored."""
    merged: dict[str, Any] = {}
    for key, value in values.items():
        is_table = isinstance(value, dict) and not _takes_table(cls, key)
        if is_table and key in sections and key != section:
            continue
        if not (is_table and key == section):
            merged[key] = value
    table = values.get(section) if section else None
    if isinstance(table, dict) and not _takes_table(cls, str(section)):
        merged.update(table)
    return merged


def _read_toml(config_file: str) -> dict[str, Any]:
    path = Path(config_file)
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {config_file!r} not found; check the -c path") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {config_file!r}: {err}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {config_file!r} is not valid TOML: {err}") from err


def load_settings(
    cls: type[S],
    config_file: str | None = None,
    /,
    *,
    section: str | None = None,
    sections: Collection[str] = (),
    **flags: Any,
) -> S:
    """Build ``cls`` from defaults, the TOML ``config_file``, the environment and ``flags``
    (flags given as None are left out, so a flag not typed does not override the TOML).

    In the TOML file, top-level keys apply; the table named ``section`` (the running
    command, e.g. ``[worker]``) is merged over them; tables named in ``sections`` (the other
    commands) are skipped; any other unknown key or table is an error.

    Raises:
        ConfigError: unreadable or invalid TOML, an unknown or invalid setting.
    """
    values: dict[str, Any] = {}
    source = "flags or environment"
    if config_file:
        values = _apply_sections(cls, _read_toml(config_file), section, sections)
        source = f"{config_file}, the environment or flags"
    token = _toml_values.set(values)
    try:
        return cls(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as err:
        raise ConfigError(_one_line(err, source, cls, sections)) from err
    finally:
        _toml_values.reset(token)


def gen_config(cls: type[AppSettings]) -> str:
    """A commented TOML of every setting of ``cls`` with its default."""
    lines = [f"# {cls.__doc__.splitlines()[0] if cls.__doc__ else cls.__name__}",
             "# Every setting may also come from TASK_<NAME> in the environment or --<name> flags.", ""]
    for name, info in cls.model_fields.items():
        default = info.get_default(call_default_factory=True)
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        lines.append(f"# {info.description or name}")
        lines.append(f"{name} = {_duration_value(default) if is_duration(info) else _toml_value(default)}")
        lines.append("")
    return "\n".join(lines)


def show_config(settings: AppSettings) -> str:
    """The effective settings as TOML, secrets masked."""
    lines = []
    for name, info in type(settings).model_fields.items():
        value = getattr(settings, name)
        if is_duration(info):
            lines.append(f"{name} = {_duration_value(value)}")
            continue
        if isinstance(value, SecretStr):
            value = "***" if value.get_secret_value() else ""
        elif isinstance(value, str):
            value = redact_url(value)
        lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines)


def _duration_value(seconds: Any) -> str:
    """A duration with its unit (``"10s"``) when that reads back exactly, else the seconds."""
    if isinstance(seconds, int | float):
        text = format_duration(float(seconds))
        try:
            if parse_duration(text) == seconds:
                return _toml_value(text)
        except ConfigError:
            pass  # "1h30m" has two units: parse_duration takes one; keep the plain seconds
    return _toml_value(seconds)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, BaseModel):
        return _toml_value(value.model_dump())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
