"""Issue 16 without a kernel: namespace entries and per-namespace policy, the ctnetlink delete
and entry codecs, and the connection audit's choices (a FAKE conntrack listing and a FAKE
address list stand in for the kernel; the real ones: tests/integration/test_connections.py)."""

from __future__ import annotations

import ipaddress
import sys
from collections import Counter

import pytest

from nettrust_core.config import load_config
from nettrust_core.config.values import namespace_rule
from nettrust_core.firewall.namespaces import Member
from nettrust_core.firewall.netns import namespace_paths
from nettrust_core.firewall.recording import RecordingBackend
from nettrust_core.firewall.base import Grant
from nettrust_core.lifecycle import connections as cx
from nettrust_core.netlink import conntrack as ct
from nettrust_core.netlink.wire import NFGENMSG, NLMSGHDR, Message, attr, nested
from nettrust_core.patterns import PatternSet


def h16(v: int) -> bytes:
    return v.to_bytes(2, sys.byteorder)


def test_namespace_rule_parses_and_refuses_what_is_not_namespace_and_pattern():
    rule = namespace_rule("web **.example.com")
    assert (rule.namespace, rule.pattern, str(rule)) == ("web", "**.example.com", "web **.example.com")
    for bad in ("web", "web a.example b.example", ""):
        with pytest.raises(ValueError, match="NAMESPACE PATTERN"):
            namespace_rule(bad)


def test_config_namespaces_add_the_backend_and_refuse_it_without_namespaces(tmp_path):
    from nettrust_core.errors import ConfigError
    path = tmp_path / "n.toml"
    path.write_text('[firewall]\nbackends = ["nftables", "namespaces"]\n')
    with pytest.raises(ConfigError, match="needs firewall.namespaces"):
        load_config(path)
    path.write_text('[firewall]\nnamespaces = ["pod-*"]\nnamespace_allow = ["pod-1 **.a.test"]\n')
    fw = load_config(path).firewall
    assert fw.namespaces == ("pod-*",) and fw.namespace_allow[0].namespace == "pod-1"


def test_namespace_paths_globs_names_and_paths(tmp_path, monkeypatch):
    monkeypatch.setattr("nettrust_core.firewall.netns.NETNS_DIR", str(tmp_path))
    for name in ("pod-1", "pod-2", "web"):
        (tmp_path / name).write_text("")
    found = namespace_paths(["pod-*", "web", "missing", "/proc/1/ns/net"])
    assert found == [("pod-1", f"{tmp_path}/pod-1"), ("pod-2", f"{tmp_path}/pod-2"),
                     ("web", f"{tmp_path}/web"), ("/proc/1/ns/net", "/proc/1/ns/net")]


def test_per_namespace_policy_matches_question_or_chain_end():
    m = Member("web", "/x", (0, 0), None, PatternSet(["**.example.com"]))   # type: ignore[arg-type]
    assert m.wants("www.example.com")
    assert m.wants("alias.other.net>cdn.example.com")      # CNAME chain ending in an allowed name
    assert not m.wants("www.example.org") and not m.wants("")
    assert Member("any", "/y", (0, 0), None, None).wants("anything.test")  # type: ignore[arg-type]


def _entry(src: bytes, dst: bytes, proto: int, sport: int, dport: int, tcp_state: int | None):
    v4 = len(src) == 4
    ips = attr(ct.CTA_IP_V4_SRC if v4 else ct.CTA_IP_V6_SRC, src) + attr(
        ct.CTA_IP_V4_DST if v4 else ct.CTA_IP_V6_DST, dst)
    pr = (attr(ct.CTA_PROTO_NUM, bytes((proto,))) + attr(ct.CTA_PROTO_SRC_PORT, sport.to_bytes(2, "big"))
          + attr(ct.CTA_PROTO_DST_PORT, dport.to_bytes(2, "big")))
    body = nested(ct.CTA_TUPLE_ORIG, nested(ct.CTA_TUPLE_IP, ips), nested(ct.CTA_TUPLE_PROTO, pr))
    if tcp_state is not None:
        body += nested(ct.CTA_PROTOINFO, nested(ct.CTA_PROTOINFO_TCP,
                                                attr(ct.CTA_PROTOINFO_TCP_STATE, bytes((tcp_state,)))))
    payload = NFGENMSG.pack(2 if v4 else 10, 0, 0) + body
    data = NLMSGHDR.pack(16 + len(payload), 0x100, 0, 1, 0) + payload
    return Message(0x100, 0, 1, data, 16, len(data))


def test_parse_connection_and_delete_request_round_trip():
    msg = _entry(bytes([192, 0, 2, 2]), bytes([198, 51, 100, 91]), 6, 40000, 7, 3)
    conn = ct.parse_connection(msg)
    assert conn == ct.Connection(bytes([192, 0, 2, 2]), bytes([198, 51, 100, 91]), 6, 40000, 7, True)
    family, body = ct.delete_request(conn)
    assert family == ct.NFPROTO_IPV4
    # The delete names exactly the original tuple the dump reported.
    assert body == _entry(conn.src, conn.dst, 6, 40000, 7, None).data[20:]
    assert body.startswith(h16(4 + 20 + 28) + h16(ct.CTA_TUPLE_ORIG | 0x8000))   # ip 20, proto 28
    closing = ct.parse_connection(_entry(conn.src, conn.dst, 6, 40000, 7, 7))   # TIME_WAIT
    assert closing is not None and not closing.live


class FakeConntrack(cx.ConnectionAudit):
    """The audit with a FAKE conntrack listing (no kernel)."""

    entries: list = []

    def _connections(self):
        return [ct.parse_connection(m) for m in self.entries]


class Cfg:
    class lifecycle:
        terminate_unauthorized = False

    class firewall:
        hooks = ("output",)
        lan_networks = ()


def test_audit_keeps_only_outbound_ungranted_non_dns_non_static_live_connections(monkeypatch):
    me, peer = bytes([192, 0, 2, 2]), bytes([192, 0, 2, 77])
    a = lambda s: ipaddress.ip_address(s).packed                              # noqa: E731
    FakeConntrack.entries = [
        _entry(me, a("198.51.100.91"), 6, 40001, 7, 3),      # reported
        _entry(me, a("198.51.100.93"), 6, 40002, 7, 3),      # granted
        _entry(me, a("203.0.113.53"), 17, 40003, 53, None),  # DNS: the resolver's
        _entry(me, a("10.1.1.1"), 6, 40004, 22, 3),          # static (management network)
        _entry(peer, me, 6, 50000, 22, 3),                   # into this host (ssh): never
        _entry(me, a("198.51.100.92"), 6, 40005, 7, 7),      # TIME_WAIT: over
    ]
    monkeypatch.setattr(cx, "local_addresses", lambda: {ipaddress.ip_address("192.0.2.2")})
    backend = RecordingBackend()
    backend.grant([Grant(ipaddress.ip_address("198.51.100.93"), 60, "kept.fw.test")])
    audit = FakeConntrack(Cfg, backend, counters=Counter(),
                          static=[ipaddress.ip_network("10.0.0.0/8")])
    found = audit.audit()
    assert [str(f) for f in found] == ["tcp 192.0.2.2:40001 -> 198.51.100.91:7"]
    assert audit.counters["unauthorized_connections"] == 1 and not found[0].terminated
