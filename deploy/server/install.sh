#!/usr/bin/env bash
# Install or upgrade the Waystation central server on Debian 12: PostgreSQL (or SQLite), Debian's
# mosquitto with TLS and the ACL from deploy/mosquitto, the server in a venv, its systemd units.
# Run it from a copy of the repository, as root:
#
#   sudo deploy/server/install.sh --broker-name NAME [--broker-ip IP] [--database postgres|sqlite]
#                                 [--wheelhouse DIR] [--no-start]
#
#   --broker-name NAME  the DNS name stations use to reach this machine's broker (in its TLS
#                       certificate and in every station's config); required on the first run
#   --broker-ip IP      also put this address in the broker certificate (stations may use it)
#   --database KIND     postgres (default: Debian's PostgreSQL, reached over its Unix socket as
#                       the system user waystation, no password) or sqlite (a file in /var/lib/waystation)
#   --wheelhouse DIR    install the Python packages offline from DIR (deploy/wheelhouse.sh --arch x86_64)
#   --no-start          install and enable the units, but do not (re)start anything now
#
# Secrets are made here, never defaulted: the API token and the server's broker password go to
# /etc/waystation/server.env (0640 root:waystation); existing ones are kept on an upgrade. A
# private CA and the broker's certificate are made in /etc/mosquitto/waystation unless present.
# Running it again upgrades the code and packages, migrates the database and restarts.
#
# Exit codes: 0 installed; 1 a step failed (it is named); 2 bad usage or unsuitable machine.
set -Eeuo pipefail

PROG="install"
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=deploy/common.sh
. "$SRC/deploy/common.sh"
BROKER_DIR=/etc/mosquitto/waystation
SERVER_YAML="$CONF_DIR/server.yaml"
SERVER_ENV="$CONF_DIR/server.env"
SERVER_MQTT_USER=waystation.server

usage() { sed -n '2,/^set -/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

broker_name="" broker_ip="" database=postgres wheelhouse="" start=1
while [ $# -gt 0 ]; do
    case "$1" in
        --broker-name) [ $# -ge 2 ] || die "$EXIT_USAGE" "--broker-name needs a value"; broker_name="$2"; shift 2 ;;
        --broker-ip) [ $# -ge 2 ] || die "$EXIT_USAGE" "--broker-ip needs a value"; broker_ip="$2"; shift 2 ;;
        --database) [ $# -ge 2 ] || die "$EXIT_USAGE" "--database needs a value"; database="$2"; shift 2 ;;
        --wheelhouse) [ $# -ge 2 ] || die "$EXIT_USAGE" "--wheelhouse needs a folder"; wheelhouse="$2"; shift 2 ;;
        --no-start) start=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "$EXIT_USAGE" "unknown argument '$1' (see --help)" ;;
    esac
done

need_root
check_os
[ -f "$SRC/server/__main__.py" ] || die "$EXIT_USAGE" "$SRC does not look like the Waystation repository (no server/__main__.py)"
case "$database" in postgres|sqlite) ;; *) die "$EXIT_USAGE" "--database must be postgres or sqlite" ;; esac
if [ ! -f "$BROKER_DIR/server.crt" ] && [ -z "$broker_name" ]; then
    die "$EXIT_USAGE" "--broker-name is needed on the first run: the name stations use for this server's broker (e.g. broker.example.org)"
fi
[[ -z "$broker_name" || "$broker_name" =~ ^[A-Za-z0-9.-]+$ ]] || die "$EXIT_USAGE" "--broker-name '$broker_name' is not a DNS name"
[[ -z "$broker_ip" || "$broker_ip" =~ ^[0-9a-fA-F.:]+$ ]] || die "$EXIT_USAGE" "--broker-ip '$broker_ip' is not an IP address"
if [ -n "$wheelhouse" ]; then
    [ -d "$wheelhouse" ] || die "$EXIT_USAGE" "the wheelhouse $wheelhouse does not exist"
    wheelhouse="$(cd "$wheelhouse" && pwd)"
fi
trap 'on_error $LINENO' ERR

random_secret() { "$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))'; }

# -- 1 -------------------------------------------------------------------------------------------
step "1/8 system packages (apt)"
# procps: /bin/kill, which Debian's mosquitto.service uses to reload (after each provisioning).
packages=(python3 python3-venv ca-certificates systemd procps openssl mosquitto mosquitto-clients sqlite3)
[ "$database" = postgres ] && packages+=(postgresql)
apt_ensure "${packages[@]}"
done_ "apt packages: ${packages[*]}"

# -- 2 -------------------------------------------------------------------------------------------
step "2/8 service user and folders"
ensure_service_user ""
ensure_dirs

# -- 3 -------------------------------------------------------------------------------------------
step "3/8 code and Python packages"
install_code "$SRC"
install_venv "$wheelhouse"
install -m 0755 "$SRC/deploy/server/waystation-server" /usr/local/sbin/waystation-server
install -m 0755 "$SRC/deploy/server/backup.sh" /usr/local/sbin/waystation-backup
install -m 0755 "$SRC/deploy/server/restore.sh" /usr/local/sbin/waystation-restore
done_ "commands waystation-server, waystation-backup, waystation-restore in /usr/local/sbin"

# -- 4 -------------------------------------------------------------------------------------------
step "4/8 database ($database)"
database_url=""
if [ "$database" = postgres ]; then
    if systemd_running; then
        systemctl enable --quiet --now postgresql.service
    fi
    if runuser -u postgres -- psql -XtAc 'SELECT 1' >/dev/null 2>&1; then
        if [ "$(runuser -u postgres -- psql -XtAc "SELECT 1 FROM pg_roles WHERE rolname = '$SERVICE_USER'")" != 1 ]; then
            runuser -u postgres -- createuser "$SERVICE_USER"
        fi
        if [ "$(runuser -u postgres -- psql -XtAc "SELECT 1 FROM pg_database WHERE datname = '$SERVICE_USER'")" != 1 ]; then
            runuser -u postgres -- createdb --owner="$SERVICE_USER" --encoding=UTF8 "$SERVICE_USER"
        fi
        done_ "PostgreSQL role and database $SERVICE_USER (peer authentication over the Unix socket: no password)"
    else
        warn "PostgreSQL is not running here, so its role and database were not created: start it and run me again"
    fi
    database_url="postgresql+psycopg://$SERVICE_USER@/$SERVICE_USER?host=/var/run/postgresql"
else
    done_ "SQLite: the database is $DATA_DIR/server.db"
fi

# -- 5 -------------------------------------------------------------------------------------------
step "5/8 broker (mosquitto with TLS, passwords and the ACL)"
# The server's user must be able to add station passwords (provision runs mosquitto_passwd, which
# writes a temporary file beside the password file): the folder is group-writable for it, with the
# sticky bit so it can remove nothing but its own files.
install -d -m 1771 -o root -g "$SERVICE_USER" "$BROKER_DIR"
if [ ! -f "$BROKER_DIR/server.crt" ]; then
    san="DNS:$broker_name,DNS:localhost,IP:127.0.0.1${broker_ip:+,IP:$broker_ip}"
    (
        umask 077
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
            -subj "/CN=Waystation CA ($broker_name)" -keyout "$BROKER_DIR/ca.key" -out "$BROKER_DIR/ca.crt" 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$broker_name" \
            -keyout "$BROKER_DIR/server.key" -out "$BROKER_DIR/server.csr" 2>/dev/null
        openssl x509 -req -in "$BROKER_DIR/server.csr" -CA "$BROKER_DIR/ca.crt" -CAkey "$BROKER_DIR/ca.key" \
            -CAcreateserial -days 825 -out "$BROKER_DIR/server.crt" \
            -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san") 2>/dev/null
        rm -f "$BROKER_DIR/server.csr"
    )
    done_ "a private CA and the broker certificate for $san (ca.key in $BROKER_DIR: keep a copy offline)"
else
    done_ "kept the broker certificate $BROKER_DIR/server.crt"
fi
chmod 0644 "$BROKER_DIR/ca.crt" "$BROKER_DIR/server.crt"
chown root:mosquitto "$BROKER_DIR/server.key" && chmod 0640 "$BROKER_DIR/server.key"
chown root:root "$BROKER_DIR/ca.key" && chmod 0600 "$BROKER_DIR/ca.key"
install -m 0644 -o root -g root "$SRC/deploy/mosquitto/acl" "$BROKER_DIR/acl"
[ -f "$BROKER_DIR/passwd" ] || install -m 0640 -o "$SERVICE_USER" -g mosquitto /dev/null "$BROKER_DIR/passwd"
chown "$SERVICE_USER:mosquitto" "$BROKER_DIR/passwd" && chmod 0640 "$BROKER_DIR/passwd"
# Debian's /etc/mosquitto/mosquitto.conf already sets persistence_location, and mosquitto 2.0
# refuses a second one ("Duplicate persistence_location value"): the copy leaves it out then.
if grep -q '^persistence_location' /etc/mosquitto/mosquitto.conf 2>/dev/null; then
    grep -v '^persistence_location' "$SRC/deploy/mosquitto/mosquitto.conf" > /etc/mosquitto/conf.d/waystation.conf
else
    cp "$SRC/deploy/mosquitto/mosquitto.conf" /etc/mosquitto/conf.d/waystation.conf
fi
chmod 0644 /etc/mosquitto/conf.d/waystation.conf
install -d -m 0755 "$UNIT_DIR/mosquitto.service.d"
install -m 0644 "$SRC/deploy/systemd/mosquitto.service.d/waystation.conf" "$UNIT_DIR/mosquitto.service.d/waystation.conf"
done_ "mosquitto: TLS on 8883 for stations, the ACL, no anonymous clients, LimitNOFILE=65536"

# -- 6 -------------------------------------------------------------------------------------------
step "6/8 server configuration and secrets"
if [ ! -f "$SERVER_ENV" ]; then
    mqtt_password="$(random_secret)"
    (umask 027; printf 'WAYSTATION_SERVER_API_TOKEN=%s\nWAYSTATION_SERVER_MQTT_PASSWORD=%s\n' \
        "$(random_secret)" "$mqtt_password" > "$SERVER_ENV")
    # mosquitto_passwd reads the password twice from standard input: it never shows in a process list.
    printf '%s\n%s\n' "$mqtt_password" "$mqtt_password" | mosquitto_passwd "$BROKER_DIR/passwd" "$SERVER_MQTT_USER" >/dev/null
    done_ "new API token and broker password for $SERVER_MQTT_USER in $SERVER_ENV"
else
    done_ "kept the secrets in $SERVER_ENV"
fi
chown root:"$SERVICE_USER" "$SERVER_ENV" && chmod 0640 "$SERVER_ENV"
if [ ! -f "$SERVER_YAML" ]; then
    host="${broker_name:-$(openssl x509 -in "$BROKER_DIR/server.crt" -noout -subject | sed 's/.*CN *= *//')}"
    {
        echo "# Waystation server settings (docs/config-server.md); secrets are in server.env."
        echo "data_dir: $DATA_DIR"
        [ -n "$database_url" ] && echo "database_url: \"$database_url\""
        echo "http_host: 127.0.0.1"
        echo "http_port: 8080"
        echo "# The server reaches the broker on this machine over TLS (the certificate names 127.0.0.1)."
        echo "mqtt_host: 127.0.0.1"
        echo "mqtt_port: 8883"
        echo "mqtt_tls_ca: $BROKER_DIR/ca.crt"
        echo "mqtt_username: $SERVER_MQTT_USER"
        echo "mqtt_password_file: $BROKER_DIR/passwd"
        echo "station_mqtt_host: $host"
        echo "station_mqtt_port: 8883"
    } > "$SERVER_YAML"
    done_ "wrote $SERVER_YAML"
else
    done_ "kept $SERVER_YAML"
fi
chown root:"$SERVICE_USER" "$SERVER_YAML" && chmod 0640 "$SERVER_YAML"
/usr/local/sbin/waystation-server check-config >/dev/null \
    || die "$EXIT_FAILED" "$SERVER_YAML or $SERVER_ENV is refused by check-config (the lines above name each key)"
done_ "the server settings pass check-config"

# -- 7 -------------------------------------------------------------------------------------------
step "7/8 systemd units and journal limits"
# waystation-ingest@.service is installed, not enabled: extra ingest workers are for large networks
# (docs/deploy.md, "More ingest workers").
for unit in waystation-server.service waystation-migrate.service waystation-ingest@.service; do
    install -m 0644 "$SRC/deploy/systemd/$unit" "$UNIT_DIR/$unit"
done
install_journald_dropin "$SRC/deploy/journald/waystation.conf"
if systemd_running; then systemctl daemon-reload; fi
for unit in mosquitto.service waystation-server.service; do  # offline (a chroot) too: it only makes links
    systemctl enable --quiet "$unit" || die "$EXIT_FAILED" "systemctl enable $unit failed (see above)"
done
done_ "units waystation-server and waystation-migrate installed, enabled with mosquitto"

# -- 8 -------------------------------------------------------------------------------------------
step "8/8 migrate and start"
if ! systemd_running; then
    say "systemd is not running here (chroot or container): nothing started"
    if [ "$database" = sqlite ]; then
        /usr/local/sbin/waystation-server migrate
        done_ "database schema migrated"
    fi
elif [ "$start" = 0 ]; then
    say "not started (--no-start): systemctl restart mosquitto waystation-server"
else
    systemctl restart mosquitto.service
    systemctl start waystation-migrate.service  # its log: journalctl -u waystation-migrate
    done_ "database schema migrated"
    systemctl restart waystation-server.service
    systemctl try-restart 'waystation-ingest@*.service'  # the workers an admin enabled run the new code too
    sleep 5
    if systemctl is-active --quiet waystation-server.service; then
        done_ "waystation-server is running (journalctl -u waystation-server -f)"
    else
        journalctl -u waystation-server.service -n 20 --no-pager >&2 || true
        die "$EXIT_FAILED" "waystation-server did not stay up (its last log lines are above)"
    fi
fi

summary
cat <<EOF

Next:
  1. Create the first administrator (there are no default accounts):
       sudo waystation-server create-admin admin
  2. The web app listens on 127.0.0.1:8080 only. Reach it through an SSH tunnel
       (ssh -L 8080:127.0.0.1:8080 this-server, then http://127.0.0.1:8080/login) or put a TLS proxy in front.
  3. Register a station and make its bundle:
       sudo waystation-server provision hz-01 --name "Hangzhou stop 1" --out $DATA_DIR/bundles/hz-01
     then copy that folder to the station and run deploy/edge/install.sh --bundle there.
  4. Back up every night: sudo waystation-backup --out /var/backups/waystation
EOF
