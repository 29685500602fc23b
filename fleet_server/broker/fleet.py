"""The fleet's broker configuration: mutual-TLS listener for nodes, ACL file, CRL.

docs/provisioning.md, "Broker": the TLS listener requires a client
certificate, takes the certificate's CN as the username (and client id), checks
the CRL, and applies `NODE_ACL`, under which a node publishes only under its
own ``nb/v1/<node_id>/…`` and reads only its own ``cmd/+`` and ``ack``; the
fleet server (CN ``fleet-server``) reads and writes everything under
``nb/v1/#``. The patterns come from `proto.topics` (`node_acl_patterns`,
`fleet_filter`), never spelled here. An optional plain listener on loopback
exists for development: the "watch" listener, anonymous and read-only under
`WATCH_ACL` (``mosquitto_sub`` sees every topic; a publish is refused with
PUBACK 135 for MQTT 5 and dropped for 3.1.1), so a local process cannot press
a panic, invent a node or mark a pillar offline through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fleet_server.broker.config import BrokerConfig, Listener, TlsSettings
from proto.topics import fleet_filter, node_acl_patterns

__all__ = [
    "FLEET_SERVER_USER",
    "NODE_ACL",
    "WATCH_ACL",
    "FleetBrokerFiles",
    "fleet_broker_config",
    "write_acl",
]

FLEET_SERVER_USER = "fleet-server"


def _render_acl() -> str:
    """The ACL text: the fleet server everywhere, each node only its own topics (`proto.topics`).

    The fleet server also reads the brokers' bridge states: a cluster worker follows
    each district's uplink bridge on its district broker (`fleet_server.cluster.uplink`).
    """
    lines = [
        f"user {FLEET_SERVER_USER}",
        f"topic readwrite {fleet_filter()}",
        "topic read $SYS/broker/connection/+/state",
    ]
    lines += [f"pattern {access} {pattern}" for access, pattern in node_acl_patterns()]
    return "\n".join(lines) + "\n"


NODE_ACL = _render_acl()

# Lines before any `user` line apply to anonymous clients: read everything, write nothing.
WATCH_ACL = f"topic read {fleet_filter()}\n"


def write_acl(path: Path, *, text: str = NODE_ACL) -> Path:
    """Write the fleet ACL file (the same text for managed and external brokers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@dataclass(frozen=True)
class FleetBrokerFiles:
    """The PKI files the TLS listener reads."""

    ca_chain: Path
    certfile: Path
    keyfile: Path
    crlfile: Path


def fleet_broker_config(
    data_dir: Path,
    *,
    files: FleetBrokerFiles,
    mqtts_port: int,
    mqtts_bind: str = "127.0.0.1",
    plain_port: int | None = None,
    plain_writable: bool = False,
) -> BrokerConfig:
    """A managed broker with the mTLS node listener, and a plain loopback one when `plain_port`.

    The plain listener (when present) comes first, so `ManagedBroker.url`
    stays the development URL; it is the read-only watch listener (`WATCH_ACL`),
    or, with `plain_writable`, an anonymous loopback listener without an ACL:
    the loopback cluster's district brokers keep one for the workers'
    downlink and for simulated nodes on the same machine (docs/cluster.md,
    "mTLS on the district brokers"). The TLS one is `listeners[-1]`.
    """
    acl = write_acl(data_dir / "acl")
    listeners: list[Listener] = []
    if plain_port is not None and plain_writable:
        listeners.append(Listener(port=plain_port, allow_anonymous=True))
    elif plain_port is not None:
        watch_acl = write_acl(data_dir / "watch.acl", text=WATCH_ACL)
        listeners.append(Listener(port=plain_port, allow_anonymous=True, acl_file=watch_acl))
    listeners.append(
        Listener(
            port=mqtts_port,
            bind_address=mqtts_bind,
            acl_file=acl,
            tls=TlsSettings(
                cafile=files.ca_chain,
                certfile=files.certfile,
                keyfile=files.keyfile,
                crlfile=files.crlfile,
                use_username_as_clientid=True,
            ),
        )
    )
    # Count the ACL's refusals (`fleet_server.broker.denials`): a node probing
    # other nodes' topics is otherwise invisible.
    return BrokerConfig(data_dir=data_dir, listeners=tuple(listeners), read_denials=True)
