"""The fleet map's data: every node's position and state, and each district's outline.

A control room with 8,333 nodes loads the whole fleet at once, so the answer
is columnar (one array per field, positions rounded to ~1 m) rather than an
object per node: it is about a third of the size and parses in a few
milliseconds. Between full loads the page asks only for the states
(`map_states`: one small integer per node, in the order of the full load,
with a hash of that order so a changed fleet forces a reload) and hears of
alerts as they happen on the SSE feed.

A node's state is the most urgent of: ``alert`` (an open panic, tamper or
ACL alert), ``offline``, ``power_risk`` (an open power alert, or autonomy
below its site's target), ``lagging`` (firmware older than the fleet's most
common version), ``online``. Decommissioned nodes are not drawn, and a
caller sees only the nodes of its scope's districts (docs/access.md).

There are no surveyed district boundaries in the repository, so a district's
outline is the convex hull of its own nodes' positions (`district_outlines`):
approximate, and it grows with the fleet. A deployment that has real
boundaries can draw them from its tile server.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select as sa_select
from sqlmodel import Session, SQLModel, col, func, select

from fleet_server.models import Alert, AlertType, Node, PowerSite, PowerState, utcnow
from fleet_server.models.alert import OPEN_STATES
from fleet_server.models.power import DEFAULT_AUTONOMY_TARGET_H
from fleet_server.scope import Scope

logger = logging.getLogger(__name__)

__all__ = [
    "STATES",
    "DistrictOutline",
    "FleetMapPublic",
    "MapNodes",
    "MapStatesPublic",
    "convex_hull",
    "fleet_map",
    "map_states",
]

# Index = the code sent to the page; order = urgency (most urgent first).
STATES: tuple[str, ...] = ("alert", "offline", "power_risk", "lagging", "online")
_CODE = {name: code for code, name in enumerate(STATES)}
# Alerts that make a node "alert" on the map; power and node_offline have their own states.
_ALERTING_TYPES = (AlertType.PANIC, AlertType.TAMPER, AlertType.ACL_DENIED)
_DECOMMISSIONED = "decommissioned"
_DIGITS = re.compile(r"\d+")
# ~1.1 m at Lahore's latitude: finer than any pole's GPS fix.
_DECIMALS = 5


class MapNodes(SQLModel):
    """The fleet as columns: the i-th entry of every list is the i-th node."""

    id: list[str]
    lat: list[float]
    lon: list[float]
    state: list[int]
    district: list[int]


class DistrictOutline(SQLModel):
    """A district's approximate outline: the convex hull of its nodes, as [lat, lon] pairs."""

    district: str
    nodes: int
    ring: list[list[float]]


class FleetMapPublic(SQLModel):
    """`GET /fleet-map`: the whole fleet for the map."""

    generated_at: datetime
    states: list[str]
    districts: list[str]
    order_hash: str
    nodes: MapNodes
    counts: dict[str, int]
    without_position: int
    baseline_firmware: str | None
    outlines: list[DistrictOutline]
    tile_url: str | None


class MapStatesPublic(SQLModel):
    """`GET /fleet-map/states`: states only, in the order of the full load."""

    generated_at: datetime
    order_hash: str
    state: list[int]
    counts: dict[str, int]


def _version_key(version: str | None) -> tuple[int, ...]:
    return tuple(int(part) for part in _DIGITS.findall(version or ""))


def _order_hash(node_ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(node_ids).encode()).hexdigest()[:16]


def cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    """Z of (a - o) × (b - o): positive for a left turn."""
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def convex_hull(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Andrew's monotone chain: the hull counter-clockwise, without repeating the first point."""
    pts = sorted(set(points))
    if len(pts) <= 2:
        return pts
    lower: list[tuple[float, float]] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple[float, float]] = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def district_outlines(
    positions: Iterable[tuple[str, float, float]],
) -> list[DistrictOutline]:
    """Per district, the hull of its nodes' (lat, lon); under 3 distinct points: no outline."""
    by_district: dict[str, list[tuple[float, float]]] = {}
    for district, lat, lon in positions:
        by_district.setdefault(district, []).append((lat, lon))
    outlines = []
    for district in sorted(by_district):
        points = by_district[district]
        hull = convex_hull(points)
        if len(hull) < 3:
            continue
        ring = [[round(lat, _DECIMALS), round(lon, _DECIMALS)] for lat, lon in hull]
        outlines.append(DistrictOutline(district=district, nodes=len(points), ring=ring))
    return outlines


class _Fleet:
    """One read of the tables the states come from."""

    def __init__(self, session: Session, scope: Scope) -> None:
        # Core select: six columns, no ORM objects for 8,333 rows. Only the
        # caller's districts (docs/access.md): the baseline firmware is theirs too.
        query = (
            sa_select(
                col(Node.node_id), col(Node.lat), col(Node.lon), col(Node.district),
                col(Node.online), col(Node.firmware_version),
            )
            .where(col(Node.lifecycle) != _DECOMMISSIONED)
            .order_by(col(Node.node_id))
        )  # fmt: skip
        self.rows: Sequence[tuple[Any, ...]] = (
            session.execute(scope.filter(query, Node.district)).tuples().all()
        )
        open_alerts = session.exec(
            select(Alert.node_id, Alert.type)
            .where(col(Alert.state).in_(OPEN_STATES))
            .where(col(Alert.type).in_([*_ALERTING_TYPES, AlertType.POWER]))
        ).all()
        self.alerting = {n for n, t in open_alerts if t != AlertType.POWER}
        self.power_alert = {n for n, t in open_alerts if t == AlertType.POWER}
        target = func.coalesce(PowerSite.autonomy_target_h, DEFAULT_AUTONOMY_TARGET_H)
        self.below_target = set(
            session.exec(
                select(PowerState.node_id)
                .join(Node, col(Node.node_id) == col(PowerState.node_id))
                .outerjoin(PowerSite, col(PowerSite.site_id) == col(Node.site_id))
                .where(col(PowerState.autonomy_h).is_not(None))
                .where(col(PowerState.autonomy_h) < target)
            ).all()
        )
        versions = Counter(r[5] for r in self.rows if r[5])
        self.baseline = versions.most_common(1)[0][0] if versions else None
        self._baseline_key = _version_key(self.baseline)

    def state_of(self, node_id: str, online: bool, firmware: str | None) -> int:
        if node_id in self.alerting:
            return _CODE["alert"]
        if not online:
            return _CODE["offline"]
        if node_id in self.power_alert or node_id in self.below_target:
            return _CODE["power_risk"]
        if firmware and self.baseline and _version_key(firmware) < self._baseline_key:
            return _CODE["lagging"]
        return _CODE["online"]


def _counts(states: Iterable[int]) -> dict[str, int]:
    counted = Counter(states)
    return {name: counted.get(code, 0) for code, name in enumerate(STATES)}


def fleet_map(
    *, session: Session, scope: Scope | None = None, tile_url: str | None = None
) -> FleetMapPublic:
    """Every positioned node in `scope` with its state, and the district outlines."""
    fleet = _Fleet(session, scope or Scope.everything())
    ids: list[str] = []
    lats: list[float] = []
    lons: list[float] = []
    states: list[int] = []
    district_codes: list[int] = []
    district_index: dict[str, int] = {}
    positions: list[tuple[str, float, float]] = []
    without_position = 0
    for node_id, lat, lon, district, online, firmware in fleet.rows:
        if lat is None or lon is None:
            without_position += 1
            continue
        name = district or "unknown"
        code = district_index.setdefault(name, len(district_index))
        ids.append(node_id)
        lats.append(round(lat, _DECIMALS))
        lons.append(round(lon, _DECIMALS))
        states.append(fleet.state_of(node_id, online, firmware))
        district_codes.append(code)
        positions.append((name, lat, lon))
    return FleetMapPublic(
        generated_at=utcnow(),
        states=list(STATES),
        districts=list(district_index),
        order_hash=_order_hash(ids),
        nodes=MapNodes(id=ids, lat=lats, lon=lons, state=states, district=district_codes),
        counts=_counts(states),
        without_position=without_position,
        baseline_firmware=fleet.baseline,
        outlines=district_outlines(positions),
        tile_url=tile_url,
    )


def map_states(*, session: Session, scope: Scope | None = None) -> MapStatesPublic:
    """The states alone, in `fleet_map`'s order, for the page's periodic refresh."""
    fleet = _Fleet(session, scope or Scope.everything())
    ids: list[str] = []
    states: list[int] = []
    for node_id, lat, lon, _district, online, firmware in fleet.rows:
        if lat is None or lon is None:
            continue
        ids.append(node_id)
        states.append(fleet.state_of(node_id, online, firmware))
    return MapStatesPublic(
        generated_at=utcnow(), order_hash=_order_hash(ids), state=states, counts=_counts(states)
    )
