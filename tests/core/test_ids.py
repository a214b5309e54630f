"""Chat ids are checked against a strict pattern before anything else happens."""

from __future__ import annotations

import re

import pytest

from wschat.errors import InvalidChatId
from wschat.ids import IdSource, new_node_id, validate_chat_id


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


def test_id_source_counts_from_one() -> None:
    source = IdSource("c1a2b3c4")
    assert [source.next() for _ in range(3)] == [
        "c1a2b3c4-1",
        "c1a2b3c4-2",
        "c1a2b3c4-3",
    ]
    assert source.prefix == "c1a2b3c4"


def test_node_id_is_8_random_hex_digits() -> None:
    ids = {new_node_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"[0-9a-f]{8}", node) for node in ids)


def test_chat_id_pattern_limit_is_128_characters() -> None:
    assert validate_chat_id("a" * 128) == "a" * 128
    with pytest.raises(InvalidChatId) as info:
        validate_chat_id("a" * 129)
    assert info.value.detail == (
        "chat id must be 1-128 letters, digits, '_', '-', '.' or ':' "
        "and start with a letter or digit"
    )
