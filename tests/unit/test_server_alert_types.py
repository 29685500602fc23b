"""One list of alert types: a policy may name exactly the types the server can open.

`AlertType` (fleet_server/models/alert.py) is the single source; the policy
input and the change rules read it, so a type added there is accepted by the
API at once and a typo never is (issue 11: `pnaic` silenced panic escalation).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fleet_server.alerting import KNOWN_ALERT_TYPES, P1_ALERT_TYPES, SEVERITY_BY_TYPE
from fleet_server.models import AlertType, EscalationPolicyIn, Severity

LEVELS = [{"after_s": 0, "recipient": "zone_operator"}]


@pytest.mark.parametrize("alert_type", [t.value for t in AlertType])
def test_every_known_alert_type_may_have_a_policy(alert_type: str) -> None:
    policy = EscalationPolicyIn.model_validate({"alert_type": alert_type, "levels": LEVELS})
    assert policy.alert_type == alert_type
    assert alert_type in KNOWN_ALERT_TYPES


@pytest.mark.parametrize("alert_type", ["pnaic", "", " panic", "PANIC", "panic ", 1, True])
def test_anything_else_is_refused(alert_type: object) -> None:
    with pytest.raises(ValidationError):
        EscalationPolicyIn.model_validate({"alert_type": alert_type, "levels": LEVELS})


def test_a_panic_is_p1_so_its_policy_must_repeat_and_cannot_be_deleted() -> None:
    assert SEVERITY_BY_TYPE[AlertType.PANIC] == Severity.P1
    assert AlertType.PANIC in P1_ALERT_TYPES
    assert P1_ALERT_TYPES <= KNOWN_ALERT_TYPES
