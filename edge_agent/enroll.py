"""First-boot enrollment and certificate renewal: the node side of docs/provisioning.md.

A technician flashes a first-boot bundle (`Bundle`, ``nigehbaan-bundle.json``)
onto the boot partition: the server's address, the fleet CA chain, an
enrollment token (or none, for preauthorized serials), the site. At first boot
`provision` makes the node's key (`edge_agent.identity.FileKeyStore`), sends a
CSR to ``POST /api/v1/enroll`` over HTTPS (the server verified against the
bundle's CA chain), stores ``identity/node.pem`` and ``identity/ca-chain.pem``,
keeps a copy of the bundle without its token, and writes ``agent.toml`` for
``mqtts://``. `renew_certificate` asks ``/api/v1/enroll/renew`` for a new
certificate on the same key and swaps the file atomically. Paths, bodies and
refusal codes are the wire contract's (`proto.enrollment`), the same models
the server answers with; nothing here spells a field by hand.

HTTP goes through the standard library (`urllib.request` with an
`ssl.SSLContext` built from the CA chain) so a node needs no HTTP client
package. Plain ``http://`` is accepted only for a loopback server (tests, the
demo on one machine).

Errors::

    AgentError
    └── EnrollmentError              root of the node's own enrollment failures
        ├── EnrollmentUnavailable    cannot reach the server, TLS failed, 5xx
        └── BadEnrollmentData        a bundle or server answer we cannot use
    ProtoError
    └── EnrollmentRefused            the server said no: .reason (code), .message
                                     (what the technician should do), .status;
                                     the contract's one class, which the server
                                     raises too (`proto.enrollment`)
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from edge_agent.config import IdentityConfig, MqttConfig, config_from_dict, parse_config_text
from edge_agent.errors import AgentError
from edge_agent.identity import (
    FileKeyStore,
    IdentityError,
    KeyStore,
    certificate_info,
    node_id_from_serial,
    write_atomically,
)
from proto.bundle import BUNDLE_NAME, Bundle, Location
from proto.enrollment import (
    REFUSAL_HINTS,
    EnrollmentRefused,
    EnrollPending,
    EnrollRequest,
    EnrollResponse,
    RefusalReason,
    RenewRequest,
    enroll_path,
    enroll_poll_path,
    parse_refusal,
    renew_path,
)

__all__ = [
    "BUNDLE_NAME",
    "REASON_HINTS",
    "BadEnrollmentData",
    "Bundle",
    "EnrollmentClient",
    "EnrollmentError",
    "EnrollmentRefused",
    "EnrollmentResult",
    "EnrollmentUnavailable",
    "IdentityPaths",
    "Location",
    "find_bundle",
    "load_bundle",
    "provision",
    "renew_certificate",
    "write_agent_config",
]

logger = logging.getLogger(__name__)

# Where a first-boot bundle may be found, besides the data directory.
BOOT_DIRS = (Path("/boot/firmware"), Path("/boot"))
_MAX_RESPONSE_BYTES = 256 * 1024

# What a technician can do about each refusal (the contract's, by reason code).
REASON_HINTS: Mapping[str, str] = {reason.value: hint for reason, hint in REFUSAL_HINTS.items()}

# What the server answers on success (enroll, poll and renew): the contract's model.
EnrollmentResult = EnrollResponse


class EnrollmentError(AgentError):
    """Root of the enrollment errors."""


class EnrollmentUnavailable(EnrollmentError):
    """The server could not be reached or failed (network, TLS, 5xx)."""


class BadEnrollmentData(EnrollmentError):
    """A bundle or a server answer that cannot be used."""


def _enrollment_result(payload: Any) -> EnrollmentResult:
    """A 200 answer → the contract's `EnrollResponse`, with a broker URL the agent can use."""
    try:
        result = EnrollResponse.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(answer)'}: {e['msg']}"
            for e in exc.errors(include_url=False)[:5]
        )
        raise BadEnrollmentData(f"unusable enrollment answer: {problems}") from exc
    try:
        MqttConfig(url=result.broker_url)
    except ValidationError as exc:
        raise BadEnrollmentData(f"unusable broker_url {result.broker_url!r}") from exc
    return result


@dataclass(frozen=True)
class IdentityPaths:
    """Where a node keeps its identity under its data directory."""

    data_dir: Path

    @property
    def directory(self) -> Path:
        return self.data_dir / "identity"

    @property
    def key(self) -> Path:
        return self.directory / "node.key"

    @property
    def certificate(self) -> Path:
        return self.directory / "node.pem"

    @property
    def ca_chain(self) -> Path:
        return self.directory / "ca-chain.pem"

    @property
    def bundle_copy(self) -> Path:
        return self.directory / "bundle.json"

    @property
    def config(self) -> Path:
        return self.data_dir / "agent.toml"


# ----------------------------------------------------------------- bundle


def bundle_from_text(text: str) -> Bundle:
    """Text → validated bundle, or BadEnrollmentData naming what is wrong."""
    try:
        return Bundle.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(bundle)'}: {e['msg']}"
            for e in exc.errors(include_url=False)[:5]
        )
        raise BadEnrollmentData(f"bad first-boot bundle: {problems}") from exc


def load_bundle(path: Path) -> Bundle:
    """Read and validate a first-boot bundle file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadEnrollmentData(f"cannot read the bundle {path}: {exc}") from exc
    return bundle_from_text(text)


def find_bundle(data_dir: Path, *, extra: tuple[Path, ...] = BOOT_DIRS) -> Path | None:
    """The first ``nigehbaan-bundle.json`` in the data dir or on the boot partition."""
    for directory in (data_dir, *extra):
        candidate = directory / BUNDLE_NAME
        if candidate.is_file():
            return candidate
    return None


# ----------------------------------------------------------------- client

Sleep = Callable[[float], None]


class EnrollmentClient:
    """Talks to the enrollment API over HTTPS with the standard library."""

    def __init__(
        self,
        server_url: str,
        *,
        ca_chain_pem: str | None,
        timeout_s: float = 30.0,
        sleep: Sleep = time.sleep,
    ) -> None:
        parts = urlsplit(server_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise BadEnrollmentData(f"server_url must be https://host[:port], not {server_url!r}")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise BadEnrollmentData(
                f"refusing plain http to {parts.hostname}: enrollment needs https "
                "(http is accepted only for a server on this machine)"
            )
        self.base_url = server_url.rstrip("/")
        self.timeout_s = timeout_s
        self._sleep = sleep
        handlers: list[urllib.request.BaseHandler] = []
        if parts.scheme == "https":
            if not ca_chain_pem:
                raise BadEnrollmentData("https enrollment needs the fleet CA chain")
            try:
                context = ssl.create_default_context(cadata=ca_chain_pem)
            except (ssl.SSLError, ValueError) as exc:
                raise BadEnrollmentData(f"the bundle's CA chain is not usable: {exc}") from exc
            handlers.append(urllib.request.HTTPSHandler(context=context))
        # No proxies from the environment: a node talks to its server directly.
        handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

    def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, Any, Mapping[str, str]]:
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                status = int(response.status)
                raw = response.read(_MAX_RESPONSE_BYTES + 1)
                headers = dict(response.headers.items())
        except urllib.error.HTTPError as exc:
            status = exc.code
            raw = exc.read(_MAX_RESPONSE_BYTES + 1) if exc.fp is not None else b""
            headers = dict(exc.headers.items()) if exc.headers is not None else {}
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise EnrollmentUnavailable(f"cannot reach {self.base_url}: {reason}") from exc
        if len(raw) > _MAX_RESPONSE_BYTES:
            raise BadEnrollmentData(f"answer from {path} is larger than {_MAX_RESPONSE_BYTES} B")
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode("utf-8", "replace")[:500]
        return status, payload, headers

    def enroll(
        self,
        *,
        serial: str,
        csr_pem: str,
        token: str | None = None,
        node_id: str | None = None,
        site_id: str | None = None,
        district: str | None = None,
        location: Location | None = None,
        wait_s: float = 3600.0,
        poll_min_s: float = 5.0,
        poll_max_s: float = 300.0,
    ) -> EnrollmentResult:
        """``POST /api/v1/enroll``; waits (polling) while pending, up to `wait_s`."""
        try:
            request = EnrollRequest(
                serial=serial,
                csr_pem=csr_pem,
                token=token,
                node_id=node_id,
                site_id=site_id,
                district=district,
                location=location,
            )
        except ValidationError as exc:
            raise BadEnrollmentData(f"cannot ask to enroll with these values: {exc}") from exc
        body = request.model_dump(mode="json")
        deadline = time.monotonic() + wait_s
        status, payload, _ = self._retrying_rate_limit(
            "POST", enroll_path(), body, deadline=deadline, poll_max_s=poll_max_s
        )
        delay = poll_min_s
        while status == 202:
            try:
                request_id = EnrollPending.model_validate(payload).request_id
            except ValidationError:
                raise BadEnrollmentData("202 pending without a request_id") from None
            if time.monotonic() + delay > deadline:
                raise EnrollmentRefused.from_answer(
                    RefusalReason.PENDING_APPROVAL,
                    f"request {request_id} still waits for an administrator after {wait_s:.0f}s; "
                    "accept it in the console and start the node again",
                    status=202,
                )
            logger.info(
                "enrollment request %s pending approval; asking again in %.0fs", request_id, delay
            )
            self._sleep(delay)
            delay = min(poll_max_s, delay * 2)
            status, payload, _ = self._retrying_rate_limit(
                "GET",
                enroll_poll_path(request_id),
                None,
                deadline=deadline,
                poll_max_s=poll_max_s,
            )
        return self._result(status, payload)

    def renew(self, *, certificate_pem: str, csr_pem: str) -> EnrollmentResult:
        """``POST /api/v1/enroll/renew``: a new certificate for the same key."""
        try:
            request = RenewRequest(certificate_pem=certificate_pem, csr_pem=csr_pem)
        except ValidationError as exc:
            raise BadEnrollmentData(f"cannot ask to renew with these values: {exc}") from exc
        status, payload, _ = self._request("POST", renew_path(), request.model_dump(mode="json"))
        return self._result(status, payload)

    def _retrying_rate_limit(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        *,
        deadline: float,
        poll_max_s: float,
    ) -> tuple[int, Any, Mapping[str, str]]:
        """One request, repeated after 429 (honouring Retry-After) until the deadline."""
        while True:
            status, payload, headers = self._request(method, path, body)
            if status != 429:
                return status, payload, headers
            wait = _retry_after(headers, default=10.0, cap=poll_max_s)
            wait = random.uniform(wait, wait * 1.2)  # a fleet must not retry in lock-step
            if time.monotonic() + wait > deadline:
                return status, payload, headers
            logger.info("enrollment rate-limited; retrying in %.1fs", wait)
            self._sleep(wait)

    def _result(self, status: int, payload: Any) -> EnrollmentResult:
        if status == 200:
            return _enrollment_result(payload)
        reason, message = _refusal(payload)
        if 400 <= status < 500:
            raise EnrollmentRefused.from_answer(reason or f"http_{status}", message, status=status)
        raise EnrollmentUnavailable(f"server error {status}: {message or reason}")


def _refusal(payload: Any) -> tuple[str, str]:
    """(reason, message) from the contract's `RefusalBody`, or from what else a server may say.

    Besides our refusals a node may meet FastAPI's 422 list, a proxy's text,
    or a code newer than this node (kept as text, not refused).
    """
    refusal = parse_refusal(payload)
    if refusal is not None:
        return refusal.reason.value, refusal.message
    detail = payload.get("detail") if isinstance(payload, dict) else payload
    if isinstance(detail, dict):
        return str(detail.get("reason") or ""), str(detail.get("message") or "")
    if isinstance(detail, list):  # FastAPI's 422 validation list
        return "bad_request", "; ".join(str(d.get("msg", d)) for d in detail[:3])
    return "", str(detail or "")[:500]


def _retry_after(headers: Mapping[str, str], *, default: float, cap: float) -> float:
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                return max(0.5, min(cap, float(value)))
            except ValueError:
                break
    return min(default, cap)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------ provisioning


def provision(
    bundle: Bundle,
    *,
    data_dir: Path,
    serial: str,
    keystore: KeyStore | None = None,
    client: EnrollmentClient | None = None,
    wait_s: float = 3600.0,
    config_overrides: Mapping[str, Any] | None = None,
) -> EnrollmentResult:
    """Enroll this node with `bundle` and leave it ready to run over mqtts.

    Makes (or reuses) the key, sends the CSR, checks that the certificate is
    for our key and node id, writes ``identity/`` and ``agent.toml``, and
    keeps the bundle without its token.
    """
    paths = IdentityPaths(data_dir)
    keystore = keystore or FileKeyStore(paths.key)
    client = client or EnrollmentClient(bundle.server_url, ca_chain_pem=bundle.ca_chain_pem)
    node_id = bundle.node_id or node_id_from_serial(serial)
    csr = keystore.sign_csr(node_id, serial)
    result = client.enroll(
        serial=serial,
        csr_pem=csr,
        token=bundle.token,
        node_id=bundle.node_id,
        site_id=bundle.site_id,
        district=bundle.district,
        location=bundle.location,
        wait_s=wait_s,
    )
    _check_certificate(result, keystore=keystore)
    write_atomically(paths.certificate, result.certificate_pem.encode("ascii"))
    write_atomically(paths.ca_chain, result.ca_chain_pem.encode("ascii"))
    kept = bundle.model_copy(update={"token": None})
    write_atomically(paths.bundle_copy, kept.model_dump_json(indent=2).encode("utf-8"), mode=0o600)
    write_agent_config(
        paths,
        node_id=result.node_id,
        serial=serial,
        site_id=bundle.site_id,
        district=bundle.district,
        broker_url=result.broker_url,
        api_url=result.api_url or bundle.server_url,
        overrides=config_overrides,
    )
    logger.info("enrolled as %s; certificate valid until %s", result.node_id, result.not_after)
    return result


def _check_certificate(result: EnrollmentResult, *, keystore: KeyStore) -> None:
    try:
        info = certificate_info(result.certificate_pem)
    except IdentityError as exc:
        raise BadEnrollmentData(f"the server's certificate is unusable: {exc}") from exc
    if info.public_key_pem.strip() != keystore.public_key_pem().strip():
        raise BadEnrollmentData("the server issued a certificate for another key")
    if info.common_name != result.node_id:
        raise BadEnrollmentData(
            f"certificate CN {info.common_name!r} is not the node id {result.node_id!r}"
        )


def write_agent_config(
    paths: IdentityPaths,
    *,
    node_id: str,
    serial: str,
    site_id: str | None,
    district: str | None,
    broker_url: str,
    api_url: str,
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Write (or update) ``agent.toml`` for mqtts with this node's identity files."""
    data: dict[str, Any] = {}
    if paths.config.exists():
        data = parse_config_text(paths.config.read_text(encoding="utf-8"))
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    data.update(node_id=node_id, serial=serial, data_dir=str(paths.data_dir))
    for key, value in (("site_id", site_id), ("district", district)):
        if value is not None:
            data[key] = value
    mqtt = dict(data.get("mqtt") or {})
    mqtt.update(
        url=broker_url,
        ca_file=str(paths.ca_chain),
        cert_file=str(paths.certificate),
        key_file=str(paths.key),
    )
    data["mqtt"] = mqtt
    identity = dict(data.get("identity") or {})
    identity.update(server_url=api_url, ca_file=str(paths.ca_chain))
    data["identity"] = identity
    config_from_dict(data)  # refuse to write a config the agent would refuse
    write_atomically(paths.config, _toml(data).encode("utf-8"), mode=0o600)
    return paths.config


def _toml(data: Mapping[str, Any]) -> str:
    """TOML for a config: top-level scalars, then one table per section."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (str, Path)):
            return json.dumps(str(v))  # JSON strings are TOML basic strings
        raise BadEnrollmentData(f"cannot write {type(v).__name__} into agent.toml")

    lines = ["# Written by nigehbaan enrollment; edits to other keys are kept."]
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, v in data.items():
        if v is None:
            continue
        if isinstance(v, Mapping):
            tables.append((key, v))
        else:
            lines.append(f"{key} = {value(v)}")
    for name, table in tables:
        lines += ["", f"[{name}]"]
        lines += [f"{k} = {value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- renewal


def renew_certificate(
    *,
    mqtt: MqttConfig,
    identity: IdentityConfig,
    serial: str,
    keystore: KeyStore | None = None,
    client: EnrollmentClient | None = None,
) -> EnrollmentResult:
    """Renew the node's certificate on the same key and swap the file atomically.

    Blocking (HTTP); the agent runs it in a worker thread.
    """
    if mqtt.cert_file is None or mqtt.key_file is None:
        raise BadEnrollmentData("no certificate configured (mqtt.cert_file/key_file)")
    if identity.server_url is None:
        raise BadEnrollmentData("no enrollment server configured (identity.server_url)")
    keystore = keystore or FileKeyStore(mqtt.key_file)
    try:
        current = mqtt.cert_file.read_text(encoding="ascii")
    except OSError as exc:
        raise BadEnrollmentData(f"cannot read {mqtt.cert_file}: {exc}") from exc
    info = certificate_info(current)
    if client is None:
        ca_file = identity.ca_file or mqtt.ca_file
        ca_pem = ca_file.read_text(encoding="ascii") if ca_file else None
        client = EnrollmentClient(identity.server_url, ca_chain_pem=ca_pem)
    csr = keystore.sign_csr(info.common_name, info.serial_number or serial)
    result = client.renew(certificate_pem=current, csr_pem=csr)
    _check_certificate(result, keystore=keystore)
    write_atomically(mqtt.cert_file, result.certificate_pem.encode("ascii"))
    if mqtt.ca_file is not None and result.ca_chain_pem.strip():
        write_atomically(mqtt.ca_file, result.ca_chain_pem.encode("ascii"))
    logger.info("%s: certificate renewed, valid until %s", result.node_id, result.not_after)
    return result
