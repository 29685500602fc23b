"""The FastAPI application: `create_app(settings)` and its lifespan.

The lifespan owns everything with a life of its own: the managed Mosquitto
(with `managed_broker`), the database engine, the MQTT link and its ingest
worker thread, the SSE broadcaster and the escalation timer loop (in a
TaskGroup that is cancelled on shutdown). They are kept on
`app.state.runtime` and reach routes through `api.deps`.

The OpenAPI document is at `/api/v1/openapi.json` and, for tools that look
for it at the root, `/openapi.json`; `/docs` (Swagger UI) is served with
its script and styles from this server (`fastapi-offline` ships them), so it
works in a control room with no internet. There is no ReDoc page: it loads
its logo from its vendor's CDN.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from fleet_server.alerting import ensure_default_policies
from fleet_server.alerting.snapshots import SnapshotPuller
from fleet_server.api.allow import AllowHeaderMiddleware
from fleet_server.api.errors import declare_error_bodies
from fleet_server.api.main import API_PREFIX, api_router
from fleet_server.api.routes.health import router as health_router
from fleet_server.audit.server import start_audit
from fleet_server.auth import SignInLimits, create_user
from fleet_server.broker import FleetBrokerFiles, ManagedBroker, fleet_broker_config, free_port
from fleet_server.broker.denial_alerts import alert_on_denials
from fleet_server.broker.fleet import FLEET_SERVER_USER
from fleet_server.console.audit_pages import router as audit_pages_router
from fleet_server.console.evidence_pages import router as evidence_pages_router
from fleet_server.console.fleet_pages import router as fleet_pages_router
from fleet_server.console.ota_pages import router as ota_pages_router
from fleet_server.console.plate_pages import router as plate_pages_router
from fleet_server.console.routes import router as console_router
from fleet_server.console.watchlist_hit_pages import router as watchlist_hit_pages_router
from fleet_server.console.watchlist_pages import router as watchlist_pages_router
from fleet_server.db import make_engine
from fleet_server.device_clock import DeviceTimeRules
from fleet_server.evidence.retention import evidence_retention_job
from fleet_server.feed_notify import feed_fanout_for
from fleet_server.ingest import IngestWorker
from fleet_server.leases import leases_for
from fleet_server.models import Role, User, UserCreate, utcnow
from fleet_server.mqtt import MqttLink
from fleet_server.node_commands import RecordingPublisher, SentCommands
from fleet_server.ota.signing import repository_for
from fleet_server.pki import IssuingCa, PkiPaths, init_dev_pki
from fleet_server.pki.runtime import PkiRuntime
from fleet_server.pki.store import LOOPBACK_NAMES
from fleet_server.presence import Silence
from fleet_server.privacy.console import router as privacy_pages_router
from fleet_server.ratelimit import TokenBucketLimiter
from fleet_server.runtime import LiveNotifier, Runtime
from fleet_server.schema import migrate
from fleet_server.settings import Settings
from fleet_server.stream import Broadcaster
from fleet_server.timers import TimerLoop, default_jobs

if TYPE_CHECKING:
    from fleet_server.cluster.consumer import ClusterIngest
    from fleet_server.cluster.downlink import ClusterDownlink

logger = logging.getLogger(__name__)

OPENAPI_URL = "/api/v1/openapi.json"


def prepare_database(settings: Settings) -> Engine:
    """Engine, tables, default escalation policies and the first-run admin."""
    engine = make_engine(settings.database_url)
    migrate(engine)
    with Session(engine) as session:
        ensure_default_policies(session=session)
        if settings.admin_password:
            exists = session.exec(
                select(User.id).where(User.username == settings.admin_username)
            ).first()
            if exists is None:
                create_user(
                    session=session,
                    user_in=UserCreate(
                        username=settings.admin_username,
                        role=Role.ADMIN,
                        password=settings.admin_password,
                    ),
                )
    return engine


def _stop_stale_broker(data_dir: Path) -> None:
    """A managed broker orphaned by a `kill -9` of the server would hold the port."""
    pid_path = data_dir / "mosquitto.pid"
    try:
        pid = int(pid_path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return
    if "mosquitto" in cmdline and str(data_dir) in cmdline:
        logger.warning("stopping mosquitto pid %s left over from a previous run", pid)
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def prepare_pki(settings: Settings) -> PkiPaths | None:
    """The online PKI directory if there is (or, in development, now is) an issuing CA.

    Also (re)issues the service certificates: broker (SANs loopback plus
    `broker_hostnames`), API, and the fleet server's own MQTT client
    certificate (CN `fleet-server`).
    """
    paths = PkiPaths(settings.pki_path.resolve())
    now = utcnow()
    if settings.makes_dev_pki:
        passphrase = settings.root_ca_passphrase.encode() if settings.root_ca_passphrase else None
        init_dev_pki(paths, passphrase=passphrase, now=now)
    if not paths.exists:
        logger.warning("no issuing CA in %s: enrollment and mTLS are off", paths.root)
        return None
    ca = IssuingCa(paths)
    hostnames = [*LOOPBACK_NAMES, *settings.broker_hostnames]
    if settings.public_hostname:
        hostnames.append(settings.public_hostname)
    for name in ("broker", "api"):
        ca.ensure_service(name, now=now, hostnames=list(dict.fromkeys(hostnames)))
    ca.ensure_service(FLEET_SERVER_USER, now=now, server=False, client=True)
    return paths


def start_managed_broker(settings: Settings, pki: PkiPaths | None = None) -> ManagedBroker:
    """Our own Mosquitto under `<data_dir>/broker`.

    With a PKI: the mTLS node listener (ACL, CRL) on `mqtts_port`, plus the
    plain loopback listener in development. Without: one plain loopback
    listener, as before provisioning existed.
    """
    data_dir = (settings.data_dir / "broker").resolve()
    _stop_stale_broker(data_dir)
    if pki is None:
        broker = ManagedBroker.loopback(data_dir, port=settings.managed_broker_port or None)
    else:
        cert, key = pki.service("broker")
        files = FleetBrokerFiles(ca_chain=pki.chain, certfile=cert, keyfile=key, crlfile=pki.crl)
        plain = (settings.managed_broker_port or free_port()) if settings.plain_listener else None
        config = fleet_broker_config(
            data_dir,
            files=files,
            mqtts_port=settings.mqtts_port or free_port(),
            mqtts_bind=settings.mqtts_bind,
            plain_port=plain,
        )
        broker = ManagedBroker(config)
    for attempt in range(20):
        try:
            broker.start()
            break
        except Exception:
            if attempt == 19:
                raise
            # The stale broker may still be releasing its port.
            time.sleep(0.25)
    return broker


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    broker: ManagedBroker | None = None
    broker_url = settings.broker_url
    engine = await asyncio.to_thread(prepare_database, settings)
    pki_paths = await asyncio.to_thread(prepare_pki, settings)
    # The settings in effect go into the audit log; checkpoints are signed from now on.
    audit_job = await asyncio.to_thread(
        start_audit, engine=engine, settings=settings, pki=pki_paths
    )
    pki: PkiRuntime | None = None
    if pki_paths is not None:
        pki = PkiRuntime(
            paths=pki_paths,
            engine=engine,
            revocation_action=settings.revocation_action,
            restart_min_interval_s=settings.revocation_restart_min_s,
        )
        # The broker refuses to start without its crlfile.
        await asyncio.to_thread(pki.write_crl)
    tls_files: tuple[str, str, str] | None = None
    if settings.managed_broker:
        broker = await asyncio.to_thread(start_managed_broker, settings, pki_paths)
        broker_url = broker.tls_url or broker.url
        if pki is not None:
            pki.broker = broker
    if broker_url and broker_url.startswith(("mqtts:", "ssl:")):
        tls_files = _service_tls(pki_paths)
    broadcaster = Broadcaster(queue_max=settings.sse_queue_max, loop=asyncio.get_running_loop())
    runtime = Runtime(
        settings=settings,
        engine=engine,
        signing_key=settings.signing_key(),
        broadcaster=broadcaster,
        notify=LiveNotifier(
            broadcaster=broadcaster,
            publisher=None,
            fanout=feed_fanout_for(engine, broadcaster),  # N workers: every worker's feed
        ),
        broker=broker,
        pki=pki,
        enroll_limiter=TokenBucketLimiter(per_minute=settings.enroll_rate_per_min),
    )
    if runtime.notify.fanout is not None:
        runtime.notify.fanout.start()
    # A panic pulls stills from the nearest cameras (fleet_server.alerting.snapshots).
    snapshots = SnapshotPuller(
        engine=engine, publisher=lambda: runtime.notify.publisher,
        radius_m=settings.snapshot_radius_m, max_nodes=settings.snapshot_max_nodes,
        ttl_s=settings.snapshot_ttl_s,
    )  # fmt: skip
    snapshots.start()
    runtime.notify.listeners.append(snapshots)
    cluster_downlink: ClusterDownlink | None = None
    if broker is not None:  # a node probing other nodes' topics becomes an alert
        alert_on_denials(broker.denials, engine=engine, notify=runtime.notify, settings=settings)
    if settings.cluster_amqp_urls:
        from fleet_server.cluster.downlink import ClusterDownlink

        runtime.cluster = _cluster_ingest(settings, engine, runtime.notify, pki_paths)
        # Commands, offers, snapshot pulls… go to each node's district broker.
        cluster_downlink = ClusterDownlink(runtime.cluster, engine=engine)
        runtime.notify.publisher = cluster_downlink
    elif broker_url:
        ingest_ref: list[IngestWorker] = []
        link = MqttLink(
            url=broker_url,
            on_message=lambda topic, payload: ingest_ref[0].submit(topic, payload),
            client_id=settings.mqtt_client_id,
            session_expiry_s=settings.mqtt_session_expiry_s,
            keepalive_s=settings.mqtt_keepalive_s,
            tls_files=tls_files,
        )
        runtime.mqtt = link
        # The server's own commands (alert_state) are remembered so their replies are known.
        sent_commands = SentCommands()
        runtime.notify.publisher = RecordingPublisher(link, sent_commands)
        runtime.ingest = IngestWorker(
            engine=engine,
            publisher=link,
            notify=runtime.notify,
            ack_timeout_s=settings.ack_followup_s,
            batch_max=settings.ingest_batch_max,
            queue_max=settings.ingest_queue_max,
            ack_hold_s=settings.ingest_ack_hold_s,
            device_time=DeviceTimeRules(
                future_s=settings.device_time_future_s, past_s=settings.device_time_past_s
            ),
            sent_commands=sent_commands,
            rejection_log_interval_s=settings.rejection_log_interval_s,
        )
        ingest_ref.append(runtime.ingest)
        runtime.ingest.start()
        link.start()
    else:
        logger.warning("no broker URL: MQTT ingest and node commands are off")
    app.state.runtime = runtime
    timers = TimerLoop(
        engine=engine,
        notify=runtime.notify,
        tick_s=settings.escalation_tick_s,
        jobs=default_jobs(
            ack_timeout_s=settings.ack_followup_s,
            offline_grace_s=settings.offline_grace_s,
            silence=Silence(
                intervals=settings.silence_intervals,
                default_s=settings.silence_default_s,
                min_s=settings.silence_min_s,
            ),
            # Silence counts only while the broker link is up (no link: never); a cluster
            # worker: while every district reaches it (ClusterDownlink.link_up).
            link_up=(
                cluster_downlink.link_up
                if cluster_downlink is not None
                else lambda: runtime.mqtt is not None and runtime.mqtt.connected.is_set()
            ),
            ota_publisher=lambda: runtime.notify.publisher,  # OTA offers (fleet_server.ota)
            ota_repository=lambda: repository_for(settings),  # signed, when set up
            plate_retention_days=settings.plate_retention_days,  # fleet_server.plates
            event_partitions=engine.dialect.name == "postgresql",  # fleet_server.partitions
            event_retention_days=settings.event_retention_days,
        )
        + ([audit_job] if audit_job is not None else [])  # signed audit checkpoints
        + [evidence_retention_job(settings)],  # evidence retention (docs/evidence.md)
        leases=leases_for(engine),  # N workers on PostgreSQL: singletons by lease
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            timer_task = tasks.create_task(timers.run(), name="timers")
            cluster_task = (
                tasks.create_task(runtime.cluster.run(), name="cluster-ingest")
                if runtime.cluster is not None
                else None
            )
            crl_task = (
                tasks.create_task(_refresh_crl(pki, settings.crl_refresh_s), name="crl-refresh")
                if pki is not None
                else None
            )
            logger.info(
                "fleet server up: db %s, broker %s",
                engine.url.render_as_string(hide_password=True),
                broker_url or "(none)",
            )
            try:
                yield
            finally:
                timer_task.cancel()
                if cluster_task is not None:
                    cluster_task.cancel()
                if crl_task is not None:
                    crl_task.cancel()
    finally:
        # Ingest first, while the link is still up: what is queued is stored and its
        # acks (held ones too) reach the nodes. A message arriving after that is not
        # stored and not acked; its node's outbox sends it again to the next server.
        if runtime.ingest is not None:
            await asyncio.to_thread(runtime.ingest.stop)
        await asyncio.to_thread(snapshots.stop)  # queued pulls still go out on the link
        if runtime.mqtt is not None:
            await asyncio.to_thread(runtime.mqtt.stop)
        if runtime.notify.fanout is not None:
            await asyncio.to_thread(runtime.notify.fanout.stop)
        engine.dispose()
        if broker is not None:
            await asyncio.to_thread(broker.stop)
        logger.info("fleet server stopped")


def _cluster_ingest(
    settings: Settings, engine: Engine, notify: LiveNotifier, pki_paths: PkiPaths | None
) -> ClusterIngest:
    """A cluster worker's ingest from its RabbitMQ partitions (docs/cluster.md).

    Alert changes go to `notify` (the SSE feed and its fan-out to the other
    workers); the node commands they carry go down through the partition's
    district, published by the consumer itself (so `notify.announce`, which
    sends none). District names are compared as `topology.district_key` makes them.
    District brokers given as ``mqtts://`` are reached with the fleet-server
    service certificate of the fleet PKI (their ACL lets it ack and command any
    node, as on the one-box broker).
    """
    from fleet_server.cluster.consumer import ClusterIngest
    from fleet_server.cluster.topology import district_key

    return ClusterIngest(
        urls=settings.cluster_amqp_urls,
        engine=engine,
        districts=[district_key(d) for d in settings.cluster_districts],
        worker_index=settings.cluster_worker_index,
        workers=settings.cluster_workers,
        replicas=settings.cluster_replicas,
        batch_max=settings.ingest_batch_max,
        ack_timeout_s=settings.ack_followup_s,
        device_time=DeviceTimeRules(
            future_s=settings.device_time_future_s, past_s=settings.device_time_past_s
        ),
        on_notices=notify.announce,
        district_tls_files=_service_tls(pki_paths),
        district_brokers={
            district_key(name): url
            for name, _, url in (
                entry.partition("=") for entry in settings.cluster_district_brokers if "=" in entry
            )
        },
    )


def _service_tls(pki_paths: PkiPaths | None) -> tuple[str, str, str] | None:
    """(CA chain, certificate, key) of this server's fleet-server service identity."""
    if pki_paths is None:
        return None
    cert, key = pki_paths.service(FLEET_SERVER_USER)
    return (str(pki_paths.chain), str(cert), str(key))


async def _refresh_crl(pki: PkiRuntime, every_s: float) -> None:
    """Re-sign the CRL well before its 7-day nextUpdate, so the broker never holds a stale one."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await asyncio.to_thread(pki.refresh)
        except Exception:
            logger.exception("CRL refresh failed; retrying at the next interval")


def _include_console(app: FastAPI) -> None:
    app.include_router(console_router)
    app.include_router(ota_pages_router)  # OTA artifacts and campaigns
    app.include_router(audit_pages_router)  # the audit log (docs/audit.md)
    app.include_router(fleet_pages_router)  # map, node, response times
    app.include_router(plate_pages_router)  # plate reads and camera health (docs/anpr.md)
    app.include_router(privacy_pages_router)  # privacy masks, private cameras (docs/privacy.md)
    app.include_router(watchlist_hit_pages_router)  # docs/watchlists-operations.md
    app.include_router(watchlist_pages_router)  # lists, entries, enrolment (docs/watchlists.md)
    app.include_router(evidence_pages_router)  # evidence, exports, holds (docs/evidence.md)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The fleet server application for `settings` (from the environment by default)."""
    settings = settings or Settings.from_env()
    app = FastAPIOffline(
        title="Nigehbaan fleet server",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url=OPENAPI_URL,
        docs_url="/docs",
        # ReDoc fetches its logo from its vendor's CDN; Swagger UI is enough.
        redoc_url=None,
        static_url="/docs/static",
        # No badge from the public validator service: nothing leaves this server.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.settings = settings
    app.state.sign_in_limits = SignInLimits(
        account=TokenBucketLimiter(
            per_minute=settings.login_account_per_min, burst=settings.login_account_burst
        ),
        address=TokenBucketLimiter(
            per_minute=settings.login_address_per_min, burst=settings.login_address_burst
        ),
    )
    app.include_router(api_router)
    _include_console(app)
    app.include_router(health_router)
    app.add_middleware(AllowHeaderMiddleware, paths=lambda: app.openapi()["paths"])

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = declare_error_bodies(generate(), prefix=API_PREFIX)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_at_root() -> JSONResponse:
        """The same document as `/api/v1/openapi.json`, where generic tools look first."""
        return JSONResponse(app.openapi())

    return app
