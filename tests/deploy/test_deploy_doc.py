"""docs/deploy.md stays true: its links, files, installer options and quoted log lines exist.

The guide quotes the agent's and server's log lines for troubleshooting. Each quoted line is
checked against the source: every literal stretch of it (the parts that are not numbers,
paths, quoted values or parenthesised details) must occur in a log or error format string,
so a reworded message in the code makes this test name the stale line of the guide.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")


Segment = tuple[str, str]  # ("lit", text) or ("any", "")
_PERCENT = re.compile(r"%[-#0 +]*\d*(?:\.\d+)?[sdfgrx]")


def _segments_of(node: ast.AST) -> list[Segment] | None:
    """A string literal of the code as literal text and placeholders (%-specifiers, f-string fields)."""
    parts: list[Segment] = []

    def literal(text: str) -> None:
        pieces = _PERCENT.split(text.replace("%%", "\0"))
        for i, piece in enumerate(pieces):
            if i:
                parts.append(("any", ""))
            if piece:
                parts.append(("lit", piece.replace("\0", "%")))

    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        literal(node.value)
    elif isinstance(node, ast.JoinedStr):
        for value in node.values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                literal(value.value)
            else:
                parts.append(("any", ""))
    else:
        return None
    return parts if sum(len(t) for k, t in parts if k == "lit") >= 12 else None


def _code_messages() -> list[list[Segment]]:
    found = []
    for folder in ("core", "edge", "server", "models"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                segments = _segments_of(node)
                if segments:
                    found.append(segments)
    return found


def _matches(segments: list[Segment], text: str, *, prefix: bool) -> bool:
    """Whether ``text`` is what the message renders to (or, with ``prefix``, how one begins)."""
    if not text:
        return prefix or not segments
    if not segments:
        return False
    kind, lit = segments[0]
    if kind == "lit":
        if text.startswith(lit):
            return _matches(segments[1:], text[len(lit):], prefix=prefix)
        return prefix and lit.startswith(text)
    return any(_matches(segments[1:], text[i:], prefix=prefix) for i in range(1, len(text) + 1))


def test_links_and_repository_paths_exist() -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", DOC):
        if "://" in target:
            continue
        assert (REPO / "docs" / target).exists(), f"broken link: {target}"
    made_by_init = {"deploy/compose/.env", "deploy/compose/ca"}  # written by deploy/compose/init.sh
    for path in set(re.findall(r"(?<![\w/])(deploy/[\w./-]+[\w])", DOC)) - made_by_init:
        assert (REPO / path).exists(), f"docs/deploy.md names {path}, which does not exist"


def test_installer_options_in_the_guide_exist() -> None:
    scripts = {
        "deploy/edge/install.sh": (REPO / "deploy/edge/install.sh").read_text(),
        "deploy/server/install.sh": (REPO / "deploy/server/install.sh").read_text(),
        "deploy/wheelhouse.sh": (REPO / "deploy/wheelhouse.sh").read_text(),
        "waystation-backup": (REPO / "deploy/server/backup.sh").read_text(),
        "waystation-restore": (REPO / "deploy/server/restore.sh").read_text(),
        "deploy/compose/init.sh": (REPO / "deploy/compose/init.sh").read_text(),
    }
    checked = 0
    for line in DOC.splitlines():
        for name, text in scripts.items():
            if name in line:
                for option in re.findall(rf"{re.escape(name)}((?:\s+[^\s`|]+)*)", line)[0].split():
                    if option.startswith("--"):
                        assert re.search(rf"^\s+{re.escape(option)}\)", text, re.M), f"{name} has no option {option}"
                        checked += 1
    assert checked >= 8


def test_quoted_log_lines_exist_in_the_code() -> None:
    messages = _code_messages()
    quoted = re.findall(r"`((?:INFO|WARNING|ERROR) [\w.]+: [^`]+|(?:Config|Camera|Store|Provision)Error: [^`]+)`", DOC)
    quoted += re.findall(r"^(?:INFO|WARNING) [\w.]+: .+$", DOC, re.M)  # the expected start-up lines
    checked = 0
    for line in (" ".join(q.split()) for q in quoted):  # a code span may wrap in the Markdown source
        message = re.sub(r"^(?:(?:INFO|WARNING|ERROR) [\w.]+|\w+Error): ", "", line)
        if re.fullmatch(r"(?:<\w+>(?:: )?)+", message):
            continue  # `ConfigError: <key>: <value>: <problem>` describes the form
        if line.startswith("ConfigError: "):
            continue  # pydantic words these: test_quoted_config_errors_are_what_check_config_prints
        cut = message.endswith("...")  # the guide shortened a long message
        text = message.removesuffix("...").rstrip()
        assert any(_matches(m, text, prefix=cut) for m in messages), (
            f"docs/deploy.md quotes {line!r}, which no log or error message of the code produces"
        )
        checked += 1
    assert checked >= 10


def test_quoted_config_errors_are_what_check_config_prints(tmp_path: Path) -> None:
    """Each `ConfigError: key: value: problem` of the guide, produced by the edge's own loader."""
    import yaml

    from edge.config import EdgeSettings
    from edge.errors import ConfigError

    quoted = [" ".join(q.split()) for q in re.findall(r"`(ConfigError: [^`<]+)`", DOC)]  # spans may wrap
    assert len(quoted) >= 2
    for line in quoted:
        key, shown, _ = line.removeprefix("ConfigError: ").split(": ", 2)
        value = {} if shown == "(see file)" else yaml.safe_load(shown)
        config: dict = {"station_id": "doc-check"}
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        path = tmp_path / "station.yaml"
        path.write_text(yaml.safe_dump(config))
        try:
            EdgeSettings.load(path)
        except ConfigError as err:
            assert line in err.lines(), f"the guide quotes {line!r}; check-config prints {err.lines()}"
        else:
            raise AssertionError(f"{config} is accepted, but the guide quotes {line!r} for it")
