"""The console's plate reads page: find a vehicle's passes, and see the cameras' health.

A page shell like every console page (`fleet_server.console.routes._page`:
the shared head with its strict Content-Security-Policy, no inline code);
`static/plate_reads.js` calls ``/api/v1/plate-reads`` (exact, prefix, or one
look-alike character away; node, district, time; paged) and
``/api/v1/cameras``, both scoped to the user's districts.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from fleet_server.console.routes import CONSOLE_PREFIX, _page

__all__ = ["router"]

router = APIRouter(prefix=CONSOLE_PREFIX, tags=["console"], include_in_schema=False)


@router.get("/plate-reads", name="console_plate_reads", response_class=HTMLResponse)
def plate_reads(request: Request) -> HTMLResponse:
    """Search plate reads by plate, node, district and time; the camera nodes' health."""
    return _page(request, "plate_reads.html", title="Plate reads", script="plate_reads.js",
                 styles=("plate_reads.css",))  # fmt: skip
