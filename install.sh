#!/usr/bin/env bash
# Install NetTrust on this Debian 12 host: packages, a venv for Unbound's embedded Python,
# the configuration, the Unbound include and the systemd drop-in.
#
#   sudo ./install.sh [--prefix /opt/nettrust] [--start]
#
# It does not change /etc/resolv.conf and does not start the firewall unless --start is given:
# once Unbound runs with the module, every outbound connection needs a DNS answer first.
set -euo pipefail

PREFIX=/opt/nettrust
START=no
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="$2"; shift 2 ;;
        --start) START=yes; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (sudo ./install.sh)" >&2; exit 1; }
SRC="$(cd "$(dirname "$0")" && pwd)"
VENV="$PREFIX/venv"
step() { printf '\n==> %s\n' "$*"; }

step "Debian packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq unbound python3-unbound python3-venv python3-nftables nftables \
    dns-root-data ca-certificates publicsuffix >/dev/null

step "venv for Unbound's embedded Python (/usr/bin/python3) in $VENV"
/usr/bin/python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install -q --upgrade "$SRC"
ln -sf "$VENV/bin/nettrust" /usr/local/bin/nettrust
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
SCRIPT="$SITE/unbound_module/nettrust_unbound.py"
# Unbound's interpreter does not see /usr/lib/python3/dist-packages (Debian bookworm):
# make unboundmodule importable for unbound and unbound-checkconf alike.
PLATLIB="$(/usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_path("platlib"))')"
install -d "$PLATLIB"
ln -sf /usr/lib/python3/dist-packages/unboundmodule.py "$PLATLIB/unboundmodule.py"

step "configuration /etc/nettrust/nettrust.toml"
install -d -m 0755 /etc/nettrust
if [ -e /etc/nettrust/nettrust.toml ]; then
    echo "keeping the existing /etc/nettrust/nettrust.toml"
else
    install -m 0644 "$SRC/conf/nettrust.toml" /etc/nettrust/nettrust.toml
fi
nettrust check /etc/nettrust/nettrust.toml

step "Unbound include /etc/unbound/unbound.conf.d/nettrust.conf"
nettrust -c /etc/nettrust/nettrust.toml unbound-conf --script "$SCRIPT" > /etc/unbound/unbound.conf.d/nettrust.conf
RC=/etc/unbound/unbound.conf.d/remote-control.conf
if [ -f "$RC" ] && grep -q 'control-interface: /run/unbound.ctl' "$RC"; then
    cp -n "$RC" "$RC.nettrust-orig"
    sed -i 's#control-interface: /run/unbound.ctl#control-interface: /run/unbound/unbound.ctl#' "$RC"
    echo "control socket moved to /run/unbound/unbound.ctl (the unbound user owns /run/unbound)"
fi
NETTRUST_CONFIG=/etc/nettrust/nettrust.toml unbound-checkconf
# Unbound's effective settings: what the module would refuse to start on, said now.
nettrust -c /etc/nettrust/nettrust.toml check --unbound /etc/unbound/unbound.conf

step "system user nettrust (the statistics agent; not the resolver's uid)"
# The firewall exempts the resolver's uid for DNS: the agent and its alert commands run as
# their own user.  Unbound joins the nettrust group to reach the agent's sockets (0660).
if ! getent group nettrust >/dev/null; then
    addgroup --system nettrust >/dev/null
fi
if ! getent passwd nettrust >/dev/null; then
    adduser --system --ingroup nettrust --home /var/lib/nettrust --no-create-home \
        --shell /usr/sbin/nologin --gecos "NetTrust agent" nettrust >/dev/null
fi
adduser unbound nettrust >/dev/null        # without systemd too; the units also say it

step "systemd drop-in"
install -d /etc/systemd/system/unbound.service.d
install -m 0644 "$SRC/conf/systemd/unbound.service.d-nettrust.conf" /etc/systemd/system/unbound.service.d/nettrust.conf
# The statistics agent: installed always, enabled only while [stats] enabled = true.
install -m 0644 "$SRC/conf/systemd/nettrust-agent.service" /etc/systemd/system/nettrust-agent.service
STATS=$(nettrust -c /etc/nettrust/nettrust.toml check --effective \
        | "$VENV/bin/python" -c 'import json, sys; print("yes" if json.load(sys.stdin)["stats"]["enabled"] else "no")')
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ "$STATS" = yes ]; then
        systemctl enable -q nettrust-agent
        [ "$START" = yes ] && systemctl restart nettrust-agent
    fi
    if [ "$START" = yes ]; then
        systemctl restart unbound
        nettrust status
    fi
else
    echo "systemd is not running here: start Unbound yourself with"
    echo "  NETTRUST_CONFIG=/etc/nettrust/nettrust.toml PYTHONPATH=/usr/lib/python3/dist-packages unbound -d"
fi

cat <<MSG

NetTrust is installed.
  - Point this host's resolver at Unbound (nameserver 127.0.0.1 / ::1 in /etc/resolv.conf,
    or your network manager's DNS setting); only answers Unbound gives open the firewall.
  - Start:   systemctl restart unbound      (never 'reload': unsafe with Unbound 1.17.1)
  - Inspect: nettrust status ; nettrust hosts
  - Remove the firewall: nettrust remove ; uninstall: rm the drop-in and nettrust.conf include.
MSG
