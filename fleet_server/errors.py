"""The root of every exception the fleet server raises on purpose.

Data functions, the ingest worker, the PKI and the technician tools raise
domain errors that say what is wrong in the field's words; only the API layer
(`fleet_server.api`, `fleet_server.console`) turns them into HTTP status
codes, and only the CLIs into exit codes. One root lets a caller that does
not care which rule refused (a CLI's last resort, a worker's loop) catch them
all without also swallowing programming errors.

Errors::

    FleetServerError
     ├── alerting.AlertError
     │    ├── AlertNotFound
     │    └── IllegalTransition
     ├── auth.AuthError
     │    ├── InvalidCredentials
     │    ├── InvalidToken
     │    └── UserExists
     ├── node_commands.CommandRefused        (also ValueError)
     ├── pki.PkiError
     │    └── CsrInvalid
     ├── schema.SchemaError                  (also RuntimeError)
     ├── settings.SettingsError              (also ValueError)
     ├── tech.client.TechApiError
     ├── tech.flash.FlashError
     └── users.UserAdminError
          ├── UserNotFound
          └── AdminLockout          (would leave no active admin / self-disable)

Outside this tree: `proto.enrollment.EnrollmentRefused`, the enrollment
contract's refusal, which nodes and server share and so derives from
`proto`'s root; and the managed broker's `BrokerError`/`BrokerConfigError`
(`fleet_server.broker`, still on `RuntimeError`/`ValueError`).

This module imports nothing: the technician's CLI (no server extra) derives
its errors from it too.
"""

from __future__ import annotations

__all__ = ["FleetServerError"]


class FleetServerError(Exception):
    """Root of the fleet server's own refusals and failures."""
