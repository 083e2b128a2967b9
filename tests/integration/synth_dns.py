"""A tiny authoritative server for the flood test: every name gets its own address.

    python3 synth_dns.py ADDRESS ZONE

NSD cannot synthesize an address per name, so this answers any A query under ZONE with an
address in 198.18.0.0/15 derived from the name (TTL 30); other types get an empty NOERROR.
Hand-written wire format, not dnspython, so one process keeps up with Unbound's misses: this
answer takes about 3 µs, parsing the query and building the reply with dnspython about 190 µs
(measured side by side), which would make this server the flood test's bottleneck.  Test-only.
"""

import socket
import struct
import sys
import zlib


def answer(query: bytes, zone: bytes) -> bytes | None:
    if len(query) < 17:
        return None
    qid, flags, qd = struct.unpack_from("!HHH", query)
    if flags & 0x8000 or qd != 1:
        return None
    end = 12
    while end < len(query) and query[end]:
        end += query[end] + 1
    if end + 5 > len(query):
        return None
    qname = query[12:end + 1]
    qtype = struct.unpack_from("!H", query, end + 1)[0]
    question = query[12:end + 5]
    rd = flags & 0x0100
    if qtype == 1 and qname.lower().endswith(zone):
        h = zlib.crc32(qname.lower()) & 0x1FFFF
        addr = bytes((198, 18 + (h >> 16), (h >> 8) & 0xFF, h & 0xFF))
        rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + addr
        return struct.pack("!HHHHHH", qid, 0x8400 | rd, 1, 1, 0, 0) + question + rr
    return struct.pack("!HHHHHH", qid, 0x8400 | rd, 1, 0, 0, 0) + question


def main() -> None:
    address, zone = sys.argv[1], sys.argv[2].strip(".")
    wire = b"".join(bytes((len(p),)) + p.encode() for p in zone.split(".")) + b"\0"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind((address, 53))
    print("READY", flush=True)
    while True:
        data, peer = s.recvfrom(512)
        reply = answer(data, wire)
        if reply is not None:
            s.sendto(reply, peer)


if __name__ == "__main__":
    main()
