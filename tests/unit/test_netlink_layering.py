"""The netlink package sits below the firewall and the lifecycle: it imports neither, and the
firewall does not reach up into the lifecycle.  Read from the source, so nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "nettrust_core"


def imports(path: Path, source: str | None = None) -> set[str]:
    """Absolute names of the nettrust_core modules ``path`` imports (relative imports resolved;
    ``from a import b`` counts as both ``a`` and ``a.b``)."""
    parts = ["nettrust_core", *path.relative_to(PACKAGE).with_suffix("").parts]
    out = set()
    tree = ast.parse(path.read_text() if source is None else source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = parts[:len(parts) - node.level] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out |= {module} | {f"{module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m.startswith("nettrust_core")}


def test_the_import_reader_sees_an_upward_import():
    # control: the checks below would notice the imports they forbid
    path = PACKAGE / "firewall" / "nftables.py"
    assert "nettrust_core.netlink.nftables" in imports(path)
    assert "nettrust_core.lifecycle.chains" in imports(
        path, "def f():\n    from ..lifecycle.chains import HOOK_NAMES, BaseChain\n")
    assert "nettrust_core.firewall.base" in imports(
        PACKAGE / "netlink" / "nftables.py", "from ..firewall.base import COMMENT_MAX\n")


@pytest.mark.parametrize("path", sorted((PACKAGE / "netlink").glob("*.py")), ids=lambda p: p.name)
def test_netlink_imports_only_itself_and_errors(path):
    outside = {m for m in imports(path)
               if not m.startswith(("nettrust_core.netlink", "nettrust_core.errors"))}
    assert outside == set()


@pytest.mark.parametrize("path", sorted((PACKAGE / "firewall").glob("*.py")), ids=lambda p: p.name)
def test_firewall_does_not_import_the_lifecycle(path):
    assert {m for m in imports(path) if m.startswith("nettrust_core.lifecycle")} == set()
