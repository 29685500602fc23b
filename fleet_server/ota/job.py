"""The timer job that runs campaigns: new members, the wave rule, offers to nodes.

Every tick (`fleet_server.timers.TimerLoop`) it reads the running campaigns,
adds nodes that joined their targets, asks `decide_wave` what to do, writes
the decisions, signs the artifact as what each offered node's group should
run (`SignedRepository.assign`, when a signed repository is set up) and
publishes the offers through the server's MQTT publisher. When the rule
aborts a campaign, the assignment is withdrawn from every group not yet
healthy on it, so a node still deferring never installs the failed version
later; a campaign an admin aborted through the API is withdrawn the same way
at the next once-a-minute sweep. Once a minute it
also re-signs online metadata close to expiry.
The offers are published inside the job's transaction, before the loop
commits: an offer whose transaction then fails is harmless (the node checks
the repository and finds what its campaign assigned, or nothing), and the
node is offered again after `offer_resend_s`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from fleet_server.alerting import AlertNotice
from fleet_server.ingest import Publisher
from fleet_server.models.ota import CampaignState, OtaArtifact, OtaCampaign
from fleet_server.node_commands import NodeUnreachable, check_reachable
from fleet_server.ota.artifacts import target_path
from fleet_server.ota.campaigns import (
    apply_actions,
    groups_of,
    mark_offered,
    node_progress,
    node_rows,
    refresh_members,
    wave_plan,
)
from fleet_server.ota.errors import OtaServerError
from fleet_server.ota.offers import offer_command
from fleet_server.ota.signing import SignedRepository
from fleet_server.ota.waves import Abort, decide_wave
from proto.codec import encode, topic_for

__all__ = ["OtaWaveJob"]

logger = logging.getLogger(__name__)


@dataclass
class OtaWaveJob:
    """Runs every running campaign one step (see the module docstring).

    `publisher` gives the MQTT publisher when there is one (None: no broker,
    so nothing is offered and nodes stay pending). Targets are re-resolved
    every `members_every_s`, not every tick.
    """

    publisher: Callable[[], Publisher | None] = lambda: None
    repository: Callable[[], SignedRepository | None] = lambda: None
    offer_ttl_s: int = 3600
    members_every_s: float = 30.0
    refresh_every_s: float = 60.0
    name: str = "ota-waves"
    _members_at: datetime | None = field(default=None, init=False, repr=False)
    _refresh_at: datetime | None = field(default=None, init=False, repr=False)

    def run(self, session: Session, now: datetime) -> Sequence[AlertNotice]:
        campaigns = session.exec(
            select(OtaCampaign).where(OtaCampaign.state == CampaignState.RUNNING)
            .order_by(col(OtaCampaign.created_at))
            .with_for_update(skip_locked=True)
        ).all()  # fmt: skip
        refresh = self._members_at is None or now >= self._members_at
        if refresh:
            self._members_at = now + timedelta(seconds=self.members_every_s)
        publisher = self.publisher()
        repository = self.repository()
        for campaign in campaigns:
            self._step(session, campaign, now, refresh=refresh, publisher=publisher,
                       repository=repository)  # fmt: skip
        if repository is not None and (self._refresh_at is None or now >= self._refresh_at):
            self._refresh_at = now + timedelta(seconds=self.refresh_every_s)
            self._sweep_aborted(session, repository, now)
            repository.refresh()
        return []

    def _sweep_aborted(self, session: Session, repository: SignedRepository, now: datetime) -> None:
        """Withdraw campaigns aborted by an admin (the API) in the last day, like the rule's.

        Stateless: only groups whose assignment still names the campaign are touched, so
        running it again (or after the rule's own abort) changes nothing.
        """
        aborted = session.exec(
            select(OtaCampaign).where(
                OtaCampaign.state == CampaignState.ABORTED,
                col(OtaCampaign.updated_at) >= now - timedelta(days=1),
            )
        ).all()
        for campaign in aborted:
            artifact = session.get(OtaArtifact, campaign.artifact_id)
            if artifact is not None:
                rows = node_rows(session=session, campaign_id=campaign.id)
                self._withdraw(session, repository, campaign, artifact, rows)

    @staticmethod
    def _withdraw(
        session: Session,
        repository: SignedRepository,
        campaign: OtaCampaign,
        artifact: OtaArtifact,
        rows: Sequence[Any],
    ) -> None:
        """An aborted campaign's assignment goes from every node not yet healthy on it.

        Otherwise a node that deferred (an alert, its battery, its window) would
        still find the failed version signed for its group at its next scheduled
        check and install it after the abort.
        """
        sick = [r.node_id for r in rows if r.state != "healthy"]
        groups = sorted(set(groups_of(session=session, node_ids=sick).values()))
        try:
            repository.withdraw(groups=groups, kind=artifact.kind, campaign_id=campaign.id)
        except OtaServerError as exc:
            logger.error("campaign %s aborted but not withdrawn: %s", campaign.id, exc.message)

    def _step(
        self,
        session: Session,
        campaign: OtaCampaign,
        now: datetime,
        *,
        refresh: bool,
        publisher: Publisher | None,
        repository: SignedRepository | None,
    ) -> None:
        if refresh and refresh_members(session=session, campaign=campaign, now=now):
            session.flush()
        rows = node_rows(session=session, campaign_id=campaign.id)
        actions = decide_wave(wave_plan(campaign), node_progress(session=session, rows=rows), now)
        if not actions:
            return
        to_offer = apply_actions(session=session, campaign=campaign, rows=rows,
                                 actions=actions, now=now)  # fmt: skip
        artifact = session.get(OtaArtifact, campaign.artifact_id)
        if (
            repository is not None
            and artifact is not None
            and any(isinstance(a, Abort) for a in actions)
        ):
            self._withdraw(session, repository, campaign, artifact, rows)
        if not to_offer or publisher is None or artifact is None:
            return
        if repository is not None:
            try:
                repository.assign(
                    groups=sorted(set(groups_of(session=session,
                                                node_ids=[r.node_id for r in to_offer]).values())),
                    kind=artifact.kind,
                    target_path=target_path(artifact), campaign_id=campaign.id,
                    downgrade=campaign.downgrade,
                )  # fmt: skip
            except OtaServerError as exc:
                logger.error("campaign %s: %s; no offer sent this tick", campaign.id, exc.message)
                return
        offered = []
        for row in to_offer:
            try:  # a cluster worker with no way to the node now: it stays pending, offered later
                check_reachable(publisher, row.node_id)
            except NodeUnreachable as exc:
                logger.warning("campaign %s: no offer to %s now: %s", campaign.id, row.node_id,
                               exc.message)  # fmt: skip
                continue
            command = offer_command(session=session, node_id=row.node_id, campaign=campaign,
                                    artifact=artifact, now=now, ttl_s=self.offer_ttl_s)  # fmt: skip
            if command is None:
                logger.warning("campaign %s: the contract has no offer command yet; "
                               "%d node(s) stay pending", campaign.id, len(to_offer))  # fmt: skip
                return
            publisher.publish(topic_for(command), encode(command), qos=1)
            offered.append(row)
        mark_offered(offered, now=now)
