"""The logging filter: what it redacts in free text and records, and its configs."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from contextlib import redirect_stdout
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.common import source_env
from wschat import logfilter
from wschat.logfilter import RedactingFilter, install_filter, redact_text

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        (
            '127.0.0.1:5 - "WebSocket /ws/chat/x/?TOKEN=abc&a=1" 403',
            '127.0.0.1:5 - "WebSocket /ws/chat/x/?TOKEN=[redacted]&a=1" 403',
        ),
        (
            f"< Sec-WebSocket-Protocol: wschat.v1, bearer.{JWT}",
            "< Sec-WebSocket-Protocol: wschat.v1, bearer.[redacted]",
        ),
        (
            "< sec-websocket-protocol: wschat.v1, bearer.short",
            "< sec-websocket-protocol: wschat.v1, bearer.[redacted]",
        ),
        ("< Authorization: Bearer abc.def", "< Authorization: [redacted]"),
        (
            "< proxy-authorization: Basic dXNlcjpwYXNz",
            "< proxy-authorization: [redacted]",
        ),
        ("< Cookie: sid=abc; theme=dark", "< Cookie: [redacted]"),
        ("< X-Auth-Token: abc", "< X-Auth-Token: [redacted]"),
        ("sent Bearer abcdEFGH12 along", "sent Bearer [redacted] along"),
        ("Basic dXNlcjpwYXNz", "Basic [redacted]"),
        (f"decoded {JWT} here", "decoded [redacted] here"),
        (
            "scope={'query_string': b'%74oken=zzz&x=1', "
            "'headers': [(b'authorization', b'Bearer q'), (b'cookie', b'a=b')]}",
            "scope={'query_string': b'%74oken=[redacted]&x=1', "
            "'headers': [(b'authorization', b'[redacted]'), "
            "(b'cookie', b'[redacted]')]}",
        ),
        (
            """< TEXT '{"type":"auth","token":"plain-secret"}' [40 bytes]""",
            """< TEXT '{"type":"auth","token":"[redacted]"}' [40 bytes]""",
        ),
        (
            "GET /x?jwt=a&access_token=b&auth=c&author=bob HTTP/1.1",
            "GET /x?jwt=[redacted]&access_token=[redacted]&auth=[redacted]"
            "&author=bob HTTP/1.1",
        ),
    ],
)
def test_redact_text(text: str, redacted: str) -> None:
    assert redact_text(text) == redacted
    assert redact_text(redacted) == redacted  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "nothing here",
        "the bearer token is missing; use basic settings",  # prose, not credentials
        "send the subprotocols wschat.v1, bearer.<JWT>",  # a placeholder
        # wschat's own refusal line: the fingerprint is safe by design.
        "wschat refused connection: chat='lobby' code=4401 "
        "reason='token_malformed: not a JWT' token=sha256:9f86d081884c "
        "client=127.0.0.1:5",
        "token=none page=2",
    ],
)
def test_redact_text_leaves_these_alone(text: str) -> None:
    assert redact_text(text) is text


@given(st.text(alphabet="tokenauthjwbr=&?:. eyJ%Bb-_'\"123[]", max_size=60))
def test_redact_text_is_idempotent(text: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once


def record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("x", logging.INFO, __file__, 1, msg, args, None)


def test_filter_rewrites_the_message_once_formatted() -> None:
    rec = record('%s - "WebSocket %s" [accepted]', "1.2.3.4:5", "/ws?token=" + JWT)
    assert RedactingFilter().filter(rec) is True
    assert rec.getMessage() == '1.2.3.4:5 - "WebSocket /ws?token=[redacted]" [accepted]'
    # The arguments are redacted one by one: formatters that read them still can.
    assert rec.args == ("1.2.3.4:5", "/ws?token=[redacted]")


def test_filter_leaves_a_clean_record_as_it_is() -> None:
    rec = record("connection %s", "open")
    assert RedactingFilter().filter(rec) is True
    assert (rec.msg, rec.args) == ("connection %s", ("open",))


def test_filter_passes_a_malformed_record_on() -> None:
    rec = record("%d", "not a number")
    assert RedactingFilter().filter(rec) is True
    assert rec.msg == "%d"


def test_filter_on_a_logger(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("wschat.test.redact")
    filt = RedactingFilter()
    logger.addFilter(filt)
    try:
        with caplog.at_level(logging.INFO, logger="wschat.test.redact"):
            logger.info("< Authorization: Bearer %s", JWT)
    finally:
        logger.removeFilter(filt)
    assert JWT not in caplog.text
    assert "< Authorization: [redacted]" in caplog.text


def test_install_filter_is_idempotent() -> None:
    names = ("wschat.test.a", "wschat.test.b")
    try:
        first = install_filter(names)
        second = install_filter(names)
        assert first is second
        for name in names:
            filters = logging.getLogger(name).filters
            assert [f for f in filters if isinstance(f, RedactingFilter)] == [first]
    finally:
        for name in names:
            logging.getLogger(name).filters.clear()


def test_install_filter_defaults_cover_both_servers() -> None:
    assert set(logfilter.SERVER_LOGGERS) >= {
        "uvicorn.error",
        "uvicorn.access",
        "uvicorn.asgi",
        "hypercorn.error",
        "hypercorn.access",
    }


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_main_prints_the_config(server: str) -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert logfilter.main([server]) == 0
    config = json.loads(out.getvalue())
    expected = {"uvicorn": logfilter.UVICORN_LOG_CONFIG}.get(
        server, logfilter.HYPERCORN_LOG_CONFIG
    )
    assert config == expected
    assert config["filters"] == {
        "wschat_redact": {"()": "wschat.logfilter.RedactingFilter"}
    }
    for handler in config["handlers"].values():
        assert handler["filters"] == ["wschat_redact"]


def test_main_usage() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert logfilter.main([]) == 2
        assert logfilter.main(["nginx"]) == 2
    assert "usage: python -m wschat.logfilter uvicorn|hypercorn" in out.getvalue()


def test_uvicorns_access_formatter_still_finds_its_arguments() -> None:
    """uvicorn's access formatter unpacks the record's five arguments."""
    from uvicorn.logging import AccessFormatter

    rec = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/api/me?access_token={JWT}&page=2", "1.1", 200),
        None,
    )
    assert RedactingFilter().filter(rec) is True
    formatter = AccessFormatter(
        '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
        use_colors=False,
    )
    line = formatter.format(rec)
    assert JWT not in line
    assert '"GET /api/me?access_token=[redacted]&page=2 HTTP/1.1" 200' in line


def test_hypercorns_access_atoms_are_redacted_in_place() -> None:
    from hypercorn.logging import AccessLogAtoms

    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/api/me",
        "query_string": b"access_token=" + JWT.encode(),
        "http_version": "1.1",
        "scheme": "http",
        "client": ("127.0.0.1", 5),
        "headers": [
            (b"authorization", b"Bearer abc"),
            (b"cookie", b"sid=abc"),
            (b"user-agent", b"test"),
        ],
    }
    atoms = AccessLogAtoms(scope, {"status": 200, "headers": []}, 0.01)  # type: ignore[arg-type]
    fmt = '"%(R)s" %(s)s %({authorization}i)s %({Cookie}i)s %(a)s'
    rec = logging.LogRecord(
        "hypercorn.access", logging.INFO, "", 1, fmt, (atoms,), None
    )
    assert RedactingFilter().filter(rec) is True
    line = logging.Formatter("%(message)s").format(rec)
    assert (
        line
        == '"GET /api/me?access_token=[redacted] 1.1" 200 [redacted] [redacted] test'
    )


def test_a_token_split_between_format_and_argument() -> None:
    rec = record("token=%s for %s", "plain-secret", "alice")
    assert RedactingFilter().filter(rec) is True
    assert rec.getMessage() == "token=[redacted] for alice"
    assert rec.args is None


def test_bytes_and_other_arguments() -> None:
    rec = record("%s %d %r", b"/x?jwt=abc", 3, {"k": 1})
    assert RedactingFilter().filter(rec) is True
    assert rec.args == (b"/x?jwt=[redacted]", 3, {"k": 1})


def test_hypercorn_takes_the_config_as_logconfig_dict() -> None:
    """logging.md: ``HYPERCORN_LOG_CONFIG`` as hypercorn's ``logconfig_dict``."""
    import copy

    from hypercorn.config import Config
    from hypercorn.logging import Logger

    names = ("hypercorn.error", "hypercorn.access", "wschat")
    saved = {
        n: (
            logging.getLogger(n).handlers[:],
            logging.getLogger(n).level,
            logging.getLogger(n).propagate,
        )
        for n in names
    }
    try:
        config = Config()
        config.accesslog = "-"
        config.logconfig_dict = copy.deepcopy(logfilter.HYPERCORN_LOG_CONFIG)
        Logger(config)
        for name in names:
            handlers = logging.getLogger(name).handlers
            assert handlers, name
            for handler in handlers:
                assert any(isinstance(f, RedactingFilter) for f in handler.filters)
    finally:
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


# -- the adapters install it when built; remove_filter opts out ------------------------

BUILD = {
    "chat_app": (
        "from wschat.asgi import chat_app\nchat_app(ConnectionManager(), verifier)\n"
    ),
    "chat_routes": (
        "from wschat.starlette import chat_routes\n"
        "chat_routes(ConnectionManager(), verifier)\n"
    ),
    "chat_router": (
        "from wschat.fastapi import chat_router\n"
        "chat_router(ConnectionManager(), verifier)\n"
    ),
    "endpoint": (
        "from wschat import ChatOptions\n"
        "from wschat.endpoint import ChatEndpoint\n"
        "ChatEndpoint(ConnectionManager(), verifier, ChatOptions())\n"
    ),
}
SETUP = (
    "import logging\n"
    "from wschat import ConnectionManager, TokenVerifier\n"
    "from wschat.logfilter import SERVER_LOGGERS, RedactingFilter, remove_filter\n"
    "verifier = TokenVerifier('k' * 32, algorithms=['HS256'])\n"
)
REPORT = (
    "print(sorted(n for n in SERVER_LOGGERS if any(isinstance(f, RedactingFilter)"
    " for f in logging.getLogger(n).filters)))\n"
)


def filtered_loggers(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter: the server loggers that have the filter."""
    run = subprocess.run(
        [sys.executable, "-c", SETUP + code + REPORT],
        capture_output=True,
        text=True,
        env=source_env(),
        check=False,
    )
    assert run.returncode == 0, run.stderr
    names: list[str] = json.loads(run.stdout.replace("'", '"'))
    return names


@pytest.mark.parametrize("adapter", ["chat_app", "chat_routes", "chat_router"])
def test_building_an_adapter_installs_the_filter_on_every_server_logger(
    adapter: str,
) -> None:
    assert filtered_loggers(BUILD[adapter]) == sorted(logfilter.SERVER_LOGGERS)
    # Once, however many adapters are built.
    twice = (
        BUILD[adapter]
        + BUILD[adapter]
        + (
            "assert all(len(logging.getLogger(n).filters) == 1"
            " for n in SERVER_LOGGERS)\n"
        )
    )
    assert filtered_loggers(twice) == sorted(logfilter.SERVER_LOGGERS)


def test_a_bare_endpoint_installs_nothing() -> None:
    # An adapter of your own (docs/adapters.md) calls install_filter() itself.
    assert filtered_loggers(BUILD["endpoint"]) == []


@pytest.mark.parametrize("adapter", ["chat_app", "chat_routes", "chat_router"])
def test_remove_filter_before_or_after_building_opts_out(adapter: str) -> None:
    assert filtered_loggers("remove_filter()\n" + BUILD[adapter]) == []
    after = BUILD[adapter] + "remove_filter()\n" + BUILD[adapter]
    assert filtered_loggers(after) == []


def test_remove_filter_leaves_other_filters() -> None:
    code = (
        "other = logging.Filter('x')\n"
        "logging.getLogger('uvicorn.error').addFilter(other)\n"
        + BUILD["chat_app"]
        + "remove_filter()\n"
        "assert logging.getLogger('uvicorn.error').filters == [other]\n"
    )
    assert filtered_loggers(code) == []
