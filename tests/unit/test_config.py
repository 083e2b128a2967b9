import dataclasses
import ipaddress
import json
import pathlib
import textwrap
import tomllib

import pytest

from nettrust_core.config import (Config, FirewallConfig, GrantsConfig, LogConfig, PolicyConfig,
                                  ReachableConfig, SCHEMA, Upstream, UpstreamConfig,
                                  load_config, parse_config)
from nettrust_core.errors import ConfigError, NetTrustError
from nettrust_core.patterns import PatternSet, ZoneSet

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "conf" / "nettrust.toml"
ip = ipaddress.ip_address
net = ipaddress.ip_network


def parse(text: str) -> Config:
    return parse_config(textwrap.dedent(text), path="test.toml")


def refused(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value


# -- defaults ---------------------------------------------------------------------------------

def test_empty_file_is_a_default_denylist():
    config = parse("")
    assert config.path == "test.toml"
    assert config.mode == "denylist"
    assert config.upstream == UpstreamConfig(mode="recurse", servers=(), tls=False,
                                              sinkhole_addresses=(ip("0.0.0.0"), ip("::")))
    assert config.policy == PolicyConfig()
    assert config.policy.blocked_answer == "nxdomain"
    assert config.policy.rebinding_guard is True
    assert config.reachable == ReachableConfig(hosts=(), networks=(), private=False)
    assert config.grants == GrantsConfig(min_ttl=30.0, max_ttl=3600.0, grace=10.0)
    assert config.firewall == FirewallConfig(
        backends=("nftables",), table="nettrust", priority=0, action="reject", hooks=("output",),
        resolver_user="unbound", allow_dhcp=True, allow_icmpv6_nd=True, on_exit="keep")
    assert config.log == LogConfig(level="info", file=None)


def test_empty_sections_are_defaults():
    text = "".join(f"[{s}]\n" for s in ("general", "upstream", "policy", "reachable", "grants",
                                         "firewall", "log"))
    assert parse(text) == parse("")


def test_config_is_frozen():
    config = parse("")
    with pytest.raises(AttributeError):
        config.mode = "allowlist"
    with pytest.raises(AttributeError):
        config.grants.max_ttl = 1


# -- values -----------------------------------------------------------------------------------

FULL = """\
[general]
mode = "allowlist"

[upstream]
mode = "forward"
tls = true
servers = [
    "9.9.9.9#dns.quad9.net",
    "2620:fe::fe@8853#DNS.Quad9.net.",
]
sinkhole_addresses = ["146.112.61.104", "0.0.0.0"]

[policy]
allow = ["Example.COM.", "*.example.org", "**.bücher.de", "example.com"]
deny = ["**"]
deny_networks = ["192.0.2.0/24", "2001:db8::1"]
blocked_answer = "sinkhole"
require_dnssec = ["Bank.example."]
local_zones = ["home.arpa", "corp.example"]
rebinding_guard = false
rebinding_allow = ["nas.example.com"]

[reachable]
hosts = ["192.0.2.10", "2001:db8::10"]
networks = ["10.1.0.0/16", "203.0.113.7"]
private = true

[grants]
min_ttl = 5
max_ttl = "2h30m"
grace = "0s"

[firewall]
table = "egress_guard"
priority = "filter-10"
action = "drop"
hooks = ["forward", "output"]
lan_interfaces = ["lan0"]
resolver_user = ""
allow_dhcp = false
allow_icmpv6_nd = false
on_exit = "remove"

[log]
level = "debug"
file = "/var/log/nettrust.log"
"""


def test_every_value_is_converted():
    c = parse(FULL)
    assert c.mode == "allowlist"
    assert c.upstream.mode == "forward" and c.upstream.tls is True
    assert c.upstream.servers == (Upstream(ip("9.9.9.9"), 853, "dns.quad9.net"),
                                  Upstream(ip("2620:fe::fe"), 8853, "dns.quad9.net"))
    assert c.upstream.sinkhole_addresses == (ip("0.0.0.0"), ip("::"), ip("146.112.61.104"))
    p = c.policy
    assert p.allow == ("example.com", "*.example.org", "**.xn--bcher-kva.de")
    assert p.deny == ("**",)
    assert p.deny_networks == (net("192.0.2.0/24"), net("2001:db8::1/128"))
    assert p.blocked_answer == "sinkhole"
    assert p.require_dnssec == ("bank.example",)
    assert p.local_zones == ("home.arpa", "corp.example")
    assert p.rebinding_guard is False
    assert p.rebinding_allow == ("nas.example.com",)
    assert c.reachable.hosts == (ip("192.0.2.10"), ip("2001:db8::10"))
    assert c.reachable.networks == (net("10.1.0.0/16"), net("203.0.113.7/32"))
    assert c.reachable.private is True
    assert net("192.168.0.0/16") in c.reachable.effective_networks
    assert net("fc00::/7") in c.reachable.effective_networks
    assert net("100.64.0.0/10") in c.reachable.effective_networks
    assert c.grants == GrantsConfig(min_ttl=5.0, max_ttl=9000.0, grace=0.0)
    f = c.firewall
    assert (f.table, f.priority, f.action, f.hooks) == ("egress_guard", -10, "drop",
                                                        ("forward", "output"))
    assert f.resolver_user is None
    assert not (f.allow_dhcp or f.allow_icmpv6_nd)
    assert f.on_exit == "remove"
    assert c.log == LogConfig(level="debug", file="/var/log/nettrust.log")


def test_compiled_matchers_come_with_the_policy():
    p = parse(FULL).policy
    assert isinstance(p.allow_set, PatternSet) and isinstance(p.local_zones_set, ZoneSet)
    assert p.allow_set.matches("www.example.org") == "*.example.org"
    assert p.allow_set.matches("a.b.xn--bcher-kva.de") == "**.xn--bcher-kva.de"
    assert p.deny_set.matches("anything.net") == "**"
    assert p.rebinding_allow_set.matches("nas.example.com") == "nas.example.com"
    assert p.require_dnssec_set.matches("www.bank.example") == "bank.example"
    assert p.local_zones_set.matches("printer.home.arpa") == "home.arpa"
    assert not parse("").policy.allow_set


def test_private_networks_only_when_asked():
    assert parse("").reachable.effective_networks == ()
    c = parse('[reachable]\nnetworks = ["198.51.100.0/24"]\n')
    assert c.reachable.effective_networks == (net("198.51.100.0/24"),)


def test_server_ports_default_by_transport():
    c = parse('[upstream]\nmode = "forward"\nservers = ["9.9.9.9", "1.1.1.1@5353"]\n')
    assert [(s.port, s.tls_name) for s in c.upstream.servers] == [(53, None), (5353, None)]
    assert str(c.upstream.servers[0]) == "9.9.9.9@53"
    c = parse('[upstream]\nmode = "forward"\ntls = true\nservers = ["1.1.1.1#one.one.one.one"]\n')
    assert c.upstream.servers[0].port == 853
    assert str(c.upstream.servers[0]) == "1.1.1.1@853#one.one.one.one"


@pytest.mark.parametrize("written, number", [
    (0, 0), (-400, -400), (400, 400), ('"raw"', -300), ('"mangle"', -150), ('"filter"', 0),
    ('"security"', 50), ('"filter-10"', -10), ('"filter+5"', 5), ('"mangle - 5"', -155),
])
def test_priority(written, number):
    assert parse(f"[firewall]\npriority = {written}\n").firewall.priority == number


@pytest.mark.parametrize("written, seconds", [("45", 45.0), ('"45"', 45.0), ('"2m"', 120.0),
                                              ("1.5", 1.5), ('"1h30m"', 5400.0),
                                              ('"500ms"', 0.5)])
def test_durations(written, seconds):
    assert parse(f"[grants]\ngrace = {written}\n").grants.grace == seconds


def test_sections_may_be_written_any_toml_way():
    dotted = parse('policy.deny = ["a.example"]\ngrants.max_ttl = "2h"\n')
    inline = parse('policy = { deny = ["a.example"] }\ngrants = { max_ttl = "2h" }\n')
    headers = parse('[policy]\ndeny = ["a.example"]\n[grants]\nmax_ttl = "2h"\n')
    assert dotted == inline == headers


def test_to_dict_is_the_effective_config_and_loads_back():
    for config in (parse(""), parse(FULL)):
        data = config.to_dict()
        json.dumps(data)                                        # plain types only
        assert set(data) == set(SCHEMA)                         # every section
        assert parse_config(_to_toml(data), path=config.path) == config
    data = parse(FULL).to_dict()
    assert data["general"]["mode"] == "allowlist"
    assert data["grants"] == {"min_ttl": "5s", "max_ttl": "2h30m", "grace": "0s",
                              "max_per_name": 64, "max_per_set": 262144,
                              "max_per_domain": 4096, "max_per_client": 0,
                              "verify_interval": "2s"}
    assert data["upstream"]["servers"] == ["9.9.9.9@853#dns.quad9.net",
                                           "2620:fe::fe@8853#dns.quad9.net"]
    assert data["firewall"]["priority"] == -10
    assert data["firewall"]["resolver_user"] == ""


def _to_toml(data: dict) -> str:
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"


# -- the example file -------------------------------------------------------------------------

def test_example_file_loads_and_states_the_true_defaults():
    config = load_config(EXAMPLE)
    assert config == Config(path=str(EXAMPLE))
    assert config.to_dict() == parse("").to_dict()


def test_example_file_sets_every_key():
    written = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    expected = Config().to_dict()
    assert {s: set(v) for s, v in written.items()} == {s: set(v) for s, v in expected.items()}


def test_example_file_commented_examples_are_valid():
    """Every commented `key = ...` example in the file, uncommented, loads in its section."""
    section, checked = None, 0
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if line.startswith("[") and line.rstrip().endswith("]"):
            section = line.strip("[] ")
        stripped = line.lstrip("# ").rstrip()
        if section and line.startswith("#   ") and " = " in stripped \
                and stripped.split(" = ")[0].isidentifier():
            snippet = stripped
            index = number + 1
            while snippet.count("[") > snippet.count("]"):        # a multi-line example
                snippet += "\n" + lines[index].lstrip("# ")
                index += 1
            extra = ('mode = "forward"\n' if section == "upstream"
                     and not snippet.startswith("sinkhole") else "")
            if snippet.startswith("tls"):                    # shown with its servers
                snippet += "\n" + lines[number + 1].lstrip("# ")
            parse(f"[{section}]\n{extra}{snippet}\n")
            checked += 1
    assert checked >= 10


# -- files ------------------------------------------------------------------------------------

def test_load_config_reads_a_file(tmp_path):
    path = tmp_path / "n.toml"
    path.write_text('[general]\nmode = "allowlist"\n', encoding="utf-8")
    assert load_config(path).mode == "allowlist"
    assert load_config(str(path)).path == str(path)


def test_missing_file(tmp_path):
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.file == str(path)
    assert "cannot read" in info.value.message


def test_not_utf8(tmp_path):
    path = tmp_path / "n.toml"
    path.write_bytes(b'[general]\nmode = "deny\xfflist"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.file, info.value.line) == (str(path), 2)


def test_errors_are_nettrust_errors_with_file_line_and_key_in_the_text():
    err = refused('[grants]\nmax_ttl = "forever"\n')
    assert isinstance(err, NetTrustError)
    assert str(err).startswith("test.toml:2: grants.max_ttl: ")


# -- every refusal names the key and the line -----------------------------------------------------

def where(err: ConfigError) -> tuple:
    assert err.file == "test.toml"
    return err.key, err.line


def test_syntax_error_line():
    err = refused("""\
        [general]
        mode = "denylist"

        [policy]
        allow = ["a.com" "b.com"]
        """)
    assert where(err) == (None, 5)
    assert "syntax" in err.message and "column" in err.message


def test_syntax_error_duplicate_key():
    err = refused('[log]\nlevel = "info"\nlevel = "debug"\n')
    assert err.line == 3


def test_syntax_error_at_end_of_file():
    err = refused('[policy]\nallow = [\n  "a.com",\n')
    assert err.line == 3 and err.key is None


def test_unknown_key_with_suggestion():
    err = refused("""\
        [grants]
        min_ttl = "1m"
        max_tll = "2h"
        """)
    assert where(err) == ("grants.max_tll", 3)
    assert "'max_ttl'" in err.message


def test_key_in_the_wrong_section_is_pointed_home():
    err = refused('[policy]\nallow = []\nprivate = true\n')
    assert where(err) == ("policy.private", 3)
    assert "[reachable]" in err.message


def test_unknown_section_with_suggestion():
    err = refused('[general]\nmode = "denylist"\n\n[reachabel]\nhosts = []\n')
    assert where(err) == ("reachabel", 4)
    assert "[reachable]" in err.message


def test_key_before_any_section():
    err = refused('\nmode = "allowlist"\n')
    assert where(err) == ("mode", 2)
    assert "[general]" in err.message


def test_unknown_nested_table():
    err = refused('[policy]\nallow = []\n\n[policy.extra]\ndeny = []\n')
    assert where(err) == ("policy.extra", 4)


def test_unknown_key_in_an_inline_table():
    err = refused('[general]\nmode = "denylist"\ngrants = { min_ttl = "1m", maxttl = "1h" }\n')
    assert where(err) == ("general.grants", 3)          # inside [general], a key of its own
    err = refused('\ngrants = { min_ttl = "1m", maxttl = "1h" }\n')
    assert where(err) == ("grants.maxttl", 2)
    assert "'max_ttl'" in err.message


def test_element_of_a_multiline_array():
    err = refused("""\
        [policy]
        # allowed names
        allow = [
            "debian.org",
            "**.debian.org",   # mirrors

            # a bad one:
            "www.*.example.com",
            "example.net",
        ]
        """)
    assert where(err) == ("policy.allow[2]", 8)
    assert "www.*.example.com" in err.message


def test_element_of_a_dotted_key_array():
    err = refused('# top\npolicy.deny = [\n  "ok.com",\n  "bad..com"]\n'
                  '[general]\nmode = "denylist"\n')
    assert where(err) == ("policy.deny[1]", 4)


def test_element_of_an_inline_table_array():
    err = refused('reachable = { hosts = ["192.0.2.1",\n "not-an-ip"] }\n')
    assert where(err) == ("reachable.hosts[1]", 2)


def test_element_after_tricky_strings():
    err = refused('''\
        [upstream]
        sinkhole_addresses = [ "0.0.0.0", """
        ::""", '1.2.3.4', "[::1]" ]
        ''')
    assert where(err) == ("upstream.sinkhole_addresses[3]", 3)


def test_element_after_a_string_with_brackets_and_hashes():
    err = refused('[policy]\ndeny_networks = [\n  "10.0.0.0/8", # "x", ]\n  \'#]\',\n]\n')
    assert where(err) == ("policy.deny_networks[1]", 4)


def test_wrong_type_says_expected_and_found():
    err = refused('[reachable]\nprivate = "yes"\n')
    assert where(err) == ("reachable.private", 2)
    assert "expected a boolean" in err.message and 'found a string ("yes")' in err.message

    err = refused('[policy]\nallow = "example.com"\n')
    assert where(err) == ("policy.allow", 2)
    assert "expected an array" in err.message and "found a string" in err.message

    err = refused('[policy]\nallow = [\n  "a.com",\n  42,\n]\n')
    assert where(err) == ("policy.allow[1]", 4)
    assert "expected a string" in err.message and "found an integer (42)" in err.message

    err = refused('[general]\nmode = 1\n')
    assert "found an integer" in err.message

    err = refused('general = "allowlist"\n')
    assert where(err) == ("general", 1)
    assert "expected a table" in err.message

    err = refused('[grants]\ngrace = true\n')
    assert where(err) == ("grants.grace", 2) and "duration" in err.message

    err = refused('[firewall]\nallow_dhcp = 1\n')
    assert where(err) == ("firewall.allow_dhcp", 2) and "found an integer" in err.message


@pytest.mark.parametrize("text, key, line, words", [
    ('[general]\nmode = "allowlst"\n', "general.mode", 2, ['"allowlist"']),
    ('[upstream]\nmode = "stub"\n', "upstream.mode", 2, ['"recurse"', '"forward"']),
    ('[upstream]\nmode = "forward"\n', "upstream.servers", 2, ["server"]),
    ('[upstream]\nmode = "forward"\nservers = []\n', "upstream.servers", 3, ["server"]),
    ('[upstream]\nservers = ["9.9.9.9"]\n', "upstream.servers", 2, ["forward"]),
    ('[upstream]\ntls = true\n', "upstream.tls", 2, ["forward"]),
    ('[upstream]\nmode = "forward"\nservers = [\n "9.9.9.9",\n "dns.google",\n]\n',
     "upstream.servers[1]", 5, ["dns.google", "ADDRESS"]),
    ('[upstream]\nmode = "forward"\nservers = ["9.9.9.9@99999"]\n', "upstream.servers[0]", 3,
     ["port"]),
    ('[upstream]\nmode = "forward"\nservers = ["9.9.9.9@"]\n', "upstream.servers[0]", 3,
     ["port"]),
    ('[upstream]\nmode = "forward"\nservers = ["9.9.9.9#bad name"]\n', "upstream.servers[0]", 3,
     ["TLS name"]),
    ('[upstream]\nmode = "forward"\ntls = true\nservers = [\n "9.9.9.9#dns.quad9.net",\n'
     ' "1.1.1.1@853",\n]\n', "upstream.servers[1]", 6, ["TLS name"]),
    ('[upstream]\nsinkhole_addresses = ["0.0.0.0", "nowhere"]\n', "upstream.sinkhole_addresses[1]",
     2, ["nowhere"]),
    ('[policy]\ndeny = ["ok.com", "*bad.com"]\n', "policy.deny[1]", 2, ["*bad.com"]),
    ('[policy]\ndeny_networks = ["10.0.0.1/8"]\n', "policy.deny_networks[0]", 2, ["10.0.0.0/8"]),
    ('[policy]\ndeny_networks = ["10.0.0.0/33"]\n', "policy.deny_networks[0]", 2, ["CIDR"]),
    ('[policy]\nblocked_answer = "drop"\n', "policy.blocked_answer", 2, ['"nxdomain"']),
    ('[policy]\nrequire_dnssec = ["*.bank.example"]\n', "policy.require_dnssec[0]", 2,
     ["wildcard"]),
    ('[policy]\nlocal_zones = ["lan", "bad_zone!"]\n', "policy.local_zones[1]", 2, ["'!'"]),
    ('[policy]\nrebinding_allow = ["a.*"]\n', "policy.rebinding_allow[0]", 2, ["a.*"]),
    ('[reachable]\nhosts = ["192.0.2.0/24"]\n', "reachable.hosts[0]", 2, ["address"]),
    ('[reachable]\nnetworks = ["lan"]\n', "reachable.networks[0]", 2, ["lan"]),
    ('[grants]\nmin_ttl = "-5s"\n', "grants.min_ttl", 2, ["30s"]),
    ('[grants]\nmin_ttl = "1x"\n', "grants.min_ttl", 2, ["invalid duration"]),
    ('[grants]\nmin_ttl = "0s"\n', "grants.min_ttl", 2, ["1s"]),
    ('[grants]\nmin_ttl = "2h"\nmax_ttl = "1h"\n', "grants.min_ttl", 2, ["2h", "1h"]),
    ('[grants]\nmax_ttl = "8d"\n', "grants.max_ttl", 2, ["7d"]),
    ('[grants]\ngrace = "-1"\n', "grants.grace", 2, ["invalid duration"]),
    ('[grants]\ngrace = "30d"\n', "grants.grace", 2, ["7d"]),
    ('[firewall]\nbackends = ["iptables"]\n', "firewall.backends[0]", 2, ['"nftables"', '"recording"']),
    ('[firewall]\nbackends = []\n', "firewall.backends", 2, ["at least one"]),
    ('[firewall]\nbackends = ["nftables", "nftables"]\n', "firewall.backends[1]", 2, ["twice"]),
    ('[firewall]\nbackend = "nftables"\n', "firewall.backend", 2, ['backends = ["nftables"]']),
    ('[firewall]\ntable = "1bad"\n', "firewall.table", 2, ["table name"]),
    ('[firewall]\ntable = "my table"\n', "firewall.table", 2, ["table name"]),
    ('[firewall]\npriority = 401\n', "firewall.priority", 2, ["-400..400"]),
    ('[firewall]\npriority = "raw-101"\n', "firewall.priority", 2, ["-401"]),
    ('[firewall]\npriority = "nat"\n', "firewall.priority", 2, ['"filter-10"']),
    ('[firewall]\npriority = 1.5\n', "firewall.priority", 2, ["found a float"]),
    ('[firewall]\naction = "accept"\n', "firewall.action", 2, ['"reject"', '"drop"']),
    ('[firewall]\nhooks = []\n', "firewall.hooks", 2, ["at least one"]),
    ('[firewall]\nhooks = [\n "output",\n "input",\n]\n', "firewall.hooks[1]", 4, ['"input"']),
    ('[firewall]\nhooks = ["output", "forward", "output"]\n', "firewall.hooks[2]", 2, ["twice"]),
    ('[firewall]\nresolver_user = "un bound"\n', "firewall.resolver_user", 2, ["user name"]),
    ('[log]\nlevel = "verbose"\n', "log.level", 2, ['"debug"']),
    ('[log]\nfile = "nettrust.log"\n', "log.file", 2, ["absolute"]),
])
def test_refusals_name_key_and_line(text, key, line, words):
    err = refused(text)
    assert where(err) == (key, line)
    for word in words:
        assert word in err.message


def test_error_after_a_multiline_string():
    err = refused('''\
        [log]
        file = """
        """

        [firewall]
        table = "nettrust"

        action = "allow"
        ''')
    assert where(err) == ("firewall.action", 8)


def test_error_in_a_dotted_key_under_a_header():
    err = refused('[general]\nmode = "denylist"\n\n[policy]\nallow = []\n'
                  'extra.deep = ["x"]\n')
    assert where(err) == ("policy.extra", 6)


def test_error_in_a_quoted_key():
    err = refused('[firewall]\n"table" = "ok"\n\'action\' = "pass"\n')
    assert where(err) == ("firewall.action", 3)
    err = refused('[firewall]\n"odd key" = 1\n')
    assert where(err) == ('firewall."odd key"', 2)


def test_locator_follows_every_toml_layout():
    from nettrust_core.config.locate import locate
    text = textwrap.dedent('''\
        a = [
          { x = [1,
             2], y = "]" },
          [ "#", '"' ],
        ]
        [b]
        "c.d" . e = 1
        f = """a\\"""
        """
        g = 3
        [[h]]
        i = 1
        [[h]]
        i = [
          4]
        [h.j]
        k = 1
        ''')
    tomllib.loads(text)
    assert locate(text) == {
        ("a",): 1, ("a", 0): 2, ("a", 0, "x"): 2, ("a", 0, "x", 0): 2, ("a", 0, "x", 1): 3,
        ("a", 0, "y"): 3, ("a", 1): 4, ("a", 1, 0): 4, ("a", 1, 1): 4,
        ("b",): 6, ("b", "c.d"): 7, ("b", "c.d", "e"): 7, ("b", "f"): 8, ("b", "g"): 10,
        ("h",): 11, ("h", 0): 11, ("h", 0, "i"): 12, ("h", 1): 13, ("h", 1, "i"): 14,
        ("h", 1, "i", 0): 15, ("h", 1, "j"): 16, ("h", 1, "j", "k"): 17,
    }


def test_line_of_for_errors_found_after_loading():
    config = parse('[policy]\nallow = [\n  "a.com",\n  "b.com",\n]\n\n[firewall]\n'
                   'resolver_user = "unbound"\n')
    assert config.line_of("firewall.resolver_user") == 8
    assert config.line_of("policy.allow[1]") == 4
    assert config.line_of("firewall.table") == 7            # not written: its table's line
    assert config.line_of("grants.max_ttl") is None          # neither written
    assert Config().line_of("firewall.table") is None        # not loaded from text
    assert config == dataclasses.replace(config, source=None)   # not part of the value


# -- lifecycle, caps and exit modes (issue 4) ---------------------------------------------------

def test_lifecycle_defaults_and_values():
    from nettrust_core.config import LifecycleConfig
    assert parse("").lifecycle == LifecycleConfig()
    c = parse('[lifecycle]\nliveness = false\ncheck_interval = "30s"\nmax_lifetime = "2h"\n'
              'log_group = 9\nstrikes = 5\n[grants]\nmax_per_name = 8\nmax_per_set = 1000\n')
    assert (c.lifecycle.liveness, c.lifecycle.check_interval, c.lifecycle.max_lifetime) == (
        False, 30.0, 7200.0)
    assert (c.lifecycle.log_group, c.lifecycle.strikes) == (9, 5)
    assert (c.grants.max_per_name, c.grants.max_per_set) == (8, 1000)


@pytest.mark.parametrize("text,key,line", [
    ('[lifecycle]\ncheck_interval = "0s"\n', "lifecycle.check_interval", 2),
    ("[lifecycle]\n\nlog_group = 70000\n", "lifecycle.log_group", 3),
    ("[grants]\nmax_per_set = 0\n", "grants.max_per_set", 2),
    ('[grants]\nmax_per_name = "many"\n', "grants.max_per_name", 2),
    ('[firewall]\non_exit = "flush"\n', "firewall.on_exit", 2),
])
def test_lifecycle_and_cap_errors_name_key_and_line(text, key, line):
    with pytest.raises(ConfigError) as err:
        parse(text)
    assert (err.value.key, err.value.line) == (key, line)


@pytest.mark.parametrize("old,new", [("keep_ruleset_on_exit", 'on_exit = "remove"'),
                                     ("keep_grants_on_exit", 'on_exit = "drop-grants"')])
def test_replaced_exit_keys_say_what_to_write_instead(old, new):
    with pytest.raises(ConfigError) as err:
        parse(f"[firewall]\n{old} = false\n")
    assert err.value.key == f"firewall.{old}" and err.value.line == 2
    assert new in err.value.message


# -- firewall.instances: several Unbound processes, one index each ---------------------------------
@pytest.mark.parametrize("text,line", [("[firewall]\ninstances = 0\n", 2),
                                       ("[firewall]\n\ninstances = 65\n", 3),
                                       ('[firewall]\ninstances = "2"\n', 2)])
def test_instances_out_of_range_names_key_and_line(text, line):
    with pytest.raises(ConfigError) as err:
        parse(text)
    assert (err.value.key, err.value.line) == ("firewall.instances", line)


@pytest.mark.parametrize("instances,env,expected", [
    (1, {}, 0), (1, {"NETTRUST_INSTANCE": "0"}, 0), (2, {"NETTRUST_INSTANCE": "1"}, 1),
    (2, {}, "it is not set"), (2, {"NETTRUST_INSTANCE": "2"}, "it is '2'"),
    (2, {"NETTRUST_INSTANCE": "-1"}, "it is '-1'"), (2, {"NETTRUST_INSTANCE": "x"}, "it is 'x'")])
def test_instance_index_comes_from_the_environment_or_refuses(instances, env, expected):
    from nettrust_core.ruleset import instance_from_env
    config = parse(f"[firewall]\ninstances = {instances}\n")
    if isinstance(expected, int):
        assert instance_from_env(config, env) == expected
        return
    with pytest.raises(ConfigError) as err:
        instance_from_env(config, env)
    assert err.value.key == "firewall.instances" and err.value.line == 2
    assert "NETTRUST_INSTANCE must be one of 0..1" in err.value.message and expected in err.value.message


def test_unbound_include_for_several_instances_shares_the_port_single_threaded():
    from nettrust_core.unbound_conf import render
    one = render(parse(""), script="/m.py")
    two = render(parse("[firewall]\ninstances = 2\n"), script="/m.py")
    assert "so-reuseport" not in one and "num-threads" not in one
    assert "    num-threads: 1\n" in two and "    so-reuseport: yes\n" in two


# -- each key declared once (issue 11): the views below derive from nettrust_core.config.model --

README = EXAMPLE.parents[1] / "README.md"


def test_readme_reference_is_the_declaration():
    from nettrust_core.config import SECTIONS, reference
    text = README.read_text(encoding="utf-8")
    assert reference.readme_differences(text) == []
    rows = [line for line in text.splitlines() if line.startswith("| `")
            and text.index(reference.START) < text.index(line) < text.index(reference.END)]
    declared = [f"{s.name}.{k.name}" for s in SECTIONS for k in s.keys]
    assert [row.split("`")[1] for row in rows] == declared
    row = next(r for r in rows if r.startswith("| `grants.max_ttl`"))
    assert '`"1h"`' in row and "≤ 7d" in row and "duration" in row


def test_annotated_file_states_every_declared_key_with_its_default():
    from nettrust_core.config import reference
    text = EXAMPLE.read_text(encoding="utf-8")
    assert reference.annotated_differences(text) == []
    commented = [w for w in reference.written_keys(text) if w.commented]
    assert len(commented) >= 10 and all(w.value is not None for w in commented)


@pytest.mark.parametrize("change, complaint", [
    (lambda t: t.replace('max_ttl = "1h"\n', ""), 'grants.max_ttl: missing; write it in [grants] '
                                                  'with its default: max_ttl = "1h"'),
    (lambda t: t.replace('max_ttl = "1h"\n', '#   max_ttl = "1h"\n'), None),   # commented: fine
    (lambda t: t.replace('max_ttl = "1h"\n', '#   max_ttl = "2h"\n'), "grants.max_ttl: missing"),
    (lambda t: t.replace('max_ttl = "1h"\n', 'max_ttl = "2h"\n'),
     'grants.max_ttl: written as "2h", but the default is "1h"'),
    (lambda t: t.replace('grace = "10s"\n', 'grace = "10s"\n#   gracefull = 1\n'),
     "grants.gracefull: not a declared key (in a commented example)"),
    (lambda t: t.replace("[log]\n", '[log]\nformat = "json"\n'), "log.format: not a declared key"),
    (lambda t: t.replace("allow_dhcp = true\n", "")
     .replace("[log]\n", "[log]\nallow_dhcp = true\n"), "log.allow_dhcp: not a declared key"),
])
def test_annotated_file_check_sees_every_difference(change, complaint):
    """Controls for the test above: each kind of disagreement is reported."""
    from nettrust_core.config import reference
    problems = reference.annotated_differences(change(EXAMPLE.read_text(encoding="utf-8")))
    if complaint is None:
        assert problems == []
    else:
        assert any(complaint in p for p in problems), problems


def test_readme_check_sees_a_hand_edit_and_write_repairs_it(tmp_path):
    from nettrust_core.config import reference
    text = README.read_text(encoding="utf-8")
    edited = text.replace('| `"1h"` |', '| `"2h"` |', 1)
    assert edited != text and reference.readme_differences(edited) != []
    assert reference.readme_differences(text.replace(reference.START, "")) != []
    path = tmp_path / "README.md"
    path.write_text(edited, encoding="utf-8")
    assert reference.main(["--check", str(path)]) == 1
    assert reference.main(["--write", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == text
    assert reference.main(["--check", str(path), str(EXAMPLE)]) == 0


def test_each_key_is_one_declaration_that_every_view_agrees_with():
    from nettrust_core.config import SECTIONS
    defaults, empty = Config(), parse("")
    effective = empty.to_dict()
    assert SCHEMA == {s.name: tuple(k.name for k in s.keys) for s in SECTIONS}
    assert list(effective) == list(SCHEMA)
    for spec in SECTIONS:
        holder = defaults if spec.attr is None else getattr(defaults, spec.attr)
        assert list(effective[spec.name]) == list(SCHEMA[spec.name])
        for k in spec.keys:
            assert k.doc and "\n" not in k.doc, k.name
            assert getattr(holder, k.name) == k.value              # the dataclass default
            assert k.read(k.default, lambda name: None) == k.value  # the default as written
            written = effective[spec.name][k.name]                  # --effective reads back
            assert k.read(written, lambda name: None) == k.value


def test_a_value_refused_by_a_key_check_is_a_config_error_for_that_key():
    from nettrust_core.config.kinds import Invalid
    assert issubclass(Invalid, NetTrustError)
    err = refused('[stats]\nflush_interval = "2m"\n')
    assert where(err) == ("stats.flush_interval", 2) and "10ms and 1m" in err.message
    err = refused('[alerts]\nwebhook = "ftp://x"\n')
    assert where(err) == ("alerts.webhook", 2) and "URL" in err.message
    err = refused('[metrics]\nlisten = "localhost:9531"\n')
    assert where(err) == ("metrics.listen", 2) and "ADDRESS:PORT" in err.message
    assert parse('[metrics]\nlisten = "[::1]:9000"\n').metrics.address == "::1"
    assert parse('[metrics]\nlisten = "[::1]:9000"\n').metrics.port == 9000
