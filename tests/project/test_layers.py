"""The shape of the package, checked on the source.

- Layers: the core never imports a framework, redis or asyncio. Each module says its
  layer in its docstring ("Imports: ... (core layer)" or "(pure layer)"). A pure
  module imports the standard library and other pure modules only; a core module may
  add anyio, PyJWT and typing-extensions and other core modules.
- No import cycle between the modules of ``wschat``.
- No module reads another object's ``_private`` names, or imports one.

An import anywhere in the file counts, inside a function or under ``TYPE_CHECKING``
too.
"""

from __future__ import annotations

import ast
import sys

import pytest

from tests.support.source import LAYERS, MODULES, imports, imports_in

CORE_THIRD_PARTY = {"anyio", "jwt", "typing_extensions"}
NEVER = {"asyncio", "trio", "redis", "starlette", "fastapi", "uvicorn", "hypercorn"}


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
    "name", sorted(n for n, kind in LAYERS.items() if kind in ("pure", "core"))
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


#: The Python client (``wschat[client]``): a tools-layer package on ``websockets``.
CLIENT = sorted(
    n for n in MODULES if n == "wschat.client" or n.startswith("wschat.client.")
)
CLIENT_THIRD_PARTY = {"anyio", "websockets"}


#: The engines on redis-py (which runs on asyncio): the only modules importing either,
#: with the Python client (on ``websockets``' asyncio client) for asyncio.
REDIS_ENGINES = {"wschat.backplane.redis", "wschat.history.redis"}


def test_only_the_redis_engines_import_redis_and_asyncio() -> None:
    redis_users = {
        name
        for name in MODULES
        if any(t.split(".")[0] == "redis" for t in imports(name))
    }
    asyncio_users = {
        name
        for name in MODULES
        if any(t.split(".")[0] == "asyncio" for t in imports(name))
    }
    assert redis_users == REDIS_ENGINES
    assert asyncio_users == REDIS_ENGINES | {"wschat.client.chat"}


def test_the_client_is_in_the_tools_layer() -> None:
    assert {"wschat.client", "wschat.client.chat", "wschat.client.policy"} <= set(
        CLIENT
    )
    assert {name: LAYERS[name] for name in CLIENT} == dict.fromkeys(CLIENT, "tools")


@pytest.mark.parametrize("name", CLIENT)
def test_the_client_imports_websockets_anyio_and_wschat_only(name: str) -> None:
    wrong = []
    for target in sorted(imports(name)):
        top = target.partition(".")[0]
        if top in {"redis", "starlette", "fastapi", "uvicorn", "hypercorn", "trio"}:
            wrong.append(target)
        elif top in sys.stdlib_module_names or top in ("__future__", "wschat"):
            continue
        elif top not in CLIENT_THIRD_PARTY:
            wrong.append(f"{target} (third party)")
    assert not wrong, f"{name} (tools layer) imports: {', '.join(wrong)}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_nothing_but_the_client_imports_the_client(name: str) -> None:
    # The core must not depend on it; nor may another tool pull websockets in.
    if name in CLIENT:
        return
    reached = {
        t
        for t in imports(name)
        if t == "wschat.client" or t.startswith("wschat.client.")
    }
    assert not reached, f"{name} imports {sorted(reached)}"


def test_the_check_sees_what_it_must_refuse() -> None:
    # The rule must be able to fail: asyncio is in the standard library, but banned.
    assert "asyncio" in sys.stdlib_module_names
    assert {"asyncio", "redis", "starlette"} <= NEVER
    assert "wschat.asgi" in imports("wschat.starlette")
    assert LAYERS["wschat.asgi"] is None  # an adapter: the core may not import it


# -- no import cycles ------------------------------------------------------------------


def import_graph() -> dict[str, set[str]]:
    """Which ``wschat`` modules each one imports (type-only imports included).

    Edges into the package root are left out: ``wschat/__init__.py`` re-exports the
    public names, and a module reading ``wschat.__version__`` when called is not a
    cycle of design (``shape.py`` counts the same way).
    """
    return {
        name: {t for t in imports(name) if t in MODULES and t not in (name, "wschat")}
        for name in MODULES
        if name != "wschat"
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (``[a, b, a]``), or None if there is none."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for target in sorted(graph.get(node, ())):
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_no_import_cycle_in_the_package() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_the_cycle_check_sees_a_cycle_through_a_type_only_import() -> None:
    # The check must be able to fail: a TYPE_CHECKING import is an edge too.
    source = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n"
    )
    assert imports_in(source, "wschat") == {"typing", "wschat.a"}
    graph = {"wschat.a": {"wschat.b"}, "wschat.b": imports_in(source, "wschat")}
    assert find_cycle(graph) == ["wschat.a", "wschat.b", "wschat.a"]
    assert find_cycle({"wschat.a": {"wschat.b"}, "wschat.b": set()}) is None
    # The real graph has the edges that once made cycles, in one direction only.
    graph = import_graph()
    assert "wschat.sweeper" in graph["wschat.connection"]
    assert "wschat.cluster" in graph["wschat.manager"]
    assert "wschat.manager" not in graph["wschat.cluster"]


# -- no reaching into another object's private names ---------------------------------


def private_reads(source: str) -> list[str]:
    """Where ``source`` reads ``x._name`` of an ``x`` other than self/cls, or imports
    a ``_name`` (dunders like ``__version__`` are public)."""

    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__")

    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and private(node.attr):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if private(alias.name):
                    found.append(f"line {node.lineno}: imports {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if any(private(part) for part in alias.name.split(".")):
                    found.append(f"line {node.lineno}: imports {alias.name}")
    return found


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_reads_another_objects_private_names(name: str) -> None:
    found = private_reads(MODULES[name].read_text())
    assert not found, f"{name} reaches into private names: {'; '.join(found)}"


def test_the_private_check_sees_what_it_must_refuse() -> None:
    source = """
from tests.manager import _helper
import wschat._internal
from . import __version__
class C:
    def f(self, conn):
        self._own = conn._queue
        return self._manager._bridge, type(self)._cache, cls._x
"""
    assert private_reads(source) == [
        "line 2: imports _helper",
        "line 3: imports wschat._internal",
        "line 7: conn._queue",
        "line 8: self._manager._bridge",
        "line 8: type(self)._cache",
    ]
