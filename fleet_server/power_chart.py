"""A node's power history drawn as SVG on the server: no chart library, no CDN.

`render_history_svg` takes a `PowerHistoryPublic` and returns a standalone
SVG document: state of charge (left axis, %), hours of autonomy with the
site's target as a dashed line (right axis), the panel's output as a shaded
area, nights as grey bands (from the node's position) and the load-shedding
step as a strip along the bottom. Only presentation attributes are used (no
``style`` attributes, no script), so the console can insert it under its
strict Content-Security-Policy, and every text is escaped.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from html import escape

from fleet_server.models.power import PowerHistoryPublic
from fleet_server.power import is_night

__all__ = ["render_history_svg"]

WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 48, 56, 22, 40
# Sites are in Pakistan (UTC+5, no daylight saving since 2009): every console page
# shows times in PKT with the zone written, and so does this chart's time axis.
PKT = timezone(timedelta(hours=5), "PKT")
STEP_COLOURS = ("#2e7d32", "#9e9d24", "#f9a825", "#ef6c00", "#c62828", "#6a1b9a")


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def render_history_svg(
    history: PowerHistoryPublic, *, lat: float | None = None, lon: float | None = None
) -> str:
    """The SVG document for `history` (see the module docstring)."""
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    since, until = history.since, history.until
    span = max(1.0, (until - since).total_seconds())

    def x(at: datetime) -> float:
        return LEFT + plot_w * min(1.0, max(0.0, (at - since).total_seconds() / span))

    points = history.points
    target = history.autonomy_target_h
    top_autonomy = target * 2.0
    seen = [p.autonomy_h for p in points if p.autonomy_h is not None]
    if seen:
        top_autonomy = max(target * 2.0, min(max(seen), target * 6.0))
    peak_panel = max([p.panel_w / max(p.samples, 1) for p in points] + [1.0])

    def y_frac(frac: float) -> float:
        return TOP + plot_h * (1.0 - min(1.0, max(0.0, frac)))

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="Power of {escape(history.node_id)}, last {history.hours:g} hours" '
        f'data-node-id="{escape(history.node_id)}" data-points="{len(points)}">',
        f"<title>Power of {escape(history.node_id)}</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#ffffff" '
        'stroke="#b0bec5"/>',
    ]
    # Nights, from the node's position, sampled every 10 minutes.
    if lat is not None and lon is not None:
        t = since
        night_start: datetime | None = None
        while t <= until:
            dark = is_night(at=t, lat=lat, lon=lon)
            if dark and night_start is None:
                night_start = t
            if (not dark or t + timedelta(minutes=10) > until) and night_start is not None:
                out.append(
                    f'<rect class="night" x="{_fmt(x(night_start))}" y="{TOP}" '
                    f'width="{_fmt(max(0.5, x(t) - x(night_start)))}" height="{plot_h}" '
                    'fill="#eceff1"/>'
                )
                night_start = None
            t += timedelta(minutes=10)
    # Grid and axes.
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        yy = _fmt(y_frac(frac))
        out.append(
            f'<line x1="{LEFT}" y1="{yy}" x2="{LEFT + plot_w}" y2="{yy}" stroke="#cfd8dc" '
            'stroke-width="0.5"/>'
        )
        out.append(
            f'<text x="{LEFT - 6}" y="{yy}" font-size="10" text-anchor="end" '
            f'dominant-baseline="middle" fill="#37474f">{int(frac * 100)}%</text>'
        )
        out.append(
            f'<text x="{LEFT + plot_w + 6}" y="{yy}" font-size="10" dominant-baseline="middle" '
            f'fill="#1565c0">{frac * top_autonomy:.0f} h</text>'
        )
    for hours_back in range(0, int(history.hours) + 1, 12 if history.hours > 24 else 6):
        at = until - timedelta(hours=hours_back)
        if at < since:
            break
        xx = _fmt(x(at))
        out.append(
            f'<text x="{xx}" y="{HEIGHT - BOTTOM + 14}" font-size="10" text-anchor="middle" '
            f'fill="#37474f">{at.astimezone(PKT):%d %b %H:%M} PKT</text>'
        )
    if points:
        # Panel output as an area (own scale).
        base = _fmt(y_frac(0.0))
        area = " ".join(
            f"{_fmt(x(p.at))},{_fmt(y_frac(p.panel_w / max(p.samples, 1) / peak_panel * 0.4))}"
            for p in points
        )
        out.append(
            f'<polygon class="panel" points="{_fmt(x(points[0].at))},{base} {area} '
            f'{_fmt(x(points[-1].at))},{base}" fill="#ffe082" fill-opacity="0.7" stroke="none"/>'
        )
        soc = " ".join(
            f"{_fmt(x(p.at))},{_fmt(y_frac(p.battery_soc))}"
            for p in points
            if p.battery_soc is not None
        )
        if soc:
            out.append(
                f'<polyline class="soc" points="{soc}" fill="none" stroke="#2e7d32" '
                'stroke-width="2"/>'
            )
        autonomy = " ".join(
            f"{_fmt(x(p.at))},{_fmt(y_frac(p.autonomy_h / top_autonomy))}"
            for p in points
            if p.autonomy_h is not None
        )
        if autonomy:
            out.append(
                f'<polyline class="autonomy" points="{autonomy}" fill="none" stroke="#1565c0" '
                'stroke-width="1.5"/>'
            )
        # Load-shedding step strip.
        for p in points:
            step = p.policy_step or 0
            if step:
                colour = STEP_COLOURS[min(step, len(STEP_COLOURS) - 1)]
                out.append(
                    f'<rect class="step" x="{_fmt(x(p.at))}" y="{TOP + plot_h + 2}" '
                    f'width="{_fmt(max(1.0, plot_w * 600 / span))}" height="6" '
                    f'fill="{colour}"><title>step {step}</title></rect>'
                )
    else:
        out.append(
            f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" text-anchor="middle" '
            'font-size="13" fill="#607d8b">No power readings in this period</text>'
        )
    ty = _fmt(y_frac(target / top_autonomy))
    out.append(
        f'<line class="target" x1="{LEFT}" y1="{ty}" x2="{LEFT + plot_w}" y2="{ty}" '
        'stroke="#c62828" stroke-dasharray="6 4" stroke-width="1.2"/>'
    )
    out.append(
        f'<text x="{LEFT + 4}" y="{_fmt(float(ty) - 4)}" font-size="10" fill="#c62828">'
        f"target {target:g} h</text>"
    )
    legend = (
        ("#2e7d32", "state of charge"),
        ("#1565c0", "autonomy (h)"),
        ("#ffc107", "panel output"),
        ("#cfd8dc", "night"),
    )
    lx = LEFT
    for colour, label in legend:
        out.append(f'<rect x="{lx}" y="6" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{lx + 14}" y="15" font-size="11" fill="#37474f">{label}</text>')
        lx += 130
    out.append("</svg>")
    return "\n".join(out)
