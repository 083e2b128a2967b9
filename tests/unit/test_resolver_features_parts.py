"""Issue 14 in pieces: reverse names, PTR confirmation, local names, several upstreams."""

from __future__ import annotations

import ipaddress

import dns.message
import pytest

from nettrust_core.answer import Answer, Security, Source
from nettrust_core.authorizer import Authorizer
from nettrust_core.config import load_config
from nettrust_core.errors import ConfigError
from nettrust_core.firewall.recording import RecordingBackend
from nettrust_core.local_names import LocalNames, local_data_lines, read_hosts
from nettrust_core.reverse import Confirmer, confirmed_answer, ptr_targets, reverse_address
from nettrust_core.unbound_conf import render


def conf(tmp_path, text: str):
    path = tmp_path / "nettrust.toml"
    path.write_text(text)
    return load_config(path)


def message(text: str) -> dns.message.Message:
    return dns.message.from_text(text)


def ptr_answer(qname: str, *rrs: str) -> Answer:
    body = "\n".join(rrs)
    return Answer.from_dns_message(message(
        f"id 1\nopcode QUERY\nrcode NOERROR\nflags QR RD RA\n;QUESTION\n{qname}. IN PTR\n"
        f";ANSWER\n{body}\n"), client="127.0.0.1")


def forward(name: str, rtype: str, *rrs: str, rcode="NOERROR", security=Security.INSECURE):
    body = "\n".join(rrs)
    return Answer.from_dns_message(message(
        f"id 1\nopcode QUERY\nrcode {rcode}\nflags QR RD RA\n;QUESTION\n{name}. IN {rtype}\n"
        f";ANSWER\n{body}\n"), security)


# -- reverse names -----------------------------------------------------------------------------
@pytest.mark.parametrize("name,address", [
    ("10.100.51.198.in-addr.arpa", "198.51.100.10"),
    ("10.100.51.198.IN-ADDR.ARPA.", "198.51.100.10"),
    ("0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa", "2001:db8:100::10"),
])
def test_full_reverse_names_give_their_address(name, address):
    assert reverse_address(name) == ipaddress.ip_address(address)


@pytest.mark.parametrize("name", [
    "100.51.198.in-addr.arpa", "20.0-63.100.51.198.in-addr.arpa", "256.1.1.1.in-addr.arpa",
    "01.1.1.1.in-addr.arpa", "1.1.1.1.in-addr.arpa.example", "0.1.ip6.arpa",
    "x.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa", "www.example"])
def test_anything_else_is_no_address(name):
    assert reverse_address(name) is None


def test_ptr_targets_follow_rfc2317_cnames_and_ignore_stuffed_owners():
    a = ptr_answer("20.100.51.198.in-addr.arpa",
                   "20.100.51.198.in-addr.arpa. 300 IN CNAME 20.0-63.100.51.198.in-addr.arpa.",
                   "20.0-63.100.51.198.in-addr.arpa. 300 IN PTR www.sec.test.",
                   "99.100.51.198.in-addr.arpa. 300 IN PTR evil.test.")
    assert ptr_targets(a) == ["www.sec.test"]


# -- confirmation --------------------------------------------------------------------------------
def test_a_forward_answer_confirms_only_the_address_it_contains():
    ptr = ptr_answer("10.100.51.198.in-addr.arpa",
                     "10.100.51.198.in-addr.arpa. 60 IN PTR www.fw.test.")
    addr = ipaddress.ip_address("198.51.100.10")
    fwd = forward("www.fw.test", "A", "www.fw.test. 300 IN CNAME edge.fw.test.",
                  "edge.fw.test. 120 IN A 198.51.100.10", "edge.fw.test. 120 IN A 198.51.100.11")
    made = confirmed_answer(ptr, addr, "www.fw.test", fwd)
    assert made is not None and made.source is Source.CONFIRMED
    assert made.chain() == ("10.100.51.198.in-addr.arpa", "www.fw.test", "edge.fw.test")
    assert made.addresses() == [(addr, 120)]               # the forward answer's TTL, one address
    other = forward("www.fw.test", "A", "www.fw.test. 300 IN A 198.51.100.99")
    assert confirmed_answer(ptr, addr, "www.fw.test", other) is None
    assert confirmed_answer(ptr, addr, "www.fw.test",
                            forward("www.fw.test", "A", rcode="SERVFAIL")) is None


class Lookups:
    """A fake resolver (the real one is the integration test's): name -> forward answer."""

    def __init__(self, answers):
        self.answers, self.asked = answers, []

    def __call__(self, name, rtype):
        self.asked.append(name)
        return self.answers.get(name)


def granted(backend):
    return {g.address: g for batch in backend.batches for g in batch}


def confirmer(tmp_path, answers, extra=""):
    config = conf(tmp_path, '[policy]\ndeny = ["**.blocked.test"]\nrequire_dnssec = ["sec.test"]\n'
                  '[ptr]\nconfirm = true\n' + extra)
    backend = RecordingBackend()
    lookups = Lookups(answers)
    return Confirmer(Authorizer(config, backend), lookups, max_names=2), backend, lookups


def test_the_confirmer_grants_confirmed_secure_allowed_addresses_only(tmp_path):
    ok = forward("www.fw.test", "A", "www.fw.test. 300 IN A 198.51.100.10")
    insecure = forward("www.sec.test", "A", "www.sec.test. 300 IN A 198.51.100.10")
    c, backend, lookups = confirmer(tmp_path, {"www.fw.test": ok, "www.sec.test": insecure})
    name = "10.100.51.198.in-addr.arpa"
    # Denied name (never asked), then require_dnssec refuses the insecure answer.
    assert c.confirm(ptr_answer(name, f"{name}. 60 IN PTR www.blocked.test.",
                                f"{name}. 60 IN PTR www.sec.test.")) == []
    assert lookups.asked == ["www.sec.test"]
    assert granted(backend) == {}
    # Allowed and contained: granted, with the reverse name in the grant's comment.
    assert c.confirm(ptr_answer(name, f"{name}. 60 IN PTR www.fw.test.")) == [
        ipaddress.ip_address("198.51.100.10")]
    grant = granted(backend)[ipaddress.ip_address("198.51.100.10")]
    assert grant.comment.startswith(name) and grant.comment.endswith("www.fw.test")
    assert c.counters["ptr_confirmed"] == 1


def test_the_confirmer_asks_at_most_max_names(tmp_path):
    c, _, lookups = confirmer(tmp_path, {})
    name = "10.100.51.198.in-addr.arpa"
    c.confirm(ptr_answer(name, *(f"{name}. 60 IN PTR n{i}.fw.test." for i in range(6))))
    assert lookups.asked == ["n0.fw.test", "n1.fw.test"]


def test_submit_never_blocks_and_counts_what_it_drops(tmp_path):
    c, _, _ = confirmer(tmp_path, {})
    a = ptr_answer("10.100.51.198.in-addr.arpa")
    for _ in range(300):
        c.submit(a)                       # the thread is not running: the queue fills
    assert c.counters["ptr_dropped"] == 300 - c.queue.maxsize


# -- local names -----------------------------------------------------------------------------------
def test_local_names_and_a_hosts_file_render_as_local_data(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("# comment\n192.0.2.7 printer.lan scanner.lan\n2001:db8::7 printer.lan\n")
    config = conf(tmp_path, f'[local]\nhosts_file = "{hosts}"\nhosts_ttl = "1m"\n'
                  '[[local.names]]\nname = "Files.LAN."\naddresses = ["192.0.2.8"]\nttl = "30s"\n')
    lines = local_data_lines(config)
    assert lines == ['    local-data: "files.lan. 30 IN A 192.0.2.8"',
                     '    local-data: "printer.lan. 60 IN A 192.0.2.7"',
                     '    local-data: "printer.lan. 60 IN AAAA 2001:db8::7"',
                     '    local-data: "scanner.lan. 60 IN A 192.0.2.7"']
    include = tmp_path / "nettrust.conf"
    include.write_text(render(config, script="/x.py"))
    declared = LocalNames.from_conf_file(str(include))        # what the module reads back
    assert declared.declared("printer.lan") and declared.declared("files.lan")


def test_a_bad_hosts_line_is_named(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("192.0.2.7 ok.lan\nnot-an-address name.lan\n")
    with pytest.raises(ConfigError, match=r"hosts:2: 'not-an-address' is not an IPv4"):
        read_hosts(str(hosts), 60)


def test_local_names_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="addresses"):
        conf(tmp_path, '[[local.names]]\nname = "a.lan"\naddresses = []\n')
    with pytest.raises(ConfigError, match="loopback"):
        conf(tmp_path, '[ptr]\nresolver = "192.0.2.1"\n')


# -- several upstreams ---------------------------------------------------------------------------
def test_several_upstreams_render_as_one_forward_zone_that_keeps_probing(tmp_path):
    config = conf(tmp_path, '[upstream]\nmode = "forward"\ntls = true\n'
                  'servers = ["192.0.2.1#dns.example", "2001:db8::1@8853#dns.example"]\n')
    text = render(config, script="/x.py")
    assert "infra-keep-probing: yes" in text.split("forward-zone:")[0]
    assert "infra-host-ttl: 60" in text.split("forward-zone:")[0]       # upstream.down_for
    zone = text.split("forward-zone:")[1]
    assert "forward-addr: 192.0.2.1@853#dns.example" in zone
    assert "forward-addr: 2001:db8::1@8853#dns.example" in zone
    assert "forward-tls-upstream: yes" in zone
    recurse = conf(tmp_path, "")
    assert "infra-" not in render(recurse, script="/x.py")


# -- nettrust stats why ----------------------------------------------------------------------------
def test_why_names_the_reverse_lookup_and_the_forward_name_that_confirmed_it():
    import argparse

    from nettrust_core.agent import stats_view
    from nettrust_core.agent.stats_cli import _text
    grant = {"granted": 1.0, "expires": 2.0, "name": "10.100.51.198.in-addr.arpa", "client": None,
             "chain": "10.100.51.198.in-addr.arpa > www.fw.test", "rule": None, "timeout": 1.0}
    plain = dict(grant, name="www.fw.test", chain="www.fw.test")
    data = {"address": "198.51.100.10", "open": False, "expires": 2.0, "grants": [plain, grant],
            "answers": []}
    text = _text(argparse.Namespace(view="why"), data, stats_view)
    assert ("opened by reverse lookup of 10.100.51.198.in-addr.arpa, confirmed by www.fw.test"
            in text)
    data["grants"] = [plain]                      # control: an ordinary grant says nothing of it
    assert "reverse lookup" not in _text(argparse.Namespace(view="why"), data, stats_view)
