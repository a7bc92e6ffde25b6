from __future__ import annotations

import datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands

from mailslot.protocols.amqp091 import decode_properties, delivery_mode, encode_properties, headers

short = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20).filter(
    lambda s: len(s.encode()) <= 255)
header_values = st.one_of(st.integers(-2**31, 2**31 - 1), st.booleans(), short)
props_strategy = st.builds(
    commands.Basic.Properties,
    content_type=st.none() | short,
    content_encoding=st.none() | short,
    headers=st.none() | st.dictionaries(st.text(alphabet="abcxyz-", min_size=1, max_size=8), header_values,
                                        max_size=4),
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    priority=st.none() | st.integers(0, 9),
    correlation_id=st.none() | short,
    reply_to=st.none() | short,
    expiration=st.none() | st.integers(0, 10**6).map(str),
    message_id=st.none() | short,
    timestamp=st.none() | st.integers(0, 2**31).map(lambda t: datetime.datetime.fromtimestamp(t, tz=datetime.UTC)),
    message_type=st.none() | short,
    user_id=st.none() | short,
    app_id=st.none() | short,
)


def _norm(v):
    return None if v == "" else v


@settings(max_examples=300, deadline=None)
@given(props_strategy)
def test_round_trip_against_pamqp(props: commands.Basic.Properties) -> None:
    raw = encode_properties(props)
    assert raw == props.marshal()
    decoded = decode_properties(raw)
    for name in props.__slots__:
        if name == "headers":
            assert _norm(decoded.headers) == (props.headers if props.headers else (None if props.headers is None else decoded.headers))
        else:
            assert _norm(getattr(decoded, name)) == _norm(getattr(props, name)), name
    assert delivery_mode(raw) == (props.delivery_mode or 0)
    h = headers(raw)
    if props.headers is None:
        assert h is None
    else:
        assert h == props.headers


def test_empty_block() -> None:
    assert delivery_mode(b"\x00\x00") == 0
    assert headers(b"\x00\x00") is None


def test_truncated_block_raises_value_error() -> None:
    import pytest
    raw = commands.Basic.Properties(content_type="text/plain", delivery_mode=2).marshal()
    with pytest.raises(ValueError):
        delivery_mode(raw[:5])
