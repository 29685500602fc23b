"""The PKI inside a running server: the issuing CA, the CRL on disk, and making the broker obey it.

What we found with Mosquitto 2.0.11-1.2+deb12u2 (docs/provisioning.md,
"Broker", re-measured 2026-11-30): SIGHUP makes it re-read ``crlfile`` — a
revoked certificate is refused on its next connection at once — but every
client already connected stays connected, the revoked one and bystanders
alike. (The regression test that "failed" in November was cut by its own
probe: a second connection with the same certificate takes the client id
over and closes the first, the broker naming clients by certificate CN.)

So a revocation always rewrites the CRL and sends SIGHUP, and then makes
sure the revoked node's live connection is gone in a way that is right
whatever the broker does on SIGHUP:

- ``restart`` (default): restart the managed broker (SIGTERM saves
  persistent sessions; every client reconnects, the revoked one is refused).
- ``reload``: restart only when a revoked node may still be connected (the
  ``still_connected`` check, by default the node's presence in the
  database). A revoked node that is offline costs no reconnect wave; one
  that is online is never left connected. If a future Mosquitto drops only
  the revoked client on SIGHUP (or every client), the check sees it offline
  and no restart follows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Literal

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_server.broker import ManagedBroker
from fleet_server.enrollment import revoked_serials
from fleet_server.models import Node, utcnow
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
        still_connected: Callable[[Iterable[str]], list[str]] | None = None,
    ) -> None:
        self.paths = paths
        self.ca = IssuingCa(paths)
        self.engine = engine
        self.broker = broker
        self.revocation_action: RevocationAction = revocation_action
        self.still_connected = still_connected or self._online_in_database
        self._lock = threading.Lock()

    def _online_in_database(self, node_ids: Iterable[str]) -> list[str]:
        """Nodes the server last saw online (presence lags a drop; we err towards restarting)."""
        ids = list(node_ids)
        if not ids:
            return []
        with Session(self.engine) as session:
            rows = session.exec(
                select(Node.node_id).where(col(Node.node_id).in_(ids), col(Node.online))
            )
            return list(rows)

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

    def publish_revocation(self, node_ids: Iterable[str] = ()) -> str:
        """After a revocation is committed: new CRL, and the managed broker made to enforce it.

        `node_ids` are the nodes just revoked. Returns what was done to the
        broker: ``restarted``, ``reloaded`` or ``external`` (no managed
        broker: the CRL file is written for an operator or a sync job to
        install).
        """
        self.write_crl()
        broker = self.broker
        if broker is None or not broker.running:
            return "external"
        with self._lock:
            if self.revocation_action == "reload":
                broker.reload()
                connected = self.still_connected(node_ids)
                if not connected:
                    return "reloaded"
                logger.warning(
                    "revoked node(s) %s still connected after SIGHUP; restarting the broker",
                    ", ".join(connected),
                )
            broker.restart()
        logger.warning("managed broker restarted to drop revoked connections")
        return "restarted"
