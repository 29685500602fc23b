"""The response-time page's figures: targets per district, a CSV export and two SVG plots.

`fleet_server.response_times` computes the percentiles; this module judges
them against a target and draws them. A target reads like NENA's "90 % of
calls answered within 15 s": a stage, a percentile and a number of seconds.
With nearest-rank percentiles, "p90 ≤ 15 s" is exactly "at least 90 % within
15 s", so the target is checked on the reported percentile and the figure on
the page is one some alert actually took.

Plots are SVG drawn on the server like the power chart (`power_chart`):
presentation attributes only, every text escaped, so the console can insert
them under its strict Content-Security-Policy with no chart library.
"""

from __future__ import annotations

import csv
import io
import logging
from html import escape
from typing import Literal

from sqlmodel import SQLModel

from fleet_server.response_times import STAGES, ResponseTimesPublic, StageStats

logger = logging.getLogger(__name__)

__all__ = [
    "CHAIN",
    "DistrictVerdict",
    "ResponseTimeReport",
    "Target",
    "judge",
    "render_chain_svg",
    "render_stage_svg",
    "to_csv",
]

# The consecutive stages of one response, in order (their p90s stack into a bar).
CHAIN: tuple[str, ...] = (
    "press_to_received",
    "received_to_acknowledged",
    "acknowledged_to_dispatched",
    "dispatched_to_on_scene",
    "on_scene_to_resolved",
)
STAGE_NAMES: tuple[str, ...] = tuple(name for name, _, _ in STAGES)
STAGE_LABELS: dict[str, str] = {
    "press_to_received": "press → received",
    "received_to_acknowledged": "received → acknowledged",
    "acknowledged_to_dispatched": "acknowledged → dispatched",
    "dispatched_to_on_scene": "dispatched → on scene",
    "on_scene_to_resolved": "on scene → resolved",
    "received_to_resolved": "received → resolved",
    "press_to_resolved": "press → resolved",
}
CHAIN_COLOURS = ("#90a4ae", "#1565c0", "#6a1b9a", "#ef6c00", "#2e7d32")
Percentile = Literal[50, 90, 99]


class Target(SQLModel):
    """A target: `percentile` % of alerts within `seconds` for `stage`."""

    stage: str = "received_to_acknowledged"
    percentile: Percentile = 90
    seconds: float = 15.0

    def describe(self) -> str:
        stage = STAGE_LABELS.get(self.stage, self.stage)
        return f"{self.percentile} % {stage} within {self.seconds:g} s"


class DistrictVerdict(SQLModel):
    """One district against the target: met, missed, or no alert reached the stage."""

    district: str
    count: int
    value_s: float | None
    verdict: Literal["met", "missed", "no data"]


class ResponseTimeReport(SQLModel):
    """`GET /response-times/report`: the figures, the target and who misses it."""

    target: Target
    target_text: str
    figures: ResponseTimesPublic
    verdicts: list[DistrictVerdict]
    missing: list[str]
    stage_labels: dict[str, str]


def _value(stats: StageStats | None, pct: int) -> float | None:
    if stats is None:
        return None
    value: float | None = getattr(stats, f"p{pct}_s")
    return value


def judge(figures: ResponseTimesPublic, target: Target) -> ResponseTimeReport:
    """Each district's verdict on `target`; `missing` lists those that missed it."""
    verdicts = []
    for row in figures.data:
        stats = row.stages.get(target.stage)
        value = _value(stats, target.percentile)
        if value is None:
            verdict: Literal["met", "missed", "no data"] = "no data"
        else:
            verdict = "met" if value <= target.seconds else "missed"
        count = stats.count if stats else 0
        verdicts.append(
            DistrictVerdict(district=row.district, count=count, value_s=value, verdict=verdict)
        )
    return ResponseTimeReport(
        target=target,
        target_text=target.describe(),
        figures=figures,
        verdicts=verdicts,
        missing=[v.district for v in verdicts if v.verdict == "missed"],
        stage_labels=STAGE_LABELS,
    )


def to_csv(figures: ResponseTimesPublic) -> str:
    """One row per district and stage, seconds; the period and alert type in the first columns."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["alert_type", "since_utc", "district", "alerts", "stage", "count", "excluded",
         "p50_s", "p90_s", "p99_s", "max_s"]
    )  # fmt: skip
    since = figures.since.isoformat() if figures.since else ""
    for row in figures.data:
        for stage in STAGE_NAMES:
            stats = row.stages.get(stage)
            if stats is None:
                continue
            writer.writerow(
                [figures.alert_type, since, row.district, row.alerts, stage, stats.count,
                 stats.excluded, *(_cell(v) for v in
                                   (stats.p50_s, stats.p90_s, stats.p99_s, stats.max_s))]
            )  # fmt: skip
    return out.getvalue()


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def human_seconds(value: float) -> str:
    """12 s, 4.5 min, 2.1 h: the unit a dispatcher reads at a glance."""
    if value < 120:
        return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


WIDTH = 760
ROW_H, TOP, BOTTOM, LEFT, RIGHT = 26, 34, 36, 178, 24


def _svg_open(height: int, label: str, testid: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" aria-label="{escape(label)}" '
        f'data-chart="{escape(testid)}">',
        f"<title>{escape(label)}</title>",
    ]


def _ticks(top: float) -> list[float]:
    """About five round ticks from 0 to at least `top`."""
    raw = max(top, 1.0) / 5
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200):
        if step >= raw:
            break
    else:
        step = 86400
    ticks = [0.0]
    while ticks[-1] < top:
        ticks.append(ticks[-1] + step)
    return ticks


def _axis(out: list[str], ticks: list[float], height: int, x_of: object) -> None:
    assert callable(x_of)
    for tick in ticks:
        x = x_of(tick)
        out.append(
            f'<line x1="{x:.1f}" y1="{TOP - 4}" x2="{x:.1f}" y2="{height - BOTTOM}" '
            'stroke="#e0e0e0" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{height - BOTTOM + 16}" font-size="11" text-anchor="middle" '
            f'fill="#455a64">{escape(human_seconds(tick))}</text>'
        )


def render_stage_svg(figures: ResponseTimesPublic, target: Target) -> str:
    """Per district, the target stage's p50 (bar), p90 (mark) and p99 (whisker); target dashed."""
    rows = figures.data
    height = TOP + BOTTOM + ROW_H * max(1, len(rows))
    values = [
        v for r in rows for v in (_value(r.stages.get(target.stage), p) for p in (50, 90, 99))
        if v is not None
    ]  # fmt: skip
    top = max([*values, target.seconds * 1.25, 1.0])
    ticks = _ticks(top)
    span = ticks[-1]
    plot_w = WIDTH - LEFT - RIGHT

    def x_of(seconds: float) -> float:
        return LEFT + plot_w * min(1.0, seconds / span)

    label = f"{STAGE_LABELS.get(target.stage, target.stage)} per district: p50, p90, p99"
    out = _svg_open(height, label, "stage")
    out.append(
        f'<text x="{LEFT}" y="16" font-size="12" fill="#263238">{escape(label)}; dashed: '
        f"p{target.percentile} target {escape(human_seconds(target.seconds))}</text>"
    )
    _axis(out, ticks, height, x_of)
    for i, row in enumerate(rows):
        y = TOP + i * ROW_H
        stats = row.stages.get(target.stage)
        p50, p90, p99 = (_value(stats, p) for p in (50, 90, 99))
        marked = _value(stats, target.percentile)
        missed = marked is not None and marked > target.seconds
        out.append(
            f'<text x="{LEFT - 8}" y="{y + 16}" font-size="12" text-anchor="end" '
            f'fill="{"#b71c1c" if missed else "#263238"}" data-district="{escape(row.district)}">'
            f"{escape(row.district)}</text>"
        )
        if p50 is None:
            out.append(
                f'<text x="{LEFT + 4}" y="{y + 16}" font-size="11" fill="#78909c">no alert '
                "reached this stage</text>"
            )
            continue
        out.append(
            f'<rect x="{LEFT}" y="{y + 6}" width="{max(1.0, x_of(p50) - LEFT):.1f}" height="12" '
            f'fill="{"#ef9a9a" if missed else "#90caf9"}"><title>p50 {human_seconds(p50)}'
            "</title></rect>"
        )
        if p99 is not None:
            out.append(
                f'<line x1="{x_of(p50):.1f}" y1="{y + 12}" x2="{x_of(p99):.1f}" y2="{y + 12}" '
                'stroke="#546e7a" stroke-width="1"/>'
                f'<line x1="{x_of(p99):.1f}" y1="{y + 7}" x2="{x_of(p99):.1f}" y2="{y + 17}" '
                f'stroke="#546e7a" stroke-width="1"><title>p99 {human_seconds(p99)}</title></line>'
            )
        if p90 is not None:
            out.append(
                f'<rect x="{x_of(p90) - 2:.1f}" y="{y + 4}" width="4" height="16" '
                f'fill="{"#b71c1c" if missed else "#0d47a1"}"><title>p90 {human_seconds(p90)}'
                "</title></rect>"
            )
    tx = x_of(target.seconds)
    out.append(
        f'<line x1="{tx:.1f}" y1="{TOP - 4}" x2="{tx:.1f}" y2="{height - BOTTOM}" '
        'stroke="#b71c1c" stroke-width="1.5" stroke-dasharray="5 3"/>'
    )
    out.append(
        f'<text x="{WIDTH - RIGHT}" y="{height - 6}" font-size="11" text-anchor="end" '
        'fill="#455a64">bar p50 · mark p90 · whisker p99 · dashed: target (server clock)</text>'
    )
    out.append("</svg>")
    return "\n".join(out)


def render_chain_svg(figures: ResponseTimesPublic) -> str:
    """Per district, the p90 of each consecutive stage stacked: where the time goes."""
    rows = figures.data
    height = TOP + BOTTOM + 18 + ROW_H * max(1, len(rows))
    totals = [sum(_value(r.stages.get(s), 90) or 0.0 for s in CHAIN) for r in rows]
    ticks = _ticks(max([*totals, 1.0]))
    span = ticks[-1]
    plot_w = WIDTH - LEFT - RIGHT

    def x_of(seconds: float) -> float:
        return LEFT + plot_w * min(1.0, seconds / span)

    label = "p90 of each stage per district, stacked (press to resolved)"
    out = _svg_open(height, label, "chain")
    out.append(f'<text x="{LEFT}" y="16" font-size="12" fill="#263238">{escape(label)}</text>')
    _axis(out, ticks, height - 18, x_of)
    for i, row in enumerate(rows):
        y = TOP + i * ROW_H
        out.append(
            f'<text x="{LEFT - 8}" y="{y + 16}" font-size="12" text-anchor="end" '
            f'fill="#263238">{escape(row.district)}</text>'
        )
        start = 0.0
        for stage, colour in zip(CHAIN, CHAIN_COLOURS, strict=True):
            value = _value(row.stages.get(stage), 90)
            if not value:
                continue
            x0, x1 = x_of(start), x_of(start + value)
            out.append(
                f'<rect x="{x0:.1f}" y="{y + 5}" width="{max(0.5, x1 - x0):.1f}" height="14" '
                f'fill="{colour}"><title>{escape(STAGE_LABELS[stage])}: p90 '
                f"{human_seconds(value)}</title></rect>"
            )
            start += value
    legend_y = height - 8
    x = 8
    for stage, colour in zip(CHAIN, CHAIN_COLOURS, strict=True):
        text = STAGE_LABELS[stage]
        out.append(f'<rect x="{x}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>')
        out.append(
            f'<text x="{x + 13}" y="{legend_y}" font-size="10" fill="#455a64">{escape(text)}</text>'
        )
        x += 22 + int(5.3 * len(text))
    out.append("</svg>")
    return "\n".join(out)
