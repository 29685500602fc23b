"""Keeps a running agent's certificate fresh: check at start and periodically, renew when due.

`CertificateRenewer` runs beside an `edge_agent.agent.Agent` in the same
asyncio loop (the CLI and simulated fleets start it next to `agent.run()`).
When less than ``identity.renew_when_left`` of the certificate's lifetime is
left it asks the server for a new certificate on the same key (blocking HTTP,
in a worker thread), which swaps ``node.pem`` atomically, then tells the
transport to load it and reconnect (`MqttTransport.reload_tls`). Events
pressed meanwhile wait in the outbox and are re-sent after the reconnect, so
a renewal loses nothing. A failed renewal is retried after
``identity.renew_retry_s``; the old certificate stays in use until then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Protocol

from edge_agent.enroll import (
    EnrollmentClient,
    EnrollmentError,
    EnrollmentRefused,
    EnrollmentResult,
    renew_certificate,
)
from edge_agent.identity import IdentityError, certificate_info, needs_renewal

if TYPE_CHECKING:
    from edge_agent.agent import Agent

__all__ = ["CertificateRenewer", "ReloadableTransport"]

logger = logging.getLogger(__name__)

Now = Callable[[], datetime]


class ReloadableTransport(Protocol):
    """A transport that can pick up renewed TLS files and reconnect with them."""

    def reload_tls(self) -> None: ...


class CertificateRenewer:
    """Renews `agent`'s certificate when due; see the module docstring."""

    def __init__(
        self,
        agent: Agent,
        *,
        client_factory: Callable[[], EnrollmentClient] | None = None,
        now: Now | None = None,
    ) -> None:
        self.agent = agent
        self._client_factory = client_factory
        self._now = now or (lambda: datetime.now(timezone.utc))
        self.renewals = 0
        self.failures = 0
        self.last_error: str | None = None
        self._stopped = asyncio.Event()

    @property
    def enabled(self) -> bool:
        config = self.agent.config
        return (
            config.mqtt.tls
            and config.mqtt.cert_file is not None
            and config.identity.server_url is not None
        )

    def due(self) -> bool:
        """True when the certificate on disk should be renewed now."""
        cert_file = self.agent.config.mqtt.cert_file
        if cert_file is None:
            return False
        try:
            info = certificate_info(cert_file.read_bytes())
        except (OSError, IdentityError) as exc:
            logger.error("%s: cannot read certificate %s: %s", self.agent.node_id, cert_file, exc)
            return False
        return needs_renewal(
            info, now=self._now(), when_left=self.agent.config.identity.renew_when_left
        )

    async def check(self) -> bool:
        """Renew if due; True if a new certificate is in use. Never raises for a refusal."""
        if not self.enabled or not self.due():
            return False
        config = self.agent.config
        client = self._client_factory() if self._client_factory else None
        try:
            result: EnrollmentResult = await asyncio.to_thread(
                renew_certificate,
                mqtt=config.mqtt,
                identity=config.identity,
                serial=config.serial,
                client=client,
            )
        except EnrollmentRefused as exc:
            self.failures += 1
            self.last_error = exc.message
            logger.critical("%s: certificate renewal refused: %s", self.agent.node_id, exc)
            return False
        except (EnrollmentError, IdentityError, OSError) as exc:
            self.failures += 1
            self.last_error = str(exc)
            logger.warning("%s: certificate renewal failed: %s", self.agent.node_id, exc)
            return False
        self.renewals += 1
        self.last_error = None
        self.agent.counters["cert_renewals"] += 1
        # Transports without TLS files (tests' fakes) have nothing to reload.
        reload = getattr(self.agent.transport, "reload_tls", None)
        if callable(reload):
            reload()
        logger.info("%s: renewed certificate until %s", self.agent.node_id, result.not_after)
        return True

    async def run(self) -> None:
        """Check at start, then every ``renew_check_interval_s`` (sooner after a failure)."""
        if not self.enabled:
            return
        while not self._stopped.is_set():
            before = self.failures
            await self.check()
            identity = self.agent.config.identity
            failed = self.failures > before
            wait = identity.renew_retry_s if failed else identity.renew_check_interval_s
            try:
                await asyncio.wait_for(self._stopped.wait(), wait)
            except asyncio.TimeoutError:
                continue

    def stop(self) -> None:
        self._stopped.set()
