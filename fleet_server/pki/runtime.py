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

A restart disconnects the whole fleet, so restarts are rate-limited: at most
one per ``restart_min_interval_s``. A revocation inside that window still gets
its new CRL and SIGHUP at once (the revoked certificate is refused on every
new connection), and one restart, shared by every revocation of the window,
is scheduled for when the window ends (``restart-scheduled``). A revocation
that revoked nothing never reaches this module (the route answers
``unchanged``): no CRL change, nothing to make the broker do.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Literal

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from fleet_server.broker import ManagedBroker
from fleet_server.enrollment import revoked_serials
from fleet_server.models import Node, utcnow
from fleet_server.pki.store import IssuingCa, PkiPaths

__all__ = ["CallLater", "PkiRuntime", "RevocationAction"]

logger = logging.getLogger(__name__)

RevocationAction = Literal["restart", "reload"]
# Runs a callable after a delay in seconds (a daemon `threading.Timer` by default;
# tests pass one that records the call and fire it themselves).
CallLater = Callable[[float, Callable[[], None]], None]


def _daemon_timer(delay: float, action: Callable[[], None]) -> None:
    timer = threading.Timer(delay, action)
    timer.daemon = True
    timer.name = "broker-restart"
    timer.start()


@contextmanager
def crl_file_lock(paths: PkiPaths) -> Iterator[None]:
    """Exclusive across processes: N cluster workers share one PKI directory and its CRL.

    Held from reading the revocation rows to installing the CRL, so a worker's
    periodic re-sign that read the database before another worker's revocation
    committed cannot install its older CRL after that revocation's, and the
    CRL number is read and incremented by one process at a time.
    """
    paths.root.mkdir(parents=True, exist_ok=True)
    with (paths.root / "fleet.crl.lock").open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


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
        restart_min_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        call_later: CallLater = _daemon_timer,
    ) -> None:
        self.paths = paths
        self.ca = IssuingCa(paths)
        self.engine = engine
        self.broker = broker
        self.revocation_action: RevocationAction = revocation_action
        self.still_connected = still_connected or self._online_in_database
        self.restart_min_interval_s = restart_min_interval_s
        self.restarts = 0
        self._clock = clock
        self._call_later = call_later
        self._last_restart: float | None = None
        self._restart_pending = False
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
        with self._lock, crl_file_lock(self.paths), Session(self.engine) as session:
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

        `node_ids` are the nodes just revoked. Call it only when the
        revocation revoked something. Returns what was done to the broker:
        ``restarted``, ``restart-scheduled`` (a restart happened less than
        `restart_min_interval_s` ago; the CRL is re-read already and one
        restart follows when the window ends), ``reloaded``, or ``external``
        (no managed broker: the CRL file is written for an operator or a sync
        job to install).
        """
        self.write_crl()
        broker = self.broker
        if broker is None or not broker.running:
            return "external"
        with self._lock:
            # SIGHUP first, always: new connections with a revoked certificate are
            # refused from now on, whatever happens to the live ones.
            broker.reload()
            if self.revocation_action == "reload":
                connected = self.still_connected(node_ids)
                if not connected:
                    return "reloaded"
                logger.warning(
                    "revoked node(s) %s still connected after SIGHUP; restarting the broker",
                    ", ".join(connected),
                )
            return self._restart_or_schedule(broker)

    def _restart_or_schedule(self, broker: ManagedBroker) -> str:
        """Restart now, or once when the rate-limit window ends (called with the lock held)."""
        if self._restart_pending:
            logger.info("broker restart already scheduled; this revocation joins it")
            return "restart-scheduled"
        now = self._clock()
        if self._last_restart is not None:
            wait = self._last_restart + self.restart_min_interval_s - now
            if wait > 0:
                self._restart_pending = True
                self._call_later(wait, self._scheduled_restart)
                logger.warning(
                    "broker restarted %.0f s ago; restart to drop revoked connections in %.1f s",
                    now - self._last_restart, wait,
                )  # fmt: skip
                return "restart-scheduled"
        self._restart(broker)
        return "restarted"

    def _restart(self, broker: ManagedBroker) -> None:
        broker.restart()
        self._last_restart = self._clock()
        self.restarts += 1
        logger.warning("managed broker restarted to drop revoked connections")

    def _scheduled_restart(self) -> None:
        """The one restart for every revocation inside the last window."""
        with self._lock:
            self._restart_pending = False
            broker = self.broker
            if broker is None or not broker.running:
                logger.info("scheduled broker restart skipped: the broker is not running")
                return
            self._restart(broker)
