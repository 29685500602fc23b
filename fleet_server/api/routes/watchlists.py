"""`/watchlists` and `/watchlist-hits`: lists, entries, signed delivery, lag, confirm/reject.

Only admins create or change a list, and only within their scope (a list
for every district needs an every-district scope); every change is recorded
in the audit log. Reading a list or its hits is evidence-like: it needs a
stated purpose (`X-Purpose`, `PurposeDep`) and the view is recorded. An
operator confirms or rejects each hit before dispatch; rejections are the
false-accept figures (docs/watchlists.md).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import ValidationError
from sqlmodel import Session, col, select

from fleet_server.alerting import AlertNotFound, IllegalTransition, transition_alert
from fleet_server.api.deps import AdminUser, OperatorUser, RuntimeDep, SessionDep
from fleet_server.api.scope import PurposeDep, ScopeDep, not_in_scope
from fleet_server.models import AlertState, User, utcnow
from fleet_server.models.watchlist import (
    HitDecisionIn,
    Watchlist,
    WatchlistEntry,
    WatchlistEntryIn,
    WatchlistHit,
    WatchlistIn,
    WatchlistLag,
)
from fleet_server.pki.store import PkiPaths
from fleet_server.runtime import Runtime
from fleet_server.scope import Scope, record_access
from fleet_server.watchlists import service
from fleet_server.watchlists.errors import WatchlistError, WatchlistNotFound
from fleet_server.watchlists.signing import WatchlistSigner
from proto.codec import encode, topic_for

router = APIRouter(tags=["watchlists"])


def _actor(user: User) -> str:
    return f"user:{user.username}"


def _may_see(scope: Scope, wl: Watchlist) -> bool:
    if scope.is_all:
        return True
    return bool(wl.districts) and all(scope.allows(d) for d in wl.districts)


def _list(session: Session, scope: Scope, name: str) -> Watchlist:
    try:
        wl = service.watchlist_by_name(session, name)
    except WatchlistNotFound:
        raise not_in_scope(f"watchlist {name!r}") from None
    if not _may_see(scope, wl):
        raise not_in_scope(f"watchlist {name!r}")
    return wl


def _refused(exc: WatchlistError) -> HTTPException:
    code = 404 if isinstance(exc, WatchlistNotFound) else 422
    return HTTPException(status_code=code, detail=str(exc))


def _signer(runtime: Runtime) -> WatchlistSigner:
    paths = runtime.pki.paths if runtime.pki is not None else PkiPaths(runtime.settings.pki_path)
    try:
        return WatchlistSigner.from_pki(paths, now=utcnow())
    except Exception as exc:  # no issuing CA on this server
        raise HTTPException(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"no watchlist signer: {exc}",
        ) from None


def _summary(wl: Watchlist) -> dict[str, Any]:
    return wl.model_dump(mode="json")


@router.post("/watchlists", status_code=status.HTTP_201_CREATED)
def create_watchlist(
    session: SessionDep, user: AdminUser, scope: ScopeDep, data: WatchlistIn
) -> dict[str, Any]:
    """Create a list at version 1 (admins; within the caller's districts)."""
    if not scope.is_all and (
        not data.districts or not all(scope.allows(d) for d in data.districts)
    ):
        raise HTTPException(status_code=403, detail="the list's districts are outside your scope")
    try:
        wl = service.create_watchlist(session, data, actor=_actor(user), now=utcnow())
    except WatchlistError as exc:
        raise _refused(exc) from None
    session.commit()
    return _summary(wl)


@router.get("/watchlists")
def read_watchlists(
    session: SessionDep, user: OperatorUser, scope: ScopeDep, purpose: PurposeDep
) -> dict[str, Any]:
    """The lists in the caller's scope (the view is recorded with its purpose)."""
    rows = [w for w in session.exec(select(Watchlist).order_by(col(Watchlist.name))).all()
            if _may_see(scope, w)]  # fmt: skip
    record_access(
        session=session, actor=user.username, agency=scope.agency, resource="watchlists",
        object_id="*", purpose=purpose,
    )  # fmt: skip
    return {"data": [_summary(w) for w in rows], "count": len(rows)}


@router.get("/watchlists/{name}")
def read_watchlist(
    session: SessionDep, user: OperatorUser, scope: ScopeDep, purpose: PurposeDep, name: str
) -> dict[str, Any]:
    """One list with its entries (the view is recorded with its purpose)."""
    wl = _list(session, scope, name)
    entries = session.exec(
        select(WatchlistEntry).where(col(WatchlistEntry.watchlist_id) == wl.id)
    ).all()
    record_access(
        session=session, actor=user.username, agency=scope.agency, resource="watchlist",
        object_id=name, purpose=purpose,
    )  # fmt: skip
    return {**_summary(wl), "entries": [e.model_dump(mode="json") for e in entries]}


@router.post("/watchlists/{name}/entries", status_code=status.HTTP_201_CREATED)
def add_entry(
    session: SessionDep, user: AdminUser, scope: ScopeDep, name: str, data: WatchlistEntryIn
) -> dict[str, Any]:
    """Add a plate (or a person entry: matching persons is not built yet); the version grows."""
    wl = _list(session, scope, name)
    try:
        entry = service.add_entry(session, wl, data, actor=_actor(user), now=utcnow())
    except WatchlistError as exc:
        raise _refused(exc) from None
    session.commit()
    return {**entry.model_dump(mode="json"), "version": wl.version}


@router.delete("/watchlists/{name}/entries/{entry_id}")
def remove_entry(
    session: SessionDep, user: AdminUser, scope: ScopeDep, name: str, entry_id: str
) -> dict[str, Any]:
    """Remove an entry; the version grows."""
    wl = _list(session, scope, name)
    try:
        service.remove_entry(session, wl, entry_id, actor=_actor(user), now=utcnow())
    except WatchlistError as exc:
        raise _refused(exc) from None
    session.commit()
    return {"version": wl.version}


@router.post("/watchlists/{name}/deliver", status_code=status.HTTP_202_ACCEPTED)
def deliver(
    session: SessionDep, runtime: RuntimeDep, user: AdminUser, scope: ScopeDep, name: str
) -> dict[str, Any]:
    """Sign the list as it stands and send it to every node in its scope (``watchlist`` cmd)."""
    wl = _list(session, scope, name)
    now = utcnow()
    try:
        bundle = service.build_bundle(session, wl, signer=_signer(runtime), now=now)
        nodes = service.nodes_in_scope(session, wl)
        commands = service.bundle_commands(
            session, wl, bundle, nodes=nodes, actor=_actor(user), now=now
        )
    except WatchlistError as exc:
        raise _refused(exc) from None
    except ValidationError:
        # One command carries one bundle (proto.limits: 16 KiB); chunking is not built yet.
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail="the signed list is too large for one watchlist command (about 150 plates); "
            "delivery in parts is not built yet (docs/watchlists.md)",
        ) from None
    session.commit()
    if runtime.mqtt is not None:
        for command in commands:
            runtime.mqtt.publish(topic_for(command), encode(command), qos=1)
    return {
        "version": wl.version,
        "nodes": [c.node_id for c in commands],
        "requests": {c.node_id: c.request_id for c in commands},
        "published": runtime.mqtt is not None,
    }


@router.get("/watchlists/{name}/lag")
def read_lag(session: SessionDep, user: OperatorUser, scope: ScopeDep, name: str) -> dict[str, Any]:
    """Nodes in the list's scope that hold an older version or none."""
    wl = _list(session, scope, name)
    lag: list[WatchlistLag] = [
        n for n in service.lagging_nodes(session, wl) if scope.allows(n.district)
    ]
    return {"data": [n.model_dump() for n in lag], "count": len(lag), "current": wl.version}


@router.get("/watchlist-hits")
def read_hits(
    session: SessionDep,
    user: OperatorUser,
    scope: ScopeDep,
    purpose: PurposeDep,
    decision: Annotated[
        Literal["pending", "confirmed", "rejected"] | None, Query(description="only these")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Hits newest first, nodes in scope only (the view is recorded with its purpose)."""
    query = scope.filter_nodes(select(WatchlistHit), col(WatchlistHit.node_id))
    if decision is not None:
        query = query.where(col(WatchlistHit.decision) == decision)
    rows = session.exec(query.order_by(col(WatchlistHit.received_at).desc()).limit(limit)).all()
    record_access(
        session=session, actor=user.username, agency=scope.agency, resource="watchlist_hits",
        object_id=decision or "*", purpose=purpose,
    )  # fmt: skip
    return {"data": [r.model_dump(mode="json") for r in rows], "count": len(rows)}


@router.post("/watchlist-hits/{event_id}/decision")
def decide_hit(
    session: SessionDep,
    runtime: RuntimeDep,
    user: OperatorUser,
    scope: ScopeDep,
    event_id: str,
    data: HitDecisionIn,
) -> dict[str, Any]:
    """Confirm or reject a hit before dispatch (once); a rejection closes its alert as false."""
    hit = session.get(WatchlistHit, event_id)
    if hit is None or not scope.allows_node(session, hit.node_id):
        raise not_in_scope(f"hit {event_id!r}")
    try:
        service.decide_hit(
            session, hit, decision=data.decision, note=data.note, actor=_actor(user),
            now=utcnow(),
        )  # fmt: skip
    except WatchlistError as exc:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=str(exc)) from None
    if data.decision == "rejected" and hit.alert_id is not None:
        try:  # commits the decision with the transition
            _, notice = transition_alert(
                session=session, alert_id=hit.alert_id, to=AlertState.FALSE_ALARM,
                actor=_actor(user), note=f"watchlist hit rejected: {data.note or ''}"[:500],
                ack_timeout_s=runtime.settings.ack_followup_s,
            )  # fmt: skip
            runtime.notify([notice])
        except (IllegalTransition, AlertNotFound):  # already closed or moved on: keep it
            session.commit()
    else:
        session.commit()
    return hit.model_dump(mode="json")


@router.get("/watchlist-hits/false-accepts")
def read_false_accepts(session: SessionDep, user: OperatorUser, scope: ScopeDep) -> dict[str, Any]:
    """Confirmed/rejected hits per watchlist and per node (nodes in scope)."""
    node_ids = None if scope.is_all else scope.node_ids()
    return service.false_accepts(session, node_ids=node_ids)
