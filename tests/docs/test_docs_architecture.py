"""docs/architecture.md's layer table is the source's: every module in exactly one
row, and no module importing from a row above its own (type-only imports included)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PAGE = ROOT / "docs" / "architecture.md"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / "wschat").rglob("*.py")):
        parts = path.relative_to(SRC / "wschat").with_suffix("").parts
        name = "/".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    # The package root re-exports the public API, and __main__ runs the CLI.
    found.pop("", None)
    found.pop("__main__", None)
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    package = name.split("/") if path.name == "__init__.py" else name.split("/")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
            elif (node.module or "").startswith("wschat"):
                target = (node.module or "").split(".")[1:]
            else:
                continue
            candidates = ["/".join(target)]
            candidates += ["/".join([*target, alias.name]) for alias in node.names]
            found.update(c for c in candidates if c in known)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("wschat."):
                    target_name = "/".join(alias.name.split(".")[1:])
                    if target_name in known:
                        found.add(target_name)
    found.discard(name)
    return found


def table() -> list[tuple[str, list[str]]]:
    """The layer rows, top (highest) first: (layer, module entries)."""
    section = PAGE.read_text().split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("`"):
            rows.append((cells[0], re.findall(r"`([\w/]+)`", cells[1])))
    return rows


def layer_of(name: str, rows: list[tuple[str, list[str]]]) -> int:
    """The row of a module: an exact entry, or the longest package entry holding it."""
    best: tuple[int, int] | None = None
    for index, (_, entries) in enumerate(rows):
        for entry in entries:
            exact = entry == name
            package = entry.endswith("/") and name.startswith(entry.rstrip("/"))
            if exact or package:
                length = len(entry) + (1000 if exact else 0)
                if best is None or length > best[0]:
                    best = (length, index)
    assert best is not None, f"{name} is in no row of docs/architecture.md"
    return best[1]


def test_every_module_is_in_the_table_once() -> None:
    rows = table()
    assert [layer for layer, _ in rows] == [
        "adapters and tools",
        "endpoint",
        "delivery",
        "connection",
        "plug-ins",
        "pure",
    ]
    entries = [entry for _, names in rows for entry in names]
    assert len(entries) == len(set(entries)), "a module is in two rows"
    for name in modules():
        layer_of(name, rows)
    for entry in entries:
        assert entry.endswith("/") or entry in modules(), f"{entry} is not a module"


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    rows = table()
    known = modules()
    wrong = []
    for name, path in known.items():
        mine = layer_of(name, rows)
        for target in sorted(imports(name, path, set(known))):
            theirs = layer_of(target, rows)
            if theirs < mine:
                wrong.append(
                    f"{name} ({rows[mine][0]}) imports {target} ({rows[theirs][0]})"
                )
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_an_upward_import() -> None:
    rows = table()
    # protocol is pure, manager is delivery: the check must call that upward.
    assert layer_of("manager", rows) < layer_of("protocol", rows)
    assert layer_of("backplane/redis", rows) == layer_of("backplane/base", rows)
    assert layer_of("history/template", rows) != layer_of("history/memory", rows)
