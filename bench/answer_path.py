"""The answer path alone, counted: the real adapter and core on a stream of cache-miss answers.

Wall-clock figures on the shared machines swing ±30 %; instruction counts do not.  This driver
loads the real ``unbound_module/nettrust_unbound.py`` and drives ``operate`` (NEW, then MODDONE)
for ``--answers`` distinct CNAME-free answers (A, or A + AAAA with ``--mixed``), each granting
new addresses, exactly as Unbound would for cache misses.

FAKE: Unbound's SWIG objects (``qstate``, ``reply_info``, ``ub_packed_rrset_key``, ...) cannot
exist outside the Unbound process; :class:`FakeQstate` and friends are plain Python stand-ins
with the same attribute names.  Their attribute reads are cheaper than SWIG's, so the figures
here are NetTrust's own Python cost without the SWIG accessor overhead (measured on the real
server by ``bench/run``).  Everything else is real: the configuration, the policy, the
tracker, the grants writer and, with ``--backend nft``, the nf_tables netlink writes into a
private network namespace (``unshare --net``, gone with the process).

Usage (as root for ``--backend nft``)::

    python3 bench/answer_path.py --answers 2000 [--mixed] [--backend nft|record] [--stats]
    python3 bench/answer_path.py --callgrind     # instructions per answer (valgrind), 2 runs
    python3 bench/answer_path.py --calls         # Python function calls per answer (cProfile)

The last line is a JSON summary (what ``bench/micro.py`` reads).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import runpy
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ADAPTER = REPO / "unbound_module" / "nettrust_unbound.py"
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(REPO)     # bench/profile.py would shadow the stdlib's profile (cProfile)


# -- FAKE: Unbound's objects, attribute for attribute ---------------------------------------
class _Obj:
    def __init__(self, **kw) -> None:
        self.__dict__.update(kw)


def _wire(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def _rrset(owner: str, rtype: int, rdatas: list[bytes], ttl: int) -> _Obj:
    data = _Obj(count=len(rdatas), rr_data=[len(r).to_bytes(2, "big") + r for r in rdatas],
                rr_ttl=[ttl] * len(rdatas))
    return _Obj(rk=_Obj(type=socket.htons(rtype), dname=_wire(owner)), entry=_Obj(data=data))


def fake_qstate(i: int, mixed: bool, client: str = "127.0.0.1") -> _Obj:
    """The ``i``-th cache-miss answer: ``n<i>.bench.test`` with one A (and one AAAA)."""
    name = f"n{i}.bench.test"
    v4 = bytes([198, 18 + ((i >> 16) & 1), (i >> 8) & 255, i & 255])   # as bench/zone.py
    rrsets = [_rrset(name, 1, [v4], 300)]
    if mixed:
        rrsets.append(_rrset(name, 28, [b"\x20\x01\x0d\xb8" + bytes(8) + v4], 300))
    rep = _Obj(flags=0x8180, security=3, an_numrrsets=len(rrsets), rrset_count=len(rrsets),
               rrsets=rrsets, ttl=300)
    reply = _Obj(query_reply=_Obj(addr=client), next=None)
    return _Obj(qinfo=_Obj(qname=_wire(name), qtype=1), is_valrec=0, return_rcode=0,
                return_msg=_Obj(rep=rep), mesh_info=_Obj(reply_list=reply), ext_state=[0],
                no_cache_store=0)


def fake_unbound_globals() -> dict:
    """What pythonmod puts into the script's namespace (the names the adapter uses)."""
    g: dict = {}
    for i, n in enumerate(("NEW", "PASS", "REPLY", "NOREPLY", "CAPSFAIL", "MODDONE", "ERROR")):
        g[f"MODULE_EVENT_{n}"] = i
    for i, n in enumerate(("INITIAL", "WAIT_REPLY", "WAIT_MODULE", "RESTART_NEXT", "WAIT_SUBQUERY",
                           "ERROR", "FINISHED")):
        g[f"MODULE_{n}"] = i
    g.update(sec_status_unchecked=0, sec_status_bogus=1, sec_status_indeterminate=2,
             sec_status_insecure=3, sec_status_secure=5, RCODE_NOERROR=0, RCODE_SERVFAIL=2,
             RCODE_NXDOMAIN=3, RCODE_REFUSED=5, PKT_QR=0x8000, PKT_RA=0x80, RR_CLASS_IN=1)
    quiet = lambda *a, **k: None  # noqa: E731
    g.update(log_info=quiet, log_warn=quiet, log_err=lambda t: print(t, file=sys.stderr),
             register_inplace_cb_reply_local=quiet, register_inplace_cb_reply_cache=quiet,
             invalidateQueryInCache=quiet, DNSMessage=None, mod_env={})
    return g


SO_SNDBUFFORCE = 32         # <asm-generic/socket.h>; Python's socket module does not name it


# -- the run --------------------------------------------------------------------------------
def load(backend_kind: str, stats: bool):
    """The real adapter with a real Service (the chosen backend), ruleset built, no threads."""
    from bench.configs import uncapped
    cfg_dir = Path(tempfile.mkdtemp(prefix="nt-answer-path-"))
    text = ""
    if stats:
        sock = cfg_dir / "report.sock"
        # The agent's listening socket, never accepted: the reporter connects and its records
        # queue in the connection (SOCK_SEQPACKET, as the agent's) as long as the buffer lasts.
        recv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        recv.bind(str(sock))
        recv.listen(4)
        globals()["_sink"] = recv
        text += f'[stats]\nenabled = true\nreport_socket = "{sock}"\n'
    conf = cfg_dir / "nettrust.toml"
    # As bench/run: every name is under bench.test, so lift the per-domain budget (else every
    # answer past the 4096th would time the refusing path, not the write).
    conf.write_text(uncapped(text))
    from nettrust_core.config import load_config
    from nettrust_core.service import Service
    config = load_config(str(conf))
    backend = None
    if backend_kind == "record":        # the project's in-memory backend (nothing written)
        from nettrust_core.firewall.recording import RecordingBackend
        backend = RecordingBackend()
    service = Service(config, backend)
    service.authorizer.backend.ensure()
    service.authorizer.tracker.complete = True       # as after adoption (no kernel look-ups)
    if stats:
        # Room for every record of the run in the never-read connection (SO_SNDBUFFORCE, root:
        # past net.core.wmem_max), so each answer times a sent record, not the dropping path.
        sock = service.reporter._connect()
        if sock is None:
            raise SystemExit("the reporter did not connect to the bench's socket")
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 256 << 20)
    mod = runpy.run_path(str(ADAPTER), init_globals=fake_unbound_globals(), run_name="nettrust_bench")
    # As init_standard does, in the adapter's live namespace (runpy returns a copy of it; its
    # functions see the live one).
    live = mod["init_standard"].__globals__
    live["_service"] = service
    live["_path"].start(service, live)
    return mod, service


def build_states(answers: int, mixed: bool, start: int = 0) -> list:
    return [fake_qstate(i, mixed) for i in range(start, start + answers)]


def run_states(mod, states) -> None:
    operate = mod["operate"]
    for q in states:
        qdata: dict = {}                # one per query, kept from NEW to MODDONE (as pythonmod)
        operate(0, 0, q, qdata)
        operate(0, 5, q, qdata)
        if q.ext_state[0] != 6 or q.return_msg is None:
            raise SystemExit(f"an answer was not released (ext_state {q.ext_state[0]})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--answers", type=int, default=2000)
    ap.add_argument("--mixed", action="store_true", help="A + AAAA per answer")
    ap.add_argument("--backend", choices=("nft", "record"), default="nft")
    ap.add_argument("--stats", action="store_true", help="statistics on (decision records)")
    ap.add_argument("--callgrind", action="store_true", help="instructions per answer (valgrind)")
    ap.add_argument("--calls", action="store_true", help="Python calls per answer (cProfile)")
    ap.add_argument("--default-gc", action="store_true",
                    help="CPython's collector thresholds, not the resolver's (nettrust_core.collector)")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--build", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.backend == "nft" and not args.inner:
        # A private network namespace for the ruleset and the writes, gone with the process.
        base = ["unshare", "--net", sys.executable, __file__, "--inner"]
        rest = [a for a in (argv if argv is not None else sys.argv[1:])]
        if args.callgrind:
            return callgrind(args, base, rest)
        return subprocess.call(base + rest)
    if args.callgrind and args.backend == "record":
        return callgrind(args, [sys.executable, __file__, "--inner"], sys.argv[1:])
    mod, service = load(args.backend, args.stats)
    warm = build_states(200, args.mixed, start=10_000_000)
    run_states(mod, warm)                       # imports, caches, first netlink messages
    states = build_states(max(args.answers, args.build), args.mixed)[:args.answers]
    # The stand-ins are Python objects, Unbound's are not: keep them out of the cyclic
    # collector's generations, or its full collections would time the driver's own heap.  Then
    # the collector as the adapter leaves it after start (nettrust_core.collector.settle), or
    # CPython's defaults (--default-gc, the "before" of that module's figures).
    gc.freeze()
    if not args.default_gc:
        from nettrust_core.collector import settle
        settle()
    if args.calls:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        prof.enable()
        run_states(mod, states)
        prof.disable()
        st = pstats.Stats(prof)
        total = sum(v[1] for v in st.stats.values())      # primitive calls
        st.sort_stats(os.environ.get("NT_SORT", "tottime")).print_stats(40)
        print(json.dumps({"answers": args.answers, "calls_per_answer": total / args.answers}))
        return 0
    t0 = time.process_time()
    run_states(mod, states)
    cpu = time.process_time() - t0
    print(json.dumps({"answers": args.answers, "cpu_us_per_answer": cpu / args.answers * 1e6,
                      "written": service.authorizer.counters["elements_written"],
                      "reports_sent": service.reporter.sent, "reports_dropped": service.reporter.dropped}))
    return 0


def callgrind(args, base: list[str], rest: list[str]) -> int:
    """Instructions per answer: two runs (N and 2N answers) under callgrind, the difference / N,
    which removes start-up and import costs."""
    rest = [a for a in rest if a != "--callgrind"]
    rest = [a for i, a in enumerate(rest) if a != "--answers" and (i == 0 or rest[i - 1] != "--answers")]
    n = args.answers
    counts = []
    for answers in (n, 2 * n):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "cg.out"
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
            if base[0] == "unshare":
                cmd = base[:2] + cmd + base[2:]
            else:
                cmd = cmd + base
            proc = subprocess.run(cmd + rest + ["--answers", str(answers), "--build", str(2 * n)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                return 1
            m = re.search(r"Collected : (\d+)", proc.stderr)
            if m is None:
                print(proc.stderr, file=sys.stderr)
                return 1
            counts.append(int(m.group(1)))
    per = (counts[1] - counts[0]) / n
    import nettrust_core.compiled    # the same tree and environment as the measured runs
    print(json.dumps({"answers": n, "instructions_per_answer": round(per),
                      "mixed": args.mixed, "backend": args.backend, "stats": args.stats,
                      "answer_path": nettrust_core.compiled.STATUS}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
