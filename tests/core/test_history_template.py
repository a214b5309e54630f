"""The message frame with an offset, encoded as a head and a tail a store splices.

``head + str(offset) + tail`` must be exactly the JSON encoding of the frame with
``"offset"`` added last, and the rest must be exactly today's ``message`` frame from
``wschat.protocol.encode_message``, so the template can move into ``protocol``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.core.test_protocol import client_ids, json_values
from wschat.history import FrameTemplate, encode_message_template
from wschat.protocol import encode_message

SETTINGS = settings(max_examples=200, deadline=None)
OFFSET_KEY = ',"offset":'
# What a JSON encoder with wschat's settings writes; independent of the module.
reference = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def fields(body: Any, client_id: str | None, **over: Any) -> dict[str, Any]:
    frame = {
        "id": "m1-7",
        "chat_id": "lobby",
        "user": "alice",
        "body": body,
        "ts": 1_700_000_000_123,
        "client_id": client_id,
    }
    frame.update(over)
    return frame


@SETTINGS
@given(
    body=json_values,
    client_id=client_ids,
    user=st.text(max_size=30),
    offset=st.integers(min_value=0, max_value=2**63),
)
def test_spliced_text_is_exactly_the_json_encoding(
    body: Any, client_id: str | None, user: str, offset: int
) -> None:
    kwargs = fields(body, client_id, user=user)
    template = encode_message_template(**kwargs)
    text = template.head + str(offset) + template.tail
    assert text == template.render(offset)
    assert text == reference({"type": "message", **kwargs, "offset": offset})
    assert json.loads(text) == {"type": "message", **kwargs, "offset": offset}


@SETTINGS
@given(body=json_values, client_id=client_ids)
def test_without_the_offset_it_is_todays_message_frame(
    body: Any, client_id: str | None
) -> None:
    kwargs = fields(body, client_id)
    template = encode_message_template(**kwargs)
    assert template.head.endswith(OFFSET_KEY)
    assert template.head[: -len(OFFSET_KEY)] + template.tail == encode_message(**kwargs)


def test_the_offset_is_the_last_field_and_the_tail_closes_the_object() -> None:
    template = encode_message_template(**fields("hi", None))
    assert template == FrameTemplate(
        '{"type":"message","id":"m1-7","chat_id":"lobby","user":"alice",'
        '"body":"hi","ts":1700000000123,"client_id":null,"offset":',
        "}",
    )
    assert template.render(42).endswith(',"offset":42}')
    # A body that ends like the placeholder does not confuse the split.
    tricky = encode_message_template(**fields('0}"offset":0}', "0}"))
    assert json.loads(tricky.render(9))["body"] == '0}"offset":0}'
    assert json.loads(tricky.render(9))["offset"] == 9


def test_the_frame_text_is_ascii_whatever_the_body() -> None:
    template = encode_message_template(**fields("é ✓ 😀 \u2028", "ç"))
    assert template.render(1).isascii()
    assert json.loads(template.render(1))["body"] == "é ✓ 😀 \u2028"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, [1.0, math.nan]])
def test_a_body_json_cannot_carry_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        encode_message_template(**fields(bad, None))
