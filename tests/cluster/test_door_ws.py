"""The front door's WebSocket splice, byte level (no cluster): the frame tracker follows
frames however the bytes are cut, the first frame is read only once complete, and the
handshake sent to a shard is the client's own minus Host and extensions, with the
door's trace context in place of the client's. The splice end to end runs in
tests/cluster/test_frontdoor.py and test_cluster.py (failover: the 1012 close)."""

from __future__ import annotations

import base64
import hashlib
import os
import struct

from myriad.cluster.door_ws import FrameTracker, accept_head, close_frame, first_frame, handshake_request


def _frame(opcode: int, payload: bytes, mask: bool = False) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, (0x80 if mask else 0) | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, (0x80 if mask else 0) | 126)) + struct.pack("!H", n)
    else:
        head = bytes((0x80 | opcode, (0x80 if mask else 0) | 127)) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_the_tracker_follows_frames_however_the_stream_is_cut() -> None:
    stream = b"".join([_frame(1, b"x" * 5), _frame(1, b"y" * 300), _frame(2, b"z" * 70_000, mask=True),
                       _frame(1, b"")])
    for cut in (1, 2, 3, 7, 64, 1000, len(stream)):
        t = FrameTracker()
        for i in range(0, len(stream), cut):
            t.feed(stream[i:i + cut])
            assert not t.closed
        assert t.at_boundary, cut
    t = FrameTracker()
    t.feed(stream[:-1])
    assert not t.at_boundary  # the last frame's header is not complete
    t.feed(stream[-1:] + close_frame(1000, "bye")[:3])
    assert t.closed and not t.at_boundary
    t.feed(close_frame(1000, "bye")[3:])
    assert t.at_boundary


def test_first_frame_only_when_complete() -> None:
    head = b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
    data = head + _frame(1, b"hello" * 30)
    assert first_frame(data[:-1], len(head)) is None
    assert first_frame(data, len(head)) == (1, b"hello" * 30, len(data))
    opcode, payload, _ = first_frame(head + close_frame(4004, "moved"), len(head)) or (0, b"", 0)
    assert opcode == 8 and struct.unpack("!H", payload[:2])[0] == 4004 and payload[2:] == b"moved"


def test_the_refusal_handshake_is_valid_for_the_clients_key() -> None:
    key = base64.b64encode(os.urandom(16))
    expected = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    assert b"sec-websocket-accept: " + expected + b"\r\n" in accept_head(key)
    assert close_frame(4001, "invalid API key") == b"\x88\x11\x0f\xa1invalid API key"


def test_the_handshake_a_shard_gets() -> None:
    scope = {"target": b"/agents/tally/a?token=k",
             "headers": [(b"host", b"door:8787"), (b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
                         (b"sec-websocket-key", b"abc=="), (b"sec-websocket-version", b"13"),
                         (b"sec-websocket-extensions", b"permessage-deflate"), (b"traceparent", b"00-client-01")]}
    plain = handshake_request(scope, "10.0.0.2:4000", None)
    assert plain.startswith(b"GET /agents/tally/a?token=k HTTP/1.1\r\nhost: 10.0.0.2:4000\r\n")
    assert b"sec-websocket-key: abc==\r\n" in plain and b"traceparent: 00-client-01" in plain
    assert b"door:8787" not in plain and b"permessage-deflate" not in plain and plain.endswith(b"\r\n\r\n")
    traced = handshake_request(scope, "10.0.0.2:4000", {"traceparent": "00-door-01"})
    assert b"traceparent: 00-door-01\r\n" in traced and b"00-client-01" not in traced
