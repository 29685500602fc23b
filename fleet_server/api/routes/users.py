"""Users: who am I, and (admins with an every-district scope) making users."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from fleet_server.api.deps import AdminUser, CurrentUser, SessionDep
from fleet_server.api.scope import FleetScope
from fleet_server.auth import UserExists, create_user
from fleet_server.models import User, UserCreate, UserPublic

router = APIRouter(prefix="/users", tags=["users"])


@router.get("/me")
def read_me(user: CurrentUser) -> UserPublic:
    """The user the token belongs to."""
    return UserPublic.model_validate(user)


@router.post("", status_code=status.HTTP_201_CREATED)
def create(
    session: SessionDep, admin: AdminUser, _fleet: FleetScope, user_in: UserCreate
) -> UserPublic:
    """Create a user (admins only)."""
    try:
        user: User = create_user(session=session, user_in=user_in, actor=f"user:{admin.username}")
    except UserExists as exc:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return UserPublic.model_validate(user)
