"""The eBPF programs themselves: every one passes the verifier, and the XDP decision on crafted
frames through BPF_PROG_TEST_RUN (no interface, namespace or traffic: the kernel runs the
program on a buffer).  Needs root (CAP_BPF) and the built objects; maps are pinned on a private
bpffs that is unmounted afterwards.

The cgroup programs cannot be test-run (the kernel has no test_run for sock_addr programs):
tests/integration/test_ebpf_backend.py drives them with real connect() and sendto() calls.
"""

from __future__ import annotations

import ipaddress
import os
import struct
import time

import pytest

from ebpf_util import bpffs
from nettrust_core.firewall import ebpf_loader
from nettrust_core.firewall import ebpf_sys as sys_
from nettrust_core.firewall.base import Grant, RulesetSpec
from nettrust_core.firewall.ebpf import GRANT, STATS, EbpfBackend

XDP_DROP, XDP_PASS = 1, 2
CLIENT4, CLIENT6 = "192.168.7.10", "fd00:7::10"


@pytest.fixture
def loaded():
    """(backend, xdp program fd, pin dir) on a private bpffs, nothing attached."""
    with bpffs() as fs:
        pin = os.path.join(fs, "nt")
        spec = RulesetSpec(hooks=(), static_networks=(ipaddress.ip_network("10.99.0.0/16"),
                                                      ipaddress.ip_network("fd99::/32")))
        backend = EbpfBackend(spec, pin_path=pin)
        backend.ensure()                       # loads and pins, attaches nothing (no hooks)
        prog = ebpf_loader.load(backend._maps_dir(), backend.map_size)
        try:
            yield backend, prog.programs["nt_xdp"], pin
        finally:
            prog.close()
            backend.close()


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(src: str, dst: str, proto: int = 6, sport: int = 40000, dport: int = 443,
          icmp6_type: int | None = None) -> bytes:
    """Ethernet + IPv4/IPv6 + a TCP SYN / UDP header / ICMPv6 message."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if icmp6_type is not None:
        l4 = struct.pack("!BBHI", icmp6_type, 0, 0, 0) + bytes(16)
        proto = 58
    elif proto == 6:
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    else:
        l4 = struct.pack("!HHHH", sport, dport, 8 + 4, 0) + b"ping"
    if s.version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, proto, 0,
                         s.packed, d.packed)
        ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
        ethertype = 0x0800
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 255 if icmp6_type else 64,
                         s.packed, d.packed)
        ethertype = 0x86DD
    return bytes.fromhex("020000000002020000000001") + struct.pack("!H", ethertype) + ip + l4


def run(prog: int, data: bytes) -> int:
    return sys_.prog_test_run(prog, data)[0]


def test_every_program_passes_the_verifier_in_both_objects():
    with bpffs() as fs:
        for obj in ebpf_loader.OBJECTS:
            pin = os.path.join(fs, obj.replace(".", "_"))
            os.makedirs(pin)
            loaded = ebpf_loader.load(pin, 4096, objects=(obj,))
            try:
                assert set(loaded.programs) == set(ebpf_loader.PROGRAMS)
                assert all(fd > 0 for fd in loaded.programs.values()), loaded.programs
                assert loaded.conntrack == (obj == ebpf_loader.OBJECTS[0])
            finally:
                loaded.close()


def test_unknown_destination_dropped_granted_passes_expired_dropped_and_deleted(loaded):
    backend, prog, _pin = loaded
    for dst, client in (("203.0.113.5", CLIENT4), ("2001:db8::5", CLIENT6)):
        pkt = frame(client, dst)
        assert run(prog, pkt) == XDP_DROP
        backend.grant([Grant(ipaddress.ip_address(dst), 30)])
        assert run(prog, pkt) == XDP_PASS
        assert run(prog, frame(client, dst, proto=17, dport=4433)) == XDP_PASS   # UDP too
        # an entry whose deadline has passed (written directly: the backend never shortens)
        m = backend._map("allow4" if "." in dst else "allow6")
        key = ipaddress.ip_address(dst).packed
        m.update(key, GRANT.pack(time.monotonic_ns() - 1, 1000, 0))
        assert run(prog, pkt) == XDP_DROP
        assert m.lookup(key) is None, "an expired grant is deleted by the program that met it"
    stats = backend.stats()
    assert stats["expired_deleted"] == 2
    assert stats["drop_no_grant"] == 4
    assert set(stats) == set(STATS)


def test_permanent_entry_passes(loaded):
    backend, prog, _pin = loaded
    backend._map("allow4").update(ipaddress.ip_address("198.51.100.1").packed, GRANT.pack(0, 0, 0))
    assert run(prog, frame(CLIENT4, "198.51.100.1")) == XDP_PASS
    assert run(prog, frame(CLIENT4, "198.51.100.2")) == XDP_DROP     # control


def test_grant_never_shortened(loaded):
    backend, _prog, _pin = loaded
    a = ipaddress.ip_address("203.0.113.9")
    backend.grant([Grant(a, 300)])
    backend.grant([Grant(a, 5)])
    left = backend.lookup(a)
    assert left is not None and left > 290
    backend.grant([Grant(a, 600)])
    left = backend.lookup(a)
    assert left is not None and left > 590


def test_per_client_grant_is_for_that_client_only(loaded):
    backend, prog, _pin = loaded
    for client, other, dst in ((CLIENT4, "192.168.7.11", "203.0.113.7"),
                               (CLIENT6, "fd00:7::11", "2001:db8::7")):
        backend.grant([Grant(ipaddress.ip_address(dst), 30, client=ipaddress.ip_address(client))])
        assert run(prog, frame(client, dst)) == XDP_PASS
        assert run(prog, frame(other, dst)) == XDP_DROP
        left = backend.lookup_pair(ipaddress.ip_address(client), ipaddress.ip_address(dst))
        assert left is not None and 25 < left <= 30
        assert backend.lookup(ipaddress.ip_address(dst)) is None


def test_static_networks_control_traffic_and_non_ip_pass(loaded):
    _backend, prog, _pin = loaded
    assert run(prog, frame(CLIENT4, "10.99.4.4")) == XDP_PASS              # static network
    assert run(prog, frame(CLIENT6, "fd99:0:1::4")) == XDP_PASS
    assert run(prog, frame(CLIENT4, "10.98.4.4")) == XDP_DROP              # control: outside it
    assert run(prog, frame(CLIENT6, "fd99:1::4")) == XDP_DROP
    assert run(prog, frame("0.0.0.0", "255.255.255.255", 17, 68, 67)) == XDP_PASS   # DHCP
    assert run(prog, frame(CLIENT6, "2001:db8::1", 17, 546, 547)) == XDP_PASS      # DHCPv6
    assert run(prog, frame(CLIENT6, "2001:db8::1", icmp6_type=135)) == XDP_PASS     # NS
    assert run(prog, frame(CLIENT6, "2001:db8::1", icmp6_type=128)) == XDP_DROP     # echo: no
    arp = bytes.fromhex("ffffffffffff020000000001") + b"\x08\x06" + bytes(28)
    assert run(prog, arp) == XDP_PASS


def test_truncated_frames_dropped(loaded):
    _backend, prog, _pin = loaded
    full = frame(CLIENT4, "203.0.113.5")
    assert run(prog, full[:14 + 12]) == XDP_DROP                           # half an IPv4 header
    assert run(prog, frame(CLIENT6, "2001:db8::5")[:14 + 20]) == XDP_DROP


def test_local_address_passes(loaded):
    backend, prog, _pin = loaded
    backend._map("local4").update(ipaddress.ip_address("192.168.7.1").packed, b"\1")
    assert run(prog, frame(CLIENT4, "192.168.7.1", 17, 5353, 53)) == XDP_PASS
    assert run(prog, frame(CLIENT4, "192.168.7.2", 17, 5353, 53)) == XDP_DROP


def test_restart_adopts_pinned_maps(loaded):
    backend, prog, pin = loaded
    a = ipaddress.ip_address("203.0.113.77")
    backend.grant([Grant(a, 120)])
    again = EbpfBackend(backend.spec, pin_path=pin)
    again.ensure()
    try:
        left = again.lookup(a)
        assert left is not None and 110 < left <= 120
        assert [g.address for g in again.list_grants(own_only=True)] == [a]
        assert run(prog, frame(CLIENT4, str(a))) == XDP_PASS
    finally:
        again.close()


def test_revoke_and_flush(loaded):
    backend, prog, _pin = loaded
    a, b = ipaddress.ip_address("203.0.113.1"), ipaddress.ip_address("2001:db8::1")
    backend.grant([Grant(a, 60), Grant(b, 60)])
    backend.revoke([a])
    assert backend.lookup(a) is None and backend.lookup(b) is not None
    assert run(prog, frame(CLIENT4, str(a))) == XDP_DROP
    backend.flush_grants()
    assert backend.list_grants() == []


def test_remove_unpins_everything(loaded):
    backend, _prog, pin = loaded
    backend.remove()
    assert not os.path.exists(pin)
