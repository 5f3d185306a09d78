"""docs/config-edge.md and docs/config-server.md are generated from the settings schemas and kept current."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from pydantic import BaseModel

from edge.config import EdgeSettings
from server.config import ServerSettings

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "gen_config_docs.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def _leaves(model: type[BaseModel], prefix: str = "") -> dict[str, object]:
    """Every settable key of a settings model, nested sections flattened to dotted paths."""
    out: dict[str, object] = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(_leaves(ann, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = field
    return out


def _row(doc: str, key: str) -> list[str]:
    match = re.search(rf"^\| `{re.escape(key)}` \|(.*)\|$", doc, re.M)
    assert match, f"no row for {key}"
    return [cell.strip() for cell in match.group(1).split(" | ")]


def test_generated_docs_are_current() -> None:
    """Fails when a settings field changed and the docs were not regenerated (the fix is printed)."""
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_check_notices_a_stale_file(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    gen = _generator()
    stale = tmp_path / "config-edge.md"
    stale.write_text(gen.render_edge().replace("BCM pin driving the lock relay.", "BCM pin of the relay."))
    monkeypatch.setattr(gen, "EDGE_DOC", stale)
    monkeypatch.setattr(gen, "REPO", tmp_path)
    monkeypatch.setattr(gen, "SERVER_DOC", tmp_path / "config-server.md")
    (tmp_path / "config-server.md").write_text(gen.render_server())
    assert gen.main(["--check"]) == 1
    assert gen.main([]) == 0
    assert gen.main(["--check"]) == 0
    assert "BCM pin driving the lock relay." in stale.read_text()


def test_every_edge_key_is_documented_with_its_schema() -> None:
    doc = (REPO / "docs" / "config-edge.md").read_text(encoding="utf-8")
    leaves = _leaves(EdgeSettings)
    assert len(leaves) > 60  # every section's keys, not only the top level
    for key, field in leaves.items():
        cells = _row(doc, key)
        description = " ".join((field.description or "").split()).replace("|", "\\|")
        assert description and cells[-1] == description, key
        if field.is_required():
            assert cells[1] == "**required**", key
    # Bounds and defaults come from the field itself.
    relay = EdgeSettings.model_fields["door"].annotation.model_fields["relay_pin"]
    low, high = (m.ge for m in relay.metadata if hasattr(m, "ge")), (m.le for m in relay.metadata if hasattr(m, "le"))
    assert _row(doc, "door.relay_pin")[1:3] == [f"`{relay.default}`", f"{next(low)} ≤ x ≤ {next(high)}"]
    assert _row(doc, "access.mode")[0].startswith("one of `face`, `qr`")
    assert _row(doc, "detection.scale")[2] == "0.1 ≤ x ≤ 1.0"
    assert "WAYSTATION_EDGE_DOOR__RELAY_PIN" in doc


def test_every_server_key_is_documented_with_its_variable() -> None:
    doc = (REPO / "docs" / "config-server.md").read_text(encoding="utf-8")
    for key, field in ServerSettings.model_fields.items():
        cells = _row(doc, key)
        assert cells[3] == f"`WAYSTATION_SERVER_{key.upper()}`", key
        assert cells[-1] == " ".join((field.description or "").split()).replace("|", "\\|"), key
    assert _row(doc, "api_token")[1] == "**required**"  # a secret is never defaulted
    assert _row(doc, "http_port")[2] == "1 ≤ x ≤ 65535"
