"""RabbitMQ nodes of the tests' own, a district Mosquitto bridged to them, and a PostgreSQL schema.

Each test module that needs the cluster starts ONE set (module-scoped
fixtures): RabbitMQ nodes with unique names on free loopback ports, their
state under the module's tmp dir and a cookie of their own
(`fleet_server.cluster.rabbit`), so the machine's own RabbitMQ on 5672 is
never touched. Where rabbitmq-server is not installed the tests skip and say
so (`make test` installs it).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from fleet_server.broker import BrokerConfig, Listener, ManagedBroker, free_port
from fleet_server.broker.bridge import BridgeSettings, with_bridge
from fleet_server.cluster.rabbit import ClusterSpec, ManagedRabbit, RabbitError
from fleet_server.cluster.topology import bridge_user, worker_user
from tests.support.db import PG_URL, pg_unreachable

WORKER_PASSWORD = "worker-pw"  # loopback test nodes only


def rabbit_missing() -> str | None:
    """Why RabbitMQ cannot be started here, or None."""
    try:
        from fleet_server.cluster.rabbit import find_rabbitmq_server

        find_rabbitmq_server()
    except RabbitError as exc:
        return str(exc)
    if shutil.which("erl") is None:
        return "erl (Erlang) not found; `make test` installs erlang with rabbitmq-server"
    return None


@dataclass
class ClusterRig:
    """A running set: the RabbitMQ nodes, what to connect with, and district passwords."""

    rabbit: ManagedRabbit
    districts: tuple[str, ...]

    @property
    def spec(self) -> ClusterSpec:
        return self.rabbit.spec

    def worker_urls(self) -> list[str]:
        user = worker_user(WORKER_PASSWORD)
        return [self.spec.amqp_url(user, node) for node in self.spec.nodes]

    def bridge_settings(self, district: str) -> BridgeSettings:
        return BridgeSettings(
            district=district,
            addresses=tuple(f"127.0.0.1:{n.mqtt_port}" for n in self.spec.nodes),
            username=f"bridge-{district}",
            password=f"pw-{district}",
        )


def start_cluster(base_dir: Path, *, size: int, districts: tuple[str, ...]) -> ClusterRig:
    """RabbitMQ `size` nodes on loopback with the worker and district bridge users."""
    reason = rabbit_missing()
    if reason:
        print(reason)
        pytest.skip(reason)
    users = (worker_user(WORKER_PASSWORD), *(bridge_user(d, f"pw-{d}") for d in districts))
    spec = ClusterSpec.loopback(base_dir, size=size, users=users)
    rabbit = ManagedRabbit(spec)
    try:
        rabbit.start()
    except RabbitError:
        rabbit.stop()
        raise
    return ClusterRig(rabbit=rabbit, districts=districts)


def district_broker(data_dir: Path, bridge: BridgeSettings) -> ManagedBroker:
    """A district Mosquitto with a plain anonymous loopback listener, bridged to the cluster.

    The node-facing mTLS/ACL/CRL listener is the one-box broker's own
    (tested in test_broker_mtls.py); here the nodes are plain test clients.
    """
    config = BrokerConfig(
        data_dir=data_dir, listeners=(Listener(port=free_port(), allow_anonymous=True),)
    )
    return ManagedBroker(with_bridge(config, bridge))


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A throwaway PostgreSQL schema for a whole module (skips, saying why, when unreachable)."""
    reason = pg_unreachable()
    if reason:
        print(reason)
        pytest.skip(reason)
    schema = f"nbcluster_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


class CuttableLink:
    """A loopback TCP relay to `target` that a test can cut (refuse and drop) and restore.

    Stands between a worker and PostgreSQL to cut *that worker's* database
    link without touching the machine's PostgreSQL.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and drop every open one."""
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)
            server.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
