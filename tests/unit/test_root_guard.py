"""The session guard's comparison: each kind of change to the root namespace is reported."""

from dataclasses import replace

from root_guard import RootState, differences

BASE = RootState("table inet x {}\n", ("eth0", "lo"),
                 (("/proc/sys/net/ipv4/ip_forward", "0"),), "nameserver 10.0.0.1\n")


def test_nothing_changed_reports_nothing():
    assert differences(BASE, replace(BASE)) == []


def test_a_new_table_in_the_root_namespace_is_reported():
    after = replace(BASE, ruleset=BASE.ruleset + "table inet nettrust {}\n")
    [line] = differences(BASE, after)
    assert "ruleset changed" in line and "nettrust" in line


def test_a_leftover_link_is_named():
    [line] = differences(BASE, replace(BASE, links=("eth0", "lo", "veth-nt12")))
    assert "veth-nt12" in line


def test_forwarding_switched_on_is_named():
    after = replace(BASE, forwarding=(("/proc/sys/net/ipv4/ip_forward", "1"),))
    [line] = differences(BASE, after)
    assert "ip_forward: 0 -> 1" in line


def test_resolv_conf_rewritten_is_reported():
    assert differences(BASE, replace(BASE, resolv_conf="nameserver 127.0.0.1\n"))
