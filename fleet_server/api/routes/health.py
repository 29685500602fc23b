"""`/healthz`: liveness and readiness for load balancers and the end-to-end tests.

Outside `/api/v1` and without authentication, as probes expect; 503 when the
database cannot be reached.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from fleet_server.api.deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz", responses={503: {"description": "degraded: the database is unreachable"}})
def healthz(runtime: RuntimeDep) -> JSONResponse:
    """Liveness and readiness: database reachable, MQTT state, ingest counters."""
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
        body["ingest"] = {
            **vars(runtime.ingest.stats),
            "backlog": runtime.ingest.backlog,
            "ack_hold_s": runtime.ingest.acks.hold_s,
        }
    if runtime.cluster is not None:  # a cluster worker: not consuming while its database is down
        body["cluster"] = runtime.cluster.health()
        if not runtime.cluster.healthy:
            body["status"] = "degraded"
    body["sse_clients"] = runtime.broadcaster.subscribers
    fanout = runtime.notify.fanout
    if fanout is not None:  # N workers on PostgreSQL (docs/scaling-postgresql.md)
        body["feed_fanout"] = {
            "listening": fanout.listening.is_set(), "sent": fanout.sent,
            "received": fanout.received, "send_failures": fanout.send_failures,
            **fanout.timings(),  # recent NOTIFY → LISTEN hops (fleet_server.feed_notify)
        }  # fmt: skip
    if runtime.broker is not None:  # publishes the broker's ACL refused, per client (node) id
        body["broker_acl_denials"] = runtime.broker.denials.totals()
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)
