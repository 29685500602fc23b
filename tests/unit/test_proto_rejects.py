"""Malformed input is refused by the proto layer with a typed error naming the problem."""

from __future__ import annotations

import json

import pytest

from proto import (
    BadTopic,
    MalformedPayload,
    NodeIdMismatch,
    PayloadTooLarge,
    SchemaViolation,
    TopicMismatch,
    UnsupportedSchemaVersion,
    new_event_id,
)
from proto.codec import decode, decode_uplink, encode
from proto.limits import MAX_PAYLOAD_BYTES
from proto.messages import PanicEvent, utc_now
from proto.topics import Channel, event_topic

NODE = "lhr-0001"
TOPIC = event_topic(NODE, "panic")


def _panic() -> dict[str, object]:
    event = PanicEvent(node_id=NODE, ts=utc_now(), event_id=new_event_id(), seq=5)
    return dict(json.loads(encode(event)))


def _bytes(payload: dict[str, object]) -> bytes:
    return json.dumps(payload).encode()


def test_a_valid_panic_event_is_accepted() -> None:
    assert isinstance(decode(TOPIC, _bytes(_panic())), PanicEvent)


def test_bad_json_is_malformed() -> None:
    with pytest.raises(MalformedPayload, match="not valid JSON") as info:
        decode(TOPIC, b'{"v": 1, "node_id": ')
    assert info.value.node_id == NODE
    assert info.value.reason == "malformed_json"


def test_non_utf8_bytes_are_malformed() -> None:
    with pytest.raises(MalformedPayload):
        decode(TOPIC, b"\xff\xfe\x00garbage")


def test_a_json_array_is_not_a_message() -> None:
    with pytest.raises(MalformedPayload, match="not a JSON object"):
        decode(TOPIC, b"[1, 2, 3]")


def test_wrong_types_name_the_field() -> None:
    payload = _panic() | {"seq": "five"}
    with pytest.raises(SchemaViolation, match=r"seq"):
        decode(TOPIC, _bytes(payload))


def test_a_numeric_string_is_not_coerced() -> None:
    payload = _panic() | {"held_ms": "100"}
    with pytest.raises(SchemaViolation, match="held_ms"):
        decode(TOPIC, _bytes(payload))


def test_unknown_fields_are_refused() -> None:
    payload = _panic() | {"colour": "red"}
    with pytest.raises(SchemaViolation, match="colour"):
        decode(TOPIC, _bytes(payload))


def test_missing_required_field_is_named() -> None:
    payload = _panic()
    del payload["event_id"]
    with pytest.raises(SchemaViolation, match="event_id"):
        decode(TOPIC, _bytes(payload))


def test_naive_timestamp_is_refused() -> None:
    payload = _panic() | {"ts": "2026-11-22T10:00:00"}
    with pytest.raises(SchemaViolation, match="ts"):
        decode(TOPIC, _bytes(payload))


def test_oversized_payload_is_refused_before_parsing() -> None:
    limit = MAX_PAYLOAD_BYTES[Channel.EVENT]
    with pytest.raises(PayloadTooLarge, match=str(limit)):
        decode(TOPIC, b"{" + b" " * limit + b"}")


def test_unknown_schema_version_is_refused() -> None:
    with pytest.raises(UnsupportedSchemaVersion, match="2"):
        decode(TOPIC, _bytes(_panic() | {"v": 2}))


def test_missing_schema_version_is_refused() -> None:
    payload = _panic()
    payload["v"] = None
    with pytest.raises(UnsupportedSchemaVersion):
        decode(TOPIC, _bytes(payload))


def test_node_id_in_payload_must_match_topic() -> None:
    with pytest.raises(NodeIdMismatch, match="lhr-0002") as info:
        decode(TOPIC, _bytes(_panic() | {"node_id": "lhr-0002"}))
    assert info.value.node_id == NODE


def test_event_type_must_match_topic() -> None:
    with pytest.raises(TopicMismatch, match="type"):
        decode(event_topic(NODE, "tamper"), _bytes(_panic()))


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "nb/v1",
        "other/v1/lhr-0001/status",
        "nb/v9/lhr-0001/status",
        "nb/v1/LHR 01/status",
        "nb/v1/x/status",
        "nb/v1/lhr-0001/colour",
        "nb/v1/lhr-0001/status/extra",
        "nb/v1/lhr-0001/event",
        "nb/v1/lhr-0001/event/panic/again",
        "nb/v1/+/status",
        "nb/v1/lhr-0001/event/unheard_of",
    ],
)
def test_bad_topics_are_refused(topic: str) -> None:
    with pytest.raises(BadTopic):
        decode(topic, _bytes(_panic()))


def test_uplink_decoder_refuses_server_channels() -> None:
    with pytest.raises(BadTopic, match="server→node"):
        decode_uplink(f"nb/v1/{NODE}/cmd/ping", b"{}")
