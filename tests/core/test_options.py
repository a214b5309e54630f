"""Options: typed for the adapters, checked at run time, the outbox caps on the manager.

``ChatOptionsKwargs`` must be ``ChatOptions``' fields exactly (names and types), so
that ``Unpack[ChatOptionsKwargs]`` in the adapters' signatures makes mypy refuse a
misspelt or mistyped option; a run of mypy on a snippet proves it does. Untyped
callers still get a ``ConfigurationError`` naming the unknown option, and the outbox
options of wschat 0.1 say where they went.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any

import pytest
import typing_extensions
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

import wschat
from tests.support.common import SECRET
from wschat import ChatOptions, ConfigurationError, ConnectionManager, TokenVerifier
from wschat.asgi import chat_app
from wschat.demo import create_app
from wschat.fastapi import chat_router
from wschat.options import MOVED_TO_MANAGER, ChatOptionsKwargs
from wschat.origin import OriginPolicy
from wschat.starlette import chat_routes
from wschat.testing import ChatDenied, ChatTestClient, Ready

pytestmark = pytest.mark.anyio

verifier = TokenVerifier(SECRET, algorithms=["HS256"])
ADAPTERS = ["asgi", "starlette", "fastapi", "demo"]


def build(
    kind: str,
    manager: ConnectionManager,
    options: ChatOptions | None = None,
    **kwargs: Any,
) -> Any:
    """The chat under ``/ws`` through one adapter, given ``options`` and keywords."""
    if kind == "asgi":
        return chat_app(manager, verifier, options, **kwargs)
    if kind == "starlette":
        routes = chat_routes(manager, verifier, options, **kwargs)
        return Starlette(routes=[Mount("/ws", routes=routes)])
    if kind == "fastapi":
        app = FastAPI()
        app.include_router(
            chat_router(manager, verifier, options, **kwargs), prefix="/ws"
        )
        return app
    return create_app(SECRET, manager=manager, options=options, **kwargs)


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- the TypedDict is the dataclass ---------------------------------------------------


def test_the_typed_keywords_are_the_options_fields_with_their_types() -> None:
    fields = {f.name: f for f in dataclasses.fields(ChatOptions) if f.init}
    field_types = typing.get_type_hints(ChatOptions, vars(wschat.options))
    keyword_types = typing_extensions.get_type_hints(
        ChatOptionsKwargs, vars(wschat.options)
    )
    assert list(keyword_types) == list(fields)  # the same names, in the same order
    for name in fields:
        assert keyword_types[name] == field_types[name], name
    # Every keyword is optional: the dataclass has a default for each.
    assert ChatOptionsKwargs.__required_keys__ == frozenset()
    assert all(
        f.default is not dataclasses.MISSING
        or f.default_factory is not dataclasses.MISSING
        for f in fields.values()
    )


def test_mypy_refuses_a_misspelt_or_mistyped_option(tmp_path: Path) -> None:
    snippet = tmp_path / "typo.py"
    snippet.write_text(
        textwrap.dedent(
            """
            from wschat import ChatOptions, ConnectionManager, TokenVerifier
            from wschat.asgi import chat_app
            from wschat.demo import create_app
            from wschat.fastapi import chat_router
            from wschat.starlette import chat_routes

            manager = ConnectionManager()
            verifier = TokenVerifier("k" * 32, algorithms=["HS256"])
            chat_app(manager, verifier, rate_limt=5)
            chat_routes(manager, verifier, alowed_origins=["https://a.example"])
            chat_router(manager, verifier, tags=["chat"], http_denial=True)
            create_app(auth_timout=5.0)
            chat_app(manager, verifier, rate_limit="5")
            chat_app(manager, verifier, outbox_max_messages=64)
            ChatOptions(close_timout=1.0)
            chat_app(manager, verifier, ChatOptions(rate_limit=None), close_timeout=1.0)
            chat_router(manager, verifier, allowed_origins=None, http_denials=True)
            """
        )
    )
    src = Path(wschat.__file__).resolve().parent.parent
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--hide-error-context",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(snippet),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "MYPYPATH": str(src)},
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    errors = [
        line.split(": error: ", 1)[1].split("  [")[0]
        for line in result.stdout.splitlines()
        if ": error: " in line
    ]
    lines = [
        int(line.split(":")[1])
        for line in result.stdout.splitlines()
        if ": error: " in line
    ]
    assert errors == [
        'Unexpected keyword argument "rate_limt" for "chat_app"; '
        'did you mean "rate_limit"?',
        'Unexpected keyword argument "alowed_origins" for "chat_routes"; '
        'did you mean "allowed_origins"?',
        'Unexpected keyword argument "http_denial" for "chat_router"; '
        'did you mean "http_denials"?',
        'Unexpected keyword argument "auth_timout" for "create_app"; '
        'did you mean "auth_timeout"?',
        'Argument "rate_limit" to "chat_app" has incompatible type "str"; '
        'expected "float | None"',
        'Unexpected keyword argument "outbox_max_messages" for "chat_app"',
        'Unexpected keyword argument "close_timout" for "ChatOptions"; '
        'did you mean "close_timeout"?',
    ], result.stdout + result.stderr
    # The last two calls are right: no error on their lines.
    assert max(lines) <= 16, result.stdout


# -- run-time checks, for callers without a type checker ---------------------------


def test_an_unknown_option_is_named_with_the_known_ones(adapter: str) -> None:
    options: dict[str, Any] = {"rate_limt": 5}
    with pytest.raises(ConfigurationError) as info:
        build(adapter, ConnectionManager(), **options)
    known = ", ".join(sorted(f.name for f in dataclasses.fields(ChatOptions) if f.init))
    assert info.value.detail == f"unknown option(s) rate_limt; known: {known}"


@pytest.mark.parametrize("name", sorted(MOVED_TO_MANAGER))
def test_an_outbox_option_says_it_is_set_on_the_manager(
    adapter: str, name: str
) -> None:
    moved: dict[str, Any] = {name: "drop_newest" if name == "overflow" else 64}
    with pytest.raises(ConfigurationError) as info:
        build(adapter, ConnectionManager(), **moved)
    assert info.value.detail == (
        f"{name} is set on the manager, which owns the outboxes: "
        f"ConnectionManager({name}=...), not on the endpoint (since wschat 0.2)"
    )


def test_options_md_shows_the_error_as_raised() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "options.md").read_text()
    with pytest.raises(ConfigurationError) as info:
        ChatOptions.from_kwargs(outbox_max_messages=64)
    assert f"{type(info.value).__module__}.ConfigurationError: {info.value}\n" in page


def test_outbox_options_given_to_chat_options_say_where_they_went() -> None:
    moved: dict[str, Any] = {"outbox_max_bytes": 1024, "overflow": "close"}
    with pytest.raises(ConfigurationError) as info:
        ChatOptions(**moved)
    assert info.value.detail == (
        "outbox_max_bytes, overflow are set on the manager, which owns the "
        "outboxes: ConnectionManager(outbox_max_bytes=..., overflow=...), not on "
        "the endpoint (since wschat 0.2)"
    )
    assert {"outbox_max_messages", "outbox_max_bytes", "overflow"} == MOVED_TO_MANAGER
    assert not MOVED_TO_MANAGER & {f.name for f in dataclasses.fields(ChatOptions)}


def test_options_must_be_chat_options(adapter: str) -> None:
    wrong: Any = {"rate_limit": 5}
    with pytest.raises(ConfigurationError) as info:
        build(adapter, ConnectionManager(), wrong)
    assert info.value.detail == (
        "options must be a ChatOptions; got dict (pass the options as keyword "
        "arguments, or as ChatOptions(...))"
    )


# -- None where the default is meant -----------------------------------------------


def test_allowed_origins_none_is_the_default() -> None:
    assert ChatOptions(allowed_origins=None) == ChatOptions()
    assert ChatOptions(allowed_origins=None).allowed_origins == ()
    assert ChatOptions(allowed_origins=None).origin_policy == OriginPolicy()
    base = ChatOptions(allowed_origins=["https://a.example"])
    assert ChatOptions.from_kwargs(base, allowed_origins=None) == ChatOptions()


async def test_allowed_origins_none_through_every_adapter(adapter: str) -> None:
    """0.1 raised TypeError at startup; None is now the default policy: the page's
    own origin and clients without one pass, any other origin gets a bare 403."""
    app = build(adapter, ConnectionManager(), allowed_origins=None)
    async with ChatTestClient(app, secret=SECRET) as client:
        # The kit's requests are to Host testserver.
        async with client.connect(
            "lobby", user="alice", origin="http://testserver"
        ) as alice:
            assert isinstance(await alice.receive(), Ready)
        async with client.connect("lobby", user="bob") as bob:
            assert isinstance(await bob.receive(), Ready)
        with pytest.raises(ChatDenied) as denied:
            async with client.connect(
                "lobby", user="eve", origin="https://evil.example"
            ):
                pass
        assert denied.value.status == 403


@pytest.mark.parametrize(
    "name",
    ["allow_missing_origin", "allow_same_origin", "http_denials", "first_message_auth"],
)
@pytest.mark.parametrize("value", [None, "false", "true", 0, 1])
def test_switches_are_true_or_false(name: str, value: Any) -> None:
    # "false" is a true value, and None a false one: either would silently flip
    # allow_missing_origin or allow_same_origin, whose default is True.
    with pytest.raises(ConfigurationError) as info:
        ChatOptions(**{name: value})
    assert info.value.detail == f"{name} must be True or False; got {value!r}"
    for flag in (True, False):
        given: dict[str, Any] = {name: flag}
        assert getattr(ChatOptions(**given), name) is flag


def test_options_where_none_means_something_else_keep_it() -> None:
    options = ChatOptions(
        authorize=None, hooks=None, rate_limit=None, max_pending_auth=None
    )
    assert options.rate_limit is None  # no limit, not the default 100
    assert options.max_pending_auth is None  # no cap, not the default 1000
    # Where None could only be a mistake, it is refused (test_numeric_options).
    with pytest.raises(ConfigurationError, match="max_message_bytes must be"):
        ChatOptions(max_message_bytes=None)  # type: ignore[arg-type]


# -- options and keywords together -------------------------------------------------


async def test_options_and_keywords_reach_the_endpoint(adapter: str) -> None:
    """A ``ChatOptions`` is used as given; keywords replace its fields. The outbox
    cap the client is told is the manager's."""
    shared = ChatOptions(max_message_bytes=4096, rate_limit=None)
    manager = ConnectionManager(outbox_max_messages=77)
    for kwargs, expected in [({}, 4096), ({"max_message_bytes": 2048}, 2048)]:
        app = build(adapter, manager, shared, **kwargs)
        async with (
            ChatTestClient(app, secret=SECRET) as client,
            client.connect("lobby", user="alice") as alice,
        ):
            ready = await alice.receive()
            assert isinstance(ready, Ready)
            assert ready.limits == {
                "max_message_bytes": expected,
                "outbox_max_messages": 77,
            }
    assert shared.max_message_bytes == 4096  # not changed by the keywords


def test_from_kwargs() -> None:
    base = ChatOptions(rate_limit=5.0)
    assert ChatOptions.from_kwargs(base) is base
    assert ChatOptions.from_kwargs() == ChatOptions()
    changed = ChatOptions.from_kwargs(base, rate_burst=7)
    assert (changed.rate_limit, changed.rate_burst) == (5.0, 7)
    with pytest.raises(ConfigurationError, match="rate_burst must be"):
        ChatOptions.from_kwargs(base, rate_burst=0)


def test_close_timeout_defaults_to_five_seconds_wherever_it_is_read() -> None:
    # ChatOptions gives it to every served connection; Connection.open has the
    # same default for a connection served some other way.
    from wschat.connection import DEFAULT_CLOSE_TIMEOUT

    assert ChatOptions().close_timeout == DEFAULT_CLOSE_TIMEOUT == 5.0
