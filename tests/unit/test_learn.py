"""``nettrust learn``: the collapsing rules, and a recorded day of traffic (written through the
real statistics store) turned into a snippet that ``nettrust check`` accepts as policy."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from nettrust_core.agent import stats_view
from nettrust_core.agent.learn import collapse, propose, to_toml
from nettrust_core.agent.store import StatsStore
from nettrust_core.config import parse_config


def patterns(used, **kw):
    return [e.pattern for e in collapse({n: 1 for n in used}, **kw)]


def test_three_siblings_become_one_label_wildcard_two_do_not():
    assert patterns(["a.cdn.example.net", "b.cdn.example.net", "c.cdn.example.net"]) == \
        ["*.cdn.example.net"]
    assert patterns(["a.cdn.example.net", "b.cdn.example.net"]) == \
        ["a.cdn.example.net", "b.cdn.example.net"]
    assert patterns(["a.cdn.example.net", "b.cdn.example.net"], siblings=2) == ["*.cdn.example.net"]


def test_many_entries_under_two_parents_become_any_depth_below_the_registrable_domain():
    used = ["www.example.com", "api.example.com", "x.img.example.com", "y.img.example.com",
            "z.img.example.com"]
    assert patterns(used) == ["**.example.com"]
    # the apex is not covered by **. and stays listed
    assert patterns(used + ["example.com"]) == ["example.com", "**.example.com"]
    # three siblings under ONE parent stay *.parent (no reason to widen)
    assert patterns(["a.img.example.com", "b.img.example.com", "c.img.example.com"]) == \
        ["*.img.example.com"]


def test_never_collapses_across_public_suffixes_or_tenants():
    # names directly below a public suffix are registrable domains themselves: no *.com
    assert patterns(["a.com", "b.com", "c.com"]) == ["a.com", "b.com", "c.com"]
    # github.io is a public suffix (private section): tenants stay apart
    assert patterns(["x.github.io", "y.github.io", "z.github.io"]) == \
        ["x.github.io", "y.github.io", "z.github.io"]
    assert patterns(["a.b.co.uk", "c.b.co.uk", "d.b.co.uk"]) == ["*.b.co.uk"]


def test_entries_carry_their_names_and_grant_counts():
    entries = collapse({"a.cdn.example.net": 3, "b.cdn.example.net": 1, "c.cdn.example.net": 2,
                        "one.example.org": 7})
    by = {e.pattern: e for e in entries}
    assert by["*.cdn.example.net"].grants == 6 and len(by["*.cdn.example.net"].names) == 3
    assert by["one.example.org"].comment() == "learned: 7 grants"
    assert "3 names" in by["*.cdn.example.net"].comment()


def record_day(path: str, now: float) -> None:
    """A day of traffic through the real store API: queries, grants, a blocked name, refused
    attempts to an answered address and to a bare one."""
    store = StatsStore(path)
    store.open()
    names = ["www.example.com", "api.example.com"] + [f"i{k}.img.example.com" for k in range(4)] \
        + [f"n{k}.push.example.net" for k in range(3)] + ["only.example.org", "example.org"]
    for hour in range(24):
        ts = now - 86400 + hour * 3600
        for k, name in enumerate(names):
            address = f"198.51.100.{k + 1}"
            store.put("query", {"ts": ts, "client": "10.0.0.2", "qname": name, "qtype": 1,
                                "rcode": 0, "outcome": "granted", "reason": "allowed",
                                "source": "resolved", "chain": [name], "addresses": [address],
                                "ttl": 300})
            store.put("grant", {"ts": ts, "client": "10.0.0.2", "qname": name,
                                "address": address, "timeout": 310, "chain": [name]})
        store.put("query", {"ts": ts, "client": "10.0.0.2", "qname": "ads.tracker.test",
                            "qtype": 1, "rcode": 3, "outcome": "blocked", "reason": "denied",
                            "source": "blocked", "chain": ["ads.tracker.test"], "addresses": []})
        for dest in ("203.0.113.77", "198.51.100.1"):
            store.put("event", {"ts": ts, "kind": "unauthorized", "destination": dest,
                                "port": 443, "protocol": "tcp", "hook": "output", "uid": 1000,
                                "user": "alice", "verdict": "would refuse"})
        # a DNS bypass attempt: refused whatever reachable.hosts says, so never proposed
        store.put("event", {"ts": ts, "kind": "unauthorized", "destination": "192.0.2.53",
                            "port": 53, "protocol": "udp", "hook": "output", "uid": 1000,
                            "user": "alice", "verdict": "refused"})
    # older than --since: must not be proposed
    store.put("grant", {"ts": now - 30 * 86400, "client": "10.0.0.2", "qname": "old.example.info",
                        "address": "192.0.2.1", "timeout": 60})
    assert store.flush() > 0


def test_a_recorded_day_becomes_a_snippet_nettrust_check_accepts(tmp_path):
    db = str(tmp_path / "stats.db")
    now = time.time()
    record_day(db, now)
    conn = stats_view.connect(db)
    try:
        proposal = propose(conn, stats_view.since("7d", now))
    finally:
        conn.close()
    snippet = to_toml(proposal, now)
    config = parse_config(snippet, "learned.toml")
    # grouped by registrable domain (com.example, net.example, org.example), apex first
    assert list(config.policy.allow) == ["**.example.com", "*.push.example.net", "example.org",
                                         "only.example.org"]
    assert "old.example.info" not in snippet and "tracker" not in snippet
    # every proposed line says it was learned
    start = snippet.index("allow = [")
    lines = snippet[start:snippet.index("\n]", start)].splitlines()[1:]
    assert len(lines) == 4 and all("# learned:" in line for line in lines)
    # the bare address is listed apart, commented out; the answered one is not a bare address,
    # nor is a resolver reached around ours (port 53)
    assert [b.address for b in proposal.bare] == ["203.0.113.77"]
    assert '#     "203.0.113.77",  # learned: 24 attempts (would refuse) to tcp/443, by alice' \
        in snippet
    assert config.reachable.hosts == ()
    # with allowlist mode the proposal is a whole policy; the real CLI checks it
    path = tmp_path / "nettrust.toml"
    path.write_text('[general]\nmode = "allowlist"\n' + snippet)
    out = subprocess.run([sys.executable, "-m", "nettrust_core.cli", "check", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "allowlist mode" in out.stdout and "4 allow" in out.stdout
    # and the CLI twin prints the same snippet from the database
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[stats]\ndatabase = "{db}"\n')
    cli = subprocess.run([sys.executable, "-m", "nettrust_core.cli", "-c", str(cfg), "learn",
                          "--since", "7d", "--json"], capture_output=True, text=True, check=True)
    assert [e["pattern"] for e in json.loads(cli.stdout)["allow"]] == list(config.policy.allow)


def test_a_broken_snippet_would_be_refused_by_check(tmp_path):
    """Control: check does refuse a bad pattern, so the acceptance above means something."""
    with pytest.raises(Exception, match="wildcard|pattern"):
        parse_config('[policy]\nallow = ["a.*.example.com"]\n', "bad.toml")
