"""A city's fleet written straight into a server's database, for the console's pages.

`seed_fleet` makes `nodes` pillars spread over Lahore's towns (around each
town's centre, so the map's district outlines look like districts), with a
fixed mix of states (by index) — a few offline, a few with an open panic, some
below their power target, some on an older firmware — and a history of
closed panic alerts with every milestone stamped, for the response-time
page. It is deterministic for a given `seed`. The positions are invented
(no surveyed coordinates are used); the towns' centres are approximate.

Used by `nigehbaan bench console` (simulators/bench_console.py) and by the
console's browser tests with a small fleet.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine
from sqlmodel import Session

from fleet_server.models import Alert, Node, PowerState

logger = logging.getLogger(__name__)

__all__ = ["TOWNS", "SeededFleet", "seed_fleet"]

# Lahore's towns (approximate centres, lat/lon), a spread in degrees, and the
# response-time profile of their control room (seconds to acknowledge, p50).
TOWNS: tuple[tuple[str, float, float, float, float], ...] = (
    ("lahore-gulberg", 31.515, 74.345, 0.018, 6.0),
    ("lahore-model-town", 31.483, 74.325, 0.016, 7.0),
    ("lahore-johar-town", 31.469, 74.272, 0.020, 14.0),
    ("lahore-dha", 31.478, 74.405, 0.022, 6.5),
    ("lahore-shalimar", 31.585, 74.380, 0.018, 15.0),
    ("lahore-ravi", 31.600, 74.300, 0.017, 22.0),
    ("lahore-data-ganj-bakhsh", 31.565, 74.320, 0.015, 7.5),
    ("lahore-samanabad", 31.535, 74.295, 0.014, 16.0),
    ("lahore-wagah", 31.590, 74.470, 0.030, 25.0),
    ("lahore-iqbal-town", 31.505, 74.285, 0.016, 7.0),
)
CURRENT_FIRMWARE = "1.4.2"
OLD_FIRMWARE = "1.3.9"


@dataclass
class SeededFleet:
    """What was written: the node ids by state, for a test or a benchmark to use."""

    node_ids: list[str] = field(default_factory=list)
    offline: list[str] = field(default_factory=list)
    alerting: list[str] = field(default_factory=list)
    power_risk: list[str] = field(default_factory=list)
    lagging: list[str] = field(default_factory=list)
    closed_alerts: int = 0


def _closed_panic(
    rng: random.Random, node: Node, *, ack_p50: float, now: datetime, days: int
) -> Alert:
    received = now - timedelta(seconds=rng.uniform(600, days * 86400))
    press = received - timedelta(seconds=rng.uniform(0.2, 2.5))
    ack = received + timedelta(seconds=rng.lognormvariate(0, 0.35) * ack_p50)
    dispatched = ack + timedelta(seconds=rng.uniform(20, 180))
    on_scene = dispatched + timedelta(seconds=rng.uniform(240, 1500))
    resolved = on_scene + timedelta(seconds=rng.uniform(300, 2400))
    return Alert(
        node_id=node.node_id,
        type="panic",
        severity="P1",
        state="closed",
        district=node.district,
        site_id=node.site_id,
        pressed_at=press,
        received_at=received,
        acknowledged_at=ack,
        dispatched_at=dispatched,
        on_scene_at=on_scene,
        resolved_at=resolved,
        closed_at=resolved + timedelta(seconds=60),
        updated_at=resolved + timedelta(seconds=60),
    )


def seed_fleet(
    engine: Engine,
    *,
    nodes: int,
    seed: int = 16,
    prefix: str = "lhr",
    closed_alerts: int = 0,
    history_days: int = 30,
    now: datetime | None = None,
) -> SeededFleet:
    """Write `nodes` nodes (and `closed_alerts` closed panics) into `engine`'s database.

    Node ids are `<prefix>-NNNNN`: tests sharing one broker give each server its own
    prefix, since a node's retained status reaches every server on that broker.
    """
    rng = random.Random(seed)
    now = now or datetime.now(timezone.utc)
    out = SeededFleet()
    rows: list[Node] = []
    with Session(engine, expire_on_commit=False) as session:
        for n in range(nodes):
            district, lat, lon, spread, _ = TOWNS[n % len(TOWNS)]
            node_id = f"{prefix}-{n:05d}"
            # States by index, so every fleet of a few dozen nodes has each of them.
            offline = n % 33 == 7
            alerting = not offline and n % 89 == 11
            at_risk = not offline and not alerting and n % 50 == 3
            lagging = n % 20 == 13
            node = Node(
                node_id=node_id,
                serial=f"NB-{n:06d}",
                hardware="rpi",
                firmware_version=OLD_FIRMWARE if lagging else CURRENT_FIRMWARE,
                site_id=f"{district}-site-{n // len(TOWNS) % 200:03d}",
                district=district,
                lat=rng.gauss(lat, spread),
                lon=rng.gauss(lon, spread),
                online=not offline,
                bd_seq=1,
                last_seen_at=now - timedelta(seconds=rng.uniform(0, 60)),
                online_changed_at=now - timedelta(hours=rng.uniform(1, 72)),
                lifecycle="active",
                created_at=now - timedelta(days=60),
                telemetry_interval_s=60.0,
            )
            rows.append(node)
            session.add(node)
            out.node_ids.append(node_id)
            if not node.online:
                out.offline.append(node_id)
                session.add(
                    Alert(
                        node_id=node_id, type="node_offline", severity="P3", state="new",
                        district=district, site_id=node.site_id,
                        received_at=node.online_changed_at or now, updated_at=now,
                    )
                )  # fmt: skip
            elif alerting:
                out.alerting.append(node_id)
                session.add(
                    Alert(
                        node_id=node_id, type="panic", severity="P1", state="new",
                        district=district, site_id=node.site_id,
                        pressed_at=now - timedelta(minutes=3),
                        received_at=now - timedelta(minutes=3), updated_at=now,
                    )
                )  # fmt: skip
            elif at_risk:
                out.power_risk.append(node_id)
            elif lagging:
                out.lagging.append(node_id)
            session.add(
                PowerState(
                    node_id=node_id,
                    ts=now,
                    received_at=now,
                    panel_w=0.0,
                    battery_v=12.4 if not at_risk else 11.6,
                    battery_soc=0.8 if not at_risk else 0.18,
                    battery_temp_c=31.0,
                    load_w=4.5,
                    mains_present=False,
                    autonomy_h=30.0 if not at_risk else 3.5,
                    policy_step=0 if not at_risk else 2,
                )
            )
        for _ in range(closed_alerts):
            node = rows[rng.randrange(len(rows))]
            ack_p50 = next(t[4] for t in TOWNS if t[0] == node.district)
            session.add(_closed_panic(rng, node, ack_p50=ack_p50, now=now, days=history_days))
        out.closed_alerts = closed_alerts
        session.commit()
    logger.info(
        "seeded %s nodes (%s offline, %s alerting, %s power at risk, %s lagging), %s closed alerts",
        nodes, len(out.offline), len(out.alerting), len(out.power_risk), len(out.lagging),
        closed_alerts,
    )  # fmt: skip
    return out
