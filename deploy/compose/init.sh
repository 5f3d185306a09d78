#!/usr/bin/env bash
# Prepare deploy/compose for `docker compose up`: random secrets in .env, a private CA and the
# broker's certificate, the broker's password file with the server's user, its config and ACL.
# Run once, as root (the broker files get the container's mosquitto user, uid 1883):
#
#   sudo deploy/compose/init.sh --broker-name broker.example.org [--broker-ip 203.0.113.7] [--dir DIR]
#
# Nothing that exists is overwritten (run it again after a lost file: only that one is made anew).
# Needs openssl, and mosquitto_passwd from Debian's mosquitto package (or Docker, to borrow the
# broker image's copy). Exit codes: 0 done, 1 failed, 2 bad usage.
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
MOSQUITTO_UID=1883  # the eclipse-mosquitto image's mosquitto user and group

say() { printf 'init: %s\n' "$*"; }
die() { printf 'init: error: %s\n' "$2" >&2; exit "$1"; }

dir="$HERE" name="" ip=""
while [ $# -gt 0 ]; do
    case "$1" in
        --broker-name) [ $# -ge 2 ] || die 2 "--broker-name needs a value"; name="$2"; shift 2 ;;
        --broker-ip) [ $# -ge 2 ] || die 2 "--broker-ip needs a value"; ip="$2"; shift 2 ;;
        --dir) [ $# -ge 2 ] || die 2 "--dir needs a folder"; dir="$2"; shift 2 ;;
        -h|--help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die 2 "unknown argument '$1' (see --help)" ;;
    esac
done
[ -n "$name" ] || die 2 "--broker-name is required: the DNS name stations use to reach the broker"
[[ "$name" =~ ^[A-Za-z0-9.-]+$ ]] || die 2 "--broker-name '$name' is not a DNS name"
[[ -z "$ip" || "$ip" =~ ^[0-9a-fA-F.:]+$ ]] || die 2 "--broker-ip '$ip' is not an IP address"
command -v openssl >/dev/null || die 1 "openssl is missing (apt-get install openssl)"
trap 'die 1 "failed at line $LINENO (see above)"' ERR

secret() { openssl rand -base64 33 | tr '+/' '-_' | tr -d '\n='; }
broker="$dir/mosquitto"
ca_dir="$dir/ca"
mkdir -p "$dir"
install -d -m 0770 "$broker"
install -d -m 0700 "$ca_dir"

if [ ! -f "$dir/.env" ]; then
    (
        umask 077
        {
            echo "# Secrets of the compose setup, made by init.sh: keep this file private, back it up."
            echo "POSTGRES_PASSWORD=$(secret)"
            echo "WAYSTATION_API_TOKEN=$(secret)"
            echo "WAYSTATION_MQTT_PASSWORD=$(secret)"
            echo "WAYSTATION_BROKER_NAME=$name"
        } > "$dir/.env"
    )
    say "wrote $dir/.env (random secrets, mode 0600)"
else
    say "kept $dir/.env"
fi
mqtt_password="$(sed -n 's/^WAYSTATION_MQTT_PASSWORD=//p' "$dir/.env")"
[ -n "$mqtt_password" ] || die 1 "$dir/.env has no WAYSTATION_MQTT_PASSWORD"

if [ ! -f "$broker/server.crt" ]; then
    # The server container reaches the broker as "mosquitto"; stations by --broker-name (or --broker-ip).
    san="DNS:$name,DNS:mosquitto,DNS:localhost,IP:127.0.0.1${ip:+,IP:$ip}"
    (
        umask 077
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
            -subj "/CN=Waystation CA ($name)" -keyout "$ca_dir/ca.key" -out "$ca_dir/ca.crt" 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
            -keyout "$broker/server.key" -out "$ca_dir/server.csr" 2>/dev/null
        openssl x509 -req -in "$ca_dir/server.csr" -CA "$ca_dir/ca.crt" -CAkey "$ca_dir/ca.key" -CAcreateserial \
            -days 825 -out "$broker/server.crt" \
            -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san") 2>/dev/null
        rm -f "$ca_dir/server.csr"
    )
    cp "$ca_dir/ca.crt" "$broker/ca.crt"
    say "made a private CA ($ca_dir/ca.key: keep a copy offline) and the broker certificate for $san"
fi

cp "$REPO/deploy/mosquitto/acl" "$broker/acl"
cp "$HERE/mosquitto.conf" "$broker/mosquitto.conf"
if [ ! -f "$broker/passwd" ]; then
    : > "$broker/passwd"
    if command -v mosquitto_passwd >/dev/null; then
        printf '%s\n%s\n' "$mqtt_password" "$mqtt_password" | mosquitto_passwd "$broker/passwd" waystation.server >/dev/null
    elif command -v docker >/dev/null; then
        printf '%s\n%s\n' "$mqtt_password" "$mqtt_password" | docker run --rm -i -v "$broker:/w" eclipse-mosquitto:2 \
            mosquitto_passwd /w/passwd waystation.server >/dev/null
    else
        rm -f "$broker/passwd"
        die 1 "mosquitto_passwd is needed: apt-get install mosquitto (only its mosquitto_passwd is used) or install Docker"
    fi
    say "broker user waystation.server added to $broker/passwd"
fi
chmod 0644 "$broker/ca.crt" "$broker/server.crt" "$broker/acl" "$broker/mosquitto.conf"
chmod 0640 "$broker/server.key"
chmod 0660 "$broker/passwd"
if [ "$(id -u)" -eq 0 ]; then
    chown -R "$MOSQUITTO_UID:$MOSQUITTO_UID" "$broker"
else
    say "not root: chown -R $MOSQUITTO_UID:$MOSQUITTO_UID $broker before starting the broker container"
fi
say "ready: docker compose -f $HERE/compose.yaml up -d --build"
