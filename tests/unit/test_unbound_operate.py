"""nettrust_core/unbound_operate.py: ``operate`` as pythonmod calls it -- NEW, then MODDONE with
the same qdata -- on bench/answer_path.py's stand-ins for Unbound's objects, with a real Service
over the project's recording backend (what the answer path wrote, in memory)."""

from bench.answer_path import fake_qstate, fake_unbound_globals
from bench.configs import uncapped
from nettrust_core.config import load_config
from nettrust_core.firewall.recording import RecordingBackend
from nettrust_core.service import Service
from nettrust_core.unbound_operate import Operate


def _set_state(qstate, id, state):  # noqa: A002 (pythonmod's name)
    qstate.ext_state[id] = state


def test_an_answer_is_granted_before_release_and_a_stopped_module_fails_closed(tmp_path):
    conf = tmp_path / "nettrust.toml"
    conf.write_text(uncapped(""))
    written = RecordingBackend()
    service = Service(load_config(str(conf)), written)
    names, failures = fake_unbound_globals(), []
    path = Operate(_set_state, lambda text, exc: failures.append(text), None, None)
    path.start(service, names)

    q, qdata = fake_qstate(1, mixed=False), {}
    assert path.operate(0, names["MODULE_EVENT_NEW"], q, qdata) is True
    assert q.ext_state[0] == names["MODULE_WAIT_MODULE"]
    assert path.operate(0, names["MODULE_EVENT_MODDONE"], q, qdata) is True
    assert q.ext_state[0] == names["MODULE_FINISHED"] and q.return_msg is not None
    assert [str(g.address) for batch in written.batches for g in batch] == ["198.18.0.1"]

    # An event operate does not handle is an error for Unbound, not a pass.
    other = fake_qstate(2, mixed=False)
    assert path.operate(0, names["MODULE_EVENT_REPLY"], other, {}) is True
    assert other.ext_state[0] == names["MODULE_ERROR"]

    # After deinit (stop), nothing is judged or granted: every query fails closed.
    path.stop()
    late = fake_qstate(3, mixed=False)
    assert path.operate(0, names["MODULE_EVENT_NEW"], late, {}) is True
    assert late.return_msg is None and late.return_rcode == names["RCODE_SERVFAIL"]
    assert late.ext_state[0] == names["MODULE_FINISHED"]
    assert failures == ["error, failing closed (SERVFAIL)"]
    assert len(written.batches) == 1
