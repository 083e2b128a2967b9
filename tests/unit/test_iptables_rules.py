"""Golden tests: exactly what the iptables backends program (issue 16), IPv4 and IPv6.

``iptables-restore --noflush`` and ``ipset restore`` input built from a spec with no kernel
involved (nettrust_core.firewall.iptables_rules); the ip_set netlink encoding checked against the
bytes the ipset 7.17 command line sends (captured with strace).  The kernel's view of the same
rules: tests/integration/test_core_slice.py (``every_backend``) and test_iptables_backend.py.
"""

import ipaddress as ia

from nettrust_core.firewall.base import RulesetSpec
from nettrust_core.firewall.iptables_rules import ipset_input, restore_input
from nettrust_core.netlink.ipset import adt_body, element_data

HOST = RulesetSpec(resolver_uid=100, static_hosts=(ia.ip_address("192.0.2.53"), ia.ip_address("2001:db8::35")),
                   ct_mark=0x40000000, log_group=20052)
GATEWAY = RulesetSpec(hooks=("output", "forward"), action="drop", resolver_uid=100,
                      upstreams=((ia.ip_address("192.0.2.53"), 53), (ia.ip_address("2001:db8::53"), 853)),
                      lan_interfaces=("lan0", "lan1"), lan_networks=(ia.ip_network("10.0.0.0/8"),),
                      allow_icmpv6_nd=False, allow_dhcp=False, instances=2, set_size=1000)

HOST_V4 = """\
*filter
:NETTRUST - [0:0]
-A NETTRUST -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A NETTRUST -o lo -j ACCEPT
-A NETTRUST -d 255.255.255.255/32 -p udp --sport 68 --dport 67 -j ACCEPT
-A NETTRUST -p udp -m owner --uid-owner 100 -m multiport --dports 53,853 -j ACCEPT
-A NETTRUST -p tcp -m owner --uid-owner 100 -m multiport --dports 53,853 -j ACCEPT
-A NETTRUST -p udp -m multiport --dports 53,853 -j REJECT --reject-with icmp-admin-prohibited
-A NETTRUST -p tcp -m multiport --dports 53,853 -j REJECT --reject-with icmp-admin-prohibited
-A NETTRUST -m set --match-set nettrust-static4 dst -j ACCEPT
-A NETTRUST -m set --match-set nettrust4 dst -j CONNMARK --or-mark 0x40000000
-A NETTRUST -m set --match-set nettrust4 dst -j ACCEPT
-A NETTRUST -m limit --limit 20/sec --limit-burst 20 -j NFLOG --nflog-group 20052 --nflog-prefix nettrust
-A NETTRUST -p tcp -j REJECT --reject-with tcp-reset
-A NETTRUST -j REJECT --reject-with icmp-admin-prohibited
-I OUTPUT 1 -j NETTRUST
COMMIT
"""

HOST_V6 = """\
*filter
:NETTRUST_ND - [0:0]
:NETTRUST - [0:0]
-A NETTRUST_ND -m owner --socket-exists -j RETURN
-A NETTRUST_ND -j ACCEPT
-A NETTRUST -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A NETTRUST -o lo -j ACCEPT
-A NETTRUST -d fe80::/10 -p ipv6-icmp -m icmp6 --icmpv6-type router-solicitation -m hl --hl-eq 255 -j ACCEPT
-A NETTRUST -d fe80::/10 -p ipv6-icmp -m icmp6 --icmpv6-type router-advertisement -m hl --hl-eq 255 -j ACCEPT
-A NETTRUST -d fe80::/10 -p ipv6-icmp -m icmp6 --icmpv6-type neighbour-solicitation -m hl --hl-eq 255 -j ACCEPT
-A NETTRUST -d fe80::/10 -p ipv6-icmp -m icmp6 --icmpv6-type neighbour-advertisement -m hl --hl-eq 255 -j ACCEPT
-A NETTRUST -d fe80::/10 -p ipv6-icmp -m icmp6 --icmpv6-type redirect -m hl --hl-eq 255 -j ACCEPT
-A NETTRUST -d ff02::/16 -p ipv6-icmp -m icmp6 --icmpv6-type router-solicitation -m hl --hl-eq 255 -j ACCEPT
-A NETTRUST -d ff02::/16 -p ipv6-icmp -m icmp6 --icmpv6-type router-advertisement -m hl --hl-eq 255 -j ACCEPT
-A NETTRUST -d ff02::/16 -p ipv6-icmp -m icmp6 --icmpv6-type neighbour-solicitation -m hl --hl-eq 255 -j ACCEPT
-A NETTRUST -d ff02::/16 -p ipv6-icmp -m icmp6 --icmpv6-type neighbour-advertisement -m hl --hl-eq 255 -j ACCEPT
-A NETTRUST -d ff02::/16 -p ipv6-icmp -m icmp6 --icmpv6-type redirect -m hl --hl-eq 255 -j ACCEPT
-A NETTRUST -p ipv6-icmp -m icmp6 --icmpv6-type neighbour-solicitation -m hl --hl-eq 255 -j NETTRUST_ND
-A NETTRUST -p ipv6-icmp -m icmp6 --icmpv6-type neighbour-advertisement -m hl --hl-eq 255 -j NETTRUST_ND
-A NETTRUST -d ff00::/8 -p ipv6-icmp -m icmp6 --icmpv6-type 130 -m hl --hl-eq 1 -j ACCEPT
-A NETTRUST -d ff00::/8 -p ipv6-icmp -m icmp6 --icmpv6-type 131 -m hl --hl-eq 1 -j ACCEPT
-A NETTRUST -d ff00::/8 -p ipv6-icmp -m icmp6 --icmpv6-type 132 -m hl --hl-eq 1 -j ACCEPT
-A NETTRUST -d ff00::/8 -p ipv6-icmp -m icmp6 --icmpv6-type 143 -m hl --hl-eq 1 -j ACCEPT
-A NETTRUST -d fe80::/10 -p udp --sport 546 --dport 547 -j ACCEPT
-A NETTRUST -d ff02::1:2/128 -p udp --sport 546 --dport 547 -j ACCEPT
-A NETTRUST -p udp -m owner --uid-owner 100 -m multiport --dports 53,853 -j ACCEPT
-A NETTRUST -p tcp -m owner --uid-owner 100 -m multiport --dports 53,853 -j ACCEPT
-A NETTRUST -p udp -m multiport --dports 53,853 -j REJECT --reject-with icmp6-adm-prohibited
-A NETTRUST -p tcp -m multiport --dports 53,853 -j REJECT --reject-with icmp6-adm-prohibited
-A NETTRUST -m set --match-set nettrust-static6 dst -j ACCEPT
-A NETTRUST -m set --match-set nettrust6 dst -j CONNMARK --or-mark 0x40000000
-A NETTRUST -m set --match-set nettrust6 dst -j ACCEPT
-A NETTRUST -m limit --limit 20/sec --limit-burst 20 -j NFLOG --nflog-group 20052 --nflog-prefix nettrust
-A NETTRUST -p tcp -j REJECT --reject-with tcp-reset
-A NETTRUST -j REJECT --reject-with icmp6-adm-prohibited
-I OUTPUT 1 -j NETTRUST
COMMIT
"""

HOST_SETS = """\
create nettrust4 hash:ip family inet timeout 0 comment -exist
create nettrust6 hash:ip family inet6 timeout 0 comment -exist
create nettrust-static4 hash:net family inet -exist
create nettrust-static4-new hash:net family inet -exist
flush nettrust-static4-new
add nettrust-static4-new 127.0.0.0/8
add nettrust-static4-new 192.0.2.53/32
swap nettrust-static4-new nettrust-static4
destroy nettrust-static4-new
create nettrust-static6 hash:net family inet6 -exist
create nettrust-static6-new hash:net family inet6 -exist
flush nettrust-static6-new
add nettrust-static6-new ::1/128
add nettrust-static6-new 2001:db8::35/128
swap nettrust-static6-new nettrust-static6
destroy nettrust-static6-new
"""

GATEWAY_V4_REPAIR = """\
*filter
:NETTRUST_LAN - [0:0]
:NETTRUST - [0:0]
:NETTRUST_FWD - [0:0]
-A NETTRUST_LAN -i lan0 -s 10.0.0.0/8 -j RETURN
-A NETTRUST_LAN -i lan1 -s 10.0.0.0/8 -j RETURN
-A NETTRUST_LAN -j DROP
-A NETTRUST -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A NETTRUST -o lo -j ACCEPT
-A NETTRUST -d 192.0.2.53/32 -p udp -m owner --uid-owner 100 --dport 53 -j ACCEPT
-A NETTRUST -d 192.0.2.53/32 -p tcp -m owner --uid-owner 100 --dport 53 -j ACCEPT
-A NETTRUST -p udp -m multiport --dports 53,853 -j DROP
-A NETTRUST -p tcp -m multiport --dports 53,853 -j DROP
-A NETTRUST -m set --match-set nettrust-static4 dst -j ACCEPT
-A NETTRUST -m set --match-set nettrust4 dst -j ACCEPT
-A NETTRUST -m set --match-set nettrust4_1 dst -j ACCEPT
-A NETTRUST -j DROP
-A NETTRUST_FWD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A NETTRUST_FWD -j NETTRUST_LAN
-A NETTRUST_FWD -p udp -m multiport --dports 53,853 -j DROP
-A NETTRUST_FWD -p tcp -m multiport --dports 53,853 -j DROP
-A NETTRUST_FWD -m set --match-set nettrust-static4 dst -j ACCEPT
-A NETTRUST_FWD -m set --match-set nettrust4 dst -j ACCEPT
-A NETTRUST_FWD -m set --match-set nettrust4_1 dst -j ACCEPT
-A NETTRUST_FWD -j DROP
-D OUTPUT -j NETTRUST
-I FORWARD 1 -j NETTRUST_FWD
-F NETTRUST_ND
-X NETTRUST_ND
COMMIT
"""

GATEWAY_V6 = """\
*filter
:NETTRUST_LAN - [0:0]
:NETTRUST - [0:0]
:NETTRUST_FWD - [0:0]
-A NETTRUST_LAN -j DROP
-A NETTRUST -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A NETTRUST -o lo -j ACCEPT
-A NETTRUST -d 2001:db8::53/128 -p udp -m owner --uid-owner 100 --dport 853 -j ACCEPT
-A NETTRUST -d 2001:db8::53/128 -p tcp -m owner --uid-owner 100 --dport 853 -j ACCEPT
-A NETTRUST -p udp -m multiport --dports 53,853 -j DROP
-A NETTRUST -p tcp -m multiport --dports 53,853 -j DROP
-A NETTRUST -m set --match-set nettrust-static6 dst -j ACCEPT
-A NETTRUST -m set --match-set nettrust6 dst -j ACCEPT
-A NETTRUST -m set --match-set nettrust6_1 dst -j ACCEPT
-A NETTRUST -j DROP
-A NETTRUST_FWD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A NETTRUST_FWD -j NETTRUST_LAN
-A NETTRUST_FWD -p udp -m multiport --dports 53,853 -j DROP
-A NETTRUST_FWD -p tcp -m multiport --dports 53,853 -j DROP
-A NETTRUST_FWD -m set --match-set nettrust-static6 dst -j ACCEPT
-A NETTRUST_FWD -m set --match-set nettrust6 dst -j ACCEPT
-A NETTRUST_FWD -m set --match-set nettrust6_1 dst -j ACCEPT
-A NETTRUST_FWD -j DROP
-I OUTPUT 1 -j NETTRUST
-I FORWARD 1 -j NETTRUST_FWD
COMMIT
"""

GATEWAY_SETS = """\
create nettrust4 hash:ip family inet timeout 0 comment maxelem 1000 -exist
create nettrust6 hash:ip family inet6 timeout 0 comment maxelem 1000 -exist
create nettrust4_1 hash:ip family inet timeout 0 comment maxelem 1000 -exist
create nettrust6_1 hash:ip family inet6 timeout 0 comment maxelem 1000 -exist
create nettrust-static4 hash:net family inet -exist
create nettrust-static4-new hash:net family inet -exist
flush nettrust-static4-new
add nettrust-static4-new 127.0.0.0/8
swap nettrust-static4-new nettrust-static4
destroy nettrust-static4-new
create nettrust-static6 hash:net family inet6 -exist
create nettrust-static6-new hash:net family inet6 -exist
flush nettrust-static6-new
add nettrust-static6-new ::1/128
swap nettrust-static6-new nettrust-static6
destroy nettrust-static6-new
"""


def test_host_ipv4_rules():
    assert restore_input(HOST, 4) == HOST_V4


def test_host_ipv6_rules_nd_dhcpv6_and_icmp6_reject():
    assert restore_input(HOST, 6) == HOST_V6


def test_host_sets_grant_sets_kept_static_sets_swapped():
    assert ipset_input(HOST) == HOST_SETS


def test_gateway_ipv4_repair_removes_a_duplicate_jump_and_a_stale_chain():
    assert restore_input(GATEWAY, 4, {("OUTPUT", "NETTRUST"): 2}, ("NETTRUST_ND",)) == GATEWAY_V4_REPAIR


def test_gateway_ipv6_no_lan_network_of_the_family_drops_all_forwarded():
    assert restore_input(GATEWAY, 6) == GATEWAY_V6
    assert "-A NETTRUST_LAN -j DROP\n-A NETTRUST " in GATEWAY_V6     # no RETURN before it


def test_gateway_sets_one_pair_per_instance_with_maxelem():
    assert ipset_input(GATEWAY) == GATEWAY_SETS


def test_existing_jump_is_not_added_again():
    text = restore_input(HOST, 4, {("OUTPUT", "NETTRUST"): 1})
    assert "-I OUTPUT" not in text and "-D OUTPUT" not in text


def test_ipset_element_encoding_matches_the_ipset_command_line():
    # strace of `ipset add t4 1.2.3.4 timeout 5 comment x`: the IPSET_ATTR_DATA payload, whose
    # last attribute is the CLI's line number (IPSET_ATTR_LINENO), which ours leaves out.
    cli = bytes.fromhex("0c0001800800014001020304080006400000000506001a00780000000800094000000000")
    assert element_data(ia.ip_address("1.2.3.4").packed, 5, "x") == cli[:-8]


def test_ipset_add_of_several_elements_is_one_adt_list_with_a_line_number():
    body = adt_body("t4", [element_data(b"\x01\x02\x03\x04", 5), element_data(b"\x01\x02\x03\x05", 6)])
    assert body.startswith(bytes.fromhex("050001000700000007000200743400000800094000000000"))
    assert body[24:28] == bytes.fromhex("34000880")       # IPSET_ATTR_ADT, nested, 52 bytes
    assert body.count(bytes.fromhex("18000780")) == 2     # two IPSET_ATTR_DATA nests of 24
