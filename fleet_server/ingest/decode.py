"""Decoding a batch of raw MQTT messages into validated envelopes, refusals counted.

The same checks as `proto.codec.decode_uplink` (topic, channel direction,
strict payload model), with the topic parse cached because a node sends on
a handful of topics. A refusal never raises out of a batch: it is tallied by
(reason, node id) for the `IngestRejection` counters; the worker logs the
tally, one line per node and reason per interval (`ratelimit.LogGate`), so a
node sending garbage in a loop cannot fill the disk.

A payload without ``v`` is accepted as schema version 1 (`missing_version`
tells): the committed schemas have ``v`` optional with default 1, so making
it required would break the contract's compatibility rule, and a panic must
not be lost over a constant. The worker counts and logs such payloads per
node (docs/protocol.md).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from proto.codec import Envelope, decode
from proto.errors import BadTopic, ProtoError
from proto.topics import Topic, parse_topic

__all__ = ["Received", "Rejections", "decode_all", "missing_version", "received_payload"]

# (reason, node_id) → (count, last detail, last topic)
Rejections = dict[tuple[str, str], tuple[int, str, str]]


@dataclass(frozen=True)
class Received(Envelope):
    """A decoded message with the payload bytes it was decoded (and validated) from."""

    payload: bytes = b""


@functools.lru_cache(maxsize=65_536)
def _uplink_topic(topic: str) -> Topic:
    """`decode_uplink`'s topic check, cached: a node sends on a handful of topics.

    A refused topic raises and is therefore not cached.
    """
    parsed = parse_topic(topic)
    if not parsed.channel.uplink:
        raise BadTopic(f"{parsed.channel.value!r} is a server→node channel", node_id=parsed.node_id)
    return parsed


def decode_all(raw: Iterable[tuple[str, bytes]]) -> tuple[list[Envelope], Rejections]:
    """Decode every message; refusals are tallied by (reason, node_id), never raised."""
    envelopes: list[Envelope] = []
    rejections: Rejections = {}
    for topic, payload in raw:
        try:
            parsed = _uplink_topic(topic)
            envelopes.append(Received(parsed, decode(parsed, payload), payload))
        except ProtoError as exc:
            node_id = exc.node_id or ""
            n, _, _ = rejections.get((exc.reason, node_id), (0, "", ""))
            rejections[(exc.reason, node_id)] = (n + 1, str(exc), topic)
    return envelopes, rejections


def missing_version(envelope: Envelope) -> bool:
    """True when the payload carried no ``v`` (the model's default 1 filled it in)."""
    return "v" not in envelope.message.model_fields_set


def received_payload(envelope: Envelope) -> str | None:
    """The payload as received, for the `payload` column (None: re-encode the message).

    `decode_uplink` validated exactly these bytes (strict JSON against the model),
    so they are stored as they came, not re-encoded: nodes send canonical JSON
    (`proto.codec.encode`), and what a node sent is the better record anyway.
    """
    if isinstance(envelope, Received) and envelope.payload:
        try:
            return envelope.payload.decode("utf-8")
        except UnicodeDecodeError:  # JSON is UTF-8; keep the canonical dump if not
            return None
    return None
