"""The console's OTA pages: artifacts (upload, delete) and campaigns (create, watch, pause/abort).

Page shells like every console page (`fleet_server.console.routes._page`:
the shared head and its strict Content-Security-Policy, no inline code); the
script (`static/ota.js`) reads the bearer token from ``sessionStorage`` and
calls `/api/v1/ota/...`, which decides who may do what (admins write,
operators and auditors read). Nothing here needs a CDN.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from fleet_server.console.routes import CONSOLE_PREFIX, _page

__all__ = ["router"]

router = APIRouter(prefix=f"{CONSOLE_PREFIX}/ota", tags=["console"], include_in_schema=False)


@router.get("/artifacts", name="console_ota_artifacts", response_class=HTMLResponse)
def artifacts(request: Request) -> HTMLResponse:
    """Artifacts in the repository; admins upload and delete unused ones."""
    return _page(request, "ota_artifacts.html", title="OTA artifacts", script="ota.js",
                 styles=("ota.css",))  # fmt: skip


@router.get("/campaigns", name="console_ota_campaigns", response_class=HTMLResponse)
def campaigns(request: Request) -> HTMLResponse:
    """Campaigns and each node's progress; admins create, pause, resume, abort, retry."""
    return _page(request, "ota_campaigns.html", title="OTA campaigns", script="ota.js",
                 styles=("ota.css",))  # fmt: skip
