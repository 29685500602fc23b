"""Alerts: the lifecycle, escalation policies, escalation, and what gets announced.

- `lifecycle`: opening an alert, joining presses, the legal moves (`TRANSITIONS`);
- `policies`: the ladders and who is on duty, cached by an explicit version;
- `changes`: an admin's policy change, checked, recorded and applied to open alerts;
- `escalation`: the pure `decide(alert, plan, now)` and `escalate_due` around it,
  and the pure `replan` that puts open alerts on a changed ladder;
- `gates`: what must be true before an alert is dispatched (a confirmed watchlist hit);
- `history`: the transition and escalation rows;
- `notices`: `AlertNotice`, announced after the commit by a `Notifier`.

Due times live on the alert row (`next_escalation_at`) and the timer loop
(`fleet_server.timers`) selects due rows from the database each tick, so a
restarted server resumes escalation on time.

Errors::

    FleetServerError
     └── AlertError
          ├── AlertNotFound
          ├── IllegalTransition
          │    └── DispatchBlocked
          └── PolicyRefused
               ├── PolicyInvalid
               └── PolicyConflict
"""

from __future__ import annotations

from fleet_server.alerting.changes import (
    KNOWN_ALERT_TYPES,
    P1_ALERT_TYPES,
    PolicyChanged,
    PolicyDraft,
    change_policy,
    check_policy,
    delete_policy,
    policy_history,
)
from fleet_server.alerting.errors import PolicyConflict, PolicyInvalid, PolicyRefused
from fleet_server.alerting.escalation import (
    EscalationStep,
    Replan,
    decide,
    escalate_due,
    next_due,
    replan,
    replan_open_alerts,
)
from fleet_server.alerting.gates import DispatchBlocked, dispatch_blocker
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
    "KNOWN_ALERT_TYPES",
    "P1_ALERT_TYPES",
    "SEVERITY_BY_TYPE",
    "TRANSITIONS",
    "AlertError",
    "AlertNotFound",
    "AlertNotice",
    "AlertRows",
    "DispatchBlocked",
    "EscalationStep",
    "IllegalTransition",
    "Notifier",
    "Policies",
    "PolicyCache",
    "PolicyChanged",
    "PolicyConflict",
    "PolicyDraft",
    "PolicyInvalid",
    "PolicyPlan",
    "PolicyRefused",
    "Replan",
    "apply_transition",
    "bump_policy_version",
    "change_policy",
    "check_policy",
    "decide",
    "delete_policy",
    "dispatch_blocker",
    "ensure_default_policies",
    "escalate_due",
    "find_open_alert",
    "join_alert",
    "load_policies",
    "next_due",
    "notice",
    "open_alert",
    "policy_history",
    "policy_version",
    "replan",
    "replan_open_alerts",
    "set_policy",
    "transition_alert",
]
