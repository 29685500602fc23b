"""Users' passwords and bearer tokens.

Passwords are stored only as argon2id hashes. Bearer tokens are signed, not
stored: `base64url(claims).base64url(HMAC-SHA256(claims))` with the user id,
role and an expiry, so any server process holding the same key can check
them without a database round trip, and a restart does not log anyone out.
The user row is still loaded per request so deactivating a user takes effect
at once. API tokens for other agencies' systems (`ngb_…`) are different:
random secrets whose SHA-256 is stored with the token's agency, role,
districts and expiry, so they can be listed and revoked; a request with one
acts as a transient `User` carrying the token's scope (docs/access.md).
`SignInLimits` slows password guessing: failed sign-ins are counted per
account and per client address (token buckets), and once either runs dry
the route answers 429 with the wait, before any password is checked.

Errors::

    FleetServerError
     └── AuthError
          ├── InvalidCredentials   wrong user name or password, or inactive user
          ├── InvalidToken         malformed, badly signed or expired token
          ├── ApiTokenNotFound     no API token with that id
          └── UserExists           a user of that name already exists
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, col, select

from fleet_server import audit
from fleet_server.alerting.policies import bump_policy_version
from fleet_server.errors import FleetServerError
from fleet_server.models import (
    ApiToken,
    ApiTokenCreate,
    Role,
    User,
    UserCreate,
    utcnow,
)
from fleet_server.ratelimit import TokenBucketLimiter

logger = logging.getLogger(__name__)

__all__ = [
    "API_TOKEN_PREFIX",
    "ApiTokenNotFound",
    "AuthError",
    "InvalidCredentials",
    "InvalidToken",
    "SignInLimits",
    "TokenClaims",
    "UserExists",
    "authenticate",
    "create_user",
    "hash_password",
    "is_api_token",
    "issue_api_token",
    "issue_token",
    "list_api_tokens",
    "revoke_api_token",
    "user_for_api_token",
    "verify_password",
    "verify_token",
]

_hasher = PasswordHasher()
# Verifying against this keeps the time of "no such user" equal to "wrong password".
_DUMMY_HASH = _hasher.hash("nigehbaan-timing-equaliser")


class AuthError(FleetServerError):
    """Root of authentication failures."""


class InvalidCredentials(AuthError):
    """Wrong user name or password, or the user is inactive."""


class InvalidToken(AuthError):
    """The bearer token is malformed, badly signed or expired."""


class UserExists(AuthError):
    """A user with this name already exists."""


class ApiTokenNotFound(AuthError):
    """No API token has this id."""


def hash_password(password: str) -> str:
    """An argon2id hash of `password`."""
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    """True when `password` matches `password_hash`."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def create_user(*, session: Session, user_in: UserCreate, actor: str = "system") -> User:
    """Store a new user (committed, audited as `actor`); raise UserExists if the name is taken."""
    existing = session.exec(select(User).where(User.username == user_in.username)).first()
    if existing is not None:
        raise UserExists(f"user {user_in.username!r} already exists")
    user = User(
        username=user_in.username,
        role=Role(user_in.role).value,
        password_hash=hash_password(user_in.password),
        agency=user_in.agency,
        districts=None if user_in.districts is None else sorted(set(user_in.districts)),
    )
    session.add(user)
    bump_policy_version(session)  # who is on duty is part of what escalation reads
    audit.record(
        session, actor=actor, action="user.created", object=f"user:{user.username}",
        detail={"role": user.role, "agency": user.agency, "districts": user.districts},
    )  # fmt: skip
    session.commit()
    session.refresh(user)
    logger.info("created user %s with role %s", user.username, user.role)
    return user


def authenticate(*, session: Session, username: str, password: str) -> User:
    """The active user with these credentials, or raise InvalidCredentials."""
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None:
        verify_password(password, _DUMMY_HASH)
        raise InvalidCredentials("incorrect user name or password")
    if not verify_password(password, user.password_hash):
        raise InvalidCredentials("incorrect user name or password")
    if not user.is_active:
        raise InvalidCredentials("user is inactive")
    return user


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says."""

    user_id: int
    username: str
    role: str
    expires_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(
    *, user: User, key: bytes, ttl_s: float, now: datetime | None = None
) -> tuple[str, datetime]:
    """A signed bearer token for `user` and its expiry time."""
    assert user.id is not None
    expires = (now or utcnow()) + timedelta(seconds=ttl_s)
    exp = int(expires.timestamp())
    claims = {
        "sub": user.id,
        "name": user.username,
        "role": user.role,
        "exp": exp,
    }
    body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    sig = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    return f"{body}.{sig}", datetime.fromtimestamp(exp, timezone.utc)


def verify_token(token: str, *, key: bytes, now: datetime | None = None) -> TokenClaims:
    """The claims of a valid, unexpired token; raise InvalidToken otherwise."""
    body, sep, sig = token.partition(".")
    if not sep or not body or not sig:
        raise InvalidToken("malformed token")
    expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, sig):
        raise InvalidToken("bad token signature")
    try:
        claims = json.loads(_unb64(body))
        user_id = int(claims["sub"])
        expires_at = datetime.fromtimestamp(int(claims["exp"]), timezone.utc)
        username = str(claims["name"])
        role = str(claims["role"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidToken("malformed token claims") from exc
    if expires_at <= (now or utcnow()):
        raise InvalidToken("token expired")
    return TokenClaims(user_id=user_id, username=username, role=role, expires_at=expires_at)


@dataclass(frozen=True)
class SignInLimits:
    """Failed sign-ins allowed per account and per client address (see the module docstring).

    Only failures spend a token, so people who type their password right are
    never slowed; a guesser meets the limit after the burst, whichever
    account or address it moves to. The account limit can slow the real
    user of an account under attack too: that is the price of stopping a
    distributed guesser, and the wait is short (the refill rate).
    """

    account: TokenBucketLimiter
    address: TokenBucketLimiter

    @staticmethod
    def _account_key(username: str) -> str:
        return username.casefold()[:128]

    def wait_s(self, *, username: str, address: str) -> tuple[str, int] | None:
        """None when a sign-in may be tried; else which limit ran dry and whole seconds to wait."""
        for what, limiter, key in (
            ("account", self.account, self._account_key(username)),
            ("address", self.address, address),
        ):
            wait = limiter.wait_s(key)
            if wait > 0:
                return what, max(1, math.ceil(wait)) if math.isfinite(wait) else 3600
        return None

    def failed(self, *, username: str, address: str) -> None:
        """Spend one token of each bucket for a failed sign-in."""
        self.account.allow(self._account_key(username))
        self.address.allow(address)


# ------------------------------------------------------------- API tokens

API_TOKEN_PREFIX = "ngb_"  # noqa: S105 - a prefix, not a secret
# How often a token's last use is written: often enough to list, rarely enough
# not to turn every read into a write.
_LAST_USED_EVERY = timedelta(minutes=1)
# Roles a token may carry: another agency's system never administers this fleet.
API_TOKEN_ROLES = frozenset({Role.OPERATOR.value, Role.TECHNICIAN.value, Role.AUDITOR.value})


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def is_api_token(token: str) -> bool:
    """True for an API token (as opposed to a signed sign-in token)."""
    return token.startswith(API_TOKEN_PREFIX)


def issue_api_token(
    *, session: Session, token_in: ApiTokenCreate, actor: User, now: datetime | None = None
) -> tuple[ApiToken, str]:
    """Store a new API token (committed) and return it with its secret, shown only now.

    Raises AuthError for an admin role: tokens are for other agencies'
    systems, which read and act within a scope but never manage the fleet.
    """
    role = Role(token_in.role).value
    if role not in API_TOKEN_ROLES:
        raise AuthError(f"an API token may carry one of {sorted(API_TOKEN_ROLES)}, not {role!r}")
    secret = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    at = now or utcnow()
    row = ApiToken(
        name=token_in.name,
        agency=token_in.agency,
        role=role,
        districts=None if token_in.districts is None else sorted(set(token_in.districts)),
        secret_sha256=_sha256(secret),
        created_by=actor.username,
        created_at=at,
        expires_at=at + timedelta(days=token_in.ttl_days),
    )
    session.add(row)
    session.flush()
    audit.record(
        session, actor=f"user:{actor.username}", action="api_token.issued",
        object=f"api-token:{row.id}", now=at,
        detail={"name": row.name, "agency": row.agency, "role": row.role,
                "districts": row.districts, "expires_at": row.expires_at.isoformat()},
    )  # fmt: skip
    session.commit()
    session.refresh(row)
    logger.info(
        "API token %s (%s, %s) issued by %s", row.name, row.agency, row.role, actor.username
    )
    return row, secret


def list_api_tokens(*, session: Session) -> list[ApiToken]:
    """Every API token, newest first (revoked and expired ones too: the record)."""
    return list(
        session.exec(
            select(ApiToken).order_by(col(ApiToken.created_at).desc(), col(ApiToken.id).desc())
        ).all()
    )


def revoke_api_token(
    *, session: Session, token_id: int, actor: User, now: datetime | None = None
) -> ApiToken:
    """Revoke a token (committed; revoking twice keeps the first time)."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise ApiTokenNotFound(f"no API token with id {token_id}")
    if row.revoked_at is None:
        row.revoked_at = now or utcnow()
        session.add(row)
        audit.record(
            session, actor=f"user:{actor.username}", action="api_token.revoked",
            object=f"api-token:{row.id}", now=row.revoked_at, detail={"name": row.name},
        )  # fmt: skip
        session.commit()
        session.refresh(row)
        logger.info("API token %s revoked by %s", row.name, actor.username)
    return row


def user_for_api_token(*, session: Session, token: str, now: datetime | None = None) -> User:
    """The transient user an API token acts as; raise InvalidToken if unknown, expired or revoked.

    The user is never added to the session: its id is the token's id negated,
    so it can never be mistaken for a real user row.
    """
    at = now or utcnow()
    row = session.exec(select(ApiToken).where(ApiToken.secret_sha256 == _sha256(token))).first()
    if row is None or row.id is None:
        raise InvalidToken("unknown API token")
    if row.revoked_at is not None:
        raise InvalidToken("API token revoked")
    if row.expires_at <= at:
        raise InvalidToken("API token expired")
    if row.last_used_at is None or at - row.last_used_at >= _LAST_USED_EVERY:
        row.last_used_at = at
        session.add(row)
        session.commit()
    return User(
        id=-row.id,
        username=f"token:{row.name}"[:64],
        role=row.role,
        is_active=True,
        password_hash="!",  # noqa: S106 - no password: never signs in
        agency=row.agency,
        districts=None if row.districts is None else list(row.districts),
        created_at=row.created_at,
    )
