"""`/fleet-map`: the fleet for the console's map, and its states alone for refreshes.

Both answer only the nodes of the caller's districts (`ScopeDep`, docs/access.md).
"""

from __future__ import annotations

from fastapi import APIRouter

from fleet_server.api.deps import RuntimeDep, SessionDep
from fleet_server.api.scope import ScopeDep
from fleet_server.fleet_map import FleetMapPublic, MapStatesPublic, fleet_map, map_states

router = APIRouter(prefix="/fleet-map", tags=["fleet map"])


@router.get("")
def read_fleet_map(session: SessionDep, runtime: RuntimeDep, scope: ScopeDep) -> FleetMapPublic:
    """Every positioned node (columns: id, lat, lon, state code, district code) and outlines.

    District outlines are the convex hull of each district's nodes (no surveyed
    boundaries are shipped); `tile_url` is the deployment's own tile server, if any.
    """
    tile_url = runtime.settings.console_map_tile_url
    return fleet_map(session=session, scope=scope, tile_url=tile_url)


@router.get("/states")
def read_map_states(session: SessionDep, scope: ScopeDep) -> MapStatesPublic:
    """State codes in the full load's order; a different `order_hash` means reload the map."""
    return map_states(session=session, scope=scope)
