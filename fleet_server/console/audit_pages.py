"""The console's audit page: auditors find who did what, check the chain, and take an export.

A page shell like every console page (`fleet_server.console.routes._page`:
the shared head with its strict Content-Security-Policy, no inline code);
`static/audit.js` calls `/api/v1/audit/...`, which only auditors and admins
with an every-district scope may read. Nothing on the page changes the log:
the API has no way to.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from fleet_server.console.routes import CONSOLE_PREFIX, _page

__all__ = ["router"]

router = APIRouter(prefix=CONSOLE_PREFIX, tags=["console"], include_in_schema=False)


@router.get("/audit", name="console_audit", response_class=HTMLResponse)
def audit_log(request: Request) -> HTMLResponse:
    """Filter the audit log by actor, action, object and time; verify it; export it."""
    return _page(request, "audit.html", title="Audit log", script="audit.js",
                 styles=("audit.css",))  # fmt: skip
