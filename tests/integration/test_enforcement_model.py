"""Enforcement truth (issue 21): random operations against the real product, checked against a
plain model of the promise (:mod:`enforcement_model`) after every step.

The real parts: the lab (NSD serving signed, bogus and insecure zones), Unbound with the module,
nftables in the lab's namespaces.  Host mode: two clients on the host (h1 asks with dnspython
from this process, h2 runs ``dig``, a separate process; on a host every process shares the
grants).  Gateway mode: two client namespaces behind the lab's host namespace, per-client grants.

Operations: lookups (A, AAAA, CNAME chains, denied names and a chain into one, signed, bogus and
insecure names under require_dnssec, sinkholes and special addresses), floods of bulk names,
held connections (opened, kept, closed), time passing over TTL edges, ``nettrust flush``,
Unbound restarted or SIGKILLed and started again.  After every step each pair the model knows
is connected to (port 80 on the lab's internet namespace) and read from the kernel's sets; a
connect or a set member the model forbids is a leak, one it requires and is missing a false
block.  Held connections must keep echoing whatever happens to the grants.

Seeds: every run prints ``NT_MODEL_SEED=<n>``; set it to replay.  ``NT_MODEL_LONG=1`` runs long
(``NT_MODEL_EXAMPLES`` / ``NT_MODEL_STEPS`` override the counts), ``NT_MODEL_SHRINK=1`` lets
Hypothesis shrink a failure (slow: every replay sleeps in real time).
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import time

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import enforcement_model as em
import secnet
from conftest import require

pytestmark = pytest.mark.integration

TABLE = "ntmodel"
CLIENTS = {  # gateway mode: name: (gateway-side interface, client v4, gateway v4, client v6, gateway v6)
    "a": ("lana", "10.97.1.2", "10.97.1.1", "fd97:1::2", "fd97:1::1"),
    "b": ("lanb", "10.97.2.2", "10.97.2.1", "fd97:2::2", "fd97:2::1"),
}
COMMON = f"""
[policy]
deny = {em.POLICY["deny"]!r}
require_dnssec = {em.POLICY["require_dnssec"]!r}
[grants]
min_ttl = "{em.MIN_TTL:g}s"
max_ttl = "{em.MAX_TTL:g}s"
grace = "{em.GRACE:g}s"
verify_interval = "{em.VERIFY:g}s"
[lifecycle]
liveness = false
unauthorized = false
"""
HOST_CONFIG = f'[firewall]\ntable = "{TABLE}"\n' + COMMON
GATEWAY_CONFIG = f"""[firewall]
table = "{TABLE}"
hooks = ["output", "forward"]
lan_interfaces = ["lana", "lanb"]
[gateway]
per_client = true
ipv6_client_prefix = 64
""" + COMMON

LONG = os.environ.get("NT_MODEL_LONG") == "1"
EXAMPLES = int(os.environ.get("NT_MODEL_EXAMPLES") or (60 if LONG else 3))
STEPS = int(os.environ.get("NT_MODEL_STEPS") or (60 if LONG else 22))
SHRINK = os.environ.get("NT_MODEL_SHRINK") == "1"
LOOKUP_KEYS = [f"{n.qname} {n.rtype}" for n in em.LOOKUP_NAMES]
FLOOD_KEYS = [f"{n.qname} {n.rtype}" for n in em.FLOOD_NAMES]
SIBLINGS = {k: [o for o in LOOKUP_KEYS if o != k and em.BY_KEY[o].grantable
                and em.BY_KEY[o].ttl != em.BY_KEY[k].ttl
                and set(em.BY_KEY[o].addresses) & set(em.BY_KEY[k].addresses)]
            for k in LOOKUP_KEYS if em.BY_KEY[k].grantable}
SIBLINGS = {k: v for k, v in SIBLINGS.items() if v}


# -- the system under test --------------------------------------------------------------------
class Rig:
    """The product in one mode: ask, connect, read the sets, flush, restart."""

    mode: str
    clients: tuple[str, ...]

    def __init__(self, lab, host) -> None:
        self.lab, self.host = lab, host
        self.steps = 0
        self.seen: dict[str, int] = {}      # checks by what the model required: yes/no/either

    # what the subclasses say
    def key(self, client: str) -> str:
        raise NotImplementedError

    def sock(self, client: str, family: int, type_: int) -> socket.socket:
        raise NotImplementedError

    def server(self, client: str, rtype: str) -> str:
        raise NotImplementedError

    def set_pairs(self) -> set[tuple[str, str]]:
        raise NotImplementedError

    def start(self) -> None:
        self.host.start()

    # the same for both
    def query(self, client: str, name: em.Name) -> tuple[str, list[tuple[str, int]]]:
        """(rcode, [(address, TTL)]) of one recursive query from ``client``."""
        import dns.exception
        import dns.message
        import dns.query
        import dns.rcode
        server = self.server(client, name.rtype)
        s = self.sock(client, socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            r = dns.query.udp(dns.message.make_query(name.qname, name.rtype), server, timeout=4, sock=s)
        except dns.exception.Timeout:
            return "TIMEOUT", []
        finally:
            s.close()
        return dns.rcode.to_text(r.rcode()), [(rr.address, rrset.ttl) for rrset in r.answer
                                              for rr in rrset if hasattr(rr, "address")]

    def connect(self, client: str, address: str, port: int = 80, timeout: float = 0.9):
        s = self.sock(client, socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect((address, port))
            return s
        except OSError:
            s.close()
            return None

    def flush(self) -> None:
        self.host.nettrust("flush")

    def restart(self, kill: bool) -> None:
        if kill:
            self.host.kill(signal.SIGKILL)
        else:
            self.host.stop()
        self.start()


class HostRig(Rig):
    mode = "host"
    clients = ("h1", "h2")

    def key(self, client: str) -> str:
        return "host"

    def sock(self, client: str, family: int, type_: int) -> socket.socket:
        return self.lab.socket("host", family, type_)

    def server(self, client: str, rtype: str) -> str:
        return "127.0.0.1"

    def query(self, client: str, name: em.Name):
        if client == "h1":
            return super().query(client, name)
        out = self.lab.run("host", ["dig", "@127.0.0.1", "+tries=1", "+time=4", "+noall",
                                    "+answer", "+comments", name.qname, name.rtype], check=False).stdout
        status = re.search(r"status: (\w+)", out)
        records = [(f[4], int(f[1])) for f in (ln.split() for ln in out.splitlines())
                   if len(f) == 5 and f[3] in ("A", "AAAA") and not f[0].startswith(";")]
        return (status.group(1) if status else "TIMEOUT"), records

    def set_pairs(self) -> set[tuple[str, str]]:
        return {("host", a) for name in ("allow4", "allow6") for a in _elements(self.lab, name)}


class GatewayRig(Rig):
    mode = "gateway"
    clients = ("a", "b")

    def __init__(self, lab, host, namespaces) -> None:
        super().__init__(lab, host)
        self.namespaces = namespaces
        self.conf_text = _gateway_unbound_conf(host)

    def key(self, client: str) -> str:
        return client

    def sock(self, client: str, family: int, type_: int) -> socket.socket:
        return secnet.ns_socket(self.namespaces[client], family, type_)

    def server(self, client: str, rtype: str) -> str:
        # an AAAA answer is granted to the client's IPv6 prefix: ask over IPv6
        return CLIENTS[client][4] if rtype == "AAAA" else CLIENTS[client][2]

    def start(self) -> None:
        self.lab.start_unbound(self.conf_text, env=self.host.env())

    def restart(self, kill: bool) -> None:
        if kill:
            self.lab.kill_unbound(signal.SIGKILL)
            self.lab.unbound.wait(10)
        else:
            self.lab.stop_unbound()
        self.start()

    def set_pairs(self) -> set[tuple[str, str]]:
        import ipaddress
        who = {CLIENTS[c][1]: c for c in CLIENTS} | {CLIENTS[c][3].rsplit("::", 1)[0] + "::": c
                                                     for c in CLIENTS}
        pairs = set()
        for name in ("clients4", "clients6"):
            for c, d in _elements(self.lab, name):
                c = str(ipaddress.ip_network(c, strict=False).network_address) if "/" in c else c
                pairs.add((who.get(c, c), d))
        # the gateway's own grants: nobody asked from there
        return pairs | {("gateway", a) for name in ("allow4", "allow6") for a in _elements(self.lab, name)}


def _elements(lab, set_name: str) -> list:
    """The keys of one of NetTrust's sets, from ``nft -j``: an address, or (client, address)."""
    import json
    out = lab.run("host", ["nft", "-j", "list", "set", "inet", TABLE, set_name]).stdout
    found = []
    for item in json.loads(out)["nftables"]:
        for elem in item.get("set", {}).get("elem", []):
            value = elem["elem"]["val"] if isinstance(elem, dict) and "elem" in elem else elem
            if isinstance(value, dict) and "concat" in value:
                value = tuple(_prefix(v) for v in value["concat"])
            found.append(value)
    return found


def _prefix(value) -> str:
    if isinstance(value, dict) and "prefix" in value:
        return f"{value['prefix']['addr']}/{value['prefix']['len']}"
    return value


def _gateway_unbound_conf(host) -> str:
    conf = host.unbound_conf()
    listen = "".join(f"    interface: {c[2]}\n    interface: {c[4]}\n" for c in CLIENTS.values())
    return conf.replace("    interface: ::1\n", "    interface: ::1\n" + listen
                        + "    access-control: 10.97.0.0/16 allow\n"
                        + "    access-control: fd97::/16 allow\n", 1)


# -- the state machine ------------------------------------------------------------------------
class Enforcement(RuleBasedStateMachine):
    rig: Rig    # set by the test before it runs

    def __init__(self) -> None:
        super().__init__()
        rig = self.rig
        # a clean start for every example: no grants, an empty cache, no connections
        rig.flush()
        time.sleep(em.VERIFY + em.MARGIN)
        rig.restart(kill=False)
        self.model = em.Model(gateway=rig.mode == "gateway")
        self.held: list[tuple[str, str, socket.socket]] = []
        self.asked: list[str] = []

    def teardown(self) -> None:
        for _, _, s in self.held:
            s.close()

    def _lookup(self, client: str, key: str) -> None:
        name = em.BY_KEY[key]
        t0 = time.monotonic()
        rcode, records = self.rig.query(client, name)
        t1 = time.monotonic()
        if name.grantable:
            got = sorted({a for a, _ in records})
            assert (rcode, got) == ("NOERROR", sorted(name.addresses)), (
                f"false block: {client} asked {name.qname} {name.rtype}: {rcode} {records}")
        self.model.answered(self.rig.key(client), name, records, t0, t1)

    @rule(client=st.sampled_from(("0", "1")), name=st.sampled_from(LOOKUP_KEYS))
    def lookup(self, client, name):
        self._lookup(self.rig.clients[int(client)], name)
        self.asked.append(name)

    @precondition(lambda self: self.asked)
    @rule(client=st.sampled_from(("0", "1")), pick=st.integers(0, 1 << 16))
    def lookup_again(self, client, pick):
        """A name asked before, by either client: often a cache hit, maybe the other client's."""
        self._lookup(self.rig.clients[int(client)], self.asked[-1 - pick % len(self.asked)])

    @precondition(lambda self: any(k in SIBLINGS for k in self.asked))
    @rule(client=st.sampled_from(("0", "1")), pick=st.integers(0, 1 << 16))
    def lookup_sibling(self, client, pick):
        """A name sharing an address (and not its TTL) with one asked before, as CDN names do:
        the shorter answer must not shorten the longer grant."""
        asked = [k for k in self.asked if k in SIBLINGS]
        choices = SIBLINGS[asked[-1 - pick % len(asked)]]
        key = choices[pick % len(choices)]
        self._lookup(self.rig.clients[int(client)], key)
        self.asked.append(key)

    @rule(client=st.sampled_from(("0", "1")),
          names=st.lists(st.sampled_from(LOOKUP_KEYS), min_size=2, max_size=4))
    def lookups(self, client, names):
        for name in names:
            self._lookup(self.rig.clients[int(client)], name)
        self.asked += names

    @rule(client=st.sampled_from(("0", "1")),
          names=st.lists(st.sampled_from(FLOOD_KEYS), min_size=8, max_size=24))
    def flood(self, client, names):
        for name in names:
            self._lookup(self.rig.clients[int(client)], name)

    @rule(seconds=st.sampled_from((0.3, 1.0, 2.0, 3.5)))
    def wait(self, seconds):
        time.sleep(seconds)

    @rule(what=st.sampled_from(("flush", "flush and settle", "restart", "kill")),
          client=st.sampled_from(("0", "1")))
    def disrupt(self, what, client):
        """``nettrust flush`` (and maybe time for the resolver to notice, after which the
        names asked last are asked again and must grant again), or Unbound stopped or
        SIGKILLed and started again."""
        if what.startswith("flush"):
            self.rig.flush()
            self.model.flushed(time.monotonic())
            if what == "flush and settle":
                time.sleep(em.VERIFY + em.MARGIN)
                for key in self.asked[-3:]:
                    self._lookup(self.rig.clients[int(client)], key)
        else:
            self.rig.restart(kill=what == "kill")

    @rule(client=st.sampled_from(("0", "1")), pick=st.integers(0, 1 << 16))
    def hold(self, client, pick):
        """Open a connection to an address the model says must be reachable now, and keep it."""
        who = self.rig.clients[int(client)]
        now = time.monotonic()
        sure = sorted(a for (c, a), w in self.model.grants.items()
                      if c == self.rig.key(who) and w.lo > now + 1.0 and a not in em.SET_ONLY)
        if not sure or len(self.held) >= 4:
            return
        address = sure[pick % len(sure)]
        s = self.rig.connect(who, address, 7, timeout=2)
        assert s is not None, f"false block: {who} could not connect to {address}:7"
        s.settimeout(3)
        self.held.append((who, address, s))

    @precondition(lambda self: self.held)
    @rule(pick=st.integers(0, 3))
    def close(self, pick):
        _, _, s = self.held.pop(pick % len(self.held))
        s.close()

    @invariant()
    def reality_matches_model(self):
        rig, model = self.rig, self.model
        rig.steps += 1
        for who, address, s in self.held:       # established connections outlive their grants
            s.sendall(b"ping\n")
            assert s.recv(100) == b"ping\n", f"held connection {who}->{address} stopped echoing"
        t0 = time.monotonic()
        pairs = rig.set_pairs()
        t1 = time.monotonic()
        wrong = []
        for who in rig.clients:
            key = rig.key(who)
            for address in sorted(model.known):
                want = model.expect(key, address, t0, t1)
                got = (key, address) in pairs
                if want != "either" and got != (want == "yes"):
                    wrong.append(f"set: ({key}, {address}) {'present' if got else 'absent'}, "
                                 f"model says {want} {self._window(key, address, t0)}")
                if address in em.SET_ONLY:
                    continue
                c0 = time.monotonic()
                s = rig.connect(who, address)
                c1 = time.monotonic()
                if s is not None:
                    s.close()
                want = model.expect(key, address, c0, c1)
                rig.seen[want] = rig.seen.get(want, 0) + 1
                if want != "either" and (s is not None) != (want == "yes"):
                    wrong.append(f"connect: {who}->{address} {'succeeded' if s else 'failed'}, "
                                 f"model says {want} {self._window(key, address, c0)}")
        if rig.mode == "gateway":       # the gateway's own sets: nobody there asked
            stray = {a for c, a in pairs if c == "gateway"}
            if stray:
                wrong.append(f"set: the gateway's own grants hold {sorted(stray)}")
        assert not wrong, "reality and model disagree:\n  " + "\n  ".join(wrong)

    def _window(self, key: str, address: str, now: float) -> str:
        w = self.model.grants.get((key, address))
        if w is None:
            return "(never granted)"
        return f"(must until {w.lo - now:+.2f}s, may until {w.hi - now:+.2f}s from now)"


def _run(rig: Rig) -> None:
    chosen = int(os.environ.get("NT_MODEL_SEED") or random.randrange(1 << 32))
    print(f"\nNT_MODEL_SEED={chosen} mode={rig.mode} examples={EXAMPLES} steps={STEPS}", flush=True)
    from hypothesis.stateful import get_state_machine_test
    phases = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if SHRINK else [])
    Enforcement.rig = rig
    test = get_state_machine_test(Enforcement, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
        print_blob=True, phases=phases, derandomize=False,
        suppress_health_check=list(HealthCheck)))
    started = time.monotonic()
    try:
        hypothesis_seed(chosen)(test)()
    finally:
        print(f"NT_MODEL_SEED={chosen} mode={rig.mode}: {rig.steps} checked steps in "
              f"{time.monotonic() - started:.0f} s; connects the model required to succeed / "
              f"fail / left open: {rig.seen.get('yes', 0)} / {rig.seen.get('no', 0)} / "
              f"{rig.seen.get('either', 0)}", flush=True)


@pytest.fixture(scope="module")
def prerequisites():
    from testbed.lab import missing_prerequisites
    require(missing_prerequisites(("unbound", "nft", "dig")))


def test_host_mode_reachability_equals_the_model(prerequisites):
    from testbed.lab import Lab
    from testbed.product import NetTrustHost
    with Lab(extra_records=em.EXTRA_RECORDS) as lab:
        host = NetTrustHost(lab, HOST_CONFIG)
        host.start()
        try:
            _run(HostRig(lab, host))
            assert "Traceback" not in host.log(), host.log()[-3000:]
        finally:
            host.stop()


def test_gateway_mode_reachability_equals_the_model(prerequisites):
    from netns_util import NetNS
    from test_gateway import _veth
    from testbed.lab import Lab
    from testbed.product import NetTrustHost
    with Lab(extra_records=em.EXTRA_RECORDS) as lab:
        lab.run("host", ["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])
        lab.run("net", ["ip", "route", "add", "10.97.0.0/16", "via", lab.host_v4])
        lab.run("net", ["ip", "-6", "route", "add", "fd97::/16", "via", lab.host_v6])
        namespaces: dict = {}
        try:
            for name, (gw_if, c4, g4, c6, g6) in CLIENTS.items():
                namespaces[name] = NetNS(f"ntmd-{name}")
                _veth(lab.host_ns, namespaces[name], gw_if, c4, g4, c6, g6)
            host = NetTrustHost(lab, GATEWAY_CONFIG)
            rig = GatewayRig(lab, host, namespaces)
            rig.start()
            _run(rig)
            assert "Traceback" not in lab.unbound.log_text(), lab.unbound.log_text()[-3000:]
        finally:
            lab.stop_unbound()
            for ns in namespaces.values():
                ns.delete()
