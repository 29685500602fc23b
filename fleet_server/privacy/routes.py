"""`/privacy`: privacy masks per camera, private cameras, delivery, and the nodes that lag.

Reading a node's policy is for operators and admins; changing it (masks, a
private camera's agreement) is for admins, with a stated reason (recorded
with the new version and in the audit log). Every change is a new version,
sent at once to the node as a ``set_config`` command (``privacy.policy``);
``POST …/deliver`` sends the current version again (a node that was
offline, or lags). Everything is scoped by the node's district: a node out
of scope is a 404 worded like a missing one. docs/privacy.md.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from sqlmodel import Session, col, select

from fleet_server.api.deps import AdminUser, OperatorUser, RuntimeDep, SessionDep
from fleet_server.api.scope import ScopeDep, not_in_scope
from fleet_server.models import Node, utcnow
from fleet_server.models.event import Event
from fleet_server.models.plate import NodeCamera
from fleet_server.models.privacy import (
    MasksIn,
    NodePrivacy,
    PrivacyPolicyVersion,
    PrivateCamera,
    PrivateCameraIn,
)
from fleet_server.node_commands import NodeUnreachable, check_reachable
from fleet_server.privacy import service
from fleet_server.runtime import Runtime
from fleet_server.scope import Scope
from proto.codec import encode, topic_for

router = APIRouter(tags=["privacy"])

CameraId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


def _node(session: Session, scope: Scope, node_id: str) -> Node:
    node = session.get(Node, node_id)
    if node is None or not scope.allows(node.district):
        raise not_in_scope(f"node {node_id!r}")
    return node


def _version(row: PrivacyPolicyVersion | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "version": row.version, "cameras": service.redact_cameras(row.cameras),
        "changed_by": row.changed_by,
        "reason": row.reason, "created_at": row.created_at.isoformat(),
    }  # fmt: skip


def _private(session: Session, row: PrivateCamera) -> dict[str, Any]:
    now = utcnow()
    current = service.current_version(session, row.node_id)
    terms = ((current.cameras if current else {}).get(row.camera_id) or {}).get("private") or {}
    source = terms.get("source")
    health = session.get(NodeCamera, (row.node_id, row.camera_id))
    standards = terms.get("standards")
    if standards is None:
        verdict = None  # no minimums: not checked
    elif health is None:
        verdict = "unknown"  # the node has not reported this camera yet
    else:
        verdict = {"camera_below_standard": "below standard", None: "ok"}.get(
            health.fault, "unknown"
        )
    return {
        "standard_detail": _standards_detail(session, row) if standards is not None else None,
        "source": service.redact_source(source) if source else None,
        "standards": standards,
        "standard": verdict,
        "fault": health.fault if health is not None else None,
        "node_id": row.node_id, "camera_id": row.camera_id, "owner": row.owner,
        "agreement": row.agreement, "expires_at": row.expires_at.isoformat(),
        "allow": row.allow, "expired": row.expires_at <= now,
        "days_left": round((row.expires_at - now).total_seconds() / 86_400, 1),
        "updated_by": row.updated_by, "updated_at": row.updated_at.isoformat(),
        "warned_at": row.warned_at.isoformat() if row.warned_at else None,
    }  # fmt: skip


def _standards_detail(session: Session, row: PrivateCamera) -> str | None:
    """The node's latest standards verdict on the camera (a ``camera_below_standard`` fault).

    The node reports the measurements and reasons as the fault's detail
    (``<camera>: 640x360, 19.8 fps, clock unknown over 6 frames: …``), and the
    same code cleared when the camera meets them again.
    """
    query = (
        select(Event)
        .where(col(Event.node_id) == row.node_id, col(Event.type) == "node_fault")
        .order_by(col(Event.received_at).desc())
        .limit(200)
    )
    for event in session.exec(query).all():
        try:
            payload = json.loads(event.payload)
        except ValueError:
            continue
        detail = str(payload.get("detail") or "")
        if payload.get("code") == "camera_below_standard" and detail.startswith(
            f"{row.camera_id}:"
        ):
            state = "below standard" if payload.get("active", True) else "meets it again"
            return f"{state}: {detail.split(':', 1)[1].strip()}"
    return None


def _deliver(
    session: Session, runtime: Runtime, row: PrivacyPolicyVersion, actor: str
) -> dict[str, Any]:
    publisher = runtime.node_publisher
    try:  # a cluster worker may have no way to the node now: the version stays, unsent
        check_reachable(publisher, row.node_id)
    except NodeUnreachable as exc:
        session.commit()
        return {"version": row.version, "request_id": None, "published": False,
                "unreachable": {"reason": exc.reason, "message": exc.message}}  # fmt: skip
    try:
        command = service.policy_command(session, row, actor=actor, now=utcnow())
    except service.PrivacyError as exc:
        session.rollback()
        raise HTTPException(status_code=422, detail=str(exc)) from None
    session.commit()
    if publisher is not None:
        publisher.publish(topic_for(command), encode(command), qos=1)
    return {
        "version": row.version,
        "request_id": command.request_id,
        "published": publisher is not None,
    }


@router.get("/privacy/nodes/{node_id}")
def read_node_privacy(
    session: SessionDep, user: OperatorUser, scope: ScopeDep, node_id: str
) -> dict[str, Any]:
    """A node's current policy, the version it applies, its cameras and recent versions."""
    node = _node(session, scope, node_id)
    current = service.current_version(session, node_id)
    applied = session.get(NodePrivacy, node_id)
    cameras = sorted(
        session.exec(select(NodeCamera.camera_id).where(col(NodeCamera.node_id) == node_id)).all()
    )
    private = session.exec(select(PrivateCamera).where(col(PrivateCamera.node_id) == node_id)).all()
    return {
        "node_id": node.node_id,
        "district": node.district,
        "cameras": sorted(set(cameras) | set(current.cameras if current else {})),
        "current": _version(current),
        "applied": {"version": applied.version, "reported_at": applied.reported_at.isoformat()}
        if applied is not None else None,
        "lagging": current is not None and (applied is None or applied.version < current.version),
        "private": [_private(session, p) for p in private],
        "history": [_version(r) for r in service.history(session, node_id)],
    }  # fmt: skip


@router.put("/privacy/nodes/{node_id}/cameras/{camera_id}/masks")
def put_masks(
    session: SessionDep, runtime: RuntimeDep, user: AdminUser, scope: ScopeDep, node_id: str,
    camera_id: CameraId, data: MasksIn,
) -> dict[str, Any]:  # fmt: skip
    """Replace one camera's masks: a new version, audited, sent to the node at once."""
    node = _node(session, scope, node_id)
    row = service.set_masks(
        session, node, camera_id, data.masks, actor=user.username, reason=data.reason,
        now=utcnow(),
    )  # fmt: skip
    return _deliver(session, runtime, row, user.username)


@router.put("/privacy/nodes/{node_id}/cameras/{camera_id}/private")
def put_private_camera(
    session: SessionDep, runtime: RuntimeDep, user: AdminUser, scope: ScopeDep, node_id: str,
    camera_id: CameraId, data: PrivateCameraIn,
) -> dict[str, Any]:  # fmt: skip
    """Mark a camera as privately owned (owner, agreement, expiry, data classes): a new version."""
    node = _node(session, scope, node_id)
    camera, row = service.set_private_camera(
        session, node, camera_id, data, actor=user.username, now=utcnow()
    )
    delivered = _deliver(session, runtime, row, user.username)
    return {**delivered, "private": _private(session, camera)}


@router.post("/privacy/nodes/{node_id}/deliver", status_code=status.HTTP_202_ACCEPTED)
def deliver(
    session: SessionDep, runtime: RuntimeDep, user: AdminUser, scope: ScopeDep, node_id: str
) -> dict[str, Any]:
    """Send the node its current version again (it was offline, or it lags)."""
    _node(session, scope, node_id)
    row = service.current_version(session, node_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"node {node_id!r} has no privacy policy")
    try:  # asked to send it now: say plainly when it cannot go (a cluster worker)
        check_reachable(runtime.node_publisher, node_id)
    except NodeUnreachable as exc:
        raise HTTPException(status_code=exc.status_code, detail=exc.message) from None
    return _deliver(session, runtime, row, user.username)


@router.get("/privacy/lagging")
def read_lagging(session: SessionDep, user: OperatorUser, scope: ScopeDep) -> dict[str, Any]:
    """Nodes in scope that apply an older privacy version than their current one (or none)."""
    rows = service.lagging_nodes(session, scope)
    data = [
        {"node_id": r.node_id, "district": r.district, "current": r.current,
         "applied": r.applied, "reported_at": r.reported_at.isoformat() if r.reported_at else None}
        for r in rows
    ]  # fmt: skip
    return {"data": data, "count": len(data)}


@router.get("/privacy/private-cameras")
def read_private_cameras(
    session: SessionDep, user: OperatorUser, scope: ScopeDep
) -> dict[str, Any]:
    """Private cameras in scope with their agreements, soonest expiry first."""
    data = [_private(session, p) for p in service.private_cameras(session, scope)]
    return {"data": data, "count": len(data)}
