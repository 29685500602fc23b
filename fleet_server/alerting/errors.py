"""The alerting package's refusals, in one module so every alerting module can raise them.

Errors::

    FleetServerError
     └── AlertError
          ├── AlertNotFound
          ├── IllegalTransition
          │    └── DispatchBlocked   (alerting.gates: e.g. an unconfirmed watchlist hit)
          └── PolicyRefused
               ├── PolicyInvalid     (the policy itself makes no sense)
               └── PolicyConflict    (it clashes with what is stored)
"""

from __future__ import annotations

from fleet_server.errors import FleetServerError

__all__ = [
    "AlertError",
    "AlertNotFound",
    "IllegalTransition",
    "PolicyConflict",
    "PolicyInvalid",
    "PolicyRefused",
]


class AlertError(FleetServerError):
    """Root of alert-rule refusals."""


class AlertNotFound(AlertError):
    """No alert with that id."""


class IllegalTransition(AlertError):
    """The lifecycle does not allow this move."""


class PolicyRefused(AlertError):
    """An escalation policy change that would leave alerts reaching nobody, or makes no sense."""


class PolicyInvalid(PolicyRefused):
    """The policy itself is refused: timings, a P1 ladder that stops, a name/type mismatch."""


class PolicyConflict(PolicyRefused):
    """The change clashes with stored policies (a second policy for a type, a retyped policy)."""
