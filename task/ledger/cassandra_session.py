"""Connecting to Cassandra: URL options, one Cluster/Session per process, asyncio bridging.

``cassandra://[user:pass@]host1,host2:9042/keyspace?option=value`` options:

* ``consistency`` (``LOCAL_QUORUM``) for reads and writes, or ``read_consistency`` /
  ``write_consistency`` apart; ``serial_consistency`` (``LOCAL_SERIAL``) for the
  lightweight transactions of ``claim`` and ``due``.
* ``dc``: the local data center for DC-aware routing (default: the first node's).
* ``ttl`` (``7d``) safety net of every row, ``bucket`` (``1h``) width of a time bucket.
* ``timeout`` (``10s``) per request, ``retries`` (``3``) on server timeouts (never of a
  lightweight transaction: see ``RetryTimeouts``).
* ``tls=1`` with ``tls_ca``, ``tls_cert``, ``tls_key``, ``tls_verify`` (``1``).
* ``reactor``: ``auto`` (default), ``libev`` or ``asyncio``.

User and password come from the URL or ``TASK_CASSANDRA_USER`` / ``TASK_CASSANDRA_PASSWORD``
(a Kubernetes Secret), so they can stay out of config files.

The driver's default event-loop backend is asyncore, which Python 3.12 removed. We pick one
explicitly: libev (the driver's C extension, fastest and what it recommends for production)
when it imports, else ``AsyncioConnection`` (pure Python, runs its own loop in a driver
thread, available on every Python we support). Either way the driver's I/O runs in its own
thread; ``execute`` bridges its futures to the caller's asyncio loop, so no coroutine blocks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Self

from cassandra import ConsistencyLevel, WriteType  # type: ignore[import-untyped]
from cassandra.auth import PlainTextAuthProvider  # type: ignore[import-untyped]
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile  # type: ignore[import-untyped]
from cassandra.policies import DCAwareRoundRobinPolicy, RetryPolicy, TokenAwarePolicy  # type: ignore[import-untyped]
from cassandra.query import dict_factory  # type: ignore[import-untyped]

from task.errors import ConfigError, LedgerError
from task.url import parse_url

__all__ = ["CassandraOptions", "RetryTimeouts", "SessionUser", "SharedSession", "acquire", "execute", "paged_rows", "release"]

logger = logging.getLogger(__name__)

_OPTIONS = ("consistency", "read_consistency", "write_consistency", "serial_consistency", "dc",
            "ttl", "bucket", "timeout", "retries", "tls", "tls_ca", "tls_cert", "tls_key",
            "tls_verify", "reactor")


@dataclass(frozen=True)
class CassandraOptions:
    """Everything a ``cassandra://`` URL says. ``connection`` is what sessions are shared by."""

    hosts: tuple[str, ...]
    port: int
    keyspace: str
    read_consistency: str = "LOCAL_QUORUM"
    write_consistency: str = "LOCAL_QUORUM"
    serial_consistency: str = "LOCAL_SERIAL"
    ttl: int = 7 * 86400
    bucket: int = 3600
    timeout: float = 10.0
    retries: int = 3
    dc: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    tls: bool = False
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_verify: bool = True
    reactor: str = "auto"

    @classmethod
    def from_url(cls, url: str) -> CassandraOptions:
        """Read the options of ``url``.

        Raises:
            ConfigError: no host, hosts on different ports, an unknown or bad option.
        """
        parsed = parse_url(url, default_port=0)  # 0: no port given for that host
        parsed.check_options(_OPTIONS)
        if not parsed.hosts:
            raise ConfigError(f"ledger URL {parsed.redacted()} names no host; use cassandra://host:9042/keyspace")
        # host1,host2:9042 gives every host the port; the driver takes one port per cluster
        ports = {port for _, port in parsed.hosts if port} or {9042}
        if len(ports) > 1:
            raise ConfigError(f"ledger URL {parsed.redacted()}: every host must use the same port")
        both = parsed.text("consistency", "LOCAL_QUORUM").upper()
        options = cls(
            hosts=tuple(host for host, _ in parsed.hosts), port=ports.pop(),
            keyspace=parsed.path.strip("/") or "taskbus",
            read_consistency=parsed.text("read_consistency", both).upper(),
            write_consistency=parsed.text("write_consistency", both).upper(),
            serial_consistency=parsed.text("serial_consistency", "LOCAL_SERIAL").upper(),
            ttl=int(parsed.duration("ttl", 7 * 86400)), bucket=int(parsed.duration("bucket", 3600)),
            timeout=parsed.duration("timeout", 10.0), retries=parsed.integer("retries", 3),
            dc=parsed.text("dc", ""),
            username=parsed.username or os.environ.get("TASK_CASSANDRA_USER", ""),
            password=parsed.password or os.environ.get("TASK_CASSANDRA_PASSWORD", ""),
            tls=parsed.boolean("tls", False), tls_ca=parsed.text("tls_ca", ""),
            tls_cert=parsed.text("tls_cert", ""), tls_key=parsed.text("tls_key", ""),
            tls_verify=parsed.boolean("tls_verify", True), reactor=parsed.text("reactor", "auto"),
        )
        for name in ("read_consistency", "write_consistency", "serial_consistency"):
            value = getattr(options, name)
            if value not in ConsistencyLevel.name_to_value:
                raise ConfigError(f"{name} {value!r} in {parsed.redacted()} is not a consistency "
                                  "level; use e.g. LOCAL_QUORUM, QUORUM, ONE")
        if options.serial_consistency not in ("SERIAL", "LOCAL_SERIAL"):
            raise ConfigError("serial_consistency must be SERIAL or LOCAL_SERIAL")
        if options.reactor not in ("auto", "libev", "asyncio"):
            raise ConfigError(f"reactor {options.reactor!r}: use auto, libev or asyncio")
        if options.bucket < 60 or options.ttl < options.bucket:
            raise ConfigError("bucket must be at least 1m and ttl at least one bucket")
        return options

    @property
    def connection(self) -> tuple[object, ...]:
        """What identifies a Cluster: everything but keyspace, consistency and TTLs."""
        return (self.hosts, self.port, self.dc, self.username, self.password, self.tls,
                self.tls_ca, self.tls_cert, self.tls_key, self.tls_verify, self.reactor,
                self.timeout, self.retries)


class RetryTimeouts(RetryPolicy):  # type: ignore[misc]
    """Retry server-side timeouts ``retries`` times, but only of idempotent statements.

    Upserts, deletes and reads are safe to run twice. A lightweight transaction is not: one
    that timed out may have been applied, and run again it answers "not applied" with our
    own row. So a statement not marked idempotent (the ledger marks its ``IF`` statements so)
    or a write the server reports as ``WriteType.CAS`` is never retried: its error reaches
    the ledger, which checks what was written.
    """

    def __init__(self, retries: int) -> None:
        super().__init__()
        self.retries = retries

    def _again(self, query: Any, consistency: Any, retry_num: int) -> Any:
        if not getattr(query, "is_idempotent", False) or retry_num >= self.retries:
            return self.RETHROW, None
        return self.RETRY, consistency

    def on_read_timeout(self, query: Any, consistency: Any, required_responses: int,
                        received_responses: int, data_retrieved: bool, retry_num: int) -> Any:
        return self._again(query, consistency, retry_num)

    def on_write_timeout(self, query: Any, consistency: Any, write_type: Any,
                         required_responses: int, received_responses: int, retry_num: int) -> Any:
        if write_type == WriteType.CAS:
            return self.RETHROW, None
        return self._again(query, consistency, retry_num)

    def on_request_error(self, query: Any, consistency: Any, error: Exception, retry_num: int) -> Any:
        # a connection lost after sending: the statement may have run
        if not getattr(query, "is_idempotent", False):
            return self.RETHROW, None
        return super().on_request_error(query, consistency, error, retry_num)

    def on_unavailable(self, query: Any, consistency: Any, required_replicas: int,
                       alive_replicas: int, retry_num: int) -> Any:
        # the coordinator refused before running anything: safe for every statement
        return (self.RETRY_NEXT_HOST, None) if retry_num < 1 else (self.RETHROW, None)


def _connection_class(reactor: str) -> type:
    if reactor in ("auto", "libev"):
        try:
            from cassandra.io.libevreactor import LibevConnection  # type: ignore[import-untyped]
        except ImportError as err:
            if reactor == "libev":
                raise ConfigError("reactor=libev: the driver's libev extension is not built; "
                                  "install libev and reinstall cassandra-driver, or use reactor=asyncio") from err
        else:
            return LibevConnection  # type: ignore[no-any-return]
    from cassandra.io.asyncioreactor import AsyncioConnection  # type: ignore[import-untyped]
    return AsyncioConnection  # type: ignore[no-any-return]


def _ssl_context(options: CassandraOptions) -> ssl.SSLContext | None:
    if not options.tls:
        return None
    context = ssl.create_default_context(cafile=options.tls_ca or None)
    if options.tls_cert:
        context.load_cert_chain(options.tls_cert, options.tls_key or None)
    if not options.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class SharedSession:
    """One connected Cluster and its Session, shared by every ledger of the process."""

    key: tuple[object, ...]
    cluster: Any
    session: Any
    users: int = 0


_sessions: dict[tuple[object, ...], SharedSession] = {}
_sessions_lock = threading.Lock()


def acquire(options: CassandraOptions) -> SharedSession:
    """The process's session for ``options``, connecting it on first use. Blocks: run it in a
    thread. Release it with ``release``.

    Raises:
        LedgerError: no node could be reached.
    """
    with _sessions_lock:
        shared = _sessions.get(options.connection)
        if shared is None:
            profile = ExecutionProfile(
                load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=options.dc or None)),
                retry_policy=RetryTimeouts(options.retries),
                request_timeout=options.timeout, row_factory=dict_factory,
            )
            auth = (PlainTextAuthProvider(options.username, options.password)
                    if options.username else None)
            cluster = Cluster(
                list(options.hosts), port=options.port, auth_provider=auth,
                ssl_context=_ssl_context(options), connection_class=_connection_class(options.reactor),
                execution_profiles={EXEC_PROFILE_DEFAULT: profile}, connect_timeout=options.timeout,
            )
            try:
                session = cluster.connect()
            except Exception as err:
                cluster.shutdown()
                raise LedgerError(f"cannot reach Cassandra at {','.join(options.hosts)}:"
                                  f"{options.port}: {err}") from err
            session.default_fetch_size = 500
            shared = _sessions[options.connection] = SharedSession(options.connection, cluster, session)
            logger.info("connected to Cassandra at %s:%d", ",".join(options.hosts), options.port)
        shared.users += 1
        return shared


def release(shared: SharedSession) -> None:
    """Give the session back; the last user shuts the cluster down. Blocks: run it in a thread."""
    with _sessions_lock:
        shared.users -= 1
        if shared.users > 0:
            return
        _sessions.pop(shared.key, None)
    shared.cluster.shutdown()


class SessionUser:
    """A ledger or store that holds a share of the process's session for its keyspace: taken
    at first use, given back by ``close()``. ``what`` names it in the error after a close.
    It runs its prepared statements by name (``_run``, ``_rows``) once its own ``_ready``
    has prepared them."""

    options: CassandraOptions
    what: str = "ledger"

    def __init__(self, options: CassandraOptions) -> None:
        self.options = options
        self._shared: SharedSession | None = None
        self._closed = False

    async def _session(self) -> SharedSession:
        if self._closed:
            raise LedgerError(f"the Cassandra {self.what} {self.options.keyspace} is closed; open a new one")
        if self._shared is None:
            self._shared = await asyncio.to_thread(acquire, self.options)
        return self._shared

    async def _ready(self) -> tuple[Any, dict[str, Any]]:
        """The session and this user's prepared statements by name, prepared (after checking
        its schema) at first use."""
        raise NotImplementedError

    async def _run(self, name: str, *params: object) -> Any:
        """The ResultSet of the prepared statement ``name``."""
        session, statements = await self._ready()
        return await execute(session, statements[name], params)

    async def _rows(self, name: str, *params: object) -> AsyncIterator[dict[str, Any]]:
        """Every row of the prepared statement ``name``, page by page (``paged_rows``)."""
        session, statements = await self._ready()
        async for row in paged_rows(session, statements[name], params):
            yield row

    async def close(self) -> None:
        """Release this share of the process's session. Idempotent."""
        self._closed = True
        shared, self._shared = self._shared, None
        if shared is not None:
            await asyncio.to_thread(release, shared)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def execute(session: Any, statement: Any, params: tuple[object, ...] = (),
                  paging_state: bytes | None = None) -> Any:
    """Run ``statement`` with the driver's ``execute_async`` and await its ResultSet.

    Raises:
        LedgerError: the request failed after the driver's retries.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return  # the awaiting coroutine was cancelled
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    try:
        future = session.execute_async(statement, params or None, paging_state=paging_state)
    except Exception as err:
        raise LedgerError(f"Cassandra refused a request: {err}") from err
    future.add_callbacks(lambda _: loop.call_soon_threadsafe(settle, None),
                         lambda err: loop.call_soon_threadsafe(settle, err))
    try:
        await done
        return future.result()  # already finished: does not block
    except Exception as err:
        raise LedgerError(f"Cassandra request failed: {type(err).__name__}: {err}") from err


async def paged_rows(session: Any, statement: Any, params: tuple[object, ...] = ()) -> AsyncIterator[dict[str, Any]]:
    """Every row of ``statement``, a page (the session's fetch size) at a time, so a large
    partition is never held whole.

    Raises:
        LedgerError: a page's request failed after the driver's retries.
    """
    paging_state = None
    while True:
        result = await execute(session, statement, params, paging_state)
        for row in result.current_rows:
            yield row
        if not result.has_more_pages:
            return
        paging_state = result.paging_state
