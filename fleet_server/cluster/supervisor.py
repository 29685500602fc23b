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

One fleet PKI serves the whole cluster: made here once (``<dir>/pki``, by
the one-box server's own `prepare_pki`) before any worker starts, and every
worker pointed at it (``NIGEHBAAN_PKI_DIR``; a cluster worker never makes a
CA of its own), so a node enrolled through any worker is trusted by every
district broker. A district broker is the one-box fleet broker
(`fleet_broker_config`: mTLS node listener, ACL, CRL) plus the bridge, with a
plain loopback listener kept for the workers' downlink. A revocation through
any worker rewrites ``<dir>/pki/fleet.crl``; `CrlWatch` (run from `watch`,
every second) sees it and makes every district broker re-read it (SIGHUP),
and restarts them when the CRL gained a serial, since Mosquitto keeps a live
connection on SIGHUP (`fleet_server.pki.runtime`).
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
from cryptography import x509

from fleet_server.broker import ManagedBroker
from fleet_server.broker.bridge import BridgeSettings, with_bridge
from fleet_server.broker.fleet import FleetBrokerFiles, fleet_broker_config
from fleet_server.cluster.rabbit import ClusterSpec, ManagedRabbit, loopback_port
from fleet_server.cluster.topology import bridge_user, declare_topology, worker_user
from fleet_server.pki.store import PkiPaths

__all__ = ["CrlWatch", "Supervisor", "schema_url"]

logger = logging.getLogger(__name__)

READY_LINE = b"nigehbaan server ready"


def schema_url(db_url: str, schema: str) -> str:
    """`db_url` with every connection's search_path set to `schema`."""
    sep = "&" if "?" in db_url else "?"
    return f"{db_url}{sep}options=-csearch_path%3D{schema}"


class CrlWatch:
    """Tells when the fleet CRL the workers write has changed, and whether to restart brokers.

    Any change (a revocation, or a worker's periodic re-sign) calls for a
    reload: Mosquitto re-reads ``crlfile`` on SIGHUP and refuses a revoked
    certificate's next connection. A CRL that gained a serial also calls for
    a restart, which drops the revoked node's live connection (Mosquitto
    keeps it on SIGHUP); restarts are at most one per `restart_min_interval_s`,
    the rest folded into one at the window's end, as `PkiRuntime` does for the
    one-box broker. A periodic re-sign restarts nothing.
    """

    def __init__(
        self,
        path: Path,
        *,
        restart_min_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.restart_min_interval_s = restart_min_interval_s
        self._clock = clock
        self._stamp = self._file_stamp()
        self._serials = self._read_serials()
        self._last_restart: float | None = None
        self._restart_due: float | None = None

    def _file_stamp(self) -> tuple[int, int] | None:
        # The CRL is replaced atomically (a new inode each time), so the pair changes.
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    def _read_serials(self) -> frozenset[int] | None:
        try:
            crl = x509.load_pem_x509_crl(self.path.read_bytes())
        except (OSError, ValueError) as exc:
            logger.warning("cannot read the fleet CRL %s: %s", self.path, exc)
            return None
        return frozenset(r.serial_number for r in crl)

    def poll(self) -> tuple[bool, bool]:
        """(reload, restart): what the district brokers must do now."""
        reload = restart = False
        stamp = self._file_stamp()
        if stamp is not None and stamp != self._stamp:
            self._stamp = stamp
            reload = True
            serials = self._read_serials()
            # Unreadable: restart too, rather than leave a revoked node connected.
            grew = serials is None or self._serials is None or not serials <= self._serials
            if serials is not None:
                self._serials = serials
            if grew and self._restart_due is None:
                self._restart_due = self._clock()
                if self._last_restart is not None:
                    self._restart_due = max(
                        self._restart_due, self._last_restart + self.restart_min_interval_s
                    )
        now = self._clock()
        if self._restart_due is not None and now >= self._restart_due:
            self._restart_due = None
            self._last_restart = now
            restart = True
        return reload, restart


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
        # Where nodes connect: each district broker's mTLS node listener.
        self.district_mtls_ports = {d: loopback_port() for d in districts}
        self.pki = PkiPaths((directory / "pki").resolve())
        self.crl_watch: CrlWatch | None = None
        self.crl_reloads = 0
        self.crl_restarts = 0
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
        self._prepare_pki()
        if should_stop():
            return
        self.rabbit.wait_all(timeout=max(1.0, deadline - time.monotonic()))
        # Declared once every node is up: a quorum queue gets its members when it is
        # declared (3.10 does not grow it later), and workers declare at connect.
        asyncio.run(self._declare())
        for worker in self.workers:
            self._start_worker(worker)
        cert, key = self.pki.service("broker")
        files = FleetBrokerFiles(
            ca_chain=self.pki.chain, certfile=cert, keyfile=key, crlfile=self.pki.crl
        )
        for district in self.districts:
            # The one-box fleet broker (mTLS node listener, ACL, CRL); the plain loopback
            # listener first, for the workers' downlink (`DistrictLink`) and local simulators.
            config = fleet_broker_config(
                self.directory / f"district-{district}",
                files=files,
                mqtts_port=self.district_mtls_ports[district],
                plain_port=self.district_ports[district],
                plain_writable=True,
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
        self.crl_watch = CrlWatch(self.pki.crl)
        for worker in self.workers:
            self._wait_worker(worker, deadline=deadline, should_stop=should_stop)

    def _prepare_pki(self) -> None:
        """The cluster's one development PKI, made as the one-box server makes its own."""
        from fleet_server.app import prepare_pki
        from fleet_server.db import make_engine
        from fleet_server.pki.runtime import PkiRuntime
        from fleet_server.settings import Settings

        made = prepare_pki(Settings(env="dev", data_dir=self.directory, pki_dir=self.pki.root))
        if made is None:
            raise RuntimeError(f"no fleet PKI in {self.pki.root}")
        engine = make_engine(self.database_url)
        try:
            # The district brokers refuse to start without their crlfile.
            PkiRuntime(paths=self.pki, engine=engine).write_crl()
        finally:
            engine.dispose()

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
            # The cluster's one PKI: enrollment through any worker, trusted by every broker.
            "NIGEHBAAN_PKI_DIR": str(self.pki.root),
            "NIGEHBAAN_INIT_PKI": "false",
            # The plain loopback listener: over mTLS every worker would be `fleet-server`
            # (the broker makes the certificate's name the client id), and two workers
            # would take each other's session over in a loop (seen; docs/cluster.md).
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
        """Called every second while up: says (once) when a part has died; enforces the CRL."""
        for worker in self.workers:
            proc = worker.process
            if proc is not None and proc.poll() is not None:
                logger.warning("worker %s exited with %s", worker.index, proc.returncode)
                worker.process = None
        self.enforce_crl()

    def enforce_crl(self) -> None:
        """Every district broker re-reads (or restarts on) a CRL a worker has rewritten."""
        if self.crl_watch is None:
            return
        reload, restart = self.crl_watch.poll()
        for district, broker in self.brokers.items():
            try:
                if reload and broker.running:
                    broker.reload()
                if restart:
                    broker.restart()
            except Exception:  # one broker's failure must not stop the others' revocation
                logger.exception("district %s broker: CRL %s failed", district,
                                 "restart" if restart else "reload")  # fmt: skip
        if reload:
            self.crl_reloads += 1
            logger.info("fleet CRL changed: district brokers reloaded")
        if restart:
            self.crl_restarts += 1
            logger.warning("fleet CRL gained a revocation: district brokers restarted")

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
            "pki_dir": str(self.pki.root),
            "districts": [
                {
                    "name": d,
                    "port": b.port,
                    "url": b.url,
                    "mtls_port": self.district_mtls_ports[d],
                    "mtls_url": b.tls_url,
                    "ca": str(self.pki.chain),
                }
                for d, b in self.brokers.items()
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
