"""The promise NetTrust makes, as plain Python: which (client, address) may connect, and when.

An address is reachable from a client exactly when an answer the resolver trusts gave it to that
client and the grant ``clamp(TTL, min_ttl, max_ttl) + grace`` (never shortened by a later answer)
has not run out.  The model knows the lab's names (:data:`NAMES`), is told every step the test
took (an answer with its observed TTLs, a flush, a restart) with the wall-clock window the step
took, and answers for a pair at a time window: ``"yes"`` (a new connection must succeed),
``"no"`` (it must fail) or ``"either"``.

Uncertainty, stated:

- TTLs: Unbound reports whole seconds, decremented against its own clock, so the TTL a client
  sees and the one the module granted from differ by up to 1 s either way; every bound widens by
  that, plus :data:`MARGIN` for the kernel's timer and the scheduling of this test.
- The product rewrites a live grant only when it gets longer by more than its trackers'
  ``slack`` (:data:`SLACK`, min(1 s, grace / 2)): a later answer may extend a live grant by less.
- The grant is written while the query is in flight: between the query being sent and the
  answer arriving; the bounds take the earlier end for "must" and the later for "may".
- After ``nettrust flush`` the resolvers notice within ``grants.verify_interval``; lookups that
  start before that (plus :data:`MARGIN`) may or may not grant (a cached answer is not re-judged
  until then).  Later ones must.
- Host mode (output hook) has no cache-hit callback: a cached answer carries the grant made when
  it was fetched, which outlives the cached copy (``cache-max-ttl`` = ``max_ttl``, no
  serve-expired) but was computed from the fetched TTL, not the remaining one: the bounds for
  host mode are therefore "fetch time + clamp(fetched TTL) + grace", reconstructed from the
  remaining TTL (fetched - elapsed).  (That every cached copy was fetched through the module
  needs ``qname-minimisation: no``: the long run found minimisation's unseen A answers.)  Gateway mode grants a cache hit ``clamp(remaining) +
  grace`` for the client that got it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MIN_TTL, MAX_TTL, GRACE = 2.0, 6.0, 1.0
VERIFY = 1.0                # grants.verify_interval
MARGIN = 0.6                # seconds of timing slack on each side, beyond TTL rounding
SLACK = min(1.0, GRACE / 2)  # a live grant is rewritten only when it gets longer by more than
#                             this: the trackers' slack, min(1 s, grace / 2) in the product

NEG = -math.inf


def clamp(ttl: float) -> float:
    return min(max(ttl, MIN_TTL), MAX_TTL)


@dataclass(frozen=True)
class Name:
    """One lab name and type the test may ask, and what the promise says about its answer."""

    qname: str
    rtype: str                       # "A" or "AAAA"
    addresses: tuple[str, ...]       # the final addresses of the answer
    ttl: int                         # zone TTL of the address records
    grantable: bool                  # allowed, trusted and not a special address
    connectable: bool = True         # False: checked in the kernel sets only (special addresses)

    @property
    def cached_ttl(self) -> int:
        return min(self.ttl, int(MAX_TTL))


# Records added to the lab's zones (tests.integration.test_enforcement_model passes them to Lab).
EXTRA_RECORDS = {
    "fw.test": [
        "t1 1 IN A 198.51.100.101", "t1 1 IN AAAA 2001:db8:100::101",
        "t3 3 IN A 198.51.100.103", "t3 3 IN AAAA 2001:db8:100::103",
        "t5 5 IN A 198.51.100.105", "t5 5 IN AAAA 2001:db8:100::105",
        "big 300 IN A 198.51.100.130", "big 300 IN AAAA 2001:db8:100::130",
        # the same address as big, a shorter TTL: a later shorter answer must not shorten
        "sh 1 IN A 198.51.100.130", "sh 1 IN AAAA 2001:db8:100::130",
        "cn 300 IN CNAME t3", "cc 300 IN CNAME cn",
        "cd 300 IN CNAME x.deny",                   # a chain into a denied name
        "x.deny 3 IN A 198.51.100.150", "x.deny 3 IN AAAA 2001:db8:100::150",
        "y.deny 3 IN A 198.51.100.151", "y.deny 3 IN AAAA 2001:db8:100::151",
    ],
    "sec.test": [
        "s2 2 IN A 198.51.100.122", "s2 2 IN AAAA 2001:db8:100::122",
    ],
}
POLICY = {"deny": ["**.deny.fw.test"], "require_dnssec": ["sec.test"]}

FLOOD_POOL = 12     # s1..s12 (TTL 3) and h1..h12 (TTL 300) of the lab's bulk names


def _both(qname: str, v4: str, v6: str, ttl: int, grantable: bool = True,
          connectable: bool = True) -> list[Name]:
    return [Name(qname, "A", (v4,) if v4 else (), ttl, grantable, connectable),
            Name(qname, "AAAA", (v6,) if v6 else (), ttl, grantable, connectable)]


def _names() -> list[Name]:
    n: list[Name] = []
    n += _both("t1.fw.test", "198.51.100.101", "2001:db8:100::101", 1)
    n += _both("t3.fw.test", "198.51.100.103", "2001:db8:100::103", 3)
    n += _both("t5.fw.test", "198.51.100.105", "2001:db8:100::105", 5)
    n += _both("big.fw.test", "198.51.100.130", "2001:db8:100::130", 300)
    n += _both("sh.fw.test", "198.51.100.130", "2001:db8:100::130", 1)
    n += _both("cn.fw.test", "198.51.100.103", "2001:db8:100::103", 3)
    n += _both("cc.fw.test", "198.51.100.103", "2001:db8:100::103", 3)
    n += _both("www.fw.test", "198.51.100.10", "2001:db8:100::10", 300)
    n += _both("s2.sec.test", "198.51.100.122", "2001:db8:100::122", 2)          # signed
    n += _both("www.sec.test", "198.51.100.20", "2001:db8:100::20", 300)         # signed
    # never granted: denied, a chain into a denied name, bogus, insecure under require_dnssec
    n += _both("cd.fw.test", "198.51.100.150", "2001:db8:100::150", 3, False)
    n += _both("x.deny.fw.test", "198.51.100.150", "2001:db8:100::150", 3, False)
    n += _both("y.deny.fw.test", "198.51.100.151", "2001:db8:100::151", 3, False)
    n += _both("www.bad.test", "198.51.100.30", "2001:db8:100::30", 300, False)
    n += _both("www.ins.sec.test", "198.51.100.40", "2001:db8:100::40", 300, False)
    # special addresses: never in a set (connecting to them tests routing, not NetTrust)
    n += _both("sink.fw.test", "0.0.0.0", "::", 300, False, False)
    n += _both("rebind.fw.test", "10.1.2.3", "fd00::1:2:3", 300, False, False)
    n += _both("lo.fw.test", "127.0.0.5", "::1", 300, False, False)
    return n


def _flood_names() -> list[Name]:
    n: list[Name] = []
    for i in range(1, FLOOD_POOL + 1):
        n += _both(f"s{i}.fw.test", f"198.19.0.{i}", f"2001:db8:119::{i:x}", 3)
        n += _both(f"h{i}.fw.test", f"198.18.0.{i}", f"2001:db8:118::{i:x}", 300)
    return n


LOOKUP_NAMES: list[Name] = _names()
FLOOD_NAMES: list[Name] = _flood_names()
NAMES = LOOKUP_NAMES + FLOOD_NAMES
BY_KEY = {f"{n.qname} {n.rtype}": n for n in NAMES}     # "t1.fw.test A": how steps name them
NEVER = {a for n in NAMES if not n.grantable for a in n.addresses}
SET_ONLY = {a for n in NAMES if not n.connectable for a in n.addresses}


@dataclass
class Window:
    """``lo``: a new connection must succeed before it; ``hi``: it must fail from then on."""

    lo: float = NEG
    hi: float = NEG


@dataclass
class Model:
    gateway: bool
    grants: dict[tuple[str, str], Window] = field(default_factory=dict)
    notice_until: float = NEG       # lookups starting before this may not grant (after a flush)
    known: set[str] = field(default_factory=lambda: set(NEVER))
    #: What the model was told about each pair (for a failure's message), times from ``origin``.
    history: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    origin: float = 0.0

    def _note(self, pair: tuple[str, str], text: str) -> None:
        lines = self.history.setdefault(pair, [])
        lines.append(text)
        del lines[:-8]

    def story(self, pair: tuple[str, str]) -> str:
        """The last things the model was told about ``pair``, one per line."""
        return "\n      ".join(self.history.get(pair, ["(nothing)"]))

    def answered(self, client: str, name: Name, records: list[tuple[str, int]],
                 t_sent: float, t_got: float) -> None:
        """``client`` (its grant key) got ``records`` (address, TTL seen) for ``name``."""
        self.known.update(a for a, _ in records)
        if not name.grantable:
            for address, ttl in records:
                self._note((client, address), f"{t_sent - self.origin:8.2f}-{t_got - self.origin:.2f} "
                                              f"{name.qname} {name.rtype} TTL {ttl}: never granted")
            return
        for address, ttl in records:
            if self.gateway:
                lo_t, hi_t = clamp(ttl - 1) + GRACE, clamp(ttl + 1) + GRACE
            else:   # the grant of the fetch this copy came from: fetched TTL = seen + elapsed
                extra = clamp(name.cached_ttl) - name.cached_ttl + GRACE
                lo_t, hi_t = ttl - 1 + extra, ttl + 1 + extra
            w = self.grants.setdefault((client, address), Window())
            if t_sent >= self.notice_until:
                # a grant that may still be live is not rewritten for less than SLACK more
                live = w.hi > t_sent
                w.lo = max(w.lo, t_sent + lo_t - MARGIN - (SLACK if live else 0.0))
            w.hi = max(w.hi, t_got + hi_t + MARGIN)
            self._note((client, address),
                       f"{t_sent - self.origin:8.2f}-{t_got - self.origin:.2f} {name.qname} "
                       f"{name.rtype} TTL {ttl} -> must until {w.lo - self.origin:.2f}, "
                       f"may until {w.hi - self.origin:.2f}")

    def flushed(self, t_done: float) -> None:
        """Every grant was revoked by ``t_done``."""
        for pair, w in self.grants.items():
            w.lo = NEG
            w.hi = min(w.hi, t_done)
            self._note(pair, f"{t_done - self.origin:8.2f} flushed")
        self.notice_until = t_done + VERIFY + MARGIN

    def expect(self, client: str, address: str, t0: float, t1: float) -> str:
        """What a connection attempt (or a set read) between ``t0`` and ``t1`` must show."""
        w = self.grants.get((client, address))
        if w is None or t0 >= w.hi:
            return "no"
        if t1 <= w.lo:
            return "yes"
        return "either"
