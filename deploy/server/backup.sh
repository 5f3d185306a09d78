#!/usr/bin/env bash
# Back up the Waystation server: its database and its data folder (the QR signing key above all:
# without it no issued QR credential can be verified again, and new ones need every station to
# learn a new public key). Installed as /usr/local/sbin/waystation-backup.
#
#   sudo waystation-backup [--out DIR] [--keep N]
#
#   --out DIR   where the backup file goes (default /var/backups/waystation)
#   --keep N    afterwards delete all but the newest N backups in DIR (default: keep all)
#
# The result is one file, DIR/waystation-backup-<UTC time>.tar (mode 0600: it holds the signing
# key), containing MANIFEST, the database (PostgreSQL: database.dump from `pg_dump -Fc`; SQLite:
# server.db from sqlite3's online `.backup`, safe while the server writes) and data.tar.gz (the
# data folder without the SQLite files). The server keeps running. Copy the file off the machine.
# Restore with waystation-restore (deploy/server/restore.sh).
#
# Exit codes: 0 done, 1 failed, 2 bad usage.
set -Eeuo pipefail

WAYSTATION_PREFIX="${WAYSTATION_PREFIX:-/opt/waystation}"
CONF="${WAYSTATION_CONF:-/etc/waystation}"
RUN_AS="${WAYSTATION_USER:-waystation}"
PROG="backup"
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

out=/var/backups/waystation keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || die "$EXIT_USAGE" "--out needs a folder"; out="$2"; shift 2 ;;
        --keep) [[ "${2:-}" =~ ^[0-9]+$ ]] || die "$EXIT_USAGE" "--keep needs a number"; keep="$2"; shift 2 ;;
        *) die "$EXIT_USAGE" "unknown argument '$1' (see --help)" ;;
    esac
done

trap 'on_error $LINENO' ERR
CURRENT="backup"
load_server_settings
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
install -d -m 0700 "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The service user writes the database copy (SQLite's .backup, pg_dump's peer login run as it).
install -d -m 0700 -o "$(run_as_owner)" "$work/db"

case "$DB_KIND" in
    postgresql)
        run_as pg_dump --format=custom --file="$work/db/database.dump" "$DB_LIBPQ" \
            || die "$EXIT_FAILED" "pg_dump failed (see above)"
        ;;
    sqlite)
        [ -f "$DB_FILE" ] || die "$EXIT_FAILED" "the SQLite database $DB_FILE does not exist"
        command -v sqlite3 >/dev/null || die "$EXIT_FAILED" "sqlite3 is missing: apt-get install sqlite3"
        # .backup copies a consistent snapshot through SQLite itself, even while the server writes.
        run_as sqlite3 "$DB_FILE" ".timeout 30000" ".backup '$work/db/server.db'" \
            || die "$EXIT_FAILED" "sqlite3 .backup of $DB_FILE failed (see above)"
        ;;
esac
mv "$work/db/"* "$work/"
rmdir "$work/db"
# The data folder without the live SQLite files (copied above, consistently).
if [ ! -d "$DATA" ]; then
    warn "the data folder $DATA does not exist (no QR signing key made yet): the backup holds none"
    mkdir -p "$work/empty" && DATA="$work/empty"
fi
tar -C "$DATA" --exclude=./server.db --exclude=./server.db-wal --exclude=./server.db-shm \
    --exclude=./server.db-journal -czf "$work/data.tar.gz" .
revision="$(schema_revision)"
{
    echo "waystation-backup 1"
    echo "taken_at: $stamp"
    echo "database: $DB_KIND"
    echo "schema_revision: $revision"
    echo "host: $(hostname)"
    echo "code: $(cat "$PREFIX/app/INSTALLED" 2>/dev/null || echo unknown)"
} > "$work/MANIFEST"
file="$out/waystation-backup-$stamp.tar"
(umask 077; tar -C "$work" -cf "$file.partial" .)
mv "$file.partial" "$file"
say "wrote $file ($(du -h "$file" | cut -f1); $DB_KIND database at schema $revision, data folder $DATA)"
if [ "$keep" -gt 0 ]; then
    mapfile -t old < <(find "$out" -maxdepth 1 -name 'waystation-backup-*.tar' | sort -r | tail -n +"$((keep + 1))")
    for f in "${old[@]}"; do rm -f "$f"; say "deleted the older backup $f"; done
fi
