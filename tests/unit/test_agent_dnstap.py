"""The agent's hand-written decoders: Frame Streams handshake, dnstap protobuf, DNS responses.

Frames are built here the way Unbound builds them (protobuf fields by hand, DNS messages with
dnspython); hostile input must only ever raise the decoders' own errors.
"""

import random
import socket
import struct
import threading

import dns.message
import dns.rrset
import pytest

from nettrust_core.agent import framestream as fs
from nettrust_core.agent.dnstap import (CLIENT_RESPONSE, DecodeError, decode_frame,
                                        parse_response)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    if isinstance(value, tuple):                    # ("fixed32", n)
        return _varint(number << 3 | 5) + struct.pack("<I", value[1])
    return _varint(number << 3) + _varint(value)


def dnstap_frame(response: bytes, client: str = "192.0.2.7", port: int = 5353) -> bytes:
    family = socket.AF_INET6 if ":" in client else socket.AF_INET
    message = (_field(1, CLIENT_RESPONSE) + _field(2, 1 if family == socket.AF_INET else 2)
               + _field(3, 1) + _field(4, socket.inet_pton(family, client)) + _field(6, port)
               + _field(12, 1_700_000_000) + _field(13, ("fixed32", 500_000_000))
               + _field(14, response))
    return _field(15, 1) + _field(14, message)


def response(qname="c1.example", qtype="A") -> bytes:
    query = dns.message.make_query(qname, qtype)
    resp = dns.message.make_response(query)
    resp.answer.append(dns.rrset.from_text("c1.example.", 300, "IN", "CNAME", "www.example."))
    resp.answer.append(dns.rrset.from_text("www.example.", 120, "IN", "A", "198.51.100.1",
                                           "198.51.100.2"))
    resp.answer.append(dns.rrset.from_text("www.example.", 60, "IN", "TXT", '"skip me"'))
    return resp.to_wire()                          # names compressed


def test_client_response_decodes_to_client_question_and_answers():
    msg = decode_frame(dnstap_frame(response()))
    assert (msg.kind, msg.client, msg.client_port) == (CLIENT_RESPONSE, "192.0.2.7", 5353)
    assert msg.response_time == pytest.approx(1_700_000_000.5)
    answer = parse_response(msg.response)
    assert (answer.qname, answer.qtype, answer.rcode) == ("c1.example", 1, 0)
    assert sorted(answer.records) == [("c1.example", 5, 300, "www.example"),
                                      ("www.example", 1, 120, "198.51.100.1"),
                                      ("www.example", 1, 120, "198.51.100.2")]
    assert sorted(answer.addresses) == ["198.51.100.1", "198.51.100.2"]
    assert answer.min_ttl == 120


def test_ipv6_client_and_nxdomain():
    query = dns.message.make_query("nosuch.example", "AAAA")
    resp = dns.message.make_response(query)
    resp.set_rcode(3)
    msg = decode_frame(dnstap_frame(resp.to_wire(), client="2001:db8::5"))
    answer = parse_response(msg.response)
    assert msg.client == "2001:db8::5"
    assert (answer.qname, answer.qtype, answer.rcode, answer.records) == ("nosuch.example", 28, 3, ())


def test_compression_loop_and_truncation_are_decode_errors():
    wire = bytearray(response())
    loop = bytes(wire[:12]) + b"\xc0\x0c" + b"\x00\x01\x00\x01"      # name points at itself
    with pytest.raises(DecodeError):
        parse_response(loop)
    for cut in (5, 13, 20, len(wire) - 3):
        with pytest.raises(DecodeError):
            parse_response(bytes(wire[:cut]))


def test_random_garbage_never_raises_anything_else():
    rng = random.Random(7)
    good = dnstap_frame(response())
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[:rng.randrange(len(data))]
        try:
            msg = decode_frame(bytes(data))
            if msg is not None and msg.response is not None:
                parse_response(msg.response)
        except (DecodeError, ValueError):
            pass


def _peer(sock, frames, content_type=fs.CONTENT_TYPE, replies=None):
    """Unbound's side of a bidirectional Frame Streams session."""
    sock.sendall(fs.control_frame(fs.READY, content_type))
    reply = sock.recv(4096)
    if replies is not None:
        replies.append(reply)
    if not reply:
        return
    sock.sendall(fs.control_frame(fs.START))
    for f in frames:
        sock.sendall(struct.pack(">I", len(f)) + f)
    sock.sendall(fs.control_frame(fs.STOP, None))
    replies.append(sock.recv(4096))


def test_framestream_handshake_frames_and_finish():
    ours, theirs = socket.socketpair()
    replies = []
    t = threading.Thread(target=_peer, args=(theirs, [b"one", b"two" * 1000], fs.CONTENT_TYPE,
                                             replies))
    t.start()
    reader = fs.FrameReader(ours)
    reader.handshake()
    assert list(reader.frames()) == [b"one", b"two" * 1000]
    t.join(5)
    assert fs.parse_control(replies[0][8:]) == (fs.ACCEPT, [fs.CONTENT_TYPE])
    assert fs.parse_control(replies[1][8:])[0] == fs.FINISH and reader.finished


def test_framestream_refuses_other_content_and_huge_frames():
    ours, theirs = socket.socketpair()
    t = threading.Thread(target=_peer, args=(theirs, [], b"protobuf:other"))
    t.start()
    with pytest.raises(fs.ProtocolError):
        fs.FrameReader(ours).handshake()
    ours.close()
    t.join(5)
    ours, theirs = socket.socketpair()
    theirs.sendall(struct.pack(">I", fs.MAX_FRAME + 1))
    with pytest.raises(fs.ProtocolError):
        list(fs.FrameReader(ours).frames())
