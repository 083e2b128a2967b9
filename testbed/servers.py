"""The lab's "internet" services: an HTTP server and a TCP echo server, IPv4 and IPv6.

Run as a script with /usr/bin/python3 inside the internet namespace (standard library only)::

    python3 -I -u servers.py [--http-port 80] [--echo-port 7]

They listen on the wildcard addresses, so with AnyIP local routes (``ip route add local
198.18.0.0/15 dev lo``) one process answers on every address of those prefixes.  The HTTP body is
``hello from <local address>\\n``; the echo server sends back whatever it reads until EOF, so a
connection can stay open as long as the client wants.  ``READY`` is printed once every socket is
bound; SIGTERM or SIGINT ends it at once.
"""

from __future__ import annotations

import argparse
import http.server
import os
import signal
import socket
import socketserver
import sys
import threading


class _V6Only:
    """Mixin: an IPv6 wildcard socket that leaves IPv4 to the IPv4 server."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


class HTTPServer4(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 512


class HTTPServer6(_V6Only, HTTPServer4):
    pass


class EchoServer4(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 512


class EchoServer6(_V6Only, EchoServer4):
    pass


class HelloHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nettrust-lab"
    sys_version = ""

    def _body(self) -> bytes:
        return f"hello from {self.connection.getsockname()[0]}\n".encode()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = self._body()
        self._headers(len(body))
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self._headers(len(self._body()))

    def _headers(self, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        if self.server.verbose:  # type: ignore[attr-defined]
            super().log_message(format, *args)


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            try:
                data = self.request.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.request.sendall(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http-port", type=int, default=80)
    parser.add_argument("--echo-port", type=int, default=7)
    parser.add_argument("--verbose", action="store_true", help="log every HTTP request")
    args = parser.parse_args(argv)

    servers: list[socketserver.BaseServer] = [
        HTTPServer4(("0.0.0.0", args.http_port), HelloHandler),
        HTTPServer6(("::", args.http_port), HelloHandler),
        EchoServer4(("0.0.0.0", args.echo_port), EchoHandler),
        EchoServer6(("::", args.echo_port), EchoHandler),
    ]
    for server in servers:
        server.verbose = args.verbose  # type: ignore[attr-defined]
    threads = [threading.Thread(target=s.serve_forever, name=type(s).__name__, daemon=True)
               for s in servers]
    for thread in threads:
        thread.start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"READY http={args.http_port} echo={args.echo_port}", flush=True)
    stop.wait()
    # No graceful shutdown: serve_forever polls every 0.5 s per server, and clients are
    # expected to see their connections reset when the lab goes away.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
