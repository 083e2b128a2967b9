#!/usr/bin/env bash
# Install NetTrust on this Debian 12 host: packages, a venv for Unbound's embedded Python,
# the configuration, the Unbound include and the systemd drop-in.
#
#   sudo ./install.sh [--prefix /opt/nettrust] [--start [--force]] [--offline]
#   sudo ./install.sh --uninstall [--purge]
#
# It does not change /etc/resolv.conf and does not start the firewall unless --start is given:
# once Unbound runs with the module, every outbound connection needs a DNS answer first.
# --start refuses while /etc/resolv.conf does not name the local resolver (see
# `nettrust resolver-setup`) unless --force.  Run again to upgrade: the configuration and the
# live grants stay, and a running Unbound is restarted once.  --uninstall stops NetTrust, removes
# its ruleset, units, include, venv and links and restores Unbound's own settings; /etc/nettrust
# stays unless --purge.  Everything comes from Debian packages; a dependency Debian 12 lacks (none
# today) would be fetched from PyPI when reachable, and named; never with --offline.
set -euo pipefail

PREFIX=/opt/nettrust
START=no
FORCE=no
UNINSTALL=no
PURGE=no
OFFLINE=no
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="$2"; shift 2 ;;
        --start) START=yes; shift ;;
        --force) FORCE=yes; shift ;;
        --uninstall) UNINSTALL=yes; shift ;;
        --purge) PURGE=yes; shift ;;
        --offline) OFFLINE=yes; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (sudo ./install.sh)" >&2; exit 1; }
if [ "$PURGE" = yes ] && [ "$UNINSTALL" = no ]; then
    echo "install.sh: --purge goes with --uninstall" >&2; exit 2
fi
SRC="$(cd "$(dirname "$0")" && pwd)"
VENV="$PREFIX/venv"
CONF=/etc/nettrust/nettrust.toml
INCLUDE=/etc/unbound/unbound.conf.d/nettrust.conf
RC=/etc/unbound/unbound.conf.d/remote-control.conf
DROPIN=/etc/systemd/system/unbound.service.d/nettrust.conf
AA_LOCAL=/etc/apparmor.d/local/usr.sbin.unbound
AA_BEGIN="# BEGIN NetTrust (install.sh)"
AA_END="# END NetTrust"
START_SCRIPT=/usr/local/sbin/nettrust-unbound-start
step() { printf '\n==> %s\n' "$*"; }
have_systemd() { [ -d /run/systemd/system ]; }
apparmor_on() {
    [ -r /sys/module/apparmor/parameters/enabled ] && grep -q Y /sys/module/apparmor/parameters/enabled \
        && [ -e /etc/apparmor.d/usr.sbin.unbound ] && command -v apparmor_parser >/dev/null
}
# The AppArmor local file without our block (kept: the administrator's own lines).
strip_apparmor() {
    [ -f "$AA_LOCAL" ] || return 0
    sed -i "/^$AA_BEGIN\$/,/^$AA_END\$/d" "$AA_LOCAL"
}
instance_confs() { ls /etc/unbound/unbound-[0-9]*.conf 2>/dev/null || true; }

# -------------------------------------------------------------------------------------------
if [ "$UNINSTALL" = yes ]; then
    step "stopping NetTrust"
    if have_systemd; then
        for unit in $(systemctl list-units --plain --no-legend --all 'unbound@*' 2>/dev/null | awk '{print $1}'); do
            systemctl disable -q --now "$unit" || true
        done
        systemctl disable -q --now nettrust-agent 2>/dev/null || true
        systemctl disable -q --now nettrust-web 2>/dev/null || true
        systemctl stop unbound 2>/dev/null || true
    elif pgrep -x unbound >/dev/null; then
        echo "stopping Unbound (pids $(pgrep -x unbound | tr '\n' ' '))"
        pkill -x unbound || true
        for _ in $(seq 50); do pgrep -x unbound >/dev/null || break; sleep 0.1; done
    fi
    if [ -x "$VENV/bin/nettrust" ]; then
        "$VENV/bin/nettrust" -c "$CONF" remove || echo "install.sh: could not remove the ruleset" >&2
        "$VENV/bin/nettrust" resolver-setup --undo || true
    fi
    step "removing the drop-in, units, include and links"
    rm -f "$DROPIN" /etc/systemd/system/nettrust-agent.service /etc/systemd/system/nettrust-web.service \
          /etc/systemd/system/unbound@.service \
          "$INCLUDE" $(instance_confs) /usr/local/bin/nettrust "$START_SCRIPT"
    rmdir /etc/systemd/system/unbound.service.d 2>/dev/null || true
    if [ -f "$RC.nettrust-orig" ]; then
        mv -f "$RC.nettrust-orig" "$RC"
        echo "restored $RC (the control socket setting)"
    fi
    PLATLIB="$(/usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_path("platlib"))')"
    [ -L "$PLATLIB/unboundmodule.py" ] && rm -f "$PLATLIB/unboundmodule.py"
    if [ -f "$AA_LOCAL" ] && grep -q "^$AA_BEGIN\$" "$AA_LOCAL"; then
        strip_apparmor
        apparmor_on && apparmor_parser -r /etc/apparmor.d/usr.sbin.unbound || true
        echo "removed NetTrust's lines from $AA_LOCAL"
    fi
    rm -rf "$VENV"
    rmdir "$PREFIX" 2>/dev/null || true
    if [ "$PURGE" = yes ]; then
        rm -rf /etc/nettrust /var/lib/nettrust /run/nettrust
        getent group nettrust >/dev/null && gpasswd -d unbound nettrust >/dev/null 2>&1 || true
        getent passwd nettrust >/dev/null && deluser --quiet --system nettrust >/dev/null 2>&1 || true
        getent group nettrust >/dev/null && delgroup --quiet --system nettrust >/dev/null 2>&1 || true
        echo "purged /etc/nettrust, /var/lib/nettrust and the nettrust user"
    else
        echo "kept /etc/nettrust (install.sh --uninstall --purge removes it)"
    fi
    if have_systemd; then
        systemctl daemon-reload
        if systemctl is-enabled -q unbound 2>/dev/null; then
            systemctl restart unbound && echo "plain Unbound restarted"
        fi
    fi
    echo
    echo "NetTrust is uninstalled; egress is no longer filtered by it."
    exit 0
fi

# -------------------------------------------------------------------------------------------
UPGRADE=no
[ -e "$INCLUDE" ] && [ -x "$VENV/bin/nettrust" ] && UPGRADE=yes

step "Debian packages"
# The set the container image installs (docker/Containerfile), plus the dashboard's server
# (`nettrust web`) and HAProxy (DoT with client certificates, [dot]): no other package index.
PACKAGES="unbound python3-unbound python3-nftables nftables dns-root-data ca-certificates
          python3-venv python3-setuptools python3-wheel util-linux
          python3-dnspython python3-prometheus-client python3-rich sqlite-utils publicsuffix
          python3-starlette python3-uvicorn haproxy libbpf1"
missing=$(for p in $PACKAGES; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
    echo "installed: $(echo $missing)"
else
    echo "all present"
fi

step "venv for Unbound's embedded Python (/usr/bin/python3) in $VENV"
[ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$VENV"
# The eBPF backend's compiled programs ship as package data: built where clang is (./run-tests,
# CI); a host without the objects can still use every other backend.
BPF="$SRC/nettrust_core/firewall/bpf"
if [ ! -e "$BPF/nettrust.bpf.o" ] && command -v clang >/dev/null && command -v llvm-strip >/dev/null \
        && [ -e /usr/include/bpf/bpf_helpers.h ]; then
    "$BPF/build.sh" || echo "note: the eBPF programs did not build (firewall backend \"ebpf\" unavailable)"
fi
# Debian's packages satisfy the dependencies: no package index is asked for the project itself.
"$VENV/bin/pip" install -q --no-index --no-deps --no-build-isolation --force-reinstall "$SRC" 2>&1 \
    | grep -v "^ *$" || true
# A dependency Debian 12 does not package (none today: the check stays so a new one is named, not
# silently fetched) comes from PyPI when reachable.
UNMET=$("$VENV/bin/python" - <<'PY'
import importlib.metadata as md, re
for req in md.requires("nettrust") or ():
    if ";" in req:
        continue
    name = re.split(r"[<>=!~ \[]", req, maxsplit=1)[0]
    try:
        md.version(name)
    except md.PackageNotFoundError:
        print(req)
PY
)
for req in $UNMET; do
    if [ "$OFFLINE" = yes ]; then
        echo "not packaged by Debian 12: $req -- not installed (--offline)"
        continue
    fi
    echo "not packaged by Debian 12: $req -- trying PyPI"
    if timeout 60 "$VENV/bin/pip" install -q --no-deps --retries 0 --timeout 5 "$req" >/dev/null 2>&1; then
        echo "  installed $req from PyPI"
    else
        echo "  PyPI unreachable: $req not installed"
    fi
done
# The answer path compiled with mypyc when a mypyc and python3-dev are at hand (the source tree's
# .venv of ./run-tests, or Debian's python3-mypy); else it runs as pure Python, and says so.
# An upgrade keeps a build whose sources are unchanged (compiled.py checks their hashes).
for MYPYC_PY in "$SRC/.venv/bin/python" /usr/bin/python3; do
    if [ -x "$MYPYC_PY" ] && "$MYPYC_PY" -c "import mypyc.build" 2>/dev/null \
        && [ -e /usr/include/python3.11/Python.h ] && command -v gcc >/dev/null; then
        (cd "$SRC" && "$MYPYC_PY" -m nettrust_core.compiled_build \
            --package-dir "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/nettrust_core") \
            || true
        break
    fi
    MYPYC_PY=""
done
[ -n "$MYPYC_PY" ] || echo "nettrust: no mypyc/python3-dev here: the answer path runs as pure Python"
ln -sf "$VENV/bin/nettrust" /usr/local/bin/nettrust
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
SCRIPT="$SITE/unbound_module/nettrust_unbound.py"
# Unbound's interpreter does not see /usr/lib/python3/dist-packages (Debian bookworm):
# make unboundmodule importable for unbound and unbound-checkconf alike.
PLATLIB="$(/usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_path("platlib"))')"
install -d "$PLATLIB"
ln -sf /usr/lib/python3/dist-packages/unboundmodule.py "$PLATLIB/unboundmodule.py"

step "configuration $CONF"
install -d -m 0755 /etc/nettrust
if [ -e "$CONF" ]; then
    echo "keeping the existing $CONF"
else
    install -m 0644 "$SRC/conf/nettrust.toml" "$CONF"
fi
nettrust check "$CONF"
INSTANCES=$(nettrust -c "$CONF" check --effective \
            | "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["firewall"]["instances"])')
STATS=$(nettrust -c "$CONF" check --effective \
        | "$VENV/bin/python" -c 'import json, sys; print("yes" if json.load(sys.stdin)["stats"]["enabled"] else "no")')

step "Unbound include $INCLUDE"
nettrust -c "$CONF" unbound-conf --script "$SCRIPT" --write "$INCLUDE"
if [ -f "$RC" ] && grep -q 'control-interface: /run/unbound.ctl' "$RC"; then
    cp -n "$RC" "$RC.nettrust-orig"
    sed -i 's#control-interface: /run/unbound.ctl#control-interface: /run/unbound/unbound.ctl#' "$RC"
    echo "control socket moved to /run/unbound/unbound.ctl (the unbound user owns /run/unbound)"
fi
# The control socket's directory and the root trust anchor: systemd's unit makes them on every
# start; without systemd they are made here.
install -d -m 0755 -o unbound -g unbound /run/unbound
/usr/libexec/unbound-helper root_trust_anchor_update || true
NETTRUST_CONFIG="$CONF" PYTHONPATH=/usr/lib/python3/dist-packages unbound-checkconf
# Unbound's effective settings: what the module would refuse to start on, said now.
nettrust -c "$CONF" check --unbound /etc/unbound/unbound.conf

if [ "$INSTANCES" -gt 1 ]; then
    step "$INSTANCES Unbound instances: /etc/unbound/unbound-K.conf"
    for f in $(instance_confs); do
        k=${f##*/unbound-}; k=${k%.conf}
        [ "$k" -lt "$INSTANCES" ] || rm -f "$f"
    done
    for k in $(seq 0 $((INSTANCES - 1))); do
        cat > "/etc/unbound/unbound-$k.conf.tmp" <<EOF
# Written by install.sh: instance $k of firewall.instances = $INSTANCES (unbound@$k.service).
include-toplevel: "$INCLUDE"
include-toplevel: "/etc/unbound/unbound.conf.d/root-auto-trust-anchor-file.conf"
# Your other server: settings go in /etc/nettrust/unbound.conf.d/*.conf (every instance).
include-toplevel: "/etc/nettrust/unbound.conf.d/*.conf"
remote-control:
    control-enable: yes
    control-interface: /run/unbound/unbound-$k.ctl
EOF
        mv "/etc/unbound/unbound-$k.conf.tmp" "/etc/unbound/unbound-$k.conf"
    done
    install -d -m 0755 /etc/nettrust/unbound.conf.d
fi

if apparmor_on; then
    step "AppArmor: $AA_LOCAL (Debian's unbound profile is enforced)"
    install -d /etc/apparmor.d/local
    touch "$AA_LOCAL"
    strip_apparmor
    { echo "$AA_BEGIN"
      sed "s#@PREFIX@#$PREFIX#" "$SRC/conf/apparmor/usr.sbin.unbound.nettrust"
      echo "$AA_END"; } >> "$AA_LOCAL"
    apparmor_parser -r /etc/apparmor.d/usr.sbin.unbound
fi

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

if [ "$START" = yes ] && [ "$FORCE" = no ]; then
    if ! nettrust resolver-setup --check; then
        echo "install.sh: --start refused: this host's lookups would not go through the local" >&2
        echo "  resolver, so the firewall would block them.  Run \`nettrust resolver-setup\`" >&2
        echo "  (--apply writes the setting), or pass --force to start anyway." >&2
        exit 1
    fi
fi

if have_systemd; then
    step "systemd units"
    install -d /etc/systemd/system/unbound.service.d
    install -m 0644 "$SRC/conf/systemd/unbound.service.d-nettrust.conf" "$DROPIN"
    # The statistics agent: installed always, enabled only while [stats] enabled = true.
    install -m 0644 "$SRC/conf/systemd/nettrust-agent.service" /etc/systemd/system/nettrust-agent.service
    # The dashboard: installed always, enabled by the admin once [web] is configured (README).
    install -m 0644 "$SRC/conf/systemd/nettrust-web.service" /etc/systemd/system/nettrust-web.service
    install -m 0644 "$SRC/conf/systemd/unbound@.service" /etc/systemd/system/unbound@.service
    systemctl daemon-reload
    if [ "$STATS" = yes ]; then
        systemctl enable -q nettrust-agent
        [ "$START" = yes ] || [ "$UPGRADE" = yes ] && systemctl restart nettrust-agent
    fi
    # One restart: on --start, or on an upgrade of a running resolver (the grants stay in the
    # kernel meanwhile: on_exit = "keep"; the drop policy holds while it restarts).
    if [ "$INSTANCES" -gt 1 ]; then
        RUNNING=$(systemctl list-units --plain --no-legend --state=active 'unbound@*' | awk '{print $1}')
        if [ "$START" = yes ] || [ -n "$RUNNING" ]; then
            systemctl disable -q --now unbound 2>/dev/null || true
            for k in $(seq 0 $((INSTANCES - 1))); do
                systemctl enable -q "unbound@$k"
                systemctl restart "unbound@$k"
            done
            nettrust status
        fi
    elif [ "$START" = yes ] || { [ "$UPGRADE" = yes ] && systemctl is-active -q unbound; }; then
        systemctl restart unbound
        nettrust status
    fi
else
    step "no systemd: a start script $START_SCRIPT"
    # Unbound must not switch user itself (the include sets username: ""): setpriv gives the
    # unbound user the two capabilities the module needs, as the systemd drop-in does.
    cat > "$START_SCRIPT" <<EOF
#!/bin/sh
# Written by install.sh: start Unbound with NetTrust where systemd is absent.
set -e
install -d -m 0755 -o unbound -g unbound /run/unbound
/usr/libexec/unbound-helper root_trust_anchor_update || true
NETTRUST_CONFIG=$CONF /usr/local/bin/nettrust unbound-conf --write $INCLUDE
export NETTRUST_CONFIG=$CONF PYTHONPATH=/usr/lib/python3/dist-packages
exec setpriv --reuid=unbound --regid=unbound --init-groups \\
    --inh-caps=+net_admin,+net_bind_service --ambient-caps=+net_admin,+net_bind_service \\
    /usr/sbin/unbound -d -p "\$@"
EOF
    chmod 0755 "$START_SCRIPT"
    echo "start Unbound with NetTrust:  $START_SCRIPT &"
    if [ "$START" = yes ]; then
        pkill -x unbound 2>/dev/null || true
        for _ in $(seq 50); do pgrep -x unbound >/dev/null || break; sleep 0.1; done
        nohup "$START_SCRIPT" </dev/null >/var/log/nettrust-unbound.log 2>&1 &
        for _ in $(seq 100); do nettrust status >/dev/null 2>&1 && break; sleep 0.1; done
        nettrust status
    fi
fi

cat <<MSG

NetTrust is installed.
  - Point this host's resolver at Unbound: \`nettrust resolver-setup\` prints the one setting
    your system needs (--apply writes it); only answers Unbound gives open the firewall.
  - Start:   systemctl restart unbound      (never 'reload': unsafe with Unbound 1.17.1)
             after editing $CONF, the restart regenerates the include
  - Inspect: nettrust status ; nettrust hosts
  - Remove the firewall: nettrust remove --stop ; uninstall: ./install.sh --uninstall [--purge]
MSG
