"""The Unbound include carries the dnstap lines exactly when every response is to be recorded."""

from nettrust_core.config import parse_config
from nettrust_core.unbound_conf import render


def include(text):
    return render(parse_config(text), script="/opt/nettrust/unbound_module/nettrust_unbound.py")


def test_dnstap_only_with_stats_and_cache_hits():
    assert "dnstap:" not in include("")
    on = include('[stats]\nenabled = true\ndnstap_socket = "/run/x/tap.sock"\n')
    assert 'dnstap-socket-path: "/run/x/tap.sock"' in on
    assert "dnstap-log-client-response-messages: yes" in on
    assert "dnstap-log-client-query-messages: no" in on and "dnstap-bidirectional: yes" in on
    assert "dnstap:" not in include("[stats]\nenabled = true\ncache_hits = false\n")
