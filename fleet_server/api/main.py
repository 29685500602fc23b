"""Collects every resource router under `/api/v1`."""

from __future__ import annotations

from fastapi import APIRouter

from fleet_server.api.routes import (
    alerts,
    escalation,
    events,
    ingest,
    login,
    metrics,
    nodes,
    stream,
    users,
)

API_PREFIX = "/api/v1"

api_router = APIRouter(prefix=API_PREFIX)
for module in (login, users, nodes, alerts, events, escalation, metrics, ingest, stream):
    api_router.include_router(module.router)
