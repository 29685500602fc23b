"""Which node-signed claims hold: the certificate at capture time, revocation, the node named."""

from __future__ import annotations

from datetime import timedelta

from cryptography import x509

from edge_agent.evidence_upload import sign_claim
from fleet_server.evidence.verify import load_ca, verify_claim
from fleet_server.models import utcnow
from proto.evidence import EvidenceClaim
from tests.support.pki import FleetCA, csr_pem, new_key

NODE = "lhr-ev-claims"


def test_a_claim_signed_by_the_node_s_key_under_the_fleet_ca_holds() -> None:
    ca = FleetCA()
    key = new_key()
    cert = x509.load_pem_x509_certificate(ca.sign_csr(csr_pem(key, cn=NODE)).encode())
    trusted = load_ca((ca.paths.root / "root-ca.pem").read_bytes())  # the root alone
    claim = EvidenceClaim(
        sha256="b" * 64, size=10, data_class="plate_crop", node_id=NODE, captured_at=utcnow()
    )
    assert verify_claim(sign_claim(key, claim), [cert, ca.ca.cert], trusted=trusted) is None
    other = sign_claim(new_key(), claim)  # another key: refused
    assert "signature" in str(verify_claim(other, [cert, ca.ca.cert], trusted=trusted))


def test_revocation_counts_only_when_it_came_before_the_capture() -> None:
    ca = FleetCA()
    key = new_key()
    cert = x509.load_pem_x509_certificate(ca.sign_csr(csr_pem(key, cn=NODE)).encode())
    trusted = load_ca(ca.pem.encode())
    claim = EvidenceClaim(
        sha256="c" * 64, size=10, data_class="plate_crop", node_id=NODE, captured_at=utcnow()
    )
    signed = sign_claim(key, claim)
    chain = [cert, ca.ca.cert]
    later = {cert.serial_number: claim.captured_at + timedelta(hours=1)}
    earlier = {cert.serial_number: claim.captured_at - timedelta(hours=1)}
    assert verify_claim(signed, chain, trusted=trusted, revoked=later) is None
    assert "revoked" in str(verify_claim(signed, chain, trusted=trusted, revoked=earlier))


def test_the_certificate_must_name_the_node_be_valid_then_and_come_from_this_fleet() -> None:
    ca = FleetCA()
    key = new_key()
    cert = x509.load_pem_x509_certificate(ca.sign_csr(csr_pem(key, cn=NODE)).encode())
    trusted = load_ca(ca.pem.encode())
    chain = [cert, ca.ca.cert]
    now = utcnow()
    someone_else = EvidenceClaim(
        sha256="d" * 64, size=1, data_class="plate_crop", node_id="lhr-other", captured_at=now
    )
    assert "claim names" in str(verify_claim(sign_claim(key, someone_else), chain, trusted=trusted))
    before_issue = someone_else.model_copy(
        update={"node_id": NODE, "captured_at": now - timedelta(days=3)}
    )
    assert "not valid at" in str(
        verify_claim(sign_claim(key, before_issue), chain, trusted=trusted)
    )
    foreign = load_ca(FleetCA().pem.encode())
    ok = someone_else.model_copy(update={"node_id": NODE})
    why = verify_claim(sign_claim(key, ok), chain, trusted=foreign)
    assert "not issued under the trusted fleet CA" in str(why)
