"""The node side of provisioning: key store, CSR, bundle, enrollment client, renewal timing.

The enrollment client talks to a small local HTTPS fake that answers the way
docs/provisioning.md says the server does (200, 202 pending, 4xx reason
codes, 429 with Retry-After), signed by a throw-away CA; the real server is
exercised in tests/e2e/test_e2e_enrollment.py.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge_agent.config import load_config_file
from edge_agent.enroll import (
    BadEnrollmentData,
    EnrollmentClient,
    EnrollmentRefused,
    EnrollmentUnavailable,
    IdentityPaths,
    bundle_from_text,
    provision,
    renew_certificate,
)
from edge_agent.identity import (
    FileKeyStore,
    certificate_info,
    needs_renewal,
    node_id_from_serial,
    public_key_fingerprint,
)
from tests.support.enrollment import FakeEnrollmentServer, bundle_for, issued
from tests.support.pki import FleetCA

# ------------------------------------------------------------------ identity


def test_the_node_key_is_made_once_p256_pkcs8_and_readable_only_by_its_owner(
    tmp_path: Path,
) -> None:
    store = FileKeyStore(tmp_path / "identity" / "node.key")
    key = store.load_or_create()
    assert isinstance(key.curve, ec.SECP256R1)
    assert store.path.stat().st_mode & 0o777 == 0o600
    assert b"BEGIN PRIVATE KEY" in store.path.read_bytes()  # PKCS#8, unencrypted
    again = FileKeyStore(store.path)
    assert again.public_key_pem() == store.public_key_pem()


def test_a_csr_names_the_node_and_its_serial_and_is_signed_by_the_node_key(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "node.key")
    csr = x509.load_pem_x509_csr(store.sign_csr("lhr-0001", "10000000abcdef").encode())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "lhr-0001"
    assert csr.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "10000000abcdef"
    public = csr.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public.decode() == store.public_key_pem()
    assert public_key_fingerprint(store.public_key_pem()).startswith("sha256:")


def test_renewal_is_due_once_less_than_a_third_of_the_lifetime_is_left(
    ca: FleetCA, tmp_path: Path
) -> None:
    store = FileKeyStore(tmp_path / "node.key")
    info = certificate_info(
        ca.sign_csr(store.sign_csr("lhr-0001", "S1"), lifetime=timedelta(days=30))
    )
    start = info.not_before
    # The product CA back-dates not_before for clock skew: a third left is read
    # off the certificate's own validity, not the 30 days asked for.
    two_thirds = start + (info.not_after - start) * 2 / 3
    assert not needs_renewal(info, now=start + timedelta(days=19))
    assert not needs_renewal(info, now=two_thirds - timedelta(seconds=2))
    assert needs_renewal(info, now=two_thirds + timedelta(seconds=2))
    assert needs_renewal(info, now=info.not_after + timedelta(days=1))


def test_node_ids_are_derived_from_serials_the_way_the_server_derives_them() -> None:
    assert node_id_from_serial("SIM-000042") == "sim-000042"
    assert node_id_from_serial("Pi 4B:1000.abc") == "pi-4b-1000-abc"


# -------------------------------------------------------------------- bundle


def test_a_bundle_with_an_unknown_key_or_a_newer_version_is_refused(ca: FleetCA) -> None:
    good = {"server_url": "https://fleet.example:8443", "ca_chain_pem": ca.pem, "bundle_version": 1}
    assert bundle_from_text(json.dumps(good)).token is None
    with pytest.raises(BadEnrollmentData, match="wifi_password"):
        bundle_from_text(json.dumps({**good, "wifi_password": "x"}))
    with pytest.raises(BadEnrollmentData, match="bundle_version"):
        bundle_from_text(json.dumps({**good, "bundle_version": 2}))


def test_plain_http_enrollment_is_refused_unless_the_server_is_on_this_machine(ca: FleetCA) -> None:
    with pytest.raises(BadEnrollmentData, match="https"):
        EnrollmentClient("http://fleet.example:8080", ca_chain_pem=ca.pem)
    EnrollmentClient("http://127.0.0.1:8080", ca_chain_pem=None)


# -------------------------------------------------------------- enrollment


def test_first_boot_enrollment_stores_the_identity_and_writes_an_mqtts_config(
    fake_server: FakeEnrollmentServer, tmp_path: Path
) -> None:
    fake_server.answer = lambda m, p, b: (200, issued(fake_server.ca, b, node_id="lhr-0001"), {})
    data_dir = tmp_path / "node"
    result = provision(
        bundle_for(fake_server, node_id="lhr-0001"), data_dir=data_dir, serial="SIM-0001"
    )
    assert result.node_id == "lhr-0001"
    (method, path, body) = fake_server.requests[0]
    assert (method, path) == ("POST", "/api/v1/enroll")
    assert body["token"] == "nbet_secret"
    assert body["serial"] == "SIM-0001"
    assert body["site_id"] == "lahore-gulberg-site-0001"
    paths = IdentityPaths(data_dir)
    assert certificate_info(paths.certificate.read_bytes()).common_name == "lhr-0001"
    assert paths.ca_chain.read_text() == fake_server.ca.pem
    config = load_config_file(paths.config)
    assert config.mqtt.url == "mqtts://127.0.0.1:8883"
    assert (config.mqtt.cert_file, config.mqtt.key_file) == (paths.certificate, paths.key)
    assert config.identity.server_url == "https://127.0.0.1:8443"
    assert (config.node_id, config.serial, config.district) == (
        "lhr-0001",
        "SIM-0001",
        "lahore-gulberg",
    )
    kept = json.loads(paths.bundle_copy.read_text())
    assert kept["token"] is None  # the single-use secret does not stay on the card


def test_a_pending_enrollment_is_polled_with_growing_waits_until_accepted(
    fake_server: FakeEnrollmentServer, tmp_path: Path
) -> None:
    polls: list[str] = []
    csr: dict[str, Any] = {}

    def answer(method: str, path: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if method == "POST":
            csr.update(body)
            return 202, {"request_id": "req1", "reason": "pending_approval"}, {}
        polls.append(path)
        if len(polls) < 3:
            return 202, {"request_id": "req1", "reason": "pending_approval"}, {}
        return 200, issued(fake_server.ca, csr, node_id="sim-0001"), {}

    fake_server.answer = answer
    waits: list[float] = []
    client = EnrollmentClient(fake_server.url, ca_chain_pem=fake_server.ca.pem, sleep=waits.append)
    provision(
        bundle_for(fake_server, token=None), data_dir=tmp_path, serial="SIM-0001", client=client
    )
    assert polls == ["/api/v1/enroll/req1"] * 3
    assert waits == [5.0, 10.0, 20.0]


def test_a_refusal_names_the_reason_and_what_the_technician_should_do(
    fake_server: FakeEnrollmentServer, tmp_path: Path
) -> None:
    fake_server.answer = lambda m, p, b: (
        409, {"detail": {"reason": "token_used", "message": "token was used by lhr-0002"}}, {}
    )  # fmt: skip
    with pytest.raises(EnrollmentRefused) as refused:
        provision(bundle_for(fake_server), data_dir=tmp_path, serial="SIM-0001")
    assert refused.value.reason == "token_used"
    assert refused.value.status == 409
    assert "lhr-0002" in refused.value.message
    assert "make a new one" in refused.value.message
    assert not (tmp_path / "identity" / "node.pem").exists()
    assert not (tmp_path / "agent.toml").exists()


def test_rate_limiting_is_waited_out_as_the_server_asks(
    fake_server: FakeEnrollmentServer, tmp_path: Path
) -> None:
    answers = iter(
        [
            (
                429,
                {"detail": {"reason": "rate_limited", "message": "slow down"}},
                {"Retry-After": "2"},
            )
        ]
    )

    def answer(method: str, path: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        return next(answers, (200, issued(fake_server.ca, body, node_id="sim-0001"), {}))

    fake_server.answer = answer
    waits: list[float] = []
    client = EnrollmentClient(fake_server.url, ca_chain_pem=fake_server.ca.pem, sleep=waits.append)
    provision(bundle_for(fake_server), data_dir=tmp_path, serial="SIM-0001", client=client)
    assert len(waits) == 1
    assert 2.0 <= waits[0] <= 2.4


def test_a_server_whose_certificate_is_not_from_the_bundle_ca_is_not_trusted(
    fake_server: FakeEnrollmentServer, tmp_path: Path
) -> None:
    other = FleetCA()
    bundle = bundle_for(fake_server).model_copy(update={"ca_chain_pem": other.pem})
    with pytest.raises(EnrollmentUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        provision(bundle, data_dir=tmp_path, serial="SIM-0001")
    assert fake_server.requests == []


def test_a_certificate_for_another_key_is_refused(
    fake_server: FakeEnrollmentServer, tmp_path: Path
) -> None:
    stranger = FileKeyStore(tmp_path / "stranger.key")
    wrong = stranger.sign_csr("sim-0001", "SIM-0001")
    fake_server.answer = lambda m, p, b: (
        200,
        issued(fake_server.ca, {"csr_pem": wrong}, node_id="sim-0001"),
        {},
    )
    with pytest.raises(BadEnrollmentData, match="another key"):
        provision(bundle_for(fake_server), data_dir=tmp_path / "node", serial="SIM-0001")


def test_renewal_keeps_the_key_and_swaps_the_certificate(
    fake_server: FakeEnrollmentServer, tmp_path: Path
) -> None:
    fake_server.answer = lambda m, p, b: (200, issued(fake_server.ca, b, node_id="sim-0001"), {})
    data_dir = tmp_path / "node"
    provision(bundle_for(fake_server), data_dir=data_dir, serial="SIM-0001")
    config = load_config_file(data_dir / "agent.toml")
    key_before = (data_dir / "identity" / "node.key").read_bytes()
    first_pem = (data_dir / "identity" / "node.pem").read_bytes()
    first = certificate_info(first_pem)
    renewed_client = EnrollmentClient(fake_server.url, ca_chain_pem=fake_server.ca.pem)
    renew_certificate(
        mqtt=config.mqtt, identity=config.identity, serial="SIM-0001", client=renewed_client
    )
    method, path, body = fake_server.requests[-1]
    assert (method, path) == ("POST", "/api/v1/enroll/renew")
    assert certificate_info(body["certificate_pem"]) == first
    second = certificate_info((data_dir / "identity" / "node.pem").read_bytes())
    assert second.public_key_pem == first.public_key_pem
    assert (data_dir / "identity" / "node.pem").read_bytes() != first_pem
    assert (data_dir / "identity" / "node.key").read_bytes() == key_before
    assert datetime.now(timezone.utc) < second.not_after
