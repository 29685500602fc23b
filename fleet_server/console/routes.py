"""HTTP routes of the operator console: the page shells and their static assets.

Everything under ``/console`` is public on purpose: a page is an empty shell
whose script reads the bearer token from ``sessionStorage`` and asks the API
for data, so nothing secret is rendered here. Pages are plain HTML files
filled with :class:`string.Template` (values HTML-escaped) so the console adds
no template engine to the server's dependencies. Responses carry a strict
Content-Security-Policy (scripts and styles from this origin only, no inline
code) because a token in ``sessionStorage`` is only as safe as the page that
can read it.
"""

from __future__ import annotations

import html
import json
import string
from functools import cache
from pathlib import Path
from typing import Final

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from fleet_server.alerting import TRANSITIONS
from fleet_server.models import AlertType, Role

__all__ = ["API_PREFIX", "CONSOLE_PREFIX", "ENROLLMENT_ROLES", "router"]

CONSOLE_PREFIX: Final = "/console"
API_PREFIX: Final = "/api/v1"

_HERE = Path(__file__).resolve().parent
_TEMPLATES = _HERE / "templates"
_STATIC = _HERE / "static"

_MEDIA_TYPES: Final = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

# 'self' only: the console must work on an air-gapped control-room network and
# must not let injected markup run script that could read the token.
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # The SSE URL carries the token as a query parameter; never leak it onwards.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

# Who may use the enrollment page: the roles of the enrollment API's own check
# (fleet_server.api.routes.enrollment.EnrollerUser). The queue hides its link
# from everyone else; the API refuses them either way.
ENROLLMENT_ROLES: Final = (Role.ADMIN, Role.TECHNICIAN)

router = APIRouter(prefix=CONSOLE_PREFIX, tags=["console"], include_in_schema=False)


@cache
def _transitions_json() -> str:
    # The queue offers buttons from the server's own lifecycle table, so the
    # console can never drift from the rules the API enforces.
    return json.dumps(
        {str(state): sorted(str(to) for to in targets) for state, targets in TRANSITIONS.items()},
        sort_keys=True,
    )


@cache
def _template(name: str) -> string.Template:
    return string.Template((_TEMPLATES / name).read_text(encoding="utf-8"))


def _page(
    request: Request, template: str, *, title: str, script: str, styles: tuple[str, ...] = ()
) -> HTMLResponse:
    """Fill a page shell with the URLs it needs, relative to the app's root path.

    Every page shares one `<head>` (`_head.html`: console.css, common.js, then
    the page's own `script` and extra `styles`), spliced in as `$head`.
    """
    root = str(request.scope.get("root_path", "")).rstrip("/")
    values = {
        "title": title,
        "api_base": f"{root}{API_PREFIX}",
        "static_base": f"{root}{CONSOLE_PREFIX}/static",
        "login_url": f"{root}{CONSOLE_PREFIX}/login",
        "queue_url": f"{root}{CONSOLE_PREFIX}/",
        "enrollment_url": f"{root}{CONSOLE_PREFIX}/enrollment",
        "transitions": _transitions_json(),
        "alert_types": json.dumps([str(t) for t in AlertType]),
        "enrollment_roles": json.dumps([str(r) for r in ENROLLMENT_ROLES]),
    }
    escaped = {k: html.escape(v) for k, v in values.items()}
    links = "".join(
        f'<link rel="stylesheet" href="{escaped["static_base"]}/{html.escape(name)}">\n'
        for name in styles
    )
    head = _template("_head.html").substitute(escaped, script=html.escape(script), styles=links)
    # The shared top-bar parts (page links, live-feed indicator, signed-in user), as `$nav`.
    nav = _template("_nav.html").substitute(escaped)
    body = _template(template).substitute(escaped, head=head, nav=nav)
    headers = {**_SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return HTMLResponse(body, headers=headers)


@router.get("", name="console_root")
def console_root(request: Request) -> RedirectResponse:
    """`/console` → `/console/`, so relative links behave."""
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return RedirectResponse(f"{root}{CONSOLE_PREFIX}/", status_code=307)


@router.get("/", name="console_queue", response_class=HTMLResponse)
def alert_queue(request: Request) -> HTMLResponse:
    """The live alert queue and the node panel."""
    return _page(
        request, "queue.html", title="Alert queue", script="queue.js", styles=("queue_keys.css",)
    )


@router.get("/enrollment", name="console_enrollment", response_class=HTMLResponse)
def enrollment(request: Request) -> HTMLResponse:
    """Provisioning: enrollment tokens, the manual accept queue, certificates and revocation."""
    return _page(request, "enrollment.html", title="Enrollment", script="enrollment.js")


@router.get("/login", name="console_login", response_class=HTMLResponse)
def login(request: Request) -> HTMLResponse:
    """The sign-in form; it posts to the API's OAuth2 password endpoint from script."""
    return _page(request, "login.html", title="Sign in", script="login.js")


@router.get("/power", name="console_power", response_class=HTMLResponse)
def power(request: Request) -> HTMLResponse:
    """Sites at risk tonight and a node's 48-hour power chart (docs/power.md)."""
    return _page(request, "power.html", title="Power", script="power.js", styles=("power.css",))


@router.get("/users", name="console_users", response_class=HTMLResponse)
def users(request: Request) -> HTMLResponse:
    """Fleet admins manage users and roles; the API refuses everyone else (docs/console.md)."""
    return _page(request, "users.html", title="Users", script="users.js", styles=("users.css",))


@router.get("/api-tokens", name="console_api_tokens", response_class=HTMLResponse)
def api_tokens(request: Request) -> HTMLResponse:
    """Fleet admins issue, list and revoke other agencies' API tokens (docs/access.md)."""
    return _page(request, "api_tokens.html", title="API tokens", script="api_tokens.js",
                 styles=("api_tokens.css",))  # fmt: skip


@router.get("/technician", name="console_technician", response_class=HTMLResponse)
def technician(request: Request) -> HTMLResponse:
    """The phone page at the pole: find a node, run the commissioning checklist, see it live."""
    return _page(
        request,
        "technician.html",
        title="Technician",
        script="technician.js",
        styles=("technician.css",),
    )


@cache
def _static_files() -> dict[str, Path]:
    # A fixed, flat map of file names: a request can never name a path outside it.
    return {
        path.name: path
        for path in _STATIC.iterdir()
        if path.is_file() and path.suffix in _MEDIA_TYPES
    }


@router.get("/static/{name}", name="console_static")
def static_file(name: str) -> FileResponse:
    """One of the console's own CSS/JS files."""
    path = _static_files().get(name)
    if path is None:
        raise HTTPException(status_code=404, detail="no such console file")
    headers = {**_SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=headers)
