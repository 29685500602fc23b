"""MQTT topic names: builders for each channel and one parser for all of them.

Topics are versioned and per node: ``nb/v1/<node_id>/<channel>[/<name>]``.
The broker ACL (see fleet_server.broker) relies on the node id being the third
level, so a node can publish only under its own id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from proto.errors import BadTopic

ROOT = "nb"
VERSION = "v1"
PREFIX = f"{ROOT}/{VERSION}"

NODE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{2,63}$"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
REQUEST_ID_PATTERN = r"^[0-9A-Za-z_-]{1,64}$"
_NODE_ID_RE = re.compile(NODE_ID_PATTERN)
_NAME_RE = re.compile(NAME_PATTERN)
_REQUEST_ID_RE = re.compile(REQUEST_ID_PATTERN)


class Channel(str, Enum):
    """The channel level of a topic, and which way it flows."""

    STATUS = "status"  # node → server, retained, last-will sets offline
    BIRTH = "birth"  # node → server, on every (re)connect
    TELEMETRY = "telemetry"  # node → server, periodic
    EVENT = "event"  # node → server, `event/<type>`, durable outbox
    REPLY = "reply"  # node → server, `reply/<request_id>`
    CMD = "cmd"  # server → node, `cmd/<name>`
    ACK = "ack"  # server → node, after the database commit

    @property
    def uplink(self) -> bool:
        """True for channels the node publishes."""
        return self not in (Channel.CMD, Channel.ACK)

    @property
    def has_name(self) -> bool:
        """True for channels with a fifth level (event type, request id, command)."""
        return self in (Channel.EVENT, Channel.REPLY, Channel.CMD)


@dataclass(frozen=True)
class Topic:
    """A parsed topic."""

    node_id: str
    channel: Channel
    name: str | None = None

    def __str__(self) -> str:
        base = f"{PREFIX}/{self.node_id}/{self.channel.value}"
        return f"{base}/{self.name}" if self.name is not None else base


def validate_node_id(node_id: str) -> str:
    """Return `node_id` if it is a legal node id, else raise BadTopic."""
    if not isinstance(node_id, str) or not _NODE_ID_RE.match(node_id):
        raise BadTopic(
            f"invalid node id {node_id!r}: 3-64 chars of a-z, 0-9, '-', '_', "
            "starting with a letter or digit"
        )
    return node_id


def _validate_name(channel: Channel, name: str) -> str:
    pattern = _REQUEST_ID_RE if channel is Channel.REPLY else _NAME_RE
    if not pattern.match(name):
        raise BadTopic(f"invalid {channel.value} name {name!r}")
    return name


def status_topic(node_id: str) -> str:
    return str(Topic(validate_node_id(node_id), Channel.STATUS))


def birth_topic(node_id: str) -> str:
    return str(Topic(validate_node_id(node_id), Channel.BIRTH))


def telemetry_topic(node_id: str) -> str:
    return str(Topic(validate_node_id(node_id), Channel.TELEMETRY))


def event_topic(node_id: str, event_type: str) -> str:
    return str(
        Topic(validate_node_id(node_id), Channel.EVENT, _validate_name(Channel.EVENT, event_type))
    )


def reply_topic(node_id: str, request_id: str) -> str:
    return str(
        Topic(validate_node_id(node_id), Channel.REPLY, _validate_name(Channel.REPLY, request_id))
    )


def cmd_topic(node_id: str, name: str) -> str:
    return str(Topic(validate_node_id(node_id), Channel.CMD, _validate_name(Channel.CMD, name)))


def ack_topic(node_id: str) -> str:
    return str(Topic(validate_node_id(node_id), Channel.ACK))


# Subscription filters and broker ACL patterns. The server reads every node's
# uplink; a node reads only its own downlink, and the broker lets it write only
# its own uplink. Everything below is built from `Channel`, so a new channel
# reaches the server's subscriptions and the ACL together.
ANY_NODE = "+"
ACL_NODE = "%u"  # Mosquitto's ACL pattern token for the username (the certificate CN)


def _filter(node_level: str, channel: Channel) -> str:
    base = f"{PREFIX}/{node_level}/{channel.value}"
    return f"{base}/+" if channel.has_name else base


def channel_filter(channel: Channel, *, node_id: str | None = None) -> str:
    """The filter for `channel` of one node (or of every node when `node_id` is None).

    Channels with a fifth level (event type, request id, command name) take
    every name: ``nb/v1/+/event/+``.
    """
    node_level = ANY_NODE if node_id is None else validate_node_id(node_id)
    return _filter(node_level, channel)


def fleet_filter() -> str:
    """Every topic of this protocol version, all nodes and channels (``nb/v1/#``)."""
    return f"{PREFIX}/#"


def uplink_filters() -> list[str]:
    """Filters a fleet server subscribes to (all nodes, all uplink channels)."""
    return [channel_filter(c) for c in Channel if c.uplink]


def downlink_filters(node_id: str) -> list[str]:
    """Filters a node subscribes to: its own commands and acks."""
    return [channel_filter(c, node_id=node_id) for c in Channel if not c.uplink]


def node_acl_patterns() -> list[tuple[str, str]]:
    """(access, pattern) pairs for a Mosquitto ``pattern`` ACL: what a node may do.

    A node writes only its own uplink channels and reads only its own
    downlink, with ``%u`` (its certificate's CN, the node id) as the node level.
    """
    return [("write" if c.uplink else "read", _filter(ACL_NODE, c)) for c in Channel]


def parse_topic(topic: str) -> Topic:
    """Parse any Nigehbaan topic; raise BadTopic naming what is wrong."""
    if not isinstance(topic, str) or not topic:
        raise BadTopic("empty topic")
    if "+" in topic or "#" in topic:
        raise BadTopic(f"wildcards are not allowed in a published topic: {topic!r}")
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != ROOT:
        raise BadTopic(f"not a Nigehbaan topic: {topic!r}")
    if parts[1] != VERSION:
        raise BadTopic(f"unsupported topic version {parts[1]!r} in {topic!r}")
    node_id = validate_node_id(parts[2])
    try:
        channel = Channel(parts[3])
    except ValueError:
        raise BadTopic(f"unknown channel {parts[3]!r} in {topic!r}") from None
    if channel.has_name:
        if len(parts) != 5:
            raise BadTopic(f"channel {channel.value!r} needs exactly one name level: {topic!r}")
        return Topic(node_id, channel, _validate_name(channel, parts[4]))
    if len(parts) != 4:
        raise BadTopic(f"channel {channel.value!r} takes no further levels: {topic!r}")
    return Topic(node_id, channel)
