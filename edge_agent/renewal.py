"""Keeps a running agent's certificate fresh: check at start and periodically, renew when due.

`CertificateRenewer` is a node component (`build_node` adds it; it does
nothing unless the node uses mqtts with an enrollment server). It reads the
config and reconnects the uplink through the `NodeContext` only.
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
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Protocol

from edge_agent.component import CommandHandler, Health, NodeContext
from edge_agent.enroll import (
    EnrollmentClient,
    EnrollmentError,
    EnrollmentRefused,
    EnrollmentResult,
    renew_certificate,
)
from edge_agent.identity import IdentityError, certificate_info, needs_renewal
from proto.messages import Capability

__all__ = ["CertificateRenewer", "ReloadableTransport"]

logger = logging.getLogger(__name__)

Now = Callable[[], datetime]


class ReloadableTransport(Protocol):
    """A transport that can pick up renewed TLS files and reconnect with them."""

    def reload_tls(self) -> None: ...


class CertificateRenewer:
    """Renews the node's certificate when due; a node component (see the module docstring)."""

    name = "renewal"

    def __init__(
        self,
        node: Any = None,
        *,
        client_factory: Callable[[], EnrollmentClient] | None = None,
        now: Now | None = None,
    ) -> None:
        # `node`: an `edge_agent.agent.Agent` (or anything with a `.node` context)
        # to renew for when run outside a node's component list, as before.
        self._bound: NodeContext | None = getattr(node, "node", node)
        self._client_factory = client_factory
        self._now = now or (lambda: datetime.now(timezone.utc))
        self.renewals = 0
        self.failures = 0
        self.last_error: str | None = None
        self._stopped = asyncio.Event()

    def _ctx(self) -> NodeContext:
        if self._bound is None:
            raise RuntimeError("CertificateRenewer is not attached to a node")
        return self._bound

    # -------------------------------------------------------- component face

    @property
    def capabilities(self) -> Sequence[Capability]:
        return ()

    def commands(self) -> Mapping[str, CommandHandler]:
        return {}

    def telemetry(self) -> Mapping[str, Any]:
        return {}

    def health(self) -> Health:
        if self._bound is None or not self.enabled:
            return Health(True, "renewal not configured")
        if self.last_error is not None:
            return Health(False, f"last renewal failed: {self.last_error}"[:200])
        return Health(True, f"{self.renewals} renewals")

    # --------------------------------------------------------------- renewal

    @property
    def enabled(self) -> bool:
        config = self._ctx().config
        return (
            config.mqtt.tls
            and config.mqtt.cert_file is not None
            and config.identity.server_url is not None
        )

    def due(self) -> bool:
        """True when the certificate on disk should be renewed now."""
        ctx = self._ctx()
        cert_file = ctx.config.mqtt.cert_file
        if cert_file is None:
            return False
        try:
            info = certificate_info(cert_file.read_bytes())
        except (OSError, IdentityError) as exc:
            logger.error("%s: cannot read certificate %s: %s", ctx.node_id, cert_file, exc)
            return False
        return needs_renewal(info, now=self._now(), when_left=ctx.config.identity.renew_when_left)

    async def check(self) -> bool:
        """Renew if due; True if a new certificate is in use. Never raises for a refusal."""
        if not self.enabled or not self.due():
            return False
        ctx = self._ctx()
        config = ctx.config
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
            logger.critical("%s: certificate renewal refused: %s", ctx.node_id, exc)
            return False
        except (EnrollmentError, IdentityError, OSError) as exc:
            self.failures += 1
            self.last_error = str(exc)
            logger.warning("%s: certificate renewal failed: %s", ctx.node_id, exc)
            return False
        self.renewals += 1
        self.last_error = None
        ctx.counters["cert_renewals"] += 1
        ctx.reload_tls()
        logger.info("%s: renewed certificate until %s", ctx.node_id, result.not_after)
        return True

    async def run(self, ctx: NodeContext | None = None) -> None:
        """Check at start, then every ``renew_check_interval_s`` (sooner after a failure)."""
        if ctx is not None:
            self._bound = ctx
        if not self.enabled:
            return
        while not self._stopped.is_set():
            before = self.failures
            await self.check()
            identity = self._ctx().config.identity
            failed = self.failures > before
            wait = identity.renew_retry_s if failed else identity.renew_check_interval_s
            try:
                await asyncio.wait_for(self._stopped.wait(), wait)
            except asyncio.TimeoutError:
                continue

    def stop(self) -> None:
        self._stopped.set()
