"""The logging filter on tracebacks, and on wschat's own logger.

A hook's or verifier's exception can carry a token in its text (an HTTP client's
error names the URL it called, ``?token=`` included); wschat logs such tracebacks,
so its own logger redacts them (tests/e2e/test_e2e_token_logs.py through real
servers).
"""

from __future__ import annotations

import io
import logging
import sys

import pytest

from wschat import endpoint, logfilter
from wschat.logfilter import RedactingFilter, remove_filter

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def raised(text: str) -> logging.LogRecord:
    try:
        try:
            raise ValueError(f"inner {text}")
        except ValueError as inner:
            raise RuntimeError(f"for url 'https://idp.test/i?token={text}'") from inner
    except RuntimeError:
        exc_info = sys.exc_info()
    return logging.LogRecord("wschat", logging.ERROR, __file__, 1, "hook", (), exc_info)


def formatted(rec: logging.LogRecord) -> str:
    return logging.Formatter("%(message)s").format(rec)


def test_a_traceback_that_holds_a_token_is_kept_redacted() -> None:
    rec = raised(JWT)
    assert RedactingFilter().filter(rec) is True
    assert rec.exc_info is None  # no formatter can render the original again
    assert rec.exc_text is not None
    text = formatted(rec)
    assert JWT not in text
    assert "c2lnbmF0dXJlLXNpZ25hdHVyZQ" not in text
    assert "ValueError: inner [redacted]" in text
    assert "RuntimeError: for url 'https://idp.test/i?token=[redacted]'" in text
    assert "Traceback (most recent call last)" in text


def test_a_token_named_in_a_pair_is_redacted_even_if_not_a_jwt() -> None:
    rec = raised("opaque-abc123")
    RedactingFilter().filter(rec)
    assert "token=[redacted]" in formatted(rec)
    assert "?token=opaque-abc123" not in formatted(rec)


def test_a_clean_traceback_keeps_the_exception() -> None:
    try:
        raise KeyError("room1")
    except KeyError:
        clean = logging.LogRecord(
            "wschat", logging.ERROR, __file__, 1, "hook", (), sys.exc_info()
        )
    RedactingFilter().filter(clean)
    assert clean.exc_info is not None
    assert clean.exc_text is None  # formatted by the handler, as usual
    assert "KeyError: 'room1'" in formatted(clean)


def test_stack_info_is_redacted() -> None:
    rec = logging.LogRecord("wschat", logging.ERROR, __file__, 1, "m", (), None)
    rec.stack_info = f'Stack (most recent call last):\n  verify("{JWT}")'
    RedactingFilter().filter(rec)
    assert rec.stack_info is not None
    assert JWT not in rec.stack_info


def test_wschat_logger_has_the_filter_and_remove_filter_leaves_it() -> None:
    assert endpoint.log.name == logfilter.WSCHAT_LOGGER == "wschat"
    own = [f for f in endpoint.log.filters if isinstance(f, RedactingFilter)]
    assert len(own) == 1
    remove_filter()  # the server loggers' filter (tests/conftest.py does it too)
    assert own == [f for f in endpoint.log.filters if isinstance(f, RedactingFilter)]
    assert logfilter.install_own_filter() is own[0]  # idempotent


def test_wschat_lines_keep_their_fingerprints() -> None:
    rec = logging.LogRecord(
        "wschat",
        logging.WARNING,
        __file__,
        1,
        "wschat refused connection: chat=%r code=%d reason=%r token=%s client=%s",
        ("room1", 4401, "token_invalid: bad signature", "sha256:9f86d081884c", "ip:1"),
        None,
    )
    RedactingFilter().filter(rec)
    assert rec.getMessage() == (
        "wschat refused connection: chat='room1' code=4401 "
        "reason='token_invalid: bad signature' token=sha256:9f86d081884c client=ip:1"
    )


@pytest.mark.parametrize("level", [logging.ERROR, logging.DEBUG])
def test_through_the_wschat_logger(level: int) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("wschat")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        try:
            raise RuntimeError(f"introspection failed: Bearer {JWT}")
        except RuntimeError:
            logger.log(level, "wschat: the verifier raised", exc_info=True)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    assert JWT not in stream.getvalue()
    assert "RuntimeError: introspection failed: Bearer [redacted]" in stream.getvalue()
