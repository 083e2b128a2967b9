"""Reverse lookups that open only what forward DNS confirms (``ptr.confirm``).

Whoever holds an address block writes its reverse zone, so a PTR answer can name anything:
``dig -x`` of any address would open it if the PTR answer itself granted (the Go NetTrust did).
Here a PTR answer never grants.  With ``ptr.confirm = true`` the answer path only hands the PTR
answer to :class:`Confirmer` (a non-blocking queue put); the confirmer thread takes at most
``ptr.max_names`` of the target names the policy allows, asks the running resolver (over
loopback, with dnspython) for their A or AAAA, and grants the queried address only when a
forward answer contains it, is not bogus (the resolver answers SERVFAIL for bogus data; the AD
bit says secure, as ``require_dnssec`` needs) and passes the same policy.

The forward lookup is an ordinary query through the resolver, so the module judges and grants
its answer like any other (that keeps the cache-lifetime rule: every cached answer was judged
when fetched).  The confirmer then authorizes an answer made of the link "reverse name → forward
name" and the confirmed address alone: the decision it reports (``nettrust stats why``) names
both, and its lifetime is the forward answer's TTL.

RFC 2317 classless delegations answer a PTR query with a CNAME into another in-addr.arpa name:
the queried address comes from the question, never from the PTR record's owner.  Both
``in-addr.arpa`` (4 labels) and ``ip6.arpa`` (32 nibbles) questions are understood; any other
question name (a partial reverse name, a delegation point) confirms nothing.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
from collections import Counter
from typing import TYPE_CHECKING, Callable

from .answer import AAAA, CNAME, PTR, A, Answer, ChainTooLong, Record, Security, Source
from .worker import Worker

if TYPE_CHECKING:
    from .authorizer import Authorizer
    from .networks import IPAddress

log = logging.getLogger("nettrust.reverse")

#: PTR answers waiting for the confirmer; more are dropped and counted (``ptr_dropped``).
QUEUE_SIZE = 256
#: Seconds the confirmer waits for the resolver's answer to one forward query (bounds how long
#: ``Service.stop`` waits for the thread: it checks ``stopping`` between lookups).
LOOKUP_TIMEOUT = 2.0
_NIBBLES = frozenset("0123456789abcdef")


def reverse_address(name: str) -> IPAddress | None:
    """The address a full reverse name stands for (``10.100.51.198.in-addr.arpa`` →
    198.51.100.10), or None for anything else (partial names, RFC 2317 names like
    ``10.0-25.100.51.198.in-addr.arpa``, junk)."""
    labels = name.lower().rstrip(".").split(".")
    if labels[-2:] == ["in-addr", "arpa"] and len(labels) == 6:
        octets = labels[3::-1]
        if all(o.isascii() and o.isdigit() and len(o) <= 3 and (o == "0" or o[0] != "0")
               and int(o) <= 255 for o in octets):
            return ipaddress.IPv4Address(".".join(octets))
        return None
    if labels[-2:] == ["ip6", "arpa"] and len(labels) == 34:
        nibbles = labels[31::-1]
        if all(len(n) == 1 and n in _NIBBLES for n in nibbles):
            return ipaddress.IPv6Address(int("".join(nibbles), 16))
    return None


def ptr_targets(answer: Answer) -> list[str]:
    """The PTR target names of ``answer``, in order, each once: the PTR records owned by the
    end of its CNAME chain (RFC 2317), never PTRs stuffed in for other owners."""
    try:
        final = answer.chain()[-1]
    except ChainTooLong:
        return []
    out: dict[str, None] = {}
    for r in answer.records:
        if r.rtype == PTR and r.owner == final and isinstance(r.data, str) and r.data:
            out[r.data] = None
    return list(out)


def confirmed_answer(ptr: Answer, address: IPAddress, target: str, forward: Answer) -> Answer | None:
    """The answer the confirmer authorizes: "reverse name → ``target``" (written as the chain's
    first link, so the policy judges both names and the grant's origin names both), then the
    forward answer's CNAMEs and the one record giving ``address``; None when the forward
    answer does not contain ``address`` (or is not a plain NOERROR for ``target``)."""
    if forward.rcode != 0 or forward.qname != target:
        return None
    try:
        final = forward.chain()[-1]
    except ChainTooLong:
        return None
    ttls = [ttl for addr, ttl in forward.addresses(final) if addr == address]
    if not ttls:
        return None
    ttl = max(ttls)
    records = [Record(ptr.qname, CNAME, ttl, target)]
    records += [r for r in forward.records if r.rtype == CNAME]
    records.append(Record(final, A if address.version == 4 else AAAA, ttl, address))
    return Answer(ptr.qname, A if address.version == 4 else AAAA, 0, forward.security,
                  tuple(records), ptr.client, Source.CONFIRMED)


def resolver_lookup(server: str, timeout: float = LOOKUP_TIMEOUT) -> Callable[[str, int], Answer | None]:
    """A forward lookup through the resolver at ``server`` (port 53): UDP, then TCP when
    truncated; asks with the AD bit so the reply says whether the data is secure.  None when
    no answer came."""
    import dns.exception
    import dns.flags
    import dns.message
    import dns.query
    import dns.rdatatype

    def lookup(name: str, rtype: int) -> Answer | None:
        query = dns.message.make_query(name + ".", dns.rdatatype.RdataType(rtype))
        query.flags |= dns.flags.AD
        try:
            reply = dns.query.udp(query, server, timeout=timeout)
            if reply.flags & dns.flags.TC:
                reply = dns.query.tcp(query, server, timeout=timeout)
        except (dns.exception.DNSException, OSError) as exc:
            log.debug("forward lookup of %s for a PTR answer failed: %s", name, exc)
            return None
        security = Security.SECURE if reply.flags & dns.flags.AD else Security.INSECURE
        return Answer.from_dns_message(reply, security)

    return lookup


class Confirmer(Worker):
    """The background thread of ``ptr.confirm``: see the module docstring."""

    name = "nettrust-ptr-confirm"

    def __init__(self, authorizer: Authorizer, lookup: Callable[[str, int], Answer | None], *,
                 max_names: int = 2, counters: Counter[str] | None = None) -> None:
        super().__init__(counters if counters is not None else authorizer.counters)
        self.authorizer = authorizer
        self.lookup = lookup
        self.max_names = max_names
        self.counters = counters if counters is not None else authorizer.counters
        self.queue: queue.Queue[Answer | None] = queue.Queue(QUEUE_SIZE)

    # -- the answer path: one check and a non-blocking put ------------------------------------
    def submit(self, answer: Answer) -> None:
        if answer.qtype != PTR or answer.rcode != 0:
            return
        try:
            self.queue.put_nowait(answer)
        except queue.Full:
            self.counters["ptr_dropped"] += 1

    # -- the thread ---------------------------------------------------------------------------
    def wake(self) -> None:
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass                          # the loop sees ``stopping`` after the next item

    def run(self) -> None:
        while not self.stopping.is_set():
            answer = self.queue.get()
            if answer is None or self.stopping.is_set():
                continue
            try:
                self.confirm(answer)
            except Exception:             # one bad answer must not end the thread
                self.counters["ptr_errors"] += 1
                log.exception("confirming the PTR answer for %s failed", answer.qname)

    def confirm(self, ptr: Answer) -> list[IPAddress]:
        """Look up the PTR answer's allowed targets; grant its address where one confirms.
        Returns the addresses granted (for tests)."""
        address = reverse_address(ptr.qname)
        if address is None:
            self.counters["ptr_not_an_address"] += 1
            return []
        policy = self.authorizer.policy
        targets = [t for t in ptr_targets(ptr) if policy.check_name(t).allowed]
        if not targets:
            return []
        self.counters["ptr_lookups"] += 1
        rtype = A if address.version == 4 else AAAA
        for target in targets[:self.max_names]:
            if self.stopping.is_set():
                break
            forward = self.lookup(target, rtype)
            if forward is None:
                continue
            answer = confirmed_answer(ptr, address, target, forward)
            if answer is None:
                self.counters["ptr_unconfirmed"] += 1
                log.debug("PTR %s -> %s: the forward answer does not contain %s", ptr.qname,
                          target, address)
                continue
            decision = self.authorizer.authorize(answer)
            if any(g.address == address for g in decision.grants) and decision.error is None:
                self.counters["ptr_confirmed"] += 1
                log.info("opened %s: reverse lookup of %s, confirmed by %s", address, ptr.qname,
                         target)
                return [address]
            self.counters["ptr_refused"] += 1
            log.debug("PTR %s -> %s confirms %s but the policy refuses it: %s", ptr.qname,
                     target, address, decision.error or decision.verdict.reason)
        return []
