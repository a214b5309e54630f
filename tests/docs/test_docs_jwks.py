"""docs/jwks.md is tested: its examples run, its tables are what the code does.

- Every Python block runs (the provider URL replaced by a local JWKS server where a
  fetch happens).
- Each provider pattern, filled in, builds a verifier.
- The options table lists every argument with its real default.
- Each reason in "What the client sees" is produced, word for word.
- The health example has the keys ``health()`` returns.
- Fetches go through the proxy the environment names; log lines carry no query.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.jwks import FakeClock, JwksServer, jwk_of, rsa_key, sign
from wschat import JwksVerifier
from wschat.errors import ConfigurationError, WSChatError

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "jwks.md"
BLOCKS = re.compile(r"```(python|json)\n(.*?)```", re.DOTALL)

pytestmark = pytest.mark.anyio


def section(heading: str) -> str:
    text = PAGE.read_text()
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else None]


def blocks(kind: str) -> list[str]:
    return [body for lang, body in BLOCKS.findall(PAGE.read_text()) if lang == kind]


def table(heading: str) -> list[list[str]]:
    rows = []
    for line in section(heading).splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows[1:]


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    with JwksServer([jwk_of(rsa_key("one"), "k1")]) as server:
        yield server


# -- the examples run -------------------------------------------------------------


def test_the_page_has_the_examples_this_test_runs() -> None:
    assert len(blocks("python")) == 3
    assert len(blocks("json")) == 1


def test_the_first_example_builds_a_verifier_without_fetching() -> None:
    namespace: dict[str, Any] = {}
    exec(blocks("python")[0], namespace)
    verifier = namespace["verifier"]
    assert isinstance(verifier, JwksVerifier)
    assert verifier.algorithms == ("RS256",)
    assert verifier.stats().last_fetch == "never"


async def test_the_lifespan_example_fetches_at_startup_and_fails_fast(
    jwks: JwksServer,
) -> None:
    verifier = JwksVerifier(jwks.url, algorithms=["RS256"])
    namespace: dict[str, Any] = {"verifier": verifier}
    exec(blocks("python")[1], namespace)
    app = namespace["app"]
    async with app.router.lifespan_context(app):
        assert verifier.stats().keys == 1
    jwks.stop()
    broken = JwksVerifier(jwks.url, algorithms=["RS256"])
    namespace = {"verifier": broken}
    exec(blocks("python")[1], namespace)
    app = namespace["app"]
    with pytest.raises(WSChatError, match=r"failed: .*Connection refused"):
        async with app.router.lifespan_context(app):
            pass


async def test_the_prepare_example_is_what_verifies(jwks: JwksServer) -> None:
    source = "async def check(verifier, token):\n" + textwrap.indent(
        blocks("python")[2] + "return principal\n", "    "
    )
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    verifier = JwksVerifier(jwks.url, algorithms=["RS256"])
    principal = await namespace["check"](verifier, sign(rsa_key("one"), "k1"))
    assert principal.user_id == "alice"
    assert jwks.requests == 1


async def test_the_health_example_has_the_keys_health_returns(
    jwks: JwksServer,
) -> None:
    verifier = JwksVerifier(jwks.url, algorithms=["RS256"])
    await verifier.refresh()
    shown = json.loads(blocks("json")[0])
    health = verifier.health()
    assert shown.keys() == health.keys()
    assert (health["kind"], health["status"], health["healthy"]) == (
        "jwks",
        "ok",
        True,
    )


# -- the provider patterns ------------------------------------------------------------


def fill(pattern: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: f"my{m.group(1).lower()}", pattern)


def first_code(cell: str) -> str:
    match = re.search(r"`([^`]+)`", cell)
    assert match, cell
    return match.group(1)


PROVIDERS = table("## Common identity providers")


def test_the_provider_table_names_the_six_providers() -> None:
    names = {row[0] for row in PROVIDERS}
    for name in ("Auth0", "Okta", "Keycloak", "Entra ID", "Google", "Cognito"):
        assert any(name in n for n in names), name
    assert "**patterns to fill in**" in section("## Common identity providers")


@pytest.mark.parametrize("row", PROVIDERS, ids=[r[0] for r in PROVIDERS])
def test_each_provider_pattern_filled_in_builds_a_verifier(row: list[str]) -> None:
    _, url, issuer, audience, algorithms = row
    issuer_value: Any = first_code(issuer)
    if issuer_value.startswith("["):
        issuer_value = json.loads(issuer_value)
    else:
        issuer_value = fill(issuer_value)
    audience_value = fill(first_code(audience))
    verifier = JwksVerifier(
        fill(first_code(url)),
        algorithms=json.loads(first_code(algorithms)),
        audience=None if "Cognito" in row[0] else audience_value,
        issuer=issuer_value,
    )
    assert verifier.url.startswith("https://")
    assert "{" not in verifier.url


# -- the options table ---------------------------------------------------------------


def test_the_options_table_is_every_argument_with_its_default() -> None:
    rows = {first_code(r[0]): r[1] for r in table("## Options")}
    signature = inspect.signature(JwksVerifier)
    assert list(rows) == list(signature.parameters)
    for name, parameter in signature.parameters.items():
        shown = rows[name]
        if parameter.default is inspect.Parameter.empty:
            assert shown == "required", name
        elif name == "clock":
            assert shown == "`time.monotonic`"
        else:
            assert shown.replace('"', "'") == f"`{parameter.default!r}`", name


def test_an_insecure_url_is_refused_as_the_table_says() -> None:
    with pytest.raises(ConfigurationError, match="uses http"):
        JwksVerifier("http://idp.example.com/jwks", algorithms=["RS256"])
    with pytest.raises(ConfigurationError, match="allow_symmetric_keys=True"):
        JwksVerifier("https://idp.example.com/jwks", algorithms=["HS256"])


# -- what the client sees ---------------------------------------------------------


async def refusal(verifier: JwksVerifier, token: str) -> str:
    await verifier.prepare(token)
    with pytest.raises(WSChatError) as refused:
        verifier.verify(token)
    return f"{refused.value.close_code} {refused.value.reason}"


async def test_every_reason_in_the_client_table_is_what_the_code_says(
    jwks: JwksServer,
) -> None:
    shown = {f"{r[0]} {first_code(r[1])}" for r in table("## What the client sees")}
    seen: set[str] = set()
    clock = FakeClock()
    verifier = JwksVerifier(jwks.url, algorithms=["RS256"], clock=clock)
    # Nothing fetched, and the URL down.
    jwks.stop()
    seen.add(await refusal(verifier, sign(rsa_key("one"), "k1")))
    jwks.start()
    clock.advance(30)
    await verifier.prepare(sign(rsa_key("one"), "k1"))
    # A kid the set does not have, after a fetch made for it.
    clock.advance(30)
    seen.add(await refusal(verifier, sign(rsa_key("two"), "elsewhere")))
    # A new kid 18 s after that fetch: 12 s of cooldown left.
    clock.advance(18)
    seen.add(await refusal(verifier, sign(rsa_key("two"), "brand-new")))
    # No kid at all.
    seen.add(await refusal(verifier, sign(rsa_key("one"), None)))
    # The URL fails, and the kid is not among the keys kept.
    jwks.stop()
    clock.advance(300)
    seen.add(await refusal(verifier, sign(rsa_key("two"), "later")))
    assert seen == shown


# -- the fetch, as the page describes it ------------------------------------------


async def test_the_fetch_goes_through_the_proxy_the_environment_names(
    jwks: JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with JwksServer([jwk_of(rsa_key("one"), "k1")]) as proxy:
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        verifier = JwksVerifier(jwks.url, algorithms=["RS256"])
        with anyio.fail_after(10):
            await verifier.refresh()
        assert (proxy.requests, jwks.requests) == (1, 0)
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        await JwksVerifier(jwks.url, algorithms=["RS256"]).refresh()
        assert (proxy.requests, jwks.requests) == (1, 1)


async def test_log_lines_name_the_url_without_its_query(
    jwks: JwksServer, caplog: pytest.LogCaptureFixture
) -> None:
    jwks.stop()
    caplog.set_level(logging.DEBUG, logger="wschat")
    verifier = JwksVerifier(jwks.url + "?api_key=hunter2", algorithms=["RS256"])
    with pytest.raises(WSChatError) as failed:
        await verifier.refresh()
    assert "hunter2" not in caplog.text
    assert "hunter2" not in str(failed.value)
    assert f"JWKS fetch from http://127.0.0.1:{jwks.port}/.well-known/jwks.json" in (
        caplog.text
    )
