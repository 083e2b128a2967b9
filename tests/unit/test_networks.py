"""Address classes: never-grantable ranges, rebinding targets, IPv4 embedded in IPv6 formats."""

import ipaddress

import dns.message
import pytest

from nettrust_core.answer import Answer, Security, Source
from nettrust_core.authorizer import Authorizer
from nettrust_core.config import ConfigError, parse_config
from nettrust_core.firewall.recording import RecordingBackend
from nettrust_core.networks import LOCAL, NEVER, PUBLIC, AddressClasses, nat64_ipv4
from nettrust_core.policy import Outcome

ip = ipaddress.ip_address
CLASSES = AddressClasses([ipaddress.ip_network("2001:db8:64::/96"),
                          ipaddress.ip_network("2001:db8:6400::/40")])


def teredo(server: str, client: str) -> str:
    value = (0x20010000 << 96) | (int(ip(server)) << 64) | (int(ip(client)) ^ 0xFFFFFFFF)
    return str(ipaddress.IPv6Address(value))


def nat64(prefix: str, length: int, v4: str) -> str:
    """RFC 6052 §2.2 layouts, written independently of the code under test (byte positions)."""
    p = bytearray(ipaddress.IPv6Address(prefix).packed)
    b = ip(v4).packed
    positions = {32: [4, 5, 6, 7], 40: [5, 6, 7, 9], 48: [6, 7, 9, 10], 56: [7, 9, 10, 11],
                 64: [9, 10, 11, 12], 96: [12, 13, 14, 15]}[length]
    for pos, byte in zip(positions, b, strict=True):
        p[pos] = byte
    return str(ipaddress.IPv6Address(bytes(p)))


NEVER_CASES = ["224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1", "0.1.2.3",
               "192.88.99.1", "ff02::1", "ff0e::1", "fec0::1", "100::1", "2001:10::1",
               "2001:20::1", "5f00::1", "::1:0:0:0:1",
               # IPv4 non-unicast reached through every translation format
               "64:ff9b::224.0.0.1", "::ffff:0:255.255.255.255", "::ffff:239.1.1.1",
               "2002:e000:0001::1", teredo("198.51.100.1", "224.0.0.5"),
               "::240.0.0.1", nat64("2001:db8:64::", 96, "224.1.2.3")]
LOCAL_CASES = ["10.0.0.1", "127.0.0.1", "192.168.1.1", "172.16.0.1", "100.64.0.1",
               "169.254.169.254", "192.0.0.8", "::1", "fd00::1", "fe80::1",
               "64:ff9b::10.0.0.1", "64:ff9b::127.0.0.1", "::ffff:0:192.168.0.1",
               "::ffff:127.0.0.1", "::10.1.2.3", "2002:0a00:0001::1", "2002:7f00:0001::1",
               teredo("198.51.100.1", "192.168.1.10"), teredo("10.0.0.1", "198.51.100.7"),
               nat64("2001:db8:64::", 96, "10.0.0.1"), nat64("2001:db8:6400::", 40, "10.2.3.4")]
PUBLIC_CASES = ["198.51.100.1", "8.8.8.8", "203.0.113.5", "198.18.0.1", "2001:db8::1",
                "2606:4700::1111", "64:ff9b::8.8.8.8", "2002:0808:0808::1",
                teredo("198.51.100.1", "203.0.113.9"), "::ffff:203.0.113.5",
                nat64("2001:db8:64::", 96, "8.8.4.4"), nat64("2001:db8:6400::", 40, "9.9.9.9")]


@pytest.mark.parametrize("addr", NEVER_CASES)
def test_never_granted_classes(addr):
    assert CLASSES.classify(ip(addr))[0] == NEVER


@pytest.mark.parametrize("addr", LOCAL_CASES)
def test_local_classes_include_embedded_private_ipv4(addr):
    assert CLASSES.classify(ip(addr))[0] == LOCAL


@pytest.mark.parametrize("addr", PUBLIC_CASES)
def test_public_controls(addr):
    assert CLASSES.classify(ip(addr)) == (PUBLIC, None)


@pytest.mark.parametrize("addr", [nat64("64:ff9b:1::", 48, "10.9.8.7"),
                                  nat64("64:ff9b:1::", 96, "127.0.0.1"),
                                  nat64("64:ff9b:1::", 64, "192.168.7.7"),
                                  nat64("64:ff9b:1::", 96, "8.8.8.8"),
                                  nat64("64:ff9b:1:abcd::", 96, "8.8.8.8")])
def test_unconfigured_local_use_nat64_is_refused(addr):
    """Its layout is the operator's choice, so its IPv4 is unknown until the prefix is configured."""
    assert CLASSES.classify(ip(addr))[0] == LOCAL


def test_configured_local_use_prefix_is_read_with_its_own_layout():
    classes = AddressClasses([ipaddress.ip_network("64:ff9b:1:abcd::/96")])
    assert classes.classify(ip(nat64("64:ff9b:1:abcd::", 96, "8.8.8.8"))) == (PUBLIC, None)
    assert classes.classify(ip(nat64("64:ff9b:1:abcd::", 96, "10.0.0.1")))[0] == LOCAL


@pytest.mark.parametrize("length", [32, 40, 48, 56, 64, 96])
def test_nat64_layouts_follow_rfc_6052(length):
    addr = nat64("2001:db8:100::", length, "192.0.2.33")
    assert nat64_ipv4(int(ip(addr)), length) == int(ip("192.0.2.33"))


def auth_for(text=""):
    a = Authorizer(parse_config(text), RecordingBackend())
    a.start()
    return a


def aaaa(name, *addrs, source=Source.RESOLVED, rtype="AAAA"):
    rrs = [f"{name}. 300 IN {rtype} {a}" for a in addrs]
    text = "\n".join(["id 1", "opcode QUERY", "rcode NOERROR", "flags QR RD RA", ";QUESTION",
                      f"{name}. IN {rtype}", ";ANSWER", *rrs])
    return Answer.from_dns_message(dns.message.from_text(text), Security.INSECURE, source=source)


@pytest.mark.parametrize("addr", [a for a in NEVER_CASES + LOCAL_CASES if ":" in a])
def test_authorizer_grants_none_of_them_and_the_public_one_beside_them(addr):
    a = auth_for('[policy]\nnat64_prefixes = ["2001:db8:64::/96", "2001:db8:6400::/40"]\n')
    d = a.authorize(aaaa("pub.fw.test", addr, "2001:db8:100::7"))
    assert [str(g.address) for g in d.grants] == ["2001:db8:100::7"]
    assert [str(r[0]) for r in d.verdict.refused] == [str(ip(addr))]


def test_never_granted_even_from_local_data_or_rebinding_allow():
    a = auth_for('[policy]\nrebinding_allow = ["pub.fw.test"]\nlocal_zones = ["lan"]\n')
    for answer in (aaaa("pub.fw.test", "ff02::1", "64:ff9b::224.0.0.1"),
                   aaaa("x.lan", "fec0::1", source=Source.LOCAL),
                   aaaa("pub.fw.test", "224.0.0.251", "255.255.255.255", rtype="A")):
        d = a.authorize(answer)
        assert d.verdict.outcome is Outcome.NOT_GRANTED, answer
        assert a.backend.batches == []
    # the control: rebinding_allow still lets a private embedded address through
    d = a.authorize(aaaa("pub.fw.test", "64:ff9b::10.0.0.1"))
    assert d.verdict.outcome is Outcome.GRANTED


def test_deny_networks_apply_to_the_embedded_ipv4():
    a = auth_for('[policy]\ndeny_networks = ["198.51.100.0/24"]\n')
    d = a.authorize(aaaa("pub.fw.test", "64:ff9b::198.51.100.9", "2002:c633:6409::1",
                         "64:ff9b::203.0.113.1"))
    assert [str(g.address) for g in d.grants] == ["64:ff9b::cb00:7101"]
    assert all("denied network 198.51.100.0/24" in why for _a, why in d.verdict.refused)


@pytest.mark.parametrize("value", ['"2001:db8::/33"', '"10.0.0.0/8"', '"2001:db8::1/96"'])
def test_nat64_prefix_must_be_an_rfc_6052_ipv6_prefix(value):
    with pytest.raises(ConfigError) as exc:
        parse_config(f"[policy]\nnat64_prefixes = [{value}]\n")
    assert "nat64_prefixes" in str(exc.value)


@pytest.mark.parametrize("text", ["0.0.0.0", "192.0.2.1", "255.255.255.255", "::", "2001:db8::1",
                                  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::ffff:192.0.2.1"])
def test_packed_address_is_the_constructors_address(text):
    """The answer path's addresses from wire bytes (constructor-free where this Python allows)
    equal, hash and print as ipaddress's own, and only the right length is accepted."""
    from nettrust_core.networks import FAST_ADDRESSES, packed_address
    assert FAST_ADDRESSES                       # this Python: the fast path is the one used
    want = ipaddress.ip_address(text)
    got = packed_address(want.packed, len(want.packed))
    assert (type(got), got, hash(got), str(got), got.packed) == (
        type(want), want, hash(want), str(want), want.packed)
    assert {got: 1}[want] == 1 and got.is_global == want.is_global
    with pytest.raises(ValueError):
        packed_address(want.packed, 20 - len(want.packed))


def test_address_keys_round_trip_and_the_families_never_share_one():
    """The host tracker's int keys: one per address, IPv4 and IPv6 apart (0.0.0.1 and ::1 have the
    same integer), back to the constructor's address."""
    from nettrust_core.networks import address_key, key_address
    texts = ["0.0.0.0", "0.0.0.1", "192.0.2.1", "255.255.255.255", "::", "::1", "::ffff:192.0.2.1",
             "2001:db8::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]
    keys = [address_key(ipaddress.ip_address(t)) for t in texts]
    assert len(set(keys)) == len(texts)
    for text, key in zip(texts, keys, strict=True):
        back, want = key_address(key), ipaddress.ip_address(text)
        assert (type(back), back, hash(back), str(back)) == (type(want), want, hash(want),
                                                              str(want))
