"""Campaigns as data: create, read, pause/resume/abort/retry, and each node's progress.

A campaign names an artifact and a target (districts, sites, tags, node ids:
their union). At creation the target is resolved to nodes that can run the
artifact (their hardware is in its list); a target that resolves to none is
refused. Nodes that join the target later (enrolled after the start) are
added by the wave job (`refresh_members`) and wait for the next wave. Each
node's state comes from its `ota` events (`record_ota_event`, called by the
ingest handler) and from the offers the job sends. The wave rule itself is
`fleet_server.ota.waves.decide_wave`; `apply_actions` writes its decisions.
Nothing here speaks HTTP or MQTT.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, time
from typing import Any

from sqlalchemy import or_
from sqlmodel import Session, col, func, select

from fleet_server import audit
from fleet_server.models import Node, new_id
from fleet_server.models.ota import (
    CampaignCreate,
    CampaignNodeState,
    CampaignState,
    CampaignTarget,
    OtaArtifact,
    OtaCampaign,
    OtaCampaignNode,
    OtaCampaignNodePublic,
    OtaCampaignPublic,
    OtaNodeTag,
    OtaSiteWindow,
)
from fleet_server.ota.errors import CampaignNotFound, CampaignRefused
from fleet_server.ota.signing import node_group
from fleet_server.ota.waves import (
    FAILED_STATES,
    Abort,
    Action,
    Complete,
    MaintenanceWindow,
    NodeProgress,
    Offer,
    StartWave,
    WavePlan,
)

__all__ = [
    "GROUP_TAG",
    "abort_campaign",
    "apply_actions",
    "campaign_public",
    "create_campaign",
    "get_campaign",
    "group_owner",
    "groups_of",
    "list_campaigns",
    "mark_offered",
    "node_progress",
    "node_rows",
    "pause_campaign",
    "record_ota_event",
    "refresh_members",
    "resolve_target",
    "resume_campaign",
    "retry_failed",
    "shared_groups",
    "site_windows",
    "tally",
    "wave_plan",
]

logger = logging.getLogger(__name__)

# What each `ota` event phase means for the node's progress ("verified" is a
# step of downloading: the bytes are whole and their hash checked).
PHASE_STATE = {
    "offered": CampaignNodeState.OFFERED,
    "downloading": CampaignNodeState.DOWNLOADING,
    "verified": CampaignNodeState.DOWNLOADING,
    "deferred": CampaignNodeState.DEFERRED,
    "installed": CampaignNodeState.INSTALLED,
    "healthy": CampaignNodeState.HEALTHY,
    "rolled_back": CampaignNodeState.ROLLED_BACK,
    "failed": CampaignNodeState.FAILED,
}
DECOMMISSIONED = "decommissioned"


def resolve_target(*, session: Session, target: CampaignTarget) -> list[Node]:
    """The live nodes a target names (decommissioned nodes never take updates)."""
    clauses: list[Any] = []
    if target.districts:
        clauses.append(col(Node.district).in_(target.districts))
    if target.sites:
        clauses.append(col(Node.site_id).in_(target.sites))
    if target.node_ids:
        clauses.append(col(Node.node_id).in_(target.node_ids))
    if target.tags:
        tagged = select(OtaNodeTag.node_id).where(col(OtaNodeTag.tag).in_(target.tags))
        clauses.append(col(Node.node_id).in_(tagged))
    if not clauses:
        return []
    query = select(Node).where(or_(*clauses), Node.lifecycle != DECOMMISSIONED)
    return list(session.exec(query.order_by(col(Node.node_id))).all())


def _runs_on(artifact: OtaArtifact, node: Node) -> bool:
    return "any" in artifact.hardware or (node.hardware or "") in artifact.hardware


def create_campaign(
    *, session: Session, campaign_in: CampaignCreate, created_by: str, now: datetime
) -> OtaCampaign:
    """Start a campaign (caller commits); refused when it would reach no node."""
    artifact = session.get(OtaArtifact, campaign_in.artifact_id)
    if artifact is None:
        raise CampaignRefused("artifact_unknown", f"no artifact {campaign_in.artifact_id!r}")
    if campaign_in.target.is_empty():
        raise CampaignRefused("targets_nothing", "name districts, sites, tags or node ids")
    nodes = resolve_target(session=session, target=campaign_in.target)
    fit = [n for n in nodes if _runs_on(artifact, n)]
    if not fit:
        wrong = len(nodes) - len(fit)
        why = (
            f"the target names no node that can run {artifact.kind} {artifact.name} "
            f"{artifact.version} (hardware {artifact.hardware}); {wrong} node(s) matched "
            "with other hardware"
            if wrong
            else "the target names no node"
        )
        raise CampaignRefused("targets_nothing", why)
    campaign = OtaCampaign(
        # Lower case: the id travels in `ota` events as a proto `Name`.
        id=new_id().lower(),
        name=campaign_in.name,
        artifact_id=artifact.id,
        state=CampaignState.RUNNING,
        target=campaign_in.target.model_dump(),
        waves=[w.model_dump(exclude_none=True) for w in campaign_in.waves],
        min_sample=campaign_in.min_sample,
        failure_threshold=campaign_in.failure_threshold,
        wave_max_s=campaign_in.wave_max_s,
        offer_resend_s=campaign_in.offer_resend_s,
        downgrade=campaign_in.downgrade,
        created_by=created_by,
        created_at=now,
        updated_at=now,
        reason=f"{len(nodes) - len(fit)} targeted node(s) skipped: other hardware"
        if len(fit) < len(nodes)
        else "",
    )
    session.add(campaign)
    session.flush()
    session.add_all(
        OtaCampaignNode(campaign_id=campaign.id, node_id=n.node_id, updated_at=now) for n in fit
    )
    _audit(session, campaign, "created", by=created_by, now=now, detail={
        "name": campaign.name, "artifact": artifact.id, "target": campaign.target,
        "waves": campaign.waves, "nodes": len(fit),
    })  # fmt: skip
    logger.info("campaign %s (%s) by %s: %s to %d node(s)", campaign.id, campaign.name,
                created_by, artifact.id, len(fit))  # fmt: skip
    return campaign


def refresh_members(*, session: Session, campaign: OtaCampaign, now: datetime) -> int:
    """Add nodes that joined the target since the start; they wait for the next wave."""
    artifact = session.get(OtaArtifact, campaign.artifact_id)
    if artifact is None:
        return 0
    target = CampaignTarget.model_validate(campaign.target)
    have = set(
        session.exec(
            select(OtaCampaignNode.node_id).where(OtaCampaignNode.campaign_id == campaign.id)
        ).all()
    )
    new = [n for n in resolve_target(session=session, target=target)
           if n.node_id not in have and _runs_on(artifact, n)]  # fmt: skip
    session.add_all(
        OtaCampaignNode(campaign_id=campaign.id, node_id=n.node_id, updated_at=now) for n in new
    )
    return len(new)


def get_campaign(*, session: Session, campaign_id: str) -> OtaCampaign:
    """One campaign (CampaignNotFound)."""
    campaign = session.get(OtaCampaign, campaign_id)
    if campaign is None:
        raise CampaignNotFound("campaign_unknown", f"no campaign {campaign_id!r}")
    return campaign


def node_rows(*, session: Session, campaign_id: str) -> list[OtaCampaignNode]:
    """Every node of a campaign, by node id."""
    query = select(OtaCampaignNode).where(OtaCampaignNode.campaign_id == campaign_id)
    return list(session.exec(query.order_by(col(OtaCampaignNode.node_id))).all())


def _counts(session: Session, campaign_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {c: {} for c in campaign_ids}
    if not campaign_ids:
        return counts
    rows = session.exec(
        select(OtaCampaignNode.campaign_id, OtaCampaignNode.state, func.count())
        .where(col(OtaCampaignNode.campaign_id).in_(campaign_ids))
        .group_by(col(OtaCampaignNode.campaign_id), col(OtaCampaignNode.state))
    ).all()
    for campaign_id, state, n in rows:
        counts[campaign_id][state] = n
    return counts


def campaign_public(
    *, session: Session, campaign: OtaCampaign, with_nodes: bool = False
) -> OtaCampaignPublic:
    """The API's view: counts per node state, and every node's progress when asked."""
    nodes = None
    if with_nodes:
        nodes = [
            OtaCampaignNodePublic.model_validate(r)
            for r in node_rows(session=session, campaign_id=campaign.id)
        ]
    return OtaCampaignPublic.model_validate(
        {
            **campaign.model_dump(),
            "counts": _counts(session, [campaign.id])[campaign.id],
            "nodes": nodes,
        }
    )


def list_campaigns(
    *, session: Session, state: str | None = None, offset: int = 0, limit: int = 100
) -> tuple[list[OtaCampaignPublic], int]:
    """Campaigns, newest first, with their counts."""
    query = select(OtaCampaign)
    count_query = select(func.count()).select_from(OtaCampaign)
    if state is not None:
        query = query.where(OtaCampaign.state == state)
        count_query = count_query.where(OtaCampaign.state == state)
    rows = session.exec(
        query.order_by(col(OtaCampaign.created_at).desc(), col(OtaCampaign.id).desc())
        .offset(offset)
        .limit(limit)
    ).all()
    counts = _counts(session, [r.id for r in rows])
    data = [
        OtaCampaignPublic.model_validate({**r.model_dump(), "counts": counts[r.id]}) for r in rows
    ]
    return data, session.exec(count_query).one()


def _audit(session: Session, campaign: OtaCampaign, what: str, *, by: str, now: datetime,
           detail: dict[str, Any] | None = None) -> None:  # fmt: skip
    """The campaign's audit record (docs/audit.md), in the caller's transaction."""
    audit.record(
        session, actor=by if ":" in by else f"user:{by}", action=f"ota.campaign_{what}",
        object=f"ota-campaign:{campaign.id}", now=now, detail=detail,
    )  # fmt: skip


def _move(campaign: OtaCampaign, *, allowed: Iterable[str], to: str, now: datetime,
          reason: str) -> OtaCampaign:  # fmt: skip
    allowed = set(allowed)
    if campaign.state not in allowed:
        raise CampaignRefused(
            "illegal_transition",
            f"campaign {campaign.id} is {campaign.state}; {to} needs one of {sorted(allowed)}",
        )
    campaign.state = to
    campaign.reason = reason
    campaign.updated_at = now
    return campaign


def pause_campaign(*, session: Session, campaign_id: str, now: datetime, by: str) -> OtaCampaign:
    """No more offers or waves until resumed (nodes already installing carry on)."""
    campaign = get_campaign(session=session, campaign_id=campaign_id)
    moved = _move(campaign, allowed=[CampaignState.RUNNING], to=CampaignState.PAUSED, now=now,
                  reason=f"paused by {by}")  # fmt: skip
    _audit(session, moved, "paused", by=by, now=now)
    return moved


def resume_campaign(*, session: Session, campaign_id: str, now: datetime, by: str) -> OtaCampaign:
    """Carry on from where the campaign was paused."""
    campaign = get_campaign(session=session, campaign_id=campaign_id)
    moved = _move(campaign, allowed=[CampaignState.PAUSED], to=CampaignState.RUNNING, now=now,
                  reason="")  # fmt: skip
    _audit(session, moved, "resumed", by=by, now=now)
    return moved


def abort_campaign(
    *, session: Session, campaign_id: str, now: datetime, by: str, reason: str = ""
) -> OtaCampaign:
    """Stop for good: no offers, no waves (installed nodes keep what they run)."""
    campaign = get_campaign(session=session, campaign_id=campaign_id)
    why = f"aborted by {by}" + (f": {reason}" if reason else "")
    moved = _move(campaign, allowed=[CampaignState.RUNNING, CampaignState.PAUSED],
                  to=CampaignState.ABORTED, now=now, reason=why)  # fmt: skip
    _audit(session, moved, "aborted", by=by, now=now, detail={"reason": reason})
    return moved


def retry_failed(*, session: Session, campaign_id: str, now: datetime, by: str) -> int:
    """Offer the update again to the failed and rolled-back nodes only, and run again.

    Their attempt count goes up; nodes that are healthy or still working are
    left alone. A campaign aborted by its threshold runs again, judged anew.
    """
    campaign = get_campaign(session=session, campaign_id=campaign_id)
    rows = session.exec(
        select(OtaCampaignNode).where(
            OtaCampaignNode.campaign_id == campaign_id,
            col(OtaCampaignNode.state).in_(sorted(FAILED_STATES)),
        )
    ).all()
    if not rows:
        raise CampaignRefused("nothing_to_retry", f"campaign {campaign_id} has no failed node")
    for row in rows:
        row.state = CampaignNodeState.PENDING
        row.detail = ""
        row.attempt += 1
        row.offered_at = None
        row.updated_at = now
    if campaign.state != CampaignState.PAUSED:
        campaign.state = CampaignState.RUNNING
        campaign.reason = f"{len(rows)} failed node(s) retried by {by}"
    campaign.updated_at = now
    _audit(session, campaign, "retried", by=by, now=now,
           detail={"nodes": sorted(r.node_id for r in rows)})  # fmt: skip
    return len(rows)


def wave_plan(campaign: OtaCampaign) -> WavePlan:
    """The campaign as `decide_wave` reads it."""
    waves = tuple(
        ("percent", float(w["percent"])) if w.get("percent") is not None
        else ("count", float(w["count"]))
        for w in campaign.waves
    )  # fmt: skip
    return WavePlan(
        state=campaign.state, waves=waves, wave_index=campaign.wave_index,
        wave_started_at=campaign.wave_started_at, min_sample=campaign.min_sample,
        failure_threshold=campaign.failure_threshold, offer_resend_s=campaign.offer_resend_s,
        wave_max_s=campaign.wave_max_s,
    )  # fmt: skip


def site_windows(session: Session, site_ids: Iterable[str]) -> dict[str, MaintenanceWindow]:
    """The maintenance windows of these sites (sites without one may install any time)."""
    ids = sorted(set(site_ids))
    if not ids:
        return {}
    rows = session.exec(select(OtaSiteWindow).where(col(OtaSiteWindow.site_id).in_(ids))).all()
    return {
        r.site_id: MaintenanceWindow(
            r.tz,
            time(r.start_minute // 60, r.start_minute % 60),
            time((r.end_minute // 60) % 24, r.end_minute % 60),
        )
        for r in rows
    }


GROUP_TAG = "ota-group:"
MAX_GROUP_LENGTH = 63


def shared_groups(*, session: Session, node_ids: Sequence[str]) -> dict[str, str]:
    """Nodes whose OTA group is not their own id: the `ota-group:<g>` tag, by node id.

    The node must be provisioned with the same `[ota] group` (its agent.toml): it looks
    its update up under `groups/<g>/` and refuses an offer naming another group.
    """
    found: dict[str, str] = {}
    for chunk in range(0, len(node_ids), 500):
        part = list(node_ids[chunk : chunk + 500])
        rows = session.exec(
            select(OtaNodeTag.node_id, OtaNodeTag.tag).where(
                col(OtaNodeTag.node_id).in_(part), col(OtaNodeTag.tag).startswith(GROUP_TAG)
            )
        ).all()
        found.update({node_id: tag.removeprefix(GROUP_TAG) for node_id, tag in rows})
    return found


def group_owner(*, session: Session, group: str) -> str | None:
    """The node whose own group `group` is (`ota.groups.own_group`), if any.

    An id that is a group name is its own group; the other ids (with '_', or 64
    characters long) are few and are mapped here one by one.
    """
    if session.get(Node, group) is not None:
        return group
    odd = session.exec(
        select(Node.node_id).where(
            or_(
                col(Node.node_id).contains("_", autoescape=True),
                func.length(col(Node.node_id)) > MAX_GROUP_LENGTH,
            )
        )
    ).all()
    return next((n for n in odd if node_group(n) == group), None)


def groups_of(*, session: Session, node_ids: Sequence[str]) -> dict[str, str]:
    """Every node's OTA group: its shared group, or its own id in lower case."""
    shared = shared_groups(session=session, node_ids=node_ids)
    return {n: shared.get(n) or node_group(n) for n in node_ids}


def node_progress(*, session: Session, rows: Sequence[OtaCampaignNode]) -> list[NodeProgress]:
    """The campaign's nodes as `decide_wave` reads them, with their site's window."""
    ids = [r.node_id for r in rows]
    shared = shared_groups(session=session, node_ids=ids)
    sites: dict[str, str | None] = {}
    for chunk in range(0, len(ids), 500):
        part = ids[chunk : chunk + 500]
        sites.update(
            session.exec(select(Node.node_id, Node.site_id).where(col(Node.node_id).in_(part)))
            .all()
        )  # fmt: skip
    windows = site_windows(session, (s for s in sites.values() if s))
    return [
        NodeProgress(
            r.node_id,
            r.wave,
            r.state,
            r.offered_at,
            windows.get(sites.get(r.node_id) or ""),
            shared.get(r.node_id),
        )
        for r in rows
    ]


def apply_actions(
    *,
    session: Session,
    campaign: OtaCampaign,
    rows: Sequence[OtaCampaignNode],
    actions: Sequence[Action],
    now: datetime,
) -> list[OtaCampaignNode]:
    """Write `decide_wave`'s decisions; return the rows to send an offer to."""
    by_id = {r.node_id: r for r in rows}
    to_offer: list[OtaCampaignNode] = []
    for action in actions:
        if isinstance(action, StartWave):
            if action.index != campaign.wave_index:
                campaign.wave_index = action.index
                campaign.wave_started_at = now
                logger.info("campaign %s: wave %d starts with %d node(s)", campaign.id,
                            action.index + 1, len(action.node_ids))  # fmt: skip
            for node_id in action.node_ids:
                by_id[node_id].wave = action.index
        elif isinstance(action, Offer):
            to_offer.append(by_id[action.node_id])
        elif isinstance(action, Abort):
            campaign.state = CampaignState.ABORTED
            campaign.reason = action.reason
            logger.warning("campaign %s aborted: %s", campaign.id, action.reason)
        elif isinstance(action, Complete):
            campaign.state = CampaignState.COMPLETED
            logger.info("campaign %s completed", campaign.id)
        campaign.updated_at = now
    return to_offer


def mark_offered(rows: Sequence[OtaCampaignNode], *, now: datetime) -> None:
    """The offer went out: remember when (the resend clock starts)."""
    for row in rows:
        if row.state == CampaignNodeState.PENDING:
            row.state = CampaignNodeState.OFFERED
        row.offered_at = now
        row.offers += 1
        row.updated_at = now


def record_ota_event(
    *,
    session: Session,
    node_id: str,
    phase: str,
    artifact: str,
    version: str,
    campaign_id: str | None,
    detail: str | None,
    reported_at: datetime,
    now: datetime,
    reason: str | None = None,
    bytes_done: int | None = None,
    bytes_total: int | None = None,
    artifact_kind: str | None = None,
) -> OtaCampaignNode | None:
    """Apply a node's `ota` event to its campaign progress; None when no campaign matches.

    Without a campaign id the node's newest campaign for that artifact name
    and version is meant. A refusal from a scheduled check (`failed` or
    `deferred`, no campaign, version "unknown": the metadata was refused
    before any offer was read) belongs to the node's newest running or
    paused campaign for that artifact kind in which it was offered and has
    not installed yet, so the admin sees the reason where the node stalls. An event older
    (by the node's clock) than the last one applied does not move the state
    back. The node's detail is kept as "<reason>: <words>" (the stable code
    first, so an admin can sort and act on it), and a download's progress
    as bytes.
    """
    state = PHASE_STATE.get(phase)
    if state is None:
        return None
    query = select(OtaCampaignNode).where(OtaCampaignNode.node_id == node_id)
    if campaign_id is not None:
        query = query.where(OtaCampaignNode.campaign_id == campaign_id)
    else:
        query = (
            query.join(OtaCampaign, col(OtaCampaign.id) == col(OtaCampaignNode.campaign_id))
            .join(OtaArtifact, col(OtaArtifact.id) == col(OtaCampaign.artifact_id))
            .where(OtaArtifact.name == artifact, OtaArtifact.version == version)
            .order_by(col(OtaCampaign.created_at).desc())
        )
    row = session.exec(query).first()
    if row is None and campaign_id is None and state in _REFUSAL_STATES:
        row = _active_row(session, node_id=node_id, kind=artifact_kind or artifact)
    if row is None:
        return None
    if row.reported_at is not None and reported_at < row.reported_at:
        return row
    row.state = state
    row.detail = _detail(reason, detail, bytes_done, bytes_total)
    row.reported_at = reported_at
    row.updated_at = now
    return row


# Where a refusal with no campaign may land: the node was offered the update (a pending
# node's group has nothing signed for it yet) and has not installed it.
_REFUSAL_STATES = frozenset({CampaignNodeState.FAILED, CampaignNodeState.DEFERRED})
_NOT_YET_INSTALLED = (
    CampaignNodeState.OFFERED,
    CampaignNodeState.DOWNLOADING,
    CampaignNodeState.DEFERRED,
    CampaignNodeState.FAILED,
)


def _active_row(session: Session, *, node_id: str, kind: str) -> OtaCampaignNode | None:
    """The node's row in its newest live campaign for `kind` that it has not installed yet."""
    return session.exec(
        select(OtaCampaignNode)
        .join(OtaCampaign, col(OtaCampaign.id) == col(OtaCampaignNode.campaign_id))
        .join(OtaArtifact, col(OtaArtifact.id) == col(OtaCampaign.artifact_id))
        .where(
            OtaCampaignNode.node_id == node_id,
            OtaArtifact.kind == kind,
            col(OtaCampaign.state).in_([CampaignState.RUNNING, CampaignState.PAUSED]),
            col(OtaCampaignNode.state).in_(_NOT_YET_INSTALLED),
        )
        .order_by(col(OtaCampaign.created_at).desc())
    ).first()


def _detail(reason: str | None, words: str | None, done: int | None, total: int | None) -> str:
    text = ": ".join(p for p in (reason, words) if p)
    if done is not None and total:
        text = f"{text} ({done}/{total} bytes)" if text else f"{done}/{total} bytes"
    return text[:500]


def tally(rows: Iterable[OtaCampaignNode]) -> dict[str, int]:
    """How many nodes are in each state."""
    return dict(Counter(r.state for r in rows))
