"""Compile the answer path's modules with mypyc into ``nettrust_core/_mypyc/`` (see compiled.py).

    python -m nettrust_core.compiled_build [--timeout 300] [--check-with /usr/bin/python3]
        [--package-dir DIR] [--force] [--strict]

Run with a Python that has mypyc (the project's venv: mypy is a test dependency) on a host with
Debian's python3-dev headers and a C compiler.  The source is not changed; the C and object files
go to a temporary directory.  The result is checked by importing every compiled module in a fresh
``--check-with`` interpreter (Debian's /usr/bin/python3, the one Unbound embeds).  Any failure
leaves no build behind (the package stays pure Python) and says why on stderr; the exit status is
0 either way unless ``--strict`` (CI: a compile that fails is a failure).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nettrust_core import compiled

SETUP = """\
import sys
from setuptools import setup
from mypyc.build import mypycify
paths = {flags!r} + sys.argv[1:sys.argv.index("--")]
del sys.argv[1:sys.argv.index("--") + 1]
setup(name="nettrust_compiled", ext_modules=mypycify(paths, opt_level="3", group_name={group!r},
                                                       target_dir="c"))
"""

# mypy's settings for the compile (pyproject.toml is not beside an installed package): the bodies
# of unannotated functions are checked as in the project's own mypy run; the untyped bindings of
# Debian's packages are Any.
MYPY_FLAGS = ["--python-version", "3.11", "--check-untyped-defs", "--ignore-missing-imports",
              "--no-incremental"]


def build(timeout: float, check_with: str, package_dir: Path = compiled.PACKAGE_DIR) -> str | None:
    """Build into package_dir/_mypyc; None on success, else the reason (and nothing left behind)."""
    out_dir = package_dir / "_mypyc"
    shutil.rmtree(out_dir, ignore_errors=True)
    sources = {m: compiled.source_path(m, package_dir) for m in compiled.MODULES}
    hashes = {m: compiled.digest(p) for m, p in sources.items()}
    with tempfile.TemporaryDirectory(prefix="nettrust-mypyc-") as tmp:
        (Path(tmp) / "setup.py").write_text(SETUP.format(group=compiled.GROUP, flags=MYPY_FLAGS))
        cmd = [sys.executable, "setup.py", *map(str, sources.values()), "--", "build_ext",
               "--build-lib", "out", "--build-temp", "obj"]
        try:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"mypyc took longer than {timeout:.0f} s"
        except OSError as e:
            return f"cannot run mypyc: {e}"
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            errors = [ln for ln in lines if "error" in ln.lower()] or lines[-5:]
            return "mypyc failed:\n  " + "\n  ".join(errors[:20])
        staged = Path(tmp) / "out"
        suffix = next(iter(staged.glob(compiled.GROUP_LIB + "*"))).name[len(compiled.GROUP_LIB):]
        (staged / compiled.MANIFEST).write_text(json.dumps(
            {"suffix": suffix, "python": sys.version.split()[0], "modules": hashes}, indent=1))
        shutil.copytree(staged, out_dir)
    probe = ("import sys, nettrust_core.compiled as c\n"
             "mods = [__import__(m, fromlist=['_']) for m in c.MODULES]\n"
             "bad = [m.__name__ for m in mods if not m.__file__.endswith(c.importlib.machinery"
             ".EXTENSION_SUFFIXES[0])]\n"
             "sys.exit(c.STATUS if bad or not c.ACTIVE else 0)\n")
    try:
        proc = subprocess.run([check_with, "-c", probe], cwd=package_dir.parent, capture_output=True,
                              text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as e:
        proc = subprocess.CompletedProcess([], 1, "", str(e))
    if proc.returncode != 0:
        shutil.rmtree(out_dir, ignore_errors=True)
        return f"the compiled modules do not import under {check_with}: {proc.stderr.strip()[-500:]}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--check-with", default="/usr/bin/python3")
    ap.add_argument("--strict", action="store_true", help="exit 1 when the compile fails")
    ap.add_argument("--package-dir", type=Path, default=compiled.PACKAGE_DIR,
                    help="the nettrust_core to build for (an installed copy: install.sh)")
    ap.add_argument("--force", action="store_true", help="rebuild even when the build is current")
    args = ap.parse_args(argv)
    pkg = args.package_dir.resolve()
    if not args.force and compiled.check(pkg / "_mypyc", pkg)[0] is not None:
        print("nettrust: compiled answer path is current", file=sys.stderr)
        return 0
    t0 = time.monotonic()
    reason = build(args.timeout, args.check_with, pkg)
    if reason is not None:
        print(f"nettrust: compiled answer path NOT built, NetTrust runs pure Python: {reason}",
              file=sys.stderr)
        return 1 if args.strict else 0
    print(f"nettrust: compiled answer path built ({len(compiled.MODULES)} modules, "
          f"{time.monotonic() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
