"""Managing users (admins only): the list, role and active changes, password resets.

Creating a user is `POST /users` (`fleet_server.api.routes.users`); this
router adds what a fleet admin needs after that, so users are managed from
the console and not through server CLI flags. The rules live in
`fleet_server.users`; this module only maps its refusals to HTTP: an unknown
user is 404, a change that would leave no active admin (or disable the
caller) is 409.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlmodel import SQLModel

from fleet_server.api.deps import AdminUser, RowId, SessionDep
from fleet_server.api.scope import FleetScope
from fleet_server.models import UserPublic
from fleet_server.users import (
    AdminLockout,
    PasswordReset,
    UserChange,
    UserNotFound,
    change_user,
    list_users,
    reset_password,
)

router = APIRouter(prefix="/users", tags=["users"])


class UsersPublic(SQLModel):
    """Every user."""

    data: list[UserPublic]
    count: int


@router.get("")
def read_users(session: SessionDep, _admin: AdminUser, _fleet: FleetScope) -> UsersPublic:
    """Every user, by name (admins only)."""
    users = [UserPublic.model_validate(u) for u in list_users(session=session)]
    return UsersPublic(data=users, count=len(users))


@router.patch(
    "/{user_id}",
    responses={404: {"description": "no such user"}, 409: {"description": "admin lockout"}},
)
def update_user(
    session: SessionDep, admin: AdminUser, _fleet: FleetScope, user_id: RowId, change: UserChange
) -> UserPublic:
    """Change a user's role or disable/enable them (admins only).

    Refused (409) when it would leave no active admin, or when an admin
    disables their own account.
    """
    try:
        user = change_user(session=session, user_id=user_id, change=change, actor=admin)
    except UserNotFound as exc:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    except AdminLockout as exc:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return UserPublic.model_validate(user)


@router.post(
    "/{user_id}/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "no such user"}},
)
def set_password(
    session: SessionDep, admin: AdminUser, _fleet: FleetScope, user_id: RowId, reset: PasswordReset
) -> None:
    """Set a new password for a user (admins only)."""
    try:
        reset_password(session=session, user_id=user_id, reset=reset, actor=admin)
    except UserNotFound as exc:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
