"""Load the answer path's mypyc-compiled modules when they are built and current; else pure Python.

``python -m nettrust_core.compiled_build`` (run by ``./run-tests`` and ``install.sh``) compiles the
modules in :data:`MODULES` with mypyc into ``nettrust_core/_mypyc/`` with a manifest of each
source's SHA-256.  The source stays the truth: at import, :func:`install` puts a finder on
``sys.meta_path`` that loads the compiled extensions only if

- ``NETTRUST_PURE`` is not set (``NETTRUST_PURE=1``: pure Python, for tests and debugging),
- every compiled module's ``.py`` still has the hash it was compiled from (all or none: the
  compiled modules call each other natively, so one stale module disables them all),
- the extensions were built for this interpreter (``EXTENSION_SUFFIXES``) and the shared
  library loads.

Otherwise the ``.py`` files are imported as always and :data:`STATUS` says why (the service logs
it once at start).  Nothing here can make an import fail: a compiled build that does not fit is
ignored, never half used.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
BUILD_DIR = PACKAGE_DIR / "_mypyc"
MANIFEST = "manifest.json"
GROUP = "nettrust_core_compiled"
GROUP_LIB = GROUP + "__mypyc"

# The answer path's modules, chosen by the profile of bench/answer_path.py: answer reading and
# wire decode, policy (with names, patterns, networks), the authorizer, the tracker and the grants
# writer, the netlink encoding, the decision record.
MODULES = (
    "nettrust_core.wire",
    "nettrust_core.registrable",
    "nettrust_core.networks",
    "nettrust_core.answer",
    "nettrust_core.unbound_reply",
    "nettrust_core.unbound_operate",
    "nettrust_core.patterns",
    "nettrust_core.policy",
    "nettrust_core.authorizer",
    "nettrust_core.decision_record",
    "nettrust_core.grants.caps",
    "nettrust_core.grants.timeouts",
    "nettrust_core.grants.tracker",
    "nettrust_core.grants.writer",
    "nettrust_core.firewall.nftables_sets",
    "nettrust_core.firewall.nftables_elements",
    "nettrust_core.netlink.wire",
    "nettrust_core.netlink.core",
    "nettrust_core.netlink.nftables",
    # Not hot, but its IpsetSocket subclasses netlink.core's NetlinkSocket: a compiled class can
    # have compiled subclasses only (test_compiled.py checks every class of the package).
    "nettrust_core.netlink.ipset",
)

STATUS = "pure Python (no compiled build)"
ACTIVE = False


def source_path(module: str, package_dir: Path = PACKAGE_DIR) -> Path:
    return package_dir.joinpath(*module.split(".")[1:]).with_suffix(".py")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check(build_dir: Path = BUILD_DIR, package_dir: Path = PACKAGE_DIR) -> tuple[dict[str, Path] | None, str]:
    """The extension file per module name (group library included), or None and the reason."""
    try:
        manifest = json.loads((build_dir / MANIFEST).read_text())
    except FileNotFoundError:
        return None, "pure Python (no compiled build)"
    except (OSError, ValueError) as e:
        return None, f"pure Python: compiled build's manifest unreadable ({e})"
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    if manifest.get("suffix") != suffix:
        return None, f"pure Python: compiled for {manifest.get('suffix')}, this interpreter needs {suffix}"
    if sorted(manifest.get("modules", {})) != sorted(MODULES):
        return None, "pure Python: the compiled build is of another module list (rebuild it)"
    files: dict[str, Path] = {}
    for module, sha in manifest.get("modules", {}).items():
        src = source_path(module, package_dir)
        try:
            current = digest(src)
        except OSError:
            current = ""
        if current != sha:
            return None, f"pure Python: {src.name} changed since it was compiled (run `python -m " \
                         "nettrust_core.compiled_build`)"
        files[module] = build_dir.joinpath(*module.split(".")).with_name(module.rsplit(".", 1)[1] + suffix)
    files[GROUP_LIB] = build_dir / (GROUP_LIB + suffix)
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        return None, f"pure Python: compiled build incomplete ({missing[0]} missing)"
    return files, f"compiled (mypyc): {len(files) - 1} modules"


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        where = self.files.get(fullname)
        if where is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(where))
        spec = importlib.util.spec_from_file_location(fullname, str(where), loader=loader)
        if spec is not None and fullname != GROUP_LIB:
            spec.cached = None
        return spec


def install() -> str:
    """Put the compiled modules' finder in place (once) when the build fits; returns STATUS."""
    global STATUS, ACTIVE
    if ACTIVE or any(isinstance(f, _Finder) for f in sys.meta_path):
        return STATUS
    if os.environ.get("NETTRUST_PURE", "") not in ("", "0"):
        STATUS = "pure Python (NETTRUST_PURE set)"
        return STATUS
    files, STATUS = check()
    if files is None:
        return STATUS
    already = [m for m in MODULES if m in sys.modules]
    if already:
        STATUS = f"pure Python: {already[0]} was imported before the compiled build could be used"
        return STATUS
    finder = _Finder(files)
    sys.meta_path.insert(0, finder)
    try:
        __import__(GROUP_LIB)
    except Exception as e:      # a build that does not load here: pure Python, never a broken import
        sys.meta_path.remove(finder)
        sys.modules.pop(GROUP_LIB, None)
        STATUS = f"pure Python: compiled build does not load ({type(e).__name__}: {e})"
        return STATUS
    ACTIVE = True
    return STATUS
