"""The package's layers, read from the source (nothing is imported):

- netlink sits below the firewall and the lifecycle: it imports neither, and the firewall does not
  reach up into the lifecycle;
- the lifecycle (background threads and the diagnostics of ``nettrust status``) imports nothing
  from the firewall package: it drives whatever backend it is handed;
- the answer path's grant logic (``grants/``) does not reach into the background threads;
- the statistics agent (another process) imports nothing of the resolver service (``service``,
  ``authorizer``, ``grants``, ``lifecycle``, ``unbound_module``), and the resolver nothing of it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "nettrust_core"


ROOT = PACKAGE.parent
RESOLVER = ("nettrust_core.service", "nettrust_core.authorizer", "nettrust_core.grants",
            "nettrust_core.lifecycle", "unbound_module")


def imports(path: Path, source: str | None = None, *, only: tuple[str, ...] = ("nettrust_core",)
            ) -> set[str]:
    """Absolute names of the nettrust_core modules ``path`` imports (relative imports resolved;
    ``from a import b`` counts as both ``a`` and ``a.b``)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    out = set()
    tree = ast.parse(path.read_text() if source is None else source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = parts[:len(parts) - node.level] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out |= {module} | {f"{module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m.startswith(only)}


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


def modules(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_the_import_reader_sees_the_imports_the_layers_forbid():
    # control for the checks below
    chains = PACKAGE / "lifecycle" / "chains.py"
    assert "nettrust_core.firewall.diagnostics" in imports(
        chains, "from ..firewall.diagnostics import BaseChain\n")
    stats_cli = PACKAGE / "agent" / "stats_cli.py"
    assert "nettrust_core.service" in imports(
        stats_cli, "def f():\n    from ..service import setup_logging\n")
    adapter = ROOT / "unbound_module" / "nettrust_unbound.py"
    assert "nettrust_core.service" in imports(adapter)
    assert "nettrust_core.agent.store" in imports(adapter, "import nettrust_core.agent.store\n")


@pytest.mark.parametrize("path", modules("nettrust_core/lifecycle"), ids=lambda p: p.name)
def test_lifecycle_does_not_import_the_firewall(path):
    assert {m for m in imports(path) if m.startswith("nettrust_core.firewall")} == set()


@pytest.mark.parametrize("path", modules("nettrust_core/grants"), ids=lambda p: p.name)
def test_the_answer_paths_grants_do_not_import_the_background_threads(path):
    assert {m for m in imports(path) if m.startswith("nettrust_core.lifecycle")} == set()


@pytest.mark.parametrize("path", modules("nettrust_core/agent"), ids=lambda p: p.name)
def test_the_agent_does_not_import_the_resolver_service(path):
    assert {m for m in imports(path, only=("nettrust_core", "unbound_module"))
            if m.startswith(RESOLVER)} == set()


@pytest.mark.parametrize("path", [PACKAGE / "service.py", PACKAGE / "authorizer.py",
                                  *modules("nettrust_core/grants", "nettrust_core/lifecycle",
                                           "unbound_module")], ids=lambda p: p.name)
def test_the_resolver_service_does_not_import_the_agent(path):
    assert {m for m in imports(path) if m.startswith("nettrust_core.agent")} == set()


def test_no_module_is_longer_than_a_sitting():
    long = {str(p.relative_to(ROOT)): n for p in modules("nettrust_core", "unbound_module")
            if (n := len(p.read_text().splitlines())) > 420}
    assert long == {}


def test_no_test_file_name_is_used_twice():
    """pytest imports test modules by basename: a unit and an integration file of one name break
    the whole collection (it happened three times in merges)."""
    tests = Path(__file__).resolve().parents[1]
    seen: dict[str, list[str]] = {}
    for path in tests.rglob("test_*.py"):
        seen.setdefault(path.name, []).append(str(path.relative_to(tests)))
    assert {name: where for name, where in seen.items() if len(where) > 1} == {}
