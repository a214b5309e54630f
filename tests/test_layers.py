"""The layering rule, checked on the source: the core never imports a framework,
redis or asyncio.

Each module says its layer in its docstring ("Imports: ... (core layer)" or "(pure
layer)"). A pure module imports the standard library and other pure modules only; a
core module may add anyio, PyJWT and typing-extensions and other core modules. An
import anywhere in the file counts, inside a function or under ``TYPE_CHECKING`` too.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "wschat"
CORE_THIRD_PARTY = {"anyio", "jwt", "typing_extensions"}
NEVER = {"asyncio", "trio", "redis", "starlette", "fastapi", "uvicorn", "hypercorn"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(path: Path) -> str | None:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    for name in ("pure", "core"):
        if f"({name} layer" in doc:
            return name
    return None


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
LAYERS = {name: layer(path) for name, path in MODULES.items()}


def imports(name: str) -> set[str]:
    """Every module ``name`` imports, relative imports resolved."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
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


def test_every_core_module_is_found() -> None:
    core = {n for n, kind in LAYERS.items() if kind == "core"}
    # The modules the architecture names, at least.
    assert {
        "wschat",
        "wschat.manager",
        "wschat.connection",
        "wschat.rooms",
        "wschat.auth",
        "wschat.endpoint",
    } <= core


@pytest.mark.parametrize(
    "name", sorted(n for n, kind in LAYERS.items() if kind is not None)
)
def test_core_and_pure_modules_import_only_their_layer(name: str) -> None:
    kind = LAYERS[name]
    allowed_layers = {"pure"} if kind == "pure" else {"pure", "core"}
    wrong = []
    for target in sorted(imports(name)):
        top = target.partition(".")[0]
        if top in NEVER:
            wrong.append(f"{target} (never in the core)")
        elif top == "wschat":
            # A package import (wschat.backplane) is fine when its own layer is.
            target_layer = LAYERS.get(target)
            if target_layer not in allowed_layers:
                wrong.append(f"{target} ({target_layer or 'adapter'} module)")
        elif top in sys.stdlib_module_names or top == "__future__":
            continue
        elif kind == "pure" or top not in CORE_THIRD_PARTY:
            wrong.append(f"{target} (third party)")
    assert not wrong, f"{name} ({kind} layer) imports: {', '.join(wrong)}"


def test_the_check_sees_what_it_must_refuse() -> None:
    # The rule must be able to fail: asyncio is in the standard library, but banned.
    assert "asyncio" in sys.stdlib_module_names
    assert {"asyncio", "redis", "starlette"} <= NEVER
    assert "wschat.asgi" in imports("wschat.starlette")
    assert LAYERS["wschat.asgi"] is None  # an adapter: the core may not import it
