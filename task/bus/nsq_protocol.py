"""The NSQ TCP protocol (V2) as pure functions: commands to bytes, bytes to frames.

Written from nsq.io's "TCP Protocol Spec". No I/O here, so every frame we send and parse is
pinned by unit tests against byte strings taken from the spec.

Client to nsqd, after the 4-byte magic ``b"  V2"``::

    <COMMAND> <params separated by spaces>\\n
    [ 4-byte size ][ body ]              (IDENTIFY, AUTH, PUB, DPUB; MPUB has its own body)

nsqd to client, every frame::

    [ 4-byte size = 4 + len(data) ][ 4-byte frame type ][ data ]

Integers are big-endian. A message frame's data is ``[8-byte timestamp ns][2-byte attempts]
[16-byte ASCII id][body]``.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

from task.errors import BusError, ConfigError

__all__ = [
    "CLOSE_WAIT",
    "HEARTBEAT",
    "MAGIC_V2",
    "NON_FATAL_ERRORS",
    "OK",
    "Frame",
    "FrameType",
    "MessageFrame",
    "NsqServerError",
    "ProtocolError",
    "auth",
    "check_name",
    "cls",
    "decode_frame",
    "decode_message",
    "dpub",
    "encode_frame",
    "encode_message",
    "fin",
    "frame_size",
    "identify",
    "mpub",
    "nop",
    "pub",
    "rdy",
    "req",
    "sub",
    "touch",
]

MAGIC_V2 = b"  V2"
#: The response nsqd sends every heartbeat interval; the client answers with NOP.
HEARTBEAT = b"_heartbeat_"
OK = b"OK"
#: The response to CLS: nsqd sends no more messages; in-flight ones may still be settled.
CLOSE_WAIT = b"CLOSE_WAIT"
#: Errors after which nsqd keeps the connection open (all others close it). They answer
#: FIN/REQ/TOUCH, which have no success response, so they arrive unpaired.
NON_FATAL_ERRORS = frozenset({"E_FIN_FAILED", "E_REQ_FAILED", "E_TOUCH_FAILED"})
#: Frames larger than this are taken as a corrupt stream rather than allocated.
MAX_FRAME = 64 * 1024 * 1024

_SIZE = struct.Struct(">l")
_HEADER = struct.Struct(">ll")
_MESSAGE_HEAD = struct.Struct(">qH16s")
_NAME = re.compile(r"[.a-zA-Z0-9_-]{1,64}")
_EPHEMERAL = "#ephemeral"


class FrameType(IntEnum):
    """What a frame from nsqd carries."""

    RESPONSE = 0
    ERROR = 1
    MESSAGE = 2


@dataclass(frozen=True)
class Frame:
    """One frame from nsqd: its type and the data after the type."""

    type: FrameType
    data: bytes


@dataclass(frozen=True)
class MessageFrame:
    """The data of a message frame, decoded."""

    timestamp: int  #: nanoseconds since the epoch, when nsqd received the message
    attempts: int  #: delivery count, 1 on the first delivery
    id: bytes  #: 16 ASCII hex characters; FIN, REQ and TOUCH name the message by it
    body: bytes


class ProtocolError(BusError):
    """Raised when bytes from nsqd do not follow the protocol (a corrupt or foreign stream)."""


class NsqServerError(BusError):
    """Raised when nsqd answers a command with an error frame (``E_BAD_TOPIC ...``)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"nsqd error {code}: {text}" if text else f"nsqd error {code}")
        self.code = code
        self.text = text

    @property
    def fatal(self) -> bool:
        """True when nsqd closes the connection after this error."""
        return self.code not in NON_FATAL_ERRORS

    @classmethod
    def from_frame(cls, data: bytes) -> NsqServerError:
        """Split an error frame's ``E_CODE description`` text."""
        code, _, text = data.decode("utf-8", "replace").partition(" ")
        return cls(code, text)


def check_name(name: str, what: str) -> str:
    """Return ``name`` if it is a valid topic or channel name, else raise ConfigError.

    Checked on our side because nsqd answers a bad name with a fatal error that closes the
    connection, which reads like a network failure.
    """
    base = name.removesuffix(_EPHEMERAL)
    if not _NAME.fullmatch(base) or len(name) > 64:
        raise ConfigError(
            f"NSQ {what} name {name!r} is invalid: use 1-64 of the characters "
            f"[.a-zA-Z0-9_-], optionally ending in {_EPHEMERAL}"
        )
    return name


def _command(name: bytes, *params: bytes) -> bytes:
    return b" ".join((name, *params)) + b"\n"


def _with_body(line: bytes, body: bytes) -> bytes:
    return line + _SIZE.pack(len(body)) + body


def identify(fields: Mapping[str, object]) -> bytes:
    """IDENTIFY with ``fields`` as compact JSON, in the order given (so the bytes are stable)."""
    body = json.dumps(dict(fields), separators=(",", ":")).encode()
    return _with_body(b"IDENTIFY\n", body)


def auth(secret: str | bytes) -> bytes:
    """AUTH with the secret nsqd passes to its auth server."""
    return _with_body(b"AUTH\n", secret.encode() if isinstance(secret, str) else secret)


def sub(topic: str, channel: str) -> bytes:
    """SUB: join ``channel`` of ``topic``; nsqd answers OK and starts at RDY 0."""
    return _command(
        b"SUB", check_name(topic, "topic").encode(), check_name(channel, "channel").encode()
    )


def rdy(count: int) -> bytes:
    """RDY: nsqd sends messages while this connection has fewer than ``count`` in flight."""
    if count < 0:
        raise ValueError(f"RDY count must be >= 0, not {count}")
    return _command(b"RDY", str(count).encode())


def fin(message_id: bytes) -> bytes:
    """FIN: the message is done; no success response."""
    return _command(b"FIN", message_id)


def req(message_id: bytes, delay: float) -> bytes:
    """REQ: put the message back, delivered again after ``delay`` seconds (sent as ms)."""
    return _command(b"REQ", message_id, str(max(0, round(delay * 1000))).encode())


def touch(message_id: bytes) -> bytes:
    """TOUCH: restart the message's timeout."""
    return _command(b"TOUCH", message_id)


def nop() -> bytes:
    """NOP: the answer to a heartbeat."""
    return b"NOP\n"


def cls() -> bytes:
    """CLS: no more messages please; nsqd answers CLOSE_WAIT."""
    return b"CLS\n"


def pub(topic: str, body: bytes) -> bytes:
    """PUB: one message; nsqd answers OK."""
    return _with_body(_command(b"PUB", check_name(topic, "topic").encode()), body)


def dpub(topic: str, delay: float, body: bytes) -> bytes:
    """DPUB: one message delivered no sooner than ``delay`` seconds from now (sent as ms)."""
    line = _command(
        b"DPUB", check_name(topic, "topic").encode(), str(max(0, round(delay * 1000))).encode()
    )
    return _with_body(line, body)


def mpub(topic: str, bodies: Sequence[bytes]) -> bytes:
    """MPUB: several messages in one command; nsqd answers OK for all or fails them all."""
    if not bodies:
        raise ValueError("MPUB needs at least one message")
    parts = [_SIZE.pack(len(bodies))]
    for body in bodies:
        parts.append(_SIZE.pack(len(body)))
        parts.append(body)
    return _with_body(_command(b"MPUB", check_name(topic, "topic").encode()), b"".join(parts))


def frame_size(header: bytes) -> int:
    """The size field of a frame (its first 4 bytes): how many bytes follow it.

    Raises:
        ProtocolError: the size cannot be a frame (smaller than the type, or absurdly large).
    """
    (size,) = _SIZE.unpack(header)
    if size < 4 or size > MAX_FRAME:
        raise ProtocolError(f"nsqd sent a frame of impossible size {size}; is this an nsqd port?")
    return int(size)


def decode_frame(payload: bytes) -> Frame:
    """The frame in ``payload`` (the ``size`` bytes after the size field).

    Raises:
        ProtocolError: unknown frame type.
    """
    (kind,) = _SIZE.unpack_from(payload)
    try:
        frame_type = FrameType(kind)
    except ValueError:
        raise ProtocolError(f"nsqd sent unknown frame type {kind}") from None
    return Frame(frame_type, bytes(payload[4:]))


def decode_message(data: bytes) -> MessageFrame:
    """The message in a message frame's data.

    Raises:
        ProtocolError: the data is shorter than a message header.
    """
    if len(data) < _MESSAGE_HEAD.size:
        raise ProtocolError(
            f"nsqd sent a message frame of {len(data)} bytes, below the 26-byte header"
        )
    timestamp, attempts, message_id = _MESSAGE_HEAD.unpack_from(data)
    return MessageFrame(timestamp, attempts, message_id, bytes(data[_MESSAGE_HEAD.size :]))


def encode_frame(frame_type: FrameType, data: bytes) -> bytes:
    """A frame as nsqd writes it: for protocol peers in tests and tools."""
    return _HEADER.pack(len(data) + 4, frame_type) + data


def encode_message(message: MessageFrame) -> bytes:
    """A message frame as nsqd writes it: for protocol peers in tests and tools."""
    head = _MESSAGE_HEAD.pack(message.timestamp, message.attempts, message.id)
    return encode_frame(FrameType.MESSAGE, head + message.body)
