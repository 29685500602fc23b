"""`POST /login/access-token`: OAuth2 password form → signed bearer token.

Failed sign-ins are limited per account and per client address
(`fleet_server.auth.SignInLimits`): past the limit the answer is 429 with
`Retry-After` and a refusal saying which limit and how long to wait, and no
password is checked at all until then.

Every outcome is in the audit log (docs/audit.md): a sign-in, a failure, and
a blocked client once per wait rather than once per request.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm

from fleet_server import audit
from fleet_server.api.deps import RuntimeDep, SessionDep, SignInLimitsDep
from fleet_server.api.errors import RETRY_AFTER_HEADER, ErrorBody
from fleet_server.auth import InvalidCredentials, authenticate, issue_token
from fleet_server.models import Token
from proto.enrollment import RefusalReason, refusal_detail

router = APIRouter(prefix="/login", tags=["login"])

# When each blocked (limit, account, address) was last written to the audit log, so a
# client hammering a closed door costs one record per wait, not one per request.
_BLOCKS_NOTED: dict[str, float] = {}
_BLOCKS_NOTED_MAX = 10_000


def _first_block(key: str, *, wait_s: float) -> bool:
    """True the first time `key` is blocked in a wait of `wait_s` seconds."""
    now = time.monotonic()
    if _BLOCKS_NOTED.get(key, 0.0) > now:
        return False
    if len(_BLOCKS_NOTED) >= _BLOCKS_NOTED_MAX:
        for stale in [k for k, until in _BLOCKS_NOTED.items() if until <= now]:
            del _BLOCKS_NOTED[stale]
        if len(_BLOCKS_NOTED) >= _BLOCKS_NOTED_MAX:
            _BLOCKS_NOTED.clear()
    _BLOCKS_NOTED[key] = now + wait_s
    return True


@router.post(
    "/access-token",
    responses={
        429: {
            "model": ErrorBody,
            "description": "too many failed sign-ins for this account or from this address",
            "headers": RETRY_AFTER_HEADER,
        }
    },
)
def login_access_token(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    limits: SignInLimitsDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> Token:
    """Exchange a user name and password for a bearer token."""
    address = request.client.host if request.client else "unknown"
    blocked = limits.wait_s(username=form.username, address=address)
    if blocked is not None:
        what, wait = blocked
        whose = "this account" if what == "account" else "your address"
        if _first_block(f"{what}:{form.username}:{address}", wait_s=wait):
            audit.record(
                session, actor="anonymous", action="login.blocked",
                object=f"user:{form.username}"[:200],
                detail={"address": address, "limit": what, "wait_s": wait},
            )  # fmt: skip
            session.commit()
        raise HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail=refusal_detail(
                RefusalReason.RATE_LIMITED,
                f"too many failed sign-ins for {whose}; try again in {wait} s",
            ),
            headers={"Retry-After": str(wait)},
        )
    try:
        user = authenticate(session=session, username=form.username, password=form.password)
    except InvalidCredentials as exc:
        limits.failed(username=form.username, address=address)
        session.rollback()
        audit.record(
            session, actor="anonymous", action="login.failed",
            object=f"user:{form.username}"[:200],
            detail={"address": address, "reason": str(exc)},
        )  # fmt: skip
        session.commit()
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=str(exc),
            headers={"WWW-Authenticate": "Bearer"},
        ) from None
    token, expires_at = issue_token(
        user=user, key=runtime.signing_key, ttl_s=runtime.settings.token_ttl_s
    )
    audit.record(
        session, actor=f"user:{user.username}", action="login.succeeded",
        object=f"user:{user.username}", detail={"address": address},
    )  # fmt: skip
    session.commit()
    return Token(access_token=token, expires_at=expires_at)
