"""`/cluster/districts`: each district broker's uplink bridge state, for the console's map.

In a cluster deployment (docs/cluster.md) a worker holds an MQTT link to
every district broker and reads the bridge state the broker publishes on
itself; a district whose bridge to RabbitMQ is down (or whose broker this
worker cannot reach) is `degraded`: its nodes' events wait in the district
broker and no alert from them reaches an operator until it is back. On a
one-box server the answer is `clustered: false` with no districts. A scoped
caller sees only its own districts.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fleet_server.api.deps import RuntimeDep
from fleet_server.api.scope import ScopeDep

router = APIRouter(prefix="/cluster", tags=["cluster"])


@router.get("/districts")
def read_cluster_districts(runtime: RuntimeDep, scope: ScopeDep) -> dict[str, Any]:
    """`{clustered, districts: [{district, broker, uplink, degraded, since}]}`."""
    cluster = runtime.cluster
    if cluster is None:
        return {"clustered": False, "districts": []}
    rows = [
        u.public()
        for u in cluster.uplinks()
        if scope.districts is None or u.district in scope.districts
    ]
    return {"clustered": True, "districts": rows}
