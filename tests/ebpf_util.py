"""Test fixtures for the eBPF backend: a private bpffs and a test-made cgroup v2 directory.

Never the machine's /sys/fs/bpf or its root cgroup: each test mounts its own bpffs on a temporary
directory (unmounted afterwards, which drops every pin under it) and makes a uniquely named
child cgroup that it removes again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid

from conftest import require


def ebpf_prerequisites() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("not root")
    from nettrust_core.firewall import ebpf_loader
    for obj in ebpf_loader.OBJECTS:
        if not os.path.exists(os.path.join(ebpf_loader.BPF_DIR, obj)):
            problems.append(f"{obj} not built (nettrust_core/firewall/bpf/build.sh; ./run-tests "
                            "builds it)")
    try:
        ebpf_loader.libbpf()
    except OSError:
        problems.append("libbpf.so.1 missing (apt-get install libbpf1)")
    require(problems, "eBPF prerequisites")


@contextlib.contextmanager
def bpffs():
    """A fresh bpffs mounted on a temporary directory; yields its path."""
    ebpf_prerequisites()
    d = tempfile.mkdtemp(prefix="nt-bpffs-")
    subprocess.run(["mount", "-t", "bpf", "bpf", d], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", d], check=False)
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def scratch_cgroup():
    """A new, uniquely named cgroup v2 child (never the root), made in the cgroup2 hierarchy
    mounted again on a temporary directory: ``ip netns exec`` remounts /sys, so a path under
    /sys/fs/cgroup is not visible to the lab's processes.  Removed (and unmounted) afterwards."""
    mnt = tempfile.mkdtemp(prefix="nt-cgroup2-")
    subprocess.run(["mount", "-t", "cgroup2", "none", mnt], check=True)
    path = os.path.join(mnt, f"nettrust-test-{uuid.uuid4().hex[:8]}")
    try:
        os.mkdir(path)
        try:
            yield path
        finally:
            for _ in range(50):             # its last processes may still be exiting
                try:
                    os.rmdir(path)
                    break
                except OSError:
                    time.sleep(0.1)
    finally:
        subprocess.run(["umount", "-l", mnt], check=False)
        os.rmdir(mnt)
