#!/bin/sh
# Render Unbound's configuration from the mounted nettrust.toml, check it, then run Unbound in
# the foreground as the unbound user with only CAP_NET_ADMIN and CAP_NET_BIND_SERVICE.
set -eu
SCRIPT=$(/opt/nettrust/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/unbound_module/nettrust_unbound.py
nettrust check "$NETTRUST_CONFIG"
install -d -m 0755 /run/nettrust
CONF=/run/nettrust/unbound.conf
{
    echo 'server:'
    echo '    interface: 127.0.0.1'
    echo '    interface: ::1'
    echo '    use-syslog: no'
    echo '    logfile: ""'
    echo '    pidfile: ""'
    echo '    auto-trust-anchor-file: "/var/lib/unbound/root.key"'
    nettrust -c "$NETTRUST_CONFIG" unbound-conf --script "$SCRIPT"
} > "$CONF"
[ -s /var/lib/unbound/root.key ] || cp /usr/share/dns/root.key /var/lib/unbound/root.key
chown unbound:unbound /var/lib/unbound /var/lib/unbound/root.key
unbound-checkconf "$CONF"
exec setpriv --reuid unbound --regid unbound --init-groups \
    --inh-caps -all,+net_admin,+net_bind_service --ambient-caps -all,+net_admin,+net_bind_service \
    --bounding-set -all,+net_admin,+net_bind_service \
    unbound -d -c "$CONF" "$@"
