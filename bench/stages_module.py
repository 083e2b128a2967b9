"""NetTrust's adapter with its stages timed inside Unbound (``bench/run --profile``).

Unbound loads this as its ``python-script``, staged beside ``unbound_module/nettrust_unbound.py``.
It runs the real adapter in a namespace of its own (seeded with pythonmod's globals), hands
Unbound the adapter's ``operate`` wrapped in timers (one for queries, one for answers), and times
the core's judgement of each answer and the firewall write within it the same way (what an
answer costs outside the judgement is Unbound's objects read and the verdict carried out).  Each
timer reads ``CLOCK_THREAD_CPUTIME_ID`` (the Unbound worker's own CPU, the kernel's share of its
system calls included) before and after.

Why (bench/stages.py says what is printed): py-spy sees no frame for the compiled core and
charges its time to the last interpreted frame, and the in-process driver
(bench/answer_path.py) runs the path hot in a tight loop, where it costs less than between
Unbound's own work.  ``deinit`` writes the totals as JSON to ``$NETTRUST_STAGES_OUT``.
"""

import json
import os
import runpy
import time

_tt = time.thread_time_ns
#: stage -> [nanoseconds, calls]
STAGES = {}


def _timed(name, fn):
    cell = STAGES.setdefault(name, [0, 0])

    def timed(*args, **kwargs):
        t = _tt()
        try:
            return fn(*args, **kwargs)
        finally:
            cell[0] += _tt() - t
            cell[1] += 1
    return timed


def _timer_cost():
    """ns one timer adds around a call, measured here on a call that does nothing."""
    probe = _timed("_probe", lambda: None)
    t = _tt()
    for _ in range(20000):
        probe()
    cost = (_tt() - t) / 20000
    del STAGES["_probe"]
    return cost


# runpy hands back a copy of the adapter's namespace; its functions' own globals are the live one.
_ADAPTER = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "nettrust_unbound.py"),
    init_globals=dict(globals()), run_name="nettrust_adapter")["init_standard"].__globals__
_new = _timed("operate NEW", _ADAPTER["operate"])
_moddone = _timed("operate MODDONE", _ADAPTER["operate"])
_TIMER_NS = 0.0


def init_standard(id, env):  # noqa: A002 (pythonmod's signature)
    global _TIMER_NS
    ok = _ADAPTER["init_standard"](id, env)
    service = _ADAPTER["_service"]
    if service is not None:
        service.authorize_answer = _timed("authorize", service.authorize_answer)
        backend = service.authorizer.writer.backend
        backend.grant = _timed("firewall write", backend.grant)
        _ADAPTER["_path"].start(service, _ADAPTER)     # operate reads the timed judgement again
    _TIMER_NS = _timer_cost()
    return ok


def init(id, cfg):  # noqa: A002
    return _ADAPTER["init"](id, cfg)


def deinit(id):  # noqa: A002
    out = os.environ.get("NETTRUST_STAGES_OUT")
    if out:
        with open(out, "w") as f:
            json.dump({"stages": STAGES, "timer_ns": _TIMER_NS}, f)
    return _ADAPTER["deinit"](id)


def inform_super(id, qstate, superqstate, qdata):  # noqa: A002
    return True


def operate(id, event, qstate, qdata):  # noqa: A002
    if event == MODULE_EVENT_MODDONE:  # noqa: F821 (pythonmod's globals)
        return _moddone(id, event, qstate, qdata)
    return _new(id, event, qstate, qdata)
