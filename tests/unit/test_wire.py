"""nettrust_core.wire: names decoded exactly from wire bytes, or refused."""

import time

import pytest

from nettrust_core.wire import WireNameError, decode_name, decode_rdata_name, encode_name


def test_plain_names_and_root():
    assert decode_name(b"\x03www\x07Example\x03COM\x00") == "www.example.com"
    assert decode_name(b"\x00") == ""
    assert decode_name(b"\x04_sip\x04_tcp\x01x\x00") == "_sip._tcp.x"


def test_255_byte_name_keeps_its_last_label():
    # 3 labels of 63 + one of 61 = 4 + 248 + 1 (root) + ... = 255 bytes on the wire
    labels = ["a" * 63, "b" * 63, "c" * 63, "d" * 61]
    wire = encode_name(".".join(labels))
    assert len(wire) == 255
    assert decode_name(wire) == ".".join(labels)        # Unbound's dnameAsStr gives '&' here


@pytest.mark.parametrize("wire,why", [
    (b"", "empty"),
    (b"\x03www", "truncated"),
    (b"\x05ab\x00", "truncated"),
    (b"\x03www\x00\x00", "after the root"),
    (b"\xc0\x0c", "length byte"),
    (b"\x40" + b"a" * 64 + b"\x00", "length byte"),
    (b"\x03a.b\x07example\x00", "cannot match"),          # a dot inside a label
    (b"\x03a b\x00", "cannot match"),
    (b"\x02\xc3\xa9\x00", "cannot match"),                # UTF-8 bytes
    (b"\x01*\x07example\x00", "cannot match"),
    (b"\x03a\x00b\x00", "cannot match"),
    (b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63 + b"\x3f" + b"d" * 63 + b"\x00",
     "257 bytes"),
])
def test_hostile_or_truncated_input_is_refused(wire, why):
    with pytest.raises(WireNameError, match=why):
        decode_name(wire)


def test_non_bytes_is_refused():
    with pytest.raises(WireNameError):
        decode_name("www.example.com")


def test_rdata_name_checks_rdlength():
    rd = encode_name("target.example")
    assert decode_rdata_name(len(rd).to_bytes(2, "big") + rd) == "target.example"
    with pytest.raises(WireNameError, match="rdlength"):
        decode_rdata_name((len(rd) + 1).to_bytes(2, "big") + rd)
    with pytest.raises(WireNameError):
        decode_rdata_name(b"\x00")


def test_every_byte_value_in_a_label():
    ok = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
    for b in range(256):
        wire = b"\x01" + bytes([b]) + b"\x00"
        if b in ok:
            assert decode_name(wire) == chr(b).lower()
        else:
            with pytest.raises(WireNameError):
                decode_name(wire)


def test_fuzz_never_raises_anything_else():
    import random
    rnd = random.Random(10)
    for _ in range(20000):
        wire = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 40)))
        try:
            out = decode_name(wire)
        except WireNameError:
            continue
        assert encode_name(out) == wire.lower()


def test_fast_enough_for_the_answer_path():
    wire = encode_name("www.some-cdn.example.com")
    n = 20000
    t = time.perf_counter()
    for _ in range(n):
        decode_name(wire)
    per = (time.perf_counter() - t) / n
    assert per < 20e-6, f"{per * 1e6:.1f} µs per name"


def test_the_fast_decode_agrees_with_the_label_by_label_one():
    """decode_name's one-match fast path gives the same name, or the same error, as the
    label-by-label decoder on random wire bytes (valid, upper case, bad bytes, dots, truncated)."""
    import random

    from nettrust_core.wire import _decode_name_checked

    rng = random.Random(17)

    def wire() -> bytes:
        if rng.random() < 0.3:
            return bytes(rng.randrange(256) for _ in range(rng.randint(0, 12)))
        out = b""
        for _ in range(rng.randint(0, 4)):
            n = rng.randint(0, 8)
            out += bytes([n]) + bytes(rng.choice(b"abcXYZ09-_.\x80 \x00\x41\x3f") for _ in range(n))
        return out + (b"\x00" if rng.random() < 0.8 else b"")

    def outcome(decode, w):
        try:
            return "ok", decode(w)
        except WireNameError as exc:
            return "error", str(exc)

    seen = set()
    for _ in range(20_000):
        w = wire()
        fast, checked = outcome(decode_name, w), outcome(_decode_name_checked, w)
        assert fast == checked, w
        seen.add(fast[0])
    assert seen == {"ok", "error"}          # both kinds were exercised
