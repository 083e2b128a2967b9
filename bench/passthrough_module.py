"""A pythonmod script that does nothing but pass each query on and each answer back.

Unbound runs it as ``python validator iterator`` with one thread, like NetTrust: the
difference between this and plain Unbound is what any Python module costs; the difference
between this and NetTrust is what NetTrust's own answer path costs.
"""


def init_standard(id, env):  # noqa: A002 (pythonmod's signature)
    return True


def init(id, cfg):  # noqa: A002
    return True


def deinit(id):  # noqa: A002
    return True


def inform_super(id, qstate, superqstate, qdata):  # noqa: A002
    return True


def operate(id, event, qstate, qdata):  # noqa: A002
    if event in (MODULE_EVENT_NEW, MODULE_EVENT_PASS):  # noqa: F821 (pythonmod's globals)
        qstate.ext_state[id] = MODULE_WAIT_MODULE  # noqa: F821
    elif event == MODULE_EVENT_MODDONE:  # noqa: F821
        qstate.ext_state[id] = MODULE_FINISHED  # noqa: F821
    else:
        qstate.ext_state[id] = MODULE_ERROR  # noqa: F821
    return True
