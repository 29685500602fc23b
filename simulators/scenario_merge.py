"""One report and one summary line from the shards of a multi-process scenario run.

Each shard (`simulators.scenario_shards`) plays the same scenario for its own
nodes and writes an ordinary `simulators.scenario.ScenarioReport`. Merged,
they must read like the report of one process: sites and presses put back in
fleet and time order, totals added up, and each step's records from every
shard (and the parent's own, for the broker it restarted) folded into one —
counts summed, "how long until everyone was back" taken as the slowest
shard's, flags true only when true everywhere, node lists joined (or counted
past 50, as one process does), and what the parent measured itself (how long
the broker was down) taken from the parent. Pure functions over JSON-shaped
dicts; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from simulators.scenario import Scenario, ScenarioReport, fleet_positions

__all__ = ["merge_active", "merge_reports", "merge_status", "merge_step", "merge_totals"]

# Step record fields that count nodes, presses or connections: a shard counts its own.
SUMMED_STEP_FIELDS = frozenset(
    {
        "times",
        "sites",
        "pillars",
        "grid_tied",
        "stopped",
        "outbox_at_stop",
        "restarted",
        "outbox_after",
        "connected_before",
        "refused_connects",
        "presses",
        "presses_recorded",
        "presses_delivered",
        "mains_lost_reported",
        "mains_restored_reported",
    }
)
# One process lists a step's nodes by id up to this many, and counts them beyond.
NODE_LIST_MAX = 50
_COUNTED = re.compile(r"^(\S+) (\d+)( .*)?$")


def _positions(scenario: Scenario) -> dict[str, int]:
    return {scenario.node_id(g.group, i): p for p, g, i in fleet_positions(scenario)}


def merge_step(
    records: Sequence[Mapping[str, Any]], positions: Mapping[str, int]
) -> dict[str, Any]:
    """One step's records (same ``step``) from every shard → the record one process writes."""
    keys = dict.fromkeys(key for record in records for key in record)
    return {
        key: _merge_field(key, [r[key] for r in records if key in r], positions) for key in keys
    }


def _merge_field(key: str, values: list[Any], positions: Mapping[str, int]) -> Any:
    if key == "nodes":
        if all(isinstance(v, list) for v in values):
            joined = sorted((n for v in values for n in v), key=lambda n: positions.get(n, 0))
            return joined if len(joined) <= NODE_LIST_MAX else len(joined)
        return sum(len(v) if isinstance(v, list) else int(v) for v in values)
    if key in SUMMED_STEP_FIELDS:
        return sum(values)
    if key.endswith("_after_s") or key == "down_for_s":
        # The step is over when the slowest shard is; None (timed out) anywhere wins.
        return None if any(v is None for v in values) else max(values)
    if all(isinstance(v, bool) for v in values):
        return all(values)
    return next((v for v in values if v is not None), None)


def merge_totals(totals: Sequence[Mapping[str, Any]], *, wall_s: float) -> dict[str, Any]:
    """Fleet-wide totals: counts summed, the wall time the parent measured."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for t in totals for k in t):
        values = [t[key] for t in totals if key in t]
        if key == "districts":
            out[key] = values[0]  # the scenario's, the same in every shard
        elif key == "sim_seconds":
            out[key] = max(values)
        elif key == "duration_s":
            out[key] = round(wall_s, 2)
        elif isinstance(values[0], dict):
            summed: dict[str, int] = {}
            for value in values:
                for name, count in value.items():
                    summed[name] = summed.get(name, 0) + count
            out[key] = summed
        else:
            out[key] = sum(values)
    return out


def merge_reports(
    scenario: Scenario,
    reports: Sequence[Mapping[str, Any]],
    *,
    wall_s: float,
    parent_steps: Iterable[Mapping[str, Any]] = (),
    shards: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The shards' `ScenarioReport.to_json()` dicts → one, plus ``processes`` and ``shards``."""
    positions = _positions(scenario)
    sites = sorted((s for r in reports for s in r["sites"]), key=lambda s: positions[s["node_id"]])
    presses = sorted(
        (p for r in reports for p in r["presses"]),
        key=lambda p: (p["at_s"], positions.get(p["node_id"], 0)),
    )
    by_step: dict[int, list[Mapping[str, Any]]] = {}
    for record in (s for r in reports for s in r["steps"]):
        by_step.setdefault(int(record["step"]), []).append(record)
    steps = {order: merge_step(records, positions) for order, records in by_step.items()}
    for record in parent_steps:
        # What the parent did itself (the broker it restarted) it measured best.
        steps.setdefault(int(record["step"]), {}).update(record)
    merged = ScenarioReport(
        scenario=scenario.name,
        nodes=sum(int(r["nodes"]) for r in reports),
        speed=scenario.speed,
        sim_hours=max(float(r["sim_hours"]) for r in reports),
        wall_s=wall_s,
        sites=sites,
        presses=presses,
        steps=[record for _, record in sorted(steps.items())],
        totals=merge_totals([r["totals"] for r in reports], wall_s=wall_s),
    ).to_json()
    merged["processes"] = len(reports)
    merged["shards"] = list(shards)
    return merged


# ------------------------------------------------------------ live summary


def merge_status(statuses: Sequence[Mapping[str, Any]], *, sim_s: float) -> dict[str, Any]:
    """The shards' latest `ScenarioRunner.status()` figures → one set for `format_summary`."""
    out: dict[str, Any] = {"sim_s": sim_s}
    for key in ("nodes", "connected", "sent", "acked", "outbox", "events", "reconnects"):
        out[key] = sum(int(s.get(key, 0)) for s in statuses)
    out["dark"] = sum(int(s.get("dark", 0)) for s in statuses)
    out["offline"] = sum(int(s.get("offline", 0)) for s in statuses)
    out["active"] = merge_active(s.get("active", []) for s in statuses)
    return out


def merge_active(per_shard: Iterable[Iterable[Sequence[Any]]]) -> list[list[Any]]:
    """Steps in progress, one entry per step; "node_offline 48 in …" counts are added up."""
    texts: dict[int, list[str]] = {}
    for active in per_shard:
        for order, text in active:
            texts.setdefault(int(order), []).append(str(text))
    return [[order, _one_text(found)] for order, found in sorted(texts.items())]


def _one_text(texts: list[str]) -> str:
    if len(set(texts)) == 1:
        return texts[0]
    matches = [_COUNTED.match(t) for t in texts]
    shapes = {(m.group(1), m.group(3)) for m in matches if m is not None}
    if None in matches or len(shapes) != 1:
        return texts[0]  # differently worded (one shard further on): show the first
    action, rest = shapes.pop()
    return f"{action} {sum(int(m.group(2)) for m in matches if m is not None)}{rest or ''}"
