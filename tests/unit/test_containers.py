"""The pure parts of the container tooling: which mirror the base image uses, the network
guard around podman, and the compose file saying what the README's run command says."""

from pathlib import Path

import pytest
import yaml

from testbed.containers import debian_mirrors, require_network
from testbed.errors import LabError

REPO = Path(__file__).resolve().parents[2]


def test_mirrors_from_deb822_and_one_line_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb deb-src\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://old.example/debian\nSuites: bullseye\nEnabled: no\n\n"
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: trixie\n")
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [signed-by=/k.gpg] https://sec.example/debian-security bookworm-security main\n"
        "deb file:/srv/local bookworm-local main\n")
    mirrors = debian_mirrors((tmp_path / "sources.list", tmp_path / "sources.list.d"))
    assert mirrors == {"bookworm": "http://mirror.example/debian",
                       "bookworm-updates": "http://mirror.example/debian",
                       "bookworm-security": "https://sec.example/debian-security"}


@pytest.mark.parametrize("args", [("run", "--rm", "img"), ("build", "-t", "x", "."), ("create", "img")])
def test_podman_commands_that_make_a_network_must_name_it(args):
    with pytest.raises(LabError, match="--network"):
        require_network(args)


@pytest.mark.parametrize("args", [("run", "--network=host", "img"), ("build", "--network", "none", "."),
                                  ("image", "exists", "x"), ("system", "reset", "--force")])
def test_podman_commands_with_a_network_or_none_needed_pass(args):
    require_network(args)


def test_compose_file_runs_what_the_readme_documents():
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    service = compose["services"]["nettrust"]
    build = service["build"]
    assert (REPO / "docker" / build["context"] / build["dockerfile"]).resolve() == REPO / "docker" / "Containerfile"
    assert service["network_mode"] == "host" and service["cap_add"] == ["NET_ADMIN"]
    assert "/etc/nettrust:/etc/nettrust:ro" in service["volumes"]
    readme = (REPO / "README.md").read_text()
    assert ("--network host --cap-add NET_ADMIN -v /etc/nettrust:/etc/nettrust:ro nettrust" in readme)
