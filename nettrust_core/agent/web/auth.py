"""The dashboard's password: an scrypt hash in the config, a signed session cookie after login.

``scrypt$N$r$p$SALT$HASH`` (hex): the standard library's :func:`hashlib.scrypt`, no dependency.
A session cookie is ``EXPIRY.HMAC`` keyed by a random secret made when the server starts, so
restarting the server logs everyone out and nothing secret is stored on disk.  Scripts may send
HTTP Basic authentication instead (any user name, the password).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import sys
import time

from ...errors import InvalidValue

N, R, P = 1 << 14, 8, 1
SESSION_LIFETIME = 12 * 3600.0
COOKIE = "nettrust_session"


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    if not password:
        raise InvalidValue("the password is empty")
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=64)
    return f"scrypt${N}${R}${P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        found = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                               p=int(p), dklen=len(digest) // 2)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(found.hex(), digest)


def read_new_password() -> str:
    """From the terminal (asked twice), else one line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass("dashboard password: ")
        if first != getpass.getpass("again: "):
            raise SystemExit("nettrust: the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


class Sessions:
    """Signed, expiring session tokens; the key lives only in this process."""

    def __init__(self, lifetime: float = SESSION_LIFETIME, clock=time.time) -> None:
        self._key = os.urandom(32)
        self.lifetime = lifetime
        self.clock = clock

    def issue(self) -> str:
        expiry = str(int(self.clock() + self.lifetime))
        return f"{expiry}.{self._sign(expiry)}"

    def valid(self, token: str | None) -> bool:
        if not token or "." not in token:
            return False
        expiry, sig = token.split(".", 1)
        return (hmac.compare_digest(sig, self._sign(expiry)) and expiry.isdigit()
                and int(expiry) > self.clock())

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()


def basic_password(header: str | None) -> str | None:
    """The password of an ``Authorization: Basic`` header, else None."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        return base64.b64decode(header[6:].strip()).decode().partition(":")[2]
    except (ValueError, UnicodeDecodeError):
        return None
