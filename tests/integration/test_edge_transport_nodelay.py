"""The node's MQTT socket runs with Nagle's algorithm off.

A panic event is one small packet; with Nagle on, one written while the
previous packet is unacknowledged waits for the broker's delayed ACK (up to
40 ms on Linux), which `bench panic` showed as a p95 step.
"""

from __future__ import annotations

import asyncio
import socket
import time

from edge_agent.mqtt import MqttTransport
from fleet_server.broker import ManagedBroker


def test_the_node_transport_turns_nagle_off(broker: ManagedBroker) -> None:
    async def body() -> None:
        transport = MqttTransport(
            client_id=f"nodelay-node-{time.monotonic_ns()}", host=broker.host, port=broker.port
        )
        task = asyncio.ensure_future(transport.run())
        try:
            deadline = time.monotonic() + 10
            while not transport.connected:
                assert time.monotonic() < deadline, "transport did not connect"
                await asyncio.sleep(0.02)
            sock = transport._client.socket()
            assert isinstance(sock, socket.socket)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            transport.stop()
            await asyncio.wait_for(task, 5)

    asyncio.run(body())
