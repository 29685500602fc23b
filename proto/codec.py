"""Encoding to canonical JSON bytes and validating decode from the wire.

Canonical form: UTF-8 JSON, keys sorted, no whitespace, optional fields that
are unset omitted, timestamps as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. The same
bytes are what a node signs and what the golden files hold, so
``encode(decode(b)) == b`` for every canonical payload.

Decoding checks, in order: topic, size, JSON syntax, schema version, fields,
then that the payload agrees with its topic (node id, event type, command
name, request id). Each failure is a distinct ProtoError subclass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from pydantic import ValidationError

from proto.errors import (
    BadTopic,
    MalformedPayload,
    NodeIdMismatch,
    PayloadTooLarge,
    SchemaViolation,
    TopicMismatch,
    UnsupportedSchemaVersion,
)
from proto.limits import MAX_PAYLOAD_BYTES
from proto.messages import (
    COMMAND_MODELS,
    EVENT_MODELS,
    Ack,
    Birth,
    CommandBase,
    EventBase,
    Reply,
    Status,
    Telemetry,
    WireModel,
)
from proto.topics import Channel, Topic, parse_topic

_FIXED_MODELS: dict[Channel, type[WireModel]] = {
    Channel.STATUS: Status,
    Channel.BIRTH: Birth,
    Channel.TELEMETRY: Telemetry,
    Channel.REPLY: Reply,
    Channel.ACK: Ack,
}
_EVENT_TYPES = {model: name for name, model in EVENT_MODELS.items()}
_COMMAND_NAMES = {model: name for name, model in COMMAND_MODELS.items()}


def encode_canonical(data: Any) -> bytes:
    """Canonical JSON bytes of plain data (dicts, lists, str, numbers)."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def encode(message: WireModel) -> bytes:
    """Canonical JSON bytes of a message, ready to publish or sign."""
    return encode_canonical(message.model_dump(mode="json", exclude_none=True))


def topic_for(message: WireModel) -> str:
    """The topic a message is published on, derived from the message itself."""
    node = message.node_id
    if isinstance(message, EventBase):
        return str(Topic(node, Channel.EVENT, _EVENT_TYPES[type(message)]))
    if isinstance(message, CommandBase):
        return str(Topic(node, Channel.CMD, _COMMAND_NAMES[type(message)]))
    if isinstance(message, Reply):
        return str(Topic(node, Channel.REPLY, message.request_id))
    for channel, model in _FIXED_MODELS.items():
        if type(message) is model:
            return str(Topic(node, channel))
    raise TypeError(f"no topic for {type(message).__name__}")


def model_for(topic: Topic) -> type[WireModel]:
    """The model a payload on `topic` must satisfy."""
    if topic.channel is Channel.EVENT:
        assert topic.name is not None
        try:
            return EVENT_MODELS[topic.name]
        except KeyError:
            raise BadTopic(f"unknown event type {topic.name!r}", node_id=topic.node_id) from None
    if topic.channel is Channel.CMD:
        assert topic.name is not None
        try:
            return COMMAND_MODELS[topic.name]
        except KeyError:
            raise BadTopic(f"unknown command {topic.name!r}", node_id=topic.node_id) from None
    return _FIXED_MODELS[topic.channel]


@dataclass(frozen=True)
class Envelope:
    """A decoded message together with the topic it arrived on."""

    topic: Topic
    message: WireModel


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in item["loc"]) or "(payload)"
        parts.append(f"{loc}: {item['msg']}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def decode(topic: Topic | str, payload: bytes) -> WireModel:
    """Validate `payload` as the message `topic` carries, or raise a ProtoError."""
    parsed = parse_topic(topic) if isinstance(topic, str) else topic
    node_id = parsed.node_id
    limit = MAX_PAYLOAD_BYTES[parsed.channel]
    if len(payload) > limit:
        raise PayloadTooLarge(
            f"{parsed.channel.value} payload is {len(payload)} bytes; limit is {limit}",
            node_id=node_id,
        )
    model = model_for(parsed)
    try:
        message = model.model_validate_json(payload, strict=True)
    except ValidationError as exc:
        _raise_for(exc, parsed, payload)
        raise  # unreachable: _raise_for always raises
    if message.node_id != node_id:
        raise NodeIdMismatch(
            f"payload claims node {message.node_id!r} but arrived on {node_id!r}'s topic",
            node_id=node_id,
        )
    if isinstance(message, Reply) and message.request_id != parsed.name:
        raise TopicMismatch(
            f"reply for {message.request_id!r} on topic for {parsed.name!r}", node_id=node_id
        )
    return message


def _raise_for(exc: ValidationError, topic: Topic, payload: bytes) -> None:
    node_id = topic.node_id
    errors = exc.errors(include_url=False)
    kinds = {e["type"] for e in errors}
    if "json_invalid" in kinds or "json_type" in kinds:
        raise MalformedPayload(f"payload is not valid JSON: {_describe(exc)}", node_id=node_id)
    if any(e["type"] == "model_type" and e["loc"] == () for e in errors):
        raise MalformedPayload("payload is not a JSON object", node_id=node_id)
    version_errors = [e for e in errors if e["loc"] == ("v",)]
    if version_errors:
        raw = cast(dict[str, Any], json.loads(payload))
        found = raw.get("v", "missing")
        raise UnsupportedSchemaVersion(
            f"schema version {found!r} is not supported (this side speaks 1)", node_id=node_id
        )
    discriminator = {Channel.EVENT: "type", Channel.CMD: "name"}.get(topic.channel)
    if discriminator is not None and any(e["loc"] == (discriminator,) for e in errors):
        raise TopicMismatch(
            f"payload {discriminator} does not match topic {topic.channel.value}/{topic.name}",
            node_id=node_id,
        )
    raise SchemaViolation(_describe(exc), node_id=node_id)


def decode_uplink(topic: str, payload: bytes) -> Envelope:
    """Decode a message a node published; refuse server→node channels."""
    parsed = parse_topic(topic)
    if not parsed.channel.uplink:
        raise BadTopic(f"{parsed.channel.value!r} is a server→node channel", node_id=parsed.node_id)
    return Envelope(parsed, decode(parsed, payload))
