"""Dispatch gates: what must be true before anyone is sent to an alert.

A watchlist hit is a machine's guess (a plate one look-alike character off,
a face over a threshold); sending officers to stop a car on a wrong guess
harms the person in it. So an alert opened by a watchlist hit cannot move to
``dispatched`` until a person has confirmed the hit
(``POST /api/v1/watchlist-hits/{event_id}/decision``); a rejected hit has
already closed its alert as a false alarm. The gate is checked inside
`fleet_server.alerting.lifecycle.apply_transition`, the one path every
transition takes, so no route or job can go around it.

A gate is a function ``(session, alert) -> reason | None``; `DISPATCH_GATES`
lists them and `dispatch_blocker` asks each in turn.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlmodel import Session

from fleet_server.alerting.errors import IllegalTransition
from fleet_server.models import Alert, AlertType
from fleet_server.models.watchlist import WatchlistHit

__all__ = ["DISPATCH_GATES", "DispatchBlocked", "dispatch_blocker", "watchlist_hit_gate"]

DispatchGate = Callable[[Session, Alert], str | None]


class DispatchBlocked(IllegalTransition):
    """The alert may not be dispatched yet; the message says what a person must do first."""


def watchlist_hit_gate(session: Session, alert: Alert) -> str | None:
    """A watchlist-hit alert waits for a person to confirm its hit (fail closed: no hit row)."""
    if alert.type != AlertType.WATCHLIST_HIT:
        return None
    # The hit handler opens the alert with the hit's event id as its first event.
    hit = session.get(WatchlistHit, alert.first_event_id) if alert.first_event_id else None
    if hit is None:
        return (
            f"alert {alert.id} was opened by a watchlist hit that the server has no record of; "
            "it cannot be dispatched without a confirmed hit"
        )
    if hit.decision == "confirmed":
        return None
    if hit.decision == "pending":
        return (
            f"alert {alert.id} cannot be dispatched: its watchlist hit ({hit.event_id}, "
            f"{hit.match} match on {hit.watchlist_name}) is waiting for a person to confirm it; "
            "confirm or reject the hit first"
        )
    return f"alert {alert.id} cannot be dispatched: its watchlist hit was {hit.decision}"


DISPATCH_GATES: list[DispatchGate] = [watchlist_hit_gate]


def dispatch_blocker(session: Session, alert: Alert) -> str | None:
    """Why `alert` may not be dispatched now, or None when every gate lets it through."""
    for gate in DISPATCH_GATES:
        reason = gate(session, alert)
        if reason is not None:
            return reason
    return None
