"""Alerts: list, read, and move through the lifecycle."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from sqlmodel import col, select

from fleet_server.alerting import AlertNotFound, IllegalTransition, transition_alert
from fleet_server.api.deps import CurrentUser, OperatorUser, RuntimeDep, SessionDep
from fleet_server.crud import list_alerts
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
    TransitionRequest,
)

router = APIRouter(prefix="/alerts", tags=["alerts"])


@router.get("")
def read_alerts(
    session: SessionDep,
    _user: CurrentUser,
    state: AlertState | None = None,
    queue: Annotated[str | None, Query(max_length=64)] = None,
    node_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlertsPublic:
    """Newest alerts first; filter by state, queue (e.g. `catch_all`) or node."""
    alerts, count = list_alerts(
        session=session, state=state, queue=queue, node_id=node_id, limit=limit
    )
    return AlertsPublic(data=[AlertPublic.model_validate(a) for a in alerts], count=count)


def _get_alert(session: SessionDep, alert_id: str) -> Alert:
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"no alert {alert_id!r}")
    return alert


@router.get("/{alert_id}")
def read_alert(session: SessionDep, _user: CurrentUser, alert_id: str) -> AlertPublic:
    """One alert."""
    return AlertPublic.model_validate(_get_alert(session, alert_id))


@router.get("/{alert_id}/transitions")
def read_transitions(
    session: SessionDep, _user: CurrentUser, alert_id: str
) -> AlertTransitionsPublic:
    """Every lifecycle step of an alert, oldest first, with who made it."""
    _get_alert(session, alert_id)
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
    session: SessionDep, _user: CurrentUser, alert_id: str
) -> list[AlertEscalationPublic]:
    """Every escalation step of an alert, oldest first: level, queue, reason, time."""
    _get_alert(session, alert_id)
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
    alert_id: str,
    body: TransitionRequest,
) -> AlertTransitionPublic:
    """Move an alert to another state; 409 names the allowed states when it cannot."""
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
