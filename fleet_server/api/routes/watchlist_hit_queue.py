"""`/watchlist-hits/queue` and `/watchlist-hits/{event_id}/entry`: what the hit console shows.

The operator's hit page (`/console/watchlist-hits`) needs, per hit, more than
the bare `watchlisthit` row: the alert it opened and whether that alert may
be dispatched yet (`fleet_server.alerting.dispatch_blocker`), the crop's
SHA-256 and the frames that agreed (from the hit event as the node sent
it), and where a confusable read differs from the listed plate. The watchlist
entry behind a hit (its note, the list's purpose and owner) is a view of
watchlist data, so it is a call of its own with a stated purpose
(`X-Purpose`), recorded like every other watchlist read; the queue itself
names listed plates and is recorded too. Both answer only for nodes in the
caller's scope (others: empty, or 404 worded as for a missing hit).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from sqlmodel import Session, col, select

from fleet_server.alerting import dispatch_blocker
from fleet_server.api.deps import OperatorUser, SessionDep
from fleet_server.api.scope import PurposeDep, ScopeDep, not_in_scope
from fleet_server.models import Alert, Event
from fleet_server.models.watchlist import Watchlist, WatchlistEntry, WatchlistHit
from fleet_server.scope import record_access

router = APIRouter(tags=["watchlists"])

# What the hit event carries that the `watchlisthit` row does not keep.
_EVENT_FIELDS = ("snapshot_sha256", "frames", "track_id", "source_event_id")


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


def hit_view(session: Session, hit: WatchlistHit, categories: dict[str, str]) -> dict[str, Any]:
    """One hit as the console shows it (see the module docstring)."""
    return {
        **hit.model_dump(mode="json"),
        "category": categories.get(hit.watchlist_name),
        "differs_at": differing_positions(hit.plate, hit.listed),
        **_event_fields(session, hit.event_id),
        **_alert_fields(session, hit),
    }


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
    """The watchlist entry a hit matched and its list (the view is recorded with its purpose)."""
    hit = session.get(WatchlistHit, event_id)
    if hit is None or not scope.allows_node(session, hit.node_id):
        raise not_in_scope(f"hit {event_id!r}")
    wl = session.exec(select(Watchlist).where(col(Watchlist.name) == hit.watchlist_name)).first()
    entry = None
    if wl is not None:  # bundles carry entry ids in lower case (fleet_server.watchlists)
        for candidate in (hit.entry_id.upper(), hit.entry_id):
            entry = session.get(WatchlistEntry, candidate)
            if entry is not None and entry.watchlist_id == wl.id:
                break
            entry = None
    record_access(
        session=session, actor=user.username, agency=scope.agency, resource="watchlist_entry",
        object_id=f"{hit.watchlist_name}/{hit.entry_id}", purpose=purpose,
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
