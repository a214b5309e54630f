"""A handshake's query string, split once: what redaction and admission both read.

Imports: the standard library only (pure layer).

The query string of a chat handshake is read twice: :mod:`wschat.redact` rewrites it
for the server's log, and :mod:`wschat.admission` looks for the token and the
``batch`` opt-in in it. Both read one :class:`Query`, which the
:class:`~wschat.transport.Handshake` carries: the string is split into its parts once,
and the parameters are decoded once, on first use.
"""

from __future__ import annotations

from urllib.parse import unquote

__all__ = ["Query"]


def _decode(raw: bytes) -> str:
    """One name or value, decoded the way ``urllib.parse.parse_qs`` decodes it.

    The bytes are read as latin-1 (what the endpoint always did), ``+`` is a space,
    and percent-escapes are UTF-8 (an invalid sequence becomes U+FFFD).
    """
    text = raw.decode("latin-1")
    if b"+" in raw:
        text = text.replace("+", " ")
    if b"%" in raw:
        text = unquote(text)
    return text


class Query:
    """A raw query string, split once into its ``&``-separated parts.

    Its parameters read as ``parse_qs(raw.decode("latin-1"),
    keep_blank_values=True)`` reads them: a part without ``=`` is a parameter with an
    empty value, empty parts are skipped, a repeated name keeps every value in order.

    Attributes:
        raw: The query string as sent (it may hold a token: never log it).
        parts: ``raw`` split at every ``&``, empty parts included, so that joining
            them with ``&`` gives ``raw`` back.
    """

    __slots__ = ("_params", "parts", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.parts: tuple[bytes, ...] = tuple(raw.split(b"&")) if raw else ()
        self._params: dict[str, list[str]] | None = None

    def get_all(self, name: str) -> list[str]:
        """Every value of the parameter called ``name`` (decoded), in order.

        Args:
            name: The decoded parameter name (``%74oken`` in the query is ``token``).

        Returns:
            The decoded values; empty when the parameter is absent.
        """
        params = self._params
        if params is None:
            params = {}
            for part in self.parts:
                if part:
                    raw_name, _, raw_value = part.partition(b"=")
                    params.setdefault(_decode(raw_name), []).append(_decode(raw_value))
            self._params = params
        return list(params.get(name, ()))

    def __repr__(self) -> str:
        return f"<Query {len(self.parts)} parts>"
