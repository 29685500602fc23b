"""The managed Mosquitto broker: config generation and process control."""

from fleet_server.broker.config import BrokerConfig, Listener, TlsSettings
from fleet_server.broker.process import BrokerError, ManagedBroker, free_port

__all__ = ["BrokerConfig", "BrokerError", "Listener", "ManagedBroker", "TlsSettings", "free_port"]
