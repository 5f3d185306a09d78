"""The import rules of docs/architecture.md, checked on the source instead of trusted to review.

Reads every module's import statements with ``ast`` (nothing is imported), so
a new ``from edge.policy import ...`` in server/ fails here with the file and
line named.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# (package, packages it must never import)
RULES = {
    "models": {"core", "edge", "server", "enroll", "demo"},  # the contract stands alone
    "core": {"edge", "server", "enroll", "demo"},
    "edge": {"server", "enroll", "demo"},  # the Pi installs only what the edge needs
    "server": {"edge", "demo"},
}
# Documented exceptions: (file, imported package) -> why.
ALLOWED = {
    ("server/provision.py", "edge"): "a bundle is validated with the station's own config schema before it is written",
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_does_not_import_what_the_layering_forbids(package: str) -> None:
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    broken = []
    for path in files:
        rel = path.relative_to(REPO).as_posix()
        for line, top in _imports(path):
            if top in RULES[package] and (rel, top) not in ALLOWED:
                broken.append(f"{rel}:{line} imports {top}")
    assert not broken, "layering broken (docs/architecture.md, 'Who imports whom'):\n" + "\n".join(broken)


def test_only_the_owning_modules_import_the_wrapped_libraries() -> None:
    owners = {
        "face_recognition": {"core/faces.py"}, "dlib": {"core/faces.py"},
        "cv2": {"core/imaging.py"}, "paho": {"core/mqtt.py"}, "amqtt": {"core/broker.py"},
        "gpiozero": {"edge/door.py", "edge/inputs.py", "demo/__main__.py"},  # the demo picks MockFactory pins
        "prometheus_client": {"server/health.py", "edge/health.py"},
    }
    broken = []
    for package in ("core", "edge", "server", "enroll", "models", "demo"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            for line, top in _imports(path):
                if top in owners and rel not in owners[top]:
                    broken.append(f"{rel}:{line} imports {top} (owned by {', '.join(sorted(owners[top]))})")
    assert not broken, "\n".join(broken)
