"""Typed FastAPI dependencies: the database session, the runtime, the current user.

Routes ask for `SessionDep`, `RuntimeDep`, `CurrentUser` or `OperatorUser`
instead of reaching into `request.app.state` themselves. `Offset` is the one
bound for every paging offset: the databases store 64-bit integers, and an
offset past that (`?offset=9223372036854775808`) must be a 422, not a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi import Path as PathParam
from fastapi.security import OAuth2PasswordBearer
from sqlmodel import Session

from fleet_server.auth import (
    InvalidToken,
    SignInLimits,
    is_api_token,
    user_for_api_token,
    verify_token,
)
from fleet_server.models import Role, User
from fleet_server.runtime import Runtime

logger = logging.getLogger(__name__)

TOKEN_URL = "/api/v1/login/access-token"  # noqa: S105 - a URL, not a password
_bearer = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

# Far more rows than any table holds, and far below SQLite's and PostgreSQL's 2**63.
MAX_OFFSET = 2**31 - 1
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip")]
# Integer row ids in paths: bounded like Offset, so 2**80 is a 422, not a driver overflow.
RowId = Annotated[int, PathParam(ge=1, le=MAX_OFFSET, description="row id")]


def get_sign_in_limits(request: Request) -> SignInLimits:
    limits: SignInLimits = request.app.state.sign_in_limits
    return limits


SignInLimitsDep = Annotated[SignInLimits, Depends(get_sign_in_limits)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    # expire_on_commit=False: routes return rows after committing them.
    with Session(runtime.engine, expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
TokenDep = Annotated[str | None, Depends(_bearer)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


def _user_for(token: str | None, session: Session, runtime: Runtime) -> User:
    if not token:
        raise _unauthorized("not authenticated: send 'Authorization: Bearer <token>'")
    if is_api_token(token):  # another agency's system (docs/access.md)
        try:
            return user_for_api_token(session=session, token=token)
        except InvalidToken as exc:
            raise _unauthorized(f"invalid token: {exc}") from None
    try:
        claims = verify_token(token, key=runtime.signing_key)
    except InvalidToken as exc:
        raise _unauthorized(f"invalid token: {exc}") from None
    user = session.get(User, claims.user_id)
    if user is None or not user.is_active:
        raise _unauthorized("invalid token: user no longer exists or is inactive")
    return user


def get_current_user(token: TokenDep, session: SessionDep, runtime: RuntimeDep) -> User:
    return _user_for(token, session, runtime)


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_stream_user(
    token: TokenDep,
    runtime: RuntimeDep,
    access_token: Annotated[
        str | None, Query(description="for EventSource, which cannot send headers")
    ] = None,
) -> User:
    # Its own short session: a SessionDep would stay open (and on SQLite hold
    # the write lock) for as long as the stream runs.
    with Session(runtime.engine, expire_on_commit=False) as session:
        return _user_for(token or access_token, session, runtime)


StreamUser = Annotated[User, Depends(get_stream_user)]


def require_roles(*roles: Role) -> Callable[[User], User]:
    """A dependency that lets only users with one of `roles` through."""
    allowed = {r.value for r in roles}

    def check(user: CurrentUser) -> User:
        if user.role not in allowed:
            raise HTTPException(
                status_code=status.HTTP_403_FORBIDDEN,
                detail=f"role {user.role!r} may not do this; needs one of {sorted(allowed)}",
            )
        return user

    return check


OperatorUser = Annotated[User, Depends(require_roles(Role.ADMIN, Role.OPERATOR))]
AdminUser = Annotated[User, Depends(require_roles(Role.ADMIN))]
