#!/bin/sh
# NetTrust's container entrypoint.
#
#   (no arguments, or options)  check the configuration, render Unbound's from it and exec
#                               Unbound in the foreground; options go to unbound (e.g. -vv)
#   any other command           run it instead: `nettrust hosts`, `sh`, …
#
# Started as root (the default), it hands Unbound to the unbound user holding only
# CAP_NET_ADMIN and CAP_NET_BIND_SERVICE (ambient), the same as the systemd drop-in on a host;
# that works with every runtime.  Started as unbound (`--user unbound`), the runtime must grant
# both capabilities itself (podman does for --cap-add NET_ADMIN,NET_BIND_SERVICE).
set -eu
case "${1:-}" in
    ""|-*) ;;
    *) exec "$@" ;;
esac

export NETTRUST_CONFIG="${NETTRUST_CONFIG:-/etc/nettrust/nettrust.toml}"
SNIPPETS=/etc/nettrust/unbound.conf.d
CONF=/run/nettrust/unbound.conf
CAPS=-all,+net_admin,+net_bind_service

nettrust check "$NETTRUST_CONFIG"
[ -s /var/lib/unbound/root.key ] || cp /usr/share/dns/root.key /var/lib/unbound/root.key
{
    echo "# Rendered by $0 at container start; edit $NETTRUST_CONFIG or $SNIPPETS/*.conf instead."
    echo 'server:'
    echo '    interface: 127.0.0.1'
    echo '    interface: ::1'
    echo '    use-syslog: no'
    echo '    logfile: ""'
    echo '    pidfile: ""'
    echo '    auto-trust-anchor-file: "/var/lib/unbound/root.key"'
    echo "    # Site additions (interfaces, access-control, stub zones); NetTrust's settings follow"
    echo "    # and win where they overlap."
    for snippet in "$SNIPPETS"/*.conf; do
        if [ -e "$snippet" ]; then echo "    include: \"$snippet\""; fi
    done
    echo 'remote-control:'
    echo '    control-enable: yes'
    echo '    control-interface: /run/nettrust/unbound.ctl'
    echo '    control-use-cert: no'
    nettrust -c "$NETTRUST_CONFIG" unbound-conf
} > "$CONF"
unbound-checkconf "$CONF" >/dev/null

if [ "$(id -u)" = 0 ]; then
    chown unbound:unbound /var/lib/unbound/root.key
    exec setpriv --reuid unbound --regid unbound --init-groups \
        --inh-caps "$CAPS" --ambient-caps "$CAPS" --bounding-set "$CAPS" \
        unbound -d -c "$CONF" "$@"
fi
exec unbound -d -c "$CONF" "$@"
