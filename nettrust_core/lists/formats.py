"""List file formats, read line by line into entries: (kind, name) with the line they came from.

Every parser takes an iterable of text lines and yields :class:`Entry` (a name to match, how it
matches, and whether the line itself says "allow" — AdBlock ``@@`` exceptions, RPZ passthru) or
:class:`Problem` (a line that was meant to be an entry but is broken: ``invalid``; or a rule this
DNS-level firewall does not apply, such as cosmetic or regex AdBlock rules: ``skipped``).
Comments and blank lines yield nothing.  Line numbers are 1-based.

========  ====================================================================================
hosts     ``0.0.0.0 ads.example.com [more names] # comment``: each name exactly; localhost-style
          names (``localhost``, ``broadcasthost``, ``ip6-*``…) are ignored
domains   one name per line (``#`` comments); NetTrust patterns also: ``*.name`` (one label
          below), ``**.name`` (any depth below)
adblock   ``||example.com^`` (the name and every name below it), ``@@||example.com^`` (an
          exception: allowed), ``|example.com^`` (that name only); ``!`` comments; a
          ``$important`` modifier is accepted, any other modifier, cosmetic (``##``) or regex
          rule is skipped
rpz       an Unbound/BIND RPZ zone file read as QNAME triggers: ``name CNAME .`` (NXDOMAIN),
          ``CNAME *.`` (NODATA), ``CNAME rpz-drop.``, local data (``A``, ``AAAA``…) deny the
          name; ``CNAME rpz-passthru.`` allows it; ``*.name`` is every name below ``name``.
          Owners are relative to ``$ORIGIN`` (or the SOA owner); IP, NSDNAME, NSIP and
          client-IP triggers are skipped
========  ====================================================================================
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator, NamedTuple

from ..patterns import normalize_name

FORMATS = ("hosts", "domains", "adblock", "rpz")

#: How an entry matches: the name itself, names one label below, names any depth below.
EXACT, ONE, DEEP = 0, 1, 2
PREFIX = {EXACT: "", ONE: "*.", DEEP: "**."}


class Entry(NamedTuple):
    line: int
    kind: int
    name: str
    allow: bool = False          # the line itself is an exception (AdBlock @@, RPZ passthru)


class Problem(NamedTuple):
    line: int
    invalid: bool                # True: a broken line; False: a rule NetTrust does not apply
    message: str


Item = Entry | Problem

_HOSTS_IGNORED = frozenset(("localhost", "localhost.localdomain", "local", "broadcasthost",
                            "ip6-localhost", "ip6-loopback", "ip6-localnet", "ip6-mcastprefix",
                            "ip6-allnodes", "ip6-allrouters", "ip6-allhosts", "0.0.0.0"))


def parse(fmt: str, lines: Iterable[str]) -> Iterator[Item]:
    """The entries and problems of ``lines`` read as format ``fmt`` (one of :data:`FORMATS`)."""
    return _PARSERS[fmt](lines)


def _name(number: int, text: str, kind: int = EXACT, allow: bool = False) -> Item:
    try:
        return Entry(number, kind, normalize_name(text), allow)
    except ValueError as exc:
        return Problem(number, True, str(exc))


def parse_hosts(lines: Iterable[str]) -> Iterator[Item]:
    for number, line in enumerate(lines, 1):
        hash_at = line.find("#")
        if hash_at >= 0:
            line = line[:hash_at]
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 1:
            yield Problem(number, True, f"expected 'ADDRESS NAME...', found only {fields[0]!r}")
            continue
        address = fields[0]
        if not (":" in address or address.replace(".", "").isdigit()):
            yield Problem(number, True, f"{address!r} is not an address (expected "
                                        "'ADDRESS NAME...')")
            continue
        for name in fields[1:]:
            if name.lower() in _HOSTS_IGNORED:
                continue
            yield _name(number, name)


def parse_domains(lines: Iterable[str]) -> Iterator[Item]:
    for number, line in enumerate(lines, 1):
        hash_at = line.find("#")
        if hash_at >= 0:
            line = line[:hash_at]
        text = line.strip()
        if not text:
            continue
        if " " in text or "\t" in text:
            yield Problem(number, True, f"one name per line expected, found {text!r}")
        elif text.startswith("**."):
            yield _name(number, text[3:], DEEP)
        elif text.startswith("*."):
            yield _name(number, text[2:], ONE)
        else:
            yield _name(number, text)


def parse_adblock(lines: Iterable[str]) -> Iterator[Item]:
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text[0] in "!#[" and not text.startswith("##"):
            continue                     # comments, the [Adblock Plus 2.0] header
        allow = text.startswith("@@")
        rule = text[2:] if allow else text
        rule, _, modifiers = rule.partition("$")
        if "##" in text or "#@#" in text or "#?#" in text or "#$#" in text:
            yield Problem(number, False, "cosmetic rule (not a DNS rule)")
            continue
        if modifiers and any(m.strip() not in ("important", "") for m in modifiers.split(",")):
            yield Problem(number, False, f"modifier ${modifiers} is not applied at DNS level")
            continue
        if rule.startswith("/") and rule.endswith("/") and len(rule) > 1:
            yield Problem(number, False, "regular-expression rule")
            continue
        if rule.startswith("||"):
            kind, body = DEEP, rule[2:]
        elif rule.startswith("|") and not rule.startswith("|http"):
            kind, body = EXACT, rule[1:]
        else:
            yield Problem(number, False, "not a domain rule (||name^)")
            continue
        if body.endswith("|"):
            body = body[:-1]
        if body.endswith("^"):
            body = body[:-1]
        if not body or any(c in body for c in "*/^|:?="):
            yield Problem(number, True, f"{text!r}: expected ||name^ with a plain domain name")
            continue
        item = _name(number, body, EXACT, allow)
        if isinstance(item, Problem) or kind == EXACT:
            yield item
        else:                            # ||name^: the name itself and every name below it
            yield item
            yield Entry(number, DEEP, item.name, allow)


_RPZ_SKIPPED = ("rpz-ip", "rpz-nsdname", "rpz-nsip", "rpz-client-ip")
_RPZ_ALLOW = ("rpz-passthru",)
_CLASSES = ("IN", "CH", "HS", "CS")


def parse_rpz(lines: Iterable[str]) -> Iterator[Item]:
    origin = ""                          # canonical, no trailing dot; "" until known
    last_owner: str | None = None
    for number, text in _rpz_records(lines):
        fields = text.split()
        if fields[0].upper() == "$ORIGIN":
            if len(fields) < 2:
                yield Problem(number, True, "$ORIGIN without a name")
                continue
            origin = "" if fields[1] == "." else fields[1].rstrip(".").lower()
            continue
        if fields[0].startswith("$"):    # $TTL, $INCLUDE (not followed: the admin's file only)
            if fields[0].upper() == "$INCLUDE":
                yield Problem(number, False, "$INCLUDE is not followed")
            continue
        if text[0] in " \t":
            owner = last_owner
        else:
            owner = fields.pop(0)
            last_owner = owner
        while fields and (fields[0].isdigit() or fields[0].upper() in _CLASSES):
            fields.pop(0)
        if owner is None or not fields:
            yield Problem(number, True, f"cannot read the record {text.strip()!r}")
            continue
        rtype, rdata = fields[0].upper(), fields[1:]
        if rtype == "SOA":
            if not origin and owner.endswith(".") and owner != ".":
                origin = owner.rstrip(".").lower()
            continue
        if rtype == "NS" and owner in ("@", origin + "."):
            continue
        name = _rpz_owner(owner, origin)
        if name is None:
            yield Problem(number, True, f"owner {owner!r} is outside the zone's origin {origin!r}")
            continue
        if not name:
            continue                     # records at the apex (NS, ...)
        labels = name.split(".")
        if any(label in _RPZ_SKIPPED for label in labels):
            yield Problem(number, False, "not a QNAME trigger (IP, NSDNAME, NSIP or client-IP)")
            continue
        allow = rtype == "CNAME" and bool(rdata) and rdata[0].rstrip(".").lower() in _RPZ_ALLOW
        if name.startswith("*."):
            yield _name(number, name[2:], DEEP, allow)
        else:
            yield _name(number, name, EXACT, allow)


def _rpz_owner(owner: str, origin: str) -> str | None:
    """The trigger name of ``owner``: "" for the apex, None when outside the origin."""
    if owner == "@":
        return ""
    if not owner.endswith("."):
        return owner.lower()             # relative to the origin: the trigger itself
    absolute = owner[:-1].lower()
    if not origin:
        return absolute
    if absolute == origin:
        return ""
    if absolute.endswith("." + origin):
        return absolute[:-len(origin) - 1]
    return None


def _rpz_records(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """(line where the record starts, its text without comments), parentheses joined."""
    pending, start, depth = "", 0, 0
    for number, line in enumerate(lines, 1):
        semi = line.find(";")
        if semi >= 0:
            line = line[:semi]
        line = line.rstrip("\r\n")
        if depth == 0:
            if not line.strip():
                continue
            pending, start = line, number
        else:
            pending += " " + line
        depth += line.count("(") - line.count(")")
        if depth <= 0:
            depth = 0
            yield start, pending.replace("(", " ").replace(")", " ")
    if depth > 0:
        yield start, pending.replace("(", " ").replace(")", " ")


_PARSERS = {"hosts": parse_hosts, "domains": parse_domains, "adblock": parse_adblock,
            "rpz": parse_rpz}


_NAME = r"((?:[a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63})"
#: The common line of each stateless format, already canonical, as one regular expression:
#: (match, the kinds it yields).  What does not match goes through the parser above (same
#: result, slower).  The loader's fast path; the RPZ parser keeps state ($ORIGIN) and has none.
FAST_LINES = {
    "hosts": (re.compile(r"(?:0\.0\.0\.0|127\.0\.0\.1|::1?)[ \t]+" + _NAME + r"[ \t]*\r?\n?"),
              (EXACT,)),
    "domains": (re.compile(_NAME + r"[ \t]*\r?\n?"), (EXACT,)),
    "adblock": (re.compile(r"\|\|" + _NAME + r"\^[ \t]*\r?\n?"), (EXACT, DEEP)),
}
#: Names the fast path must leave to the parser (hosts files' localhost lines).
FAST_EXCLUDED = _HOSTS_IGNORED
