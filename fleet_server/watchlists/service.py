"""Watchlist model functions: lists and entries (versioned, audited), bundles, lag, hits.

Every change bumps the list's `version` and is recorded with
`fleet_server.audit.record` in the caller's transaction; the API commits.
A bundle is the list as it stands, signed (`signing.sign_bundle`), with the
person entries' face templates sealed for each node in scope
(`sealing.seal_faces`, with the key of the node's current certificate); it
is kept as delivered (`WatchlistBundle`, by SHA-256) and the nodes in its
scope get a ``watchlist`` command: the bundle itself when it is small and
carries no faces (nodes that predate HTTPS delivery still read it), else
the HTTPS URL, size and SHA-256 to fetch it with their client certificate.
A hit a node reports opens an alert whose severity follows the list's category; an operator confirms
or rejects it, and the rejections are the false-accept figures per node and
per watchlist.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from fleet_server import audit
from fleet_server.models import Node, NodeCertificate, NodeCommand, Severity, utcnow
from fleet_server.models.common import new_id
from fleet_server.models.watchlist import (
    NodeWatchlist,
    Watchlist,
    WatchlistBundle,
    WatchlistEntry,
    WatchlistEntryIn,
    WatchlistHit,
    WatchlistIn,
    WatchlistLag,
    WatchlistPhoto,
)
from fleet_server.watchlists.enrolment import PhotoStore, compute_template
from fleet_server.watchlists.errors import WatchlistError, WatchlistNotFound
from fleet_server.watchlists.sealing import PlainTemplate, Recipient, key_sha256, seal_faces
from fleet_server.watchlists.signing import WatchlistSigner, sign_bundle
from fleet_server.watchlists.template_vault import TemplateVault
from proto.messages import WatchlistCommand, WatchlistFetch
from proto.watchlist import (
    FACE_THRESHOLDS,
    SignedWatchlist,
    WatchlistBody,
    WatchlistFaces,
    WatchlistPlate,
)

__all__ = [
    "SEVERITY_BY_CATEGORY",
    "add_entries",
    "add_entry",
    "add_photo",
    "build_bundle",
    "bundle_commands",
    "create_watchlist",
    "decide_hit",
    "delivery_for",
    "face_threshold",
    "false_accepts",
    "lagging_nodes",
    "nodes_in_scope",
    "record_versions",
    "remove_entry",
    "store_bundle",
    "watchlist_by_name",
]

logger = logging.getLogger(__name__)

SEVERITY_BY_CATEGORY: dict[str, Severity] = {
    "wanted_person": Severity.P1,
    "missing_child": Severity.P1,
    "stolen_vehicle": Severity.P2,
    "missing_person": Severity.P2,
    "suspect": Severity.P2,
    "other": Severity.P3,
}
COMMAND_TTL = timedelta(hours=1)
MAX_COMMAND_BUNDLE = 15 * 1024  # proto.messages.WatchlistCommand.bundle (a 16 KiB command)
BUNDLE_PATH = "/api/v1/watchlist-bundles/{sha256}"  # fleet_server.api.routes.watchlists


def watchlist_by_name(session: Session, name: str) -> Watchlist:
    """The list called `name`; `WatchlistNotFound` if none."""
    row = session.exec(select(Watchlist).where(col(Watchlist.name) == name)).first()
    if row is None:
        raise WatchlistNotFound(f"no watchlist {name!r}")
    return row


def create_watchlist(
    session: Session, data: WatchlistIn, *, actor: str, now: datetime
) -> Watchlist:
    """A new list at version 1 (not committed); `WatchlistError` if the name is taken."""
    if session.exec(select(Watchlist).where(col(Watchlist.name) == data.name)).first():
        raise WatchlistError(f"a watchlist {data.name!r} exists")
    if data.expires_at <= now:
        raise WatchlistError("the expiry is in the past")
    row = Watchlist(
        name=data.name, category=data.category, purpose=data.purpose,
        owner_agency=data.owner_agency, districts=sorted(set(data.districts)),
        sites=sorted(set(data.sites)), expires_at=data.expires_at, version=1,
        created_by=actor, created_at=now, updated_at=now,
    )  # fmt: skip
    session.add(row)
    audit.record(
        session, actor=actor, action="watchlist.created", object=f"watchlist:{data.name}",
        detail=data.model_dump(mode="json"), now=now,
    )  # fmt: skip
    return row


def _bump(session: Session, wl: Watchlist, *, now: datetime) -> None:
    wl.version += 1
    wl.updated_at = now
    session.add(wl)


def add_entry(
    session: Session, wl: Watchlist, data: WatchlistEntryIn, *, actor: str, now: datetime
) -> WatchlistEntry:
    """Add a plate or person entry; the list's version grows (not committed)."""
    if data.kind == "plate" and not data.plate:
        raise WatchlistError("a plate entry needs a plate")
    if data.kind == "person" and data.plate:
        raise WatchlistError("a person entry carries no plate")
    entry = WatchlistEntry(
        id=new_id(), watchlist_id=wl.id, kind=data.kind, plate_key=data.plate, note=data.note,
        created_at=now,
    )  # fmt: skip
    session.add(entry)
    _bump(session, wl, now=now)
    audit.record(
        session, actor=actor, action="watchlist.entry_added", object=f"watchlist:{wl.name}",
        detail={"entry": entry.id, "kind": data.kind, "plate": data.plate,
                "version": wl.version},
        now=now,
    )  # fmt: skip
    return entry


def add_entries(
    session: Session,
    wl: Watchlist,
    items: list[WatchlistEntryIn],
    *,
    actor: str,
    now: datetime,
) -> list[WatchlistEntry]:
    """Add many entries in one change (one version step, one audit record; not committed).

    Every item is checked first; one bad item refuses the whole batch, naming it.
    """
    for i, data in enumerate(items):
        if data.kind == "plate" and not data.plate:
            raise WatchlistError(f"entry {i}: a plate entry needs a plate")
        if data.kind == "person" and data.plate:
            raise WatchlistError(f"entry {i}: a person entry carries no plate")
    entries = [
        WatchlistEntry(
            id=new_id(),
            watchlist_id=wl.id,
            kind=d.kind,
            plate_key=d.plate,
            note=d.note,
            created_at=now,
        )
        for d in items
    ]
    session.add_all(entries)
    _bump(session, wl, now=now)
    audit.record(
        session, actor=actor, action="watchlist.entries_added", object=f"watchlist:{wl.name}",
        detail={"count": len(entries), "plates": sum(1 for e in entries if e.kind == "plate"),
                "first": entries[0].id, "last": entries[-1].id, "version": wl.version},
        now=now,
    )  # fmt: skip
    return entries


def remove_entry(
    session: Session, wl: Watchlist, entry_id: str, *, actor: str, now: datetime
) -> None:
    """Remove an entry; the list's version grows (not committed)."""
    entry = session.get(WatchlistEntry, entry_id)
    if entry is None or entry.watchlist_id != wl.id:
        raise WatchlistNotFound(f"no entry {entry_id!r} on {wl.name!r}")
    photos = session.exec(select(WatchlistPhoto).where(col(WatchlistPhoto.entry_id) == entry.id))
    for photo in photos.all():  # the template goes; the photo file stays (kept by hash)
        session.delete(photo)
    session.flush()
    session.delete(entry)
    _bump(session, wl, now=now)
    audit.record(
        session, actor=actor, action="watchlist.entry_removed", object=f"watchlist:{wl.name}",
        detail={"entry": entry_id, "version": wl.version}, now=now,
    )  # fmt: skip


def add_photo(
    session: Session,
    wl: Watchlist,
    entry: WatchlistEntry,
    photo: bytes,
    *,
    store: PhotoStore,
    vault: TemplateVault,
    actor: str,
    now: datetime,
    command: list[str] | None = None,
) -> WatchlistPhoto:
    """Check an enrolment photo, compute its template, keep both; the version grows.

    `PhotoRefused` (with the reason: no face, several faces, too small,
    blurred, pose, not an image) leaves nothing behind; nothing is committed.
    The template is kept encrypted under `vault` (never in clear in the database).
    """
    if entry.kind != "person":
        raise WatchlistError("enrolment photos belong to person entries")
    result = compute_template(photo, command=command)
    digest = hashlib.sha256(photo).hexdigest()
    dup = session.exec(
        select(WatchlistPhoto).where(
            col(WatchlistPhoto.entry_id) == entry.id, col(WatchlistPhoto.sha256) == digest
        )
    ).first()
    if dup is not None:
        raise WatchlistError(f"that photo ({digest[:12]}…) is already enrolled for this entry")
    store.put(photo)
    sealed = vault.seal(base64.b64decode(result.template), entry_id=entry.id, photo_sha256=digest)
    row = WatchlistPhoto(
        entry_id=entry.id, sha256=digest, size=len(photo), template=sealed,
        dim=result.dim, model=result.model, model_sha256=result.model_sha256,
        quality=result.quality, uploaded_by=actor, uploaded_at=now,
    )  # fmt: skip
    session.add(row)
    _bump(session, wl, now=now)
    audit.record(
        session, actor=actor, action="watchlist.photo_added", object=f"watchlist:{wl.name}",
        detail={"entry": entry.id, "photo_sha256": digest, "model": result.model,
                "model_sha256": result.model_sha256, "version": wl.version},
        now=now,
    )  # fmt: skip
    return row


def _current_keys(session: Session, nodes: Iterable[Node], now: datetime) -> list[Recipient]:
    """Each node's current certificate key (newest live certificate); nodes without one skip."""
    node_ids = [n.node_id for n in nodes]
    if not node_ids:
        return []
    rows = session.exec(
        select(NodeCertificate)
        .where(col(NodeCertificate.node_id).in_(node_ids))
        .where(col(NodeCertificate.revoked_at).is_(None))
        .order_by(col(NodeCertificate.issued_at).desc())
    ).all()
    keys: dict[str, Recipient] = {}
    for row in rows:
        if row.node_id in keys or row.not_after <= now:
            continue
        try:
            key = x509.load_pem_x509_certificate(row.pem.encode("ascii")).public_key()
        except ValueError:
            continue
        if isinstance(key, ec.EllipticCurvePublicKey):
            keys[row.node_id] = Recipient(row.node_id, key)
    return [keys[n] for n in node_ids if n in keys]


def _sealed_faces(
    session: Session,
    wl: Watchlist,
    persons: list[WatchlistEntry],
    *,
    vault: TemplateVault,
    now: datetime,
) -> WatchlistFaces | None:
    """The person entries' templates sealed for the nodes in scope, or None with no photos."""
    if not persons:
        return None
    photos = session.exec(
        select(WatchlistPhoto)
        .where(col(WatchlistPhoto.entry_id).in_([e.id for e in persons]))
        .order_by(col(WatchlistPhoto.uploaded_at), col(WatchlistPhoto.id))
    ).all()
    if not photos:
        return None
    # One model per bundle: the one the newest template was made with (after a model
    # upgrade, photos enrolled under the old one are left out until recomputed).
    current = photos[-1]
    usable = [p for p in photos if p.model_sha256 == current.model_sha256]
    if len(usable) < len(photos):
        logger.warning("%s: %d template(s) of another model left out of the bundle", wl.name,
                       len(photos) - len(usable))  # fmt: skip
    templates = []
    for p in usable:
        if not vault.is_sealed(p.template):  # a row from before encryption at rest: seal it now
            p.template = vault.seal(
                base64.b64decode(p.template), entry_id=p.entry_id, photo_sha256=p.sha256
            )
            session.add(p)
        vector = vault.open(p.template, entry_id=p.entry_id, photo_sha256=p.sha256)
        templates.append(PlainTemplate(p.entry_id.lower(), vector, p.sha256))
    recipients = _current_keys(session, nodes_in_scope(session, wl), now)
    return seal_faces(
        watchlist_id=wl.name, version=wl.version, templates=templates, recipients=recipients,
        model=current.model, model_sha256=current.model_sha256, dim=current.dim,
    )  # fmt: skip


def face_threshold(category: str, *, overrides: Mapping[str, float] | None = None) -> float:
    """The face-match threshold a list of `category` is delivered with."""
    if overrides and category in overrides:
        return float(overrides[category])
    return FACE_THRESHOLDS.get(category, FACE_THRESHOLDS["other"])


def _with_threshold(faces: WatchlistFaces | None, threshold: float) -> WatchlistFaces | None:
    if faces is None:
        return None
    return WatchlistFaces.model_validate({**faces.model_dump(), "threshold": threshold})


def build_bundle(
    session: Session,
    wl: Watchlist,
    *,
    signer: WatchlistSigner,
    vault: TemplateVault,
    now: datetime,
    face_thresholds: Mapping[str, float] | None = None,
) -> SignedWatchlist:
    """The list as it stands, signed for the nodes; `WatchlistError` once it has expired.

    Face templates are opened from the database with `vault` only to be sealed for the nodes,
    with the list's face threshold: its category's in `face_thresholds` (the settings' admin
    overrides) or else in the shipped table (`proto.watchlist.FACE_THRESHOLDS`).
    """
    if wl.expires_at <= now:
        raise WatchlistError(f"{wl.name!r} expired at {wl.expires_at.isoformat()}")
    entries = session.exec(
        select(WatchlistEntry)
        .where(col(WatchlistEntry.watchlist_id) == wl.id)
        .order_by(col(WatchlistEntry.id))
    ).all()
    body = WatchlistBody(
        watchlist_id=wl.name, version=wl.version, category=wl.category,
        purpose=wl.purpose, owner_agency=wl.owner_agency, issued_at=now,
        expires_at=wl.expires_at, districts=list(wl.districts), sites=list(wl.sites),
        plates=[
            WatchlistPlate(entry_id=e.id.lower(), key=e.plate_key, note=e.note)
            for e in entries
            if e.kind == "plate" and e.plate_key
        ],
        persons=sum(1 for e in entries if e.kind == "person"),
        faces=_with_threshold(
            _sealed_faces(
                session, wl, [e for e in entries if e.kind == "person"], vault=vault, now=now
            ),
            face_threshold(wl.category, overrides=face_thresholds),
        ),
    )  # fmt: skip
    return sign_bundle(body, signer=signer)


def store_bundle(session: Session, wl: Watchlist, bundle: SignedWatchlist) -> WatchlistBundle:
    """Keep the signed bundle's bytes as served (by SHA-256) for the nodes to fetch."""
    content = bundle.model_dump_json().encode("utf-8")
    digest = hashlib.sha256(content).hexdigest()
    row = session.get(WatchlistBundle, digest)
    if row is None:
        row = WatchlistBundle(
            sha256=digest, watchlist_name=wl.name, version=bundle.body.version,
            size=len(content), content=content,
        )  # fmt: skip
        session.add(row)
    return row


def nodes_in_scope(session: Session, wl: Watchlist) -> list[Node]:
    """The nodes where the list is active (its districts or sites; all when neither)."""
    query = select(Node)
    if wl.districts or wl.sites:
        query = query.where(
            or_(col(Node.district).in_(wl.districts), col(Node.site_id).in_(wl.sites))
        )
    return list(session.exec(query.order_by(col(Node.node_id))).all())


def delivery_for(session: Session, wl: Watchlist, bundle: SignedWatchlist) -> WatchlistFetch | None:
    """Where nodes fetch `bundle` over HTTPS (kept now), or None when it fits in a command.

    A bundle with sealed face templates is always fetched, so an old node
    that cannot open them never gets it inside a command.
    """
    if len(bundle.model_dump_json()) <= MAX_COMMAND_BUNDLE and bundle.body.faces is None:
        return None
    stored = store_bundle(session, wl, bundle)
    return WatchlistFetch(
        watchlist_id=wl.name, version=bundle.body.version,
        url=BUNDLE_PATH.format(sha256=stored.sha256), sha256=stored.sha256, size=stored.size,
    )  # fmt: skip


def bundle_commands(
    session: Session,
    wl: Watchlist,
    bundle: SignedWatchlist,
    *,
    nodes: Iterable[Node],
    actor: str,
    now: datetime,
) -> list[WatchlistCommand]:
    """A ``watchlist`` command per node, recorded (not committed); publish after the commit.

    A small bundle with no faces travels in the command itself; any other is
    kept (`store_bundle`) and the command names its HTTPS URL, size and SHA-256.
    """
    text = bundle.model_dump_json()
    fetch = delivery_for(session, wl, bundle)
    commands = []
    for node in nodes:
        command = WatchlistCommand(
            node_id=node.node_id, ts=now, request_id=new_id(), expires_at=now + COMMAND_TTL,
            bundle=None if fetch is not None else text, fetch=fetch,
        )  # fmt: skip
        session.add(
            NodeCommand(
                request_id=command.request_id, node_id=node.node_id, name="watchlist",
                args={"watchlist": wl.name, "version": wl.version}, sent_by=actor, sent_at=now,
            )
        )  # fmt: skip
        commands.append(command)
    audit.record(
        session, actor=actor, action="watchlist.delivered", object=f"watchlist:{wl.name}",
        detail={"version": wl.version, "nodes": [c.node_id for c in commands],
                "bundle_sha256": fetch.sha256 if fetch else None},
        now=now,
    )  # fmt: skip
    return commands


def record_versions(
    session: Session, node_id: str, versions: Mapping[str, int], *, now: datetime
) -> None:
    """Remember the versions a node says it holds (telemetry or a command's reply)."""
    for name, version in versions.items():
        row = session.get(NodeWatchlist, (node_id, name))
        if row is None:
            row = NodeWatchlist(node_id=node_id, watchlist_name=name, version=version)
        row.version, row.reported_at = version, now
        session.add(row)


def _renewed_since_sealing(
    session: Session, wl: Watchlist, nodes: list[Node], now: datetime
) -> set[str]:
    """Nodes whose current key no bundle of this version was sealed for.

    Such a node holds the version but cannot open its templates (after a
    restart it refuses the bundle: ``recipient``); the next delivery seals
    for its new key. Lists without faces have no such nodes.
    """
    rows = session.exec(
        select(WatchlistBundle.content)
        .where(col(WatchlistBundle.watchlist_name) == wl.name)
        .where(col(WatchlistBundle.version) == wl.version)
    ).all()
    sealed: set[tuple[str, str]] = set()
    with_faces = False
    for content in rows:
        faces = json.loads(bytes(content))["body"].get("faces")
        if faces:
            with_faces = True
            sealed.update((r["node_id"], r["key_sha256"]) for r in faces["recipients"])
    if not with_faces:
        return set()
    return {
        r.node_id
        for r in _current_keys(session, nodes, now)
        if (r.node_id, key_sha256(r.public_key)) not in sealed
    }


def lagging_nodes(
    session: Session, wl: Watchlist, *, now: datetime | None = None
) -> list[WatchlistLag]:
    """Nodes in the list's scope that hold an older version or none, or whose key was renewed."""
    held = {
        row.node_id: row.version
        for row in session.exec(
            select(NodeWatchlist).where(col(NodeWatchlist.watchlist_name) == wl.name)
        ).all()
    }
    nodes = nodes_in_scope(session, wl)
    current = [n for n in nodes if held.get(n.node_id, 0) >= wl.version]
    renewed = _renewed_since_sealing(session, wl, current, now or utcnow())
    return [
        WatchlistLag(
            node_id=node.node_id,
            district=node.district,
            site_id=node.site_id,
            held=held.get(node.node_id),
            current=wl.version,
            key_renewed=node.node_id in renewed,
        )
        for node in nodes
        if held.get(node.node_id, 0) < wl.version or node.node_id in renewed
    ]


def decide_hit(
    session: Session,
    hit: WatchlistHit,
    *,
    decision: str,
    note: str | None,
    actor: str,
    now: datetime,
) -> WatchlistHit:
    """Confirm or reject a pending hit (not committed); a decided hit is not decided again."""
    if hit.decision != "pending":
        raise WatchlistError(f"hit {hit.event_id} was already {hit.decision}")
    hit.decision, hit.decided_by, hit.decided_at, hit.decision_note = decision, actor, now, note
    session.add(hit)
    audit.record(
        session, actor=actor, action=f"watchlist.hit_{decision}",
        object=f"watchlist_hit:{hit.event_id}",
        detail={"watchlist": hit.watchlist_name, "node": hit.node_id, "alert": hit.alert_id,
                "note": note},
        now=now,
    )  # fmt: skip
    return hit


def false_accepts(session: Session, *, node_ids: Any = None) -> dict[str, Any]:
    """Decided hits per watchlist and per node: confirmed, rejected, and the rejected share."""
    out: dict[str, Any] = {}
    for key, column in (("by_watchlist", WatchlistHit.watchlist_name),
                        ("by_node", WatchlistHit.node_id)):  # fmt: skip
        query = select(column, col(WatchlistHit.decision), func.count()).group_by(
            column, col(WatchlistHit.decision)
        )
        if node_ids is not None:
            query = query.where(col(WatchlistHit.node_id).in_(node_ids))
        figures: dict[str, dict[str, Any]] = {}
        for name, decision, count in session.exec(query).all():
            figures.setdefault(name, {"confirmed": 0, "rejected": 0, "pending": 0})[decision] = (
                count
            )
        for fig in figures.values():
            decided = fig["confirmed"] + fig["rejected"]
            fig["false_accept_rate"] = fig["rejected"] / decided if decided else None
        out[key] = figures
    return out
