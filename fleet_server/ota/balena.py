"""Campaigns for fleets already on balenaCloud (or openBalena), through `balena-sdk`.

An alternative backend to the server's own signed repository and `ota_check`
offers: a balena fleet updates by *releases*, so a wave is carried out by
pinning its devices to the campaign's release (canary and wider waves) and
the last wave by pinning the whole fleet to it; device environment variables
carry configuration. Every call to balena's API goes through one throttle
(`min_interval_s` between calls), since a campaign over thousands of devices
must not run into balena's rate limits. The SDK is imported lazily (the
`balena` extra), so the server runs without it.

What is built: the call mapping (`BalenaBackend`, the `CampaignBackend`
protocol), tested against a local fake of balena's HTTP API for the requests
only (tests/integration/test_ota_server_balena.py). What is not: wiring it
into `OtaWaveJob` (a campaign still offers through MQTT and TUF), reading a
device's progress back from balena (its `is_running__release` and status
would stand in for the `ota` events), and a console switch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from fleet_server.ota.errors import OtaServerError

__all__ = ["BalenaBackend", "BalenaDevice", "BalenaError", "CampaignBackend"]

logger = logging.getLogger(__name__)


class BalenaError(OtaServerError):
    """balena's API refused or failed a call (the SDK's error, with its reason)."""


class CampaignBackend(Protocol):
    """What carries a campaign's wave to its nodes."""

    def offer(self, *, node_ids: Sequence[str], release: str, whole_fleet: bool) -> int:
        """Make `node_ids` (or, for the last wave, the whole fleet) take `release`."""
        ...


@dataclass(frozen=True)
class BalenaDevice:
    """A device of the balena fleet, as the campaign sees it."""

    uuid: str
    name: str
    device_id: int


class BalenaBackend:
    """A balena fleet driven through `balena-sdk` (see the module docstring)."""

    def __init__(
        self,
        sdk: Any,
        *,
        fleet: str,
        min_interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sdk = sdk
        self.fleet = fleet
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._sleep = sleep
        self._last_call: float | None = None
        self.calls = 0

    @classmethod
    def connect(
        cls,
        *,
        token: str,
        fleet: str,
        balena_host: str = "balena-cloud.com",
        api_url: str | None = None,
        min_interval_s: float = 0.5,
    ) -> BalenaBackend:
        """Sign in to balena with an API key; `api_url` overrides the host (tests, proxies)."""
        try:
            from balena import Balena  # type: ignore[import-untyped, import-not-found, unused-ignore]
        except ImportError as exc:  # pragma: no cover - the extra is missing
            raise BalenaError(
                "balena_sdk_missing", "install the balena extra: pip install 'nigehbaan[balena]'"
            ) from exc
        sdk = Balena({"balena_host": balena_host, "data_directory": False})
        if api_url is not None:
            base = api_url.rstrip("/") + "/"
            sdk.settings.set("api_endpoint", base)
            sdk.pine.api_prefix = f"{base}{sdk.settings.get('api_version')}/"
        sdk.auth.login_with_token(token)
        return cls(sdk, fleet=fleet, min_interval_s=min_interval_s)

    def _throttled(self, what: str, call: Callable[[], Any]) -> Any:
        now = self._clock()
        if self._last_call is not None:
            wait = self.min_interval_s - (now - self._last_call)
            if wait > 0:
                self._sleep(wait)
        try:
            return call()
        except Exception as exc:  # the SDK raises its own tree and requests' errors
            raise BalenaError("balena_refused", f"balena {what} failed: {exc}") from exc
        finally:
            self._last_call = self._clock()
            self.calls += 1

    def devices(self) -> list[BalenaDevice]:
        """Every device of the fleet (one call)."""
        rows = self._throttled(
            "device list",
            lambda: self.sdk.models.device.get_all_by_application(
                self.fleet, {"$select": ["id", "uuid", "device_name"]}
            ),
        )
        return [BalenaDevice(uuid=r["uuid"], name=r["device_name"], device_id=r["id"])
                for r in rows]  # fmt: skip

    def pin_devices(self, uuids: Sequence[str], release: str, *, batch: int = 50) -> None:
        """Pin devices to a release, `batch` devices per call (canary and wider waves)."""
        for start in range(0, len(uuids), batch):
            part = list(uuids[start : start + batch])
            self._throttled("pin to release", partial(self.sdk.models.device.pin_to_release,
                                                      part, release))  # fmt: skip

    def pin_fleet(self, release: str) -> None:
        """Pin the whole fleet to a release (the last wave)."""
        self._throttled(
            "fleet pin", lambda: self.sdk.models.application.pin_to_release(self.fleet, release)
        )

    def set_env(self, uuid: str, name: str, value: str) -> None:
        """A device environment variable (configuration for one device)."""
        self._throttled(
            "env var",
            lambda: self.sdk.models.device.env_var.set(uuid, name, value),
        )

    def offer(self, *, node_ids: Sequence[str], release: str, whole_fleet: bool) -> int:
        """Node ids are balena device names; unknown names are logged and skipped."""
        if whole_fleet:
            self.pin_fleet(release)
            return len(node_ids)
        by_name = {d.name: d.uuid for d in self.devices()}
        missing = [n for n in node_ids if n not in by_name]
        if missing:
            logger.warning("balena fleet %s has no device named %s", self.fleet, missing[:10])
        uuids = [by_name[n] for n in node_ids if n in by_name]
        self.pin_devices(uuids, release)
        return len(uuids)
