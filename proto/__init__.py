"""The Nigehbaan wire contract: topics, message models, limits and encoding.

This package is the only place a topic string or a payload field is spelled.
Both the edge agent and the fleet server import it; it depends only on
pydantic, python-ulid and the standard library so it stays importable on the
oldest node image (Python 3.10). Besides the MQTT contract it holds the HTTPS
enrollment contract (`proto.enrollment`), the first-boot bundle
(`proto.bundle`) and the one definition of the sun both ends compute night by
(`proto.solar`); `make lint` checks that it imports nothing else.
"""

from proto.codec import decode, decode_uplink, encode, encode_canonical
from proto.errors import (
    BadTopic,
    MalformedPayload,
    NodeIdMismatch,
    PayloadTooLarge,
    ProtoError,
    SchemaViolation,
    TopicMismatch,
    UnsupportedSchemaVersion,
)
from proto.ids import new_event_id, new_request_id
from proto.topics import Channel, Topic, parse_topic

SCHEMA_VERSION = 1

__all__ = [
    "SCHEMA_VERSION",
    "BadTopic",
    "Channel",
    "MalformedPayload",
    "NodeIdMismatch",
    "PayloadTooLarge",
    "ProtoError",
    "SchemaViolation",
    "Topic",
    "TopicMismatch",
    "UnsupportedSchemaVersion",
    "decode",
    "decode_uplink",
    "encode",
    "encode_canonical",
    "new_event_id",
    "new_request_id",
    "parse_topic",
]
