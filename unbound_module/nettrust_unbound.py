"""NetTrust's Unbound module (pythonmod script).

An adapter and nothing more: it turns Unbound's objects into ``nettrust_core`` values, calls the
core, and carries out what the core decided.  No policy and no firewall code live here.

Load it with ``module-config: "python validator iterator"`` (the only order in which the module
sees the validated DNSSEC status) and ``python-script: <this file>``.  The core is imported from
the directory above this file (a venv's site-packages, or the source tree).  The configuration
comes from ``$NETTRUST_CONFIG`` (default ``/etc/nettrust/nettrust.toml``).

Unbound 1.17.1 must be restarted, not reloaded, after any change.
"""

import os
import site
import socket
import sys
import traceback

# __file__ exists only while the script loads; keep what we need from it now.
_HERE = os.path.dirname(os.path.abspath(__file__))
site.addsitedir(os.path.dirname(_HERE))
if "/usr/lib/python3/dist-packages" not in sys.path:
    sys.path.append("/usr/lib/python3/dist-packages")   # python3-nftables, for the control plane

import logging  # noqa: E402
from ipaddress import IPv4Address, IPv6Address  # noqa: E402

from nettrust_core.answer import A, AAAA, CNAME, DNAME, Answer, Record, Security, Source, normalize  # noqa: E402
from nettrust_core.service import Service, config_path, setup_logging  # noqa: E402
from nettrust_core.config import load_config  # noqa: E402

_service = None
_ADDR_TYPE = {A: IPv4Address, AAAA: IPv6Address}   # raise ValueError unless 4 / 16 bytes


def _unbound_log(level, text):
    if level >= logging.ERROR:
        log_err(text)
    elif level >= logging.WARNING:
        log_warn(text)
    else:
        log_info(text)


# -- lifecycle -------------------------------------------------------------------------------
def init_standard(id, env):
    global _service
    if _under_checkconf():
        # unbound-checkconf runs init too: validate the config, touch nothing.
        load_config(config_path())
        log_info("nettrust: configuration %s is valid (checkconf)" % config_path())
        return True
    try:
        service = Service.from_file()
        setup_logging(service.config, _unbound_log)
        service.start(unbound_cache_max_ttl=int(env.cfg.max_ttl))
    except Exception as exc:
        log_err("nettrust: cannot start: %s" % exc)
        raise
    _service = service
    register_inplace_cb_reply_local(_on_local_answer, env, id)
    log_info("nettrust: ready, config %s, instance %d of %d; adopting live grants in the background"
             % (service.config.path, service.instance, service.config.firewall.instances))
    return True


def _under_checkconf():
    try:
        with open("/proc/self/comm") as f:
            return f.read().strip() == "unbound-checkconf"
    except OSError:
        return False


def init(id, cfg):
    raise RuntimeError("nettrust needs init_standard (Unbound >= 1.9)")


def deinit(id):
    global _service
    service, _service = _service, None
    if service is not None:
        service.stop()
        log_info("nettrust: stopped")
    return True


def inform_super(id, qstate, superqstate, qdata):
    return True


# -- the answer path -------------------------------------------------------------------------
def operate(id, event, qstate, qdata):
    try:
        if event == MODULE_EVENT_NEW or event == MODULE_EVENT_PASS:
            return _on_query(id, qstate)
        if event == MODULE_EVENT_MODDONE:
            return _on_answer(id, qstate)
    except Exception:
        log_err("nettrust: error, failing closed (SERVFAIL): " + traceback.format_exc().replace("\n", " | "))
        _servfail(id, qstate)
        return True
    qstate.ext_state[id] = MODULE_ERROR
    return True


def _on_query(id, qstate):
    client = _client(qstate)
    if client is not None and not qstate.is_valrec:
        qname = normalize(qstate.qinfo.qname_str)
        if not _service.check_query(qname, client, qstate.qinfo.qtype).allowed:
            _reply_blocked(id, qstate, qname, qstate.qinfo.qtype)
            return True
    qstate.ext_state[id] = MODULE_WAIT_MODULE
    return True


def _on_answer(id, qstate):
    msg = qstate.return_msg
    if qstate.is_valrec or msg is None or msg.rep is None:
        qstate.ext_state[id] = MODULE_FINISHED
        return True
    rep = msg.rep
    client = _client(qstate)
    rcode = qstate.return_rcode or (rep.flags & 0xF)
    answer = Answer(normalize(qstate.qinfo.qname_str), qstate.qinfo.qtype, rcode,
                    Security(rep.security), _records(rep, rep.an_numrrsets), client, Source.RESOLVED)
    decision = _service.authorize(answer)
    if decision.error is not None:
        _servfail(id, qstate)
    elif decision.verdict.replace_answer and client is not None:
        _reply_blocked(id, qstate, answer.qname, answer.qtype)
    else:
        qstate.ext_state[id] = MODULE_FINISHED
    return True


def _on_local_answer(qinfo, qstate, rep, rcode, edns, opt_list_out, region, **kwargs):
    """local-data answers never reach operate(); grant them here, before they are sent."""
    try:
        if rep is None or _service is None:
            return True
        repinfo = kwargs.get("repinfo")
        client = repinfo.addr if repinfo is not None else None
        answer = Answer(normalize(qinfo.qname_str), qinfo.qtype, rcode, Security.INSECURE,
                        _records(rep, rep.an_numrrsets), client, Source.LOCAL)
        _service.authorize(answer)
    except Exception:
        log_err("nettrust: local answer not granted: " + traceback.format_exc().replace("\n", " | "))
    return True


# -- translation -----------------------------------------------------------------------------
def _records(rep, count):
    """Answer-section records as core values; undecodable rdata is skipped, never raised."""
    records = []
    for i in range(min(count, rep.rrset_count)):
        rrset = rep.rrsets[i]
        rtype = socket.ntohs(rrset.rk.type)
        if rtype not in (A, AAAA, CNAME, DNAME):
            continue
        owner = normalize(rrset.rk.dname_str)
        data = rrset.entry.data
        for j in range(data.count):
            rd = data.rr_data[j]
            try:
                if rtype == A or rtype == AAAA:
                    value = _ADDR_TYPE[rtype](rd[2:])    # from wire bytes: no text round trip
                else:
                    value = normalize(dnameAsStr(rd[2:]))
            except (ValueError, OSError, TypeError):
                continue
            records.append(Record(owner, rtype, int(data.rr_ttl[j]), value))
    return tuple(records)


def _client(qstate):
    mesh = qstate.mesh_info
    if mesh is None:
        return None
    reply = mesh.reply_list
    if reply is None:
        return None
    return reply.query_reply.addr


# -- answers the module makes itself ---------------------------------------------------------
def _reply_blocked(id, qstate, qname, qtype):
    resp = _service.blocked_response(qname, qtype)
    if not resp.answer and not resp.authority:
        qstate.return_msg = None
        qstate.return_rcode = resp.rcode
        qstate.ext_state[id] = MODULE_FINISHED
        return
    msg = DNSMessage(qstate.qinfo.qname_str, qtype, RR_CLASS_IN, PKT_QR | PKT_RA)
    msg.answer.extend(resp.answer)
    msg.authority.extend(resp.authority)
    if not msg.set_return_msg(qstate):
        _servfail(id, qstate)
        return
    rep = qstate.return_msg.rep
    rep.security = sec_status_insecure   # left unchecked, Unbound would turn it into SERVFAIL
    rep.flags = (rep.flags & ~0xF) | resp.rcode
    qstate.return_rcode = RCODE_NOERROR
    qstate.ext_state[id] = MODULE_FINISHED


def _servfail(id, qstate):
    qstate.return_msg = None
    qstate.return_rcode = RCODE_SERVFAIL
    qstate.ext_state[id] = MODULE_FINISHED
