#!/usr/bin/python3
"""Resolve-then-connect trials, run inside the lab's host namespace (standard library and
dnspython, Debian's python3-dnspython).

    race_client.py [--server 127.0.0.1] [--port 9] [--window 64] [--timeout 0.8] < trials

Reads trials from stdin, one per line: ``<kind> <name> [<delay>]`` — ``delay`` seconds after
the start to begin this trial (default: as soon as the window allows).  Kind ``prime`` only
resolves (to fill the cache and open the grant a later trial relies on) and is not counted.
Each trial sends one A query, and the moment the answer arrives opens a non-blocking TCP
connection to its first address.  A connect *succeeded on the first SYN* when it completes within ``--timeout`` (below
Linux's 1 s initial SYN retransmission timeout) with no retransmission in TCP_INFO; a refusal
(the firewall's reset), a timeout, or a retransmission is a failure.  Prints one JSON object:
counts per kind and the first failures.
"""

from __future__ import annotations

import argparse
import errno
import json
import secrets
import selectors
import socket
import struct
import sys
import time

import dns.message

_TCP_INFO_RETRANS = struct.Struct("=BBBBBBBB")   # tcpi_state .. tcpi_options; [2] = tcpi_retransmits
_TOTAL_RETRANS_OFFSET = 100                     # struct tcp_info: tcpi_total_retrans (u32)


def query(name: str, qid: int) -> bytes:
    """An A query with RD; built before the send, outside the timed race."""
    msg = dns.message.make_query(name, "A")
    msg.id = qid
    return msg.to_wire()


def first_a(data: bytes) -> tuple[int, str | None]:
    """(rcode, first IPv4 address in the answer section or None).

    Hand-written on purpose: it runs between the answer's arrival and the connect, the window
    the race measures, and ``dns.message.from_wire`` would add ~100 µs there (2 µs for this walk,
    measured on the bench machine), a head start for the grant that the trial would not see.
    """
    rcode = data[3] & 0x0F
    qd, an = struct.unpack("!HH", data[4:8])
    pos = 12
    for _ in range(qd):
        pos = _skip_name(data, pos) + 4
    for _ in range(an):
        pos = _skip_name(data, pos)
        rtype, _cls, _ttl, length = struct.unpack("!HHIH", data[pos:pos + 10])
        pos += 10
        if rtype == 1 and length == 4:
            return rcode, socket.inet_ntoa(data[pos:pos + 4])
        pos += length
    return rcode, None


def _skip_name(data: bytes, pos: int) -> int:
    while True:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        pos += 1 + length


def outcome_of(errno_code: int) -> str:
    """A failed connect's outcome: "refused" (the firewall's reset) or the errno's name."""
    if errno_code == errno.ECONNREFUSED:
        return "refused"
    return errno.errorcode.get(errno_code, str(errno_code))


def retransmits(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    total = struct.unpack_from("=I", info, _TOTAL_RETRANS_OFFSET)[0] if len(info) >= 104 else 0
    return max(total, _TCP_INFO_RETRANS.unpack_from(info)[2])


class Trial:
    __slots__ = ("kind", "name", "start_at", "qid", "dns_sock", "tcp", "t0", "address", "outcome")

    def __init__(self, kind: str, name: str, start_at: float) -> None:
        self.kind, self.name, self.start_at = kind, name, start_at
        self.tcp = self.dns_sock = self.address = self.outcome = None


def run(trials: list[Trial], server: str, port: int, window: int, timeout: float) -> dict:
    sel = selectors.DefaultSelector()
    pending = list(reversed(trials))
    active: set[Trial] = set()
    start = time.monotonic()

    def finish(trial: Trial, outcome: str) -> None:
        trial.outcome = outcome
        for sock in (trial.dns_sock, trial.tcp):
            if sock is not None:
                try:
                    sel.unregister(sock)
                except (KeyError, ValueError):
                    pass
                if sock is trial.tcp:   # reset, not FIN: no TIME_WAIT pile-up over 10k trials
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
        active.discard(trial)

    while pending or active:
        now = time.monotonic()
        while pending and len(active) < window and now - start >= pending[-1].start_at:
            trial = pending.pop()
            trial.qid = secrets.randbelow(65536)
            trial.dns_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            trial.dns_sock.setblocking(False)
            trial.dns_sock.connect((server, 53))
            trial.dns_sock.send(query(trial.name, trial.qid))
            trial.t0 = time.monotonic()
            sel.register(trial.dns_sock, selectors.EVENT_READ, trial)
            active.add(trial)
        for key, _ in sel.select(0.005):
            trial: Trial = key.data
            if key.fileobj is trial.dns_sock:
                try:
                    data = trial.dns_sock.recv(4096)
                except OSError:
                    finish(trial, "dns_error")
                    continue
                if len(data) < 12 or struct.unpack("!H", data[:2])[0] != trial.qid:
                    continue
                rcode, address = first_a(data)
                sel.unregister(trial.dns_sock)
                trial.dns_sock.close()
                trial.dns_sock = None
                if rcode != 0 or address is None:
                    finish(trial, f"dns_rcode_{rcode}")
                    continue
                if trial.kind == "prime":
                    finish(trial, "ok")
                    continue
                trial.address = address
                trial.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                trial.tcp.setblocking(False)
                code = trial.tcp.connect_ex((address, port))
                if code not in (0, errno.EINPROGRESS):
                    finish(trial, outcome_of(code))
                    continue
                trial.t0 = time.monotonic()
                sel.register(trial.tcp, selectors.EVENT_WRITE, trial)
            else:
                code = trial.tcp.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    finish(trial, outcome_of(code))
                elif retransmits(trial.tcp):
                    finish(trial, "retransmitted")
                else:
                    finish(trial, "ok")
        now = time.monotonic()
        for trial in [t for t in active if now - t.t0 > timeout]:
            finish(trial, "dns_timeout" if trial.tcp is None else "syn_timeout")
    return summarise(trials, time.monotonic() - start)


def summarise(trials: list[Trial], seconds: float) -> dict:
    kinds: dict[str, dict[str, int]] = {}
    failures = []
    for t in trials:
        if t.kind == "prime" and t.outcome == "ok":
            continue
        counts = kinds.setdefault(t.kind, {})
        counts[t.outcome] = counts.get(t.outcome, 0) + 1
        if t.outcome != "ok" and len(failures) < 20:
            failures.append({"kind": t.kind, "name": t.name, "address": t.address, "outcome": t.outcome})
    return {"trials": sum(sum(c.values()) for c in kinds.values()), "seconds": round(seconds, 3),
            "kinds": kinds, "failures": failures}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=0.8)
    args = ap.parse_args()
    trials = []
    for line in sys.stdin:
        fields = line.split()
        if fields:
            trials.append(Trial(fields[0], fields[1], float(fields[2]) if len(fields) > 2 else 0.0))
    trials.sort(key=lambda t: t.start_at)
    print(json.dumps(run(trials, args.server, args.port, args.window, args.timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

