"""Node registration, lifecycle, revocation, and commands/replies (docs/provisioning.md).

Kept apart from `nodes.py` (the read side) because everything here changes a
node's identity or talks to it. Refusals use the provisioning shape
``{"detail": {"reason", "message"}}``.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, status
from sqlmodel import Session

from fleet_server import audit
from fleet_server.api.deps import AdminUser, RuntimeDep, SessionDep, require_roles
from fleet_server.api.routes.enrollment import refusal
from fleet_server.api.scope import ScopeDep, not_in_scope
from fleet_server.enrollment import EnrollmentRefused, register_node, revoke_node, set_lifecycle
from fleet_server.models import (
    LifecycleIn,
    NodeCommand,
    NodeCommandIn,
    NodeCommandOut,
    NodeLifecycle,
    NodePublic,
    NodeRegister,
    NodeReplyPublic,
    RevokeIn,
    RevokeOut,
    Role,
    User,
    utcnow,
)
from fleet_server.models import Node as NodeRow
from fleet_server.node_commands import (
    CommandRefused,
    NodeUnreachable,
    check_reachable,
    make_command,
    reply_for,
)
from fleet_server.runtime import Runtime
from fleet_server.scope import Scope
from proto.codec import encode, topic_for
from proto.enrollment import RefusalReason

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/nodes", tags=["nodes"])

FieldUser = Annotated[User, Depends(require_roles(Role.ADMIN, Role.TECHNICIAN))]
CommandUser = Annotated[User, Depends(require_roles(Role.ADMIN, Role.OPERATOR, Role.TECHNICIAN))]


def _node_in_scope(session: Session, scope: Scope, node_id: str) -> None:
    """404 for a node outside the caller's scope (an unknown node is the route's own answer)."""
    node = session.get(NodeRow, node_id)
    if node is not None and not scope.allows(node.district):
        raise not_in_scope(f"node {node_id!r}")


def _publish_revocation(runtime: Runtime, node_id: str) -> str:
    if runtime.pki is None:
        return "no-pki"
    return runtime.pki.publish_revocation([node_id])


@router.post("", status_code=status.HTTP_201_CREATED)
def register(
    session: SessionDep, user: FieldUser, scope: ScopeDep, node_in: NodeRegister
) -> NodePublic:
    """A technician registers a node (lifecycle `registered`) in a district of their scope."""
    if not scope.allows(node_in.district):
        raise refusal("forbidden", "that district is outside your scope", status_code=403)
    existing = session.get(NodeRow, node_in.node_id)
    if existing is not None and not scope.allows(existing.district):
        # Not another district's node re-registered into this one, and not its serial
        # in the refusal: only that the id is taken (ids are fleet-wide).
        raise refusal(
            RefusalReason.NODE_ID_TAKEN, "another node already uses this node id", status_code=409
        )
    try:
        node = register_node(session=session, node_in=node_in, now=utcnow())
    except EnrollmentRefused as exc:
        raise refusal(exc.reason, exc.message) from None
    audit.record(
        session, actor=f"user:{user.username}", action="node.registered",
        object=f"node:{node.node_id}",
        detail={"serial": node.serial, "site_id": node.site_id, "district": node.district},
    )  # fmt: skip
    session.commit()
    logger.info("node %s registered by %s", node.node_id, user.username)
    return NodePublic.model_validate(node)


@router.post("/{node_id}/lifecycle")
def change_lifecycle(
    session: SessionDep,
    runtime: RuntimeDep,
    user: FieldUser,
    scope: ScopeDep,
    node_id: str,
    change: LifecycleIn,
) -> NodePublic:
    """Move a node along registered → provisioned → commissioned → active → decommissioned.

    Technicians may only set `commissioned`; decommissioning revokes the
    node's certificates and makes the broker enforce it.
    """
    _node_in_scope(session, scope, node_id)
    if user.role != Role.ADMIN and change.to != NodeLifecycle.COMMISSIONED:
        raise refusal("forbidden", f"role {user.role!r} may only set commissioned", status_code=403)
    if change.to in (NodeLifecycle.REGISTERED, NodeLifecycle.PROVISIONED):
        raise refusal(
            "illegal_transition", f"{change.to} is set by registration/enrollment, not by hand"
        )
    try:
        node, revoked = set_lifecycle(session=session, node_id=node_id, to=change.to, now=utcnow())
    except EnrollmentRefused as exc:
        raise refusal(exc.reason, exc.message) from None
    audit.record(
        session, actor=f"user:{user.username}", action="node.lifecycle_changed",
        object=f"node:{node_id}",
        detail={"to": str(change.to), "note": change.note, "revoked": [r.serial for r in revoked]},
    )  # fmt: skip
    session.commit()
    logger.info("node %s → %s by %s (%s)", node_id, change.to, user.username, change.note)
    if revoked:
        _publish_revocation(runtime, node_id)
    return NodePublic.model_validate(node)


@router.post("/{node_id}/revoke")
def revoke(
    session: SessionDep,
    runtime: RuntimeDep,
    user: AdminUser,
    scope: ScopeDep,
    node_id: str,
    revoke_in: RevokeIn | None = None,
) -> RevokeOut:
    """Revoke every live certificate of the node: CRL rewritten, the managed broker enforces it.

    `broker` says what was done: ``restarted``, ``restart-scheduled`` (rate
    limit: the CRL is re-read now, one restart follows), ``reloaded``,
    ``external``, ``no-pki``, or ``unchanged`` when nothing was revoked.
    """
    _node_in_scope(session, scope, node_id)
    reason = revoke_in.reason if revoke_in else "revoked by admin"
    try:
        rows = revoke_node(session=session, node_id=node_id, now=utcnow(), reason=reason)
    except EnrollmentRefused as exc:
        raise refusal(exc.reason, exc.message) from None
    audit.record(
        session, actor=f"user:{user.username}", action="node.revoked", object=f"node:{node_id}",
        detail={"reason": reason, "revoked": [r.serial for r in rows]},
    )  # fmt: skip
    session.commit()
    if not rows:
        # Nothing revoked, so the CRL would not change: leave the broker (and the
        # fleet's connections) alone. A repeated revoke must not be a restart button.
        logger.info("revoke of %s by %s revoked nothing: broker unchanged", node_id, user.username)
        return RevokeOut(node_id=node_id, revoked=[], broker="unchanged")
    logger.warning("node %s revoked by %s: %s", node_id, user.username, reason)
    broker = _publish_revocation(runtime, node_id)
    return RevokeOut(node_id=node_id, revoked=[r.serial for r in rows], broker=broker)


@router.post("/{node_id}/commands", status_code=status.HTTP_202_ACCEPTED)
def send_command(
    session: SessionDep,
    runtime: RuntimeDep,
    user: CommandUser,
    scope: ScopeDep,
    node_id: str,
    cmd: NodeCommandIn,
) -> NodeCommandOut:
    """Publish a proto command (ping, test_mode, set_config); the reply is fetched by request_id."""
    node = session.get(NodeRow, node_id)
    if node is None or not scope.allows(node.district):
        raise refusal("node_unknown", f"no node {node_id!r}", status_code=404)
    publisher = runtime.node_publisher
    if publisher is None:
        raise refusal("mqtt_disabled", "this server has no MQTT connection", status_code=503)
    try:  # a cluster worker may have no way to the node: refused before anything is recorded
        check_reachable(publisher, node_id)
    except NodeUnreachable as exc:
        raise refusal(exc.reason, exc.message, status_code=exc.status_code) from None
    try:
        command = make_command(
            session=session,
            node_id=node_id,
            name=cmd.name,
            args=cmd.args,
            sent_by=user.username,
            now=utcnow(),
            ttl_s=cmd.ttl_s,
        )
    except CommandRefused as exc:
        raise refusal(exc.reason, exc.message, status_code=422) from None
    audit.record(
        session, actor=f"user:{user.username}", action="node.command_sent",
        object=f"node:{node_id}",
        detail={"command": cmd.name, "args": cmd.args, "request_id": command.request_id},
    )  # fmt: skip
    session.commit()
    publisher.publish(topic_for(command), encode(command), qos=1)
    return NodeCommandOut(request_id=command.request_id)


@router.get("/{node_id}/replies/{request_id}")
def read_reply(
    session: SessionDep, scope: ScopeDep, node_id: str, request_id: str
) -> NodeReplyPublic:
    """The node's `Reply` to a command, once it arrived (404 `reply_pending` until then)."""
    if not scope.allows_node(session, node_id):
        raise not_in_scope(f"node {node_id!r}")
    reply = reply_for(session=session, node_id=node_id, request_id=request_id)
    if reply is not None:
        return NodeReplyPublic.model_validate(reply)
    sent = session.get(NodeCommand, request_id)
    if sent is None or sent.node_id != node_id:
        raise refusal(
            "request_unknown", f"no command {request_id!r} to {node_id!r}", status_code=404
        )
    raise refusal("reply_pending", "the node has not replied yet", status_code=404)
