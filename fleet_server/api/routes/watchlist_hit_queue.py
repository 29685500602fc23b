"""`/watchlist-hits/queue`, `…/{event_id}/entry`, `…/{event_id}/photos/{sha256}`: the hit console.

The operator's hit page (`/console/watchlist-hits`) needs, per hit, more than
the bare `watchlisthit` row: the alert it opened and whether that alert may
be dispatched yet (`fleet_server.alerting.dispatch_blocker`), the SHA-256 of
the crop and of the whole frame it came from, where each upload stands
(`crop`, `frame`: stored, uploading, requested, not uploaded, deleted), the
frames that agreed and their score (from the hit event as the node sent
it), and where a confusable read differs from the listed plate. The
watchlist entry behind a hit (its note, the list's purpose and owner, a
person's enrolment photos) is a view of watchlist data, so it is a call of
its own with a stated purpose (`X-Purpose`), recorded like every other
watchlist read; so is each enrolment photo's bytes, fetched through the hit
(an operator who may see the hit may compare its photo, whatever other
districts the list covers). The crop's and frame's bytes come from the
evidence route (`GET /evidence/{sha256}/file?alert_id=…`). Every view is
recorded with the hit's alert. The queue itself names listed plates and is
recorded too. All answer only for nodes in the caller's scope (others:
empty, or 404 worded as for a missing hit).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from sqlmodel import Session, col, select

from fleet_server.alerting import dispatch_blocker
from fleet_server.api.deps import OperatorUser, RuntimeDep, SessionDep
from fleet_server.api.routes.watchlists import _photos
from fleet_server.api.scope import PurposeDep, ScopeDep, not_in_scope
from fleet_server.models import Alert, Event
from fleet_server.models.evidence import EvidenceItem, EvidenceRequest
from fleet_server.models.watchlist import (
    Watchlist,
    WatchlistEntry,
    WatchlistHit,
    WatchlistPhoto,
)
from fleet_server.scope import Scope, record_access
from fleet_server.watchlists.errors import WatchlistError

router = APIRouter(tags=["watchlists"])

# What the hit event carries that the `watchlisthit` row does not keep.
_EVENT_FIELDS = (
    "snapshot_sha256", "frame_sha256", "frames", "score", "track_id", "source_event_id",
)  # fmt: skip

CropState = Literal["stored", "uploading", "requested", "not_uploaded", "deleted"]


def differing_positions(read: str | None, listed: str | None) -> list[int]:
    """Where the read key and the listed key differ (same length: one look-alike swap)."""
    if not read or not listed or len(read) != len(listed):
        return []
    return [i for i, (a, b) in enumerate(zip(read, listed, strict=True)) if a != b]


def _event_fields(session: Session, event_id: str) -> dict[str, Any]:
    event = session.get(Event, event_id)
    if event is None:
        return dict.fromkeys(_EVENT_FIELDS)
    try:
        payload = json.loads(event.payload)
    except ValueError:
        payload = {}
    return {name: payload.get(name) for name in _EVENT_FIELDS}


def _alert_fields(session: Session, hit: WatchlistHit) -> dict[str, Any]:
    alert = session.get(Alert, hit.alert_id) if hit.alert_id else None
    if alert is None:
        return {"alert": None, "dispatch_blocked": None}
    return {
        "alert": {
            "id": alert.id,
            "state": alert.state,
            "severity": alert.severity,
            "district": alert.district,
            "site_id": alert.site_id,
        },
        "dispatch_blocked": dispatch_blocker(session, alert),
    }


def crop_state(session: Session, sha256: str | None) -> dict[str, Any] | None:
    """Where a hit's crop (or frame) stands on this server (None: the hit named none).

    ``stored`` can be viewed; ``uploading`` is on its way (``received`` of
    ``size`` bytes); ``requested`` was asked of the node; ``not_uploaded``
    has not reached the server yet (hits upload by themselves); ``deleted``
    went with retention.
    """
    if not sha256:
        return None
    item = session.get(EvidenceItem, sha256)
    state: CropState
    if item is not None:
        state = "uploading"
        if item.state == "stored":
            state = "stored"
        elif item.state == "deleted":
            state = "deleted"
        received = item.size if item.state == "stored" else item.received_bytes
        return {"sha256": sha256, "state": state, "size": item.size, "received": received,
                "content_type": item.content_type}  # fmt: skip
    asked = session.get(EvidenceRequest, sha256)
    state = "requested" if asked is not None and asked.fulfilled_at is None else "not_uploaded"
    return {"sha256": sha256, "state": state, "size": None, "received": 0, "content_type": None}


def hit_view(session: Session, hit: WatchlistHit, categories: dict[str, str]) -> dict[str, Any]:
    """One hit as the console shows it (see the module docstring)."""
    fields = _event_fields(session, hit.event_id)
    return {
        **hit.model_dump(mode="json"),
        "category": categories.get(hit.watchlist_name),
        "differs_at": differing_positions(hit.plate, hit.listed),
        **fields,
        "crop": crop_state(session, fields["snapshot_sha256"]),
        "frame": crop_state(session, fields["frame_sha256"]),
        **_alert_fields(session, hit),
    }


def _hit_in_scope(session: Session, scope: Scope, event_id: str) -> WatchlistHit:
    hit = session.get(WatchlistHit, event_id)
    if hit is None or not scope.allows_node(session, hit.node_id):
        raise not_in_scope(f"hit {event_id!r}")
    return hit


def _matched_entry(
    session: Session, hit: WatchlistHit
) -> tuple[Watchlist | None, WatchlistEntry | None]:
    wl = session.exec(select(Watchlist).where(col(Watchlist.name) == hit.watchlist_name)).first()
    if wl is None:
        return None, None
    # Bundles carry entry ids in lower case (fleet_server.watchlists).
    for candidate in (hit.entry_id.upper(), hit.entry_id):
        entry = session.get(WatchlistEntry, candidate)
        if entry is not None and entry.watchlist_id == wl.id:
            return wl, entry
    return wl, None


def _entry_photos(session: Session, entry: WatchlistEntry) -> list[WatchlistPhoto]:
    return list(
        session.exec(
            select(WatchlistPhoto)
            .where(col(WatchlistPhoto.entry_id) == entry.id)
            .order_by(col(WatchlistPhoto.uploaded_at))
        ).all()
    )


@router.get("/watchlist-hits/queue")
def read_hit_queue(
    session: SessionDep,
    user: OperatorUser,
    scope: ScopeDep,
    purpose: PurposeDep,
    decision: Annotated[
        Literal["pending", "confirmed", "rejected"] | None,
        Query(description="only these; pending (the default) is the queue"),
    ] = "pending",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Hits for the console, oldest pending first (the view is recorded with its purpose)."""
    query = scope.filter_nodes(select(WatchlistHit), col(WatchlistHit.node_id))
    if decision is not None:
        query = query.where(col(WatchlistHit.decision) == decision)
    # The queue is worked oldest first; decided hits are history, newest first.
    order = col(WatchlistHit.received_at)
    query = query.order_by(order if decision == "pending" else order.desc())
    hits = session.exec(query.limit(limit)).all()
    names = {h.watchlist_name for h in hits}
    categories = {
        w.name: w.category
        for w in session.exec(select(Watchlist).where(col(Watchlist.name).in_(names))).all()
    }
    record_access(
        session=session, actor=user.username, agency=scope.agency, resource="watchlist_hits",
        object_id=f"queue:{decision or '*'}", purpose=purpose,
    )  # fmt: skip
    data = [hit_view(session, h, categories) for h in hits]
    return {"data": data, "count": len(data)}


@router.get("/watchlist-hits/{event_id}/entry")
def read_hit_entry(
    session: SessionDep,
    user: OperatorUser,
    scope: ScopeDep,
    purpose: PurposeDep,
    event_id: Annotated[str, Path(max_length=26)],
) -> dict[str, Any]:
    """The watchlist entry a hit matched, its list and photos (the view is recorded)."""
    hit = _hit_in_scope(session, scope, event_id)
    wl, entry = _matched_entry(session, hit)
    record_access(
        session=session, actor=user.username, agency=scope.agency, resource="watchlist_entry",
        object_id=f"{hit.watchlist_name}/{hit.entry_id}", purpose=purpose, alert_id=hit.alert_id,
    )  # fmt: skip
    listed_in = None
    if wl is not None:
        listed_in = {
            "name": wl.name, "category": wl.category, "purpose": wl.purpose,
            "owner_agency": wl.owner_agency, "version": wl.version,
            "expires_at": wl.expires_at.isoformat(), "hit_version": hit.watchlist_version,
        }  # fmt: skip
    matched = None
    if entry is not None:
        matched = {
            "id": entry.id, "kind": entry.kind, "plate": entry.plate_key, "note": entry.note,
            "created_at": entry.created_at.isoformat(),
            "photos": [
                {"sha256": p.sha256, "size": p.size, "uploaded_at": p.uploaded_at.isoformat()}
                for p in _entry_photos(session, entry)
            ] if entry.kind == "person" else [],
        }  # fmt: skip
    return {
        "event_id": hit.event_id,
        "watchlist": listed_in,
        "entry": matched,
        "entry_removed": wl is not None and entry is None,
        "listed": hit.listed,
        "read": hit.plate,
        "match": hit.match,
        "differs_at": differing_positions(hit.plate, hit.listed),
    }


@router.get(
    "/watchlist-hits/{event_id}/photos/{sha256}",
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}},
)
def read_hit_photo(
    session: SessionDep,
    runtime: RuntimeDep,
    user: OperatorUser,
    scope: ScopeDep,
    purpose: PurposeDep,
    event_id: Annotated[str, Path(max_length=26)],
    sha256: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")],
) -> Response:
    """An enrolment photo of the person a hit matched, to compare with the crop (recorded).

    Only a photo of the hit's own entry; the view is recorded with the hit's alert.
    """
    hit = _hit_in_scope(session, scope, event_id)
    _, entry = _matched_entry(session, hit)
    photo = None
    if entry is not None:
        photo = session.exec(
            select(WatchlistPhoto).where(
                col(WatchlistPhoto.entry_id) == entry.id, col(WatchlistPhoto.sha256) == sha256
            )
        ).first()
    if photo is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no photo {sha256} on hit {event_id!r}")
    try:
        data = _photos(runtime).get(sha256)
    except WatchlistError as exc:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=str(exc)) from None
    record_access(
        session=session, actor=user.username, agency=scope.agency, resource="watchlist_photo",
        object_id=sha256, purpose=purpose, alert_id=hit.alert_id,
    )  # fmt: skip
    kind = "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"
    return Response(
        data, media_type=kind, headers={"X-Content-SHA256": sha256, "Cache-Control": "no-store"}
    )
