"""Connecting to NATS, shared by the ``nats://`` and ``jetstream://`` buses.

Secrets come from ``Credentials`` (settings, so they stay out of URLs) or from the URL
(``nats://user:pass@h:p``, ``?token=``); settings win. They are never logged: errors and
``info()`` show ``ParsedURL.redacted()`` only. A server that goes away is reconnected to
forever by default (``max_reconnects=-1``), because a worker that gives up on a restarting
server leaves its tasks unrun.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import nats
from nats.aio.client import Client

from task.credentials import Credentials
from task.errors import BusError, ConfigError
from task.log_limit import RateLimitedLog
from task.url import ParsedURL

__all__ = ["CONNECT_PARAMS", "ConnectOptions", "connect", "flush_in_order"]

logger = logging.getLogger(__name__)

#: URL options every NATS bus accepts (each bus adds its own).
CONNECT_PARAMS = (
    "name", "token", "tls", "tls_ca", "tls_cert", "tls_key",
    "connect_timeout", "max_reconnects", "reconnect_wait",
)
DEFAULT_PORT = 4222


@dataclass(frozen=True)
class ConnectOptions:
    """Where and how to connect: servers, identity, TLS and the reconnect policy."""

    servers: tuple[str, ...]
    shown: str  #: the URL with secrets masked, for logs and errors
    name: str = "taskbus"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    nkey_seed_file: str | None = None
    creds_file: str | None = None
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    connect_timeout: float = 5.0
    max_reconnects: int = -1  #: -1: retry forever
    reconnect_wait: float = 1.0

    @classmethod
    def from_url(cls, parsed: ParsedURL, credentials: Credentials) -> ConnectOptions:
        """Connection options from a parsed ``nats://`` or ``jetstream://`` URL and settings.

        Raises:
            ConfigError: a malformed option, or a TLS key without its certificate.
        """
        hosts = parsed.hosts or [("127.0.0.1", DEFAULT_PORT)]
        tls_ca = credentials.tls_ca or parsed.params.get("tls_ca")
        tls_cert = credentials.tls_cert or parsed.params.get("tls_cert")
        tls_key = credentials.tls_key or parsed.params.get("tls_key")
        if bool(tls_cert) != bool(tls_key):
            raise ConfigError(
                f"TLS for {parsed.redacted()} needs both a certificate and its key "
                "(tls_cert and tls_key); only one is set"
            )
        tls = parsed.boolean("tls", False) or bool(tls_ca or tls_cert)
        scheme = "tls" if tls else "nats"
        max_reconnects = parsed.integer("max_reconnects", -1, minimum=-1)
        return cls(
            servers=tuple(f"{scheme}://{host}:{port}" for host, port in hosts),
            shown=parsed.redacted(),
            name=parsed.text("name", "taskbus"),
            user=credentials.user or parsed.username,
            password=credentials.password or parsed.password,
            token=credentials.token or parsed.params.get("token") or None,
            nkey_seed_file=credentials.nkey_seed_file,
            creds_file=credentials.creds_file,
            tls=tls,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            connect_timeout=parsed.duration("connect_timeout", 5.0),
            max_reconnects=max_reconnects,
            reconnect_wait=parsed.duration("reconnect_wait", 1.0),
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context, or None for plain TCP.

        Raises:
            ConfigError: a CA, certificate or key file cannot be read.
        """
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert and self.tls_key:
                context.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"TLS files for {self.shown} cannot be loaded: {err}") from err
        return context


async def connect(
    options: ConnectOptions, on_reconnect: Callable[[], Awaitable[None]] | None = None,
    *, checks_subjects: bool = True,
) -> Client:
    """A connected nats-py client that reconnects on its own; ``on_reconnect`` runs after
    each reconnection (a pull consumer re-asks for messages then). ``checks_subjects=False``
    leaves out nats-py's check of every published subject: for a caller that checks each
    subject once (``check_subject``) before it publishes to it.

    Raises:
        BusError: no server could be reached at start (names the URL, never a secret).
        ConfigError: TLS files cannot be loaded.
    """

    errors: list[Exception] = []  # what went wrong at start, for the one clear error
    slow_consumer = RateLimitedLog(logger)

    async def on_error(err: Exception) -> None:
        if isinstance(err, nats.errors.SlowConsumerError):
            # nats-py reports every message it drops: one line a minute, with the count
            slow_consumer(
                "nats %s: messages for %r dropped: this process reads slower than they come "
                "(core NATS keeps none; raise pending_limit, add workers, or use jetstream://)",
                options.shown, err.subject,
            )
        elif client.options.get("allow_reconnect"):
            logger.warning("nats %s: %s", options.shown, err)
        else:
            errors.append(err)

    async def on_disconnected() -> None:
        if client.options.get("allow_reconnect") and not client.is_closed:
            logger.warning("nats %s: disconnected; reconnecting", options.shown)

    async def on_reconnected() -> None:
        logger.info("nats %s: reconnected", options.shown)
        if on_reconnect is not None:
            await on_reconnect()

    client = Client()
    # nats-py can wait forever on a TLS handshake that failed (an untrusted server
    # certificate); bound the whole start so it still ends in one clear error.
    limit = options.connect_timeout * 2 * len(options.servers) + 1
    try:
        await asyncio.wait_for(client.connect(
            servers=list(options.servers),
            name=options.name,
            user=options.user,
            password=options.password,
            token=options.token,
            nkeys_seed=options.nkey_seed_file,
            user_credentials=options.creds_file,
            tls=options.ssl_context(),
            connect_timeout=int(max(1, options.connect_timeout)),
            # At start, fail fast with one clear error: nats-py would otherwise retry a
            # server that is not there forever. The real policy is set once connected.
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            skip_subject_validation=not checks_subjects,
        ), limit)
    except ConfigError:
        raise
    except (OSError, TimeoutError, nats.errors.Error, ssl.SSLError) as err:
        await _close_quietly(client)
        first = errors[-1] if errors else err
        reason = str(first) or type(first).__name__
        if isinstance(err, TimeoutError) and not errors:
            reason = f"no answer within {limit:.0f}s (a TLS handshake that failed? check tls_ca)"

        raise BusError(
            f"cannot connect to {options.shown}: {reason}; is nats-server running?"
        ) from err
    client.options["allow_reconnect"] = True
    client.options["max_reconnect_attempts"] = options.max_reconnects
    client.options["reconnect_time_wait"] = options.reconnect_wait
    return client


def check_subject(subject: str) -> None:
    """What nats-py checks of a subject it publishes to: not empty, no space, tab, CR or LF
    (a CR LF would let a subject write protocol commands of its own).

    Raises:
        BusError: the subject is not valid, naming it.
    """
    if not subject or _BAD_SUBJECT.search(subject):
        raise BusError(f"cannot publish to {subject!r}: a NATS subject is not empty and has no "
                       "spaces, tabs or line breaks")


_BAD_SUBJECT = re.compile(r"[ \t\r\n]")


async def _close_quietly(client: Client) -> None:
    """Close a half-open client so no reconnect task outlives a failed start."""
    try:
        # nats-py's close can wait forever on a transport whose TLS handshake failed
        await asyncio.wait_for(client.close(), 2)
    except Exception as err:  # noqa: BLE001 - best effort on a client that never worked
        logger.debug("closing a failed nats client: %s", err or type(err).__name__)


async def flush_in_order(client: Client, timeout: float = 10.0) -> None:
    """Return once the server has read everything this client wrote before the call.

    nats-py 2.16's ``Client.flush()`` writes its PING straight to the socket while a
    SUB or PUB just issued may still sit in the client's pending buffer: the PONG can then
    come back before the server has seen them, and a message published right after a
    "flushed" subscribe is lost. Writing the pending buffer out first (and waiting for
    that) puts the PING behind them again.
    """
    write_pending: Callable[..., Awaitable[object]] | None = getattr(client, "_flush_pending", None)
    if write_pending is not None and client.is_connected:
        await write_pending(force_flush=True)
    await client.flush(timeout=timeout)  # type: ignore[arg-type]  # nats-py annotates int
