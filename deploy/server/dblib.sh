# Shared by backup.sh and restore.sh (sourced): the server's settings as its service sees them,
# and running commands as the service user (PostgreSQL's peer login, files it must own).
# Expects PREFIX, CONF, RUN_AS, and deploy/common.sh sourced.
# shellcheck shell=bash
# shellcheck disable=SC2034  # DATA, DB_FILE, DB_LIBPQ are for the scripts that source this file

_switch_user() { [ "$(id -u)" -eq 0 ] && [ "$RUN_AS" != root ] && id -u "$RUN_AS" >/dev/null 2>&1; }
run_as_owner() { if _switch_user; then echo "$RUN_AS"; else id -un; fi; }
run_as() {
    if _switch_user; then
        setpriv "--reuid=$RUN_AS" "--regid=$RUN_AS" --init-groups -- "$@"
    else
        "$@"
    fi
}
server_python() { (cd / && PYTHONPATH="$PREFIX/app" run_as "$PREFIX/venv/bin/python" "$@"); }

# The settings' own code reads server.yaml and server.env, exactly as the service does.
_SETTINGS_PY='
import sys
from pathlib import Path
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from server.config import ServerSettings
s = ServerSettings.load(Path(sys.argv[1]))
url = make_url(s.resolved_database_url)
if sys.argv[2] == "revision":
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            print(conn.execute(text("SELECT version_num FROM alembic_version")).scalar() or "none")
    except Exception:
        print("none")
    finally:
        engine.dispose()
    raise SystemExit
kind = url.get_backend_name()
print(kind)
print(s.data_dir.resolve())
# URL.set() ignores None, so set(password=None) would keep the password (rendered "***", which
# libpq then sends instead of PGPASSWORD): build the password-less URI afresh.
bare = URL.create("postgresql", username=url.username, host=url.host, port=url.port, database=url.database, query=url.query)
print(url.database if kind == "sqlite" else bare.render_as_string())
print(url.password or "")
'

# Sets DB_KIND (sqlite or postgresql), DATA (the data folder), DB_FILE (SQLite) or DB_LIBPQ (a libpq
# URI without the password, which goes to PGPASSWORD so that it never shows in a process list).
load_server_settings() {
    [ -r "$CONF/server.env" ] || die "$EXIT_USAGE" "cannot read $CONF/server.env: run me with sudo"
    [ -r "$CONF/server.yaml" ] || die "$EXIT_USAGE" "cannot read $CONF/server.yaml"
    export_env_file "$CONF/server.env"
    local lines
    lines="$(server_python -c "$_SETTINGS_PY" "$CONF/server.yaml" settings)" \
        || die "$EXIT_FAILED" "cannot read the server settings in $CONF (see above)"
    mapfile -t _settings <<< "$lines"
    DB_KIND="${_settings[0]}" DATA="${_settings[1]}" DB_FILE="" DB_LIBPQ=""
    case "$DB_KIND" in
        sqlite) DB_FILE="${_settings[2]}" ;;
        postgresql)
            DB_LIBPQ="${_settings[2]}"
            if [ -n "${_settings[3]:-}" ]; then export PGPASSWORD="${_settings[3]}"; fi
            ;;
        *) die "$EXIT_FAILED" "database kind $DB_KIND is not supported here (sqlite or postgresql)" ;;
    esac
}

schema_revision() { server_python -c "$_SETTINGS_PY" "$CONF/server.yaml" revision; }
