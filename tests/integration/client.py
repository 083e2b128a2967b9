"""A real client, run inside the test's host namespace: resolve through resolv.conf, then connect.

    python3 client.py connect FAMILY NAME... → JSON list of {name, address, ok, error, seconds}
    python3 client.py hold ADDRESS PORT SECONDS → keeps a TCP connection to the echo server open,
                                                    echoing once at start and once at the end.

Connect timeouts are below the first SYN retransmission (1 s): a connect that needed a second
SYN counts as a failure, so "succeeds" means "succeeds on the first SYN".
"""

import json
import socket
import sys
import time

FIRST_SYN = 0.9


def connect(family_name: str, names: list[str]) -> list[dict]:
    family = {"4": socket.AF_INET, "6": socket.AF_INET6}[family_name]
    results = []
    for name in names:
        entry = {"name": name, "address": None, "ok": False, "error": None, "seconds": None}
        try:
            info = socket.getaddrinfo(name, 80, family, socket.SOCK_STREAM)
            address = info[0][4]
            entry["address"] = address[0]
            s = socket.socket(family, socket.SOCK_STREAM)
            s.settimeout(FIRST_SYN)
            t = time.monotonic()
            try:
                s.connect(address)
                entry["ok"] = True
            finally:
                entry["seconds"] = round(time.monotonic() - t, 4)
                s.close()
        except OSError as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        results.append(entry)
    return results


def hold(address: str, port: int, seconds: float) -> dict:
    s = socket.create_connection((address, port), timeout=FIRST_SYN)
    s.settimeout(5)
    s.sendall(b"first\n")
    first = s.recv(100)
    print(json.dumps({"phase": "open"}), flush=True)
    time.sleep(seconds)
    s.sendall(b"last\n")
    last = s.recv(100)
    s.close()
    return {"first": first.decode(), "last": last.decode()}


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "connect":
        print(json.dumps(connect(sys.argv[2], sys.argv[3:])))
    elif cmd == "hold":
        print(json.dumps(hold(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))))
    else:
        sys.exit(f"unknown command {cmd}")
