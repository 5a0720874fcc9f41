"""Parsing bus and ledger URLs: hosts, path and the per-backend options in the query string.

Every backend reads its options from its URL (``kafka://h:p?partitions=3``); a misspelt or
malformed option is a ``ConfigError`` naming the option, the bad value and what is valid,
because a silently ignored option is how data gets lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from task.duration import parse_duration
from task.errors import ConfigError

__all__ = ["ParsedURL", "parse_url", "redact_url"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
#: Query options whose value is a secret (``nats://h?token=...``), masked by ``redact_url``.
SECRET_OPTIONS = frozenset({"token", "password", "secret", "auth_secret", "sasl_password"})


@dataclass
class ParsedURL:
    """A backend URL taken apart: ``scheme://user:pass@h1:p1,h2:p2/path?k=v``."""

    url: str
    scheme: str
    hosts: list[tuple[str, int]]
    path: str
    username: str | None
    password: str | None
    params: dict[str, str] = field(default_factory=dict)

    def _label(self, name: str) -> str:
        return f"{self.scheme} option {name!r} in {self.redacted()}"

    def redacted(self) -> str:
        """The URL with any password or secret option replaced by ``***``, for logs and errors."""
        return redact_url(self.url)

    def check_options(self, valid: Iterable[str]) -> None:
        """Raise ConfigError for an option the backend does not know."""
        allowed = set(valid)
        unknown = sorted(set(self.params) - allowed)
        if unknown:
            raise ConfigError(
                f"unknown option {unknown[0]!r} for the {self.scheme} URL {self.redacted()}; "
                f"valid options: {', '.join(sorted(allowed)) or 'none'}"
            )

    def text(self, name: str, default: str) -> str:
        return self.params.get(name, default)

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        raw = self.params.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{self._label(name)}: {raw!r} is not a whole number") from None
        if value < minimum:
            raise ConfigError(f"{self._label(name)}: {value} is below the minimum {minimum}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.params.get(name)
        if raw is None:
            return default
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(f"{self._label(name)}: {raw!r} is not a boolean; use 1/0 or true/false")

    def duration(self, name: str, default: float) -> float:
        raw = self.params.get(name)
        return default if raw is None else parse_duration(raw, self._label(name))


def redact_url(url: str) -> str:
    """``url`` with the password of its user part and the values of ``SECRET_OPTIONS``
    replaced by ``***``; anything else, and a text that is not a URL, comes back unchanged.

    Taken apart the way ``parse_url`` does (the user part ends at the netloc's last ``@``),
    so a password with an ``@`` or ``%40`` in it is masked whole.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc, query = parts.netloc, parts.query
    if "@" in netloc:
        auth, _, hosts = netloc.rpartition("@")
        user, colon, _ = auth.partition(":")
        netloc = f"{user}:***@{hosts}" if colon else netloc
    if query:
        items = query.split("&")
        for i, item in enumerate(items):
            key, equals, value = item.partition("=")
            if equals and value and unquote(key).lower() in SECRET_OPTIONS:
                items[i] = f"{key}=***"
        query = "&".join(items)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def parse_url(url: str, default_port: int | None = None) -> ParsedURL:
    """Take ``url`` apart. Several hosts may be given comma-separated.

    Raises:
        ConfigError: a port is not a number.
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    username = password = None
    if "@" in netloc:
        auth, _, netloc = netloc.rpartition("@")
        user, _, pw = auth.partition(":")
        username, password = unquote(user) or None, unquote(pw) or None
    hosts: list[tuple[str, int]] = []
    for item in filter(None, netloc.split(",")):
        host, sep, port = item.rpartition(":") if not item.endswith("]") else (item, "", "")
        if not sep:
            host, port = item, ""
        if port and not port.isdigit():
            raise ConfigError(f"port {port!r} in {url!r} is not a number")
        if not port and default_port is None:
            raise ConfigError(f"{item!r} in {url!r} needs a port (host:port)")
        hosts.append((host.strip("[]") or "127.0.0.1", int(port) if port else int(default_port or 0)))
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    path = parts.path if parts.netloc or parts.path.startswith("/") else url.partition(":")[2]
    return ParsedURL(url, parts.scheme, hosts, path, username, password, params)
