"""Unbound's totals read over its control socket: a real Unix socket speaking the control
protocol's server side (the protocol Unbound answers on a local control-interface)."""

from __future__ import annotations

import socket
import threading

from nettrust_core.unbound_totals import UnboundTotals, parse

STATS = """thread0.num.queries=7
total.num.queries=12
total.num.cachehits=9
total.num.cachemiss=3
total.num.prefetch=0
total.num.expired=0
total.num.recursivereplies=3
total.requestlist.avg=0.5
time.now=1765000000.123456
bogus line
total.num.zero_ttl=not-a-number
"""


def test_parse_reads_numbers_and_skips_the_rest():
    got = parse(STATS)
    assert got["total.num.cachehits"] == 9 and got["total.requestlist.avg"] == 0.5
    assert "bogus line" not in got and "total.num.zero_ttl" not in got


def test_totals_come_from_stats_noreset_and_a_silent_unbound_gives_none(tmp_path):
    path = tmp_path / "unbound.ctl"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    asked = []

    def serve():
        conn, _ = server.accept()
        with conn:
            asked.append(conn.recv(4096))
            conn.sendall(STATS.encode())

    t = threading.Thread(target=serve)
    t.start()
    totals = UnboundTotals(str(path))
    assert totals.read() == {"unbound.total.num.queries": 12, "unbound.total.num.cachehits": 9,
                             "unbound.total.num.cachemiss": 3, "unbound.total.num.prefetch": 0,
                             "unbound.total.num.expired": 0,
                             "unbound.total.num.recursivereplies": 3}
    t.join(5)
    assert asked == [b"UBCT1 stats_noreset\n"]
    server.close()
    path.unlink()
    assert totals.read() == {} and totals.failures == 1
