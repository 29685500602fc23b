"""The console's evidence page: an alert's signed evidence, exports and their approval, holds.

A page shell like every console page (`fleet_server.console.routes._page`);
`static/evidence.js` does the work through the scoped evidence API
(`fleet_server.evidence.routes`, docs/evidence.md). The alert queue's
"Export evidence" action opens it with ``?alert=<id>``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from fleet_server.console.routes import CONSOLE_PREFIX, _page

__all__ = ["router"]

router = APIRouter(prefix=CONSOLE_PREFIX, tags=["console"], include_in_schema=False)


@router.get("/evidence", name="console_evidence", response_class=HTMLResponse)
def evidence(request: Request) -> HTMLResponse:
    """An alert's evidence files, the export action, export approvals, cases and holds."""
    return _page(request, "evidence.html", title="Evidence", script="evidence.js",
                 styles=("evidence.css",))  # fmt: skip
