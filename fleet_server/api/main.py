"""Collects every resource router under `/api/v1`, with the error answers every route may give."""

from __future__ import annotations

from fastapi import APIRouter

from fleet_server.api.errors import API_ERROR_RESPONSES
from fleet_server.api.routes import (
    alert_snapshots,
    alerts,
    api_tokens,
    audit,
    cluster_districts,
    enrollment,
    escalation,
    events,
    fleet_map,
    ingest,
    login,
    metrics,
    node_admin,
    node_detail,
    nodes,
    ota,
    plate_reads,
    power,
    response_time_report,
    stream,
    technician,
    users,
    users_admin,
    watchlist_hit_queue,
    watchlists,
)
from fleet_server.evidence import routes as evidence_routes
from fleet_server.privacy import routes as privacy_routes

API_PREFIX = "/api/v1"

api_router = APIRouter(prefix=API_PREFIX, responses=API_ERROR_RESPONSES)
for module in (login, users, nodes, alerts, events, escalation, metrics, ingest, stream):
    api_router.include_router(module.router)
api_router.include_router(users_admin.router)  # managing users (docs/console.md)
api_router.include_router(api_tokens.router)  # other agencies' systems (docs/access.md)
api_router.include_router(technician.router)  # the technician page (docs/console.md)
# Provisioning (docs/provisioning.md).
for module in (enrollment, node_admin):
    api_router.include_router(module.router)
# Power (docs/power.md).
api_router.include_router(power.router)
# OTA (docs/ota-server.md).
api_router.include_router(ota.router)
# Console pages' aggregates (docs/console.md): fleet map, node detail, response times.
for module in (fleet_map, node_detail, response_time_report):
    api_router.include_router(module.router)
# The audit log, read-only (docs/audit.md).
api_router.include_router(audit.router)
# Camera nodes' plate reads and camera health (docs/anpr.md).
api_router.include_router(plate_reads.router)
api_router.include_router(watchlists.router)  # watchlists and their hits (docs/watchlists.md)
api_router.include_router(privacy_routes.router)  # masks, private cameras (docs/privacy.md)
api_router.include_router(watchlist_hit_queue.router)  # hit console (watchlists-operations.md)
api_router.include_router(alert_snapshots.router)  # panic snapshot pull (same doc)
api_router.include_router(evidence_routes.router)  # evidence, exports, holds (docs/evidence.md)
api_router.include_router(cluster_districts.router)  # district uplink states (docs/cluster.md)
