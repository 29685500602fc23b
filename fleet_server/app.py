"""The FastAPI application: `create_app(settings)` and its lifespan.

The lifespan owns everything with a life of its own: the managed Mosquitto
(with `managed_broker`), the database engine, the MQTT link and its ingest
worker thread, the SSE broadcaster and the escalation timer loop (in a
TaskGroup that is cancelled on shutdown). They are kept on
`app.state.runtime` and reach routes through `api.deps`.
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
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from fleet_server.alerts import TimerLoop, ensure_default_policies
from fleet_server.api.main import api_router
from fleet_server.auth import create_user
from fleet_server.broker import ManagedBroker
from fleet_server.console.routes import router as console_router
from fleet_server.db import create_schema, make_engine
from fleet_server.ingest import IngestWorker
from fleet_server.models import Role, User, UserCreate
from fleet_server.mqtt import MqttLink
from fleet_server.runtime import LiveNotifier, Runtime
from fleet_server.settings import Settings
from fleet_server.stream import Broadcaster

logger = logging.getLogger(__name__)


def prepare_database(settings: Settings) -> Engine:
    """Engine, tables, default escalation policies and the first-run admin."""
    engine = make_engine(settings.database_url)
    create_schema(engine)
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


def start_managed_broker(settings: Settings) -> ManagedBroker:
    """Our own Mosquitto under `<data_dir>/broker` (loopback, anonymous for now)."""
    data_dir = (settings.data_dir / "broker").resolve()
    _stop_stale_broker(data_dir)
    broker = ManagedBroker.loopback(data_dir, port=settings.managed_broker_port or None)
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
    if settings.managed_broker:
        broker = await asyncio.to_thread(start_managed_broker, settings)
        broker_url = broker.url
    engine = await asyncio.to_thread(prepare_database, settings)
    broadcaster = Broadcaster(queue_max=settings.sse_queue_max, loop=asyncio.get_running_loop())
    runtime = Runtime(
        settings=settings,
        engine=engine,
        signing_key=settings.signing_key(),
        broadcaster=broadcaster,
        notify=LiveNotifier(broadcaster=broadcaster, publisher=None),
        broker=broker,
    )
    if broker_url:
        ingest_ref: list[IngestWorker] = []
        link = MqttLink(
            url=broker_url,
            on_message=lambda topic, payload: ingest_ref[0].submit(topic, payload),
            client_id=settings.mqtt_client_id,
            session_expiry_s=settings.mqtt_session_expiry_s,
            keepalive_s=settings.mqtt_keepalive_s,
        )
        runtime.mqtt = link
        runtime.notify.publisher = link
        runtime.ingest = IngestWorker(
            engine=engine,
            publisher=link,
            notify=runtime.notify,
            ack_timeout_s=settings.ack_followup_s,
            batch_max=settings.ingest_batch_max,
            queue_max=settings.ingest_queue_max,
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
        ack_timeout_s=settings.ack_followup_s,
        offline_grace_s=settings.offline_grace_s,
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            timer_task = tasks.create_task(timers.run(), name="escalation-timers")
            logger.info(
                "fleet server up: db %s, broker %s",
                engine.url.render_as_string(hide_password=True),
                broker_url or "(none)",
            )
            try:
                yield
            finally:
                timer_task.cancel()
    finally:
        if runtime.mqtt is not None:
            await asyncio.to_thread(runtime.mqtt.stop)
        if runtime.ingest is not None:
            await asyncio.to_thread(runtime.ingest.stop)
        engine.dispose()
        if broker is not None:
            await asyncio.to_thread(broker.stop)
        logger.info("fleet server stopped")


def _include_console(app: FastAPI) -> None:
    app.include_router(console_router)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The fleet server application for `settings` (from the environment by default)."""
    settings = settings or Settings.from_env()
    app = FastAPI(
        title="Nigehbaan fleet server",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url="/api/v1/openapi.json",
        docs_url="/docs",
    )
    app.state.settings = settings
    app.include_router(api_router)
    _include_console(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> JSONResponse:
        """Liveness and readiness: database reachable, MQTT state, ingest counters."""
        runtime: Runtime = app.state.runtime
        body: dict[str, Any] = {"status": "ok"}
        try:
            with runtime.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            body["db"] = "ok"
        except Exception as exc:
            body["status"], body["db"] = "degraded", f"error: {exc}"
        if runtime.mqtt is None:
            body["mqtt"] = "disabled"
        else:
            body["mqtt"] = "connected" if runtime.mqtt.subscribed.is_set() else "connecting"
        if runtime.ingest is not None:
            body["ingest"] = {**vars(runtime.ingest.stats), "backlog": runtime.ingest.backlog}
        body["sse_clients"] = runtime.broadcaster.subscribers
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    return app
