"""Typed errors for everything the contract refuses.

Each refusal names the problem so the consumer can count it by kind and log
it with the node id; none of them is allowed to crash a consumer loop.
"""

from __future__ import annotations


class ProtoError(ValueError):
    """Root of every contract violation; `reason` is a stable machine label."""

    reason = "invalid"

    def __init__(self, message: str, *, node_id: str | None = None) -> None:
        super().__init__(message)
        self.node_id = node_id


class BadTopic(ProtoError):
    """The topic is not one of ours, or its node id / name is malformed."""

    reason = "bad_topic"


class PayloadTooLarge(ProtoError):
    """The payload exceeds the size limit for its message kind."""

    reason = "too_large"


class MalformedPayload(ProtoError):
    """The payload is not UTF-8 JSON, or not a JSON object."""

    reason = "malformed_json"


class UnsupportedSchemaVersion(ProtoError):
    """The payload declares a schema version this side does not speak."""

    reason = "unsupported_schema_version"


class SchemaViolation(ProtoError):
    """The JSON is well formed but fields are missing, unknown or mistyped."""

    reason = "schema_violation"


class NodeIdMismatch(ProtoError):
    """The payload claims a node id other than the one in its topic."""

    reason = "node_id_mismatch"


class TopicMismatch(ProtoError):
    """The payload's own name (event type, command name) disagrees with the topic."""

    reason = "topic_mismatch"
