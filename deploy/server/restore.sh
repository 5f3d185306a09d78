#!/usr/bin/env bash
# Restore the Waystation server from a backup made by backup.sh (installed as
# /usr/local/sbin/waystation-restore). Everything in the database is REPLACED by the backup.
#
#   sudo waystation-restore /var/backups/waystation/waystation-backup-20260101T020000Z.tar [--yes]
#
# Stops waystation-server (when systemd runs it), replaces the database (PostgreSQL: the schema
# is dropped and the dump restored with pg_restore; SQLite: the file is replaced, its old WAL
# removed) and the data folder's files (the QR signing key), migrates the schema up to this
# version of the code (a backup from an older version is upgraded), and starts the server again.
# Stations need nothing: they ask for the changes after the version they hold, and a station
# holding a version the restored server never reached gets a full snapshot.
#
# Exit codes: 0 restored, 1 failed, 2 bad usage (no --yes without a terminal, wrong database kind).
set -Eeuo pipefail

WAYSTATION_PREFIX="${WAYSTATION_PREFIX:-/opt/waystation}"
CONF="${WAYSTATION_CONF:-/etc/waystation}"
RUN_AS="${WAYSTATION_USER:-waystation}"
PROG="restore"
case "${1:-}" in -h|--help) sed -n '2,/^set -/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;; esac
if [ ! -f "$WAYSTATION_PREFIX/app/deploy/common.sh" ]; then
    echo "$(basename "$0"): no Waystation installation in $WAYSTATION_PREFIX (run deploy/server/install.sh, or set WAYSTATION_PREFIX)" >&2
    exit 2
fi
# shellcheck source=deploy/common.sh
. "$WAYSTATION_PREFIX/app/deploy/common.sh"
PREFIX="$WAYSTATION_PREFIX"  # after common.sh, which sets the installed default
# shellcheck source=deploy/server/dblib.sh
. "$PREFIX/app/deploy/server/dblib.sh"

backup="" yes=0
while [ $# -gt 0 ]; do
    case "$1" in
        --yes) yes=1; shift ;;
        -*) die "$EXIT_USAGE" "unknown option '$1' (see --help)" ;;
        *) [ -z "$backup" ] || die "$EXIT_USAGE" "one backup file, please"; backup="$1"; shift ;;
    esac
done
[ -n "$backup" ] || die "$EXIT_USAGE" "which backup? waystation-restore FILE.tar (see --help)"
[ -f "$backup" ] || die "$EXIT_USAGE" "$backup does not exist"

trap 'on_error $LINENO' ERR
CURRENT="restore"
load_server_settings
work="$(mktemp -d)"
restart=0
cleanup() {
    rm -rf "$work"
    if [ "$restart" = 1 ]; then systemctl start waystation-server.service || true; fi
}
trap cleanup EXIT
tar -C "$work" -xf "$backup" || die "$EXIT_USAGE" "$backup is not a readable backup archive"
if ! { [ -f "$work/MANIFEST" ] && head -n 1 "$work/MANIFEST" | grep -q '^waystation-backup 1$'; }; then
    die "$EXIT_USAGE" "$backup is not a Waystation backup (no MANIFEST)"
fi
kind="$(sed -n 's/^database: //p' "$work/MANIFEST")"
taken="$(sed -n 's/^taken_at: //p' "$work/MANIFEST")"
[ "$kind" = "$DB_KIND" ] || die "$EXIT_USAGE" "the backup holds a $kind database but this server uses $DB_KIND"

if [ "$yes" = 0 ]; then
    [ -t 0 ] || die "$EXIT_USAGE" "this replaces the whole database: add --yes to confirm (no terminal to ask on)"
    printf 'Replace the %s database and the data folder %s with the backup taken at %s? Type RESTORE: ' "$DB_KIND" "$DATA" "$taken"
    read -r answer
    [ "$answer" = RESTORE ] || die "$EXIT_USAGE" "not confirmed; nothing was changed"
fi

if systemd_running && systemctl is-active --quiet waystation-server.service; then
    systemctl stop waystation-server.service
    restart=1
    say "stopped waystation-server"
fi

case "$DB_KIND" in
    postgresql)
        # A clean slate, then the dump: tables that exist only in a newer schema must not survive.
        run_as psql -X -q -v ON_ERROR_STOP=1 -d "$DB_LIBPQ" -c 'DROP SCHEMA public CASCADE' -c 'CREATE SCHEMA public' \
            || die "$EXIT_FAILED" "could not empty the database (see above)"
        run_as pg_restore --no-owner --exit-on-error --single-transaction -d "$DB_LIBPQ" < "$work/database.dump" \
            || die "$EXIT_FAILED" "pg_restore failed (see above); the database is empty now: run me again"
        ;;
    sqlite)
        owner="$(run_as_owner)"
        install -d -m 0750 -o "$owner" "$(dirname "$DB_FILE")"
        install -m 0640 -o "$owner" "$work/server.db" "$DB_FILE.restoring"
        # A WAL file left from the replaced database would be replayed into the restored one.
        rm -f "$DB_FILE-wal" "$DB_FILE-shm" "$DB_FILE-journal"
        mv -f "$DB_FILE.restoring" "$DB_FILE"
        ;;
esac
say "database restored from the backup taken at $taken"

install -d -m 0750 -o "$(run_as_owner)" "$DATA"
tar -C "$DATA" --same-permissions -xzf "$work/data.tar.gz"
chown -R "$(run_as_owner):" "$DATA"
say "data folder $DATA restored (QR signing key included)"

(cd / && PYTHONPATH="$PREFIX/app" run_as "$PREFIX/venv/bin/python" -m server migrate --config "$CONF/server.yaml") \
    || die "$EXIT_FAILED" "the restored database could not be migrated to this version (see above)"
say "schema at $(schema_revision) (the backup had $(sed -n 's/^schema_revision: //p' "$work/MANIFEST"))"
if [ "$restart" = 1 ]; then
    restart=0
    systemctl start waystation-server.service
    say "started waystation-server"
fi
say "restore done"
