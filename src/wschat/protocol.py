"""The wire format, version 1: parse client frames and encode server frames. No I/O.

Imports: the standard library and :mod:`wschat.errors` (pure layer).

Every frame is a JSON object in a text frame with a ``type`` field.

Client to server:
    ``{"type": "message", "body": <any JSON>, "client_id": <optional str>}``
    ``{"type": "ping"}`` (an optional ``"id"`` is echoed in the pong)
    ``{"type": "auth", "token": "<JWT>"}`` (first-message auth or refresh; the
    first may carry ``since`` and ``epoch`` to recover missed messages)
    ``{"type": "history", "before": <offset>, "limit": <n>}`` (a page of history)
    ``{"type": "members", "cursor": <optional str>, "limit": <optional int>,
    "id": <optional str or int>}`` (a page of the room's member list)

Server to client: ``ready``, ``message``, ``presence``, ``members``, ``error``,
``pong``, ``auth``, ``token_expiring``, ``resync``, ``history`` and, for clients
that opted in, ``batch``.

Fields the server owns (``id``, ``ts``, ``user``, ``chat_id``) are always set from the
connection; a client that sends them is ignored, not trusted.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple, TypeAlias

from .errors import ErrorCode
from .errors import FrameError as FrameError

__all__ = [
    "DEFAULT_HISTORY_LIMIT",
    "DEFAULT_MEMBERS_PAGE",
    "JSON",
    "MAX_CLIENT_ID_CHARS",
    "MAX_CURSOR_CHARS",
    "MAX_EPOCH_CHARS",
    "MAX_HISTORY_LIMIT",
    "MAX_JSON_DEPTH",
    "MAX_MEMBERS_PAGE",
    "PROTOCOL_VERSION",
    "SUBPROTOCOL",
    "SUBPROTOCOL_BATCH",
    "ClientAuth",
    "ClientFrame",
    "ClientHistory",
    "ClientMembers",
    "ClientMessage",
    "ClientPing",
    "FrameError",
    "MemberListText",
    "Published",
    "Since",
    "decode_cursor",
    "encode_auth_ok",
    "encode_batch",
    "encode_client_message",
    "encode_cursor",
    "encode_error",
    "encode_history",
    "encode_members",
    "encode_message",
    "encode_pong",
    "encode_presence",
    "encode_presence_diff",
    "encode_ready",
    "encode_resync",
    "encode_token_expiring",
    "parse_client_frame",
    "parse_since",
    "with_history_fields",
]

# The longest unknown ``type`` an ``unknown_type`` error repeats back (no JWT is
# this short); a longer one is described by its length.
_MAX_ECHOED_TYPE: Final = 32

JSON: TypeAlias = Any

PROTOCOL_VERSION: Final = 1
#: The subprotocol a client offers (and the server selects) for version 1.
SUBPROTOCOL: Final = "wschat.v1"
#: Offered in addition to :data:`SUBPROTOCOL` to opt in to ``batch`` frames.
SUBPROTOCOL_BATCH: Final = "wschat.batch"
MAX_CLIENT_ID_CHARS: Final = 128
#: Deepest nesting of arrays and objects in a client frame, the frame object itself
#: being level 1 (so a ``body`` may nest 63 deep). Deeper JSON can parse and then fail
#: to encode again for the broadcast (RecursionError), so it is refused here.
MAX_JSON_DEPTH: Final = 64
#: Messages in one ``history`` answer at most; a larger ``limit`` is cut to this.
MAX_HISTORY_LIMIT: Final = 100
#: Messages in a ``history`` answer when the request names no ``limit``.
DEFAULT_HISTORY_LIMIT: Final = 50
#: Longest ``epoch`` a client may send back (stores' epochs are far shorter).
MAX_EPOCH_CHARS: Final = 128
#: Largest offset a client may send (``since``, ``before``): a signed 64-bit integer.
_MAX_OFFSET: Final = 2**63 - 1
#: Members in one ``members`` page when the request names no ``limit``.
DEFAULT_MEMBERS_PAGE: Final = 100
#: The largest ``limit`` a ``members`` request may ask for.
MAX_MEMBERS_PAGE: Final = 1000
#: The longest ``cursor`` a ``members`` request may send (a longer one is refused
#: with ``bad_cursor``): a user id of up to 768 bytes, in base64.
MAX_CURSOR_CHARS: Final = 1024

_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A chat message from a client; only ``body`` and ``client_id`` are taken."""

    body: JSON
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class ClientPing:
    """An application-level ping; answered with ``pong``."""

    id: str | int | None = None


@dataclass(frozen=True, slots=True)
class Since:
    """Where a reconnecting client's history stands: recover what came after it.

    Attributes:
        offset: The last offset the client saw (0: none yet).
        epoch: The epoch that offset belongs to.
    """

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """A token sent in a frame: first-message auth, or a refresh before ``exp``.

    Attributes:
        token: The JWT.
        since: What a first ``auth`` frame asks to recover (``since`` and
            ``epoch``); ignored in a refresh.
    """

    token: str = field(repr=False)
    since: Since | None = None


@dataclass(frozen=True, slots=True)
class ClientHistory:
    """A request for a page of the room's history.

    Attributes:
        before: Messages with an offset below this; None for the latest.
        limit: How many at most, already cut to :data:`MAX_HISTORY_LIMIT`.
    """

    before: int | None = None
    limit: int = DEFAULT_HISTORY_LIMIT


@dataclass(frozen=True, slots=True)
class ClientMembers:
    """A request for one page of the room's members, in a stable order.

    Attributes:
        after: Where the previous page ended (the user its ``cursor`` named), or
            None for the first page.
        limit: At most this many members in the page.
        id: Echoed in the answer, to match it to the request.
    """

    after: str | None = None
    limit: int = DEFAULT_MEMBERS_PAGE
    id: str | int | None = None


ClientFrame: TypeAlias = (
    ClientMessage | ClientPing | ClientAuth | ClientHistory | ClientMembers
)


class Published(NamedTuple):
    """A chat message as it was sent: the server's fields and its final frame.

    What ``ChatHooks.on_published`` receives, so an app that persists messages can
    key them by the server's ``id`` and ``offset``.

    Attributes:
        id: The server's message id.
        chat_id: The room.
        user: The sender.
        body: The body as broadcast.
        ts: Server time, milliseconds since the Unix epoch.
        client_id: The sender's ``client_id``, or None.
        offset: The message's offset in the room, or None with history off.
        epoch: The epoch ``offset`` belongs to, or None with history off.
        frame: The ``message`` frame exactly as every member got it.
    """

    id: str
    chat_id: str
    user: str
    body: Any
    ts: int
    client_id: str | None
    offset: int | None
    epoch: str | None
    frame: str


def _reject_constant(name: str) -> Any:
    raise FrameError(ErrorCode.BAD_JSON, f"{name} is not valid JSON")


_INFINITIES: Final = (float("inf"), float("-inf"))


def _finite_float(literal: str) -> float:
    # A literal like 1e400 is valid JSON that no double can hold: json makes it
    # infinity, which cannot be encoded again for the broadcast. Called for number
    # literals with a fraction or an exponent only; integers never overflow.
    value = float(literal)
    if value in _INFINITIES:
        raise FrameError(
            ErrorCode.BAD_JSON,
            "a number is too large: JSON numbers must be finite "
            "(at most about 1.8e308)",
        )
    return value


# One decoder for every frame: json.loads() with an option builds a new one per call.
_loads = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_finite_float
).decode

_TOO_DEEP: Final = f"frame nests arrays or objects over {MAX_JSON_DEPTH} deep"
#: The length of the shortest frame nested over MAX_JSON_DEPTH, ``{"":[[...]]}``: a
#: bracket pair per level under the frame object. Many chat frames are shorter.
_SHORTEST_TOO_DEEP: Final = len('{"":}') + 2 * MAX_JSON_DEPTH


def _may_be_too_deep(text: str) -> bool:
    # Cheap tests on the text first: it is too short, or has too few opening
    # brackets (counting those inside strings), to nest over the limit.
    return (
        len(text) >= _SHORTEST_TOO_DEEP
        and text.count("[") + text.count("{") > MAX_JSON_DEPTH
    )


def _too_deep(frame: dict[str, Any]) -> bool:
    """Whether ``frame`` nests arrays and objects over :data:`MAX_JSON_DEPTH` deep.

    The frame object itself is level 1. Level by level, only arrays and objects are
    kept for the next level: each value is looked at once, and scalars (most of a
    frame) are never stacked.
    """
    level: list[Any] = [frame]
    for _ in range(MAX_JSON_DEPTH):
        deeper: list[Any] = []
        for value in level:
            for child in value.values() if type(value) is dict else value:
                if type(child) is dict or type(child) is list:
                    deeper.append(child)
        if not deeper:
            return False
        level = deeper
    return True


def parse_client_frame(text: str) -> ClientFrame:
    """Parse one client text frame.

    Args:
        text: The frame's text.

    Returns:
        The frame as a frozen dataclass.

    Raises:
        FrameError: ``bad_json``: the text is not JSON, or holds a number no double
            can hold (``1e400``) or ``NaN``/``Infinity``; ``bad_frame``: not an
            object, nested over :data:`MAX_JSON_DEPTH`, or not a known frame shape;
            ``unknown_type``: an unknown ``type``.
    """
    try:
        data = _loads(text)
    except FrameError:
        raise
    except RecursionError:
        raise FrameError(ErrorCode.BAD_FRAME, _TOO_DEEP) from None
    except ValueError as exc:
        raise FrameError(ErrorCode.BAD_JSON, "frame is not valid JSON") from exc
    if not isinstance(data, dict):
        raise FrameError(
            ErrorCode.BAD_FRAME, 'frame must be a JSON object with a "type"'
        )
    if _may_be_too_deep(text) and _too_deep(data):
        raise FrameError(ErrorCode.BAD_FRAME, _TOO_DEEP)
    kind = data.get("type")
    if kind == "message":
        if "body" not in data:
            raise FrameError(ErrorCode.BAD_FRAME, 'a "message" frame needs a "body"')
        client_id = data.get("client_id")
        if client_id is not None and (
            not isinstance(client_id, str) or len(client_id) > MAX_CLIENT_ID_CHARS
        ):
            raise FrameError(
                ErrorCode.BAD_FRAME,
                f'"client_id" must be a string of at most {MAX_CLIENT_ID_CHARS} chars',
            )
        return ClientMessage(body=data["body"], client_id=client_id)
    if kind == "ping":
        ping_id = data.get("id")
        # bool is an int in Python, not in JSON: true/false are not ids.
        if ping_id is not None and (
            isinstance(ping_id, bool) or not isinstance(ping_id, (str, int))
        ):
            raise FrameError(
                ErrorCode.BAD_FRAME, 'a ping "id" must be a string or integer'
            )
        return ClientPing(id=ping_id)
    if kind == "auth":
        token = data.get("token")
        if not isinstance(token, str):
            raise FrameError(
                ErrorCode.BAD_FRAME, 'an "auth" frame needs a string "token"'
            )
        if "since" not in data and "epoch" not in data:
            return ClientAuth(token=token)
        try:
            since = _since(data.get("since"), data.get("epoch"))
        except ValueError as exc:
            raise FrameError(ErrorCode.BAD_FRAME, str(exc)) from None
        return ClientAuth(token=token, since=since)
    if kind == "history":
        return _history(data)
    if kind == "members":
        return _members_request(data)
    if not isinstance(kind, str):
        raise FrameError(ErrorCode.BAD_FRAME, 'frame needs a string "type"')
    # Echoed only when short: a long "type" (a token sent in the wrong field, or a
    # 64 KiB string) is described, not sent back.
    got = (
        repr(kind)
        if len(kind) <= _MAX_ECHOED_TYPE
        else f"a {len(kind)}-character string"
    )
    raise FrameError(
        ErrorCode.UNKNOWN_TYPE,
        f"unknown frame type; expected message, ping, auth, history or members, "
        f"got {got}",
    )


def _history(data: dict[str, Any]) -> ClientHistory:
    before = data.get("before")
    if before is not None and (
        type(before) is not int or not 1 <= before <= _MAX_OFFSET
    ):
        raise FrameError(
            ErrorCode.BAD_FRAME,
            'a history "before" must be an integer offset of at least 1, or absent',
        )
    limit = data.get("limit", DEFAULT_HISTORY_LIMIT)
    if type(limit) is not int or limit < 1:
        raise FrameError(
            ErrorCode.BAD_FRAME,
            'a history "limit" must be an integer of at least 1 '
            f"(at most {MAX_HISTORY_LIMIT} are sent)",
        )
    return ClientHistory(before, min(limit, MAX_HISTORY_LIMIT))


def _check_epoch(epoch: str) -> None:
    if not 1 <= len(epoch) <= MAX_EPOCH_CHARS or not all(
        "!" <= c <= "~" for c in epoch
    ):
        raise ValueError(
            f'"epoch" must be the 1 to {MAX_EPOCH_CHARS} printable ASCII '
            "characters the server sent in ready"
        )


def _since(offset: object, epoch: object) -> Since:
    if offset is None or epoch is None:
        raise ValueError('"since" and "epoch" go together: send both or neither')
    # bool is an int in Python, not in JSON.
    if type(offset) is not int or not 0 <= offset <= _MAX_OFFSET:
        raise ValueError('"since" must be an integer offset of at least 0')
    if not isinstance(epoch, str):
        raise ValueError('"epoch" must be a string')
    _check_epoch(epoch)
    return Since(offset, epoch)


def parse_since(since: Sequence[str], epoch: Sequence[str]) -> Since | None:
    """Read ``?since=<offset>&epoch=<epoch>`` from a handshake's query. Pure.

    Args:
        since: Every ``since`` value of the query.
        epoch: Every ``epoch`` value of the query.

    Returns:
        What to recover, or None when neither is given.

    Raises:
        ValueError: Given more than once, one without the other, ``since`` not a
            decimal integer of at least 0, or ``epoch`` not 1 to
            :data:`MAX_EPOCH_CHARS` printable ASCII characters; the message says
            which.
    """
    if not since and not epoch:
        return None
    if len(since) > 1 or len(epoch) > 1:
        raise ValueError("give since and epoch once each")
    if not since or not epoch:
        raise ValueError("since and epoch go together: give both or neither")
    text = since[0]
    if not (text.isascii() and text.isdigit() and len(text) <= 19):
        raise ValueError("since must be a decimal integer offset of at least 0")
    offset = int(text)
    if offset > _MAX_OFFSET:
        raise ValueError("since must be a decimal integer offset of at least 0")
    _check_epoch(epoch[0])
    return Since(offset, epoch[0])


def _members_request(data: dict[str, Any]) -> ClientMembers:
    request_id = data.get("id")
    if request_id is not None and (
        isinstance(request_id, bool) or not isinstance(request_id, (str, int))
    ):
        raise FrameError(
            ErrorCode.BAD_FRAME, 'a members "id" must be a string or integer'
        )
    limit = data.get("limit", DEFAULT_MEMBERS_PAGE)
    if (
        isinstance(limit, bool)
        or not isinstance(limit, int)
        or not 1 <= limit <= MAX_MEMBERS_PAGE
    ):
        raise FrameError(
            ErrorCode.BAD_FRAME,
            f'a members "limit" must be an integer from 1 to {MAX_MEMBERS_PAGE}',
        )
    cursor = data.get("cursor")
    after = None if cursor is None else decode_cursor(cursor)
    return ClientMembers(after=after, limit=limit, id=request_id)


def encode_cursor(user: str) -> str:
    """The opaque ``cursor`` of a members page that ended at ``user``."""
    raw = user.encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: object) -> str:
    """The user a ``cursor`` from :func:`encode_cursor` names.

    Raises:
        FrameError: ``bad_cursor``: not a string the server gave out.
    """
    if not isinstance(cursor, str) or not 0 < len(cursor) <= MAX_CURSOR_CHARS:
        raise FrameError(
            ErrorCode.BAD_CURSOR,
            'a members "cursor" must be the non-empty string a previous page gave',
        )
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        if encode_cursor(user := raw.decode("utf-8", "surrogatepass")) != cursor:
            raise ValueError("not canonical")
    except (ValueError, binascii.Error):
        raise FrameError(
            ErrorCode.BAD_CURSOR,
            'a members "cursor" must be one a previous page gave, as it was',
        ) from None
    return user


def encode_client_message(body: JSON, client_id: str | None = None) -> str:
    """Encode a client ``message`` frame (for clients and tests)."""
    frame: dict[str, JSON] = {"type": "message", "body": body}
    if client_id is not None:
        frame["client_id"] = client_id
    return _dumps(frame)


def encode_message(
    *,
    id: str,
    chat_id: str,
    user: str,
    body: JSON,
    ts: int,
    client_id: str | None,
) -> str:
    """Encode a server ``message`` frame. Encoded once per broadcast, not per member.

    Raises:
        ValueError: ``body`` holds something JSON cannot carry (NaN, infinity).
    """
    return _dumps(
        {
            "type": "message",
            "id": id,
            "chat_id": chat_id,
            "user": user,
            "body": body,
            "ts": ts,
            "client_id": client_id,
        }
    )


def encode_ready(
    *,
    connection_id: str,
    chat_id: str,
    user: str,
    members: Sequence[str],
    limits: Mapping[str, int],
    batch: bool,
    exp: int | None = None,
    count: int | None = None,
    members_json: str | None = None,
) -> str:
    """Encode the ``ready`` frame sent once right after accept.

    Args:
        connection_id: The connection's id.
        chat_id: The room.
        user: The connection's user.
        members: Users in the room, at most a bounded number of them.
        limits: The limits the client should know.
        batch: Whether the client gets ``batch`` frames.
        exp: The token's ``exp`` in Unix seconds (None for a token without one):
            the connection is closed with 4401 ``token_expired`` at ``exp`` plus
            the leeway unless a refresh moves it.
        count: Distinct users in the room; default ``len(members)``. The list is
            partial (``members_partial``) when it holds fewer.
        members_json: ``members`` already encoded (:class:`MemberListText`).
    """
    if count is None:
        count = len(members)
    text = _dumps(
        {
            "type": "ready",
            "protocol": PROTOCOL_VERSION,
            "connection_id": connection_id,
            "chat_id": chat_id,
            "user": user,
            "count": count,
            "members_partial": count > len(members),
            "limits": dict(limits),
            "batch": batch,
            "exp": exp,
        }
    )
    # The list last: it is the long part, and it may be encoded already.
    listed = _dumps(list(members)) if members_json is None else members_json
    return f'{text[:-1]},"members":{listed}}}'


class MemberListText:
    """The JSON text of a member list, encoded again only when the list changes.

    Every ``ready`` frame of a join storm into a big room lists the same first
    members (those who joined first), and encoding 100 names is most of the cost
    of the frame (about 7 of 10 us). One instance keeps the last list it encoded;
    a list equal to it costs one comparison.
    """

    __slots__ = ("_members", "_text")

    def __init__(self) -> None:
        self._members: list[str] = []
        self._text = "[]"

    def text(self, members: Sequence[str], last: str | None = None) -> str:
        """The JSON text of ``members``, followed by ``last`` if given.

        ``last`` is not remembered: a storm's joiners each add themselves to the
        same first members.
        """
        if members != self._members:  # a list that is not equal, or not a list
            self._members = list(members)
            self._text = _dumps(self._members)
        if last is None:
            return self._text
        sep = "," if members else ""
        return f"{self._text[:-1]}{sep}{_dumps(last)}]"


def with_history_fields(
    ready: str, epoch: str | None, offset: int | None, recovered: bool
) -> str:
    """Add ``epoch``, ``offset`` and ``recovered`` to an encoded ``ready`` frame.

    Args:
        ready: An encoded JSON object (the ``ready`` frame).
        epoch: The room's epoch, or None with history off.
        offset: The room's latest offset, or None with history off.
        recovered: Whether the messages after the client's ``since`` follow.
    """
    # Written out rather than a dict encoded and sliced: this runs on every join.
    return (
        f'{ready[:-1]},"epoch":{_dumps(epoch)},'
        f'"offset":{"null" if offset is None else int(offset)},'
        f'"recovered":{"true" if recovered else "false"}}}'
    )


def encode_history(
    *, chat_id: str, epoch: str, latest: int, frames: Sequence[str], more: bool
) -> str:
    """Encode the answer to a ``history`` request around already-encoded frames.

    Args:
        chat_id: The room.
        epoch: The epoch the frames' offsets belong to.
        latest: The room's latest offset.
        frames: ``message`` frames, ascending by offset, embedded unchanged.
        more: Whether older messages are kept than the first of ``frames``.
    """
    head = _dumps(
        {
            "type": "history",
            "chat_id": chat_id,
            "epoch": epoch,
            "latest": latest,
            "more": more,
        }
    )
    return f'{head[:-1]},"messages":[{",".join(frames)}]}}'


def encode_presence_diff(
    *,
    chat_id: str,
    joins: Sequence[str],
    leaves: Sequence[str],
    count: int,
    count_only: bool = False,
) -> str:
    """Encode a ``presence`` frame: who joined and left since the last one.

    Encoded once per room per interval, not per member.

    Args:
        chat_id: The room.
        joins: Users who joined since the last ``presence`` frame.
        leaves: Users who left since then.
        count: Distinct users in the room now.
        count_only: The room is over the size threshold: ``joins`` and ``leaves``
            are left empty, and only ``count`` is news.
    """
    return _dumps(
        {
            "type": "presence",
            "chat_id": chat_id,
            "joins": list(joins),
            "leaves": list(leaves),
            "count": count,
            "count_only": count_only,
        }
    )


def encode_members(
    *,
    chat_id: str,
    members: Sequence[str],
    count: int,
    cursor: str | None,
    request_id: str | int | None = None,
) -> str:
    """Encode the answer to a ``members`` request: one page of the member list.

    Args:
        chat_id: The room.
        members: This page's users, in the list's order.
        count: Distinct users in the room now.
        cursor: Send it back for the next page; None on the last page.
        request_id: The request's ``id``, echoed if it had one.
    """
    frame: dict[str, JSON] = {
        "type": "members",
        "chat_id": chat_id,
        "members": list(members),
        "count": count,
        "cursor": cursor,
    }
    if request_id is not None:
        frame["id"] = request_id
    return _dumps(frame)


def encode_presence(
    *, chat_id: str, event: Literal["join", "leave"], user: str, count: int
) -> str:
    """Encode a single-event ``presence`` frame: ``user`` joined or left.

    The shape of wschat 0.1, sent only with ``presence_format="events"``, and
    the one presence crosses processes in (so processes of both versions agree).
    """
    return _dumps(
        {
            "type": "presence",
            "chat_id": chat_id,
            "event": event,
            "user": user,
            "count": count,
        }
    )


def encode_error(code: str, detail: str) -> str:
    """Encode an ``error`` frame with a stable ``code`` and words for a person.

    Args:
        code: An :class:`~wschat.errors.ErrorCode`, or an application's own
            (:class:`~wschat.errors.Veto`).
        detail: Plain words for a person.
    """
    return _dumps({"type": "error", "code": code, "message": detail})


def encode_pong(ping_id: str | int | None = None) -> str:
    """Encode a ``pong`` frame, echoing the ping's ``id`` if it had one."""
    if ping_id is None:
        return '{"type":"pong"}'
    return _dumps({"type": "pong", "id": ping_id})


def encode_auth_ok(exp: int | None) -> str:
    """Encode the answer to a successful token refresh."""
    return _dumps({"type": "auth", "ok": True, "exp": exp})


def encode_token_expiring(exp: int) -> str:
    """Encode the notice sent before the token's ``exp``: refresh it in time."""
    return _dumps({"type": "token_expiring", "exp": exp})


def encode_resync(chat_id: str, detail: str) -> str:
    """Encode a ``resync`` frame: messages may have been missed; fetch history."""
    return _dumps({"type": "resync", "chat_id": chat_id, "message": detail})


def encode_batch(frames: Iterable[str]) -> str:
    """Join already-encoded frames into one ``batch`` frame without re-encoding them."""
    return '{"type":"batch","frames":[' + ",".join(frames) + "]}"
