"""Blocklists and allowlists (issue 15): formats, the compact index, the loader, the watcher,
`nettrust lists update`'s comparison, the policy's use of them, canaries and bypass detection."""

import json
import os
import random
from collections import Counter

import pytest

from nettrust_core.config import parse_config
from nettrust_core.errors import ConfigError
from nettrust_core.lists import ListSpec, ListWatcher, Loader, loader_for
from nettrust_core.lists.bypass import bypass_kind, is_canary, recent_attempts
from nettrust_core.lists.formats import DEEP, EXACT, ONE, Entry, Problem, parse
from nettrust_core.lists.index import HashTable
from nettrust_core.lists.update import format_change, update
from nettrust_core.patterns import PatternSet
from nettrust_core.policy import Policy


def entries(fmt, text):
    return [i for i in parse(fmt, text.splitlines(True)) if isinstance(i, Entry)]


def problems(fmt, text):
    return [i for i in parse(fmt, text.splitlines(True)) if isinstance(i, Problem)]


# -- formats ---------------------------------------------------------------------------------
def test_hosts_format_names_exactly_with_lines_and_ignores_localhost():
    text = ("# comment\n0.0.0.0 ads.example tracker.example # trailing\n127.0.0.1 localhost\n"
            "::1 ip6-localhost\n\n0.0.0.0 Bücher.Example\n")
    assert entries("hosts", text) == [Entry(2, EXACT, "ads.example"),
                                      Entry(2, EXACT, "tracker.example"),
                                      Entry(6, EXACT, "xn--bcher-kva.example")]


def test_hosts_format_broken_lines_are_invalid_with_their_number():
    found = problems("hosts", "0.0.0.0 ok.example\nbroken\nnot-an-ip x.example\n0.0.0.0 a..b\n")
    assert [(p.line, p.invalid) for p in found] == [(2, True), (3, True), (4, True)]


def test_domains_format_and_patterns():
    text = "a.example\n*.one.example\n**.deep.example  # note\nbad name\n"
    assert entries("domains", text) == [Entry(1, EXACT, "a.example"), Entry(2, ONE, "one.example"),
                                        Entry(3, DEEP, "deep.example")]
    assert [p.line for p in problems("domains", text)] == [4]


def test_adblock_rules_exceptions_and_skipped_rules():
    text = ("[Adblock Plus 2.0]\n! title\n||ads.example^\n@@||ok.ads.example^\n|only.example^\n"
            "||imp.example^$important\nexample.org##.banner\n||x.example^$third-party\n"
            "/ads[0-9]+/\n||bad*glob.example^\n")
    got = entries("adblock", text)
    assert got == [Entry(3, EXACT, "ads.example"), Entry(3, DEEP, "ads.example"),
                   Entry(4, EXACT, "ok.ads.example", True), Entry(4, DEEP, "ok.ads.example", True),
                   Entry(5, EXACT, "only.example"),
                   Entry(6, EXACT, "imp.example"), Entry(6, DEEP, "imp.example")]
    found = problems("adblock", text)
    assert [(p.line, p.invalid) for p in found] == [(7, False), (8, False), (9, False), (10, True)]


RPZ = """$TTL 300
@ IN SOA localhost. root.localhost. (
        1 3600 600 86400 300 )  ; serial refresh ...
        IN NS localhost.
bad.example     CNAME .
*.wild.example  CNAME .
nodata.example  CNAME *.
pass.bad.example CNAME rpz-passthru.
local.example   A 192.0.2.1
drop.example.rpz.test. CNAME rpz-drop.
elsewhere.test. CNAME .
32.1.2.0.192.rpz-ip CNAME .
"""


def test_rpz_zone_read_as_qname_triggers():
    text = "$ORIGIN rpz.test.\n" + RPZ
    got = entries("rpz", text)
    assert got == [Entry(6, EXACT, "bad.example"), Entry(7, DEEP, "wild.example"),
                   Entry(8, EXACT, "nodata.example"), Entry(9, EXACT, "pass.bad.example", True),
                   Entry(10, EXACT, "local.example"), Entry(11, EXACT, "drop.example")]
    found = problems("rpz", text)
    assert [(p.line, p.invalid) for p in found] == [(12, True), (13, False)]


# -- index -----------------------------------------------------------------------------------
def test_hash_table_keeps_first_writer_and_counts_duplicates():
    t = HashTable([5, 9, 5, -3], [1, 2, 3, 4])
    assert (t.get(5), t.get(9), t.get(-3), t.get(7), len(t), t.duplicates) == (1, 2, 4, None, 3, 1)


def _index(tmp_path, fmt, text, action="deny", name="l"):
    path = tmp_path / f"{name}.txt"
    path.write_text(text)
    loader = Loader([ListSpec(name, str(path), fmt, action)])
    return loader.load()[0]


def test_index_agrees_with_pattern_set_on_random_names(tmp_path):
    rnd = random.Random(15)
    labels = ["a", "b", "c", "ads", "x1", "cdn"]
    pats = set()
    for _ in range(300):
        name = ".".join(rnd.choice(labels) for _ in range(rnd.randint(1, 4)))
        pats.add(rnd.choice(["", "*.", "**."]) + name)
    index = _index(tmp_path, "domains", "\n".join(sorted(pats)) + "\n")
    reference = PatternSet(sorted(pats))
    for _ in range(3000):
        name = ".".join(rnd.choice(labels) for _ in range(rnd.randint(1, 6)))
        found = index.match_deny(name)
        assert (found.pattern if found else None) == reference.matches(name), name


def test_match_names_list_file_line_and_category(tmp_path):
    path = tmp_path / "ads.txt"
    path.write_text("# ads\n\nads.example\n")
    index = Loader([ListSpec("ads", str(path), "domains", "deny", "ads")]).load()[0]
    m = index.match_deny("ads.example")
    assert (m.source.list, m.line, m.pattern) == ("ads", 3, "ads.example")
    assert m.rule == f"list ads, category ads ({path}:3: ads.example)"
    assert index.match_deny("www.ads.example") is None


# -- loader ----------------------------------------------------------------------------------
def test_broken_line_reported_while_the_rest_loads(tmp_path):
    path = tmp_path / "h"
    path.write_text("0.0.0.0 one.example\n0.0.0.0 bad!name\n0.0.0.0 two.example\n")
    index, [report] = Loader([ListSpec("h", str(path), "hosts")]).load()
    assert (report.entries, report.invalid) == (2, 1)
    assert report.problems[0][:2] == (2, "invalid")
    assert index.match_deny("two.example").line == 3


def test_reload_rereads_only_changed_files_and_keeps_last_good_on_error(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("a.example\n")
    b.write_text("b.example\n")
    loader = Loader([ListSpec("a", str(a), "domains"), ListSpec("b", str(b), "domains")])
    first, _ = loader.load()
    b.write_text("b2.example\n")
    second, reports = loader.load()
    assert [r.reloaded for r in reports] == [False, True]
    assert second.match_deny("b2.example") and not second.match_deny("b.example")
    assert first.match_deny("b.example")            # the old index is untouched (swapped whole)
    b.unlink()                  # the admin's timer mid-download, without a rename
    third, reports = loader.load()
    assert "keeping the version loaded before" in reports[1].error
    assert third.match_deny("b2.example")


def test_directory_of_files(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "1.txt").write_text("one.example\n")
    (d / "2.txt").write_text("two.example\n")
    (d / ".hidden").write_text("hidden.example\n")
    index, reports = Loader([ListSpec("d", str(d), "domains")]).load()
    assert len(reports) == 2 and index.match_deny("two.example").source.path == str(d / "2.txt")
    assert index.match_deny("hidden.example") is None


def test_max_entries_bounds_the_index_and_reports_where(tmp_path):
    path = tmp_path / "big"
    path.write_text("".join(f"n{i}.example\n" for i in range(100)))
    index, [report] = Loader([ListSpec("big", str(path), "domains")], max_entries=10).load()
    assert len(index) == 10 and report.refused == 90
    assert report.problems[0][0] == 11 and "lists_max_entries" in report.problems[0][2]


def test_watcher_swaps_the_index_when_a_file_changes(tmp_path):
    path = tmp_path / "l"
    path.write_text("old.example\n")
    loader = Loader([ListSpec("l", str(path), "domains")])
    box = {"index": loader.load()[0]}
    counters = Counter()
    watcher = ListWatcher(loader, lambda new: box.update(index=new), counters, interval=1)
    assert watcher.check() is False
    path.write_text("new.example\nbad!\n")
    os.utime(path, ns=(1, 1))                       # a changed signature even within one tick
    assert watcher.check() is True
    assert box["index"].match_deny("new.example") and not box["index"].match_deny("old.example")
    assert counters["lists_reloads"] == 1 and counters["lists_invalid_lines"] == 1


# -- config ----------------------------------------------------------------------------------
def test_config_lists_tables_and_errors_name_file_key_line():
    config = parse_config('[[policy.lists]]\npath = "/l/ads.txt"\nformat = "hosts"\n'
                          '[[policy.lists]]\npath = "/l/ok"\nformat = "domains"\naction = "allow"\n'
                          'name = "good"\n', path="n.toml")
    assert [(s.name, s.action) for s in config.policy.lists] == [("ads", "deny"), ("good", "allow")]
    assert config.to_dict()["policy"]["lists"][0] == {"name": "ads", "path": "/l/ads.txt",
                                                      "format": "hosts", "action": "deny"}
    bad = {'[[policy.lists]]\npath = "/l/a"\nformat = "host"\n': ("policy.lists[0].format", 3),
           '[[policy.lists]]\npath = "l/a"\nformat = "hosts"\n': ("policy.lists[0]", 1),
           '[[policy.lists]]\npath = "/l/a"\n': ("policy.lists[0]", 1),
           '[[policy.lists]]\npath = "/l/a"\nformat = "hosts"\n[[policy.lists]]\npath = "/m/a"\n'
           'format = "domains"\n': ("policy.lists[1]", 4),
           '[[policy.lists]]\npath = "/l/a"\nformat = "hosts"\nurl = "x"\n':
               ("policy.lists[0].url", 4)}
    for text, (key, line) in bad.items():
        with pytest.raises(ConfigError) as err:
            parse_config(text, path="n.toml")
        assert (err.value.file, err.value.key, err.value.line) == ("n.toml", key, line), text


# -- policy ----------------------------------------------------------------------------------
def _policy(tmp_path, mode, lists_text):
    (tmp_path / "deny.txt").write_text("||ads.example^\n@@||ok.ads.example^\n")
    (tmp_path / "allow.txt").write_text("good.example\n**.cdn.example\n")
    config = parse_config(f'[general]\nmode = "{mode}"\n' + lists_text.format(d=tmp_path))
    return Policy(config, loader_for(config).load()[0])


LISTS = ('[[policy.lists]]\npath = "{d}/deny.txt"\nformat = "adblock"\n'
         '[[policy.lists]]\npath = "{d}/allow.txt"\nformat = "domains"\naction = "allow"\n')


def test_policy_denylist_mode_with_lists(tmp_path):
    p = _policy(tmp_path, "denylist", LISTS)
    c = p.check_name("x.ads.example")
    assert not c.allowed and c.rule.startswith("list deny (") and c.rule.endswith(
        "deny.txt:1: **.ads.example)")
    assert p.check_name("ok.ads.example").allowed
    assert "deny.txt:2" in p.check_name("ok.ads.example").rule
    assert p.check_name("other.example").allowed


def test_policy_allowlist_mode_admits_exactly_the_allow_lists_names(tmp_path):
    p = _policy(tmp_path, "allowlist", LISTS)
    assert p.check_name("good.example").allowed
    assert "allow.txt:1" in p.check_name("good.example").rule
    assert p.check_name("a.b.cdn.example").allowed
    assert not p.check_name("cdn.example").allowed
    assert not p.check_name("www.good.example").allowed
    assert not p.check_name("other.example").allowed


def test_canary_names_blocked_by_default_and_switchable(tmp_path):
    p = Policy(parse_config(""))
    for name in ("use-application-dns.net", "mask.icloud.com", "mask-h2.icloud.com"):
        assert not p.check_name(name).allowed and is_canary(name)
    assert p.check_name("icloud.com").allowed
    off = Policy(parse_config("[policy]\ncanary_names = false\n"))
    assert off.check_name("use-application-dns.net").allowed
    allowlist = Policy(parse_config('[general]\nmode = "allowlist"\n[policy]\nallow = ["*"]\n'))
    assert not allowlist.check_name("mask.icloud.com").allowed


def test_canary_gets_nxdomain_even_when_blocked_answer_is_sinkhole():
    from nettrust_core.firewall.recording import RecordingBackend
    from nettrust_core.service import Service
    svc = Service(parse_config('[policy]\nblocked_answer = "sinkhole"\n'), RecordingBackend())
    assert svc.blocked_response("use-application-dns.net", 1) != svc.blocked_response("x.test", 1)
    nx = Service(parse_config(""), RecordingBackend())
    assert svc.blocked_response("use-application-dns.net", 1) == \
        nx.blocked_response("use-application-dns.net", 1)


# -- bypass ----------------------------------------------------------------------------------
def test_bypass_kind():
    assert bypass_kind("192.0.2.1", 853, "tcp") == "DoT"
    assert bypass_kind("1.1.1.1", 443, "tcp") == "DoH (Cloudflare)"
    assert bypass_kind("2001:4860:4860::8888", 443, "tcp") == "DoH (Google Public DNS)"
    assert bypass_kind("192.0.2.1", 443, "tcp") is None


def test_recent_attempts_read_from_the_agents_database(tmp_path):
    import sqlite3
    db = tmp_path / "s.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, ts REAL, kind TEXT, subject TEXT, "
                 "data TEXT)")
    rows = [(100.0, {"destination": "1.1.1.1", "port": 443, "bypass": "DoH (Cloudflare)",
                     "user": "alice"}),
            (101.0, {"destination": "1.1.1.1", "port": 443, "bypass": "DoH (Cloudflare)"}),
            (102.0, {"destination": "192.0.2.9", "port": 80})]
    conn.executemany("INSERT INTO events (ts, kind, data) VALUES (?, 'unauthorized', ?)",
                     [(ts, json.dumps(d)) for ts, d in rows])
    conn.commit()
    conn.close()
    got = recent_attempts(str(db), since=50, now=120.0)
    assert got["attempts"] == 2
    assert got["by_destination"][0]["users"] == ["alice"]


# -- nettrust lists update -------------------------------------------------------------------
def test_update_reports_added_removed_and_invalid_with_lines(tmp_path):
    path = tmp_path / "l.txt"
    path.write_text("a.example\nb.example\n")
    specs = (ListSpec("l", str(path), "domains"),)
    [first] = update(specs, str(tmp_path / "state"))
    assert first.first_run and first.entries == 2
    path.write_text("a.example\nbad name\nc.example\n")
    [second] = update(specs, str(tmp_path / "state"))
    assert second.added == [(3, "c.example")] and second.removed == ["b.example"]
    assert second.invalid == [(2, "one name per line expected, found 'bad name'")]
    text = "\n".join(format_change(second))
    assert f"{path}:2: invalid" in text and "+ c.example  (line 3)" in text and "- b.example" in text


# -- a reload revokes what the new lists deny -------------------------------------------------
def test_reload_revokes_grants_of_newly_denied_names_and_flushes_them(tmp_path):
    import dns.message
    from nettrust_core.answer import Answer, Security
    from nettrust_core.authorizer import Authorizer
    from nettrust_core.firewall.recording import RecordingBackend
    from nettrust_core.lists.enforce import revoke_newly_denied

    class Flushed:
        names: list = []

        def invalidate(self, names):
            self.names.extend(names)

    path = tmp_path / "l.txt"
    path.write_text("other.example\n")
    config = parse_config(f'[[policy.lists]]\npath = "{path}"\nformat = "domains"\n')
    backend, flushed = RecordingBackend(), Flushed()
    auth = Authorizer(config, backend, invalidator=flushed)
    loader = loader_for(config)
    auth.policy.lists = loader.load()[0]

    def ask(name, address):
        text = (f"id 1\nopcode QUERY\nrcode NOERROR\nflags QR RD RA\n;QUESTION\n{name} IN A\n"
                f";ANSWER\n{name} 300 IN A {address}\n")
        return auth.authorize(Answer.from_dns_message(dns.message.from_text(text),
                                                      Security.INSECURE))

    assert ask("ads.example", "192.0.2.10").grants and ask("ok.example", "192.0.2.11").grants
    assert revoke_newly_denied(auth) == 0                           # nothing newly denied
    path.write_text("other.example\nads.example\n")
    os.utime(path, ns=(5, 5))
    auth.policy.lists = loader.load()[0]
    assert revoke_newly_denied(auth) == 1
    assert [str(a) for a in backend.revoked] == ["192.0.2.10"]
    assert "ads.example" in flushed.names and "ok.example" not in flushed.names
    assert {str(g.address) for g in backend.list_grants()} == {"192.0.2.11"}
