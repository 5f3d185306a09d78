"""Adapt a provisioning bundle's station.yaml to the station it is installed on (run by install.sh).

``python -m server provision`` writes the CA certificate's path as it was on the server
(``mqtt.tls_ca: /tmp/hz-01/ca.crt``) and a relative ``data_dir``. On the station the
certificate lives at /etc/waystation/ca.crt and the data in /var/lib/waystation, the one
folder the systemd unit lets the agent write. Only those two keys are changed; the file's
leading comment lines are kept. Exit status 0 (changed or nothing to change), 1 unusable file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def localize(data: dict, *, ca: str, have_ca: bool, data_dir: str) -> list[str]:
    """Change ``data`` in place; return one line per change. Raises ValueError for an unusable config."""
    changes: list[str] = []
    mqtt = data.get("mqtt")
    if isinstance(mqtt, dict) and mqtt.get("tls_ca"):
        if not have_ca:
            raise ValueError("station.yaml sets mqtt.tls_ca (TLS) but the bundle has no ca.crt: provision again")
        if mqtt["tls_ca"] != ca:
            changes.append(f"mqtt.tls_ca: {mqtt['tls_ca']} -> {ca}")
            mqtt["tls_ca"] = ca
    current = data.get("data_dir")
    if current is None or not Path(str(current)).is_absolute():
        changes.append(f"data_dir: {current if current is not None else '(default)'} -> {data_dir}")
        data["data_dir"] = data_dir
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="station.yaml to adapt in place")
    parser.add_argument("--ca", required=True, help="where ca.crt is installed on this station")
    parser.add_argument("--have-ca", choices=("yes", "no"), required=True, help="whether the bundle has ca.crt")
    parser.add_argument("--data-dir", required=True, help="the station's data folder")
    args = parser.parse_args(argv)
    text = args.file.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        print(f"localize: {args.file}: not valid YAML: {err}", file=sys.stderr)
        return 1
    if not isinstance(data, dict):
        print(f"localize: {args.file}: must hold a mapping of settings", file=sys.stderr)
        return 1
    try:
        changes = localize(data, ca=args.ca, have_ca=args.have_ca == "yes", data_dir=args.data_dir)
    except ValueError as err:
        print(f"localize: {err}", file=sys.stderr)
        return 1
    if not changes:
        return 0
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    header.append("# Paths adapted to this station by deploy/edge/install.sh: " + "; ".join(changes))
    args.file.write_text("\n".join(header) + "\n" + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    for change in changes:
        print(f"install: station.yaml: {change}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
