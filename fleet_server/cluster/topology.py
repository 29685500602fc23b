"""The RabbitMQ topology of a cluster deployment: names, routing keys and their declaration.

Traffic of a district arrives through that district's Mosquitto bridge, which
prefixes every topic with ``d/<district>/`` on the way up (and subscribes to
``d/<district>/nb/v1/+/ack`` and ``…/cmd/+`` on the way down, so a district
broker receives only its own nodes' acks and commands). RabbitMQ's MQTT
plugin turns ``/`` into ``.`` and publishes to ``amq.topic``:

    amq.topic ─(uplink only)─▶ nb.uplink ─d.<district>.#─▶ nb.ingest.<district>
                                  │ alternate exchange          │ x-dead-letter-exchange
                                  ▼                             ▼
                             nb.unrouted                     nb.dead

Each ``nb.ingest.<district>`` is a quorum queue with a single active
consumer: one worker at a time takes that district's traffic, in the order
the bridge delivered it, and a standby takes over (with what was not acked)
when it dies. Per-node order holds because a node's messages all cross one
bridge connection.

Why not a consistent-hash exchange keyed on the node id: it hashes the whole
routing key (or a header or a message property), and the MQTT plugin sets no
header or property that holds the node id (RabbitMQ 3.10 adds only
``x-mqtt-publish-qos`` and ``x-mqtt-dup``; a Mosquitto bridge cannot add
one). Hashing the routing key would send a node's ``status``, ``birth`` and
``event/<type>`` messages to different partitions, so two workers would write
the same node row at once and its sequence numbers would arrive out of order.
Partitioning by district broker keeps the order by construction, needs no
re-publishing hop, and scales the way the deployment does: more district
brokers (a big city runs several) are more partitions. docs/cluster.md has
the trade-offs. (In `nigehbaan cluster up` acks and commands skip the bridge:
the workers publish them to the district broker directly, see
`fleet_server.cluster.consumer.DistrictLink`; `downlink_routing_key` is the
path through the bridge, for deployments that use it.)

A message whose district has no queue goes to ``nb.unrouted`` (never
dropped); a message a worker refuses (undecodable, or one that fails with
the database up) goes to ``nb.dead`` with the reason in its headers
(`DEAD_REASON_HEADER`), as does one redelivered `DELIVERY_LIMIT` times.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import aio_pika
from aio_pika.abc import AbstractChannel, ExchangeType
from pamqp.common import FieldTable

from fleet_server.cluster.rabbit import RabbitUser
from proto.topics import PREFIX, Channel

__all__ = [
    "DEAD_EXCHANGE",
    "DEAD_QUEUE",
    "DEAD_REASON_HEADER",
    "DELIVERY_LIMIT",
    "MQTT_EXCHANGE",
    "UNROUTED_QUEUE",
    "UPLINK_EXCHANGE",
    "bridge_user",
    "declare_topology",
    "district_key",
    "district_prefix",
    "downlink_routing_key",
    "partition_queue",
    "split_routing_key",
    "uplink_binding_keys",
    "validate_district",
    "worker_user",
]

MQTT_EXCHANGE = "amq.topic"  # where RabbitMQ's MQTT plugin publishes and binds
UPLINK_EXCHANGE = "nb.uplink"
UNROUTED_EXCHANGE = "nb.unrouted"
UNROUTED_QUEUE = "nb.unrouted"
DEAD_EXCHANGE = "nb.dead"
DEAD_QUEUE = "nb.dead"
DEAD_REASON_HEADER = "x-nb-reason"
DEAD_DETAIL_HEADER = "x-nb-detail"
DISTRICT_HEADER = "x-nb-district"
# Redeliveries (worker crashes, database outages) before a message is dead-lettered.
DELIVERY_LIMIT = 20

_DISTRICT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_AMQP_PREFIX = PREFIX.replace("/", ".")


class TopologyError(ValueError):
    """A district name or routing key that the topology cannot carry."""


def validate_district(district: str) -> str:
    """A district (broker) name: 1-64 of a-z, 0-9, '-', '_' (no dots: it is a key word)."""
    if not _DISTRICT_RE.match(district):
        raise TopologyError(
            f"invalid district name {district!r}: 1-64 chars of a-z, 0-9, '-', '_', "
            "starting with a letter or digit"
        )
    return district


def district_key(name: str) -> str:
    """A district name as the cluster compares it: trimmed, lower case, then validated.

    The one place a district coming from outside the cluster's own settings
    (a node row's `district`, an operator's setting) is made comparable with
    partition and district-broker names: a node row saying ``South`` is the
    ``south`` district broker's node. Raises `TopologyError` for a name no
    district broker can have.
    """
    return validate_district(name.strip().lower())


def district_prefix(district: str) -> str:
    """The MQTT topic prefix the district's bridge adds upward and strips downward."""
    return f"d/{validate_district(district)}/"


def partition_queue(district: str) -> str:
    """The quorum queue of one district's uplink traffic."""
    return f"nb.ingest.{validate_district(district)}"


def uplink_binding_keys() -> list[str]:
    """`amq.topic` → `nb.uplink` binding keys: every uplink channel of every district.

    Built from `proto.topics.Channel`, so a new uplink channel is bound too;
    downlink (acks, commands the workers publish to `amq.topic`) is not.
    """
    keys = []
    for channel in Channel:
        if not channel.uplink:
            continue
        key = f"d.*.{_AMQP_PREFIX}.*.{channel.value}"
        keys.append(f"{key}.*" if channel.has_name else key)
    return keys


def split_routing_key(routing_key: str) -> tuple[str, str]:
    """``d.<district>.nb.v1.…`` → (district, MQTT topic ``nb/v1/…``)."""
    parts = routing_key.split(".")
    if len(parts) < 3 or parts[0] != "d":
        raise TopologyError(f"not a district routing key: {routing_key!r}")
    return parts[1], "/".join(parts[2:])


def downlink_routing_key(district: str, topic: str) -> str:
    """The `amq.topic` routing key that reaches `topic` on the district's broker."""
    return f"d.{validate_district(district)}.{topic.replace('/', '.')}"


async def declare_topology(
    channel: AbstractChannel, *, districts: Iterable[str], replicas: int = 3
) -> None:
    """Declare the exchanges, queues and bindings (idempotent; every worker does it at start).

    `replicas`: members of each quorum queue (the cluster's size, at most 3 or 5).
    """
    quorum: FieldTable = {"x-queue-type": "quorum", "x-quorum-initial-group-size": replicas}
    mqtt = await channel.get_exchange(MQTT_EXCHANGE, ensure=False)
    unrouted = await channel.declare_exchange(UNROUTED_EXCHANGE, ExchangeType.FANOUT, durable=True)
    unrouted_queue = await channel.declare_queue(UNROUTED_QUEUE, durable=True, arguments=quorum)
    await unrouted_queue.bind(unrouted, "")
    dead = await channel.declare_exchange(DEAD_EXCHANGE, ExchangeType.FANOUT, durable=True)
    dead_queue = await channel.declare_queue(DEAD_QUEUE, durable=True, arguments=quorum)
    await dead_queue.bind(dead, "")
    uplink = await channel.declare_exchange(
        UPLINK_EXCHANGE,
        ExchangeType.TOPIC,
        durable=True,
        arguments={"alternate-exchange": UNROUTED_EXCHANGE},
    )
    for key in uplink_binding_keys():
        await uplink.bind(mqtt, key)
    for district in districts:
        queue = await channel.declare_queue(
            partition_queue(district),
            durable=True,
            arguments={
                **quorum,
                "x-single-active-consumer": True,
                "x-dead-letter-exchange": DEAD_EXCHANGE,
                "x-delivery-limit": DELIVERY_LIMIT,
            },
        )
        await queue.bind(uplink, f"d.{district}.#")


def dead_letter_message(
    body: bytes, *, routing_key: str, reason: str, detail: str, district: str
) -> aio_pika.Message:
    """A copy of a refused message for `nb.dead`, saying why (headers) and from where."""
    return aio_pika.Message(
        body,
        headers={
            DEAD_REASON_HEADER: reason,
            DEAD_DETAIL_HEADER: detail[:500],
            DISTRICT_HEADER: district,
            "x-nb-routing-key": routing_key,
        },
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def bridge_user(district: str, password: str) -> RabbitUser:
    """The RabbitMQ user of one district's bridge: its own routing keys, its own session queues.

    Topic permissions (on `amq.topic`) let the bridge publish and subscribe
    only under ``d.<district>.``, so a district broker cannot inject another
    district's traffic or read its commands.
    """
    d = validate_district(district)
    own_queue = rf"mqtt-subscription-nb-bridge-{re.escape(d)}qos[01]"
    return RabbitUser(
        name=f"bridge-{d}",
        password=password,
        configure=rf"^{own_queue}$",
        write=rf"^(amq\.topic|{own_queue})$",
        read=rf"^(amq\.topic|{own_queue})$",
        topic_write=rf"^d\.{re.escape(d)}\.",
        topic_read=rf"^d\.{re.escape(d)}\.",
    )


def worker_user(password: str, *, name: str = "nb-worker") -> RabbitUser:
    """The fleet-server workers' user: declares the topology, consumes, publishes downlink."""
    return RabbitUser(name=name, password=password)
