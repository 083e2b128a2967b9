"""NetTrust's Unbound module (pythonmod script).

An adapter and nothing more: it turns Unbound's objects into ``nettrust_core`` values, calls the
core, and carries out what the core decided.  No policy and no firewall code live here.  The
answer path's entry, ``operate``, is compiled with the core (``nettrust_core.unbound_operate``);
this script hands it pythonmod's names and the steps that need pythonmod's own classes.

Load it with ``module-config: "python validator iterator"`` (the only order in which the module
sees the validated DNSSEC status) and ``python-script: <this file>``.  The core is imported from
the directory above this file (a venv's site-packages, or the source tree).  The configuration
comes from ``$NETTRUST_CONFIG`` (default ``/etc/nettrust/nettrust.toml``).

Unbound 1.17.1 must be restarted, not reloaded, after any change.
"""

import os
import site
import sys
import time

# __file__ exists only while the script loads; keep what we need from it now.
_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)


def _own_tree_first():
    """Put this file's own tree (a venv's site-packages with its .pth files, or the source tree)
    before everything else on sys.path.  Unbound puts '.', /etc/unbound and its `directory:`
    there first: a ``nettrust_core`` lying in one of those must never be the one imported."""
    before = list(sys.path)
    site.addsitedir(_ROOT)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = [_ROOT] + [p for p in added if p != _ROOT] + [p for p in before if p != _ROOT]
    return (_ROOT, *added)


_TREE = _own_tree_first()
if "/usr/lib/python3/dist-packages" not in sys.path:
    sys.path.append("/usr/lib/python3/dist-packages")   # python3-nftables, for the control plane

import logging  # noqa: E402

import nettrust_core  # noqa: E402

if not any(os.path.abspath(nettrust_core.__file__).startswith(os.path.join(os.path.abspath(t), ""))
           for t in _TREE):
    raise ImportError(f"nettrust_core was imported from {nettrust_core.__file__}, outside this "
                      f"module's tree {_ROOT} (a stray copy on sys.path?); refusing to run it")
from nettrust_core.answer import Answer, Security, Source  # noqa: E402
from nettrust_core.collector import settle as settle_collector  # noqa: E402
from nettrust_core.logs import FailureLog, setup_logging  # noqa: E402
from nettrust_core.service import Service, config_path  # noqa: E402
from nettrust_core.config import load_config  # noqa: E402
from nettrust_core.unbound_settings import own_cap_eff, own_conf_path, problems  # noqa: E402
from nettrust_core.unbound_operate import Operate  # noqa: E402
from nettrust_core.unbound_reply import addresses, records as _records, under_checkconf  # noqa: E402
from nettrust_core.unbound_reply import use_unbound_accessors  # noqa: E402
from nettrust_core.wire import decode_name  # noqa: E402

try:
    # unboundmodule.py's wrappers build a Python object for every array or address access before
    # reaching _unboundmodule's C accessors; go to those directly.  ``qstate.ext_state[id] = s``:
    # 1.2-1.3 µs against 0.35-0.4 µs, twice per cache miss (measured inside Unbound 1.17.1,
    # bench/run's miss phase); the answer's records and clients: nettrust_core.unbound_reply.
    import _unboundmodule
    _set_state = _unboundmodule._ext_state_set
    use_unbound_accessors(_unboundmodule)
except ImportError:         # outside Unbound (bench/answer_path.py's stand-ins): the documented way
    def _set_state(qstate, id, state):
        qstate.ext_state[id] = state

_service = None
#: Answer-path failures: one line per kind, at most 3 per 10 s each (nettrust_core.logs).
_log_error = FailureLog(lambda text: log_err(text))


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
    checkconf = under_checkconf(env)
    if checkconf:
        # unbound-checkconf runs init too: validate the config, touch nothing (no firewall).
        service_config = load_config(config_path())
        found = problems({"module-config": [env.cfg.module_conf]}, service_config)
        if found:
            log_err("nettrust: " + found[0])
            raise RuntimeError(found[0])
        log_info("nettrust: configuration %s is valid (checkconf: %s; firewall untouched)"
                 % (config_path(), checkconf))
        return True
    try:
        service = Service.from_file()
        setup_logging(service.config, _unbound_log)
        service.start(unbound_cache_max_ttl=int(env.cfg.max_ttl), unbound_conf=own_conf_path(),
                      module_config=env.cfg.module_conf, euid=os.geteuid(), cap_eff=own_cap_eff())
    except Exception as exc:
        log_err("nettrust: cannot start: %s" % exc)
        raise
    _service = service
    _path.start(service, globals())
    settle_collector()
    register_inplace_cb_reply_local(_on_local_answer, env, id)
    if service.per_client:
        # Gateway mode only: cache hits never reach operate(), and this is the one place that
        # sees the client of a hit (output mode needs no callback: the cache-lifetime invariant).
        register_inplace_cb_reply_cache(_on_cache_hit, env, id)
    log_info("nettrust: ready, config %s, instance %d of %d; adopting live grants in the background;"
             " answer path %s" % (service.config.path, service.instance, service.config.firewall.instances,
                                   nettrust_core.compiled.STATUS))
    return True


def init(id, cfg):
    raise RuntimeError("nettrust needs init_standard (Unbound >= 1.9)")


def deinit(id):
    global _service
    service, _service = _service, None
    _path.stop()
    if service is not None:
        service.stop()
        log_info("nettrust: stopped")
    return True


def inform_super(id, qstate, superqstate, qdata):
    return True


# -- the answer path -------------------------------------------------------------------------
# operate() itself is compiled with the core (nettrust_core.unbound_operate): the Operate made at
# the end of this file, once the adapter's own helpers below exist.


def _uncache(qstate, rep):
    """Expire this query's cached message and its RRsets (TTL 0): the next client's query
    misses the cache and reaches operate() again.  pythonmod_utils.c:invalidateQueryInCache.

    Skipped for a message with TTL 0, which Unbound does not store (the C function would log
    "qinfo is not in cache" at every such query, beyond our rate limiter)."""
    try:
        qstate.no_cache_store = 1
        if rep is None or int(rep.ttl) <= 0:
            return
        invalidateQueryInCache(qstate, qstate.qinfo)
    except Exception as exc:
        _log_error("cannot invalidate the cached answer", exc)


def _on_local_answer(qinfo, qstate, rep, rcode, edns, opt_list_out, region, **kwargs):
    """local-data answers never reach operate(); grant them here, before they are sent."""
    try:
        if rep is None or _service is None:
            return True
        repinfo = kwargs.get("repinfo")
        client = repinfo.addr if repinfo is not None else None
        qname = decode_name(qinfo.qname)
        # Only names the administrator declared (local-data) are LOCAL; RPZ and auth-zone
        # answers arrive here too and are judged like any resolved answer (rebinding guard,
        # require_dnssec): a feed or zone transfer is not the administrator.
        source = Source.LOCAL if _service.local_names.declared(qname) else Source.RESOLVED
        answer = Answer(qname, qinfo.qtype, rcode, Security.INSECURE,
                        _records(rep, rep.an_numrrsets), client, source)
        _service.authorize_answer(answer)
    except Exception as exc:
        _log_error("local answer not granted", exc)
    return True


def _on_cache_hit(qinfo, qstate, rep, rcode, edns, opt_list_out, region, **kwargs):
    """Gateway mode: a message-cache hit, before it is sent to ``repinfo.addr``.

    Cheap first: the answer's addresses against the per-client grants this process already
    wrote (a dictionary lookup each); only when a grant would get longer is the answer judged
    in full and written.  The cached reply's own security status is checked again: a CD-bit
    client can be served bogus data from cache, and bogus never grants.  A callback cannot veto
    the answer: on a failure the client gets it without a grant (its connects are refused).
    TTLs in the cached reply are absolute (epoch seconds).
    """
    try:
        if rep is None or _service is None:
            return True
        repinfo = kwargs.get("repinfo")
        if repinfo is None:
            return True
        if rep.security == sec_status_bogus:
            _service.authorizer.counters["cache_hits_bogus"] += 1
            return True
        client = repinfo.addr
        # The same cached message (its absolute expiry) for the same client, judged already
        # and still covered by its grants (the core says when): no decoding.
        now = int(time.time())
        key = (client, qinfo.qname, qinfo.qtype, rep.ttl)
        if _service.hit_known(key, now):
            return True
        found = addresses(rep, now)
        if not found or _service.cache_hit_granted(client, found):
            _service.hit_done(key)
            return True
        answer = Answer(decode_name(qinfo.qname), qinfo.qtype, rcode or (rep.flags & 0xF),
                        Security.from_unbound(rep.security),
                        _records(rep, rep.an_numrrsets, now), client, Source.CACHE)
        if _service.authorize_answer(answer, (client,)).error is None:
            _service.hit_done(key)
    except Exception as exc:
        _log_error("cache hit not granted", exc)
    return True


# -- answers the module makes itself ---------------------------------------------------------
def _reply_blocked(id, qstate, qname, qtype):
    resp = _service.blocked_response(qname, qtype)
    if not resp.answer and not resp.authority:
        qstate.return_msg = None
        qstate.return_rcode = resp.rcode
        _set_state(qstate, id, MODULE_FINISHED)
        return
    msg = DNSMessage(qname + ".", qtype, RR_CLASS_IN, PKT_QR | PKT_RA)
    msg.answer.extend(resp.answer)
    msg.authority.extend(resp.authority)
    if not msg.set_return_msg(qstate):
        _servfail(id, qstate)
        return
    rep = qstate.return_msg.rep
    rep.security = sec_status_insecure   # left unchecked, Unbound would turn it into SERVFAIL
    rep.flags = (rep.flags & ~0xF) | resp.rcode
    qstate.return_rcode = RCODE_NOERROR
    _set_state(qstate, id, MODULE_FINISHED)


_path = Operate(_set_state, _log_error, _reply_blocked, _uncache)
#: What pythonmod calls for queries and answers (looked up once the script has run).
operate = _path.operate
_servfail = _path.servfail
