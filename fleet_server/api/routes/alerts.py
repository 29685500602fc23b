"""Alerts: list, read, and move through the lifecycle.

The list filters by any number of states (the console's history view asks for
every closed state at once), type, severity, district, queue and node, and pages
with `offset`/`limit`, newest first. Every route sees only alerts in the
caller's scope (docs/access.md): others are 404, and counts leave them out.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from sqlmodel import col, func, select

from fleet_server.alerting import AlertNotFound, IllegalTransition, transition_alert
from fleet_server.api.deps import OperatorUser, RuntimeDep, SessionDep
from fleet_server.api.scope import ScopeDep, not_in_scope
from fleet_server.models import (
    Alert,
    AlertEscalation,
    AlertEscalationPublic,
    AlertPublic,
    AlertsPublic,
    AlertState,
    AlertTransition,
    AlertTransitionPublic,
    AlertTransitionsPublic,
    Severity,
    TransitionRequest,
)
from fleet_server.scope import Scope

router = APIRouter(prefix="/alerts", tags=["alerts"])


# An offset past any real history; bounded so the database never sees an
# integer it cannot hold.
MAX_OFFSET = 10_000_000


@router.get("")
def read_alerts(
    session: SessionDep,
    scope: ScopeDep,
    state: Annotated[list[AlertState] | None, Query(max_length=len(AlertState))] = None,
    queue: Annotated[str | None, Query(max_length=64)] = None,
    node_id: Annotated[str | None, Query(max_length=64)] = None,
    alert_type: Annotated[str | None, Query(alias="type", max_length=32)] = None,
    severity: Severity | None = None,
    district: Annotated[str | None, Query(max_length=64)] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlertsPublic:
    """Newest alerts first; filter by state (repeatable), queue (e.g. `catch_all`), node,
    type, severity or district; `count` is how many match in all."""
    query = scope.filter(select(Alert), Alert.district)
    count_query = scope.filter(select(func.count()).select_from(Alert), Alert.district)
    if state:
        query = query.where(col(Alert.state).in_([str(s) for s in state]))
        count_query = count_query.where(col(Alert.state).in_([str(s) for s in state]))
    for column, value in (
        (Alert.queue, queue),
        (Alert.node_id, node_id),
        (Alert.type, alert_type),
        (Alert.severity, severity),
        (Alert.district, district),
    ):
        if value is not None:
            query = query.where(column == value)
            count_query = count_query.where(column == value)
    query = query.order_by(col(Alert.received_at).desc(), col(Alert.id).desc())
    alerts = session.exec(query.offset(offset).limit(limit)).all()
    count = int(session.exec(count_query).one())
    return AlertsPublic(data=[AlertPublic.model_validate(a) for a in alerts], count=count)


def _get_alert(session: SessionDep, scope: Scope, alert_id: str) -> Alert:
    alert = session.get(Alert, alert_id)
    if alert is None or not scope.allows(alert.district):
        raise not_in_scope(f"alert {alert_id!r}")
    return alert


@router.get("/{alert_id}")
def read_alert(session: SessionDep, scope: ScopeDep, alert_id: str) -> AlertPublic:
    """One alert."""
    return AlertPublic.model_validate(_get_alert(session, scope, alert_id))


@router.get("/{alert_id}/transitions")
def read_transitions(session: SessionDep, scope: ScopeDep, alert_id: str) -> AlertTransitionsPublic:
    """Every lifecycle step of an alert, oldest first, with who made it."""
    _get_alert(session, scope, alert_id)
    rows = session.exec(
        select(AlertTransition)
        .where(AlertTransition.alert_id == alert_id)
        .order_by(col(AlertTransition.at), col(AlertTransition.id))
    ).all()
    return AlertTransitionsPublic(
        data=[AlertTransitionPublic.model_validate(r) for r in rows], count=len(rows)
    )


@router.get("/{alert_id}/escalations")
def read_escalations(
    session: SessionDep, scope: ScopeDep, alert_id: str
) -> list[AlertEscalationPublic]:
    """Every escalation step of an alert, oldest first: level, queue, reason, time."""
    _get_alert(session, scope, alert_id)
    rows = session.exec(
        select(AlertEscalation)
        .where(AlertEscalation.alert_id == alert_id)
        .order_by(col(AlertEscalation.at), col(AlertEscalation.id))
    ).all()
    return [AlertEscalationPublic.model_validate(r) for r in rows]


@router.post("/{alert_id}/transitions", status_code=status.HTTP_201_CREATED)
def create_transition(
    session: SessionDep,
    runtime: RuntimeDep,
    user: OperatorUser,
    scope: ScopeDep,
    alert_id: str,
    body: TransitionRequest,
) -> AlertTransitionPublic:
    """Move an alert to another state; 409 names the allowed states when it cannot."""
    _get_alert(session, scope, alert_id)
    try:
        row, notice = transition_alert(
            session=session,
            alert_id=alert_id,
            to=body.to,
            actor=f"user:{user.username}",
            note=body.note,
            ack_timeout_s=runtime.settings.ack_followup_s,
        )
    except AlertNotFound as exc:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    except IllegalTransition as exc:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=str(exc)) from None
    runtime.notify([notice])
    return AlertTransitionPublic.model_validate(row)
