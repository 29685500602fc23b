"""`/api-tokens`: tokens for other agencies' systems — issue, list, revoke (admins).

A token carries an agency, a role (never admin) and a set of districts (or
every district), and expires; its secret is shown once, in the answer that
issues it, and only its SHA-256 is stored (`fleet_server.auth`). A system
sends it as `Authorization: Bearer ngb_…` and sees exactly what a user with
the same role and scope would. Only an admin with an every-district scope
manages tokens (docs/access.md).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from fleet_server.api.deps import AdminUser, RowId, SessionDep
from fleet_server.api.scope import FleetScope
from fleet_server.auth import (
    ApiTokenNotFound,
    AuthError,
    issue_api_token,
    list_api_tokens,
    revoke_api_token,
)
from fleet_server.models import ApiTokenCreate, ApiTokenCreated, ApiTokenPublic, ApiTokensPublic

router = APIRouter(prefix="/api-tokens", tags=["api tokens"])


@router.post(
    "", status_code=status.HTTP_201_CREATED, responses={422: {"description": "role not allowed"}}
)
def create_api_token(
    session: SessionDep, admin: AdminUser, _fleet: FleetScope, token_in: ApiTokenCreate
) -> ApiTokenCreated:
    """Issue a token; the `token` value is in this answer and nowhere else, ever."""
    try:
        row, secret = issue_api_token(session=session, token_in=token_in, actor=admin)
    except AuthError as exc:
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)
        ) from None
    return ApiTokenCreated(**ApiTokenPublic.model_validate(row).model_dump(), token=secret)


@router.get("")
def read_api_tokens(session: SessionDep, _admin: AdminUser, _fleet: FleetScope) -> ApiTokensPublic:
    """Every token, newest first, with expiry, revocation and last use (never the secret)."""
    rows = list_api_tokens(session=session)
    return ApiTokensPublic(data=[ApiTokenPublic.model_validate(r) for r in rows], count=len(rows))


@router.post("/{token_id}/revoke", responses={404: {"description": "no such token"}})
def revoke(
    session: SessionDep, admin: AdminUser, _fleet: FleetScope, token_id: RowId
) -> ApiTokenPublic:
    """Revoke a token: every later request with it is 401."""
    try:
        row = revoke_api_token(session=session, token_id=token_id, actor=admin)
    except ApiTokenNotFound as exc:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    return ApiTokenPublic.model_validate(row)
