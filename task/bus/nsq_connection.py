"""One asyncio connection to one nsqd: handshake, a reader task, heartbeats, request/response.

The handshake is the spec's: magic, IDENTIFY with feature negotiation, then the TLS upgrade
(and its OK) when both sides want it, then AUTH when nsqd requires it. After that a reader
task owns the socket's input: heartbeats are answered with NOP at once, message frames go
to the owner's callback, and responses are paired in order with the commands that expect
one (IDENTIFY, AUTH, SUB, PUB, MPUB, DPUB, CLS). FIN, REQ, TOUCH, RDY and NOP have no
success response; their failures (``E_FIN_FAILED`` and friends) arrive unpaired, are
logged and counted, and leave the connection open, as nsqd does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from task.bus import nsq_protocol as proto
from task.errors import BusError

__all__ = ["ConnectionSettings", "NsqConnection"]

logger = logging.getLogger(__name__)

#: What nsqd allows as RDY when IDENTIFY does not say (nsqd's --max-rdy-count default).
DEFAULT_MAX_RDY = 2500

MessageCallback = Callable[["NsqConnection", proto.MessageFrame], None]
CloseCallback = Callable[["NsqConnection"], None]


@dataclass(frozen=True)
class ConnectionSettings:
    """What every connection of a consumer or producer says about itself and needs."""

    client_id: str
    hostname: str
    user_agent: str
    heartbeat_interval: float = 30.0  #: seconds; 0 turns heartbeats off
    msg_timeout: float = 0.0  #: seconds; 0 keeps nsqd's default
    connect_timeout: float = 10.0
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_verify: bool = True
    auth_secret: str | None = field(default=None, repr=False)  # never in logs

    def identify_fields(self) -> dict[str, object]:
        """The IDENTIFY body, in a fixed order."""
        fields: dict[str, object] = {
            "client_id": self.client_id,
            "hostname": self.hostname,
            "user_agent": self.user_agent,
            "feature_negotiation": True,
            # nsqd takes -1 for "no heartbeats"; 0 would mean its default
            "heartbeat_interval": round(self.heartbeat_interval * 1000)
            if self.heartbeat_interval > 0
            else -1,
        }
        if self.msg_timeout > 0:
            fields["msg_timeout"] = round(self.msg_timeout * 1000)
        fields["tls_v1"] = self.tls
        return fields

    def tls_context(self) -> ssl.SSLContext:
        """An SSL context from the credentials' files (reads files: call off the loop)."""
        context = ssl.create_default_context(cafile=self.tls_ca)
        if self.tls_cert:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class NsqConnection:
    """A connection to the nsqd at ``host:port``; ``connect()`` does the I/O."""

    def __init__(
        self,
        host: str,
        port: int,
        settings: ConnectionSettings,
        *,
        on_message: MessageCallback | None = None,
        on_close: CloseCallback | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.settings = settings
        self._on_message = on_message
        self._on_close = on_close
        #: nsqd's IDENTIFY answer (empty when it does not negotiate)
        self.negotiated: dict[str, object] = {}
        self.max_rdy_count = DEFAULT_MAX_RDY
        #: E_FIN_FAILED, E_REQ_FAILED, E_TOUCH_FAILED seen on this connection
        self.non_fatal_errors = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: deque[asyncio.Future[bytes]] = deque()
        self._reader_task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once the socket is closed or closing; commands are refused then."""
        return self._closed or self._writer is None or self._writer.is_closing()

    async def connect(self) -> None:
        """Open the socket and do the handshake, then start reading frames.

        Raises:
            BusError: nsqd cannot be reached, refused IDENTIFY or AUTH, or lacks TLS
                that was asked for.
        """
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
                await self._handshake()
        except BusError:
            await self.close()
            raise
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as err:
            await self.close()
            raise BusError(
                f"cannot connect to nsqd at {self.address}: {err or type(err).__name__}; "
                "is nsqd running and is this its TCP port (4150 by default)?"
            ) from err
        self._reader_task = asyncio.create_task(
            self._read_loop(), name=f"nsq-reader-{self.address}"
        )

    async def _handshake(self) -> None:
        assert self._writer is not None
        self._writer.write(proto.MAGIC_V2 + proto.identify(self.settings.identify_fields()))
        answer = await self._expect_response("IDENTIFY")
        if answer != proto.OK:
            try:
                self.negotiated = json.loads(answer)
            except ValueError as err:
                raise proto.ProtocolError(
                    f"nsqd at {self.address} answered IDENTIFY with {answer[:80]!r}"
                ) from err
        self.max_rdy_count = int(str(self.negotiated.get("max_rdy_count", DEFAULT_MAX_RDY)))
        if self.settings.tls:
            if not self.negotiated.get("tls_v1"):
                raise BusError(
                    f"nsqd at {self.address} does not offer TLS; start it with --tls-cert and "
                    "--tls-key, or drop tls=1 from the URL"
                )
            context = await asyncio.to_thread(self.settings.tls_context)
            await self._writer.start_tls(context, server_hostname=self.host)
            await self._expect_response("the TLS upgrade")
        if self.negotiated.get("auth_required"):
            if not self.settings.auth_secret:
                raise BusError(
                    f"nsqd at {self.address} requires AUTH; set the token (or password) "
                    "credential in the settings"
                )
            self._writer.write(proto.auth(self.settings.auth_secret))
            identity = json.loads(await self._expect_response("AUTH"))
            logger.info("authenticated to nsqd %s as %s", self.address, identity.get("identity"))

    async def _expect_response(self, what: str) -> bytes:
        """The next response during the handshake (before the reader task runs)."""
        while True:
            frame = await self._read_frame()
            if frame.type is proto.FrameType.ERROR:
                error = proto.NsqServerError.from_frame(frame.data)
                raise BusError(f"nsqd at {self.address} refused {what}: {error}") from error
            if frame.type is proto.FrameType.RESPONSE and frame.data == proto.HEARTBEAT:
                self.send(proto.nop())
                continue
            if frame.type is not proto.FrameType.RESPONSE:
                raise proto.ProtocolError(f"nsqd at {self.address} sent a message before {what}")
            return frame.data

    async def _read_frame(self) -> proto.Frame:
        assert self._reader is not None
        header = await self._reader.readexactly(4)
        return proto.decode_frame(await self._reader.readexactly(proto.frame_size(header)))

    async def _read_loop(self) -> None:
        hb = self.settings.heartbeat_interval
        # nsqd gives up after two missed heartbeats; so do we, with a second of slack
        idle_limit = 2 * hb + 1 if hb > 0 else None
        error: BaseException | None = None
        try:
            while True:
                async with asyncio.timeout(idle_limit):
                    frame = await self._read_frame()
                self._dispatch(frame)
        except asyncio.IncompleteReadError:
            pass  # nsqd closed, or we did
        except TimeoutError as err:
            error = err
            logger.warning(
                "nsqd %s sent nothing for %.0fs (no heartbeat); reconnecting",
                self.address,
                idle_limit,
            )
        except (OSError, BusError) as err:  # BusError: a ProtocolError, or a write failed
            error = err
            logger.warning("connection to nsqd %s failed: %s", self.address, err)
        finally:
            self._finish(error)

    def _dispatch(self, frame: proto.Frame) -> None:
        if frame.type is proto.FrameType.MESSAGE:
            if self._on_message is not None:
                self._on_message(self, proto.decode_message(frame.data))
            return
        if frame.type is proto.FrameType.RESPONSE and frame.data == proto.HEARTBEAT:
            self.send(proto.nop())
            return
        error = (
            proto.NsqServerError.from_frame(frame.data)
            if frame.type is proto.FrameType.ERROR
            else None
        )
        if error is not None and not error.fatal:
            self.non_fatal_errors += 1
            logger.warning(
                "nsqd %s: %s (the message's timeout passed or it was settled twice)",
                self.address,
                error,
            )
            return
        if not self._pending:
            if error is not None:
                logger.error("nsqd %s closes the connection: %s", self.address, error)
            else:
                logger.debug("nsqd %s sent unexpected response %r", self.address, frame.data[:80])
            return
        waiter = self._pending.popleft()
        if waiter.done():
            return
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(frame.data)

    def _finish(self, error: BaseException | None) -> None:
        self._closed = True
        if self._writer is not None:
            self._writer.close()
        while self._pending:
            waiter = self._pending.popleft()
            if not waiter.done():
                waiter.set_exception(
                    BusError(f"connection to nsqd {self.address} closed before it answered")
                )
        if self._on_close is not None:
            self._on_close(self)

    def send(self, command: bytes) -> None:
        """Write a command that has no success response (FIN, REQ, TOUCH, RDY, NOP).

        Raises:
            BusError: the connection is closed.
        """
        if self.closed:
            raise BusError(f"connection to nsqd {self.address} is closed")
        assert self._writer is not None
        self._writer.write(command)

    async def request(self, command: bytes) -> bytes:
        """Write a command and return nsqd's response to it (``OK``, ``CLOSE_WAIT``, ...).

        Raises:
            NsqServerError: nsqd answered with an error frame.
            BusError: the connection is closed or closed before the answer.
        """
        if self.closed:
            raise BusError(f"connection to nsqd {self.address} is closed")
        assert self._writer is not None
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending.append(waiter)  # appended with the write, so answers pair in order
        self._writer.write(command)
        try:
            await self._writer.drain()
        except OSError as err:
            raise BusError(f"connection to nsqd {self.address} failed: {err}") from err
        return await waiter

    def close_soon(self) -> None:
        """Start closing without waiting; the reader task ends and calls ``on_close``."""
        self._closed = True
        if self._writer is not None:
            self._writer.close()

    async def close(self) -> None:
        """Close the socket and wait for the reader task to finish. Idempotent."""
        self.close_soon()
        if self._reader_task is not None and self._reader_task is not asyncio.current_task():
            await asyncio.gather(self._reader_task, return_exceptions=True)
        if self._writer is not None:
            try:
                await self._writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass  # already broken: closing is all we wanted
