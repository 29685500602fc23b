"""What ingest refused: counts by reason and node."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fleet_server.api.deps import CurrentUser, SessionDep
from fleet_server.crud import rejection_report
from fleet_server.models import IngestRejectionsPublic

router = APIRouter(prefix="/ingest", tags=["ingest"])


@router.get("/rejections")
def read_rejections(
    session: SessionDep,
    _user: CurrentUser,
    node_id: Annotated[str | None, Query(max_length=64)] = None,
) -> IngestRejectionsPublic:
    """Every refused-message counter (persisted), with totals by reason and by node."""
    return rejection_report(session=session, node_id=node_id)
