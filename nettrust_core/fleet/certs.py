"""A small lab CA and per-node certificates for the fleet's mutual TLS (``nettrust fleet certs``).

It runs the openssl commands the README documents (EC P-256, SHA-256)::

    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \\
        -keyout ca.key -out ca.crt -days 825 -subj "/CN=nettrust-fleet-ca"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \\
        -keyout NODE.key -out NODE.csr -subj "/CN=NODE"
    openssl x509 -req -in NODE.csr -CA ca.crt -CAkey ca.key -CAcreateserial \\
        -out NODE.crt -days 825 -extfile NODE.ext

with ``NODE.ext`` = ``extendedKeyUsage=clientAuth`` for nodes, and ``subjectAltName=IP:…,DNS:…``
plus ``extendedKeyUsage=serverAuth`` for the Redis server.  For a lab: production CAs keep the
CA key offline.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path

from ..errors import NetTrustError

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


class CertError(NetTrustError):
    """openssl failed."""


def _openssl(args: list[str], cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CertError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip()[-500:]}")


def make_ca(directory: str | Path, *, name: str = "nettrust-fleet-ca", days: int = 825) -> Path:
    """``ca.crt`` and ``ca.key`` in ``directory`` (kept if they exist)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "ca.crt").exists():
        _openssl(["req", "-x509", *_EC, "-keyout", "ca.key", "-out", "ca.crt", "-days",
                  str(days), "-subj", f"/CN={name}"], d)
        os.chmod(d / "ca.key", 0o600)
    return d / "ca.crt"


def make_cert(directory: str | Path, name: str, *, server_names: list[str] = (),  # type: ignore[assignment]
              days: int = 825) -> tuple[Path, Path]:
    """``NAME.crt`` and ``NAME.key`` signed by the CA in ``directory``: a client certificate, or
    with ``server_names`` (addresses or DNS names) the Redis server's."""
    d = Path(directory)
    if not (d / "ca.crt").exists():
        raise CertError(f"no ca.crt in {d}: make the CA first")
    if server_names:
        alt = ",".join((f"IP:{n}" if _is_ip(n) else f"DNS:{n}") for n in server_names)
        ext = f"subjectAltName={alt}\nextendedKeyUsage=serverAuth\n"
    else:
        ext = "extendedKeyUsage=clientAuth\n"
    (d / f"{name}.ext").write_text(ext)
    _openssl(["req", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj",
              f"/CN={name}"], d)
    _openssl(["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
              "-CAcreateserial", "-out", f"{name}.crt", "-days", str(days), "-extfile",
              f"{name}.ext"], d)
    os.chmod(d / f"{name}.key", 0o600)
    return d / f"{name}.crt", d / f"{name}.key"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
