"""Fleet-server settings: one pydantic model filled from `NIGEHBAAN_*` env vars.

Everything that differs between a developer's laptop, a test and a district
deployment lives here, so the rest of the server takes a `Settings` and never
reads the environment itself. Outside development (`NIGEHBAAN_ENV` other than
`dev`) the server refuses to start with a default or missing secret, because a
guessable token-signing key or admin password on a live control room is worse
than a server that does not start.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

logger = logging.getLogger(__name__)

ENV_PREFIX = "NIGEHBAAN_"
DEFAULT_SECRET = "change-me"  # noqa: S105 - the sentinel we refuse outside dev
DEFAULT_ADMIN_PASSWORD = "admin"  # noqa: S105 - idem


class SettingsError(ValueError):
    """The settings are unsafe or inconsistent."""


class Settings(BaseModel):
    """Everything the fleet server needs to start; see docs/panic-flow.md."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    env: Literal["dev", "test", "prod"] = Field(
        default="dev", description="deployment kind; only `dev` accepts default secrets"
    )
    data_dir: Path = Field(default=Path("./nigehbaan-data"), description="state directory")
    db_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/fleet.db"
    )
    broker_url: str | None = Field(
        default="mqtt://127.0.0.1:1883",
        description="MQTT broker to ingest from; None disables MQTT (API-only tests)",
    )
    managed_broker: bool = Field(
        default=False, description="start our own Mosquitto under <data_dir>/broker"
    )
    managed_broker_port: int = Field(default=1883, ge=0, le=65535, description="0 = free port")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)

    secret_key: str = Field(default=DEFAULT_SECRET, description="HMAC key for bearer tokens")
    token_ttl_s: int = Field(default=8 * 3600, ge=1, description="bearer token lifetime")
    admin_username: str = Field(default="admin", min_length=1)
    admin_password: str | None = Field(
        default=None, description="first-run admin password; no admin is made when unset"
    )

    mqtt_client_id: str = "fleet-server"
    mqtt_session_expiry_s: int = Field(
        default=3600, ge=0, description="broker keeps our QoS 1 backlog this long while we're down"
    )
    mqtt_keepalive_s: int = Field(default=30, ge=5)

    ingest_batch_max: int = Field(default=500, ge=1, le=5000, description="messages per commit")
    ingest_queue_max: int = Field(
        default=50_000, ge=100, description="paho thread blocks (TCP backpressure) when full"
    )
    offline_grace_s: float = Field(default=15.0, ge=0.0)
    ack_followup_s: float = Field(
        default=120.0, ge=1.0, description="acknowledged but not dispatched → re-escalate"
    )
    escalation_tick_s: float = Field(default=0.5, gt=0.0, le=60.0)
    sse_queue_max: int = Field(default=1000, ge=1, description="per-client SSE backlog")
    sse_keepalive_s: float = Field(default=15.0, gt=0.0)

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.env == "dev":
            return self
        if self.secret_key == DEFAULT_SECRET or len(self.secret_key) < 16:
            raise SettingsError(
                f"NIGEHBAAN_SECRET_KEY must be set to 16+ random characters when "
                f"NIGEHBAAN_ENV={self.env}"
            )
        if self.admin_password == DEFAULT_ADMIN_PASSWORD:
            raise SettingsError(
                f"NIGEHBAAN_ADMIN_PASSWORD may not be the default when NIGEHBAAN_ENV={self.env}"
            )
        return self

    @property
    def database_url(self) -> str:
        """The database to use (SQLite file under data_dir unless `db_url` is set)."""
        if self.db_url:
            return self.db_url
        return f"sqlite:///{(self.data_dir / 'fleet.db').resolve()}"

    def signing_key(self) -> bytes:
        """The token-signing key.

        In dev with the default secret, a random key is kept in
        `<data_dir>/secret.key` so tokens survive a restart of the same
        installation but are never the guessable default.
        """
        if self.secret_key != DEFAULT_SECRET:
            return self.secret_key.encode()
        path = self.data_dir / "secret.key"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
            logger.warning("no NIGEHBAAN_SECRET_KEY set; generated a dev key in %s", path)
        return path.read_text().strip().encode()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from `NIGEHBAAN_<FIELD>` variables, then explicit overrides.

        Overrides whose value is None are ignored, so CLI options that were not
        given fall through to the environment.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is None:
                continue
            if name in ("db_url", "broker_url", "admin_password") and raw == "":
                values[name] = None
            else:
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
