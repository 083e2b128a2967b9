"""``nettrust check`` warns when an alert target would be refused by the firewall: a webhook or
a remote syslog server neither answered by the resolver's policy nor listed under
``[reachable]``.  The real CLI on real configuration files; nothing is sent."""

from __future__ import annotations

import pytest

from nettrust_core.agent.alert_targets import problems, syslog_targets
from nettrust_core.cli import main
from nettrust_core.config import parse_config

STATS = '[stats]\nenabled = true\n'


def check(tmp_path, capsys, text: str) -> tuple[int, str]:
    path = tmp_path / "nettrust.toml"
    path.write_text(text)
    code = main(["check", str(path)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("text,warned", [
    # a name the allowlist does not answer: refused
    ('[general]\nmode = "allowlist"\n[policy]\nallow = ["**.example.org"]\n' + STATS
     + '[alerts]\nwebhook = "https://hooks.example.com/x"\n', "hooks.example.com"),
    # a denied name
    ('[policy]\ndeny = ["**.example.com"]\n' + STATS
     + '[alerts]\nwebhook = "https://hooks.example.com/x"\n', "hooks.example.com"),
    # an address literal not under [reachable]
    (STATS + '[alerts]\nwebhook = "http://192.0.2.50:8080/hook"\n', "192.0.2.50"),
    (STATS + '[alerts]\nwebhook = "http://[2001:db8::50]/hook"\n', "2001:db8::50"),
])
def test_an_unreachable_webhook_is_warned_about(tmp_path, capsys, text, warned):
    code, err = check(tmp_path, capsys, text)
    assert code == 0                                   # a warning, not an error
    assert f"nettrust: warning: alerts.webhook: {warned} " in err
    assert "refused by the firewall" in err


@pytest.mark.parametrize("text", [
    # controls: the same targets once reachable, and targets that need nothing
    '[general]\nmode = "allowlist"\n[policy]\nallow = ["**.example.org", "hooks.example.com"]\n' + STATS
    + '[alerts]\nwebhook = "https://hooks.example.com/x"\n',
    STATS + '[alerts]\nwebhook = "https://hooks.example.com/x"\n',          # denylist mode
    STATS + '[reachable]\nhosts = ["192.0.2.50"]\n[alerts]\nwebhook = "http://192.0.2.50/h"\n',
    STATS + '[reachable]\nnetworks = ["2001:db8::/64"]\n[alerts]\nwebhook = "http://[2001:db8::50]/"\n',
    STATS + '[alerts]\nwebhook = "http://127.0.0.1:8931/hook"\n',
    STATS + '[alerts]\nwebhook = "http://localhost/hook"\n',
    # statistics off: no agent, no alerts
    '[alerts]\nwebhook = "http://192.0.2.50/hook"\n',
])
def test_reachable_targets_are_not_warned_about(tmp_path, capsys, text):
    code, err = check(tmp_path, capsys, text)
    assert code == 0 and "warning" not in err, err


def test_syslog_forwarding_targets_are_checked(tmp_path):
    (tmp_path / "rsyslog.conf").write_text("*.* @@logs.example.com:514\n# *.* @commented.example\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "50-remote.conf").write_text(
        'daemon.* action(type="omfwd" target="192.0.2.60" port="514" protocol="udp")\n'
        "auth.* @[2001:db8::60]:514\n")
    files = [str(tmp_path / "rsyslog.conf"), str(tmp_path / "d" / "*.conf")]
    assert syslog_targets(files) == ["logs.example.com", "192.0.2.60", "2001:db8::60"]
    config = parse_config('[general]\nmode = "allowlist"\n[policy]\nallow = ["**.example.com"]\n' + STATS
                          + '[reachable]\nhosts = ["2001:db8::60"]\n[alerts]\nsyslog = true\n')
    found = problems(config, lambda name: name.endswith(".example.com"), files)
    assert [w.split(":")[0] for w in found] == ["alerts.syslog (forwarded by rsyslog)"]
    assert "192.0.2.60 is an address literal" in found[0]
    # control: syslog off, nothing forwarded is checked
    off = parse_config(STATS + "[alerts]\nsyslog = false\n")
    assert problems(off, lambda name: False, files) == []
