"""The console's fleet pages: the map, one node's page, response times; and vendored libraries.

Page shells come from `fleet_server.console.routes` (`_page`: the shared head
and its Content-Security-Policy). The map's libraries (Leaflet and
leaflet.markercluster) are vendored from the npm registry by
`scripts/vendor-frontend.sh` into ``static/vendor/<package>/`` and served
here from a fixed map of files, so the map works on a network with no
internet. Only when a deployment sets its own tile server
(`console_map_tile_url`) does the map page's policy allow images from that
one origin.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

from fleet_server.console.routes import _MEDIA_TYPES, _SECURITY_HEADERS, CONSOLE_PREFIX, _page

logger = logging.getLogger(__name__)

__all__ = ["VENDOR_DIR", "router", "tile_origin"]

VENDOR_DIR: Final = Path(__file__).resolve().parent / "static" / "vendor"

router = APIRouter(prefix=CONSOLE_PREFIX, tags=["console"], include_in_schema=False)


def tile_origin(url: str | None) -> str | None:
    """`https://tiles.example` of a tile URL template; None if unset or not http(s)."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


@router.get("/map", name="console_map", response_class=HTMLResponse)
def fleet_map(request: Request) -> HTMLResponse:
    """Every node at its coordinates, coloured by state, clustered, with district outlines."""
    response = _page(
        request,
        "map.html",
        title="Fleet map",
        script="fleet_map.js",
        styles=(
            "vendor/leaflet/leaflet.css",
            "vendor/markercluster/MarkerCluster.css",
            "fleet_pages.css",
        ),
    )
    runtime = getattr(request.app.state, "runtime", None)
    origin = tile_origin(runtime.settings.console_map_tile_url if runtime else None)
    if origin:
        policy = response.headers["Content-Security-Policy"]
        response.headers["Content-Security-Policy"] = policy.replace(
            "img-src 'self' data:", f"img-src 'self' data: {origin}", 1
        )
    return response


@router.get("/nodes/{node_id}", name="console_node", response_class=HTMLResponse)
def node_page(request: Request, node_id: str) -> HTMLResponse:
    """One node: identity, certificate, health, power, history, alerts, commands, enrollment.

    The page reads the node id from its own URL; nothing of the node is rendered here.
    """
    del node_id
    return _page(
        request, "node.html", title="Node", script="node_detail.js", styles=("fleet_pages.css",)
    )


@router.get("/response-times", name="console_response_times", response_class=HTMLResponse)
def response_times(request: Request) -> HTMLResponse:
    """Percentiles per district over a period, the target and who misses it, CSV export."""
    return _page(
        request,
        "response_times.html",
        title="Response times",
        script="response_times.js",
        styles=("fleet_pages.css",),
    )


@cache
def _vendor_files() -> dict[tuple[str, str], Path]:
    # A fixed map of (package, file): a request can never name a path outside it.
    if not VENDOR_DIR.is_dir():
        return {}
    return {
        (path.parent.name, path.name): path
        for path in VENDOR_DIR.glob("*/*")
        if path.is_file() and path.suffix in _MEDIA_TYPES
    }


@router.get("/static/vendor/{package}/{name}", name="console_vendor")
def vendor_file(package: str, name: str) -> FileResponse:
    """A vendored library's built file (see `scripts/vendor-frontend.sh`)."""
    path = _vendor_files().get((package, name))
    if path is None:
        raise HTTPException(status_code=404, detail="no such console file")
    # Versioned by the vendoring script; they change only with a release.
    headers = {**_SECURITY_HEADERS, "Cache-Control": "public, max-age=86400"}
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=headers)
