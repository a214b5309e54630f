"""The Origin policy: same-origin, exact allowlist, "*", missing and hostile origins."""

from __future__ import annotations

import pytest

from wschat.errors import ConfigurationError
from wschat.options import ChatOptions
from wschat.origin import OriginPolicy, normalize_origin


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("https://app.example.com", "https://app.example.com:443"),
        ("https://app.example.com:443", "https://app.example.com:443"),
        ("https://app.example.com/", "https://app.example.com:443"),
        ("http://app.example.com", "http://app.example.com:80"),
        ("HTTP://App.Example.COM:8080", "http://app.example.com:8080"),
        ("  https://a.example  ", "https://a.example:443"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("http://127.0.0.1", "http://127.0.0.1:80"),
    ],
)
def test_normalize(raw: str, normal: str) -> None:
    assert normalize_origin(raw) == normal


@pytest.mark.parametrize(
    "raw",
    [
        "null",
        "",
        "garbage",
        "file://",
        "ftp://example.com",
        "ws://example.com",
        "https://",
        "https://example.com/path",
        "https://example.com?x=1",
        "https://example.com#frag",
        "https://user@example.com",
        "https://example.com:99999",
        "https://example.com:port",
        "//example.com",
        "https://[::1",
    ],
)
def test_normalize_refuses_non_origins(raw: str) -> None:
    assert normalize_origin(raw) is None


def test_same_origin_with_default_ports() -> None:
    policy = OriginPolicy.build()
    assert policy.check("http://chat.example", "chat.example", "ws")
    assert policy.check("http://chat.example:80", "chat.example", "ws")
    assert policy.check("http://chat.example", "chat.example:80", "ws")
    assert policy.check("https://chat.example", "chat.example", "wss")
    assert policy.check("https://chat.example", "chat.example:443", "wss")
    assert policy.check("http://localhost:8000", "localhost:8000", "ws")
    assert policy.check("http://CHAT.example", "chat.EXAMPLE", "ws")


def test_same_origin_requires_same_scheme_host_and_port() -> None:
    policy = OriginPolicy.build()
    # A page on https cannot ride on a ws:// (plain) socket's same-origin pass.
    assert not policy.check("https://chat.example", "chat.example", "ws")
    assert not policy.check("http://chat.example", "chat.example", "wss")
    assert not policy.check("http://chat.example:8080", "chat.example", "ws")
    assert not policy.check("http://evil.example", "chat.example", "ws")
    assert not policy.check("http://chat.example.evil.com", "chat.example", "ws")
    assert not policy.check("http://evilchat.example", "chat.example", "ws")


def test_same_origin_can_be_switched_off() -> None:
    policy = OriginPolicy.build(allow_same_origin=False)
    assert not policy.check("http://chat.example", "chat.example", "ws")


def test_same_origin_without_host_header_is_refused() -> None:
    policy = OriginPolicy.build()
    assert not policy.check("http://chat.example", None, "ws")
    assert not policy.check("http://chat.example", "", "ws")


def test_allowlist_is_exact_scheme_host_port() -> None:
    policy = OriginPolicy.build(["https://app.example.com", "http://localhost:3000"])
    host = "api.example.com"
    assert policy.check("https://app.example.com", host, "wss")
    assert policy.check("https://app.example.com:443", host, "wss")
    assert policy.check("https://APP.example.com", host, "wss")
    assert policy.check("http://localhost:3000", host, "wss")
    assert not policy.check("http://app.example.com", host, "wss")
    assert not policy.check("https://app.example.com:8443", host, "wss")
    assert not policy.check("https://evil.app.example.com", host, "wss")
    assert not policy.check("https://app.example.com.evil.io", host, "wss")
    assert not policy.check("http://localhost:3001", host, "wss")
    assert not policy.check("http://localhost", host, "wss")


def test_star_allows_every_origin_even_garbage() -> None:
    policy = OriginPolicy.build(["*"])
    assert policy.check("https://anything.example", "chat.example", "ws")
    assert policy.check("null", "chat.example", "ws")


@pytest.mark.parametrize(
    "origin", ["null", "garbage", "", "file://", "https://example.com/x"]
)
def test_null_and_garbage_origins_are_refused(origin: str) -> None:
    policy = OriginPolicy.build(["https://example.com"])
    assert not policy.check(origin, "example.com", "wss")


def test_missing_origin_allowed_or_refused_by_option() -> None:
    assert OriginPolicy.build().check(None, "chat.example", "ws")
    refusing = OriginPolicy.build(allow_missing=False)
    assert not refusing.check(None, "chat.example", "ws")
    # The allowlist does not change the missing-origin decision.
    assert not OriginPolicy.build(["*"], allow_missing=False).check(None, "h", "ws")


def test_config_errors() -> None:
    with pytest.raises(ConfigurationError, match="list"):
        OriginPolicy.build("https://app.example.com")
    for bad in ["app.example.com", "https://app.example.com/chat", "null", "", "*.x"]:
        with pytest.raises(ConfigurationError) as info:
            OriginPolicy.build([bad])
        assert repr(bad) in str(info.value)


def test_chat_options_build_the_policy() -> None:
    options = ChatOptions(
        allowed_origins=["https://app.example.com"], allow_missing_origin=False
    )
    assert options.origin_policy.check("https://app.example.com", "x", "wss")
    assert not options.origin_policy.check(None, "x", "wss")
    with pytest.raises(ConfigurationError):
        ChatOptions(allowed_origins=["not an origin"])


@pytest.mark.parametrize(
    "entries",
    [["*", "garbage"], ["garbage", "*"], ["*", "https://ok.example", "app.example"]],
)
def test_star_does_not_excuse_an_entry_that_is_not_an_origin(
    entries: list[str],
) -> None:
    with pytest.raises(ConfigurationError) as info:
        OriginPolicy.build(entries)
    bad = next(e for e in entries if e != "*" and "://" not in e)
    assert str(info.value) == (
        f"configuration_error: allowed_origins entry {bad!r} is not an origin like "
        "'https://app.example.com' (scheme, host, optional port, no path)"
    )


def test_every_entry_after_star_is_normalized() -> None:
    policy = OriginPolicy.build(["*", "HTTPS://App.Example.com"])
    assert policy.allowed == frozenset({"*", "https://app.example.com:443"})


def test_same_origin_with_an_http_scheme_in_the_scope() -> None:
    # Some servers report the scheme of the HTTP request: it is taken as is.
    policy = OriginPolicy.build()
    assert policy.check("http://chat.example", "chat.example", "http")
    assert policy.check("https://chat.example", "chat.example", "https")
    assert not policy.check("https://chat.example", "chat.example", "http")
