"""Power at the server: history, site targets, power alerts and the fleet's night-time risk.

Data functions, no HTTP, no MQTT; the ingest worker calls them inside its
batch transaction and the caller commits:

- `record_telemetry`: a node's ``Telemetry.power`` updates its `PowerState`,
  adds to its 10-minute `PowerSample` bucket (node clock; older buckets than
  `RETENTION` are pruned: on PostgreSQL by dropping daily partitions,
  `fleet_server.partitions`, and row by row only for clocks far off), and
  checks the site's targets;
- `record_power_event`: a `PowerEvent` from the node's outbox;
- `record_offline`: a node that drops off while its battery was nearly empty
  at night has *gone dark*.

Alerts use the existing mechanism (`fleet_server.alerting`, type ``power``,
P3, escalation, catch-all) with one open alert per node per kind, the kind
being the first word of the alert's ``detail``: ``mains_lost``,
``autonomy_low`` (below the site's target, 8 h unless set), ``battery_fault``
(voltage sag or over-temperature, from the node; over-temperature also from
telemetry against the site's limit) and ``dark_at_night``. A second event of
an open kind joins it (``press_count`` counts occurrences). ``mains_lost``
and ``autonomy_low`` resolve themselves (actor ``system:power``) when mains
returns / the autonomy is back at the target × `RESTORE_FACTOR` with no load
shed; faults and dark nights wait for a person.

Night and sunrise come from the node's position (its birth ``location``) at
the node's clock, through `proto.solar`: the one definition the node uses
too, so both sides flip to night at the same instant.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import String, column, table, text
from sqlmodel import Session, col, delete, select

from fleet_server.alerting import (
    AlertNotice,
    Policies,
    apply_transition,
    join_alert,
    notice,
    open_alert,
)
from fleet_server.models import OPEN_STATES, Alert, AlertState, AlertType, Node
from fleet_server.models.common import UtcDateTime
from fleet_server.models.power import (
    DEFAULT_AUTONOMY_TARGET_H,
    DEFAULT_MAX_BATTERY_TEMP_C,
    PowerHistoryPublic,
    PowerNodePublic,
    PowerOverviewPublic,
    PowerPointPublic,
    PowerSample,
    PowerSite,
    PowerSiteUpdate,
    PowerState,
)
from fleet_server.partitions import POWERSAMPLE
from proto.messages import PowerEvent, PowerTelemetry, Telemetry
from proto.solar import hours_until_sunrise, hours_until_sunset, is_night

__all__ = [
    "BUCKET_S",
    "KINDS",
    "RESTORE_FACTOR",
    "RETENTION",
    "SiteTargets",
    "hours_until_sunrise",
    "is_night",
    "list_sites",
    "node_history",
    "node_overview",
    "power_overview",
    "record_offline",
    "record_power_event",
    "record_telemetry",
    "set_site_targets",
    "site_targets",
]

logger = logging.getLogger(__name__)

BUCKET_S = 600
RETENTION = timedelta(days=30)
RESTORE_FACTOR = 1.25
DARK_SOC = 0.2  # a node that drops off at or below this charge (or shedding load) went dark
KINDS = ("mains_lost", "autonomy_low", "battery_fault", "dark_at_night")
ACTOR = "system:power"


# ----------------------------------------------------------------- targets


@dataclass(frozen=True)
class SiteTargets:
    """A site's power targets (defaults when the site has no row)."""

    autonomy_target_h: float = DEFAULT_AUTONOMY_TARGET_H
    max_battery_temp_c: float = DEFAULT_MAX_BATTERY_TEMP_C


def site_targets(*, session: Session, site_id: str | None) -> SiteTargets:
    """The targets of `site_id`, or the defaults."""
    if site_id is None:
        return SiteTargets()
    return _cache(session).sites(session).get(site_id, SiteTargets())


@dataclass
class _BatchCache:
    """What one session (one ingest batch) has looked up, so each row is read once.

    The ingest worker calls these functions for hundreds of messages per
    transaction; a query per message (and the autoflush before it) cost more
    than everything else together. Rows added here are tracked here too,
    because `Session.get` does not see pending (unflushed) objects.
    """

    site_rows: dict[str, SiteTargets] | None = None
    open_rows: dict[tuple[str, str], Alert] | None = None
    states: dict[str, PowerState | None] = field(default_factory=dict)
    samples: dict[tuple[str, datetime], PowerSample | None] = field(default_factory=dict)

    def sites(self, session: Session) -> dict[str, SiteTargets]:
        if self.site_rows is None:
            self.site_rows = {
                row.site_id: SiteTargets(row.autonomy_target_h, row.max_battery_temp_c)
                for row in session.exec(select(PowerSite))
            }
        return self.site_rows

    def open_alerts(self, session: Session) -> dict[tuple[str, str], Alert]:
        if self.open_rows is None:
            self.open_rows = {}
            for alert in session.exec(
                select(Alert)
                .where(Alert.type == AlertType.POWER)
                .where(col(Alert.state).in_(OPEN_STATES))
                .order_by(col(Alert.received_at).desc())
            ):
                kind = (alert.detail or "").split(":", 1)[0]
                self.open_rows[(alert.node_id, kind)] = alert  # oldest wins (ordered desc)
        return self.open_rows


def _cache(session: Session) -> _BatchCache:
    cache = session.info.get("power_cache")
    if not isinstance(cache, _BatchCache):
        cache = _BatchCache()
        session.info["power_cache"] = cache
    return cache


def preload_power_states(session: Session, node_ids: Collection[str]) -> None:
    """Load these nodes' `PowerState` rows for this session in one query.

    The ingest worker calls it once per batch. A node without a row is
    remembered as such, so its first power message makes the row without a
    `Session.get` (which autoflushed the whole batch before missing).
    """
    states = _cache(session).states
    wanted = [n for n in node_ids if n not in states]
    if not wanted:
        return
    states.update(dict.fromkeys(wanted))
    for state in session.exec(select(PowerState).where(col(PowerState.node_id).in_(wanted))):
        states[state.node_id] = state


# ------------------------------------------------------------------ alerts


def _find_open(session: Session, node_id: str, kind: str) -> Alert | None:
    alert = _cache(session).open_alerts(session).get((node_id, kind))
    return alert if alert is not None and alert.state in OPEN_STATES else None


def _raise(
    session: Session,
    node: Node,
    kind: str,
    text: str,
    *,
    now: datetime,
    policies: Policies,
    event: PowerEvent | None = None,
) -> tuple[Alert | None, list[AlertNotice]]:
    """Open a `kind` alert, or join the open one when an event repeats it."""
    existing = _find_open(session, node.node_id, kind)
    event_id = event.event_id if event is not None else None
    if existing is not None:
        if event_id is None:
            return existing, []
        join_alert(alert=existing, event_id=event_id, now=now)
        return existing, [notice("joined", existing, now=now, event_id=event_id, command=False)]
    alert = open_alert(
        session=session,
        node=node,
        alert_type=AlertType.POWER,
        now=now,
        policies=policies,
        event_id=event_id,
        pressed_at=event.ts if event is not None else None,
        detail=f"{kind}: {text}"[:1000],
    )
    _cache(session).open_alerts(session)[(node.node_id, kind)] = alert
    logger.warning("power alert on %s: %s: %s", node.node_id, kind, text)
    return alert, [notice("created", alert, now=now, event_id=event_id, command=False)]


def _settle(
    session: Session, node: Node, kind: str, why: str, *, now: datetime, policies: Policies
) -> list[AlertNotice]:
    alert = _find_open(session, node.node_id, kind)
    if alert is None:
        return []
    apply_transition(
        session=session,
        alert=alert,
        to=AlertState.RESOLVED,
        actor=ACTOR,
        now=now,
        policies=policies,
        note=why,
    )
    return [notice("transition", alert, now=now, command=False)]


def _check_targets(
    session: Session,
    node: Node,
    state: PowerState,
    *,
    now: datetime,
    policies: Policies,
    targets: SiteTargets,
) -> list[AlertNotice]:
    notices: list[AlertNotice] = []
    on_battery = state.mains_present is False or state.mains_present is None
    target = targets.autonomy_target_h
    autonomy = state.autonomy_h
    if autonomy is not None and on_battery and autonomy < target:
        notices += _raise(
            session,
            node,
            "autonomy_low",
            f"{autonomy:.1f} h of autonomy, site target {target:g} h",
            now=now,
            policies=policies,
        )[1]
    elif autonomy is not None and (
        state.mains_present or (autonomy >= target * RESTORE_FACTOR and not state.policy_step)
    ):
        notices += _settle(
            session,
            node,
            "autonomy_low",
            f"autonomy back to {autonomy:.1f} h",
            now=now,
            policies=policies,
        )
    temp = state.battery_temp_c
    if temp is not None and temp > targets.max_battery_temp_c:
        notices += _raise(
            session,
            node,
            "battery_fault",
            f"over_temperature: battery at {temp:.1f} °C "
            f"(site limit {targets.max_battery_temp_c:g})",
            now=now,
            policies=policies,
        )[1]
    return notices


# ---------------------------------------------------------------- ingest


def _state_for(
    session: Session, node_id: str, ts: datetime, now: datetime
) -> tuple[PowerState, datetime | None]:
    """The node's state row (made if missing) and the newest time it held before."""
    states = _cache(session).states
    state = states.get(node_id) if node_id in states else session.get(PowerState, node_id)
    newest = state.ts if state is not None else None
    if state is None:
        state = PowerState(node_id=node_id, ts=ts, received_at=now)
        session.add(state)
    states[node_id] = state
    return state, newest


def _bucket_of(ts: datetime) -> datetime:
    epoch = int(ts.timestamp())
    return datetime.fromtimestamp(epoch - epoch % BUCKET_S, tz=timezone.utc)


def _prune(session: Session, node_id: str, *, before: datetime) -> None:
    """Delete the node's buckets older than `before` (its own clock's retention cut-off).

    SQLite: from the whole table. PostgreSQL with daily partitions
    (migration 0018): only from `powersample_default`, the buckets of clocks
    far off; the days in range go whole when `PartitionJob` drops them, and
    deleting a node's rows out of a day that is about to be dropped would
    only leave dead rows for vacuum. One index probe per node per day.
    """
    name = POWERSAMPLE.table
    if session.get_bind().dialect.name == "postgresql":
        partitioned = session.execute(
            text("SELECT to_regclass(:name) IS NOT NULL"), {"name": POWERSAMPLE.default}
        ).scalar()
        if partitioned:
            name = POWERSAMPLE.default
    target = table(name, column("node_id", String()), column("bucket_start", UtcDateTime()))
    session.execute(
        delete(target).where(target.c.node_id == node_id).where(target.c.bucket_start < before)
    )


def _add_sample(
    session: Session,
    node_id: str,
    ts: datetime,
    power: PowerTelemetry,
    *,
    newest_before: datetime | None,
) -> None:
    start = _bucket_of(ts)
    samples = _cache(session).samples
    key = (node_id, start)
    if key in samples:
        row = samples[key]
    elif newest_before is None or start > _bucket_of(newest_before):
        row = None  # nothing stored this late for the node: no need to look
    else:
        row = session.get(PowerSample, key)
    if row is None:
        row = PowerSample(node_id=node_id, bucket_start=start, last_ts=ts)
        session.add(row)
        if start.hour == 0 and start.minute == 0:
            # The node's first bucket of a (UTC) day: forget what is past the retention.
            _prune(session, node_id, before=start - RETENTION)
    samples[key] = row
    row.samples += 1
    row.panel_w_sum += power.panel_w or 0.0
    row.load_w_sum += power.load_w or 0.0

    def low(old: float | None, new: float | None) -> float | None:
        return new if old is None else old if new is None else min(old, new)

    row.battery_soc_min = low(row.battery_soc_min, power.battery_soc)
    row.battery_v_min = low(row.battery_v_min, power.battery_v)
    row.autonomy_h_min = low(row.autonomy_h_min, power.autonomy_h)
    if power.battery_temp_c is not None:
        row.battery_temp_max = max(row.battery_temp_max or -1e9, power.battery_temp_c)
    if power.policy_step is not None:
        row.policy_step_max = max(row.policy_step_max or 0, power.policy_step)
    if ts >= row.last_ts:
        row.last_ts = ts
        row.battery_soc_last = power.battery_soc
        row.autonomy_h_last = power.autonomy_h
        row.mains_present = power.mains_present


def record_telemetry(
    *, session: Session, node: Node, telemetry: Telemetry, now: datetime, policies: Policies
) -> list[AlertNotice]:
    """Store a telemetry's power block and check the site's targets (not committed)."""
    if telemetry.power is None:
        return []
    with session.no_autoflush:
        return _record_telemetry(session, node, telemetry, now=now, policies=policies)


def _record_telemetry(
    session: Session, node: Node, telemetry: Telemetry, *, now: datetime, policies: Policies
) -> list[AlertNotice]:
    power = telemetry.power
    assert power is not None
    state, newest_before = _state_for(session, node.node_id, telemetry.ts, now)
    notices: list[AlertNotice] = []
    if telemetry.ts >= state.ts:
        was_mains = state.mains_present
        state.ts, state.received_at = telemetry.ts, now
        for name in PowerTelemetry.model_fields:
            setattr(state, name, getattr(power, name))
        state.max_policy_step = max(state.max_policy_step, power.policy_step or 0)
        if was_mains is True and power.mains_present is False:
            notices += _raise(
                session, node, "mains_lost", "mains absent", now=now, policies=policies
            )[1]
        elif power.mains_present:
            notices += _settle(
                session, node, "mains_lost", "mains present", now=now, policies=policies
            )
        targets = site_targets(session=session, site_id=node.site_id)
        notices += _check_targets(session, node, state, now=now, policies=policies, targets=targets)
    _add_sample(session, node.node_id, telemetry.ts, power, newest_before=newest_before)
    return notices


def record_power_event(
    *, session: Session, node: Node, event: PowerEvent, now: datetime, policies: Policies
) -> tuple[str | None, list[AlertNotice]]:
    """Apply one power event; returns the alert it opened or joined (if any) and notices."""
    state, _ = _state_for(session, node.node_id, event.ts, now)
    if event.ts >= state.ts:
        state.ts, state.received_at = event.ts, now
        if event.battery_soc is not None:
            state.battery_soc = event.battery_soc
        if event.autonomy_h is not None:
            state.autonomy_h = event.autonomy_h
        if event.policy_step is not None:
            state.policy_step = event.policy_step
            state.max_policy_step = max(state.max_policy_step, event.policy_step)
        if event.power in ("mains_lost", "mains_restored"):
            state.mains_present = event.power == "mains_restored"
    text = event.detail or "reported by the node"
    alert: Alert | None = None
    notices: list[AlertNotice] = []
    kind = event.power
    if kind == "mains_lost":
        alert, notices = _raise(
            session, node, "mains_lost", text, now=now, policies=policies, event=event
        )
    elif kind == "mains_restored":
        notices = _settle(session, node, "mains_lost", text, now=now, policies=policies)
    elif kind == "battery_fault":
        alert, notices = _raise(
            session, node, "battery_fault", text, now=now, policies=policies, event=event
        )
    elif kind == "autonomy_low":
        # The site's target decides, not the node's configured one.
        target = site_targets(session=session, site_id=node.site_id).autonomy_target_h
        if event.autonomy_h is None or event.autonomy_h < target:
            alert, notices = _raise(
                session,
                node,
                "autonomy_low",
                f"{text} (site target {target:g} h)",
                now=now,
                policies=policies,
                event=event,
            )
    elif kind == "autonomy_restored":
        target = site_targets(session=session, site_id=node.site_id).autonomy_target_h
        if event.autonomy_h is not None and event.autonomy_h >= target:
            notices = _settle(session, node, "autonomy_low", text, now=now, policies=policies)
    return (alert.id if alert is not None else None), notices


def record_offline(
    *, session: Session, node: Node, now: datetime, policies: Policies
) -> list[AlertNotice]:
    """The node dropped off: if it was on an almost empty battery at night, it went dark."""
    state = session.get(PowerState, node.node_id)
    if state is None or state.mains_present:
        return []
    shedding = bool(state.policy_step)
    empty = state.battery_soc is not None and state.battery_soc <= DARK_SOC
    if not (shedding or empty):
        return []
    if node.lat is not None and node.lon is not None:
        if not is_night(at=state.ts, lat=node.lat, lon=node.lon):
            return []
        when = "at night"
    else:
        when = "(no location: night not known)"
    soc = f"{state.battery_soc:.0%}" if state.battery_soc is not None else "unknown charge"
    text = f"went dark {when} at {state.ts:%Y-%m-%d %H:%M}Z, battery {soc}"
    text += f", step {state.policy_step}"
    return _raise(session, node, "dark_at_night", text, now=now, policies=policies)[1]


# --------------------------------------------------------------- overview


def node_overview(
    *, node: Node, state: PowerState, targets: SiteTargets, now: datetime | None = None
) -> PowerNodePublic:
    """Whether the node will last until sunrise, from its latest reading."""
    at = now or state.ts
    target = targets.autonomy_target_h
    autonomy = state.autonomy_h
    on_battery = not state.mains_present
    below = autonomy is not None and on_battery and autonomy < target
    night: bool | None = None
    until_sunrise: float | None = None
    at_sunset: float | None = None
    at_risk = False
    reason = "no location" if node.lat is None or node.lon is None else "ok"
    if node.lat is not None and node.lon is not None:
        night = is_night(at=at, lat=node.lat, lon=node.lon)
        until_sunrise = hours_until_sunrise(at=at, lat=node.lat, lon=node.lon)
        if autonomy is not None and on_battery:
            if night:
                at_sunset = autonomy
                need = until_sunrise
            else:
                # By day the panel's surplus adds charge until sunset (taken
                # as falling linearly to nothing, so half of it on average).
                to_sunset = hours_until_sunset(at=at, lat=node.lat, lon=node.lon)
                load = state.load_w or 0.0
                surplus = max(0.0, (state.panel_w or 0.0) - load) * to_sunset / 2
                gained = surplus / load if load > 0 else 0.0
                at_sunset = autonomy - to_sunset + gained
                need = until_sunrise - to_sunset
            at_risk = at_sunset < need
            reason = (
                f"{at_sunset:.1f} h of autonomy for a {need:.1f} h night"
                if at_risk
                else f"lasts the night ({at_sunset:.1f} h for {need:.1f} h)"
            )
        elif state.mains_present:
            reason = "on mains"
    return PowerNodePublic(
        node_id=node.node_id,
        site_id=node.site_id,
        district=node.district,
        online=node.online,
        ts=state.ts,
        battery_soc=state.battery_soc,
        autonomy_h=autonomy,
        load_w=state.load_w,
        panel_w=state.panel_w,
        mains_present=state.mains_present,
        policy_step=state.policy_step,
        autonomy_target_h=target,
        night=night,
        hours_until_sunrise=round(until_sunrise, 2) if until_sunrise is not None else None,
        autonomy_at_sunset_h=round(at_sunset, 2) if at_sunset is not None else None,
        at_risk_tonight=at_risk,
        below_target=below,
        reason=reason,
    )


def power_overview(
    *, session: Session, at_risk_only: bool = False, limit: int = 1000
) -> PowerOverviewPublic:
    """Every node reporting power; sites at risk tonight first, tightest margin first."""
    rows = session.exec(
        select(Node, PowerState).join(PowerState, col(PowerState.node_id) == col(Node.node_id))
    ).all()
    sites = {s.site_id: s for s in session.exec(select(PowerSite))}
    items = []
    for node, state in rows:
        site = sites.get(node.site_id or "")
        targets = (
            SiteTargets(site.autonomy_target_h, site.max_battery_temp_c) if site else SiteTargets()
        )
        items.append(node_overview(node=node, state=state, targets=targets))

    def order(item: PowerNodePublic) -> tuple[bool, bool, float, str]:
        margin = (item.autonomy_at_sunset_h or 0.0) - (item.hours_until_sunrise or 0.0)
        return (not item.at_risk_tonight, not item.below_target, margin, item.node_id)

    items.sort(key=order)
    at_risk = sum(1 for i in items if i.at_risk_tonight)
    below = sum(1 for i in items if i.below_target)
    shown = [i for i in items if i.at_risk_tonight] if at_risk_only else items
    return PowerOverviewPublic(
        data=shown[:limit], count=len(items), at_risk=at_risk, below_target=below
    )


# ---------------------------------------------------------------- history


def node_history(*, session: Session, node: Node, hours: float) -> PowerHistoryPublic:
    """The node's buckets over the `hours` ending at its latest reading (or now)."""
    state = session.get(PowerState, node.node_id)
    until = state.ts if state is not None else datetime.now(timezone.utc)
    since = until - timedelta(hours=hours)
    rows = session.exec(
        select(PowerSample)
        .where(col(PowerSample.node_id) == node.node_id)
        .where(col(PowerSample.bucket_start) >= _bucket_of(since))
        .where(col(PowerSample.bucket_start) <= until)
        .order_by(col(PowerSample.bucket_start))
    ).all()
    points = [
        PowerPointPublic(
            at=row.bucket_start,
            samples=row.samples,
            panel_w=round(row.panel_w_sum / max(row.samples, 1), 2),
            load_w=round(row.load_w_sum / max(row.samples, 1), 2),
            battery_soc=row.battery_soc_last,
            battery_soc_min=row.battery_soc_min,
            battery_v_min=row.battery_v_min,
            battery_temp_max=row.battery_temp_max,
            autonomy_h=row.autonomy_h_last,
            autonomy_h_min=row.autonomy_h_min,
            mains_present=row.mains_present,
            policy_step=row.policy_step_max,
        )
        for row in rows
    ]
    return PowerHistoryPublic(
        node_id=node.node_id,
        hours=hours,
        bucket_s=BUCKET_S,
        since=since,
        until=until,
        autonomy_target_h=site_targets(session=session, site_id=node.site_id).autonomy_target_h,
        points=points,
    )


def list_sites(*, session: Session) -> list[PowerSite]:
    """Sites with their own targets, by id."""
    return list(session.exec(select(PowerSite).order_by(col(PowerSite.site_id))))


def set_site_targets(
    *, session: Session, site_id: str, update: PowerSiteUpdate, actor: str, now: datetime
) -> PowerSite:
    """Create or replace a site's targets (not committed)."""
    row = session.get(PowerSite, site_id) or PowerSite(site_id=site_id)
    row.autonomy_target_h = update.autonomy_target_h
    row.max_battery_temp_c = update.max_battery_temp_c
    row.updated_at, row.updated_by = now, actor[:64]
    session.add(row)
    return row
