"""An ``acl_denied`` alert for a node whose publishes the broker keeps refusing.

`fleet_server.broker.denials` counts the managed broker's ACL refusals per
client and reports a `DenialBurst` when one client reaches the threshold
within the window (settings ``acl_denial_alert_threshold`` and
``acl_denial_window_s``). Here a burst of a known node becomes an alert
through the ordinary alert mechanism (`fleet_server.alerting.open_alert`:
default severity, the type's escalation policy or the catch-all queue); a
further burst while that alert is open joins it (``press_count`` counts the
bursts, ``detail`` says what was refused last). A client that is not a node
(an anonymous process on the development listener) is only logged.

The burst comes from the broker's log-reader thread, so this opens its own
session and commits, then announces the notices as the ingest worker does.
"""

from __future__ import annotations

import logging
from functools import partial

from sqlalchemy.engine import Engine
from sqlmodel import Session

from fleet_server.alerting import (
    AlertNotice,
    Notifier,
    find_open_alert,
    load_policies,
    notice,
    open_alert,
)
from fleet_server.alerting.notices import Op
from fleet_server.broker.denials import DenialBurst, DenialCounter
from fleet_server.models import Alert, AlertType, Node, utcnow
from fleet_server.settings import Settings

__all__ = ["alert_on_denials", "record_denial_burst"]

logger = logging.getLogger(__name__)


def alert_on_denials(
    counter: DenialCounter, *, engine: Engine, notify: Notifier, settings: Settings
) -> None:
    """Make `counter`'s bursts (threshold and window from `settings`) open or join alerts."""
    counter.configure(
        threshold=settings.acl_denial_alert_threshold, window_s=settings.acl_denial_window_s
    )
    counter.on_burst = partial(
        record_denial_burst, engine=engine, notify=notify, ack_timeout_s=settings.ack_followup_s
    )


def _detail(burst: DenialBurst) -> str:
    return (
        f"{burst.count} publishes refused by the broker's ACL within {burst.window_s:g} s "
        f"({burst.total} since the server started): {', '.join(burst.topics)}"
    )[:1000]


def record_denial_burst(
    burst: DenialBurst, *, engine: Engine, notify: Notifier, ack_timeout_s: float
) -> Alert | None:
    """Open (or join) the node's ``acl_denied`` alert, commit, announce; None if not a node."""
    now = utcnow()
    notices: list[AlertNotice]
    op: Op
    with Session(engine) as session:
        node = session.get(Node, burst.client_id)
        if node is None:
            logger.warning("ACL refusals from %s, which is not a node: no alert", burst.client_id)
            return None
        alert = find_open_alert(
            session=session, node_id=node.node_id, alert_type=AlertType.ACL_DENIED
        )
        if alert is None:
            alert = open_alert(
                session=session,
                node=node,
                alert_type=AlertType.ACL_DENIED,
                now=now,
                policies=load_policies(session=session, ack_timeout_s=ack_timeout_s),
                detail=_detail(burst),
            )
            op = "created"
        else:
            alert.press_count += 1
            alert.detail = _detail(burst)
            alert.updated_at = now
            op = "joined"
        session.commit()
        session.refresh(alert)
        notices = [notice(op, alert, now=now, command=False)]
    notify(notices)
    return alert
