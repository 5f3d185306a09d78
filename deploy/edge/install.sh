#!/usr/bin/env bash
# Install or upgrade a Waystation station (the edge agent) on Raspberry Pi OS Bookworm 64-bit
# (or plain Debian 12, for testing). Run it from a copy of the repository, as root:
#
#   sudo deploy/edge/install.sh [--bundle DIR] [--wheelhouse DIR] [--skip-pi-steps] [--no-start]
#
#   --bundle DIR      a provisioning bundle from `python -m server provision` (station.yaml,
#                     station.env, ca.crt): checked with `python -m edge check-config`, then
#                     installed into /etc/waystation. A bundle that fails the check replaces nothing.
#   --wheelhouse DIR  install the Python packages offline from DIR (made by deploy/wheelhouse.sh)
#   --skip-pi-steps   leave out what only a Raspberry Pi needs (automatic when this is not a Pi)
#   --no-start        install and enable the service, but do not (re)start it now
#
# It installs the apt packages, a system user `waystation` in the groups gpio and video, the code
# in /opt/waystation/app, a virtual environment in /opt/waystation/venv, the config in
# /etc/waystation, the data folder /var/lib/waystation, and the systemd unit waystation-edge.
# Running it again upgrades everything in place (new code, new packages) and restarts the agent.
#
# Exit codes: 0 installed; 1 a step failed (it is named); 2 bad usage or unsuitable machine
# (not root, 32-bit OS, missing bundle file); 3 the bundle's config was refused by check-config.
set -Eeuo pipefail

PROG="install"
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=deploy/common.sh
. "$SRC/deploy/common.sh"
EXIT_BAD_BUNDLE=3
STATION_YAML="$CONF_DIR/station.yaml"

usage() { sed -n '2,/^set -/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

bundle="" wheelhouse="" skip_pi=0 start=1
while [ $# -gt 0 ]; do
    case "$1" in
        --bundle) [ $# -ge 2 ] || die "$EXIT_USAGE" "--bundle needs a folder"; bundle="$2"; shift 2 ;;
        --wheelhouse) [ $# -ge 2 ] || die "$EXIT_USAGE" "--wheelhouse needs a folder"; wheelhouse="$2"; shift 2 ;;
        --skip-pi-steps) skip_pi=1; shift ;;
        --no-start) start=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "$EXIT_USAGE" "unknown argument '$1' (see --help)" ;;
    esac
done

is_raspberry_pi() {
    [ -r /proc/device-tree/model ] && tr -d '\0' < /proc/device-tree/model | grep -q 'Raspberry Pi'
}

# -- checks before anything is changed --------------------------------------------------------
need_root
check_os
[ -f "$SRC/edge/__main__.py" ] || die "$EXIT_USAGE" "$SRC does not look like the Waystation repository (no edge/__main__.py)"
if [ -n "$wheelhouse" ]; then
    [ -d "$wheelhouse" ] || die "$EXIT_USAGE" "the wheelhouse $wheelhouse does not exist"
    wheelhouse="$(cd "$wheelhouse" && pwd)"
fi
if [ -n "$bundle" ]; then
    [ -d "$bundle" ] || die "$EXIT_USAGE" "the bundle folder $bundle does not exist"
    bundle="$(cd "$bundle" && pwd)"
    for f in station.yaml station.env; do
        [ -f "$bundle/$f" ] || die "$EXIT_USAGE" "the bundle $bundle has no $f: make one on the server with \`python -m server provision STATION_ID --out DIR\`"
    done
fi
pi=0
if [ "$skip_pi" = 0 ] && is_raspberry_pi; then
    pi=1
    say "this is a $(tr -d '\0' < /proc/device-tree/model)"
elif [ "$skip_pi" = 1 ]; then
    say "--skip-pi-steps: leaving out the Raspberry Pi steps"
else
    say "this is not a Raspberry Pi (no Raspberry Pi model in /proc/device-tree/model): leaving out the Pi steps"
fi
trap 'on_error $LINENO' ERR

# -- 1. system packages -------------------------------------------------------------------------
step "1/7 system packages (apt)"
packages=(python3 python3-venv ca-certificates systemd)
# A set clock matters: QR credential expiry and entry times are judged by it. Keep any NTP daemon
# that is already there; else add systemd's.
if ! dpkg-query -W -f='${Status}' chrony ntpsec ntp openntpd 2>/dev/null | grep -q 'install ok installed'; then
    packages+=(systemd-timesyncd)
fi
apt_ensure "${packages[@]}"
done_ "apt packages: ${packages[*]}"
if [ "$pi" = 1 ]; then
    # picamera2 (the camera module) and lgpio (gpiozero's pin backend on Pi 4 and 5) come from
    # Raspberry Pi OS; the venv sees them through its system site packages.
    apt_ensure python3-picamera2 python3-lgpio
    done_ "apt packages for the Pi: python3-picamera2 python3-lgpio"
else
    skip_pi "apt packages python3-picamera2 (camera module) and python3-lgpio (GPIO pin backend)"
fi

# -- 2. user, groups, folders ---------------------------------------------------------------------
step "2/7 service user and folders"
for g in gpio video; do
    if ! getent group "$g" >/dev/null; then
        groupadd --system "$g"
        done_ "created the group $g (Raspberry Pi OS has it; this machine did not)"
    fi
done
ensure_service_user "gpio,video"
ensure_dirs

# -- 3. code and Python packages ------------------------------------------------------------------
step "3/7 code and Python packages"
install_code "$SRC"
extra=()
if [ "$pi" = 1 ]; then
    extra+=(deploy/edge/requirements-pi.txt)
else
    skip_pi "simplejpeg built for NumPy 2 (deploy/edge/requirements-pi.txt, needed by picamera2 in the venv)"
fi
install_venv "$wheelhouse" "${extra[@]}"
say "checking that the face stack loads (dlib, OpenCV, face_recognition, the agent's modules) ..."
PYTHONPATH="$APP" "$VENV/bin/python" -c 'import dlib, cv2, face_recognition, numpy, edge.agent' \
    || die "$EXIT_FAILED" "the installed packages do not import (see above)"
done_ "the face stack and the agent's modules import"
if [ "$pi" = 1 ]; then
    if PYTHONPATH="$APP" "$VENV/bin/python" -c 'from picamera2 import Picamera2' 2>/tmp/waystation-picamera2.err; then
        done_ "picamera2 imports in the venv (camera source: picamera)"
    else
        warn "picamera2 does not import in the venv: $(tail -n 1 /tmp/waystation-picamera2.err). The Pi camera module (camera.source: picamera) will not work; a USB camera (camera.source: \"0\") still does."
    fi
    rm -f /tmp/waystation-picamera2.err
fi

# -- 4. station configuration ---------------------------------------------------------------------
step "4/7 station configuration"
check_config() {  # FILE ENV_FILE [CA]: the agent's own validation, as the service user, with the bundle's environment
    (
        export_env_file "$2"
        # A staged bundle's CA is not at its final path yet: check the config against the staged copy.
        [ -n "${3:-}" ] && export WAYSTATION_EDGE_MQTT__TLS_CA="$3"
        cd "$DATA_DIR"
        PYTHONPATH="$APP" runuser -u "$SERVICE_USER" -- "$VENV/bin/python" -m edge check-config "$1"
    )
}
if [ -n "$bundle" ]; then
    stage="$(mktemp -d "$CONF_DIR/.bundle.XXXXXX")"
    trap 'rm -rf "$stage"' EXIT
    chgrp "$SERVICE_USER" "$stage"
    chmod 0750 "$stage"
    install -m 0640 -o root -g "$SERVICE_USER" "$bundle/station.yaml" "$stage/station.yaml"
    install -m 0600 -o root -g root "$bundle/station.env" "$stage/station.env"
    [ -f "$bundle/ca.crt" ] && install -m 0640 -o root -g "$SERVICE_USER" "$bundle/ca.crt" "$stage/ca.crt"
    # The bundle was written on the server: point its CA file and data folder at this machine's.
    if ! "$VENV/bin/python" "$SRC/deploy/edge/localize_config.py" "$stage/station.yaml" \
            --ca "$CONF_DIR/ca.crt" --have-ca "$([ -f "$stage/ca.crt" ] && echo yes || echo no)" --data-dir "$DATA_DIR"; then
        die "$EXIT_BAD_BUNDLE" "the bundle's station.yaml cannot be used (see above); nothing in $CONF_DIR was changed"
    fi
    staged_ca=""
    [ -f "$stage/ca.crt" ] && staged_ca="$stage/ca.crt"
    if ! check_config "$stage/station.yaml" "$stage/station.env" "$staged_ca"; then
        die "$EXIT_BAD_BUNDLE" "the bundle's station.yaml was refused by check-config (the lines above name each key); nothing in $CONF_DIR was changed"
    fi
    for f in station.yaml station.env ca.crt; do
        [ -f "$stage/$f" ] && mv -f "$stage/$f" "$CONF_DIR/$f"
    done
    done_ "bundle installed: $STATION_YAML and ca.crt (0640 root:$SERVICE_USER), station.env (0600 root, read by systemd)"
elif [ -f "$STATION_YAML" ]; then
    if [ -f "$CONF_DIR/station.env" ]; then
        check_config "$STATION_YAML" "$CONF_DIR/station.env" \
            || die "$EXIT_BAD_BUNDLE" "the installed $STATION_YAML is refused by check-config (see above): fix it or install a new bundle"
    else
        die "$EXIT_USAGE" "$STATION_YAML exists but $CONF_DIR/station.env (the broker password) does not: install the station's bundle with --bundle"
    fi
    done_ "kept the installed configuration $STATION_YAML (it passes check-config)"
else
    say "no station configuration yet: register the station on the server, then run this again with --bundle DIR"
fi

# -- 5. Raspberry Pi system settings --------------------------------------------------------------
step "5/7 Raspberry Pi system settings"
if [ "$pi" = 1 ]; then
    if [ -e /dev/watchdog ]; then
        # The SoC's watchdog reboots a Pi whose kernel hangs (a hung kernel keeps the relay pin as it was).
        install -d -m 0755 /etc/systemd/system.conf.d
        printf '# Installed by Waystation deploy/edge/install.sh: reboot a hung Pi.\n[Manager]\nRuntimeWatchdogSec=10s\nRebootWatchdogSec=2min\n' \
            > /etc/systemd/system.conf.d/waystation-watchdog.conf
        systemd_running && systemctl daemon-reexec
        done_ "hardware watchdog: systemd pings /dev/watchdog, a hung Pi reboots after 10 s"
    else
        warn "no /dev/watchdog: the hardware watchdog is not used (enable it with dtparam=watchdog=on in /boot/firmware/config.txt)"
    fi
else
    skip_pi "hardware watchdog (systemd RuntimeWatchdogSec=10s on the SoC's /dev/watchdog)"
fi

# -- 6. systemd ----------------------------------------------------------------------------------
step "6/7 systemd unit and journal limits"
install -m 0644 "$SRC/deploy/systemd/waystation-edge.service" "$UNIT_DIR/waystation-edge.service"
install_journald_dropin "$SRC/deploy/journald/waystation.conf"
if systemd_running; then
    systemctl daemon-reload
    systemctl enable --quiet waystation-edge.service
    done_ "waystation-edge.service installed and enabled (starts at boot)"
else
    # A chroot or container: the unit is enabled for the next boot, nothing can be started now.
    systemctl enable --quiet waystation-edge.service 2>/dev/null \
        || ln -sf "$UNIT_DIR/waystation-edge.service" "$UNIT_DIR/multi-user.target.wants/waystation-edge.service"
    done_ "waystation-edge.service installed and enabled; systemd is not running here (chroot or container), so nothing was started"
fi

# -- 7. start -----------------------------------------------------------------------------------
step "7/7 start the agent"
if ! systemd_running; then
    say "not started: systemd is not running on this system"
elif [ ! -f "$STATION_YAML" ]; then
    say "not started: no station configuration yet (see step 4)"
elif [ "$start" = 0 ]; then
    say "not started (--no-start): systemctl restart waystation-edge"
else
    systemctl restart waystation-edge.service
    sleep 5
    if systemctl is-active --quiet waystation-edge.service; then
        done_ "waystation-edge is running: journalctl -u waystation-edge -f"
    else
        journalctl -u waystation-edge.service -n 20 --no-pager >&2 || true
        die "$EXIT_FAILED" "waystation-edge did not stay up (its last log lines are above; docs/deploy.md, Troubleshooting)"
    fi
fi

summary
if [ ! -f "$STATION_YAML" ]; then
    printf '\nNext: on the server, %s; copy DIR here; then\n  sudo %s --bundle DIR\n' \
        "waystation-server provision STATION_ID --out DIR" "$0"
else
    printf '\nCheck the door wiring (agent stopped): sudo systemctl stop waystation-edge && sudo -u %s env PYTHONPATH=%s %s -m edge selftest --config %s\n' \
        "$SERVICE_USER" "$APP" "$VENV/bin/python" "$STATION_YAML"
fi
