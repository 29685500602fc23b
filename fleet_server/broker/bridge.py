"""A district Mosquitto's bridge up to the RabbitMQ cluster's MQTT plugin.

In a cluster deployment (docs/cluster.md) nodes keep talking to a district
Mosquitto exactly as to the one-box broker (mTLS per node, ACL, CRL: the
same `fleet_broker_config`); this adds one ``connection`` block that carries
the nodes' uplink up, prefixed ``d/<district>/``, and brings down only this
district's ``ack`` and ``cmd`` topics (stripping the prefix). The topic lines
come from `proto.topics` (every uplink channel up, every downlink channel
down), never spelled by hand.

The bridge is a persistent MQTT 3.1.1 session (RabbitMQ 3.10's MQTT plugin
speaks 3.1.1; ``try_private`` off, RabbitMQ refuses Mosquitto's bridge
flag): while the cluster is unreachable, Mosquitto queues upward messages in
its persisted store up to `BrokerConfig.max_queued_messages` and sends them,
in order, when the link returns. With ``notifications_local_only`` the
bridge's state is published on the district broker only, retained, at
`bridge_state_topic` ("1" up, "0" down): what the console reads to show a
district as degraded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fleet_server.broker.config import BrokerConfig, BrokerConfigError
from fleet_server.cluster.topology import district_prefix, validate_district
from proto.topics import Channel, channel_filter

__all__ = ["BridgeSettings", "bridge_lines", "bridge_state_topic", "with_bridge"]


@dataclass(frozen=True)
class BridgeSettings:
    """Where a district broker's bridge goes and how it signs in."""

    district: str
    # host:port of each RabbitMQ node's MQTT listener; Mosquitto fails over in order.
    addresses: tuple[str, ...]
    username: str
    password: str
    keepalive_s: int = 10
    # Reconnect back-off (Mosquitto's restart_timeout base and cap).
    restart_min_s: int = 1
    restart_max_s: int = 5
    # TLS to the cluster: CA file, and this broker's client certificate and key.
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    # False: acks and commands come from the workers straight to this broker
    # (`fleet_server.cluster.consumer.DistrictLink`), not down the bridge.
    downlink: bool = True

    def __post_init__(self) -> None:
        validate_district(self.district)
        if not self.addresses:
            raise BrokerConfigError("a bridge needs at least one RabbitMQ address")
        for value in (self.username, self.password):
            if not value or any(c.isspace() for c in value):
                raise BrokerConfigError("bridge username and password: non-empty, no spaces")

    @property
    def connection_name(self) -> str:
        return f"nb-cluster-{self.district}"


def bridge_state_topic(settings: BridgeSettings) -> str:
    """Retained on the district broker: "1" while the bridge is up, "0" while down."""
    return f"$SYS/broker/connection/{settings.connection_name}/state"


def bridge_lines(settings: BridgeSettings) -> tuple[str, ...]:
    """The ``connection`` block for mosquitto.conf."""
    prefix = district_prefix(settings.district)
    lines = [
        "",
        f"connection {settings.connection_name}",
        f"address {' '.join(settings.addresses)}",
        "round_robin false",
        "bridge_protocol_version mqttv311",
        "try_private false",
        "cleansession false",
        f"remote_clientid nb-bridge-{settings.district}",
        f"local_clientid nb-bridge-local-{settings.district}",
        f"remote_username {settings.username}",
        f"remote_password {settings.password}",
        f"keepalive_interval {settings.keepalive_s}",
        f"restart_timeout {settings.restart_min_s} {settings.restart_max_s}",
        "start_type automatic",
        "notifications true",
        "notifications_local_only true",
        # Else Mosquitto names the topic after remote_clientid (nb-bridge-<district>).
        f"notification_topic {bridge_state_topic(settings)}",
    ]
    if settings.cafile:
        lines.append(f"bridge_cafile {settings.cafile}")
    if settings.certfile and settings.keyfile:
        lines += [f"bridge_certfile {settings.certfile}", f"bridge_keyfile {settings.keyfile}"]
    for channel in Channel:
        if not channel.uplink and not settings.downlink:
            continue
        direction = "out" if channel.uplink else "in"
        lines.append(f'topic {channel_filter(channel)} {direction} 1 "" {prefix}')
    return tuple(lines)


def with_bridge(config: BrokerConfig, settings: BridgeSettings) -> BrokerConfig:
    """`config` (a district broker's) with the bridge to the cluster added."""
    return dataclasses.replace(config, extra_lines=(*config.extra_lines, *bridge_lines(settings)))
