"""Managing console users: the list, roles, disabling and password resets (docs/console.md).

A fleet admin manages users from the console's Users page (or the REST API)
instead of restarting the server with `--create-user`. Creating a user stays
in `fleet_server.auth.create_user`; this module changes users that exist. One
rule guards every change: the fleet must keep at least one active admin, so
no change may disable or demote the last one — otherwise nobody could ever
manage users again without shell access to the server. An admin also cannot
disable their own account (another admin must), so a slip of the hand does
not end the session doing the work.

Role and active-flag changes bump the policy version in the same
transaction, because who is on duty is part of what escalation reads
(`fleet_server.alerting.policies`). A disabled user's tokens stop working at
once: the API loads the user row on every request.

Scope (docs/access.md): `agency` and `districts` are fields of `UserChange`
and columns of the user row; `change_user` applies them. `districts: null`
in a change means "leave as is"; send `all_districts: true` for every district.

Errors::

    FleetServerError
     └── UserAdminError
          ├── UserNotFound        no user with that id
          └── AdminLockout        the change would leave no active admin, or
                                  an admin tried to disable their own account
"""

from __future__ import annotations

import logging

from sqlmodel import Field, Session, SQLModel, col, func, select

from fleet_server import audit
from fleet_server.alerting.policies import bump_policy_version
from fleet_server.auth import hash_password
from fleet_server.errors import FleetServerError
from fleet_server.models import DistrictName, Role, User

logger = logging.getLogger(__name__)

__all__ = [
    "AdminLockout",
    "PasswordReset",
    "UserAdminError",
    "UserChange",
    "UserNotFound",
    "change_user",
    "list_users",
    "reset_password",
]


class UserAdminError(FleetServerError):
    """Root of refusals when managing users."""


class UserNotFound(UserAdminError):
    """No user has this id."""


class AdminLockout(UserAdminError):
    """The change would leave the fleet without an active admin, or disable its own author."""


class UserChange(SQLModel):
    """What an admin may change about a user; fields left out stay as they are."""

    role: Role | None = Field(default=None, description="the user's new role")
    is_active: bool | None = Field(
        default=None, description="false disables the user: sign-in and every token stop working"
    )
    agency: str | None = Field(default=None, max_length=64, description="the user's agency")
    districts: list[DistrictName] | None = Field(
        default=None, max_length=500, description="districts the user may see (replaces the list)"
    )
    all_districts: bool | None = Field(
        default=None, description="true: every district (command centre); overrides districts"
    )


class PasswordReset(SQLModel):
    """A new password an admin sets for a user (who should change it after signing in)."""

    password: str = Field(min_length=8, max_length=256)


def list_users(*, session: Session) -> list[User]:
    """Every user, by name."""
    return list(session.exec(select(User).order_by(col(User.username))).all())


def _get(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise UserNotFound(f"no user with id {user_id}")
    return user


def _active_admins(session: Session) -> int:
    query = (
        select(func.count())
        .select_from(User)
        .where(col(User.role) == Role.ADMIN.value, col(User.is_active).is_(True))
    )
    return int(session.exec(query).one())


def change_user(*, session: Session, user_id: int, change: UserChange, actor: User) -> User:
    """Apply `change` to the user (committed) and return it; raise AdminLockout to keep an admin."""
    user = _get(session, user_id)
    role = change.role.value if change.role is not None else user.role
    active = change.is_active if change.is_active is not None else user.is_active
    if user.id == actor.id and not active:
        raise AdminLockout("you cannot disable your own account; ask another admin")
    was_admin = user.role == Role.ADMIN.value and user.is_active
    stays_admin = role == Role.ADMIN.value and active
    if was_admin and not stays_admin and _active_admins(session) <= 1:
        raise AdminLockout(f"{user.username} is the last active admin; make another admin first")
    agency = change.agency if change.agency is not None else user.agency
    districts = user.districts
    if change.all_districts:
        districts = None
    elif change.districts is not None:
        districts = sorted(set(change.districts))
    scope_changed = (agency, districts) != (user.agency, user.districts)
    user.agency, user.districts = agency, districts  # scope (docs/access.md)
    if (role, active) == (user.role, user.is_active) and not scope_changed:
        return user
    audit.record(
        session, actor=f"user:{actor.username}", action="user.changed",
        object=f"user:{user.username}",
        detail={
            "role": [user.role, role], "active": [user.is_active, active],
            "agency": agency, "districts": districts,
        },
    )  # fmt: skip
    user.role = role
    user.is_active = active
    session.add(user)
    bump_policy_version(session)
    session.commit()
    session.refresh(user)
    logger.info(
        "user %s changed by %s: role %s, active %s", user.username, actor.username, role, active
    )
    return user


def reset_password(*, session: Session, user_id: int, reset: PasswordReset, actor: User) -> User:
    """Set a new password for the user (committed)."""
    user = _get(session, user_id)
    user.password_hash = hash_password(reset.password)
    session.add(user)
    audit.record(
        session, actor=f"user:{actor.username}", action="user.password_reset",
        object=f"user:{user.username}",
    )  # fmt: skip
    session.commit()
    session.refresh(user)
    logger.info("password of user %s reset by %s", user.username, actor.username)
    return user
