"""Size limits per message kind, checked before any parsing.

Limits keep one misbehaving node from making the server allocate or parse
megabytes; they are far above what a well-formed message of each kind needs
(images never travel over MQTT, only their SHA-256).
"""

from __future__ import annotations

from proto.topics import Channel

MAX_PAYLOAD_BYTES: dict[Channel, int] = {
    Channel.STATUS: 512,
    Channel.BIRTH: 8 * 1024,
    Channel.TELEMETRY: 4 * 1024,
    Channel.EVENT: 16 * 1024,
    Channel.REPLY: 64 * 1024,
    Channel.CMD: 16 * 1024,
    Channel.ACK: 32 * 1024,
}

# The largest of the above: what a broker's `message_size_limit` should allow.
MAX_ANY_PAYLOAD_BYTES = max(MAX_PAYLOAD_BYTES.values())
