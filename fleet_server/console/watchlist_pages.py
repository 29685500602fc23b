"""The console's watchlist page: lists in scope, their entries, enrolment photos, delivery.

A page shell like every console page (`fleet_server.console.routes._page`:
the shared head with its strict Content-Security-Policy, no inline code).
`static/watchlists.js` asks for a stated purpose first (every view of a
list or its entries is recorded with it: ``X-Purpose``), then reads
``/api/v1/watchlists`` and each list's lagging nodes, opens a list's
entries and photos, and — for admins — adds plate and person entries,
uploads an enrolment photo (showing the quality figures, or the refusal's
reason and what to do about it) and delivers the list. Hiding the admin
forms from other roles is a courtesy; the API answers them 403.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from fleet_server.console.routes import CONSOLE_PREFIX, _page

__all__ = ["router"]

router = APIRouter(prefix=CONSOLE_PREFIX, tags=["console"], include_in_schema=False)


@router.get("/watchlists", name="console_watchlists", response_class=HTMLResponse)
def watchlists(request: Request) -> HTMLResponse:
    """Watchlists in scope, lagging nodes, entries, enrolment photos and delivery."""
    return _page(request, "watchlists.html", title="Watchlists",
                 script="watchlists.js", styles=("watchlists.css",))  # fmt: skip
