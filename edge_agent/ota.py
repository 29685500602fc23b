"""The node's OTA component: check, defer, download, install into A/B slots, health-gate.

On a schedule and on the `ota_check` command it asks the repository (ota.trust, python-tuf)
what this node's group should run for each artifact kind. An offer newer than what runs
(or a signed downgrade) is **deferred** while an alert is active on the node, while the
power policy is shedding load (the battery is below its policy's first threshold), or
outside the site's maintenance window in the site's own time zone — each reported as a
`deferred` `ota` event with the reason. Otherwise it is downloaded (Range resume, bounded
length, bandwidth cap, a delta first with fallback to the full artifact), installed into
the inactive slot (ota.slots) and switched to, on trial: the new version must report
healthy (every other component's health: uplink connected, button loop alive, camera
frames flowing where there are cameras) before the deadline, or the slot switches back by
itself and a `rolled_back` event says why. Every state is an `ota` event through the
durable outbox.

The blocking work (HTTPS, hashing, writing slots) runs in a worker thread so the panic
path on the event loop never waits for an update.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.component import (
    CommandHandler,
    ComponentBase,
    EventBuilder,
    Health,
    NodeContext,
)
from proto.messages import CommandBase, EventBase, OtaCheckCommand, OtaEvent

if TYPE_CHECKING:
    from collections.abc import Callable

    from edge_agent.config import AgentConfig
    from ota.slots import SlotStore
    from ota.system import OsSlots, OsUpdater
    from ota.transport import Transport
    from ota.trust import UpdateClient

__all__ = [
    "SLOT_CONFIG_FILE",
    "BundleHealth",
    "OtaComponent",
    "OtaConfig",
    "active_slot_dir",
    "config_with_slot",
    "deferral_reason",
    "parse_window",
    "use_slots",
]

logger = logging.getLogger(__name__)

Kind = Literal["app", "model", "config", "os"]
_ALL_KINDS: tuple[Kind, ...] = ("app", "model", "config")
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


def parse_window(text: str) -> tuple[time, time]:
    """`"01:00-05:30"` → (01:00, 05:30); a window may cross midnight (`"22:00-04:00"`)."""
    match = _WINDOW.match(text)
    if not match:
        raise ValueError(f"maintenance window {text!r} must look like 01:00-05:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    return time(h1, m1), time(h2, m2)


class OtaConfig(BaseModel):
    """The ``[ota]`` section of agent.toml: where updates come from and when they may apply."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="run the OTA client on this node")
    repository_url: str = Field(
        default="https://127.0.0.1:8443/ota",
        description="base URL of the OTA repository; metadata/ and targets/ live under it",
    )
    group: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="the node group whose signed assignments this node follows "
        "(default: the node id, lower-cased — a per-node director role)",
    )
    hardware: str | None = Field(
        default=None,
        max_length=64,
        description="hardware name artifacts must list (default: the board's name)",
    )
    trusted_root: Path | None = Field(
        default=None,
        description="the repository's root.json the node was provisioned with "
        "(default: <data_dir>/ota/root.json)",
    )
    kinds: list[Kind] = Field(
        default_factory=lambda: list(_ALL_KINDS),
        description="artifact kinds this node takes (add os where the image has RAUC)",
    )
    os_updater: Literal["rauc"] | None = Field(
        default=None, description="how the OS is updated when kinds has os: rauc"
    )
    rauc_command: list[str] = Field(
        default_factory=lambda: ["rauc"], min_length=1, description="the rauc command line"
    )
    reboot_command: list[str] = Field(
        default_factory=lambda: ["systemctl", "reboot"],
        min_length=1,
        description="run to boot into a new OS (or back to the old one)",
    )
    check_interval_s: float = Field(
        default=6 * 3600.0,
        gt=0.0,
        le=7 * 86_400.0,
        description="how often to check without a command",
    )
    first_check_s: float = Field(
        default=120.0, ge=0.0, le=86_400.0, description="first scheduled check after start"
    )
    maintenance_window: str | None = Field(
        default="01:00-05:00",
        description="local HH:MM-HH:MM when installs may happen; none: any time",
    )
    timezone: str = Field(default="Asia/Karachi", description="the site's IANA time zone")
    max_power_step: int = Field(
        default=0,
        ge=0,
        le=16,
        description="defer while the power policy's load-shedding step is above this",
    )
    bandwidth_kbps: int | None = Field(
        default=None, ge=1, le=1_000_000, description="download cap in kbit/s; none: no cap"
    )
    deferred_recheck_s: float = Field(
        default=600.0,
        gt=0.0,
        le=86_400.0,
        description="after deferring an offer (alert, battery, window, transport), check "
        "again this soon rather than at the next scheduled check",
    )
    health_deadline_s: float = Field(
        default=900.0, gt=0.0, le=86_400.0, description="a new version must be healthy within this"
    )
    max_boots: int = Field(
        default=3, ge=1, le=20, description="unplanned restarts allowed on trial"
    )
    restart_for_app: bool = Field(
        default=True,
        description="stop the agent after switching a slot (app, model or config) so the "
        "supervisor starts it on the new version (a deliberate restart, not a failed boot)",
    )
    trust_server_clock: bool = Field(
        default=True,
        description="when the node's clock is off the server's by more than "
        "5 min, judge expiry by the server's clock (the mTLS-authenticated Date header)",
    )

    @model_validator(mode="after")
    def _os_needs_an_updater(self) -> OtaConfig:
        if "os" in self.kinds and self.os_updater is None:
            raise ValueError('kinds has "os": set os_updater = "rauc" (the image must have RAUC)')
        return self

    @field_validator("maintenance_window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            parse_window(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


def deferral_reason(
    *,
    alert_active: bool,
    power_step: int,
    max_power_step: int,
    now: datetime,
    window: str | None,
    timezone: str,
) -> str | None:
    """Why an install must wait now, or None. Pure: the component's policy, tested alone."""
    if alert_active:
        return "alert_active"
    if power_step > max_power_step:
        return "battery_low"
    if window is not None:
        start, end = parse_window(window)
        local = now.astimezone(ZoneInfo(timezone)).time().replace(second=0, microsecond=0)
        inside = start <= local < end if start <= end else (local >= start or local < end)
        if not inside:
            return "maintenance_window"
    return None


@dataclass
class _Report:
    phase: str
    kind: str
    name: str
    version: str
    campaign: str | None = None
    reason: str | None = None
    detail: str | None = None
    bytes_done: int | None = None
    bytes_total: int | None = None


class OtaComponent(ComponentBase):
    """The OTA client as a node component; see the module docstring."""

    name = "ota"

    def __init__(
        self,
        config: OtaConfig,
        *,
        data_dir: Path,
        group: str,
        hardware: str,
        transport: Transport | None = None,
        tls: tuple[Path | None, Path | None, Path | None] = (None, None, None),
        dev_mode: bool = False,
        os_updater: OsUpdater | None = None,
        reboot: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.data_dir = data_dir
        self.group = group
        self.hardware = hardware
        self._transport = transport
        self._tls = tls
        self._dev_mode = dev_mode
        self._os_updater = os_updater
        self._reboot_hook = reboot
        self._reboots: set[str] = set()  # OS versions this process asked to reboot into
        self._wake: asyncio.Event | None = None
        self._pending: OtaCheckCommand | None = None
        self._busy = False
        self._last_error: str = ""
        self._stores: dict[str, SlotStore | OsSlots] = {}
        self._client: UpdateClient | None = None
        self.checks = 0
        self.checks_done = 0  # checks that ran to the end (tests wait on it)

    @classmethod
    def from_config(cls, config: AgentConfig, *, hardware: str) -> OtaComponent:
        """Build from agent.toml: the `[ota]` section, the mTLS files of `[mqtt]`."""
        from ota.groups import own_group

        ota = config.ota
        return cls(
            ota,
            data_dir=config.data_dir / "ota",
            group=ota.group or own_group(config.node_id),
            hardware=ota.hardware or hardware,
            tls=(config.mqtt.ca_file, config.mqtt.cert_file, config.mqtt.key_file),
            dev_mode=config.dev_mode,
        )

    # -- the component protocol ----------------------------------------------------------

    def commands(self) -> Mapping[str, CommandHandler]:
        return {"ota_check": self._on_check}

    def telemetry(self) -> Mapping[str, Any]:
        return {}

    def health(self) -> Health:
        if self._last_error:
            return Health(True, f"last check: {self._last_error}")
        return Health(True)

    def _on_check(self, command: CommandBase) -> Mapping[str, Any] | None:
        assert isinstance(command, OtaCheckCommand)
        self._pending = command
        if self._wake is not None:
            self._wake.set()
        return {"accepted": True, "busy": self._busy, "installed": self.installed()}

    @property
    def bytes_fetched(self) -> int:
        """Bytes this node has downloaded from the repository: metadata, targets, deltas."""
        return self._client.fetcher.bytes_transferred if self._client is not None else 0

    def installed(self) -> dict[str, str | None]:
        """The version each kind runs now."""
        return {kind: self.store(kind).installed_version() for kind in self.config.kinds}

    def store(self, kind: str) -> SlotStore | OsSlots:
        """The A/B slots of one artifact kind (the OS's own, through RAUC, for `os`)."""
        from ota.artifacts import ArtifactKind
        from ota.slots import SlotStore

        if kind == "os" and kind not in self._stores:
            from ota.system import OsSlots, RaucUpdater

            updater = self._os_updater or RaucUpdater(command=tuple(self.config.rauc_command))
            self._stores[kind] = OsSlots(self.data_dir / "slots", updater)
        if kind not in self._stores:
            self._stores[kind] = SlotStore(
                self.data_dir / "slots", ArtifactKind(kind), max_boots=self.config.max_boots
            )
        return self._stores[kind]

    async def run(self, ctx: NodeContext) -> None:
        self._wake = asyncio.Event()
        now = ctx.clock.monotonic()
        from ota.launcher import read_boot_verdicts
        from ota.slots import BootVerdict

        # Under `nigehbaan ota launch` the launcher already ran this boot step (it must,
        # for a version whose agent cannot start): report what it decided, count nothing.
        launched = read_boot_verdicts(self.data_dir / "slots")
        for kind in self.config.kinds:
            if kind in launched:
                got = launched[kind]
                trial = {"version": got["failed_version"], "campaign": got["campaign"]}
                verdict = BootVerdict(
                    got["on_trial"], got["rolled_back"], got["reason"], got["version"]
                )
            else:
                trial = self.store(kind).on_trial() or {}
                verdict = self.store(kind).on_boot(now=ctx.clock.now().timestamp())
            if verdict.rolled_back:
                # The version that failed, and its campaign: what the server's campaign
                # must mark rolled back (not the version the node is back on).
                self._emit(
                    ctx,
                    _Report(
                        "rolled_back",
                        kind,
                        "",
                        trial.get("version") or verdict.version or "unknown",
                        campaign=trial.get("campaign") or None,
                        reason="boot",
                        detail=verdict.reason,
                    ),
                )
        next_check = now + self.config.first_check_s
        while True:
            await self._health_gate(ctx)
            due = ctx.clock.monotonic() >= next_check
            if self._pending is not None or due:
                command, self._pending = self._pending, None
                if due:
                    next_check = ctx.clock.monotonic() + self.config.check_interval_s
                if await self._check(ctx, command):
                    # Something waits (an alert, the battery, the window): look again
                    # soon, not hours later at the next scheduled check.
                    next_check = min(
                        next_check, ctx.clock.monotonic() + self.config.deferred_recheck_s
                    )
            self._wake.clear()
            sleep = asyncio.ensure_future(ctx.clock.sleep(5.0))
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleep, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleep.cancel()
                woken.cancel()

    # -- the health gate -------------------------------------------------------------------

    async def _health_gate(self, ctx: NodeContext) -> None:
        for kind in self.config.kinds:
            store = self.store(kind)
            trial = store.on_trial()
            if not trial:
                continue
            if kind == "os" and getattr(store, "reboot_pending", lambda: False)():
                # RAUC installed it but this is still the old OS (the agent restarted
                # before the reboot): nothing to judge; reboot once, when allowed.
                if trial["version"] not in self._reboots and self._deferral(ctx) is None:
                    self._reboot(trial["version"])
                continue
            others = {name: h for name, h in ctx.health().items() if name != self.name}
            sick = {name: h.detail for name, h in others.items() if not h.ok}
            if not sick and ctx.state.connected:
                version = store.mark_healthy()
                self._emit(
                    ctx,
                    _Report(
                        "healthy",
                        kind,
                        "",
                        version or trial["version"],
                        campaign=trial.get("campaign") or None,
                    ),
                )
                continue
            detail = "; ".join(f"{n}: {d or 'not ok'}" for n, d in sorted(sick.items()))
            verdict = store.check_deadline(
                now=ctx.clock.now().timestamp(), health_detail=detail or "uplink not connected"
            )
            if verdict.rolled_back and getattr(store, "reboot_required", False):
                self._reboot(trial["version"])  # marked bad: the next boot is the old OS
            if verdict.rolled_back:
                self._emit(
                    ctx,
                    _Report(
                        "rolled_back",
                        kind,
                        "",
                        trial["version"],
                        campaign=trial.get("campaign") or None,
                        reason="health",
                        detail=verdict.reason,
                    ),
                )

    def _reboot(self, version: str) -> None:
        """Boot into (or away from) an OS version: the hook, else `reboot_command`."""
        logger.warning("ota: os %s: rebooting", version)
        self._reboots.add(version)
        if self._reboot_hook is not None:
            self._reboot_hook()
            return
        import subprocess

        subprocess.run(self.config.reboot_command, check=False, timeout=60)

    # -- check, defer, download, install ---------------------------------------------------

    async def _check(self, ctx: NodeContext, command: OtaCheckCommand | None) -> bool:
        """Check each kind; True when an offer was deferred (or could not be fetched)."""
        from ota.artifacts import ArtifactKind
        from ota.errors import OtaError, TransportError, TrustError
        from ota.trust import check_version

        self.checks += 1
        kinds = [
            k for k in self.config.kinds if command is None or command.artifact_kind in (None, k)
        ]
        client = self._update_client(ctx)
        refreshed = False
        waiting = False
        for kind in kinds:
            store = self.store(kind)
            if store.on_trial():
                continue
            try:
                offer = await asyncio.to_thread(
                    self._offer,
                    client,
                    ArtifactKind(kind),
                    command.group if command is not None else None,
                    not refreshed,
                )
                refreshed = True
                if offer is None or offer.version == store.installed_version():
                    continue
                if _rolled_back_here(store, offer.version, command):
                    continue
                check_version(offer, installed=store.installed_version())
            except OtaError as exc:
                transient = isinstance(exc, TransportError) and not isinstance(exc, TrustError)
                self._refused(ctx, kind, command, exc, transient=transient)
                waiting = waiting or transient
                continue
            base = _Report(
                "offered",
                kind,
                offer.name,
                offer.version,
                campaign=offer.campaign,
                bytes_total=offer.length,
            )
            self._emit(ctx, base)
            reason = self._deferral(ctx)
            if reason is not None:
                self._emit(
                    ctx, _replace(base, phase="deferred", reason=reason, detail=_DEFER_TEXT[reason])
                )
                waiting = True
                continue
            waiting = await self._apply(ctx, store, client, offer, base) or waiting
        self.checks_done += 1
        return waiting

    def _offer(self, client: UpdateClient, kind: Any, group: str | None, refresh: bool) -> Any:
        from ota.errors import TrustError, TrustReason

        try:
            return client.check(kind, expect_group=group, refresh=refresh)
        except TrustError as exc:
            if exc.trust_reason is TrustReason.CLOCK and self.config.trust_server_clock:
                logger.warning("ota: %s; re-checking by the server's clock", exc.message)
                return client.check(kind, expect_group=group, trust_server_clock=True)
            raise

    def _deferral(self, ctx: NodeContext) -> str | None:
        return deferral_reason(
            alert_active=ctx.state.alert_active,
            power_step=ctx.state.power_step,
            max_power_step=self.config.max_power_step,
            now=ctx.clock.now(),
            window=self.config.maintenance_window,
            timezone=self.config.timezone,
        )

    async def _apply(
        self,
        ctx: NodeContext,
        store: SlotStore | OsSlots,
        client: UpdateClient,
        offer: Any,
        base: _Report,
    ) -> bool:
        """Download, install and switch; True when it must wait (deferred, transport)."""
        from ota.errors import OtaError

        self._busy = True
        self._emit(ctx, _replace(base, phase="downloading", bytes_done=0))
        quarters = [offer.length * q // 4 for q in (1, 2, 3)]

        def progress(_url: str, received: int) -> None:
            # Called from the worker thread; one event per quarter, not per chunk.
            if quarters and quarters[0] <= received < offer.length:
                while quarters and received >= quarters[0]:
                    quarters.pop(0)
                self._emit(ctx, _replace(base, phase="downloading", bytes_done=received))

        client.fetcher.progress = progress
        try:
            got = await asyncio.to_thread(
                client.download,
                offer,
                installed=store.installed_artifact(),
                installed_version=store.installed_version(),
            )
            reason = self._deferral(ctx)  # an alert may have started while downloading
            if reason is not None:
                self._emit(
                    ctx, _replace(base, phase="deferred", reason=reason, detail=_DEFER_TEXT[reason])
                )
                return True
            first = store.active_slot() is None  # a first install is committed at once
            await asyncio.to_thread(store.install, got.path, allow_downgrade=offer.downgrade)
            if not first:
                store.switch(
                    now=ctx.clock.now().timestamp(),
                    deadline_s=self.config.health_deadline_s,
                    campaign=offer.campaign,
                )
            note = "via delta" if got.via_delta else "full artifact"
            if got.delta_error:
                note += f" (delta failed: {got.delta_error})"
            self._emit(
                ctx,
                _replace(base, phase="installed", bytes_done=got.bytes_transferred, detail=note),
            )
            got.path.unlink(missing_ok=True)
            if offer.kind.value == "os":
                self._reboot(offer.version)  # the new OS runs from the next boot
            elif not first and self.config.restart_for_app:
                # The app, its models and its configuration are all read at start.
                store.mark_clean_shutdown()
                logger.info(
                    "ota: %s %s switched; restarting into it", offer.kind.value, offer.version
                )
                ctx.request_stop()
        except OtaError as exc:
            transient = exc.reason.startswith(("transport", "http_"))
            self._refused(ctx, base.kind, None, exc, transient=transient, base=base)
            return transient
        finally:
            client.fetcher.progress = None
            self._busy = False
        return False

    def _refused(
        self,
        ctx: NodeContext,
        kind: str,
        command: OtaCheckCommand | None,
        exc: Any,
        *,
        transient: bool,
        base: _Report | None = None,
    ) -> None:
        self._last_error = f"{exc.reason}: {exc.message}"
        logger.warning("ota %s: %s", kind, self._last_error)
        report = base or _Report(
            "failed",
            kind,
            "",
            (command.version if command else None) or "unknown",
            campaign=command.campaign_id if command else None,
        )
        detail = exc.message
        evidence = getattr(exc, "evidence", None)
        if evidence:
            detail += f" {evidence}"
        # A transport failure is retried at the next check: deferred, not failed.
        self._emit(
            ctx,
            _replace(
                report,
                phase="deferred" if transient else "failed",
                reason=exc.reason,
                detail=detail[:1000],
            ),
        )

    def _update_client(self, ctx: NodeContext) -> UpdateClient:
        from ota.transport import HttpsTransport
        from ota.trust import UpdateClient

        if self._client is not None:
            return self._client
        transport = self._transport
        plain = self.config.repository_url.startswith("http://")
        if transport is None and plain:
            # Metadata and targets are signed and hashed, but plain HTTP neither
            # authenticates the node nor hides what it runs: simulated fleets only.
            if not self._dev_mode:
                raise RuntimeError("[ota] repository_url over http:// needs dev_mode")
            transport = HttpsTransport(ca_file=None)
        if transport is None:
            ca, cert, key = self._tls
            if ca is None:
                raise RuntimeError("[ota] needs [mqtt] ca_file (the fleet CA) for HTTPS")
            transport = HttpsTransport(ca_file=ca, cert_file=cert, key_file=key)
        root_path = self.config.trusted_root or self.data_dir / "root.json"
        trusted = root_path.read_bytes() if root_path.exists() else None
        base = self.config.repository_url.rstrip("/")
        kbps = self.config.bandwidth_kbps
        self._client = UpdateClient(
            cache_dir=self.data_dir / "cache",
            metadata_url=f"{base}/metadata/",
            targets_url=f"{base}/targets/",
            transport=transport,
            group=self.group,
            hardware=self.hardware,
            trusted_root=trusted,
            clock=ctx.clock.now,
            bandwidth_bps=kbps * 1000 // 8 if kbps else None,
        )
        return self._client

    def _emit(self, ctx: NodeContext, report: _Report) -> None:
        build = self._builder(ctx, report)

        def write() -> None:
            ctx.write_event(build)

        ctx.call_soon_threadsafe(write)

    def _builder(self, ctx: NodeContext, report: _Report) -> EventBuilder:
        at = ctx.clock.now()
        node_id = ctx.node_id
        name = report.name or report.kind

        def build(event_id: str, seq: int) -> EventBase:
            return OtaEvent(
                node_id=node_id,
                ts=at,
                event_id=event_id,
                seq=seq,
                artifact=name,
                version=report.version[:64],
                phase=report.phase,
                campaign_id=report.campaign or None,
                detail=(
                    f"{report.reason}: {report.detail}"
                    if report.reason and report.detail
                    else report.detail or report.reason
                ),
                artifact_kind=report.kind,
                reason=report.reason,
                bytes_done=report.bytes_done,
                bytes_total=report.bytes_total,
            )

        return build


_DEFER_TEXT = {
    "alert_active": "an alert is active on this node; the update waits until it ends",
    "battery_low": "the battery is below the power policy's threshold",
    "maintenance_window": "outside the site's maintenance window",
}


def _rolled_back_here(
    store: SlotStore | OsSlots, version: str, command: OtaCheckCommand | None
) -> bool:
    """Whether `version` already failed its health gate on this node and nobody asked again.

    A scheduled check must not install a version that just rolled back (its group may
    still be assigned it until the server withdraws it): that would put the node on
    trial, sick, over and over. An `ota_check` naming the version (retry-failed, a new
    campaign) is an explicit request and goes ahead.
    """
    last = store.status().last_rollback
    if not last or last.get("version") != version:
        return False
    return command is None or command.version != version


def _replace(report: _Report, **changes: Any) -> _Report:
    from dataclasses import replace

    return replace(report, **changes)


# -- the model and configuration slots in use ----------------------------------------------

SLOT_CONFIG_FILE = "agent.toml"
# What a configuration bundle may not change: who the node is, where its keys and data
# live, its board, and the OTA client itself (a bad bundle must not stop the next fix).
_PINNED_KEYS = frozenset({"node_id", "serial", "data_dir", "mqtt", "hardware", "ota", "dev_mode"})


def active_slot_dir(data_dir: Path, kind: str) -> Path | None:
    """`<data_dir>/ota/slots/<kind>/current` when it points at a complete slot, else None."""
    from ota.slots import SLOT_MARK

    current = data_dir / "ota" / "slots" / kind / "current"
    return current if (current / SLOT_MARK).is_file() else None


def _merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def config_with_slot(config: AgentConfig) -> tuple[AgentConfig, str | None]:
    """The config with the active configuration bundle's `agent.toml` laid over it.

    Returns (config, problem). A bundle that cannot be read, sets a pinned key or does
    not validate leaves the node on its base config and names the problem, which the
    health gate reports (`BundleHealth`): the node stays up, the trial fails, the slot
    switches back. Never raises, so a bad bundle can never stop the agent starting.
    """
    from edge_agent.config import ConfigError, config_from_dict, parse_config_text

    slot = active_slot_dir(config.data_dir, "config")
    path = slot / SLOT_CONFIG_FILE if slot is not None else None
    if path is None or not path.is_file():
        return config, None
    try:
        overlay = parse_config_text(path.read_text(encoding="utf-8"))
        pinned = sorted(set(overlay) & _PINNED_KEYS)
        if pinned:
            raise ConfigError(f"a configuration bundle may not set {', '.join(pinned)}")
        merged = _merge(config.model_dump(mode="python"), overlay)
        return config_from_dict(merged), None
    except (ConfigError, OSError, UnicodeDecodeError) as exc:
        return config, f"configuration bundle {path}: {exc}"


def use_slots(config: AgentConfig) -> tuple[AgentConfig, BundleHealth]:
    """At start: the configuration bundle applied, the model slot searched first.

    The model search path is process-wide (`edge_agent.inference.use_model_dirs`): one
    node per process in the field; simulated fleets carry no model slot.
    """
    config, problem = config_with_slot(config)
    model = active_slot_dir(config.data_dir, "model")
    if model is not None:
        from edge_agent.inference import use_model_dirs

        use_model_dirs([model])
    return config, BundleHealth(data_dir=config.data_dir, config_problem=problem)


class BundleHealth(ComponentBase):
    """The health of what the slots hold: the config bundle applied, every model loads.

    The OTA health gate reads every component's health, so a model bundle whose files
    do not match their manifests, or that its runtime cannot load, keeps a trial from
    committing and the slot switches back by itself. Each model slot version is loaded
    once (the result is kept by slot mark), not at every health read.
    """

    name = "ota_bundles"

    def __init__(self, *, data_dir: Path, config_problem: str | None = None) -> None:
        self.data_dir = data_dir
        self.config_problem = config_problem
        self._models: tuple[str, str | None] | None = None

    def health(self) -> Health:
        problems = [self.config_problem] if self.config_problem else []
        model_problem = self._model_problem()
        if model_problem:
            problems.append(model_problem)
        return Health(not problems, "; ".join(problems))

    def telemetry(self) -> Mapping[str, Any]:
        return {}

    def _model_problem(self) -> str | None:
        from ota.slots import SLOT_MARK

        slot = active_slot_dir(self.data_dir, "model")
        if slot is None:
            return None
        try:
            mark = (slot / SLOT_MARK).read_text(encoding="utf-8")
        except OSError as exc:
            return f"model bundle unreadable: {exc}"
        if self._models is None or self._models[0] != mark:
            self._models = (mark, check_model_bundle(slot))
        return self._models[1]

    async def run(self, ctx: NodeContext) -> None:
        return None


def check_model_bundle(directory: Path) -> str | None:
    """Load every model a bundle names (`*.yaml` manifests); the first problem, or None."""
    from edge_agent.inference import InferenceError, load_manifest, open_model

    manifests = sorted(directory.glob("*.yaml"))
    if not manifests:
        return f"model bundle {directory} holds no model manifest"
    for path in manifests:
        try:
            open_model(load_manifest(path))
        except InferenceError as exc:
            return f"model bundle: {path.name}: {exc}"
        except Exception as exc:  # a runtime's own error on a corrupt model file
            return f"model bundle: {path.name} does not load: {type(exc).__name__}: {exc}"
    return None
