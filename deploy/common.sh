# Shared by deploy/edge/install.sh and deploy/server/install.sh (sourced, not run).
#
# Layout of an installed machine:
#   /opt/waystation/app    the code (replaced whole on every install: no stale modules survive)
#   /opt/waystation/venv   the Python virtual environment
#   /etc/waystation        configuration, mode 0750 root:waystation, files 0640 (secrets 0600 or 0640)
#   /var/lib/waystation    data, owned by the service user waystation
# shellcheck shell=bash
# shellcheck disable=SC2034  # the constants are used by the scripts that source this file

PREFIX=/opt/waystation
APP="$PREFIX/app"
VENV="$PREFIX/venv"
CONF_DIR=/etc/waystation
DATA_DIR=/var/lib/waystation
SERVICE_USER=waystation
UNIT_DIR=/etc/systemd/system

EXIT_FAILED=1
EXIT_USAGE=2

SKIPPED=()
DONE=()
CURRENT="starting"

say() { printf '%s: %s\n' "$PROG" "$*"; }
warn() { printf '%s: WARNING: %s\n' "$PROG" "$*" >&2; }
die() { local code="$1"; shift; printf '%s: error: %s\n' "$PROG" "$*" >&2; exit "$code"; }
STEP_STARTED=$SECONDS
step() {  # also says how long the previous step took
    [ "$CURRENT" = starting ] || printf '%s: (%s took %d s)\n' "$PROG" "${CURRENT%% *}" "$((SECONDS - STEP_STARTED))"
    CURRENT="$1" STEP_STARTED=$SECONDS
    printf '\n== %s\n' "$1"
}
done_() { DONE+=("$*"); say "done: $*"; }
skip_pi() { SKIPPED+=("$*"); say "skipped (not a Raspberry Pi): $*"; }

on_error() {
    local rc=$? line=$1
    printf '%s: error: the step "%s" failed (exit status %s at line %s); the steps after it were not run.\n' \
        "$PROG" "$CURRENT" "$rc" "$line" >&2
    printf '%s: fix the cause shown above and run the installer again: it picks up where it stopped.\n' "$PROG" >&2
    exit "$EXIT_FAILED"
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die "$EXIT_USAGE" "run me as root (sudo $0 ...)"
}

# Debian 12 (bookworm) and Raspberry Pi OS Bookworm are what this is made and tested for.
check_os() {
    local id="" codename=""
    if [ -r /etc/os-release ]; then
        # shellcheck disable=SC1091
        id="$(. /etc/os-release && echo "${ID:-}")"
        # shellcheck disable=SC1091
        codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
    fi
    case "$id" in
        debian|raspbian) ;;
        *) die "$EXIT_USAGE" "this installer is for Debian 12 and Raspberry Pi OS Bookworm (found: ${id:-unknown})" ;;
    esac
    [ "$codename" = bookworm ] || warn "made for bookworm; this is ${codename:-an unknown release}: carrying on"
    case "$(uname -m)" in
        aarch64|x86_64) ;;
        *) die "$EXIT_USAGE" "a 64-bit OS is needed (found $(uname -m)): the prebuilt dlib wheels exist for aarch64 and x86_64 only; on a Pi, install Raspberry Pi OS (64-bit)" ;;
    esac
}

# Installs the missing ones among the given apt packages; touches nothing (and needs no network) when all are there.
apt_ensure() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        say "apt packages already installed: $*"
        return 0
    fi
    say "installing from apt: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "$EXIT_FAILED" "apt-get update failed: this machine needs access to its package mirror to install ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "$EXIT_FAILED" "apt-get install ${missing[*]} failed (see above)"
}

ensure_service_user() {
    local groups="$1"  # comma-separated supplementary groups, may be empty
    if ! getent group "$SERVICE_USER" >/dev/null; then
        groupadd --system "$SERVICE_USER"
    fi
    if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
        useradd --system --gid "$SERVICE_USER" ${groups:+--groups "$groups"} --home-dir "$DATA_DIR" \
            --no-create-home --shell /usr/sbin/nologin --comment "Waystation service" "$SERVICE_USER"
        done_ "created the system user $SERVICE_USER${groups:+ (groups $groups)}"
    elif [ -n "$groups" ]; then
        usermod --append --groups "$groups" "$SERVICE_USER"
        done_ "system user $SERVICE_USER exists; groups $groups ensured"
    else
        done_ "system user $SERVICE_USER exists"
    fi
}

ensure_dirs() {
    install -d -m 0755 -o root -g root "$PREFIX"
    install -d -m 0750 -o root -g "$SERVICE_USER" "$CONF_DIR"
    install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$DATA_DIR"
    done_ "folders $PREFIX (code), $CONF_DIR (config, 0750 root:$SERVICE_USER), $DATA_DIR (data, owned by $SERVICE_USER)"
}

# Copies the source tree this installer belongs to into $APP, replacing the previous copy whole.
install_code() {
    local src="$1" new="$APP.new" old="$APP.old" commit="unknown"
    rm -rf "$new" "$old"
    mkdir -p "$new"
    tar -C "$src" --exclude=./.git --exclude=./.venv --exclude=./data --exclude=./tests \
        --exclude=./var --exclude=./.hypothesis --exclude=./bench/out \
        --exclude='__pycache__' --exclude='*.pyc' --exclude=./.pytest_cache -cf - . | tar -C "$new" -xf -
    if command -v git >/dev/null 2>&1 && git -C "$src" rev-parse HEAD >/dev/null 2>&1; then
        commit="$(git -C "$src" rev-parse HEAD)"
    fi
    printf 'installed %s from %s, commit %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$src" "$commit" > "$new/INSTALLED"
    chown -R root:root "$new"
    chmod -R u=rwX,go=rX "$new"
    [ -d "$APP" ] && mv "$APP" "$old"
    mv "$new" "$APP"
    rm -rf "$old"
    done_ "code copied to $APP (commit $commit)"
}

# The venv: created with the system site packages visible (picamera2 and lgpio come from apt on a
# Pi), recreated when the system Python changed under it; then requirements installed or upgraded.
install_venv() {
    local wheelhouse="$1"; shift
    local extra_reqs=("$@") py want have log
    py="$(command -v python3)" || die "$EXIT_FAILED" "python3 is missing after the apt step"
    "$py" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 13) else 1)' \
        || die "$EXIT_USAGE" "Python 3.11-3.13 is needed (found $("$py" --version 2>&1))"
    want="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    have="$(cat "$VENV/.python-version" 2>/dev/null || true)"
    if [ -x "$VENV/bin/python" ] && [ "$have" = "$want" ] && grep -q '^include-system-site-packages = true' "$VENV/pyvenv.cfg"; then
        say "virtual environment $VENV exists (Python $want): upgrading it"
    else
        say "creating the virtual environment $VENV (Python $want, with system site packages)"
        "$py" -m venv --clear --system-site-packages "$VENV"
        echo "$want" > "$VENV/.python-version"
    fi
    local pip=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input)
    local source_args=()
    if [ -n "$wheelhouse" ]; then
        source_args=(--no-index --find-links "$wheelhouse")
        say "installing Python packages offline from the wheelhouse $wheelhouse"
    else
        say "installing Python packages from the package index (prebuilt wheels: nothing is compiled)"
    fi
    log="$(mktemp)"
    # Upgrade pip only when it is available (online, or a wheelhouse made by deploy/wheelhouse.sh).
    if [ -z "$wheelhouse" ] || compgen -G "$wheelhouse/pip-*.whl" >/dev/null; then
        (cd "$APP" && "${pip[@]}" install --quiet "${source_args[@]}" --upgrade pip) >"$log" 2>&1 \
            || warn "could not upgrade pip (carrying on with $("$VENV/bin/python" -m pip --version | cut -d' ' -f2))"
    fi
    local reqs=(-r requirements.txt) r
    for r in "${extra_reqs[@]}"; do reqs+=(-r "$r"); done
    # --only-binary=:all: means nothing is ever compiled here (dlib would take an hour on a Pi):
    # a package without a wheel for this machine fails the step instead. The two local shims are
    # directories and are built (pure Python, flit_core) regardless.
    if ! (cd "$APP" && "${pip[@]}" install "${source_args[@]}" --only-binary=:all: "${reqs[@]}") >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        rm -f "$log"
        die "$EXIT_FAILED" "pip could not install the Python packages (last lines above)${wheelhouse:+: is every wheel in $wheelhouse? make it with deploy/wheelhouse.sh}"
    fi
    rm -f "$log"
    "$VENV/bin/python" -m pip check >/dev/null || die "$EXIT_FAILED" "the installed packages conflict: $VENV/bin/python -m pip check"
    "$VENV/bin/python" -m compileall -q -j 0 "$APP" >/dev/null || warn "could not precompile $APP (start-up will be slower)"
    done_ "Python packages installed in $VENV ($("$VENV/bin/python" -m pip list 2>/dev/null | tail -n +3 | wc -l) packages)"
}

# Reads KEY=VALUE lines (systemd EnvironmentFile syntax, no shell evaluation) and exports them.
export_env_file() {
    local file="$1" key value
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in ''|'#'*|';'*) continue ;; esac
        key="${line%%=*}" value="${line#*=}"
        [[ "$key" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
        value="${value%\"}" value="${value#\"}"
        export "$key=$value"
    done < "$file"
}

systemd_running() { [ -d /run/systemd/system ]; }

install_journald_dropin() {
    local src="$1" dest=/etc/systemd/journald.conf.d/waystation.conf
    install -d -m 0755 /etc/systemd/journald.conf.d
    if cmp -s "$src" "$dest"; then
        done_ "journald limits already in $dest"
        return 0
    fi
    install -m 0644 "$src" "$dest"
    if systemd_running; then
        systemctl restart systemd-journald
    fi
    done_ "journald limits installed in $dest (logs go to the journal: no log files to rotate)"
}

summary() {
    local item
    printf '%s: (%s took %d s)\n\n== Summary (%d s in all)\n' "$PROG" "${CURRENT%% *}" "$((SECONDS - STEP_STARTED))" "$SECONDS"
    for item in "${DONE[@]}"; do printf '  done:    %s\n' "$item"; done
    for item in "${SKIPPED[@]}"; do printf '  skipped (not a Raspberry Pi): %s\n' "$item"; done
}
