"""Alerts: the lifecycle, escalation policies, escalation, and what gets announced.

- `lifecycle`: opening an alert, joining presses, the legal moves (`TRANSITIONS`);
- `policies`: the ladders and who is on duty, cached by an explicit version;
- `escalation`: the pure `decide(alert, plan, now)` and `escalate_due` around it;
- `history`: the transition and escalation rows;
- `notices`: `AlertNotice`, announced after the commit by a `Notifier`.

Due times live on the alert row (`next_escalation_at`) and the timer loop
(`fleet_server.timers`) selects due rows from the database each tick, so a
restarted server resumes escalation on time.

Errors::

    FleetServerError
     └── AlertError
          ├── AlertNotFound
          └── IllegalTransition
"""

from __future__ import annotations

from fleet_server.alerting.escalation import EscalationStep, decide, escalate_due, next_due
from fleet_server.alerting.history import AlertRows
from fleet_server.alerting.lifecycle import (
    SEVERITY_BY_TYPE,
    TRANSITIONS,
    AlertError,
    AlertNotFound,
    IllegalTransition,
    apply_transition,
    find_open_alert,
    join_alert,
    open_alert,
    transition_alert,
)
from fleet_server.alerting.notices import AlertNotice, Notifier, notice
from fleet_server.alerting.policies import (
    DEFAULT_POLICIES,
    Policies,
    PolicyCache,
    PolicyPlan,
    bump_policy_version,
    ensure_default_policies,
    load_policies,
    policy_version,
    set_policy,
)

__all__ = [
    "DEFAULT_POLICIES",
    "SEVERITY_BY_TYPE",
    "TRANSITIONS",
    "AlertError",
    "AlertNotFound",
    "AlertNotice",
    "AlertRows",
    "EscalationStep",
    "IllegalTransition",
    "Notifier",
    "Policies",
    "PolicyCache",
    "PolicyPlan",
    "apply_transition",
    "bump_policy_version",
    "decide",
    "ensure_default_policies",
    "escalate_due",
    "find_open_alert",
    "join_alert",
    "load_policies",
    "next_due",
    "notice",
    "open_alert",
    "policy_version",
    "set_policy",
    "transition_alert",
]
