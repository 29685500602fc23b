"""`POST /login/access-token`: OAuth2 password form → signed bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordRequestForm

from fleet_server.api.deps import RuntimeDep, SessionDep
from fleet_server.auth import InvalidCredentials, authenticate, issue_token
from fleet_server.models import Token

router = APIRouter(prefix="/login", tags=["login"])


@router.post("/access-token")
def login_access_token(
    session: SessionDep,
    runtime: RuntimeDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> Token:
    """Exchange a user name and password for a bearer token."""
    try:
        user = authenticate(session=session, username=form.username, password=form.password)
    except InvalidCredentials as exc:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=str(exc),
            headers={"WWW-Authenticate": "Bearer"},
        ) from None
    token, expires_at = issue_token(
        user=user, key=runtime.signing_key, ttl_s=runtime.settings.token_ttl_s
    )
    return Token(access_token=token, expires_at=expires_at)
