"""The answer path's mypyc build (nettrust_core/compiled.py): used when built and current, and
pure Python otherwise -- never a broken import."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import nettrust_core
from nettrust_core import compiled
from nettrust_core.answer import A, AAAA, CNAME, Record
from nettrust_core.unbound_reply import addresses, client, clients, records
from nettrust_core.wire import WireNameError, encode_name

ROOT = Path(__file__).resolve().parents[2]
PY = "/usr/bin/python3"          # the interpreter Unbound embeds
# The unit tests of what the build compiles: run once more on pure Python.
ANSWER_PATH_TESTS = ["tests/unit/test_wire.py", "tests/unit/test_policy.py", "tests/unit/test_caps.py",
                     "tests/unit/test_netlink_encoding.py", "tests/unit/test_decision_record.py",
                     "tests/unit/test_grant_lifecycle.py", "tests/unit/test_resolver_guards.py",
                     "tests/unit/test_networks.py", "tests/unit/test_patterns.py",
                     "tests/unit/test_properties.py", "tests/unit/test_compiled.py"]


def _probe(env_extra, cwd=ROOT):
    code = ("import nettrust_core.compiled as c, importlib\n"
            "mods = [importlib.import_module(m) for m in c.MODULES]\n"
            "print(c.STATUS); print(sum(m.__file__.endswith('.py') for m in mods))\n")
    env = {"PATH": "/usr/bin:/bin", **env_extra}
    out = subprocess.run([PY, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    status, pure = out.stdout.strip().splitlines()
    return status, int(pure)


def test_nettrust_pure_imports_every_module_from_its_source():
    status, pure = _probe({"NETTRUST_PURE": "1"})
    assert status == "pure Python (NETTRUST_PURE set)"
    assert pure == len(compiled.MODULES)


def test_the_build_is_used_when_current():
    files, status = compiled.check()
    if files is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI: ./run-tests builds the compiled answer path, but: {status}")
        pytest.skip(status)
    status, pure = _probe({})
    assert status.startswith("compiled (mypyc)") and pure == 0       # control: all compiled
    if os.environ.get("NETTRUST_PURE", "") in ("", "0"):
        assert compiled.ACTIVE and nettrust_core.wire.__file__.endswith(compiled.importlib.machinery
                                                                         .EXTENSION_SUFFIXES[0])


def test_answer_path_unit_tests_pass_on_pure_python():
    if os.environ.get("NETTRUST_PURE", "") not in ("", "0"):
        pytest.skip("this run is the pure one")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                          *ANSWER_PATH_TESTS], cwd=ROOT, env={**os.environ, "NETTRUST_PURE": "1"},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:]
    assert " passed" in out.stdout


@pytest.fixture
def tree_copy(tmp_path):
    """nettrust_core copied (sources only) into tmp_path, for builds that must not be used."""
    shutil.copytree(ROOT / "nettrust_core", tmp_path / "nettrust_core",
                    ignore=shutil.ignore_patterns("_mypyc", "__pycache__"))
    return tmp_path


def _fake_build(pkg: Path, hashes=None):
    """FAKE: a compiled build's manifest and files, whose extensions are garbage bytes."""
    suffix = compiled.importlib.machinery.EXTENSION_SUFFIXES[0]
    build = pkg / "_mypyc"
    mods = hashes or {m: compiled.digest(compiled.source_path(m, pkg)) for m in compiled.MODULES}
    for m in list(mods) + [compiled.GROUP_LIB]:
        f = build.joinpath(*m.split(".")).with_name(m.rsplit(".", 1)[-1] + suffix)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"not an ELF file")
    import json
    (build / compiled.MANIFEST).write_text(json.dumps({"suffix": suffix, "modules": mods}))
    return build


def test_a_build_that_does_not_load_leaves_pure_python_working(tree_copy):
    _fake_build(tree_copy / "nettrust_core")
    status, pure = _probe({}, cwd=tree_copy)
    assert status.startswith("pure Python: compiled build does not load"), status
    assert pure == len(compiled.MODULES)


def test_a_changed_source_disables_the_whole_build(tree_copy):
    pkg = tree_copy / "nettrust_core"
    build = _fake_build(pkg)
    assert compiled.check(build, pkg)[0] is not None                 # control: it would be used
    with open(pkg / "policy.py", "a") as f:
        f.write("\n# edited after the compile\n")
    files, status = compiled.check(build, pkg)
    assert files is None and "policy.py changed since it was compiled" in status


def test_a_build_for_another_interpreter_is_not_used(tree_copy):
    pkg = tree_copy / "nettrust_core"
    build = _fake_build(pkg)
    manifest = build / compiled.MANIFEST
    manifest.write_text(manifest.read_text().replace(".cpython-311", ".cpython-312"))
    files, status = compiled.check(build, pkg)
    assert files is None and "this interpreter needs" in status


# -- the adapter's translation (nettrust_core/unbound_reply.py) ----------------------------------
class _Obj:
    """FAKE: pythonmod's SWIG objects, attribute for attribute."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _rrset(owner, rtype, rdatas, ttl):
    import socket
    data = _Obj(count=len(rdatas), rr_data=[len(r).to_bytes(2, "big") + r for r in rdatas],
                rr_ttl=[ttl] * len(rdatas))
    return _Obj(rk=_Obj(type=socket.htons(rtype), dname=encode_name(owner)), entry=_Obj(data=data))


def _rep(*rrsets):
    return _Obj(rrsets=list(rrsets), rrset_count=len(rrsets), an_numrrsets=len(rrsets))


def test_records_translate_an_answer_and_skip_malformed_addresses():
    rep = _rep(_rrset("www.example.com", CNAME, [encode_name("cdn.example.net")], 300),
               _rrset("cdn.example.net", A, [bytes([192, 0, 2, 1]), b"\1\2\3"], 60),
               _rrset("cdn.example.net", AAAA, [bytes(15) + b"\1"], 1060))
    got = records(rep, rep.an_numrrsets, 1000)
    assert [(r.owner, r.rtype, r.ttl, str(r.data)) for r in got] == [
        ("www.example.com", CNAME, 0, "cdn.example.net"), ("cdn.example.net", A, 0, "192.0.2.1"),
        ("cdn.example.net", AAAA, 60, "::1")]
    assert all(isinstance(r, Record) for r in got)
    assert [(str(a), t) for a, t in addresses(rep, 1000)] == [("192.0.2.1", -940), ("::1", 60)]


def test_records_refuse_an_answer_with_a_name_that_has_no_exact_form():
    bad = b"\x03w w\x00"
    rep = _rep(_Obj(rk=_Obj(type=_rrset("x", A, [], 0).rk.type, dname=bad),
                    entry=_Obj(data=_Obj(count=1, rr_data=[b"\0\4" + bytes(4)], rr_ttl=[5]))))
    with pytest.raises(WireNameError):
        records(rep, 1)


def test_clients_walk_the_reply_list():
    second = _Obj(query_reply=_Obj(addr="192.0.2.8"), next=None)
    first = _Obj(query_reply=_Obj(addr="192.0.2.7"), next=second)
    q = _Obj(mesh_info=_Obj(reply_list=first))
    assert client(q) == "192.0.2.7" and clients(q) == ["192.0.2.7", "192.0.2.8"]
    none = _Obj(mesh_info=None)
    assert client(none) is None and clients(none) == []


def test_unbound_accessors_read_the_same_answer_and_clients(monkeypatch):
    """Inside Unbound the readers call _unboundmodule's C accessors directly
    (use_unbound_accessors); FAKE: accessors of that shape over the stand-ins, counting calls.
    The answer and the clients read are the same as through the attribute paths, and the
    accessors were the way in (not the attribute paths, which the fake objects still offer)."""
    from nettrust_core import unbound_reply
    for attr in ("rrset", "rr_data", "rr_ttl", "sockaddr"):
        monkeypatch.setattr(unbound_reply.ACCESS, attr, getattr(unbound_reply.ACCESS, attr))
    rep = _rep(_rrset("cdn.example.net", A, [bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])], 60),
               _rrset("cdn.example.net", AAAA, [bytes(15) + b"\1"], 1060))
    second = _Obj(query_reply=_Obj(addr="192.0.2.8", _addr=_Obj(text="192.0.2.8")), next=None)
    q = _Obj(mesh_info=_Obj(reply_list=_Obj(
        query_reply=_Obj(addr="192.0.2.7", _addr=_Obj(text="192.0.2.7")), next=second)))
    before = (records(rep, 2, 1000), addresses(rep, 1000), client(q), clients(q))
    calls = []

    def counted(name, fn):
        def call(*args):
            calls.append(name)
            return fn(*args)
        return call
    swig = _Obj(_rrset_rrsets_get=counted("rrset", lambda r, i: r.rrsets[i]),
                _get_data_rr_data=counted("rr_data", lambda d, j: d.rr_data[j]),
                _get_data_rr_ttl=counted("rr_ttl", lambda d, j: d.rr_ttl[j]),
                _sockaddr_storage_addr=counted("addr", lambda ss: ss.text))
    unbound_reply.use_unbound_accessors(swig)
    assert (records(rep, 2, 1000), addresses(rep, 1000), client(q), clients(q)) == before
    assert {name: calls.count(name) for name in set(calls)} == {
        "rrset": 4, "rr_data": 6, "rr_ttl": 6, "addr": 3}


def test_no_interpreted_class_subclasses_a_compiled_one():
    """mypyc: an interpreted class cannot inherit from a compiled one (TypeError at the first
    instance, e.g. the iptables backend's IpsetSocket once netlink.core was compiled)."""
    import importlib
    import inspect
    import pkgutil
    if not compiled.ACTIVE:
        if os.environ.get("CI") == "true" and os.environ.get("NETTRUST_PURE", "") in ("", "0"):
            pytest.fail(f"CI: the compiled answer path is not in use: {compiled.STATUS}")
        pytest.skip(compiled.STATUS)
    bad = []
    for info in pkgutil.walk_packages(nettrust_core.__path__, "nettrust_core."):
        if info.name in compiled.MODULES or "._mypyc" in info.name:
            continue
        try:
            mod = importlib.import_module(info.name)
        except ImportError:
            continue                # an optional dependency (the dashboard's server) absent
        for name, cls in vars(mod).items():
            if inspect.isclass(cls) and cls.__module__ == info.name:
                bad += [f"{info.name}.{name} <- {b.__module__}.{b.__name__}"
                        for b in cls.__mro__[1:] if b.__module__ in compiled.MODULES
                        and not issubclass(b, BaseException)]
    assert bad == []


def test_written_out_dataclass_inits_match_their_fields():
    """A compiled value class spells its ``__init__`` out (native under mypyc; the generated one
    is not): its parameters must be the dataclass's fields, in order, with the same defaults,
    and it must set every one of them."""
    import ast

    checked = []
    for module in compiled.MODULES:
        path = Path(compiled.PACKAGE_DIR.parent, *module.split(".")).with_suffix(".py")
        for cls in ast.walk(ast.parse(path.read_text())):
            if not isinstance(cls, ast.ClassDef) or not any(
                    "dataclass" in ast.unparse(d) for d in cls.decorator_list):
                continue
            init = next((f for f in cls.body if isinstance(f, ast.FunctionDef)
                         and f.name == "__init__"), None)
            if init is None:
                continue
            fields = [(s.target.id, ast.unparse(s.value) if s.value is not None else None)
                      for s in cls.body if isinstance(s, ast.AnnAssign)
                      and isinstance(s.target, ast.Name)]
            args = init.args.args[1:]
            defaults = [None] * (len(args) - len(init.args.defaults)) + [
                ast.unparse(d) for d in init.args.defaults]
            assert [(a.arg, d) for a, d in zip(args, defaults, strict=True)] == fields, f"{module}.{cls.name}"
            assigned = [c.args[1].value for c in ast.walk(init) if isinstance(c, ast.Call)
                        and ast.unparse(c.func) == "object.__setattr__"]
            assert assigned == [name for name, _d in fields], f"{module}.{cls.name}"
            checked.append(cls.name)
    assert {"Record", "Answer", "NameCheck", "Verdict", "Decision"} <= set(checked)
