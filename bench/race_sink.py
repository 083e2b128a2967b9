#!/usr/bin/python3
"""The race's far end, run in the lab's internet namespace: accept TCP connections and close
them, as fast as possible, on every address (the lab's AnyIP prefixes make them all local).

    race_sink.py --port 9

A connect succeeds once the SYN-ACK comes back; this listener's deep backlog and tight accept
loop make sure a slow server never drops a SYN, so a failed first connect in the race can
only be the firewall's doing.  Prints READY once listening.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=9)
    args = ap.parse_args()
    sel = selectors.DefaultSelector()
    for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, args.port))
        sock.listen(4096)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
    print("READY", flush=True)
    while True:
        for key, _ in sel.select():
            while True:
                try:
                    conn, _ = key.fileobj.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                conn.close()


if __name__ == "__main__":
    sys.exit(main())
