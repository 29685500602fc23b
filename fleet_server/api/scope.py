"""The scope every API route applies: `ScopeDep`, `FleetScope`, `StreamScope`, `PurposeDep`.

A route that reads or changes district-bound data takes `scope: ScopeDep`
and narrows its queries with `scope.filter(...)` / `scope.filter_nodes(...)`
or answers 404 (`not_in_scope`) for one object outside it — the same answer
as for an object that does not exist, so nothing leaks by its status code.
Fleet-wide configuration (users, API tokens, escalation policies, OTA,
enrollment) takes `FleetScope`: only an every-district scope may touch it;
others get 403 (there is nothing district-bound to hide there).

`SCOPE_FREE_ROUTES` lists the routes that need no scope, each with why;
`tests/unit/test_scope_routes.py` walks the app's routes and fails on any
route that neither depends on `get_scope`/`get_stream_scope` nor is listed,
so a new route cannot silently skip the scope. See docs/access.md.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, HTTPException, status

from fleet_server.api.deps import CurrentUser, SessionDep, StreamUser
from fleet_server.models import Alert
from fleet_server.scope import Purpose, PurposeInvalid, Scope, parse_purpose

__all__ = [
    "PURPOSE_HEADER",
    "SCOPE_FREE_ROUTES",
    "FleetScope",
    "PurposeDep",
    "ScopeDep",
    "StreamScope",
    "get_fleet_scope",
    "get_purpose",
    "get_scope",
    "get_stream_scope",
    "not_in_scope",
]

PURPOSE_HEADER = "X-Purpose"


def get_scope(user: CurrentUser) -> Scope:
    """The signed-in user's (or API token's) scope."""
    return Scope.for_user(user)


ScopeDep = Annotated[Scope, Depends(get_scope)]


def get_stream_scope(user: StreamUser) -> Scope:
    """The scope of a live-feed client (token in the header or `?access_token=`)."""
    return Scope.for_user(user)


StreamScope = Annotated[Scope, Depends(get_stream_scope)]


def get_fleet_scope(scope: ScopeDep) -> Scope:
    """Only an every-district scope: for fleet-wide configuration."""
    if not scope.is_all:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail="fleet-wide configuration needs an every-district scope (docs/access.md)",
        )
    return scope


FleetScope = Annotated[Scope, Depends(get_fleet_scope)]


def not_in_scope(what: str) -> HTTPException:
    """The 404 for an object outside the caller's scope, worded as for a missing one."""
    return HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"no {what}")


def get_purpose(
    session: SessionDep,
    scope: ScopeDep,
    x_purpose: Annotated[
        str | None,
        Header(
            alias=PURPOSE_HEADER,
            max_length=520,
            description="why you view this: case:<no>, fir:<no>, alert:<id> or note:<text>",
        ),
    ] = None,
) -> Purpose:
    """The stated purpose of a view of evidence-like data; 428 when missing, 422 when malformed.

    An `alert:<id>` purpose must name an alert the caller may see: one that does
    not exist and one outside the caller's scope get the same 422, so the answer
    says nothing about other districts' alerts. The route records the view with
    `fleet_server.scope.record_access` once it knows the object is in scope,
    before it returns the data.
    """
    if x_purpose is None:
        raise HTTPException(
            status_code=status.HTTP_428_PRECONDITION_REQUIRED,
            detail=f"send {PURPOSE_HEADER}: case:<no>, fir:<no>, alert:<id> or note:<text>",
        )
    try:
        purpose = parse_purpose(x_purpose)
    except PurposeInvalid as exc:
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)
        ) from None
    if purpose.kind == "alert":
        alert = session.get(Alert, purpose.reference)
        if alert is None or not scope.allows(alert.district):
            raise HTTPException(
                status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=f"{PURPOSE_HEADER} names alert {purpose.reference}, which does not exist "
                "or is outside your scope",
            )
    return purpose


PurposeDep = Annotated[Purpose, Depends(get_purpose)]

# (method, path) → why it needs no scope. Paths as the app routes them.
SCOPE_FREE_ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "liveness: counters only, no district data",
    ("GET", "/api/v1/openapi.json"): "the API's description, no data",
    ("POST", "/api/v1/login/access-token"): "signing in: no data, no token yet",
    ("GET", "/api/v1/users/me"): "the caller's own record (shows its own scope)",
    ("POST", "/api/v1/enroll"): "a node enrolling with its one-time token",
    ("GET", "/api/v1/enroll/{request_id}"): "a node polling its own enrollment request",
    ("POST", "/api/v1/enroll/renew"): "a node renewing its own certificate (mTLS)",
    ("GET", "/api/v1/ota/repository/metadata/{name}"): "OTA metadata for nodes (mTLS)",
    ("GET", "/api/v1/ota/repository/targets/{target_path:path}"): "OTA bytes for nodes (mTLS)",
    ("POST", "/api/v1/evidence/uploads"): "a node's signed evidence claim (mTLS)",
    ("PUT", "/api/v1/evidence/uploads/{sha256}"): "a node's evidence bytes (mTLS)",
    ("GET", "/api/v1/evidence/node/instructions"): "a node's own evidence work list (mTLS)",
    ("POST", "/api/v1/evidence/node/deleted"): "a node reporting its own deletions (mTLS)",
    ("GET", "/api/v1/watchlist-bundles/{sha256}"): "a node's own bundle, in its scope (mTLS)",
}
# Console routes serve page shells and static files only; every figure on a
# page comes from the scoped API with the user's token.
SCOPE_FREE_PREFIXES: tuple[str, ...] = ("/console", "/docs", "/redoc", "/openapi.json")
