"""Settings at the edge: pydantic-settings models for every app, loaded TOML < env < flags.

Library classes take plain keyword arguments; only ``from_settings`` and the CLI see these
models. ``extra="forbid"`` makes a misspelt key an error instead of a silently dropped
option. The environment variable of a setting is ``TASK_<NAME>`` (``TASK_<SECTION>__<NAME>``
when nested), so a Kubernetes Secret in the environment overrides a ConfigMap's TOML.
"""

from __future__ import annotations

import difflib
import tomllib
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

from task.bus.registry import Credentials
from task.bus.url import redact_url
from task.errors import ConfigError

__all__ = [
    "AppSettings",
    "BusSettings",
    "WorkerSettings",
    "load_settings",
    "positional",
]

S = TypeVar("S", bound="AppSettings")

_toml_values: ContextVar[dict[str, Any]] = ContextVar("_toml_values", default={})

#: The default bus: the file bus in a local directory, so a newcomer needs no broker.
DEFAULT_BUS = "file:./taskbus-data/"


def positional(default: Any, **kwargs: Any) -> Any:
    """A ``Field`` the CLI takes as a positional argument instead of a flag."""
    return Field(default, json_schema_extra={"positional": True}, **kwargs)


class _TomlSource(PydanticBaseSettingsSource):
    """Values read from the ``-c FILE`` TOML, lowest precedence after defaults."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return _toml_values.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_toml_values.get())


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
    topic: str = Field("", description="topic to consume (default: the task type)")
    channel: str = Field("", description="channel / consumer group (default: the task type)")
    done_topic: str = Field("done", description="topic done tasks are sent to")
    max_in_progress: int = Field(1, ge=1, description="tasks run at once (also the prefetch)")
    lifetime: int = Field(0, ge=0, description="stop after exactly this many tasks (0: no limit)")
    task_timeout: float = Field(0, ge=0, description="seconds a task may run (0: no limit)")
    worker_kill_time: float = Field(10, ge=0, description="seconds in-flight tasks get to finish on shutdown")
    reject_bad_type: bool = Field(False, description="end tasks of another type as error")
    ignore_bad_type: bool = Field(False, description="acknowledge tasks of another type without running them")
    dead_letter_topic: str = Field("", description="topic for messages that are not tasks (empty: none)")
    processes: int = Field(1, ge=1, description="launcher processes sharing the channel")
    heartbeat_interval: float = Field(
        5.0, gt=0,
        description="seconds between heartbeats (bus in_progress, ledger touch) of a running task; keep recover's older_than well above it",
    )


def _one_line(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    name = ".".join(str(p) for p in first["loc"]) or "settings"
    if first["type"] == "extra_forbidden":
        fields = list(err.title and _fields_of(err.title) or [])
        hint = difflib.get_close_matches(name, fields, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else f"; valid settings: {', '.join(fields)}"
        return f"unknown setting {name!r} in {source}{suggestion}"
    return f"setting {name!r} in {source}: {first['msg']} (got {first.get('input')!r})"


_known_models: dict[str, type[AppSettings]] = {}


def _fields_of(title: str) -> list[str]:
    model = _known_models.get(title)
    return sorted(model.model_fields) if model else []


def load_settings(cls: type[S], config_file: str | None = None, **flags: Any) -> S:
    """Build ``cls`` from defaults, the TOML ``config_file``, the environment and ``flags``
    (flags given as None are left out, so a flag not typed does not override the TOML).

    Raises:
        ConfigError: unreadable or invalid TOML, an unknown or invalid setting.
    """
    _known_models[cls.__name__] = cls
    values: dict[str, Any] = {}
    source = "flags or environment"
    if config_file:
        path = Path(config_file)
        try:
            values = tomllib.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {config_file!r} not found; check the -c path") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read config file {config_file!r}: {err}") from err
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {config_file!r} is not valid TOML: {err}") from err
        source = f"{config_file}, the environment or flags"
    token = _toml_values.set(values)
    try:
        return cls(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as err:
        raise ConfigError(_one_line(err, source)) from err
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
        lines.append(f"{name} = {_toml_value(default)}")
        lines.append("")
    return "\n".join(lines)


def show_config(settings: AppSettings) -> str:
    """The effective settings as TOML, secrets masked."""
    lines = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = "***" if value.get_secret_value() else ""
        elif isinstance(value, str):
            value = redact_url(value)
        lines.append(f"{name} = {_toml_value(value)}")
    return "\n".join(lines)


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
