"""The PKI inside a running server: the issuing CA, the CRL on disk, and making the broker obey it.

What we found with Mosquitto 2.0.11 (docs/provisioning.md, "Broker"): SIGHUP
makes it re-read ``crlfile`` — a revoked certificate is refused on its next
connection at once — but a client already connected with that certificate
stays connected. So a revocation rewrites the CRL and then, by default,
restarts the managed broker (SIGTERM, which saves persistent sessions, and
start again on the same port): every client reconnects, the revoked one is
refused. `revocation_action="reload"` only sends SIGHUP (new connections
refused, live ones kept) for fleets where a reconnect wave is worse than a
revoked node staying connected until its next reconnect.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Literal

from sqlalchemy.engine import Engine
from sqlmodel import Session

from fleet_server.broker import ManagedBroker
from fleet_server.enrollment import revoked_serials
from fleet_server.models import utcnow
from fleet_server.pki.store import IssuingCa, PkiPaths

__all__ = ["PkiRuntime", "RevocationAction"]

logger = logging.getLogger(__name__)

RevocationAction = Literal["restart", "reload"]


class PkiRuntime:
    """Issuing CA plus CRL publishing for one server process."""

    def __init__(
        self,
        *,
        paths: PkiPaths,
        engine: Engine,
        broker: ManagedBroker | None = None,
        revocation_action: RevocationAction = "restart",
    ) -> None:
        self.paths = paths
        self.ca = IssuingCa(paths)
        self.engine = engine
        self.broker = broker
        self.revocation_action: RevocationAction = revocation_action
        self._lock = threading.Lock()

    def write_crl(self, *, now: datetime | None = None) -> None:
        """Re-sign the CRL from the database's revocation rows."""
        now = now or utcnow()
        with self._lock, Session(self.engine) as session:
            revoked = revoked_serials(session=session, now=now)
            self.ca.write_crl(revoked=revoked, now=now)
        logger.info("CRL written to %s (%s revoked)", self.paths.crl, len(revoked))

    def refresh(self) -> None:
        """The daily re-sign: new CRL, broker re-reads it (nothing to drop)."""
        self.write_crl()
        if self.broker is not None and self.broker.running:
            self.broker.reload()

    def publish_revocation(self) -> str:
        """After a revocation is committed: new CRL, and the managed broker made to enforce it.

        Returns what was done to the broker: ``restarted``, ``reloaded`` or
        ``external`` (no managed broker: the CRL file is written for an
        operator or a sync job to install).
        """
        self.write_crl()
        broker = self.broker
        if broker is None or not broker.running:
            return "external"
        with self._lock:
            if self.revocation_action == "reload":
                broker.reload()
                return "reloaded"
            broker.restart()
        logger.warning("managed broker restarted to drop revoked connections")
        return "restarted"
