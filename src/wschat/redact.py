"""Keep tokens out of server logs: redact a request's scope, or any log record.

Imports: the standard library only (pure layer).

Two tools, for two places a token can reach a log:

* :func:`redact_scope` rewrites an ASGI scope's ``query_string`` and ``headers`` so
  that what the ASGI server logs about the request (uvicorn's ``[accepted]``, ``403``
  and access lines, hypercorn's access log) carries ``[redacted]`` instead of a
  token. The adapters call it on every request their routes receive;
  :class:`wschat.asgi.RedactTokens` does it for a whole app.
* :class:`RedactingFilter` rewrites log records: what a server logs before the app
  runs (uvicorn's ``--log-level debug`` request headers, ``trace`` scopes) can only be
  cleaned there. :data:`UVICORN_LOG_CONFIG` and :data:`HYPERCORN_LOG_CONFIG` install
  it; ``python -m wschat.redact uvicorn > log.json`` writes one for
  ``uvicorn --log-config log.json``.

What counts as a token (:func:`is_token_name`): a query parameter or header whose
name, percent-decoded and lowercased with ``-`` read as ``_``, is ``auth`` or
contains ``token``, ``jwt``, ``bearer``, ``secret``, ``passw``, ``apikey``,
``api_key``, ``credential`` or ``authorization``; any query parameter whose name or
value holds a JWT (``eyJ...`` then a dot); the ``cookie`` header; and each
``bearer.<token>`` subprotocol.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import unquote_plus, unquote_to_bytes

__all__ = [
    "HYPERCORN_LOG_CONFIG",
    "REDACTED",
    "TOKEN_NAMES",
    "TOKEN_NAME_PARTS",
    "UVICORN_LOG_CONFIG",
    "RedactingFilter",
    "install_filter",
    "is_token_name",
    "redact_headers",
    "redact_query",
    "redact_scope",
    "redact_text",
]

#: What a redacted value reads as.
REDACTED = "[redacted]"
_REDACTED_B = REDACTED.encode()

#: Names that are token names on their own (compared lowercased, ``-`` as ``_``).
TOKEN_NAMES = frozenset({"auth"})
#: A name that contains any of these is a token name.
TOKEN_NAME_PARTS = (
    "token",
    "jwt",
    "bearer",
    "secret",
    "passw",
    "apikey",
    "api_key",
    "credential",
    "authorization",
)
#: Headers redacted besides those with a token name (in the subprotocol list, only
#: each ``bearer.<token>``).
_SECRET_HEADERS = frozenset({b"cookie", b"set-cookie", b"sec-websocket-protocol"})

# Anything that may need a look: a token-name part, ``auth``, a JWT, or an escape
# that could spell one. A query without any of these is returned as it is.
_QUERY_HINT = re.compile(
    rb"token|jwt|bearer|secret|passw|api_?key|credential|auth|eyj|%", re.IGNORECASE
)
_JWT_BYTES = re.compile(rb"eyJ[A-Za-z0-9_-]*(?:\.|%2[eE])")


_NAME_PART = re.compile("|".join(TOKEN_NAME_PARTS))


def is_token_name(name: str) -> bool:
    """Whether a query parameter or header called ``name`` carries a secret.

    Args:
        name: The name as decoded from the request (not percent-encoded).

    Returns:
        True for ``token``, ``access_token``, ``X-Auth-Token``, ``jwt``, ``auth``,
        ``Authorization`` and the like, in any case.
    """
    key = name.strip().lower().replace("-", "_")
    return key in TOKEN_NAMES or _NAME_PART.search(key) is not None


# Names repeat from request to request: each is judged once. Bounded, so that
# clients sending made-up names cannot grow them.
_QUERY_SECRET: dict[bytes, bool] = {}
_HEADER_SECRET: dict[bytes, bool] = {}
_CACHE_MAX = 512


def _secret_param(raw_name: bytes) -> bool:
    verdict = _QUERY_SECRET.get(raw_name)
    if verdict is None:
        name = raw_name.decode("latin-1")
        if b"%" in raw_name or b"+" in raw_name:
            name = unquote_plus(name)
        verdict = is_token_name(name)
        if len(_QUERY_SECRET) < _CACHE_MAX:
            _QUERY_SECRET[raw_name] = verdict
    return verdict


def _secret_header(name: bytes) -> bool:
    verdict = _HEADER_SECRET.get(name)
    if verdict is None:
        lowered = name.lower()
        verdict = lowered in _SECRET_HEADERS or is_token_name(lowered.decode("latin-1"))
        if len(_HEADER_SECRET) < _CACHE_MAX:
            _HEADER_SECRET[bytes(name)] = verdict
    return verdict


def _holds_jwt(raw: bytes) -> bool:
    if _JWT_BYTES.search(raw) is not None:
        return True
    return b"%" in raw and _JWT_BYTES.search(unquote_to_bytes(raw)) is not None


def _secret_part(part: bytes) -> bytes | None:
    """The redacted form of one ``name=value`` part, or None to keep it."""
    raw_name, _, value = part.partition(b"=")
    if _holds_jwt(raw_name):
        # The name itself is a JWT (``?<JWT>``): nothing of the part is kept.
        return _REDACTED_B
    if _holds_jwt(value):
        return raw_name + b"=" + _REDACTED_B
    if _secret_param(raw_name):
        return raw_name + b"=" + _REDACTED_B
    return None


def redact_query(query_string: bytes) -> bytes:
    """Replace the value of every token parameter in a raw query string.

    Names are decoded the way ``parse_qs`` decodes them (``%74oken`` is ``token``) and
    matched by :func:`is_token_name`; a part that holds a JWT is redacted whatever
    its name. Every other parameter is kept exactly as it was sent.

    Args:
        query_string: The raw query string (``scope["query_string"]``).

    Returns:
        The same object when nothing needed redacting, else the redacted copy:
        ``a=1&token=[redacted]``.
    """
    if not query_string or _QUERY_HINT.search(query_string) is None:
        return query_string
    parts = query_string.split(b"&")
    changed = False
    for i, part in enumerate(parts):
        redacted = _secret_part(part)
        if redacted is not None:
            parts[i] = redacted
            changed = True
    return b"&".join(parts) if changed else query_string


def _redact_protocols(value: bytes) -> bytes:
    items = [item.strip() for item in value.split(b",")]
    return b", ".join(
        b"bearer." + _REDACTED_B if item.lower().startswith(b"bearer.") else item
        for item in items
    )


def redact_headers(
    headers: Iterable[tuple[bytes, bytes]],
) -> list[tuple[bytes, bytes]] | None:
    """Headers with every secret value replaced, or None when there is none.

    ``Authorization``, ``Cookie``, any header with a token name (``X-Auth-Token``) and
    each ``bearer.<token>`` in ``Sec-WebSocket-Protocol`` are redacted. The input is
    never modified: servers keep using their own list for the handshake.
    """
    out: list[tuple[bytes, bytes]] | None = None
    for i, (name, value) in enumerate(headers):
        if not _secret_header(name):
            continue
        if name.lower() == b"sec-websocket-protocol":
            if b"bearer." not in value.lower():
                continue
            new = _redact_protocols(value)
        else:
            new = _REDACTED_B
        if out is None:
            out = list(headers)
        out[i] = (name, new)
    return out


def redact_scope(scope: MutableMapping[str, Any]) -> bool:
    """Redact the secrets of an ASGI ``http`` or ``websocket`` scope in place.

    ``query_string``, ``headers`` and ``subprotocols`` are replaced by redacted
    copies (never modified in place: the server may hold the same lists for the
    handshake). Whatever logs the request from this scope afterwards (the server's
    ``[accepted]``, ``403`` and access lines) sees ``[redacted]``.

    Args:
        scope: The scope the server passed to the app.

    Returns:
        Whether anything was redacted.
    """
    changed = False
    query = scope.get("query_string")
    if query:
        redacted = redact_query(query)
        if redacted is not query:
            scope["query_string"] = redacted
            changed = True
    headers = scope.get("headers")
    if headers:
        new_headers = redact_headers(headers)
        if new_headers is not None:
            scope["headers"] = new_headers
            changed = True
    protocols = scope.get("subprotocols")
    if protocols and any(p.lower().startswith("bearer.") for p in protocols):
        scope["subprotocols"] = [
            "bearer." + REDACTED if p.lower().startswith("bearer.") else p
            for p in protocols
        ]
        changed = True
    return changed


# -- log records ----------------------------------------------------------------------

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


class RedactingFilter(logging.Filter):
    """A logging filter that removes tokens from every record it sees.

    The record's message is formatted with its arguments, redacted with
    :func:`redact_text`, and stored back (``args`` emptied) when anything changed,
    so every handler after it prints the redacted text. It never drops a record.

    Attach it to a handler (it then sees every record the handler prints, from any
    logger), or to the loggers that create the records (:func:`install_filter`).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let logging report it as usual
            return True
        redacted = redact_text(message)
        if redacted is not message:
            record.msg = redacted
            record.args = None
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


_FILTER = {"wschat_redact": {"()": "wschat.redact.RedactingFilter"}}

#: uvicorn's own default logging config, with :class:`RedactingFilter` on both
#: handlers and the ``wschat`` logger on stderr. For ``uvicorn.run(log_config=...)``
#: or, as JSON (``python -m wschat.redact uvicorn``), ``uvicorn --log-config``.
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
#: ``hypercorn --log-config json:log.json`` (``python -m wschat.redact hypercorn``);
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
    """``python -m wschat.redact uvicorn|hypercorn``: print the logging config."""
    args = sys.argv[1:] if argv is None else argv
    configs = {"uvicorn": UVICORN_LOG_CONFIG, "hypercorn": HYPERCORN_LOG_CONFIG}
    if len(args) != 1 or args[0] not in configs:
        print("usage: python -m wschat.redact uvicorn|hypercorn > log.json")
        return 2
    print(json.dumps(configs[args[0]], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
