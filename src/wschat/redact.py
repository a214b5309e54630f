"""Keep tokens out of what a server logs about a request: redact its ASGI scope.

Imports: the standard library and :mod:`wschat.query` (pure layer).

:func:`redact_scope` rewrites a scope's ``query_string``, ``headers`` and
``subprotocols`` so that what the ASGI server logs about the request (uvicorn's
``[accepted]``, ``403`` and access lines, hypercorn's access log) reads ``[redacted]``
instead of a token. The adapters call it on every request their routes receive;
:class:`wschat.asgi.RedactTokens` does it for a whole app. What a server logs before
the app runs can only be cleaned in its logging: :mod:`wschat.logfilter`.

What counts as a token (:func:`is_token_name`): a query parameter or header whose
name, percent-decoded and lowercased with ``-`` read as ``_``, is ``auth`` or
contains ``token``, ``jwt``, ``bearer``, ``secret``, ``passw``, ``apikey``,
``api_key``, ``credential`` or ``authorization``; any query parameter whose name or
value holds a JWT (``eyJ...`` then a dot); the ``cookie`` header; and each
``bearer.<token>`` subprotocol.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import unquote_plus, unquote_to_bytes

from .query import Query

__all__ = [
    "REDACTED",
    "TOKEN_NAMES",
    "TOKEN_NAME_PARTS",
    "is_token_name",
    "redact_headers",
    "redact_query",
    "redact_scope",
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


def redact_query(query_string: bytes | Query) -> bytes:
    """Replace the value of every token parameter in a raw query string.

    Names are decoded the way ``parse_qs`` decodes them (``%74oken`` is ``token``) and
    matched by :func:`is_token_name`; a part that holds a JWT is redacted whatever
    its name. Every other parameter is kept exactly as it was sent.

    Args:
        query_string: The raw query string (``scope["query_string"]``), or the
            :class:`~wschat.query.Query` a handshake already split it into (it is
            not split again).

    Returns:
        The same bytes when nothing needed redacting, else the redacted copy:
        ``a=1&token=[redacted]``.
    """
    if isinstance(query_string, Query):
        raw, split = query_string.raw, query_string.parts
    else:
        raw, split = query_string, None
    if not raw or _QUERY_HINT.search(raw) is None:
        return raw
    parts = list(split) if split is not None else raw.split(b"&")
    changed = False
    for i, part in enumerate(parts):
        redacted = _secret_part(part)
        if redacted is not None:
            parts[i] = redacted
            changed = True
    return b"&".join(parts) if changed else raw


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


def redact_scope(
    scope: MutableMapping[str, Any], *, query: Query | None = None
) -> bool:
    """Redact the secrets of an ASGI ``http`` or ``websocket`` scope in place.

    ``query_string``, ``headers`` and ``subprotocols`` are replaced by redacted
    copies (never modified in place: the server may hold the same lists for the
    handshake). Whatever logs the request from this scope afterwards (the server's
    ``[accepted]``, ``403`` and access lines) sees ``[redacted]``.

    Args:
        scope: The scope the server passed to the app.
        query: The scope's query string as a handshake already split it (used only
            if it is that very string), so that it is not split twice.

    Returns:
        Whether anything was redacted.
    """
    changed = False
    query_string = scope.get("query_string")
    if query_string:
        redacted = redact_query(
            query if query is not None and query.raw is query_string else query_string
        )
        if redacted is not query_string:
            scope["query_string"] = redacted
            changed = True
    headers = scope.get("headers")
    if headers:
        if not isinstance(headers, (list, tuple)):
            # A one-shot iterable would be used up by reading it here.
            headers = scope["headers"] = list(headers)
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
