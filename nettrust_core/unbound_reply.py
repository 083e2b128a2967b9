"""Reading Unbound's objects into core values: the adapter's translation, kept here so it is
tested without Unbound and compiled with the answer path (nettrust_core/compiled.py).

Everything here takes pythonmod's SWIG objects by their attribute names (``reply_info``,
``ub_packed_rrset_key``, ``mesh_info``, ``module_env``), never imports them, and decides
nothing: which answer is granted is the authorizer's call.
"""

from __future__ import annotations

import os
import socket
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from .answer import A, AAAA, CNAME, DNAME, PTR, Record
from .wire import WireNameError, decode_name, decode_rdata_name

_ADDR_TYPE: dict[int, Any] = {A: IPv4Address, AAAA: IPv6Address}   # ValueError unless 4 / 16 bytes
_NAMED = (A, AAAA, CNAME, DNAME, PTR)   # PTR: read for ptr.confirm only, never granted


def records(rep: Any, count: Any, now: int = 0, qwire: Any = None, qname: Any = None) -> tuple[Record, ...]:
    """Answer-section records as core values, every name decoded from wire bytes.

    A malformed address is skipped (it can never be granted); a name without an exact text
    form raises WireNameError: the whole answer is refused.  ``now``: subtracted from each TTL
    (the cache callback's TTLs are absolute).  ``qwire``/``qname``: the question's wire name
    and its decoded form, reused for records it owns (the usual case: one decode per answer).
    """
    out: list[Record] = []
    rrsets = rep.rrsets
    for i in range(min(count, rep.rrset_count)):
        rrset = rrsets[i]
        rk = rrset.rk
        rtype: int = socket.ntohs(rk.type)
        if rtype not in _NAMED:
            continue
        dname = rk.dname
        owner = qname if qwire is not None and dname == qwire else decode_name(dname)
        data = rrset.entry.data
        for j in range(data.count):
            rd = data.rr_data[j]
            value: Any
            try:
                if rtype == A or rtype == AAAA:
                    value = _ADDR_TYPE[rtype](rd[2:])    # from wire bytes: no text round trip
                else:
                    value = decode_rdata_name(rd)
            except WireNameError:
                if rtype == PTR:
                    continue        # PTR never grants: an unreadable target is just not confirmed
                raise
            except (ValueError, OSError, TypeError):
                continue
            out.append(Record(owner, rtype, max(int(data.rr_ttl[j]) - now, 0), value))
    return tuple(out)


def addresses(rep: Any, now: int) -> list[tuple[Any, int]]:
    """A cached reply's A/AAAA addresses with their remaining TTLs (its TTLs are absolute);
    malformed ones skipped.  No name is decoded: the cache-hit fast check needs none."""
    out: list[tuple[Any, int]] = []
    for i in range(min(rep.an_numrrsets, rep.rrset_count)):
        rrset = rep.rrsets[i]
        make = _ADDR_TYPE.get(socket.ntohs(rrset.rk.type))
        if make is None:
            continue
        data = rrset.entry.data
        for j in range(data.count):
            try:
                out.append((make(data.rr_data[j][2:]), int(data.rr_ttl[j]) - now))
            except (ValueError, TypeError):
                continue
    return out


def client(qstate: Any) -> Any:
    """The first client waiting for this query's answer (None for the resolver's own)."""
    mesh = qstate.mesh_info
    if mesh is None:
        return None
    reply = mesh.reply_list
    if reply is None:
        return None
    return reply.query_reply.addr


def clients(qstate: Any) -> list[Any]:
    """Every client waiting for this answer: ``mesh_info.reply_list`` is a linked list, and
    clients that joined the query while it was in flight appear only there (latest first)."""
    mesh = qstate.mesh_info
    out: list[Any] = []
    reply = mesh.reply_list if mesh is not None else None
    while reply is not None:
        out.append(reply.query_reply.addr)
        reply = reply.next
    return out


def under_checkconf(env: Any) -> str:
    """Why this is unbound-checkconf and not the daemon ("" when it is the daemon).

    /proc/self/comm is cut to 15 characters ("unbound-checkco"), so it cannot tell.  Two signs
    that can: the executable's name, and the env checkconf hands init_standard, which it zeroes
    except cfg and scratch (smallapp/unbound-checkconf.c:check_mod); the daemon's already has its
    message cache and allocator (daemon/daemon.c: daemon_apply_cfg, daemon_setup_modules).
    Measured on 1.17.1: comm 'unbound-checkco', exe /usr/sbin/unbound-checkconf, msg_cache,
    rrset_cache and alloc None under checkconf, all set in the daemon; worker and mesh are None
    in both (no sign).  Never read env.now here: NULL under checkconf, and its getter
    dereferences it (segfault, measured).
    """
    try:
        exe = os.path.basename(os.readlink("/proc/self/exe"))
    except OSError:
        exe = ""
    if exe.startswith("unbound-checkconf"):
        return "executable " + exe
    if env.msg_cache is None or env.alloc is None:
        return "module env without message cache"
    return ""
