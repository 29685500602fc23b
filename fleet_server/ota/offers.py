"""The update offer the server sends a node: a proto command, recorded like any other.

The command kind is the contract's (`proto.messages.OtaCheckCommand`, name
`ota_check`): it tells the node to check the repository now for what its
group was assigned. Its fields are hints and a cross-check (campaign, group,
artifact kind, version); the node installs only what its own group's signed
metadata says. Should a contract lack the kind, `offer_command` returns None
and the wave job leaves the nodes `pending` rather than pretend it offered.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from fleet_server.models import NodeCommand, new_id
from fleet_server.models.ota import OtaArtifact, OtaCampaign
from fleet_server.ota.campaigns import groups_of
from proto.messages import COMMAND_MODELS, CommandBase

__all__ = ["OFFER_COMMAND", "offer_command", "offers_supported"]

OFFER_COMMAND = "ota_check"


def offers_supported() -> bool:
    """Whether the contract has the offer command yet."""
    return OFFER_COMMAND in COMMAND_MODELS


def offer_command(
    *,
    session: Session,
    node_id: str,
    campaign: OtaCampaign,
    artifact: OtaArtifact,
    now: datetime,
    ttl_s: int,
) -> CommandBase | None:
    """The offer for one node, recorded as a `NodeCommand` (its reply is matched by id).

    Fields the command model has are filled from the campaign and artifact
    (`campaign_id`, `group`, `artifact_kind`, `version`); others keep their
    defaults.
    """
    model = COMMAND_MODELS.get(OFFER_COMMAND)
    if model is None:
        return None
    known: dict[str, Any] = {
        "campaign_id": campaign.id,
        "group": groups_of(session=session, node_ids=[node_id])[node_id],
        "artifact_kind": artifact.kind,
        "version": artifact.version,
    }
    args = {k: v for k, v in known.items() if k in model.model_fields}
    request_id = new_id()
    command = model.model_validate(
        {
            **args,
            "node_id": node_id,
            "ts": now,
            "request_id": request_id,
            "expires_at": now + timedelta(seconds=ttl_s),
        }
    )
    session.add(
        NodeCommand(
            request_id=request_id,
            node_id=node_id,
            name=OFFER_COMMAND,
            args=args,
            sent_by=f"campaign:{campaign.id}",
            sent_at=now,
        )
    )
    return command
