"""Shared test setup.

Integration tests need root, network namespaces and real daemons.  Locally a missing
prerequisite skips them with the reason; under ``CI=true`` it fails the run instead, so CI can
never pass by skipping.
"""

import os
import shutil

import pytest

import root_guard

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TOOLS = {"ip": "iproute2", "nft": "nftables", "unbound": "unbound", "nsd": "nsd",
         "ldns-signzone": "ldnsutils", "dig": "bind9-dnsutils", "curl": "curl", "setpriv": "util-linux"}


def missing_prerequisites() -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("not root")
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            problems.append(f"{tool} missing (apt-get install {package})")
    return problems


def require(problems: list[str], what: str = "integration prerequisites") -> None:
    if problems:
        message = f"{what}: " + "; ".join(problems)
        if IN_CI:
            pytest.fail(message + " (CI=true: failing instead of skipping)")
        pytest.skip(message)


def require_integration() -> None:
    require(missing_prerequisites())


@pytest.fixture(scope="session")
def container_prerequisites() -> None:
    """podman, runc, debootstrap and the Debian mirror, checked once; depend on it from the
    fixtures that build or run images, so the check comes before them."""
    from testbed.containers import missing_prerequisites as missing_container_prerequisites
    require(missing_container_prerequisites(), "container prerequisites")


@pytest.fixture(autouse=True)
def _integration_prerequisites(request):
    if request.node.get_closest_marker("integration") is not None:
        require_integration()


# -- the machine's safety, checked by the session itself -------------------------------------
_ROOT_STATE = pytest.StashKey[root_guard.RootState]()


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):        # xdist: the controller checks once
        session.config.stash[_ROOT_STATE] = root_guard.snapshot()


def pytest_sessionfinish(session, exitstatus):
    before = session.config.stash.get(_ROOT_STATE, None)
    if before is None:
        return
    problems = root_guard.differences(before, root_guard.snapshot())
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        text = ("the root network namespace changed during the test run (tests must work only "
                "inside namespaces they create):\n" + "\n".join(problems))
        if reporter is not None:
            reporter.write_sep("!", "ROOT NAMESPACE CHANGED", red=True)
            reporter.write_line(text)
        else:
            print(text)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
