"""Unit tests for the resolver-side guards: security mapping, rate limiter, local names,
Unbound settings problems, privilege check, cache invalidation over a control socket."""

import os
import socket
import tempfile
import threading
import time

from nettrust_core.answer import Security
from nettrust_core.cache_invalidation import NoInvalidation, UnboundControlInvalidator
from nettrust_core.config import parse_config
from nettrust_core.local_names import LocalNames
from nettrust_core.ratelimit import RateLimiter
from nettrust_core.unbound_settings import (SettingsError, conf_from_cmdline, control_socket,
                                            privilege_problem, problems)

import pytest


def test_unknown_security_statuses_are_bogus():
    assert Security.from_unbound(5) is Security.SECURE
    assert Security.from_unbound(3) is Security.INSECURE
    assert Security.from_unbound(4) is Security.BOGUS        # sec_status_secure_sentinel_fail
    assert Security.from_unbound(99) is Security.BOGUS
    assert Security.from_unbound(None) is Security.BOGUS


def test_rate_limiter_bursts_then_counts_suppressed():
    now = [0.0]
    rl = RateLimiter(interval=10, burst=2, clock=lambda: now[0])
    assert rl.allow("k") == (True, 0)
    assert rl.allow("k") == (True, 0)
    assert [rl.allow("k")[0] for _ in range(100)] == [False] * 100
    assert rl.allow("other") == (True, 0)
    now[0] += 10
    assert rl.allow("k") == (True, 100)
    assert rl.allow("k") == (False, 0)


def test_local_names_only_declared_owners():
    ln = LocalNames.from_config(['"printer.lan. 300 IN A 10.0.0.5"', "Router.LAN A 10.0.0.1",
                                 "portal.corp. IN A 10.1.1.1"], [("portal.corp.", "redirect")])
    assert ln.declared("printer.lan") and ln.declared("router.lan")
    assert ln.declared("x.portal.corp")
    assert not ln.declared("www.example.com")      # an RPZ / auth-zone answer


CONFIG = parse_config('[grants]\nmin_ttl = "30s"\nmax_ttl = "1h"\n[firewall]\nresolver_user = "nobody"\n')


def test_problems_name_each_setting_and_the_fix():
    good = {"module-config": ["python validator iterator"], "serve-expired": ["no"],
            "cache-min-ttl": ["0"], "cache-max-ttl": ["3600"], "username": [""],
            "qname-minimisation": ["no"]}
    assert problems(good, CONFIG) == []
    bad = {"module-config": ["respip python validator iterator"], "serve-expired": ["yes"],
           "cache-min-ttl": ["300"], "cache-max-ttl": ["86400"], "username": ["unbound"],
           "qname-minimisation": ["yes"]}
    found = problems(bad, CONFIG)
    assert len(found) == 6
    assert 'set module-config: "python validator iterator"' in found[0]
    assert "serve-expired: no" in found[1]
    assert "cache-min-ttl: 0" in found[2]
    assert "cache-max-ttl: 3600" in found[3]
    assert "qname-minimisation: no" in found[4]
    assert 'username: ""' in found[5]
    assert problems({"module-config": ["python  validator   iterator"]}, CONFIG) == []
    assert problems({"module-config": ["python respip validator iterator"]}, CONFIG) == []
    assert problems({"module-config": ["python validator iterator cachedb"]}, CONFIG)


def test_control_socket_only_a_local_one():
    assert control_socket({"control-enable": ["yes"], "control-interface": ["127.0.0.1", "/run/x.ctl"]}) == "/run/x.ctl"
    assert control_socket({"control-enable": ["no"], "control-interface": ["/run/x.ctl"]}) is None
    assert control_socket({"control-enable": ["yes"], "control-interface": ["127.0.0.1"]}) is None


def test_conf_path_from_cmdline():
    assert conf_from_cmdline(["unbound", "-d", "-c", "/etc/u.conf"]) == "/etc/u.conf"
    assert conf_from_cmdline(["unbound", "-d"]) == "/etc/unbound/unbound.conf"
    with pytest.raises(SettingsError, match="absolute"):
        conf_from_cmdline(["unbound", "-c", "u.conf"])


def test_privilege_problem():
    import pwd
    nobody = pwd.getpwnam("nobody").pw_uid
    assert privilege_problem(CONFIG, nobody, 1 << 12) is None
    why = privilege_problem(CONFIG, 0, ~0)
    assert "runs as 'root' (uid 0)" in why and "resolver_user" in why and "Start Unbound as 'nobody'" in why
    assert "CAP_NET_ADMIN" in privilege_problem(CONFIG, nobody, 0)
    open_cfg = parse_config('[firewall]\nresolver_user = ""\n')
    assert privilege_problem(open_cfg, 0, ~0) is None


def test_no_invalidation_does_nothing():
    NoInvalidation().invalidate(["a.example"])


def test_control_invalidator_speaks_unbounds_protocol_and_drops_when_full():
    """A fake Unbound control socket (a unix listener recording commands): the real one is
    exercised in tests/integration/test_security_resolver.py."""
    path = os.path.join(tempfile.mkdtemp(), "ctl")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(16)
    got = []

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            data = b""
            while not data.endswith(b"\n"):
                chunk = c.recv(100)
                if not chunk:
                    break
                data += chunk
            got.append(data)
            c.sendall(b"ok\n")
            c.close()

    threading.Thread(target=serve, daemon=True).start()
    inv = UnboundControlInvalidator(path, queue_size=4)
    inv.invalidate(["a.example", "b.example", "bad name\nflush_zone .", "c.example"])
    assert inv.counts["dropped"] == 1
    inv.start()
    deadline = time.monotonic() + 5
    while inv.counts["flushed"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    inv.stop()
    srv.close()
    assert got == [b"UBCT1 flush a.example\n", b"UBCT1 flush b.example\n", b"UBCT1 flush c.example\n"]
    full = UnboundControlInvalidator(path, queue_size=2)
    t = time.perf_counter()
    full.invalidate([f"n{i}.example" for i in range(1000)])
    assert time.perf_counter() - t < 0.1
    assert full.counts == {"queued": 2, "flushed": 0, "dropped": 998, "failed": 0}


def test_local_names_read_from_conf_and_includes(tmp_path):
    inc = tmp_path / "conf.d"
    inc.mkdir()
    (inc / "a.conf").write_text('server:\n  local-data: "nas.home. IN A 10.0.0.9"  # my NAS\n'
                                '  local-zone: "portal.corp." redirect\n'
                                '  local-data: "portal.corp. A 10.1.1.1"\n')
    main = tmp_path / "unbound.conf"
    main.write_text(f'server:\n    include: "{inc}/*.conf"\n    # local-data: "commented.out A 10.0.0.1"\n'
                    '    local-data: \'quoted.lan A 10.0.0.2\'\nrpz:\n    name: "rpz.local"\n')
    ln = LocalNames.from_conf_file(str(main))
    assert ln.declared("nas.home") and ln.declared("quoted.lan") and ln.declared("a.portal.corp")
    assert not ln.declared("commented.out") and not ln.declared("rpz.local")
    assert not LocalNames.from_conf_file(str(tmp_path / "missing.conf")).declared("nas.home")
