"""The console's watchlist-hit page: the hits waiting for a person, confirmed or rejected.

A page shell like every console page (`fleet_server.console.routes._page`:
the shared head with its strict Content-Security-Policy, no inline code).
`static/watchlist_hits.js` asks the operator for a stated purpose first, then
reads ``/api/v1/watchlist-hits/queue`` (each view recorded with that purpose),
refreshes it from the live alert feed, opens the matched entry
(``/watchlist-hits/{id}/entry``, recorded again) on request, and sends the
decision with a reason (``/watchlist-hits/{id}/decision``). The dispatch gate
(`fleet_server.alerting.gates`) is shown on each hit; the API is the guard.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from fleet_server.console.routes import CONSOLE_PREFIX, _page

__all__ = ["router"]

router = APIRouter(prefix=CONSOLE_PREFIX, tags=["console"], include_in_schema=False)


@router.get("/watchlist-hits", name="console_watchlist_hits", response_class=HTMLResponse)
def watchlist_hits(request: Request) -> HTMLResponse:
    """Pending watchlist hits, live: the matched entry on request, confirm or reject."""
    return _page(request, "watchlist_hits.html", title="Watchlist hits",
                 script="watchlist_hits.js", styles=("watchlist_hits.css",))  # fmt: skip
