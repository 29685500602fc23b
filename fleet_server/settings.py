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

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fleet_server.errors import FleetServerError

logger = logging.getLogger(__name__)

ENV_PREFIX = "NIGEHBAAN_"
DEFAULT_SECRET = "change-me"  # noqa: S105 - the sentinel we refuse outside dev
DEFAULT_ADMIN_PASSWORD = "admin"  # noqa: S105 - idem


class SettingsError(FleetServerError, ValueError):
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
    ingest_ack_hold_s: float = Field(
        default=0.5,
        ge=0.0,
        le=5.0,
        description="while a backlog waits, non-panic acks are merged for up to this long; "
        "keep it well under the nodes' outbox.resend_after_s",
    )
    # Cluster deployment (docs/cluster.md): ingest from RabbitMQ instead of an MQTT broker.
    cluster_amqp_urls: list[str] = Field(
        default_factory=list,
        description="RabbitMQ nodes (amqp://user:pass@host:port/, comma list); set: this "
        "server is a cluster worker consuming its district partitions",
    )
    cluster_districts: list[str] = Field(
        default_factory=list, description="district brokers bridged into the cluster (comma list)"
    )
    cluster_worker_index: int = Field(default=0, ge=0, description="this worker's number, 0-based")
    cluster_workers: int = Field(default=1, ge=1, description="workers sharing the partitions")
    cluster_replicas: int = Field(default=3, ge=1, le=7, description="quorum queue members")
    cluster_district_brokers: list[str] = Field(
        default_factory=list,
        description="district=mqtt://host:port (comma list): publish acks and commands to "
        "each district broker directly instead of down its bridge (docs/cluster.md)",
    )
    offline_grace_s: float = Field(default=15.0, ge=0.0)
    silence_intervals: float = Field(
        default=3.0,
        ge=0.0,
        description="a node that sent nothing for this many of its telemetry intervals (its "
        "own stamps) is offline whatever its last status said; 0 turns this off",
    )
    silence_default_s: float = Field(
        default=300.0,
        gt=0.0,
        description="silence timeout of a node whose telemetry interval is not known yet",
    )
    silence_min_s: float = Field(
        default=60.0, ge=0.0, description="shortest silence timeout, whatever the interval"
    )
    device_time_future_s: float = Field(
        default=300.0,
        ge=0.0,
        description="an event stamped further ahead of its receive time (or this long before "
        "its node was enrolled) has an implausible device time",
    )
    device_time_past_s: float = Field(
        default=86_400.0,
        gt=0.0,
        description="an event stamped this long before its receive time has an implausible "
        "device time (an outbox held longer is flagged too)",
    )
    ack_followup_s: float = Field(
        default=120.0, ge=1.0, description="acknowledged but not dispatched → re-escalate"
    )
    escalation_tick_s: float = Field(default=0.5, gt=0.0, le=60.0)
    plate_retention_days: float | None = Field(
        default=90.0, gt=0.0, le=36_500.0,
        description="plate reads older than this are deleted (docs/anpr.md); unset: kept",
    )  # fmt: skip
    event_retention_days: float | None = Field(
        default=None, gt=0.0, le=36_500.0,
        description="PostgreSQL: monthly event partitions that ended longer ago than this are "
        "dropped (docs/scaling-postgresql.md); unset: kept. SQLite: no effect",
    )  # fmt: skip
    # The panic snapshot pull (fleet_server.alerting.snapshots, docs/watchlists-operations.md).
    snapshot_radius_m: float = Field(
        default=300.0, ge=0.0, le=50_000.0,
        description="after the pillar's own site, camera nodes within this many metres are "
        "asked for a still when a panic alert opens; 0: the same site only",
    )  # fmt: skip
    snapshot_max_nodes: int = Field(
        default=4, ge=0, le=32,
        description="at most this many camera nodes are asked per panic; 0: no pull",
    )  # fmt: skip
    snapshot_ttl_s: float = Field(
        default=60.0, ge=1.0, le=3600.0,
        description="a node ignores a snapshot command older than this",
    )  # fmt: skip
    # Evidence (docs/evidence.md): retention per data class, upload bound, export policy.
    evidence_retention_plate_crop_days: float | None = Field(
        default=30.0, gt=0.0, le=36_500.0, description="plate crops kept this long; unset: kept"
    )
    evidence_retention_face_crop_days: float | None = Field(
        default=30.0, gt=0.0, le=36_500.0, description="face crops kept this long; unset: kept"
    )
    evidence_retention_panic_snapshot_days: float | None = Field(
        default=90.0, gt=0.0, le=36_500.0, description="panic snapshots kept; unset: kept"
    )
    evidence_retention_case_days: float | None = Field(
        default=365.0, gt=0.0, le=36_500.0,
        description="evidence of a released case is kept this long after release; unset: kept",
    )  # fmt: skip
    evidence_max_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024,
        description="largest evidence file a node may upload",
    )  # fmt: skip
    evidence_export_approval: bool = Field(
        default=True, description="an evidence export needs a second user's approval"
    )
    # Watchlists (docs/faces.md, "Thresholds").
    face_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="face-match threshold per watchlist category, overriding the shipped table "
        "(proto.watchlist.FACE_THRESHOLDS) in the bundles this server signs; "
        "'wanted_person=0.5,missing_child=0.38' in the environment; each within "
        "FACE_THRESHOLD_RANGE",
    )
    sse_queue_max: int = Field(default=1000, ge=1, description="per-client SSE backlog")
    sse_keepalive_s: float = Field(default=15.0, gt=0.0)
    sse_replay_max: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="alert changes replayed to a reconnecting client; more → resync",
    )

    # Provisioning and identity (docs/provisioning.md).
    pki_dir: Path | None = Field(default=None, description="default <data_dir>/pki")
    init_pki: bool | None = Field(
        default=None,
        description="make a development root + issuing CA if missing; None = only in dev",
    )
    root_ca_passphrase: str | None = Field(
        default=None,
        description="dev PKI root key passphrase (generated into the pki dir if unset)",
    )
    mqtts_port: int = Field(
        default=8883, ge=0, le=65535, description="managed broker TLS; 0 = free"
    )
    mqtts_bind: str = Field(
        default="127.0.0.1", description="TLS listener address (0.0.0.0 to serve nodes)"
    )
    broker_hostnames: list[str] = Field(
        default_factory=list, description="extra SANs for the broker/API certificates (comma list)"
    )
    public_hostname: str | None = Field(
        default=None, description="host nodes use in broker_url/api_url; default the request's host"
    )
    node_cert_days: int = Field(default=30, ge=1, le=825, description="node certificate lifetime")
    enrollment_manual_accept: bool = Field(
        default=False, description="queue unknown nodes for an admin instead of refusing them"
    )
    enroll_rate_per_min: float = Field(
        default=10.0, gt=0.0, description="enrollment requests per client address and per token"
    )
    # Password guessing (docs/fleet-server.md, "HTTP"): failed sign-ins only are counted.
    login_account_burst: int = Field(
        default=10, ge=1, description="failed sign-ins in a row one account may have"
    )
    login_account_per_min: float = Field(
        default=5.0, gt=0.0, description="failed sign-ins per account per minute after the burst"
    )
    login_address_burst: int = Field(
        default=30, ge=1, description="failed sign-ins in a row from one client address"
    )
    login_address_per_min: float = Field(
        default=20.0, gt=0.0, description="failed sign-ins per address per minute after the burst"
    )
    rejection_log_interval_s: float = Field(
        default=60.0,
        ge=0.0,
        description="one WARNING per node and reason per interval for refused MQTT payloads "
        "(the counters keep every one); 0 logs each",
    )
    dev_plain_listener: bool | None = Field(
        default=None,
        description="managed broker also opens a plain loopback listener; None = dev only",
    )
    revocation_action: Literal["restart", "reload"] = Field(
        default="restart",
        description="what a revocation does to the managed broker: SIGHUP always (new "
        "connections refused); restart drops live ones (Mosquitto keeps them on SIGHUP); "
        "reload restarts only when a revoked node is online",
    )
    revocation_restart_min_s: float = Field(
        default=30.0,
        ge=0.0,
        description="at most one broker restart for revocations per this many seconds; "
        "revocations inside the window share one restart at its end (the CRL and SIGHUP "
        "still happen at once)",
    )
    crl_refresh_s: float = Field(default=86_400.0, gt=0.0, description="CRL re-sign interval")
    acl_denial_alert_threshold: int = Field(
        default=10,
        ge=1,
        description="broker ACL denials of one node within acl_denial_window_s that open an "
        "acl_denied alert (a node probing other nodes' topics)",
    )
    acl_denial_window_s: float = Field(
        default=600.0, gt=0.0, description="window acl_denial_alert_threshold is counted over"
    )
    console_map_tile_url: str | None = Field(
        default=None,
        description="the deployment's own map tile server (https://…/{z}/{x}/{y}.png); unset: "
        "the fleet map draws nodes and district outlines with no tiles (works offline)",
    )
    api_https: bool = Field(default=False, description="serve the API over HTTPS")
    api_certfile: Path | None = Field(default=None, description="default <pki_dir>/api.pem")
    api_keyfile: Path | None = Field(default=None, description="default <pki_dir>/api.key")
    # OTA on the server (fleet_server/ota, docs/ota-server.md).
    ota_dir: Path | None = Field(
        default=None, description="artifact store and repository metadata; default <data_dir>/ota"
    )
    ota_max_artifact_bytes: int = Field(
        default=512 * 1024 * 1024, ge=1, description="largest artifact an upload may send"
    )
    ota_known_hardware: list[str] = Field(
        default_factory=lambda: ["rpi", "sim", "custom"],
        min_length=1,
        description="hardware names (a node's birth `hardware`) an artifact may be for; "
        "comma-separated in the environment",
    )
    ota_repo_open: bool = Field(
        default=False,
        description="serve repository metadata and targets without authentication (they are "
        "signed and hashed; only their confidentiality is lost)",
    )
    ota_keys_dir: Path | None = Field(
        default=None,
        description="the repository's online keys (timestamp, snapshot, release, director); "
        "default <ota_dir>/keys",
    )
    ota_keys_passphrase: str | None = Field(
        default=None, description="passphrase of the online keys, when they are encrypted"
    )

    @field_validator("db_url")
    @classmethod
    def _database_we_support(cls, value: str | None) -> str | None:
        """Refuse a URL that is not SQLite or PostgreSQL here, not as a traceback at start."""
        if value is None:
            return None
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            backend = make_url(value).get_backend_name()
        except ArgumentError as exc:
            raise ValueError(f"not a database URL: {value!r} ({exc})") from exc
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"database {backend!r} is not supported; use sqlite or postgresql")
        return value

    @field_validator(
        "cluster_amqp_urls", "cluster_districts", "cluster_district_brokers", mode="before"
    )
    @classmethod
    def _split_cluster_lists(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("broker_hostnames", "ota_known_hardware", mode="before")
    @classmethod
    def _split_hostnames(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator("face_thresholds", mode="before")
    @classmethod
    def _split_face_thresholds(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for item in (v.strip() for v in value.split(",")):
            if not item:
                continue
            name, sep, number = item.partition("=")
            if not sep:
                raise ValueError(f"expected category=threshold, not {item!r}")
            pairs[name.strip()] = number.strip()
        return pairs

    @field_validator("face_thresholds")
    @classmethod
    def _sane_face_thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        from proto.watchlist import CATEGORIES, FACE_THRESHOLD_RANGE

        low, high = FACE_THRESHOLD_RANGE
        for name, threshold in value.items():
            if name not in CATEGORIES:
                raise ValueError(f"{name!r} is not a watchlist category ({', '.join(CATEGORIES)})")
            if not low <= threshold <= high:
                raise ValueError(f"{name}: face threshold {threshold} is outside {low}..{high}")
        return value

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.env == "dev":
            return self
        if self.init_pki:
            raise SettingsError(
                "--init-pki makes a development CA; outside dev use "
                "`nigehbaan server ca init` and `ca issue-intermediate`"
            )
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

    @property
    def ota_path(self) -> Path:
        """Where the OTA artifact store lives."""
        return self.ota_dir if self.ota_dir is not None else self.data_dir / "ota"

    @property
    def pki_path(self) -> Path:
        """Where the online PKI lives (issuing CA, service certificates, CRL)."""
        return self.pki_dir if self.pki_dir is not None else self.data_dir / "pki"

    @property
    def plain_listener(self) -> bool:
        """Whether the managed broker also opens the plain loopback listener."""
        return self.env == "dev" if self.dev_plain_listener is None else self.dev_plain_listener

    @property
    def makes_dev_pki(self) -> bool:
        """Whether start-up creates a development PKI when none exists.

        Never by default on a cluster worker: N workers each making a CA of their
        own would issue certificates the district brokers and the other workers
        do not trust. The cluster's one PKI comes from `nigehbaan cluster up`
        (or an operator) through `pki_dir` (docs/cluster.md).
        """
        if self.init_pki is None:
            return self.env == "dev" and not self.cluster_amqp_urls
        return self.init_pki

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
            if name in ("db_url", "broker_url", "admin_password", "init_pki") and raw == "":
                values[name] = None
            else:
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
