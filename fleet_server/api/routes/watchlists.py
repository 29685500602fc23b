"""`/watchlists` and `/watchlist-hits`: lists, entries, signed delivery, lag, confirm/reject.

Only admins create or change a list, and only within their scope (a list
for every district needs an every-district scope); every change is recorded
in the audit log. Reading a list or its hits is evidence-like: it needs a
stated purpose (`X-Purpose`, `PurposeDep`) and the view is recorded. An
operator confirms or rejects each hit before dispatch; rejections are the
false-accept figures (docs/watchlists.md).

Person entries get enrolment photos (`POST …/entries/{id}/photos`): the
photo is checked and its template computed by the node's own code (a
subprocess, `fleet_server.watchlists.enrolment`), with a clear refusal
naming the reason; a photo is evidence-grade, so reading it needs a stated
purpose and is recorded. Nodes fetch signed bundles too large for a command
(or carrying sealed face templates) from ``/watchlist-bundles/{sha256}``
over HTTPS with their client certificate, and only when in the list's scope.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, HTTPException, Query, Request, Response, UploadFile, status
from fastapi import Path as PathParam
from pydantic import ValidationError
from sqlmodel import Session, col, select

from fleet_server.alerting import AlertNotFound, IllegalTransition, transition_alert
from fleet_server.api.deps import AdminUser, OperatorUser, RuntimeDep, SessionDep
from fleet_server.api.scope import PurposeDep, ScopeDep, not_in_scope
from fleet_server.models import AlertState, User, utcnow
from fleet_server.models.watchlist import (
    HitDecisionIn,
    Watchlist,
    WatchlistBundle,
    WatchlistEntriesIn,
    WatchlistEntry,
    WatchlistEntryIn,
    WatchlistHit,
    WatchlistIn,
    WatchlistLag,
    WatchlistPhoto,
)
from fleet_server.node_commands import NodeUnreachable, check_reachable
from fleet_server.ota.errors import OtaServerError
from fleet_server.ota.mtls import node_for_certificate
from fleet_server.pki.store import PkiPaths
from fleet_server.runtime import Runtime
from fleet_server.scope import Scope, record_access
from fleet_server.watchlists import service
from fleet_server.watchlists.enrolment import MAX_PHOTO_BYTES, PhotoRefused, PhotoStore
from fleet_server.watchlists.errors import WatchlistError, WatchlistNotFound
from fleet_server.watchlists.signing import WatchlistSigner
from fleet_server.watchlists.template_vault import TemplateVault
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
    """Add a plate or a person (enrolment photos follow: `…/photos`); the version grows."""
    wl = _list(session, scope, name)
    try:
        entry = service.add_entry(session, wl, data, actor=_actor(user), now=utcnow())
    except WatchlistError as exc:
        raise _refused(exc) from None
    session.commit()
    return {**entry.model_dump(mode="json"), "version": wl.version}


@router.post("/watchlists/{name}/entries/bulk", status_code=status.HTTP_201_CREATED)
def add_entries(
    session: SessionDep, user: AdminUser, scope: ScopeDep, name: str, data: WatchlistEntriesIn
) -> dict[str, Any]:
    """Add up to 20,000 entries in one change (a hotlist import); one version step, audited."""
    wl = _list(session, scope, name)
    try:
        entries = service.add_entries(session, wl, data.entries, actor=_actor(user), now=utcnow())
    except WatchlistError as exc:
        raise _refused(exc) from None
    session.commit()
    return {"added": len(entries), "version": wl.version}


def _photos(runtime: Runtime) -> PhotoStore:
    return PhotoStore(runtime.settings.data_dir / "watchlist-photos")


def _vault(runtime: Runtime) -> TemplateVault:
    """The key face templates are kept under in the database (pki/watchlist-templates.key)."""
    paths = runtime.pki.paths if runtime.pki is not None else PkiPaths(runtime.settings.pki_path)
    return TemplateVault.from_pki(paths)


def _entry(session: Session, wl: Watchlist, entry_id: str) -> WatchlistEntry:
    entry = session.get(WatchlistEntry, entry_id.upper()) or session.get(WatchlistEntry, entry_id)
    if entry is None or entry.watchlist_id != wl.id:
        raise HTTPException(status_code=404, detail=f"no entry {entry_id!r} on {wl.name!r}")
    return entry


def _photo_public(row: WatchlistPhoto) -> dict[str, Any]:
    """A photo's record without its template (templates never leave the server in clear)."""
    return row.model_dump(mode="json", exclude={"template"})


@router.post(
    "/watchlists/{name}/entries/{entry_id}/photos",
    status_code=status.HTTP_201_CREATED,
    responses={422: {"description": "the photo was refused: reason and detail"}},
)
def add_photo(
    session: SessionDep,
    runtime: RuntimeDep,
    user: AdminUser,
    scope: ScopeDep,
    name: str,
    entry_id: str,
    photo: Annotated[UploadFile, File(description="one enrolment photo (JPEG or PNG)")],
) -> dict[str, Any]:
    """Enrol a photo of a person entry: one face, big, sharp, frontal, or a refusal saying why.

    The template is computed with the same model and version the nodes run;
    the list's version grows.
    """
    wl = _list(session, scope, name)
    entry = _entry(session, wl, entry_id)
    data = photo.file.read(MAX_PHOTO_BYTES + 1)
    try:
        row = service.add_photo(
            session, wl, entry, data, store=_photos(runtime), vault=_vault(runtime),
            actor=_actor(user), now=utcnow(),
        )  # fmt: skip
    except PhotoRefused as exc:
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail={"reason": exc.reason, "detail": exc.detail, "quality": exc.quality},
        ) from None
    except WatchlistError as exc:
        raise _refused(exc) from None
    session.commit()
    return {**_photo_public(row), "version": wl.version}


@router.get("/watchlists/{name}/entries/{entry_id}/photos")
def read_photos(
    session: SessionDep,
    user: OperatorUser,
    scope: ScopeDep,
    purpose: PurposeDep,
    name: str,
    entry_id: str,
) -> dict[str, Any]:
    """A person entry's enrolment photos (hash, model, quality; the view is recorded)."""
    wl = _list(session, scope, name)
    entry = _entry(session, wl, entry_id)
    rows = session.exec(
        select(WatchlistPhoto)
        .where(col(WatchlistPhoto.entry_id) == entry.id)
        .order_by(col(WatchlistPhoto.uploaded_at))
    ).all()
    record_access(
        session=session, actor=user.username, agency=scope.agency, resource="watchlist_photos",
        object_id=f"{name}/{entry.id}", purpose=purpose,
    )  # fmt: skip
    return {"data": [_photo_public(r) for r in rows], "count": len(rows)}


@router.get(
    "/watchlists/{name}/photos/{sha256}",
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}},
)
def read_photo(
    session: SessionDep,
    runtime: RuntimeDep,
    user: OperatorUser,
    scope: ScopeDep,
    purpose: PurposeDep,
    name: str,
    sha256: Annotated[str, PathParam(pattern=r"^[0-9a-f]{64}$")],
) -> Response:
    """One enrolment photo's bytes, checked against its SHA-256 (the view is recorded)."""
    wl = _list(session, scope, name)
    row = session.exec(
        select(WatchlistPhoto)
        .join(WatchlistEntry, col(WatchlistEntry.id) == col(WatchlistPhoto.entry_id))
        .where(col(WatchlistEntry.watchlist_id) == wl.id, col(WatchlistPhoto.sha256) == sha256)
    ).first()
    if row is None:
        raise HTTPException(status_code=404, detail=f"no photo {sha256} on {name!r}")
    try:
        data = _photos(runtime).get(sha256)
    except WatchlistError as exc:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=str(exc)) from None
    record_access(
        session=session, actor=user.username, agency=scope.agency, resource="watchlist_photo",
        object_id=sha256, purpose=purpose,
    )  # fmt: skip
    kind = "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"
    return Response(data, media_type=kind, headers={"X-Content-SHA256": sha256})


@router.get(
    "/watchlist-bundles/{sha256}",
    responses={200: {"content": {"application/json": {}}}},
)
def read_bundle(
    request: Request,
    session: SessionDep,
    sha256: Annotated[str, PathParam(pattern=r"^[0-9a-f]{64}$")],
) -> Response:
    """A signed bundle as delivered, for a node in its list's scope (HTTPS client certificate).

    The node checks size and SHA-256 against its command, then the
    signature, scope, expiry and version, as for a bundle in a command.
    """
    extensions = request.scope.get("extensions") or {}
    chain = (extensions.get("tls") or {}).get("client_cert_chain") or []
    if not chain:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="watchlist bundles are for nodes: present the node's client certificate",
        )
    try:
        node_id = node_for_certificate(session=session, pem=chain[0])
    except OtaServerError as exc:
        raise HTTPException(status_code=403, detail=f"{exc.reason}: {exc.message}") from None
    row = session.get(WatchlistBundle, sha256)
    if row is None:
        raise HTTPException(status_code=404, detail=f"no bundle {sha256}")
    try:
        wl = service.watchlist_by_name(session, row.watchlist_name)
    except WatchlistNotFound:
        raise HTTPException(status_code=404, detail=f"no bundle {sha256}") from None
    if node_id not in {n.node_id for n in service.nodes_in_scope(session, wl)}:
        raise HTTPException(status_code=403, detail=f"{node_id} is outside {wl.name!r}'s scope")
    return Response(
        row.content, media_type="application/json", headers={"Cache-Control": "no-store"}
    )


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
        bundle = service.build_bundle(
            session, wl, signer=_signer(runtime), vault=_vault(runtime), now=now,
            face_thresholds=runtime.settings.face_thresholds,
        )  # fmt: skip
        nodes = service.nodes_in_scope(session, wl)
        commands = service.bundle_commands(
            session, wl, bundle, nodes=nodes, actor=_actor(user), now=now
        )
    except WatchlistError as exc:
        raise _refused(exc) from None
    except ValidationError as exc:
        # The bundle's own limits (proto.watchlist: plates, persons, recipients).
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"the signed list is beyond a bundle's limits ({exc.error_count()} errors; "
            "docs/watchlists.md)",
        ) from None
    fetch = service.delivery_for(session, wl, bundle)  # kept even with no node in scope yet
    session.commit()
    publisher = runtime.node_publisher
    unreachable: dict[str, str] = {}  # a cluster worker's nodes it has no way to now
    if publisher is not None:
        for command in commands:
            try:
                check_reachable(publisher, command.node_id)
            except NodeUnreachable as exc:
                unreachable[command.node_id] = exc.message
                continue
            publisher.publish(topic_for(command), encode(command), qos=1)
    return {
        "version": wl.version,
        "nodes": [c.node_id for c in commands],
        "requests": {c.node_id: c.request_id for c in commands},
        "published": publisher is not None,
        "unreachable": unreachable,
        "fetch": fetch.model_dump(mode="json") if fetch is not None else None,
        "persons_sealed": len(bundle.body.faces.templates) if bundle.body.faces else 0,
        "recipients": len(bundle.body.faces.recipients) if bundle.body.faces else 0,
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
