"""The lab's DNS data: zone texts, DNSSEC signing with ldns, and NSD's configuration.

Every address is from a documentation or benchmarking range (RFC 5737, RFC 2544, RFC 3849).
The functions here build files in a directory; they start nothing.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import subprocess
from pathlib import Path

from .errors import SYSTEM_PATH, LabError, require_tool

#: Where NSD listens (real addresses on the internet namespace's loopback).
NSD_V4 = "203.0.113.53"
NSD_V6 = "2001:db8:100::53"

#: Zone name -> whether the lab signs it.  ``ins.sec.test`` is an unsigned child of ``sec.test``.
ZONES = {
    ".": False,                 # a lab root: names outside the lab get a fast NXDOMAIN
    "test": False,              # delegates fw/sec/bad.test
    "fw.test": False,
    "sec.test": True,
    "ins.sec.test": False,
    "bad.test": True,
    "100.51.198.in-addr.arpa": False,
    "0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa": False,     # reverse of 2001:db8:100::/48
}
#: The lab's reverse zones (delegated from the lab root; Unbound's built-in local zones for the
#: documentation ranges must be switched off for them: ``local-zone: … nodefault``).
REVERSE_ZONES = ("100.51.198.in-addr.arpa", "0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa")
SIGNED_ZONES = tuple(name for name, signed in ZONES.items() if signed)

BULK_H = 3000   # h1 … h3000.fw.test, TTL 300
BULK_S = 500    # s1 … s500.fw.test, TTL 3
DEFAULT_TTL = 300
NEGATIVE_TTL = 60

_ENV = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"}


def h_address(i: int) -> tuple[str, str]:
    """(IPv4, IPv6) of ``h<i>.fw.test``: 198.18.0.0/16 and 2001:db8:118::/64."""
    _check_index(i, BULK_H)
    return f"198.18.{i >> 8}.{i & 255}", f"2001:db8:118::{i:x}"


def s_address(i: int) -> tuple[str, str]:
    """(IPv4, IPv6) of ``s<i>.fw.test`` (TTL 3): 198.19.0.0/16 and 2001:db8:119::/64."""
    _check_index(i, BULK_S)
    return f"198.19.{i >> 8}.{i & 255}", f"2001:db8:119::{i:x}"


def _check_index(i: int, top: int) -> None:
    if not 1 <= i <= top:
        raise ValueError(f"index {i} outside 1..{top}")


def reverse6_label(address: str) -> str:
    """The owner of ``address``'s PTR relative to the lab's ip6.arpa zone (its last 20
    nibbles, reversed), e.g. for an ``extra_records`` line."""
    import ipaddress
    nibbles = ipaddress.IPv6Address(address).exploded.replace(":", "")
    if not nibbles.startswith("20010db80100"):
        raise ValueError(f"{address} is not in 2001:db8:100::/48")
    return ".".join(reversed(nibbles[12:]))


def file_stem(zone: str) -> str:
    """The file name stem of a zone ("root" for the root zone)."""
    return "root" if zone == "." else zone


def root_hints() -> str:
    """Root hints that point a resolver at the lab's root zone."""
    return (f".\t3600000\tIN\tNS\tns.test.\n"
            f"ns.test.\t3600000\tIN\tA\t{NSD_V4}\n"
            f"ns.test.\t3600000\tIN\tAAAA\t{NSD_V6}\n")


def _header(origin: str) -> list[str]:
    return [
        f"$ORIGIN {origin}.",
        f"$TTL {DEFAULT_TTL}",
        f"@ IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 900 604800 {NEGATIVE_TTL}",
        f"@ IN NS ns.{origin}.",
        f"ns IN A {NSD_V4}",
        f"ns IN AAAA {NSD_V6}",
    ]


def zone_texts() -> dict[str, str]:
    """The unsigned text of every lab zone."""
    fw = _header("fw.test") + [
        "www IN A 198.51.100.10",
        "www IN AAAA 2001:db8:100::10",
        "c1 IN CNAME c2",
        "c2 IN CNAME www",
        "alias IN CNAME www.blocked.fw.test.",
        "www.blocked IN A 198.51.100.66",
        "www.blocked IN AAAA 2001:db8:100::66",
        "rebind IN A 10.1.2.3",
        "rebind IN AAAA fd00::1:2:3",
        "lo IN A 127.0.0.5",
        "lo IN AAAA ::1",
        "sink IN A 0.0.0.0",
        "sink IN AAAA ::",
        "mixed IN A 198.51.100.77",
        "mixed IN A 0.0.0.0",
        "short 2 IN A 198.51.100.12",
        "short 2 IN AAAA 2001:db8:100::12",
        "ext IN CNAME www.sec.test.",
    ]
    for i in range(1, BULK_H + 1):
        v4, v6 = h_address(i)
        fw += [f"h{i} IN A {v4}", f"h{i} IN AAAA {v6}"]
    for i in range(1, BULK_S + 1):
        v4, v6 = s_address(i)
        fw += [f"s{i} 3 IN A {v4}", f"s{i} 3 IN AAAA {v6}"]

    sec = _header("sec.test") + [
        "www IN A 198.51.100.20",
        "www IN AAAA 2001:db8:100::20",
        # Unsigned child without DS: provably insecure.
        "ins IN NS ns.ins.sec.test.",
        f"ns.ins IN A {NSD_V4}",
        f"ns.ins IN AAAA {NSD_V6}",
    ]
    ins = _header("ins.sec.test") + [
        "www IN A 198.51.100.40",
        "www IN AAAA 2001:db8:100::40",
    ]
    bad = _header("bad.test") + [
        "www IN A 198.51.100.30",
        "www IN AAAA 2001:db8:100::30",
    ]
    rev = [
        "$ORIGIN 100.51.198.in-addr.arpa.",
        f"$TTL {DEFAULT_TTL}",
        f"@ IN SOA ns.fw.test. hostmaster.fw.test. 1 3600 900 604800 {NEGATIVE_TTL}",
        "@ IN NS ns.fw.test.",
        "10 IN PTR www.fw.test.",
    ]
    rev6 = [
        f"$ORIGIN {REVERSE_ZONES[1]}.",
        f"$TTL {DEFAULT_TTL}",
        f"@ IN SOA ns.fw.test. hostmaster.fw.test. 1 3600 900 604800 {NEGATIVE_TTL}",
        "@ IN NS ns.fw.test.",
        f"{reverse6_label('2001:db8:100::10')} IN PTR www.fw.test.",
    ]
    root = [
        "$ORIGIN .",
        f"$TTL {DEFAULT_TTL}",
        f". IN SOA ns.test. hostmaster.test. 1 3600 900 604800 {NEGATIVE_TTL}",
        ". IN NS ns.test.",
        "test. IN NS ns.test.",
        "100.51.198.in-addr.arpa. IN NS ns.test.",
        f"{REVERSE_ZONES[1]}. IN NS ns.test.",
        f"ns.test. IN A {NSD_V4}",
        f"ns.test. IN AAAA {NSD_V6}",
    ]
    # Unsigned delegations (no DS): the lab's trust anchors sit at sec.test and bad.test.
    apex = _header("test") + [f"{child} IN NS ns.test." for child in ("fw", "sec", "bad")]
    texts = {".": root, "test": apex, "fw.test": fw, "sec.test": sec, "ins.sec.test": ins, "bad.test": bad,
             "100.51.198.in-addr.arpa": rev, REVERSE_ZONES[1]: rev6}
    return {name: "\n".join(lines) + "\n" for name, lines in texts.items()}


def normalise_extra_zones(extra: dict[str, list[str]] | None) -> dict[str, list[str]]:
    """Check ``Lab(extra_zones=...)``: new unsigned zones one label below ``test``, RR lines each.

    Such a zone (e.g. the benchmark's ``bench.test`` with 100k names) is delegated from ``test``
    and served by NSD beside the lab's own zones, which stay exactly as they are.
    """
    result: dict[str, list[str]] = {}
    for zone, records in (extra or {}).items():
        name = zone.rstrip(".").lower()
        labels = name.split(".")
        if len(labels) != 2 or labels[1] != "test" or not re.fullmatch(r"[a-z0-9-]+", labels[0]):
            raise LabError(f"extra_zones: {zone!r} must be one new label below test, e.g. 'bench.test'")
        if name in ZONES:
            raise LabError(f"extra_zones: {zone!r} is already a lab zone; use extra_records to add to it")
        if isinstance(records, str):
            raise LabError(f"extra_zones[{zone!r}] must be a list of record lines, not one string")
        result[name] = list(records)
    return result


def normalise_extra_records(extra: dict[str, list[str]] | None) -> dict[str, list[str]]:
    """Check ``Lab(extra_records=...)``: known zones, one RR per string."""
    result: dict[str, list[str]] = {}
    for zone, records in (extra or {}).items():
        name = zone.rstrip(".").lower() or "."
        if name not in ZONES:
            raise LabError(f"extra_records: unknown zone {zone!r}; lab zones are {', '.join(ZONES)}")
        if isinstance(records, str):
            raise LabError(f"extra_records[{zone!r}] must be a list of record strings, not one string")
        for rr in records:
            if not isinstance(rr, str) or not rr.strip() or "\n" in rr:
                raise LabError(f"extra_records[{zone!r}]: {rr!r} is not one zone-file line")
        result.setdefault(name, []).extend(records)
    return result


def _tool(argv: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess:
    argv = [require_tool(argv[0]), *argv[1:]]
    proc = subprocess.run(argv, cwd=cwd, env=_ENV, capture_output=True, text=True,
                          errors="replace", timeout=60)
    if proc.returncode != 0:
        raise LabError(f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n"
                       f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def _keygen(zone: str, keys_dir: Path, ksk: bool) -> str:
    argv = ["ldns-keygen", "-a", "ECDSAP256SHA256"] + (["-k"] if ksk else []) + [zone]
    base = _tool(argv, keys_dir, f"key generation for {zone}").stdout.strip()
    if not base or not (keys_dir / f"{base}.key").exists():
        raise LabError(f"ldns-keygen for {zone} printed {base!r} but wrote no key file in {keys_dir}")
    return base


def _corrupt_rrsigs(path: Path, owner: str, types: tuple[str, ...]) -> int:
    """Change one base64 character of the RRSIGs over ``types`` at ``owner``; return how many."""
    lines = path.read_text().splitlines()
    changed = 0
    for n, line in enumerate(lines):
        fields = line.split()
        if len(fields) < 13 or fields[0] != owner or fields[3] != "RRSIG" or fields[4] not in types:
            continue
        # owner ttl IN RRSIG covered alg labels origttl expiry inception tag signer signature...
        prefix = fields[:12]
        sig = "".join(fields[12:])
        pos = len(sig) // 2            # middle: never padding, always significant bits
        sig = sig[:pos] + ("B" if sig[pos] == "A" else "A") + sig[pos + 1:]
        lines[n] = "\t".join(prefix[:4]) + "\t" + " ".join(prefix[4:] + [sig])
        changed += 1
    path.write_text("\n".join(lines) + "\n")
    return changed


def build_zones(zones_dir: Path, keys_dir: Path, anchors_file: Path,
                extra_records: dict[str, list[str]] | None = None,
                extra_zones: dict[str, list[str]] | None = None) -> dict[str, Path]:
    """:func:`_build_zones`, once more with fresh keys if bad.test could not be broken (the
    first failure's message is printed, so it can be diagnosed)."""
    try:
        return _build_zones(zones_dir, keys_dir, anchors_file, extra_records, extra_zones)
    except _UnbrokenBadTest as exc:
        print(f"testbed: {exc}\ntestbed: building the zones again with fresh keys", flush=True)
        return _build_zones(zones_dir, keys_dir, anchors_file, extra_records, extra_zones)


def _build_zones(zones_dir: Path, keys_dir: Path, anchors_file: Path,
                 extra_records: dict[str, list[str]] | None = None,
                 extra_zones: dict[str, list[str]] | None = None) -> dict[str, Path]:
    """Write, sign and check every zone; return zone name -> file NSD serves.

    Fresh keys each call.  ``extra_zones`` (see :func:`normalise_extra_zones`) are written
    unsigned and delegated from ``test``.  ``bad.test``'s ``www`` A and AAAA signatures are
    corrupted and ``ldns-verify-zone`` must call them bogus.  ``anchors_file`` gets the DS of each signed zone.
    """
    extra = normalise_extra_records(extra_records)
    added = normalise_extra_zones(extra_zones)
    for zone in added:
        extra.setdefault("test", []).append(f"{zone.split('.')[0]} IN NS ns.test.")
    now = _dt.datetime.now(_dt.timezone.utc)
    inception = (now - _dt.timedelta(hours=1)).strftime("%Y%m%d%H%M%S")
    expiration = (now + _dt.timedelta(days=30)).strftime("%Y%m%d%H%M%S")
    files: dict[str, Path] = {}
    anchors: list[str] = []
    for zone, text in zone_texts().items():
        if extra.get(zone):
            text += "\n".join(extra[zone]) + "\n"
        unsigned = zones_dir / f"{file_stem(zone)}.zone"
        unsigned.write_text(text)
        if not ZONES[zone]:
            files[zone] = unsigned
            continue
        ksk = _keygen(zone, keys_dir, ksk=True)
        zsk = _keygen(zone, keys_dir, ksk=False)
        signed = zones_dir / f"{zone}.signed"
        _tool(["ldns-signzone", "-i", inception, "-e", expiration, "-o", zone, "-f", str(signed),
               str(unsigned), str(keys_dir / ksk), str(keys_dir / zsk)], keys_dir, f"signing {zone}")
        anchors.append((keys_dir / f"{ksk}.ds").read_text().strip())
        files[zone] = signed
    for zone, records in added.items():
        files[zone] = zones_dir / f"{zone}.zone"
        files[zone].write_text("\n".join(_header(zone) + records) + "\n")
    _break_bad_test(files["bad.test"], zones_dir)
    (zones_dir / "root.hints").write_text(root_hints())
    os.chmod(zones_dir / "root.hints", 0o644)
    anchors_file.write_text("\n".join(anchors) + "\n")
    os.chmod(anchors_file, 0o644)
    for path in files.values():
        os.chmod(path, 0o644)
    return files


class _UnbrokenBadTest(LabError):
    """The RRSIGs to corrupt were not found as expected (seen once in CI, not reproduced in 40
    builds here): the message quotes what the signed zone held for the name."""


def _break_bad_test(signed: Path, cwd: Path) -> None:
    found = _corrupt_rrsigs(signed, "www.bad.test.", ("A", "AAAA"))
    if found != 2:
        seen = [ln for ln in signed.read_text().splitlines() if ln.startswith("www.bad.test.")]
        raise _UnbrokenBadTest(f"could not find the RRSIGs of www.bad.test. A and AAAA in "
                               f"{signed} ({found} corrupted); has ldns-signzone's output format "
                               "changed? Its lines for the name:\n" + "\n".join(seen))
    proc = subprocess.run([require_tool("ldns-verify-zone"), str(signed)], cwd=cwd, env=_ENV,
                          capture_output=True, text=True, errors="replace", timeout=60)
    report = proc.stdout + proc.stderr
    bogus = {m.group(1) for m in re.finditer(
        r"Bogus DNSSEC signature for www\.bad\.test\.\s+(A|AAAA)\s*$", report, re.MULTILINE)}
    if proc.returncode == 0 or bogus != {"A", "AAAA"}:
        raise LabError(f"ldns-verify-zone did not report www.bad.test. A and AAAA as bogus after "
                       f"corrupting their RRSIGs (exit {proc.returncode}):\n{report.strip()}")


def nsd_conf(nsd_dir: Path, zone_files: dict[str, Path]) -> str:
    """NSD's configuration: foreground-friendly, every path inside ``nsd_dir``, no RRL."""
    lines = [
        "server:",
        f"    ip-address: {NSD_V4}",
        f"    ip-address: {NSD_V6}",
        "    port: 53",
        '    username: ""',
        '    chroot: ""',
        '    database: ""',
        f'    zonesdir: "{nsd_dir}"',
        f'    zonelistfile: "{nsd_dir}/zone.list"',
        f'    pidfile: "{nsd_dir}/nsd.pid"',
        f'    xfrdfile: "{nsd_dir}/xfrd.state"',
        f'    xfrdir: "{nsd_dir}/xfr"',
        "    server-count: 1",
        "    verbosity: 1",
        "    hide-version: yes",
        "    hide-identity: yes",
        "    zonefiles-write: 0",
        "    # The default RRL (200 qps) throttles bulk answers: off in the lab.",
        "    rrl-ratelimit: 0",
        "remote-control:",
        "    control-enable: no",
    ]
    for zone, path in zone_files.items():
        lines += ["zone:", f'    name: "{zone}"', f'    zonefile: "{path}"']
    return "\n".join(lines) + "\n"
