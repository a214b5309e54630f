"""Chat ids are checked against a strict pattern before anything else happens."""

from __future__ import annotations

import pytest

from wschat.errors import InvalidChatId
from wschat.ids import IdSource, validate_chat_id


@pytest.mark.parametrize(
    "raw", ["a", "lobby", "room-1", "team_42", "org:acme.general", "9", "A" * 128]
)
def test_valid_chat_ids(raw: str) -> None:
    assert validate_chat_id(raw) == raw


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "-lobby",
        ".hidden",
        "..",
        "a/b",
        "../etc",
        "room 1",
        "room\n",
        "room\x00",
        "lobby*",
        "chat#1",
        "é",
        "١٢٣",  # non-ASCII digits
        "A" * 129,
    ],
)
def test_invalid_chat_ids(raw: str) -> None:
    with pytest.raises(InvalidChatId) as info:
        validate_chat_id(raw)
    assert (info.value.close_code, info.value.code) == (4400, "invalid_chat_id")


def test_id_source_is_unique_and_prefixed() -> None:
    source = IdSource("node")
    ids = [source.next() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(i.startswith("node-") for i in ids)
