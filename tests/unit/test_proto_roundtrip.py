"""Every valid message survives bytes → model → bytes unchanged."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto.catalog import message_kinds
from proto.codec import decode, encode, topic_for
from proto.messages import WireModel
from tests.support.strategies import MESSAGES


def test_every_message_kind_has_a_strategy() -> None:
    assert sorted(MESSAGES) == sorted(k.name for k in message_kinds())


@pytest.mark.parametrize("kind", sorted(MESSAGES))
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_canonical_bytes_round_trip_unchanged(kind: str, data: st.DataObject) -> None:
    message: WireModel = data.draw(MESSAGES[kind])
    wire = encode(message)
    decoded = decode(topic_for(message), wire)
    assert encode(decoded) == wire
    assert decoded == message
