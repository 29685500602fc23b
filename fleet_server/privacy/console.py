"""The console's privacy page: draw masks per camera, see who lags, register private cameras.

A page shell like every console page (`fleet_server.console.routes._page`);
`static/privacy.js` does the work through the ``/privacy`` API, which
applies the user's scope and role.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from fleet_server.console.routes import CONSOLE_PREFIX, _page

__all__ = ["router"]

router = APIRouter(prefix=CONSOLE_PREFIX, tags=["console"], include_in_schema=False)


@router.get("/privacy", name="console_privacy", response_class=HTMLResponse)
def privacy(request: Request) -> HTMLResponse:
    """Privacy masks (drawn over the camera's view), lagging nodes, private cameras."""
    return _page(request, "privacy.html", title="Privacy", script="privacy.js",
                 styles=("privacy.css",))  # fmt: skip
