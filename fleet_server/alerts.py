"""Compatibility names for `fleet_server.alerting` (the alert rules moved there).

Only `fleet_server.power` and `tests/test_server_power.py` still import from
here (both are being changed by another part of issue 10); new code imports
`fleet_server.alerting`. This module goes once they move.
"""

from __future__ import annotations

from fleet_server.alerting import (
    AlertNotice,
    Policies,
    apply_transition,
    ensure_default_policies,
    join_alert,
    load_policies,
    notice,
    open_alert,
)

__all__ = [
    "AlertNotice",
    "Policies",
    "apply_transition",
    "ensure_default_policies",
    "join_alert",
    "load_policies",
    "notice",
    "open_alert",
]
