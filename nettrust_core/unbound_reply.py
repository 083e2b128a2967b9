"""Reading Unbound's objects into core values: the adapter's translation, kept here so it is
tested without Unbound and compiled with the answer path (nettrust_core/compiled.py).

Everything here takes pythonmod's SWIG objects by their attribute names (``reply_info``,
``ub_packed_rrset_key``, ``mesh_info``, ``module_env``), never imports them, and decides
nothing: which answer is granted is the authorizer's call.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from .answer import A, AAAA, CNAME, DNAME, PTR, Record
from .networks import packed_address
from .wire import WireNameError, decode_name, decode_rdata_name

_ADDR_SIZE: dict[int, int] = {A: 4, AAAA: 16}     # packed_address: ValueError for another length
_NAMED = (A, AAAA, CNAME, DNAME, PTR)   # PTR: read for ptr.confirm only, never granted


class Access:
    """How the readers below reach into Unbound's arrays and socket addresses.

    By default through the documented attribute paths (``rep.rrsets[i]``, ``data.rr_data[j]``,
    ``data.rr_ttl[j]``, ``comm_reply.addr``), which is what the tests' stand-ins offer.  Inside
    Unbound each of those paths builds a Python wrapper object (unboundmodule.py's
    ``ReplyInfo_RRSet``, ``RRSetData_RRData``, ``RRSetData_RRTTL``, ``comm_reply._addr_get``) and
    calls its ``__getitem__`` in the interpreter before reaching a C accessor of
    ``_unboundmodule``: :func:`use_unbound_accessors` makes the readers call those C accessors
    directly (eight interpreted calls fewer for a one-address answer and its client).
    """

    def __init__(self) -> None:
        self.rrset: Any = _rrset_by_attribute
        self.rr_data: Any = _rr_data_by_attribute
        self.rr_ttl: Any = _rr_ttl_by_attribute
        #: ``_unboundmodule._sockaddr_storage_addr`` (of ``comm_reply._addr``), or None.
        self.sockaddr: Any = None


def _rrset_by_attribute(rep: Any, i: int) -> Any:
    return rep.rrsets[i]


def _rr_data_by_attribute(data: Any, j: int) -> Any:
    return data.rr_data[j]


def _rr_ttl_by_attribute(data: Any, j: int) -> Any:
    return data.rr_ttl[j]


def _reply_addr(comm_reply: Any) -> Any:
    sockaddr = ACCESS.sockaddr
    return comm_reply.addr if sockaddr is None else sockaddr(comm_reply._addr)


ACCESS = Access()


def use_unbound_accessors(swig: Any) -> None:
    """Inside Unbound: read through ``_unboundmodule``'s C accessors (the adapter passes the
    module).  The same values as the attribute paths, which call exactly these."""
    ACCESS.rrset, ACCESS.rr_data = swig._rrset_rrsets_get, swig._get_data_rr_data
    ACCESS.rr_ttl, ACCESS.sockaddr = swig._get_data_rr_ttl, swig._sockaddr_storage_addr


def records(rep: Any, count: Any, now: int = 0, qwire: Any = None, qname: Any = None) -> tuple[Record, ...]:
    """Answer-section records as core values, every name decoded from wire bytes.

    A malformed address is skipped (it can never be granted); a name without an exact text
    form raises WireNameError: the whole answer is refused.  ``now``: subtracted from each TTL
    (the cache callback's TTLs are absolute).  ``qwire``/``qname``: the question's wire name
    and its decoded form, reused for records it owns (the usual case: one decode per answer).
    """
    out: list[Record] = []
    access = ACCESS
    rrset_at, rr_data, rr_ttl = access.rrset, access.rr_data, access.rr_ttl
    for i in range(min(count, rep.rrset_count)):
        rrset = rrset_at(rep, i)
        rk = rrset.rk
        rtype: int = socket.ntohs(rk.type)
        if rtype not in _NAMED:
            continue
        dname = rk.dname
        owner = qname if qwire is not None and dname == qwire else decode_name(dname)
        data = rrset.entry.data
        for j in range(data.count):
            rd = rr_data(data, j)
            value: Any
            try:
                if rtype == A or rtype == AAAA:
                    value = packed_address(rd[2:], _ADDR_SIZE[rtype])  # no text round trip
                else:
                    value = decode_rdata_name(rd)
            except WireNameError:
                if rtype == PTR:
                    continue        # PTR never grants: an unreadable target is just not confirmed
                raise
            except (ValueError, OSError, TypeError):
                continue
            out.append(Record(owner, rtype, max(int(rr_ttl(data, j)) - now, 0), value))
    return tuple(out)


def addresses(rep: Any, now: int) -> list[tuple[Any, int]]:
    """A cached reply's A/AAAA addresses with their remaining TTLs (its TTLs are absolute);
    malformed ones skipped.  No name is decoded: the cache-hit fast check needs none."""
    out: list[tuple[Any, int]] = []
    access = ACCESS
    rrset_at, rr_data, rr_ttl = access.rrset, access.rr_data, access.rr_ttl
    for i in range(min(rep.an_numrrsets, rep.rrset_count)):
        rrset = rrset_at(rep, i)
        size = _ADDR_SIZE.get(socket.ntohs(rrset.rk.type))
        if size is None:
            continue
        data = rrset.entry.data
        for j in range(data.count):
            try:
                out.append((packed_address(rr_data(data, j)[2:], size), int(rr_ttl(data, j)) - now))
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
    return _reply_addr(reply.query_reply)


def clients(qstate: Any) -> list[Any]:
    """Every client waiting for this answer: ``mesh_info.reply_list`` is a linked list, and
    clients that joined the query while it was in flight appear only there (latest first)."""
    mesh = qstate.mesh_info
    out: list[Any] = []
    reply = mesh.reply_list if mesh is not None else None
    while reply is not None:
        out.append(_reply_addr(reply.query_reply))
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
