"""The package's source read as modules: their layer and what each one imports.

``imports`` resolves relative imports and counts every import in a file (inside a
function or under ``TYPE_CHECKING`` too).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "wschat"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(path: Path) -> str | None:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    for name in ("pure", "core", "tools"):
        if f"({name} layer" in doc:
            return name
    return None


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
LAYERS = {name: layer(path) for name, path in MODULES.items()}


def imports(name: str) -> set[str]:
    """Every module ``name`` imports, relative imports resolved."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return imports_in(path.read_text(), package)


def imports_in(source: str, package: str) -> set[str]:
    """Every module ``source`` imports, resolved as if it were in ``package``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.add(node.module or "")
                continue
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            if node.module:
                found.add(target)
            else:  # from . import x: a submodule, or a name in the package
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in MODULES else target)
    return found
