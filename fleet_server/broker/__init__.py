"""The managed Mosquitto broker: config generation and process control."""

from fleet_server.broker.config import BrokerConfig, Listener, TlsSettings
from fleet_server.broker.fleet import (
    NODE_ACL,
    FleetBrokerFiles,
    fleet_broker_config,
    write_acl,
)
from fleet_server.broker.process import BrokerError, ManagedBroker, free_port, stop_leftover

__all__ = [
    "NODE_ACL",
    "BrokerConfig",
    "BrokerError",
    "FleetBrokerFiles",
    "Listener",
    "ManagedBroker",
    "TlsSettings",
    "fleet_broker_config",
    "free_port",
    "stop_leftover",
    "write_acl",
]
