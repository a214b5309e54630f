"""The wire as data: the JSON Schema of every frame, AsyncAPI, the close policy.

Imports: the standard library only (pure layer).

Three documents are the one source of truth for protocol version 1, shipped in this
package and read by the server, the docs, the tests and the clients:

- ``protocol.schema.json``: a JSON Schema (draft 2020-12) of every client frame
  (``#/$defs/ClientFrame``) and server frame (``#/$defs/ServerFrame``). The adapters
  serve it at ``{prefix}/schema.json``.
- :func:`asyncapi_document`: an AsyncAPI 3.0 document built from that schema,
  served at ``{prefix}/asyncapi.json``.
- ``close-codes.json``: for each close code and reason, what a client does (retry
  with backoff, refresh the token once, or stop), in words for the client and as a
  fix for the person running it (:func:`close_policy`, :func:`policy_for`).
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, Literal, cast

__all__ = [
    "SCHEMA_FILE",
    "ClosePolicy",
    "asyncapi_document",
    "close_policy",
    "policy_for",
    "protocol_schema",
    "schema_bytes",
]

#: The schema's file name in this package.
SCHEMA_FILE: Final = "protocol.schema.json"
_POLICY_FILE: Final = "close-codes.json"

Action = Literal["retry", "refresh_token", "stop"]


def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()


@functools.cache
def schema_bytes() -> bytes:
    """The JSON Schema file as shipped (what ``/ws/schema.json`` answers)."""
    return _read(SCHEMA_FILE)


def protocol_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of protocol version 1, as a new dict.

    Validate a server frame against ``{"$ref": "#/$defs/ServerFrame"}`` within it
    (``$defs`` of the result), a client frame against ``#/$defs/ClientFrame``.
    """
    data: dict[str, Any] = json.loads(schema_bytes())
    return data


@dataclass(frozen=True, slots=True)
class ClosePolicy:
    """What a client does when the server closes with ``code`` and ``reason``.

    Attributes:
        code: The close code.
        reason: The reason code (the part of the reason before ``:``); ``""`` for a
            close without one.
        sent_by: ``wschat``, ``server`` (the ASGI server's own) or ``network``
            (1006: no close frame at all).
        when: When it happens, in plain words.
        client_should: What the client does, in plain words.
        action: ``retry`` (with backoff), ``refresh_token`` (once), or ``stop``.
        backoff_ms: ``(base, cap)`` of the retry's backoff, for ``retry``.
        max_attempts: How many times in a row, if limited.
        fix: What the person running the client or the server changes.
    """

    code: int
    reason: str
    sent_by: str
    when: str
    client_should: str
    action: Action
    backoff_ms: tuple[int, int] | None
    max_attempts: int | None
    fix: str


@functools.cache
def _policy_data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_read(_POLICY_FILE))
    return data


@functools.cache
def close_policy() -> tuple[ClosePolicy, ...]:
    """Every entry of the close-code policy (``close-codes.json``), in its order."""
    found = []
    for entry in _policy_data()["codes"]:
        backoff = entry.get("backoff_ms")
        found.append(
            ClosePolicy(
                code=entry["code"],
                reason=entry["reason"],
                sent_by=entry["sent_by"],
                when=entry["when"],
                client_should=entry["client_should"],
                action=cast(Action, entry["action"]),
                backoff_ms=(backoff["base"], backoff["cap"]) if backoff else None,
                max_attempts=entry.get("max_attempts"),
                fix=entry["fix"],
            )
        )
    return tuple(found)


def policy_for(code: int, reason: str = "") -> ClosePolicy:
    """The policy for a close with ``code`` and ``reason``.

    Args:
        code: The close code the client saw (1006 when no close frame came).
        reason: The whole close reason or just its code (``token_expired: ...``).

    Returns:
        The entry for that code and reason code; for a reason this table does not
        know, the code's first entry; for a code it does not know, ``stop``.
    """
    reason_code = reason.split(":", 1)[0].strip()
    same_code = [p for p in close_policy() if p.code == code]
    for entry in same_code:
        if entry.reason == reason_code:
            return entry
    if same_code:
        return same_code[0]
    unknown = _policy_data()["unknown"]
    return ClosePolicy(
        code=code,
        reason=reason_code,
        sent_by="application",
        when="a close code wschat does not define (your application's own)",
        client_should=unknown["client_should"],
        action=cast(Action, unknown["action"]),
        backoff_ms=None,
        max_attempts=None,
        fix="look up this close code in your application's code",
    )


_SCHEMA_FORMAT: Final = "application/schema+json;version=draft-2020-12"


def _rebase(node: Any) -> Any:
    """Point the schema's ``#/$defs/X`` references at ``#/components/schemas/X``."""
    if isinstance(node, dict):
        return {
            key: (
                value.replace("#/$defs/", "#/components/schemas/", 1)
                if key == "$ref" and isinstance(value, str)
                else _rebase(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rebase(item) for item in node]
    return node


def asyncapi_document(
    version: str, address: str = "/ws/chat/{chat_id}"
) -> dict[str, Any]:
    """An AsyncAPI 3.0 document of the chat channel, built from the JSON Schema.

    Operations are from the server's side: it ``receive``\\ s the client frames and
    ``send``\\ s the server frames. Each frame's payload is its schema (draft
    2020-12), under ``components.schemas``.

    Args:
        version: The application's version, for ``info.version``.
        address: The channel's address, with ``{chat_id}``.

    Returns:
        The document, ready for ``json.dumps``.
    """
    schema = protocol_schema()
    defs: dict[str, Any] = _rebase(copy.deepcopy(schema["$defs"]))
    client: dict[str, str] = schema["x-wschat-client-frames"]
    server: dict[str, str] = schema["x-wschat-server-frames"]
    messages: dict[str, Any] = {}
    for name in [*client.values(), *server.values()]:
        frame = defs[name]
        messages[name] = {
            "name": name,
            "title": frame.get("title", name),
            "summary": frame.get("description", ""),
            "contentType": "application/json",
            "payload": {
                "schemaFormat": _SCHEMA_FORMAT,
                "schema": {"$ref": f"#/components/schemas/{name}"},
            },
        }
    channel_messages = {
        name: {"$ref": f"#/components/messages/{name}"} for name in messages
    }

    def refs(names: dict[str, str]) -> list[dict[str, str]]:
        return [{"$ref": f"#/channels/chat/messages/{n}"} for n in names.values()]

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "wschat",
            "version": version,
            "description": (
                "An authenticated WebSocket chat room, wire protocol version 1. Every "
                "frame is a JSON object in a text frame. Close codes and what a client "
                "does with each: docs/close-codes.md."
            ),
        },
        "defaultContentType": "application/json",
        "channels": {
            "chat": {
                "address": address,
                "title": "a chat room",
                "description": (
                    "Offer the subprotocol wschat.v1. The token (a JWT) goes in "
                    "?token=, or in the subprotocol bearer.<JWT>."
                ),
                "parameters": {
                    "chat_id": {
                        "description": (
                            "1 to 128 letters, digits, _ - . or :, starting with a "
                            "letter or digit"
                        )
                    }
                },
                "messages": channel_messages,
                "bindings": {
                    "ws": {
                        "bindingVersion": "0.1.0",
                        "query": {
                            "type": "object",
                            "properties": {
                                "token": {"type": "string", "description": "a JWT"},
                                "batch": {"type": "string", "enum": ["1", "true"]},
                            },
                        },
                    }
                },
            }
        },
        "operations": {
            "receiveClientFrames": {
                "action": "receive",
                "channel": {"$ref": "#/channels/chat"},
                "summary": "frames a client sends",
                "messages": refs(client),
            },
            "sendServerFrames": {
                "action": "send",
                "channel": {"$ref": "#/channels/chat"},
                "summary": "frames the server sends",
                "messages": refs(server),
            },
        },
        "components": {"schemas": defs, "messages": messages},
    }
