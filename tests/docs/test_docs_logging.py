"""docs/logging.md is tested: each promise it makes about logs matches the code.

The redaction itself is checked on real servers in test_e2e_redaction.py (INFO, every
path shape and name) and test_e2e_debug_logs.py (debug and trace, with the shipped
config and with ``install_filter``); the throttle on a fake clock in
test_refusal_log.py. Here: the documented lines, rules, lists and snippets.
"""

from __future__ import annotations

import copy
import logging
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from tests.support.common import source_env
from tests.support.e2e import LogRecorder, build_app, client, closed, wait_until
from tests.support.log_servers import Server, running
from wschat import ConnectionManager, logfilter, redact
from wschat.asgi import RedactTokens
from wschat.logfilter import UVICORN_LOG_CONFIG, redact_text
from wschat.redact import is_token_name, redact_headers
from wschat.refusal_log import INTERVAL, RefusalLog

DOC_DIR = Path(__file__).resolve().parents[2] / "docs"
DOC = (DOC_DIR / "logging.md").read_text()


@pytest.fixture
def anyio_backend() -> str:
    """Its one async test talks to real servers with the ``websockets`` client,
    which runs on asyncio only."""
    return "asyncio"


def section(heading: str) -> str:
    start = DOC.index(heading + "\n")
    end = DOC.find("\n#", start + len(heading))
    return DOC[start : end if end != -1 else None]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_the_documented_count_line_is_what_the_throttle_writes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = section("## Refusals are throttled")
    assert "for **10 seconds**" in text
    assert INTERVAL == 10.0
    documented = [
        line for line in blocks(text, "")[0].splitlines() if "more connections" in line
    ]
    now = [0.0]
    log = RefusalLog(logging.getLogger("wschat.docs"), clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="wschat.docs")
    for _ in range(2999):
        log.admit(4401, "token_malformed")
    now[0] = INTERVAL
    log.tick()
    assert [r.getMessage() for r in caplog.records] == documented


def test_the_debug_snippet_makes_every_refusal_visible() -> None:
    text = section("## Refusals are throttled")
    (snippet,) = blocks(text, "python")
    logger = logging.getLogger("wschat")
    level = logger.level
    try:
        exec(snippet, {})
        assert logger.isEnabledFor(logging.DEBUG)
    finally:
        logger.setLevel(level)


def test_the_token_rule_is_the_code() -> None:
    text = section("### What counts as a token")
    first = text.split("\n- ")[1]
    # "... is `auth` or contains `token`, `jwt`, ...: `token`, `TOKEN`, ..."
    rule, examples = first.split(":", 1)
    rule_words = re.findall(r"`([^`]+)`", rule)
    # "percent-decoded (`%74oken` is `token`) and lowercased with `-` read as `_`,
    # is `auth` or contains `token`, `jwt`, ..."
    assert rule_words[:4] == ["%74oken", "token", "-", "_"]
    assert rule_words[4:] == ["auth", *redact.TOKEN_NAME_PARTS]
    assert frozenset({rule_words[4]}) == redact.TOKEN_NAMES
    for name in re.findall(r"`([^`]+)`", examples):
        assert is_token_name(name), name


def test_the_documented_headers_are_redacted() -> None:
    text = section("### What counts as a token")
    line = text.split("\n- ")[3]
    names = re.findall(r"`([A-Z][\w-]+)`", line)
    assert names == [
        "Authorization",
        "Proxy-Authorization",
        "Cookie",
        "X-Auth-Token",
        "X-Api-Key",
        "Sec-WebSocket-Protocol",
    ]
    headers = [(n.lower().encode(), b"secret-value") for n in names[:-1]]
    headers.append((b"sec-websocket-protocol", b"wschat.v1, bearer.secret-value"))
    redacted = redact_headers(headers)
    assert redacted is not None
    assert all(b"secret-value" not in value for _, value in redacted)


def test_the_redact_tokens_snippet() -> None:
    text = section("### The rest of your app: `RedactTokens`")
    (snippet,) = blocks(text, "python")
    namespace: dict[str, Any] = {"app": FastAPI()}
    exec(snippet, namespace)
    assert isinstance(namespace["app"], RedactTokens)


def test_install_filter_snippet_and_its_documented_loggers() -> None:
    text = section("### Debug logging and the logging filter")
    snippet = next(b for b in blocks(text, "python") if "install_filter" in b)
    listed = re.search(r"\(`uvicorn`,\s*(.*?)\)", text, re.S)
    assert listed is not None
    names = ["uvicorn", *re.findall(r"`([\w.]+)`", listed.group(1))]
    assert tuple(names) == logfilter.SERVER_LOGGERS
    saved = {n: list(logging.getLogger(n).filters) for n in names}
    try:
        exec(textwrap.dedent(snippet), {})
        for name in names:
            assert any(
                isinstance(f, logfilter.RedactingFilter)
                for f in logging.getLogger(name).filters
            )
    finally:
        for name, filters in saved.items():
            logging.getLogger(name).filters[:] = filters


def test_the_remove_filter_snippet_opts_out_of_the_adapters_filter() -> None:
    text = section("### Debug logging and the logging filter")
    (snippet,) = [b for b in blocks(text, "python") if "remove_filter" in b]
    code = (
        "import logging\n"
        "from wschat import ConnectionManager, TokenVerifier\n"
        "from wschat.fastapi import chat_router\n"
        "from wschat.logfilter import SERVER_LOGGERS, RedactingFilter\n"
        "def filtered():\n"
        "    return [n for n in SERVER_LOGGERS if any(isinstance(f, RedactingFilter)"
        " for f in logging.getLogger(n).filters)]\n"
        "verifier = TokenVerifier('k' * 32, algorithms=['HS256'])\n"
        "chat_router(ConnectionManager(), verifier)\n"
        "assert filtered() == list(SERVER_LOGGERS), filtered()\n"
        + textwrap.dedent(snippet)
        + "chat_router(ConnectionManager(), verifier)\n"
        "assert filtered() == [], filtered()\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=source_env()
    )
    assert run.returncode == 0, run.stderr


def test_the_documented_commands_are_the_tested_ones() -> None:
    text = section("### Debug logging and the logging filter")
    commands = [
        line.strip()
        for b in blocks(text, "bash")
        for line in b.splitlines()
        if line.strip()
    ]
    assert commands == [
        "python -m wschat.logfilter uvicorn > log.json",
        "uvicorn app:app --log-config log.json --log-level debug",
        "python -m wschat.logfilter hypercorn > log.json",
        "hypercorn app:app --log-config json:log.json --access-logfile -",
    ]
    # test_e2e_debug_logs.py runs the same commands (its app and port aside).
    source = (
        Path(__file__).resolve().parents[1] / "e2e" / "test_e2e_debug_logs.py"
    ).read_text()
    for flag in ('"--log-config"', '"--access-logfile", "-"', 'f"json:{config}"'):
        assert flag in source


def test_the_uvicorn_config_is_uvicorns_own_plus_the_filter() -> None:
    from uvicorn.config import LOGGING_CONFIG

    ours = copy.deepcopy(UVICORN_LOG_CONFIG)
    assert ours.pop("filters") == {
        "wschat_redact": {"()": "wschat.logfilter.RedactingFilter"}
    }
    for handler in ours["handlers"].values():
        assert handler.pop("filters") == ["wschat_redact"]
    assert ours["loggers"].pop("wschat") == {
        "handlers": ["default"],
        "level": "INFO",
        "propagate": False,
    }
    assert ours == LOGGING_CONFIG


def test_the_filter_keeps_fingerprints_and_redacts_the_documented_forms() -> None:
    line = (
        "wschat refused connection: chat='lobby' code=4401 reason='token_malformed: "
        "x' token=sha256:9f86d081884c client=127.0.0.1:54321"
    )
    assert redact_text(line) is line
    for text in (
        "< authorization: Bearer abcDEF123456",
        "< proxy-authorization: Basic dXNlcjpwYXNz",
        "< cookie: sid=abc",
        "< x-auth-token: abc",
        "< sec-websocket-protocol: wschat.v1, bearer.abc",
        "(b'authorization', b'Bearer abc')",
        "/x?access_token=abc",
        '{"token": "abc"}',
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln",
    ):
        assert "abc" not in redact_text(text).replace("[redacted]", ""), text


@pytest.mark.e2e
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("uvicorn-sansio", ("[accepted]", "connection open")),
        ("uvicorn-websockets", ("[accepted]", "connection open", "connection closed")),
    ],
)
async def test_uvicorn_writes_its_own_lines_for_each_refused_handshake(
    server: Server, expected: tuple[str, ...]
) -> None:
    """logging.md, "Under a flood": lines wschat cannot throttle."""
    text = " ".join(section("### Under a flood").split())
    assert "uvicorn itself writes two lines for every refused handshake" in text
    assert "a third, `connection closed`, with `--ws websockets`" in text
    wanted = ("[accepted]", "connection open", "connection closed")

    def per_socket() -> list[str]:
        lines = [r.getMessage() for r in logs.of("uvicorn.error")]
        return [line for line in lines if line.endswith(wanted)]

    async def done() -> bool:
        return len(per_socket()) >= len(expected)

    app = build_app("asgi", ConnectionManager())
    with LogRecorder(("uvicorn.error",)) as logs, running(server, app) as srv:
        async with client(f"{srv.ws}/ws/chat/room1?token=junk") as ws:
            assert (await closed(ws)).code == 4401
        await wait_until(done, explain=lambda: str(per_socket()))
    for line, ending in zip(per_socket(), expected, strict=False):
        assert line.endswith(ending), per_socket()


def test_troubleshooting_names_the_count_line_and_the_debug_switch() -> None:
    page = (DOC_DIR / "troubleshooting.md").read_text()
    start = page.index("## The server log shows fewer refusals")
    text = " ".join(page[start : page.index("\n## ", start + 3)].split())
    assert "the next ones in the following 10 s are only counted" in text
    assert "`wschat refused N more connections with code=... reason=...`" in text
    assert "set the `wschat` logger to DEBUG" in text
    # The line RefusalLog writes starts the way the page says.
    now = [0.0]
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("wschat.docs.troubleshooting")
    logger.addHandler(Keep())
    logger.propagate = False
    log = RefusalLog(logger, clock=lambda: now[0])
    log.admit(4401, "token_malformed")
    log.admit(4401, "token_malformed")
    now[0] = INTERVAL
    log.tick()
    assert records[0].startswith(
        "wschat refused 1 more connections with code=4401 reason=token_malformed"
    )
