"""What a scenario run reports: the live summary line and the JSON report at the end.

`ScenarioReport` is written as JSON by the CLI: per step what happened (its
record, the presses it made or that fell in its window, and the figures its
kind adds), per site, per press, and fleet-wide totals. `format_summary`
turns `ScenarioRunner.status()` figures (or several shards' summed) into the
live line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simulators.scenario.nodes import SimSite
from simulators.scenario.registry import step_kind

if TYPE_CHECKING:
    from simulators.scenario.runner import ScenarioRunner


@dataclass
class ScenarioReport:
    """What the run did; written as JSON by the CLI."""

    scenario: str
    nodes: int
    speed: float
    sim_hours: float
    wall_s: float
    sites: list[dict[str, Any]]
    presses: list[dict[str, Any]]
    steps: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "scenario": self.scenario,
            "nodes": self.nodes,
            "speed": self.speed,
            "sim_hours": round(self.sim_hours, 2),
            "wall_s": round(self.wall_s, 2),
            "went_dark": sorted(s["node_id"] for s in self.sites if s["dark_periods"]),
            "presses_sent": sum(1 for p in self.presses if p["sent"]),
            "presses_while_dark": sum(1 for p in self.presses if p["step"] is None),
            "totals": self.totals,
            "steps": self.steps,
            "sites": self.sites,
            "presses": self.presses,
        }
        if self.server is not None:
            out["server"] = self.server
        return out


def format_summary(
    status: Mapping[str, Any], *, elapsed_s: float, rate: float, speed: float
) -> str:
    """The live summary line from `ScenarioRunner.status()` figures (or several summed)."""
    sim_s = float(status["sim_s"])
    line = (
        f"t={elapsed_s:6.1f}s sim {sim_s:7.0f}s "
        f"connected {status['connected']}/{status['nodes']} "
        f"presses {status['sent']} sent/{status['acked']} acked outbox {status['outbox']} "
        f"events/s {rate:.0f} reconnects {status['reconnects']}"
    )
    if speed > 1:
        line += f" day {sim_s / 3600.0 / 24:4.1f}"
    if status["dark"] or status["offline"]:
        line += f" dark {status['dark']} offline {status['offline']}"
    if status["active"]:
        line += " | " + "; ".join(text for _, text in status["active"])
    return line


def build_report(run: ScenarioRunner, *, end_h: float, wall_s: float) -> ScenarioReport:
    """The report of a finished run (closes every dark period still open)."""
    for site in run.sites.values():
        if site.dark_since_h is not None:
            site.dark_periods.append((site.dark_since_h, None))
            site.dark_since_h = None
    return ScenarioReport(
        scenario=run.scenario.name,
        nodes=len(run.sites),
        speed=run.scenario.speed,
        sim_hours=end_h,
        wall_s=wall_s,
        sites=[site_report(s) for s in run.sites.values()],
        presses=[vars(p) for p in run.presses],
        steps=[step_report(run, o, r) for o, r in sorted(run.book.records.items())],
        totals=totals(run, wall_s),
    )


def totals(run: ScenarioRunner, wall_s: float) -> dict[str, Any]:
    """Fleet-wide figures: presses (recorded, delivered, lost), events, reconnects."""
    sites = run.sites.values()
    kinds: dict[str, int] = {}
    for site in sites:
        kinds[site.group.kind] = kinds.get(site.group.kind, 0) + 1
    recorded = [p for p in run.presses if p.sent]
    delivered = sum(1 for p in recorded if p.acked)
    return {
        "nodes": len(run.sites),
        "nodes_by_kind": kinds,
        "districts": len(run.scenario.district_names),
        "presses": len(run.presses),
        "presses_recorded": len(recorded),
        "presses_delivered": delivered,
        "presses_lost": len(recorded) - delivered,
        "presses_not_recorded": len(run.presses) - len(recorded),
        "plate_events": sum(s.plates for s in sites),
        "plates_skipped": run.plates_skipped,
        "events_written": run.events_written,
        "events_acked": run.events_acked,
        "outbox_depth_end": sum(s.agent.outbox_depth for s in sites if s.running and s.agent),
        "reconnects": sum(s.reconnects for s in sites),
        "boots": sum(s.boots for s in sites),
        "duration_s": round(wall_s, 2),
        "sim_seconds": round(run.clock.elapsed(), 1),
    }


def step_report(run: ScenarioRunner, order: int, record: dict[str, Any]) -> dict[str, Any]:
    """A step's record, its presses (its own, or those in its window), and its kind's figures."""
    out = dict(record)
    book = run.book
    mine = [p for p in run.presses if p.scenario_step == order]
    window = book.windows.get(order)
    if window is not None and not mine:
        district, start, end = window
        if end >= 0:
            mine = [
                p
                for p in run.presses
                if start <= p.at_s <= end
                and (district is None or run.sites[p.node_id].district == district)
                and (order not in book.window_nodes or p.node_id in book.window_nodes[order])
            ]
    step = run.scenario.steps[order]
    if mine or step.reports_presses:
        out["presses"] = len(mine)
        out["presses_recorded"] = sum(1 for p in mine if p.sent)
        out["presses_delivered"] = sum(1 for p in mine if p.acked)
    reporter = step_kind(step.action).reporter
    if reporter is not None:
        reporter(run, step, order=order, out=out)
    return out


def site_report(site: SimSite) -> dict[str, Any]:
    """One site's run: boots, reconnects, plates, dark periods, charge and power events."""
    return {
        "node_id": site.node_id,
        "group": site.group.group,
        "kind": site.group.kind,
        "district": site.district,
        "site_id": site.config["site_id"],
        "provisioned": site.group.provisioned,
        "autonomy_target_h": site.group.autonomy_target_h,
        "boots": site.boots,
        "reconnects": site.reconnects,
        "plates": site.plates,
        "dark_periods": [
            [round(a, 2), round(b, 2) if b is not None else None] for a, b in site.dark_periods
        ],
        "min_soc": round(site.min_soc, 4),
        "min_autonomy_h": round(site.min_autonomy_h, 2)
        if site.min_autonomy_h is not None
        else None,
        "max_step": site.max_step,
        "power_events": dict(sorted(site.power_events.items())),
        "final_soc": round(site.site.soc, 4),
    }
