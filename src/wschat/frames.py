"""Server frames as typed values: what a client reads off the wire, parsed.

Imports: the standard library only (pure layer).

:func:`parse_server_frame` turns one text frame from the server into frozen
dataclasses, one per frame (a ``batch`` frame yields its frames in order). Fields a
later protocol version adds are kept in each frame's ``data``; a frame of a type
this module does not know (one an application sends) is an :class:`OtherFrame`.
The test kit (:mod:`wschat.testclient`) returns these.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias, TypeVar

__all__ = [
    "AuthOk",
    "Error",
    "Frame",
    "FrameT",
    "History",
    "Members",
    "Message",
    "OtherFrame",
    "Pong",
    "Presence",
    "ProtocolViolation",
    "Ready",
    "Resync",
    "TokenExpiring",
    "parse_server_frame",
]


@dataclass(frozen=True)
class Ready:
    """The first frame after accept: who you are, who is here, the limits.

    ``members`` lists at most the server's ``ready_members`` users (you included);
    ``count`` is how many are in the room, and ``members_partial`` says the list
    is shorter than that (page the rest with a ``members`` request). With history,
    ``epoch`` names the room's history and ``offset`` is its latest message's;
    ``recovered`` says the messages after the connect's ``since`` follow. ``exp`` is
    the token's expiry in Unix seconds (None for a token without one, or a server
    that does not say).
    """

    type: ClassVar[str] = "ready"
    connection_id: str
    chat_id: str
    user: str
    members: tuple[str, ...]
    limits: Mapping[str, int]
    batch: bool
    protocol: int
    count: int = 0
    members_partial: bool = False
    epoch: str | None = None
    offset: int | None = None
    recovered: bool = False
    exp: int | None = None
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Message:
    """A chat message, delivered to every member, the sender included.

    ``offset`` is its place in the room's history (1, 2, ... within an epoch), or
    None from a server without history.
    """

    type: ClassVar[str] = "message"
    id: str
    chat_id: str
    user: str
    body: Any
    ts: int
    client_id: str | None
    offset: int | None = None
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Presence:
    """Who joined and left since the last one; ``count`` users are in the room now.

    ``count_only``: the room is over the server's size threshold, and ``joins``
    and ``leaves`` are left empty. A server run with ``presence_format="events"``
    sends one user's ``event`` (``"join"`` or ``"leave"``) and ``user`` instead
    (then ``joins`` or ``leaves`` holds that user).
    """

    type: ClassVar[str] = "presence"
    chat_id: str
    count: int
    joins: tuple[str, ...] = ()
    leaves: tuple[str, ...] = ()
    count_only: bool = False
    event: str | None = None
    user: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Members:
    """One page of the room's member list, the answer to a ``members`` request.

    ``cursor`` asks for the next page; None on the last one.
    """

    type: ClassVar[str] = "members"
    chat_id: str
    members: tuple[str, ...]
    count: int
    cursor: str | None
    id: str | int | None = None
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Error:
    """An ``error`` frame: the connection stays open; branch on ``code``."""

    type: ClassVar[str] = "error"
    code: str
    message: str
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Pong:
    """The answer to a ping; ``id`` is the ping's, if it had one."""

    type: ClassVar[str] = "pong"
    id: str | int | None
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class AuthOk:
    """The answer to a successful token refresh (an ``auth`` frame)."""

    type: ClassVar[str] = "auth"
    ok: bool
    exp: int | None
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Resync:
    """Messages may have been missed: reload history."""

    type: ClassVar[str] = "resync"
    chat_id: str
    message: str
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class TokenExpiring:
    """The token expires at ``exp`` (Unix seconds): send a fresh one in time."""

    type: ClassVar[str] = "token_expiring"
    exp: int
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class History:
    """The answer to a ``history`` request: ``messages`` ascending by offset.

    ``more`` says whether older messages are kept than the first of ``messages``.
    """

    type: ClassVar[str] = "history"
    chat_id: str
    messages: tuple[Message, ...]
    epoch: str | None = None
    latest: int | None = None
    more: bool = False
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class OtherFrame:
    """A frame of a type this kit does not know (one your application sends)."""

    type: str
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


Frame: TypeAlias = (
    Ready
    | Message
    | Presence
    | Members
    | Error
    | Pong
    | AuthOk
    | Resync
    | TokenExpiring
    | History
    | OtherFrame
)
#: A frame class this module knows (for ``receive_until(Message)`` and the like).
FrameT = TypeVar(
    "FrameT",
    Ready,
    Message,
    Presence,
    Members,
    Error,
    Pong,
    AuthOk,
    Resync,
    TokenExpiring,
    History,
)

_FRAMES: dict[str, type[Any]] = {
    cls.type: cls
    for cls in (
        Ready,
        Message,
        Presence,
        Members,
        Error,
        Pong,
        AuthOk,
        Resync,
        TokenExpiring,
        History,
    )
}
_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls) if f.name != "data")
    for cls in _FRAMES.values()
}
# Fields a frame may lack on the wire, and their value then.
_OPTIONAL: dict[str, Any] = {
    "id": None,
    "client_id": None,
    "exp": None,
    "offset": None,
    "epoch": None,
    "latest": None,
    "more": False,
}
# The same, for one kind of frame only.
_OPTIONAL_IN: dict[type[Any], dict[str, Any]] = {
    # A server of wschat 0.1 (or one run with presence_format="events").
    Ready: {
        "count": None,
        "members_partial": False,
        "epoch": None,
        "offset": None,
        "recovered": False,
        "exp": None,
    },
    Presence: {
        "joins": (),
        "leaves": (),
        "count_only": False,
        "event": None,
        "user": None,
    },
}


class ProtocolViolation(AssertionError):
    """The server sent something version 1 of the protocol does not allow."""


def parse_server_frame(text: str) -> list[Frame]:
    """Decode one text frame from the server; a ``batch`` yields its frames in order.

    Fields a later protocol version adds are kept in each frame's ``data``.

    Raises:
        ProtocolViolation: Not a JSON object with a ``type``, or a known frame
            without a field version 1 promises.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ProtocolViolation(
            f"server sent a frame that is not JSON: {text!r}"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ProtocolViolation(f"server sent a frame without a type: {text!r}")
    if data["type"] == "batch":
        inner = data.get("frames")
        if not isinstance(inner, list):
            raise ProtocolViolation(f"batch frame without a frames list: {text!r}")
        return [_frame(item) for item in inner]
    return [_frame(data)]


def _frame(data: Any) -> Frame:
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ProtocolViolation(f"server sent a frame without a type: {data!r}")
    cls = _FRAMES.get(data["type"])
    if cls is None:
        return OtherFrame(data["type"], data)
    values: dict[str, Any] = {}
    optional = _OPTIONAL_IN.get(cls, _OPTIONAL)
    for name in _FIELDS[cls]:
        if name in data:
            values[name] = data[name]
        elif name in optional:
            values[name] = optional[name]
        elif name in _OPTIONAL:
            values[name] = _OPTIONAL[name]
        else:
            raise ProtocolViolation(
                f"server sent a {data['type']} frame without {name!r}: {data!r}"
            )
    if cls is Ready or cls is Members:
        values["members"] = tuple(values["members"])
        if cls is Ready and values["count"] is None:
            values["count"] = len(values["members"])
    elif cls is Presence:
        values["joins"] = tuple(values["joins"])
        values["leaves"] = tuple(values["leaves"])
        if values["event"] == "join" and not values["joins"]:
            values["joins"] = (values["user"],)
        elif values["event"] == "leave" and not values["leaves"]:
            values["leaves"] = (values["user"],)
    if cls is History:
        if not isinstance(values["messages"], list):
            raise ProtocolViolation(f"history frame without a messages list: {data!r}")
        messages = tuple(_frame(item) for item in values["messages"])
        if not all(isinstance(m, Message) for m in messages):
            raise ProtocolViolation(f"history frame with a non-message: {data!r}")
        values["messages"] = messages
    frame: Frame = cls(**values, data=data)
    return frame
