"""What `nigehbaan cluster run` supervises: every part of the loopback cluster, started in order.

Order matters: the first RabbitMQ node is launched, and while it boots the
PostgreSQL schema is migrated (and the admin made), so N workers never race
to migrate; the other nodes join the first once it is up
(`ManagedRabbit.wait_all`); the topology is declared only when every node is
up, because a quorum queue takes its members when it is declared (a worker
that declared it against the first node alone made single-member
partitions, lost with that node) and before any district bridge connects,
so no bridged message finds its queue missing; then the district brokers and
the workers start. Workers started together each lead their own share of
the district partitions (`fleet_server.cluster.consumer`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from fleet_server.broker import BrokerConfig, Listener, ManagedBroker
from fleet_server.broker.bridge import BridgeSettings, with_bridge
from fleet_server.cluster.rabbit import ClusterSpec, ManagedRabbit, loopback_port
from fleet_server.cluster.topology import bridge_user, declare_topology, worker_user

__all__ = ["Supervisor", "schema_url"]

logger = logging.getLogger(__name__)

READY_LINE = b"nigehbaan server ready"


def schema_url(db_url: str, schema: str) -> str:
    """`db_url` with every connection's search_path set to `schema`."""
    sep = "&" if "?" in db_url else "?"
    return f"{db_url}{sep}options=-csearch_path%3D{schema}"


@dataclass
class _Worker:
    index: int
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"


class Supervisor:
    """Starts, watches and stops one loopback cluster (module docstring)."""

    def __init__(
        self,
        *,
        directory: Path,
        rabbit_nodes: int,
        districts: tuple[str, ...],
        workers: int,
        db_url: str,
        keep_db: bool,
        schema: str,
        admin_password: str,
    ) -> None:
        if not districts:
            raise ValueError("a cluster needs at least one district")
        self.directory = directory
        self.districts = districts
        self.db_url = db_url
        self.keep_db = keep_db
        self.schema = schema
        self.admin_password = admin_password
        self.worker_password = os.urandom(12).hex()
        self.bridge_passwords = {d: os.urandom(12).hex() for d in districts}
        users = (
            worker_user(self.worker_password),
            *(bridge_user(d, p) for d, p in self.bridge_passwords.items()),
        )
        self.spec = ClusterSpec.loopback(directory / "rabbit", size=rabbit_nodes, users=users)
        self.rabbit = ManagedRabbit(self.spec)
        self.brokers: dict[str, ManagedBroker] = {}
        # Known before anything starts: the workers publish acks and commands to them.
        self.district_ports = {d: loopback_port() for d in districts}
        self.workers = [
            _Worker(index=i, port=loopback_port(), data_dir=directory / f"worker-{i}")
            for i in range(workers)
        ]
        self._schema_made = False

    @property
    def database_url(self) -> str:
        return schema_url(self.db_url, self.schema)

    def worker_database_url(self, index: int) -> str:
        """Worker `index`'s database URL: the same for all (a chaos test relays one)."""
        del index
        return self.database_url

    def bridge_addresses(self, district: str) -> tuple[str, ...]:
        """Where `district`'s bridge connects: every RabbitMQ node's MQTT listener, in order."""
        del district
        return tuple(f"127.0.0.1:{n.mqtt_port}" for n in self.spec.nodes)

    def worker_urls(self) -> list[str]:
        user = worker_user(self.worker_password)
        return [self.spec.amqp_url(user, node) for node in self.spec.nodes]

    def start(self, *, timeout: float, should_stop: Callable[[], bool]) -> None:
        """Database, RabbitMQ, topology, district brokers, workers; raises what went wrong."""
        deadline = time.monotonic() + timeout
        logger.info("starting %s RabbitMQ nodes", len(self.spec.nodes))
        self.rabbit.launch()
        self._prepare_database()
        if should_stop():
            return
        self.rabbit.wait_all(timeout=max(1.0, deadline - time.monotonic()))
        # Declared once every node is up: a quorum queue gets its members when it is
        # declared (3.10 does not grow it later), and workers declare at connect.
        asyncio.run(self._declare())
        for worker in self.workers:
            self._start_worker(worker)
        for district in self.districts:
            config = BrokerConfig(
                data_dir=self.directory / f"district-{district}",
                listeners=(Listener(port=self.district_ports[district], allow_anonymous=True),),
            )
            bridge = BridgeSettings(
                district=district,
                addresses=self.bridge_addresses(district),
                username=f"bridge-{district}",
                password=self.bridge_passwords[district],
                downlink=False,  # the workers publish downlink to this broker themselves
            )
            broker = ManagedBroker(with_bridge(config, bridge))
            broker.start()
            self.brokers[district] = broker
        for worker in self.workers:
            self._wait_worker(worker, deadline=deadline, should_stop=should_stop)

    def _prepare_database(self) -> None:
        from sqlmodel import Session

        from fleet_server.alerting import ensure_default_policies
        from fleet_server.auth import create_user
        from fleet_server.db import make_engine
        from fleet_server.models import Role, UserCreate
        from fleet_server.schema import migrate

        with psycopg.connect(self.db_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE SCHEMA "{self.schema}"')
        self._schema_made = True
        engine = make_engine(self.database_url)
        try:
            migrate(engine)
            with Session(engine) as session:
                ensure_default_policies(session=session)
                create_user(
                    session=session,
                    user_in=UserCreate(username="admin", role=Role.ADMIN,
                                       password=self.admin_password),
                )  # fmt: skip
        finally:
            engine.dispose()

    async def _declare(self) -> None:
        import aio_pika

        connection = await aio_pika.connect(self.worker_urls()[0], timeout=10)
        try:
            channel = await connection.channel()
            await declare_topology(
                channel, districts=self.districts, replicas=min(3, len(self.spec.nodes))
            )
        finally:
            await connection.close()

    def _start_worker(self, worker: _Worker) -> None:
        worker.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "NIGEHBAAN_ENV": "dev",
            "NIGEHBAAN_CLUSTER_AMQP_URLS": ",".join(self.worker_urls()),
            "NIGEHBAAN_CLUSTER_DISTRICTS": ",".join(self.districts),
            "NIGEHBAAN_CLUSTER_WORKER_INDEX": str(worker.index),
            "NIGEHBAAN_CLUSTER_WORKERS": str(len(self.workers)),
            "NIGEHBAAN_CLUSTER_REPLICAS": str(min(3, len(self.spec.nodes))),
            "NIGEHBAAN_CLUSTER_DISTRICT_BROKERS": ",".join(
                f"{d}=mqtt://127.0.0.1:{p}" for d, p in self.district_ports.items()
            ),
        }
        command = [
            sys.executable, "-m", "edge_agent.console", "server", "--no-mqtt",
            "--db", self.worker_database_url(worker.index), "--data-dir", str(worker.data_dir),
            "--host", "127.0.0.1", "--port", str(worker.port),
        ]  # fmt: skip
        with worker.log_path.open("ab") as log:
            worker.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )  # fmt: skip

    def _wait_worker(
        self, worker: _Worker, *, deadline: float, should_stop: Callable[[], bool]
    ) -> None:
        while time.monotonic() < deadline and not should_stop():
            proc = worker.process
            if proc is None or proc.poll() is not None:
                raise RuntimeError(f"worker {worker.index} exited; see {worker.log_path}")
            if READY_LINE in worker.log_path.read_bytes():
                try:
                    if httpx.get(f"{worker.url}/healthz", timeout=2).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
        if not should_stop():
            raise RuntimeError(f"worker {worker.index} not healthy in time; see {worker.log_path}")

    def watch(self) -> None:
        """Called every second while up: says (once) when a part has died."""
        for worker in self.workers:
            proc = worker.process
            if proc is not None and proc.poll() is not None:
                logger.warning("worker %s exited with %s", worker.index, proc.returncode)
                worker.process = None

    def describe(self) -> dict[str, Any]:
        """What cluster.json records: where every part listens."""
        return {
            "dir": str(self.directory),
            "schema": self.schema,
            "database_url": self.database_url,
            "admin_user": "admin",
            "admin_password": self.admin_password,
            "amqp_urls": self.worker_urls(),
            "rabbit": [
                {
                    "nodename": n.nodename,
                    "amqp_port": n.amqp_port,
                    "mqtt_port": n.mqtt_port,
                    "pid": self.rabbit.pid(n),
                }
                for n in self.spec.nodes
            ],
            "districts": [
                {"name": d, "port": b.port, "url": b.url} for d, b in self.brokers.items()
            ],
            "workers": [
                {
                    "index": w.index,
                    "url": w.url,
                    "log": str(w.log_path),
                    "pid": w.process.pid if w.process else None,
                }
                for w in self.workers
            ],
        }

    def stop(self) -> None:
        """Workers, then district brokers, then RabbitMQ; then the schema unless kept."""
        for worker in self.workers:
            proc = worker.process
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for worker in self.workers:
            proc = worker.process
            if proc is None:
                continue
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            worker.process = None
        for broker in self.brokers.values():
            broker.stop()
        self.rabbit.stop()
        if self._schema_made and not self.keep_db:
            try:
                with psycopg.connect(self.db_url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f'DROP SCHEMA "{self.schema}" CASCADE')
            except psycopg.Error:
                logger.exception("could not drop schema %s", self.schema)
