"""Telemetry gathering: one `Telemetry` report from every component's contribution.

The node's own fields (uptime, test mode) come from the node state; each
component adds values for the `proto.messages.Telemetry` fields it measures
(the uplink ``outbox_depth``, power the ``power`` block, a camera pipeline
``frames_dropped``). A name that is not a field of the message is dropped
with one warning per component and name (the wire contract is fixed in
`proto`; a new field is a proto change, not a component's decision), so one
component's mistake never costs the node its report.

The first report comes at a random point of the first interval: nodes started
together (a simulated fleet, a district's power coming back) must not all
report in the same instant, every interval.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from typing import Any

from edge_agent.component import Component, NodeContext
from hardware.clock import Clock
from proto.messages import Telemetry

__all__ = ["TelemetryReporter"]

logger = logging.getLogger(__name__)

_NODE_FIELDS = frozenset({"node_id", "ts", "v", "kind", "uptime_s", "test_mode"})


class TelemetryReporter:
    """Builds and publishes the periodic report; see the module docstring."""

    def __init__(self, *, clock: Clock, components: Callable[[], Iterable[Component]]) -> None:
        self.clock = clock
        self._components = components
        self._warned: set[tuple[str, str]] = set()

    def report(self, ctx: NodeContext) -> Telemetry:
        """The report as of now."""
        fields: dict[str, Any] = {}
        for component in self._components():
            try:
                contribution = component.telemetry()
            except Exception:
                logger.exception("%s: telemetry of %s failed", ctx.node_id, component.name)
                continue
            for key, value in contribution.items():
                if key not in Telemetry.model_fields or key in _NODE_FIELDS:
                    if (component.name, key) not in self._warned:
                        self._warned.add((component.name, key))
                        logger.warning(
                            "%s: %s reports %r, which is not a Telemetry field; dropped",
                            ctx.node_id,
                            component.name,
                            key,
                        )
                    ctx.counters["telemetry_fields_dropped"] += 1
                    continue
                fields[key] = value
        return Telemetry(
            node_id=ctx.node_id,
            ts=self.clock.now(),
            uptime_s=ctx.state.uptime_s,
            test_mode=ctx.state.test_mode,
            **fields,
        )

    async def run(self, ctx: NodeContext) -> None:
        delay = random.uniform(0.0, ctx.config.telemetry.interval_s)
        while True:
            await self.clock.sleep(delay)
            delay = ctx.config.telemetry.interval_s
            if not ctx.state.connected:
                continue
            try:
                report = self.report(ctx)
            except Exception:
                logger.exception("%s: cannot build telemetry", ctx.node_id)
                continue
            ctx.publish(report, qos=0)
            ctx.counters["telemetry"] += 1
