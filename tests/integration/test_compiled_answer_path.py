"""The compiled answer path inside a real Unbound (issue 17): the module says at start which one
it runs, and the compiled and the pure-Python (NETTRUST_PURE=1) paths both grant an answered
address before the answer is released and refuse an address no answer gave."""

import json
import os
from pathlib import Path

import pytest

from lab_util import direct, resolving_lab
from nettrust_core import compiled
from testbed.product import NetTrustHost

pytestmark = pytest.mark.integration

CLIENT = str(Path(__file__).with_name("client.py"))
CONFIG = '[grants]\nmin_ttl = "1s"\n'


@pytest.fixture(scope="module")
def lab():
    with resolving_lab() as lab:
        yield lab


def _connect(lab, *names):
    out = lab.run("host", ["/usr/bin/python3", CLIENT, "connect", "4", *names], timeout=120).stdout
    return json.loads(out)


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_the_running_answer_path_grants_and_refuses(lab, pure):
    files, why = compiled.check()
    if not pure and files is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI: ./run-tests builds the compiled answer path, but: {why}")
        pytest.skip(why)
    host = NetTrustHost(lab, CONFIG, name="pure" if pure else "compiled")
    if pure:
        plain_env = host.env
        host.env = lambda instance=0: {**plain_env(instance), "NETTRUST_PURE": "1"}
    host.start()
    try:
        log = host.log()
        said = "answer path pure Python (NETTRUST_PURE set)" if pure else "answer path compiled (mypyc)"
        assert said in log, log[-2000:]
        first = 300 if pure else 400
        results = _connect(lab, *[f"h{i}.fw.test" for i in range(first, first + 20)])
        failed = [r for r in results if not r["ok"]]
        assert len(results) == 20 and not failed, failed[:3]
        assert direct(lab, "198.18.10.10") == "ConnectionRefusedError"     # no answer gave it
    finally:
        lab.stop_unbound()
        host.nettrust("remove")
