"""Keep tokens out of log records: a logging filter and ready-made server configs.

Imports: the standard library and :mod:`wschat.redact` (pure layer).

Some lines are written before the app runs, so no app can redact them: uvicorn at
``--log-level debug`` (every request header, through the ``websockets`` library) and
``trace`` (every scope), hypercorn's access log with header fields.
:class:`RedactingFilter` rewrites every record it sees (:func:`redact_text`).
The adapters (``chat_app``, ``chat_routes``, ``chat_router``) attach it to the server's
loggers when they are built (:func:`install_server_filter`; :func:`remove_filter`
opts out). :data:`UVICORN_LOG_CONFIG` and :data:`HYPERCORN_LOG_CONFIG` install it on
the handlers instead; ``python -m wschat.logfilter uvicorn > log.json`` writes one for
``uvicorn --log-config log.json``; :func:`install_filter` attaches it from any module.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import unquote_plus

from .redact import REDACTED, is_token_name, redact_headers

__all__ = [
    "HYPERCORN_LOG_CONFIG",
    "SERVER_LOGGERS",
    "UVICORN_LOG_CONFIG",
    "WSCHAT_LOGGER",
    "RedactingFilter",
    "install_filter",
    "install_own_filter",
    "install_server_filter",
    "redact_text",
    "remove_filter",
]


_TEXT_HINT = re.compile(
    r"token|jwt|bearer|secret|passw|api_?key|credential|auth|cookie|eyJ|basic|%",
    re.IGNORECASE,
)
# A JWT (or JWE): base64url of '{"', then at least one more dot-separated part.
_JWT_TEXT = re.compile(r"eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)+")
# ``Bearer <token>``, ``Basic <credentials>`` (RFC 7235 token68: at least 8 characters
# with a digit, a capital or a symbol, so that prose such as "bearer token" stays),
# and the ``bearer.<token>`` subprotocol (not a placeholder such as ``bearer.<JWT>``).
_SCHEME_TEXT = re.compile(
    r"\b((?i:bearer|basic) +(?=[a-z]*[A-Z0-9._~+/=-])(?=[A-Za-z0-9._~+/=-]{8})"
    r"|(?i:bearer)\.(?![<\[]))[A-Za-z0-9._~+/=-]+"
)
# A header line (``< Authorization: ...``, ``Cookie: ...``) to the end of the line.
_HEADER_TEXT = re.compile(
    r"\b((?:proxy-)?authorization|cookie|set-cookie|x-[\w-]*token[\w-]*)"
    r"(:[ \t]*)(?![ \t]|\[redacted\])[^\r\n]+",
    re.IGNORECASE,
)
# The same header as a repr'd ASGI tuple: ``(b'cookie', b'...')``.
_HEADER_TUPLE = re.compile(
    r"""(\(b?['"](?:(?:proxy-)?authorization|cookie|set-cookie|[\w-]*token[\w-]*)"""
    r"""['"],\s*b?(['"]))(?!\[redacted\])[^'"]*""",
    re.IGNORECASE,
)
# ``name=value`` (a query, a form) and ``"name": "value"`` (JSON, a repr'd dict).
_PAIR_TEXT = re.compile(r"(?<![\w%.+-])([\w%.+-]+)=(\[redacted\]|[^&\s\"'#,;)\]}]*)")
_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{12}|none")
_JSON_PAIR_TEXT = re.compile(r"""(["'])([\w-]+)\1(\s*:\s*)(["'])([^"'\\]*)\4""")


def _pair(match: re.Match[str]) -> str:
    name, value = match.group(1), match.group(2)
    if value == REDACTED or _FINGERPRINT.fullmatch(value) is not None:
        # A fingerprint (``token=sha256:9f86d081884c``) is safe to log by design.
        return match.group(0)
    decoded = unquote_plus(name) if "%" in name or "+" in name else name
    return f"{name}={REDACTED}" if is_token_name(decoded) else match.group(0)


def _json_pair(match: re.Match[str]) -> str:
    if not is_token_name(match.group(2)) or match.group(5) == REDACTED:
        return match.group(0)
    quote = match.group(4)
    return f"{match.group(1)}{match.group(2)}{match.group(1)}{match.group(3)}" + (
        f"{quote}{REDACTED}{quote}"
    )


def redact_text(text: str) -> str:
    """Redact every token this module recognises in free text, such as a log line.

    Covers JWTs anywhere, ``Bearer <x>`` and ``bearer.<x>``, ``Authorization:`` and
    ``Cookie:`` header lines (and their ASGI ``(b'name', b'value')`` form),
    ``name=value`` pairs and ``"name": "value"`` pairs with a token name.

    Args:
        text: Any text.

    Returns:
        The text with each secret replaced by ``[redacted]``; the same object when
        there was nothing to replace.
    """
    if _TEXT_HINT.search(text) is None:
        return text
    out = _JWT_TEXT.sub(REDACTED, text)
    out = _SCHEME_TEXT.sub(lambda m: m.group(1) + REDACTED, out)
    out = _HEADER_TEXT.sub(lambda m: m.group(1) + m.group(2) + REDACTED, out)
    out = _HEADER_TUPLE.sub(lambda m: m.group(1) + REDACTED, out)
    out = _PAIR_TEXT.sub(_pair, out)
    out = _JSON_PAIR_TEXT.sub(_json_pair, out)
    return text if out == text else out


def _redact_arg(arg: object) -> object:
    if isinstance(arg, str):
        return redact_text(arg)
    if isinstance(arg, bytes):
        text = arg.decode("latin-1")
        redacted = redact_text(text)
        return arg if redacted is text else redacted.encode("latin-1", "replace")
    return arg


_HEADER_ATOM = re.compile(r"\{(.+)\}[io]")


def _redact_atoms(atoms: MutableMapping[str, Any]) -> None:
    """hypercorn's access-log atoms (``{authorization}i`` is a request header)."""
    for key, value in list(atoms.items()):
        if not isinstance(value, str):
            continue
        header = _HEADER_ATOM.fullmatch(key)
        if header is not None:
            raw = [(header.group(1).encode("latin-1"), value.encode("latin-1"))]
            redacted = redact_headers(raw)
            if redacted is not None:
                atoms[key] = redacted[0][1].decode("latin-1")
                continue
        new = redact_text(value)
        if new is not value:
            atoms[key] = new


# Formats a record's traceback the way logging.Formatter does by default.
_EXC_FORMATTER = logging.Formatter()


def _redact_exception(record: logging.LogRecord) -> None:
    """Redact a record's traceback and stack: an exception's text can hold a token
    (an HTTP client's error names the URL it called, ``?token=`` included)."""
    text = record.exc_text
    if not text and record.exc_info and record.exc_info[0] is not None:
        text = _EXC_FORMATTER.formatException(record.exc_info)
    if text:
        redacted = redact_text(text)
        if redacted is not text:
            # The redacted text is what formatters print; without the exception
            # itself, no formatter can render the original again.
            record.exc_text = redacted
            record.exc_info = None
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)


class RedactingFilter(logging.Filter):
    """A logging filter that removes tokens from every record it sees.

    The arguments of the record are redacted one by one (:func:`redact_text`; a
    mapping of hypercorn access-log atoms in place), so that formatters that read
    them, such as uvicorn's access formatter, still find them. If the formatted
    message still holds a token (one split between the format string and an
    argument, or inside a dict), the record keeps only the redacted text. A
    traceback that holds a token is kept as its redacted text (``exc_text``) and
    the exception object is taken off the record (``exc_info``). It never drops a
    record.

    Attach it to a handler (it then sees every record the handler prints, from any
    logger), or to the loggers that create the records (:func:`install_filter`).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            record.args = tuple(_redact_arg(a) for a in args)
        elif isinstance(args, MutableMapping) and args:
            _redact_atoms(args)
        elif isinstance(record.msg, str):
            # Without arguments the message is the text (with them, redacting the
            # format string could break its placeholders: ``token=%s``).
            record.msg = redact_text(record.msg)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let logging report it as usual
            return True
        redacted = redact_text(message)
        if redacted is not message:
            record.msg = redacted
            record.args = None
        if record.exc_info or record.exc_text or record.stack_info:
            _redact_exception(record)
        return True


#: Loggers that record requests or their headers in uvicorn and hypercorn.
SERVER_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "hypercorn.error",
    "hypercorn.access",
    "websockets.server",
)


#: The logger every wschat record is written to. wschat attaches a
#: :class:`RedactingFilter` to it when its endpoint is imported
#: (:func:`install_own_filter`); :func:`remove_filter` leaves it on.
WSCHAT_LOGGER = "wschat"


def install_own_filter() -> RedactingFilter:
    """Attach :class:`RedactingFilter` to wschat's own logger (idempotent).

    wschat never formats a token into its own lines, but some of them carry the
    traceback of an application's hook or verifier, whose exception text may hold
    one (``... for url 'https://idp/introspect?token=...'``). Done by
    :mod:`wschat.endpoint` when imported; not undone by :func:`remove_filter`.

    Returns:
        The filter.
    """
    return install_filter((WSCHAT_LOGGER,))


def install_filter(loggers: Iterable[str] = SERVER_LOGGERS) -> RedactingFilter:
    """Attach one :class:`RedactingFilter` to each named logger (idempotent).

    A logger's filters see the records created on that logger, whatever handlers are
    configured later, so this works when called at import time of the app, before
    the server sets up its handlers. Records that only propagate to it are not seen:
    name the logger that creates them.

    Args:
        loggers: Logger names; by default uvicorn's, hypercorn's and websockets'.

    Returns:
        The filter (the one already installed, if any).
    """
    installed: RedactingFilter | None = None
    for name in loggers:
        logger = logging.getLogger(name)
        for existing in logger.filters:
            if isinstance(existing, RedactingFilter):
                installed = existing
                break
    filt = installed or RedactingFilter()
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(filt)
    return filt


#: Whether adapters built from now on install the filter (:func:`remove_filter`).
_on_build = True


def install_server_filter() -> RedactingFilter | None:
    """What the adapters call when they are built: :func:`install_filter`, unless
    :func:`remove_filter` was called in this process.

    Returns:
        The filter, or None when opted out.
    """
    return install_filter() if _on_build else None


def remove_filter(loggers: Iterable[str] = SERVER_LOGGERS) -> None:
    """Take :class:`RedactingFilter` off the named loggers, and opt out for good.

    Adapters built afterwards in this process no longer install it either: call this
    once, before or after building them, to keep the server's log lines exactly as
    the server writes them (tokens included, at ``--log-level debug``). A filter on
    handlers (:data:`UVICORN_LOG_CONFIG`) is not touched.

    Args:
        loggers: Logger names; by default uvicorn's, hypercorn's and websockets'.
    """
    global _on_build
    _on_build = False
    for name in loggers:
        logger = logging.getLogger(name)
        for existing in list(logger.filters):
            if isinstance(existing, RedactingFilter):
                logger.removeFilter(existing)


_FILTER = {"wschat_redact": {"()": "wschat.logfilter.RedactingFilter"}}

#: uvicorn's own default logging config, with :class:`RedactingFilter` on both
#: handlers and the ``wschat`` logger on stderr. For ``uvicorn.run(log_config=...)``
#: or, as JSON (``python -m wschat.logfilter uvicorn``), ``uvicorn --log-config``.
UVICORN_LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": _FILTER,
    "formatters": {
        "default": {
            "()": "uvicorn.logging.DefaultFormatter",
            "fmt": "%(levelprefix)s %(message)s",
            "use_colors": None,
        },
        "access": {
            "()": "uvicorn.logging.AccessFormatter",
            "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" '
            "%(status_code)s",
        },
    },
    "handlers": {
        "default": {
            "formatter": "default",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "filters": ["wschat_redact"],
        },
        "access": {
            "formatter": "access",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "filters": ["wschat_redact"],
        },
    },
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {
            "handlers": ["access"],
            "level": "INFO",
            "propagate": False,
        },
        "wschat": {"handlers": ["default"], "level": "INFO", "propagate": False},
    },
}

#: hypercorn's log layout with :class:`RedactingFilter` on both handlers. For
#: ``hypercorn --log-config json:log.json`` (``python -m wschat.logfilter hypercorn``);
#: hypercorn writes an access log only with ``--access-logfile`` as well.
HYPERCORN_LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": _FILTER,
    "formatters": {
        "hypercorn": {
            "format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
            "datefmt": "[%Y-%m-%d %H:%M:%S %z]",
        },
    },
    "handlers": {
        "error": {
            "formatter": "hypercorn",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "filters": ["wschat_redact"],
        },
        "access": {
            "formatter": "hypercorn",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "filters": ["wschat_redact"],
        },
    },
    "loggers": {
        "hypercorn.error": {
            "handlers": ["error"],
            "level": "INFO",
            "propagate": False,
        },
        "hypercorn.access": {
            "handlers": ["access"],
            "level": "INFO",
            "propagate": False,
        },
        "wschat": {"handlers": ["error"], "level": "INFO", "propagate": False},
    },
}


def main(argv: list[str] | None = None) -> int:
    """``python -m wschat.logfilter uvicorn|hypercorn``: print the logging config."""
    args = sys.argv[1:] if argv is None else argv
    configs = {"uvicorn": UVICORN_LOG_CONFIG, "hypercorn": HYPERCORN_LOG_CONFIG}
    if len(args) != 1 or args[0] not in configs:
        print("usage: python -m wschat.logfilter uvicorn|hypercorn > log.json")
        return 2
    print(json.dumps(configs[args[0]], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
