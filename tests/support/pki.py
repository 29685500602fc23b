"""The tests' one PKI helper: the product CA for certificates, node keys and CSRs, mTLS clients.

Certificates come from the product's own CA (`FleetCA` over `fleet_server.pki`);
keys and CSRs are made here with `cryptography`, the way a node makes its own
(the edge agent's key store is tested on its own); `TlsClient`, `connects`
and the `mosquitto_pub`/`mosquitto_sub` wrappers speak mutual TLS to a broker.
"""

from __future__ import annotations

import queue
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from fleet_server.models import utcnow
from fleet_server.pki import IssuingCa, PkiPaths, init_dev_pki
from fleet_server.pki.ca import cert_pem, issue_service_certificate

MQTT_TIMEOUT_S = 5.0


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def csr_pem(key: ec.EllipticCurvePrivateKey, *, cn: str, serial: str | None = None) -> str:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if serial is not None:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attrs))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@dataclass(frozen=True)
class Identity:
    """Files a client presents: the CA chain it trusts, its certificate and key."""

    name: str
    ca: Path
    cert: Path
    key: Path

    @classmethod
    def write(
        cls, directory: Path, name: str, *, ca: Path, cert_pem: bytes | str, key: bytes
    ) -> Identity:
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
        cert_path.write_bytes(cert_pem.encode() if isinstance(cert_pem, str) else cert_pem)
        key_path.write_bytes(key)
        key_path.chmod(0o600)
        return cls(name=name, ca=ca, cert=cert_path, key=key_path)


class TlsClient:
    """A paho MQTT 5 client with a client certificate; records messages and connection events."""

    def __init__(self, identity: Identity, *, host: str, port: int, client_id: str = "") -> None:
        self.identity = identity
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.refused = threading.Event()
        self.suback: queue.Queue[list[int]] = queue.Queue()
        self.puback: queue.Queue[tuple[int, int]] = queue.Queue()
        self._host, self._port = host, port
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or identity.name,
            protocol=mqtt.MQTTv5,
        )
        self.client.tls_set(
            ca_certs=str(identity.ca), certfile=str(identity.cert), keyfile=str(identity.key)
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.refused.set()
        else:
            self.disconnected.clear()
            self.connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _reason: Any, _p: Any) -> None:
        self.connected.clear()
        self.disconnected.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put((msg.topic, bytes(msg.payload)))

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
        self.suback.put([r.value for r in reasons])

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        self.puback.put((mid, reason.value))

    def start(self) -> TlsClient:
        """Connect in the background (a refused TLS handshake never sets `connected`)."""
        self.client.connect_async(self._host, self._port, keepalive=10)
        self.client.loop_start()
        return self

    def wait_connected(self, timeout: float = MQTT_TIMEOUT_S) -> bool:
        return self.connected.wait(timeout)

    def subscribe(self, *filters: str) -> list[int]:
        self.client.subscribe([(f, 1) for f in filters])
        return self.suback.get(timeout=MQTT_TIMEOUT_S)

    def publish(self, topic: str, payload: bytes = b"{}") -> int:
        """Publish QoS 1 and return the PUBACK reason code (0 ok, 135 not authorized)."""
        info = self.client.publish(topic, payload, qos=1)
        mid, code = self.puback.get(timeout=MQTT_TIMEOUT_S)
        assert mid == info.mid
        return code

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def connects(identity: Identity, *, host: str, port: int, timeout: float = 1.5) -> bool:
    """Whether a client with `identity` gets a CONNACK success within `timeout`."""
    client = TlsClient(identity, host=host, port=port, client_id=f"{identity.name}-probe").start()
    try:
        return client.wait_connected(timeout)
    finally:
        client.stop()


def mosquitto_cli(identity: Identity, *, port: int) -> list[str]:
    """The TLS options for mosquitto_pub/mosquitto_sub."""
    return [
        "-h", "127.0.0.1", "-p", str(port),
        "--cafile", str(identity.ca), "--cert", str(identity.cert), "--key", str(identity.key),
    ]  # fmt: skip


def mosquitto_pub(
    identity: Identity, *, port: int, topic: str, payload: str = "{}"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mosquitto_pub", *mosquitto_cli(identity, port=port), "-q", "1", "-t", topic,
         "-m", payload],
        capture_output=True, text=True, timeout=15, check=False,
    )  # fmt: skip


def mosquitto_sub(
    identity: Identity, *, port: int, topics: list[str], count: int, wait_s: int
) -> subprocess.Popen[str]:
    """mosquitto_sub printing `topic payload` lines; exits after `count` messages or `wait_s`."""
    args = ["mosquitto_sub", *mosquitto_cli(identity, port=port), "-v", "-q", "1",
            "-C", str(count), "-W", str(wait_s)]  # fmt: skip
    for topic in topics:
        args += ["-t", topic]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@dataclass
class ServerFiles:
    """A certificate (leaf first, then the issuing CA) and its private key, as files."""

    cert: Path
    key: Path


class FleetCA:
    """The product's own CA (`fleet_server.pki`), made fresh in a temporary directory.

    Node-side tests (enrollment client, mqtts reconnection, flashing) need
    certificates without a running fleet server; they get them from the same
    code that issues them in the field (development root + issuing CA,
    `IssuingCa.issue_node` for CSRs, service certificates for servers), so a
    change to what the product issues is seen by those tests too. Each
    instance is a separate CA ("another CA" tests make a second one).
    """

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="nb-test-ca-"))
        self.paths = PkiPaths(self._dir / "pki")
        init_dev_pki(self.paths, passphrase=b"test-root-passphrase", now=utcnow())
        self.ca = IssuingCa(self.paths)

    @property
    def pem(self) -> str:
        """The chain a node trusts: issuing CA, then root."""
        return self.ca.chain_pem

    def sign_csr(self, csr_pem_text: str, *, lifetime: timedelta = timedelta(days=30)) -> str:
        """A node certificate for the CSR's CN (and serialNumber), as the server would issue."""
        csr = x509.load_pem_x509_csr(csr_pem_text.encode("ascii"))
        assert csr.is_signature_valid
        public = csr.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        cn = str(csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        serials = csr.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
        serial = str(serials[0].value) if serials else f"SN-{cn}"
        cert = self.ca.issue_node(
            key=public, node_id=cn, serial=serial, now=utcnow(),
            days=lifetime.total_seconds() / 86_400,
        )  # fmt: skip
        return cert_pem(cert).decode("ascii")

    def client_files(self, directory: Path, name: str) -> ServerFiles:
        """Key and client certificate with CN `name`, written as files."""
        return self._service(directory, name, hostnames=(), server=False, client=True)

    def server_files(self, directory: Path, name: str = "server") -> ServerFiles:
        """Key and server certificate for 127.0.0.1 and localhost, written as files."""
        return self._service(
            directory, name, hostnames=("127.0.0.1", "localhost"), server=True, client=False
        )

    def write_ca(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.pem, encoding="ascii")
        return path

    def _service(
        self,
        directory: Path,
        name: str,
        *,
        hostnames: tuple[str, ...],
        server: bool,
        client: bool,
    ) -> ServerFiles:
        key = new_key()
        cert = issue_service_certificate(
            key=key.public_key(), issuer_cert=self.ca.cert, issuer_key=self.ca.key,
            common_name=name, now=utcnow(), hostnames=hostnames, server=server, client=client,
            days=30,
        )  # fmt: skip
        directory.mkdir(parents=True, exist_ok=True)
        files = ServerFiles(directory / f"{name}.pem", directory / f"{name}.key")
        files.cert.write_bytes(cert_pem(cert) + cert_pem(self.ca.cert))
        files.key.write_bytes(key_pem(key))
        files.key.chmod(0o600)
        return files
