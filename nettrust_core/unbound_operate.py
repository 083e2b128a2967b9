"""``operate()``: the Unbound module's entry for queries (NEW) and answers (MODDONE), compiled.

pythonmod calls ``operate(id, event, qstate, qdata)`` for every query and every answer that is
not a cache hit.  Interpreted, in the adapter, it was four Python frames per cache miss
(``operate`` twice, the query's and the answer's steps) whose every read of Unbound's objects
went through the interpreter's dispatch, and whose every call into the compiled core crossed
from interpreted to native code.  Compiled with the answer path (:mod:`nettrust_core.compiled`),
the same steps reach the readers (:mod:`.unbound_reply`, :mod:`.wire`) and the answer's types by
native calls; only Unbound's SWIG objects and the Service stay generic attribute reads.

It decides nothing: the Service (policy, authorizer) judges, and this carries the verdict out
on the query state exactly as the adapter did.  What needs pythonmod's own classes (the blocked
answer built with ``DNSMessage``, the cache invalidation) stays in the adapter and is handed in.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from .answer import Answer, Security, Source
from .authorizer import Decision
from .errors import NetTrustError
from .unbound_reply import client, clients, records
from .wire import WireNameError, decode_name


class Operate:
    """pythonmod's ``operate`` (the bound method :meth:`operate`) and the steps it takes.

    ``set_state(qstate, id, state)``: sets ``qstate.ext_state[id]``; ``log_error(text, exc)``:
    the rate-limited failure log; ``reply_blocked(id, qstate, qname, qtype)`` and
    ``uncache(qstate, rep)``: the adapter's.  Unbound calls ``operate`` only after init
    (:meth:`start`); after :meth:`stop` every event fails closed (SERVFAIL).
    """

    def __init__(self, set_state: Callable[[Any, int, int], object],
                 log_error: Callable[[str, BaseException], object],
                 reply_blocked: Callable[[int, Any, str, int], object],
                 uncache: Callable[[Any, Any], object]) -> None:
        self.set_state = set_state
        self.log_error = log_error
        self.reply_blocked = reply_blocked
        self.uncache = uncache
        # pythonmod's numbers, from start(): the script's globals hold them only inside Unbound.
        self.event_new = self.event_pass = self.event_moddone = -1
        self.wait_module = self.finished = self.module_error = self.rcode_servfail = -1
        self.service: Any = None
        self.per_client = False
        #: The service's answer and name checks, looked up once at start (the Service is
        #: interpreted: every attribute read of it is a dictionary look-up).
        self.authorize_answer: Any = None
        self.name_allowed: Any = None

    def start(self, service: Any, unbound: Mapping[str, Any]) -> None:
        """Serve with ``service``; ``unbound``: pythonmod's names (the script's globals)."""
        self.event_new = unbound["MODULE_EVENT_NEW"]
        self.event_pass = unbound["MODULE_EVENT_PASS"]
        self.event_moddone = unbound["MODULE_EVENT_MODDONE"]
        self.wait_module = unbound["MODULE_WAIT_MODULE"]
        self.finished = unbound["MODULE_FINISHED"]
        self.module_error = unbound["MODULE_ERROR"]
        self.rcode_servfail = unbound["RCODE_SERVFAIL"]
        self.per_client = bool(service.per_client)
        self.authorize_answer = service.authorize_answer
        self.name_allowed = service.name_allowed
        self.service = service

    def stop(self) -> None:
        """No service from now on: every query and answer fails closed (SERVFAIL)."""
        self.service = self.authorize_answer = self.name_allowed = None

    def operate(self, id: int, event: int, qstate: Any, qdata: Any) -> bool:  # noqa: A002
        try:
            if self.service is None:
                raise NetTrustError("nettrust is not running (stopped)")
            if event == self.event_new or event == self.event_pass:
                return self.on_query(id, qstate, qdata)
            if event == self.event_moddone:
                return self.on_answer(id, qstate, qdata)
        except Exception as exc:
            self.log_error("error, failing closed (SERVFAIL)", exc)
            msg = qstate.return_msg
            self.servfail(id, qstate)
            if event == self.event_moddone:
                self.uncache(qstate, msg.rep if msg is not None else None)
            return True
        self.set_state(qstate, id, self.module_error)
        return True

    def on_query(self, id: int, qstate: Any, qdata: Any) -> bool:  # noqa: A002
        if qstate.is_valrec:
            self.set_state(qstate, id, self.wait_module)
            return True
        qinfo = qstate.qinfo
        try:
            wire = qinfo.qname
            qname = decode_name(wire)
        except WireNameError as exc:
            self.log_error("query name refused, SERVFAIL", exc)
            self.service.offence(client(qstate), "malformed query name")
            self.servfail(id, qstate)
            return True
        if not self.name_allowed(qname):
            # Blocked: only a client's query gets the blocked answer (counted, reported); the
            # resolver's own (prefetch) goes on and its answer is refused in MODDONE.
            asker = client(qstate)
            if asker is not None:
                qtype = qinfo.qtype
                if not self.service.check_query(qname, asker, qtype).allowed:
                    self.reply_blocked(id, qstate, qname, qtype)
                    return True
        # The decoded name travels with the query to MODDONE (qdata lives as long as the
        # query), keyed by its wire form: a changed qinfo (never seen; cheap to guard) is
        # decoded afresh.
        qdata["nt_q"] = (wire, qname)
        self.set_state(qstate, id, self.wait_module)
        return True

    def on_answer(self, id: int, qstate: Any, qdata: Any) -> bool:  # noqa: A002
        msg = qstate.return_msg
        if qstate.is_valrec or msg is None:
            self.set_state(qstate, id, self.finished)
            return True
        rep = msg.rep
        if rep is None:
            self.set_state(qstate, id, self.finished)
            return True
        asker = client(qstate)
        qinfo = qstate.qinfo
        wire = qinfo.qname
        rcode = qstate.return_rcode or (rep.flags & 0xF)
        try:
            known = qdata.get("nt_q") if qdata is not None else None
            qname = known[1] if known is not None and known[0] == wire else decode_name(wire)
            answer = Answer(qname, qinfo.qtype, rcode, Security.from_unbound(rep.security),
                            records(rep, rep.an_numrrsets, 0, wire, qname), asker, Source.RESOLVED)
        except WireNameError as exc:
            self.log_error("answer with a name that has no exact form refused, SERVFAIL", exc)
            self.servfail(id, qstate)
            self.uncache(qstate, rep)
            return True
        decision: Decision
        if self.per_client:
            decision = self.authorize_answer(answer, clients(qstate))
        else:
            decision = self.authorize_answer(answer)
        if decision.error is not None:
            self.servfail(id, qstate)
            self.uncache(qstate, rep)  # else the next client gets the ungranted answer from cache
        elif decision.verdict.replace_answer:
            # The iterator and validator stored the real answer before we saw it: remove it,
            # or the next client gets it from cache (operate() never sees cache hits).
            self.uncache(qstate, rep)
            if asker is not None:
                self.reply_blocked(id, qstate, answer.qname, answer.qtype)
            else:
                self.servfail(id, qstate)   # prefetch: nobody waits; nothing may be stored
        else:
            self.set_state(qstate, id, self.finished)
        return True

    def servfail(self, id: int, qstate: Any) -> None:  # noqa: A002
        qstate.return_msg = None
        qstate.return_rcode = self.rcode_servfail
        self.set_state(qstate, id, self.finished)
