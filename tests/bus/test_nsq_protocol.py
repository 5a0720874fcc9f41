"""Every NSQ frame we send and parse, pinned against bytes written from nsq.io's TCP spec."""

from __future__ import annotations

import pytest

from task.bus import nsq_protocol as proto
from task.bus.nsq import NsqOptions
from task.bus.nsq_connection import ConnectionSettings
from task.bus.nsq_lookup import Node, parse_nodes
from task.errors import ConfigError

MSG_ID = b"0a1b2c3d4e5f6789"


def test_magic_is_two_spaces_v2() -> None:
    assert proto.MAGIC_V2 == b"\x20\x20V2"


def test_identify_is_a_size_prefixed_json_body() -> None:
    settings = ConnectionSettings(
        client_id="w1",
        hostname="w1.example",
        user_agent="taskbus/0.1.0",
        heartbeat_interval=30.0,
        msg_timeout=60.0,
    )
    body = (
        b'{"client_id":"w1","hostname":"w1.example","user_agent":"taskbus/0.1.0",'
        b'"feature_negotiation":true,"heartbeat_interval":30000,"msg_timeout":60000,"tls_v1":false}'
    )
    assert (
        proto.identify(settings.identify_fields())
        == b"IDENTIFY\n" + len(body).to_bytes(4, "big") + body
    )


def test_identify_turns_heartbeats_off_with_minus_one_and_leaves_msg_timeout_to_nsqd() -> None:
    fields = ConnectionSettings("c", "h", "ua", heartbeat_interval=0, tls=True).identify_fields()
    assert fields["heartbeat_interval"] == -1
    assert "msg_timeout" not in fields
    assert fields["tls_v1"] is True


def test_auth_sends_the_secret_as_a_body() -> None:
    assert proto.auth("s3cret") == b"AUTH\n\x00\x00\x00\x06s3cret"


@pytest.mark.parametrize(
    ("command", "wire"),
    [
        (proto.sub("orders", "billing"), b"SUB orders billing\n"),
        (proto.sub("t", "c#ephemeral"), b"SUB t c#ephemeral\n"),
        (proto.rdy(0), b"RDY 0\n"),
        (proto.rdy(25), b"RDY 25\n"),
        (proto.fin(MSG_ID), b"FIN 0a1b2c3d4e5f6789\n"),
        (proto.req(MSG_ID, 0), b"REQ 0a1b2c3d4e5f6789 0\n"),
        (proto.req(MSG_ID, 1.5), b"REQ 0a1b2c3d4e5f6789 1500\n"),
        (proto.touch(MSG_ID), b"TOUCH 0a1b2c3d4e5f6789\n"),
        (proto.nop(), b"NOP\n"),
        (proto.cls(), b"CLS\n"),
        (proto.pub("done", b"hello"), b"PUB done\n\x00\x00\x00\x05hello"),
        (proto.dpub("later", 2.5, b"hi"), b"DPUB later 2500\n\x00\x00\x00\x02hi"),
    ],
)
def test_commands_match_the_spec(command: bytes, wire: bytes) -> None:
    assert command == wire


def test_mpub_body_is_count_then_sized_messages() -> None:
    # [4-byte body size][4-byte num messages][4-byte size][msg]...
    body = b"\x00\x00\x00\x02" + b"\x00\x00\x00\x01a" + b"\x00\x00\x00\x02bc"
    assert proto.mpub("t", [b"a", b"bc"]) == b"MPUB t\n" + len(body).to_bytes(4, "big") + body
    with pytest.raises(ValueError):
        proto.mpub("t", [])


def test_negative_rdy_is_refused() -> None:
    with pytest.raises(ValueError):
        proto.rdy(-1)


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "topic/1", "é", "t#ephemeral#ephemeral"])
def test_bad_names_are_config_errors_before_nsqd_drops_the_connection(name: str) -> None:
    with pytest.raises(ConfigError, match="invalid"):
        proto.sub(name, "c")


def test_response_frame() -> None:
    wire = b"\x00\x00\x00\x06" + b"\x00\x00\x00\x00" + b"OK"
    assert proto.frame_size(wire[:4]) == 6
    assert proto.decode_frame(wire[4:]) == proto.Frame(proto.FrameType.RESPONSE, b"OK")
    assert proto.encode_frame(proto.FrameType.RESPONSE, b"OK") == wire


def test_heartbeat_and_close_wait_are_responses() -> None:
    heartbeat = b"\x00\x00\x00\x0f\x00\x00\x00\x00_heartbeat_"
    assert proto.decode_frame(heartbeat[4:]).data == proto.HEARTBEAT
    assert proto.encode_frame(proto.FrameType.RESPONSE, b"CLOSE_WAIT")[8:] == proto.CLOSE_WAIT


def test_error_frames_split_code_and_text_and_know_which_are_fatal() -> None:
    wire = b"\x00\x00\x00\x20\x00\x00\x00\x01E_FIN_FAILED FIN 0a1b failed"
    frame = proto.decode_frame(wire[4 : 4 + proto.frame_size(wire[:4])])
    assert frame.type is proto.FrameType.ERROR
    error = proto.NsqServerError.from_frame(frame.data)
    assert (error.code, error.text, error.fatal) == ("E_FIN_FAILED", "FIN 0a1b failed", False)
    for code in ("E_REQ_FAILED", "E_TOUCH_FAILED"):
        assert not proto.NsqServerError(code, "").fatal
    for code in ("E_INVALID", "E_BAD_TOPIC", "E_BAD_BODY", "E_PUB_FAILED", "E_AUTH_FAILED"):
        assert proto.NsqServerError(code, "").fatal


def test_message_frame() -> None:
    # [8-byte timestamp ns][2-byte attempts][16-byte hex id][body]
    data = (1_700_000_000_123_456_789).to_bytes(8, "big") + b"\x00\x03" + MSG_ID + b'{"type":"t"}'
    wire = (4 + len(data)).to_bytes(4, "big") + b"\x00\x00\x00\x02" + data
    frame = proto.decode_frame(wire[4:])
    assert frame.type is proto.FrameType.MESSAGE
    message = proto.decode_message(frame.data)
    assert message == proto.MessageFrame(1_700_000_000_123_456_789, 3, MSG_ID, b'{"type":"t"}')
    assert proto.encode_message(message) == wire


@pytest.mark.parametrize("header", [b"\x00\x00\x00\x03", b"\xff\xff\xff\xff", b"HTTP"])
def test_impossible_frame_sizes_are_protocol_errors(header: bytes) -> None:
    with pytest.raises(proto.ProtocolError, match="impossible size"):
        proto.frame_size(header)


def test_unknown_frame_type_and_short_message_are_protocol_errors() -> None:
    with pytest.raises(proto.ProtocolError, match="unknown frame type 7"):
        proto.decode_frame(b"\x00\x00\x00\x07")
    with pytest.raises(proto.ProtocolError, match="26-byte header"):
        proto.decode_message(b"\x00" * 25)


def test_lookup_answers_old_and_new_give_the_nsqd_addresses() -> None:
    new = {
        "channels": ["c"],
        "producers": [
            {"broadcast_address": "n1", "hostname": "h1", "tcp_port": 4150, "http_port": 4151},
        ],
    }
    assert parse_nodes(new) == [Node("n1", 4150, 4151)]
    assert parse_nodes({"producers": "nonsense"}) == []


def test_options_from_url() -> None:
    options = NsqOptions.from_url(
        "nsq://a:4150,b?max_in_flight=5&msg_timeout=90s&heartbeat_interval=10s&tls=1&backoff=0&requeue_delay=2s"
    )
    assert options.nsqd == (("a", 4150), ("b", 4150)) and options.lookupd == ()
    assert (options.max_in_flight, options.msg_timeout, options.heartbeat_interval) == (
        5,
        90.0,
        10.0,
    )
    assert options.tls and options.backoff == 0 and options.requeue_delay == 2.0
    lookup = NsqOptions.from_url("nsqlookup://l1,l2:4200?lookup_interval=15s")
    assert lookup.lookupd == (("l1", 4161), ("l2", 4200)) and lookup.lookup_interval == 15.0


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("nsq://a?max_inflight=3", "unknown option 'max_inflight'"),
        ("nsq://a?msg_timeout=500ms", "at least 1s"),
        ("nsq://", "names no host"),
        ("nsq://a?tls=maybe", "not a boolean"),
    ],
)
def test_bad_urls_say_what_to_change(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        NsqOptions.from_url(url)
