"""[dot] renderers: what HAProxy and Unbound get (golden lines), and the CLI verbs around them.
tests/integration/test_dot.py runs the rendered configuration with real HAProxy and Unbound."""

from __future__ import annotations

import re

import pytest

from nettrust_core import cli
from nettrust_core.config import load_config
from nettrust_core.dot import haproxy_config, systemd_unit, unbound_lines
from nettrust_core.errors import ConfigError
from nettrust_core.unbound_conf import render

DOT = """
[dot]
enabled = true
listen = ["192.0.2.1:853", "[2001:db8::1]:853"]
certificate = "/etc/nettrust/dot/server.pem"
client_ca = "/etc/nettrust/dot/site-ca.pem"
crl = "/etc/nettrust/dot/site-ca.crl"
proxy_port = 9853
"""


def _config(tmp_path, text: str = DOT):
    p = tmp_path / "nettrust.toml"
    p.write_text(text)
    return load_config(str(p)), str(p)


def test_haproxy_requires_a_client_certificate_of_the_site_ca_on_every_bind(tmp_path):
    config, _ = _config(tmp_path)
    text = haproxy_config(config)
    binds = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("bind ")]
    assert binds == [
        "bind 192.0.2.1:853 ssl crt /etc/nettrust/dot/server.pem ca-file "
        "/etc/nettrust/dot/site-ca.pem verify required crl-file /etc/nettrust/dot/site-ca.crl "
        "alpn dot",
        "bind [2001:db8::1]:853 v6only ssl crt /etc/nettrust/dot/server.pem ca-file "
        "/etc/nettrust/dot/site-ca.pem verify required crl-file /etc/nettrust/dot/site-ca.crl "
        "alpn dot"]
    servers = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("server ")]
    assert servers == ["server unbound 127.0.0.1:9853 send-proxy-v2"]
    assert "mode tcp" in text


def test_unbound_binds_the_proxy_port_on_loopback_only(tmp_path):
    config, _ = _config(tmp_path)
    lines = [ln.strip() for ln in unbound_lines(config) if not ln.strip().startswith("#")]
    assert lines == ["interface: 127.0.0.1@9853", "proxy-protocol-port: 9853"]
    text = render(config, script="/x/nettrust_unbound.py")
    bound = re.findall(r"interface: (\S+)@9853", text)
    assert bound == ["127.0.0.1"]
    # control: without [dot] nothing about PROXY is rendered
    plain, _ = _config(tmp_path, "")
    assert unbound_lines(plain) == [] and "proxy-protocol" not in render(plain, script="/x")


def test_listen_addresses_are_checked_where_they_are_written(tmp_path):
    with pytest.raises(ConfigError, match=r"dot\.listen.*ADDRESS:PORT"):
        _config(tmp_path, '[dot]\nlisten = ["dns.example:853"]\n')
    with pytest.raises(ConfigError, match=r"dot\.listen"):
        _config(tmp_path, '[dot]\nlisten = ["0.0.0.0:70000"]\n')
    with pytest.raises(ConfigError, match=r"dot\.certificate"):
        _config(tmp_path, '[dot]\ncertificate = "server.pem"\n')


def test_the_unit_regenerates_and_checks_the_configuration_before_haproxy_starts(tmp_path):
    config, path = _config(tmp_path)
    unit = systemd_unit(config, "/usr/local/bin/nettrust")
    pre = [ln for ln in unit.splitlines() if ln.startswith("ExecStartPre=")]
    assert pre == [f"ExecStartPre=/usr/local/bin/nettrust -c {path} haproxy-conf --write "
                   "/etc/nettrust/haproxy-dot.cfg",
                   "ExecStartPre=/usr/sbin/haproxy -c -q -f /etc/nettrust/haproxy-dot.cfg"]
    assert "ExecStart=/usr/sbin/haproxy -Ws -f /etc/nettrust/haproxy-dot.cfg" in unit


def test_cli_haproxy_conf_writes_once_and_refuses_without_dot(tmp_path, capsys):
    _, path = _config(tmp_path)
    out = tmp_path / "haproxy.cfg"
    assert cli.main(["-c", path, "haproxy-conf", "--write", str(out)]) == 0
    assert "send-proxy-v2" in out.read_text()
    assert cli.main(["-c", path, "haproxy-conf", "--write", str(out)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert cli.main(["-c", path, "haproxy-conf", "--unit"]) == 0
    assert "[Service]" in capsys.readouterr().out
    _, plain = _config(tmp_path, "")
    assert cli.main(["-c", plain, "haproxy-conf"]) == 1
    assert "[dot] enabled is false" in capsys.readouterr().err


def test_install_resolver_is_resolver_setup(tmp_path, capsys):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "resolv.conf").write_text("nameserver 192.0.2.53\n")
    assert cli.main(["install-resolver", "--root", str(root)]) == 0
    assert "nameserver 127.0.0.1" in capsys.readouterr().out
    assert cli.main(["install-resolver", "--apply", "--root", str(root)]) == 0
    assert "nameserver 127.0.0.1" in (root / "etc" / "resolv.conf").read_text()
