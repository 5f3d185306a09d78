"""Write docs/config-edge.md and docs/config-server.md from the settings schemas themselves.

    python deploy/gen_config_docs.py          # rewrite both files
    python deploy/gen_config_docs.py --check  # exit 1 if either file differs from the schemas

Every key of ``edge.config.EdgeSettings`` (nested sections included) and of
``server.config.ServerSettings`` becomes one row: key, type, default, allowed values
(the field's bounds), environment variable and description, all read from the pydantic
models, so the documentation cannot drift from what the programs accept. A test
(tests/deploy/test_config_docs.py) fails when the files are stale.
"""

from __future__ import annotations

import argparse
import enum
import inspect
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annotated_types as at
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

EDGE_DOC = REPO / "docs" / "config-edge.md"
SERVER_DOC = REPO / "docs" / "config-server.md"


@dataclass(frozen=True)
class Row:
    key: str
    type: str
    default: str
    allowed: str
    env: str
    description: str


def type_name(annotation: Any) -> str:
    """A reader's name for a type annotation."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is typing.Annotated:  # a constrained member of a union, e.g. Annotated[int, Field(ge=0)] | Literal[...]
        base, *extra = args
        limits = [m for e in extra for m in (e.metadata if isinstance(e, FieldInfo) else [e])]
        allowed = bounds(types.SimpleNamespace(metadata=limits, annotation=base))  # type: ignore[arg-type]
        return f"{type_name(base)} ({allowed})" if allowed else type_name(base)
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        text = " or ".join(names)
        return text + " or `null`" if type(None) in args else text
    if origin in (list, tuple, set, frozenset):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if annotation is SecretStr:
        return "secret text"
    if inspect.isclass(annotation):
        if issubclass(annotation, Path):
            return "path"
        if issubclass(annotation, enum.Enum):
            return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
        return {"str": "text", "int": "integer", "float": "number", "bool": "true/false"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def bounds(field: FieldInfo) -> str:
    """The field's constraints as one line, e.g. ``1 ≤ x ≤ 65535``."""
    low = high = ""
    parts = []
    for item in field.metadata:
        if isinstance(item, at.Ge):
            low = f"{item.ge} ≤"
        elif isinstance(item, at.Gt):
            low = f"{item.gt} <"
        elif isinstance(item, at.Le):
            high = f"≤ {item.le}"
        elif isinstance(item, at.Lt):
            high = f"< {item.lt}"
        elif isinstance(item, at.MinLen):
            parts.append(f"at least {_count(item.min_length, field)}")
        elif isinstance(item, at.MaxLen):
            parts.append(f"at most {_count(item.max_length, field)}")
        elif getattr(item, "pattern", None):
            parts.append(f"matches `{item.pattern}`")
    if low or high:
        parts.insert(0, " ".join(p for p in (low, "x", high) if p))
    return "; ".join(parts)


def _count(n: int, field: FieldInfo) -> str:
    unit = "item" if _is_list(field) else "character"
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _is_list(field: FieldInfo) -> bool:
    ann = field.annotation
    return typing.get_origin(ann) in (list, tuple, set) or any(
        typing.get_origin(a) in (list, tuple, set) for a in typing.get_args(ann)
    )


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if value is PydanticUndefined:
        return "**required**"
    if isinstance(value, BaseModel):
        return "(section)"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if isinstance(value, (list, tuple)):
        return "`[]`" if not value else "`" + repr(list(value)) + "`"
    if isinstance(value, Path):
        return f"`{value.as_posix()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


def _section_model(field: FieldInfo) -> type[BaseModel] | None:
    ann = field.annotation
    if inspect.isclass(ann) and issubclass(ann, BaseModel):
        return ann
    return None


def rows(model: type[BaseModel], *, prefix: str, env_prefix: str, env_sep: str) -> list[tuple[str, list[Row], str]]:
    """Sections (title, rows, intro) of ``model``: its own keys first, then one section per nested model."""
    own: list[Row] = []
    nested: list[tuple[str, list[Row], str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        env = f"{env_prefix}{key.replace('.', env_sep).upper()}"
        sub = _section_model(field)
        if sub is not None:
            intro = " ".join((field.description or "").split())
            doc = inspect.cleandoc(sub.__dict__.get("__doc__") or "")  # its own, not BaseModel's
            if doc and not doc.startswith(("Every knob", "Settings of")):
                intro = (intro + " " + " ".join(doc.split())).strip()
            nested.extend(
                [(key, sub_rows, intro) if title == "" else (title, sub_rows, sub_intro)
                 for title, sub_rows, sub_intro in rows(sub, prefix=f"{key}.", env_prefix=env_prefix, env_sep=env_sep)]
            )
            continue
        description = " ".join((field.description or "").split()).replace("|", "\\|")
        own.append(Row(key, type_name(field.annotation), default_text(field), bounds(field), env, description))
    return [("", own, "")] + nested


def _table(rows_: list[Row], *, show_env: bool) -> list[str]:
    head = "| key | type | default | allowed | description |"
    sep = "| --- | --- | --- | --- | --- |"
    if show_env:
        head = "| key | type | default | allowed | environment variable | description |"
        sep = "| --- | --- | --- | --- | --- | --- |"
    out = [head, sep]
    for r in rows_:
        cells = [f"`{r.key}`", r.type, r.default, r.allowed or "", *([f"`{r.env}`"] if show_env else []), r.description]
        out.append("| " + " | ".join(cells) + " |")
    return out


GENERATED = (
    "<!-- Generated by deploy/gen_config_docs.py from {source}: do not edit; "
    "run `python deploy/gen_config_docs.py`. -->"
)


def render_edge() -> str:
    from edge.config import EdgeSettings

    sections = rows(EdgeSettings, prefix="", env_prefix="WAYSTATION_EDGE_", env_sep="__")
    lines = [
        GENERATED.format(source="edge/config.py (EdgeSettings)"),
        "",
        "# Station (edge agent) configuration",
        "",
        "The agent reads one YAML file, `/etc/waystation/station.yaml` on an installed station "
        "(`python -m edge run --config FILE`). `python -m server provision` writes the first version; "
        "every key below may be added to it. Unknown keys are refused.",
        "",
        "Any key can also be set by an environment variable, which wins over the file: `WAYSTATION_EDGE_` "
        "and the key in capitals with `__` between levels, e.g. `door.relay_pin` is "
        "`WAYSTATION_EDGE_DOOR__RELAY_PIN`. Secrets go there, never in the file: the installed service reads "
        "`/etc/waystation/station.env` (the broker password, `WAYSTATION_EDGE_MQTT__PASSWORD`).",
        "",
        "Check a file without touching pins, camera or broker: `python -m edge check-config FILE`. It exits "
        "with status 0 when the file is valid and 2 when it is not, with one line per problem naming the key, "
        "the value and what is expected, e.g. `ConfigError: door.relay_pin: 40: Input should be less than or "
        "equal to 27`. Values outside *allowed* are refused the same way.",
        "",
    ]
    for title, section_rows, intro in sections:
        lines.append(f"## `{title}`" if title else "## Top level")
        lines.append("")
        if intro:
            lines += [intro, ""]
        lines += _table(section_rows, show_env=False)
        lines.append("")
    return "\n".join(lines)


def render_server() -> str:
    from server.config import ServerSettings

    (title, section_rows, _), *nested = rows(ServerSettings, prefix="", env_prefix="WAYSTATION_SERVER_", env_sep="_")
    assert not nested, "ServerSettings has no nested sections; render them here if it gets some"
    lines = [
        GENERATED.format(source="server/config.py (ServerSettings)"),
        "",
        "# Server configuration",
        "",
        "The server reads an optional YAML file (`python -m server run --config FILE`; "
        "`/etc/waystation/server.yaml` on an installed server) and environment variables, which win over the "
        "file: `WAYSTATION_SERVER_` and the key in capitals. Secrets (`api_token`, `mqtt_password`, a "
        "`database_url` with a password) belong in the environment: the installed service reads "
        "`/etc/waystation/server.env`. Unknown keys are refused.",
        "",
        "Check the settings: `python -m server check-config --config FILE` exits with 0 when they are valid "
        "and 2 when not, with one `ConfigError: <key>: <problem>` line per problem.",
        "",
    ]
    lines += _table(section_rows, show_env=True)
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the configuration reference from the settings schemas.")
    parser.add_argument("--check", action="store_true", help="only check that the files are up to date (exit 1 if not)")
    args = parser.parse_args(argv)
    stale = []
    for path, text in ((EDGE_DOC, render_edge()), (SERVER_DOC, render_server())):
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO)}")
    if stale:
        names = ", ".join(str(p.relative_to(REPO)) for p in stale)
        print(f"stale: {names} no longer match the settings schemas: run `python deploy/gen_config_docs.py`",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
