"""The fleet CA's rules, without a server: what is issued, what a CSR must prove, the CLI.

Certificates are checked with `cryptography` and, independently, with the
`openssl verify` command where it is installed.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_agent.console import main as nigehbaan
from fleet_server.models import utcnow
from fleet_server.pki import CsrInvalid, IssuingCa, PkiError, PkiPaths, init_dev_pki
from fleet_server.pki.ca import cert_pem, check_csr, load_key, parse_csr
from fleet_server.pki.store import load_root
from tests.support.pki import csr_pem, new_key

OPENSSL = shutil.which("openssl")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> IssuingCa:
    paths = PkiPaths(tmp_path_factory.mktemp("pki"))
    assert init_dev_pki(paths, passphrase=None, now=utcnow())
    assert not init_dev_pki(paths, passphrase=None, now=utcnow())  # idempotent
    return IssuingCa(paths)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_root_key_is_encrypted_and_private_keys_are_0600(ca: IssuingCa) -> None:
    root_dir = ca.paths.root
    passphrase = ca.paths.passphrase.read_bytes().strip()
    with pytest.raises(PkiError):
        load_key((root_dir / "root-ca.key").read_bytes())
    root, _ = load_root(root_dir, passphrase=passphrase)
    for key in ("root-ca.key", "issuing-ca.key", "root-ca.passphrase"):
        assert mode(root_dir / key) == 0o600
    issuing = ca.cert
    assert issuing.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    issuing.verify_directly_issued_by(root)
    assert (issuing.not_valid_after_utc - issuing.not_valid_before_utc).days >= 5 * 365 - 1
    assert (root.not_valid_after_utc - root.not_valid_before_utc).days >= 10 * 365 - 1


def test_a_node_certificate_says_who_the_node_is_and_nothing_from_the_csr(ca: IssuingCa) -> None:
    key = new_key()
    csr = parse_csr(csr_pem(key, cn="lhr-0042", serial="LHR-0042"))
    public = check_csr(csr, expected_cn="lhr-0042")

    cert = ca.issue_node(key=public, node_id="lhr-0042", serial="LHR-0042", now=utcnow(), days=30)

    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "lhr-0042"
    assert cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "LHR-0042"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert 29.9 < (cert.not_valid_after_utc - utcnow()).total_seconds() / 86400 <= 30
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    cert.verify_directly_issued_by(ca.cert)


@pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
def test_openssl_verifies_the_chain_and_sees_the_revocation(ca: IssuingCa, tmp_path: Path) -> None:
    key = new_key()
    cert = ca.issue_node(key=key.public_key(), node_id="lhr-0043", serial="S", now=utcnow(), days=1)
    pem = tmp_path / "node.pem"
    pem.write_bytes(cert_pem(cert))
    root = ca.paths.root / "root-ca.pem"
    base = [str(OPENSSL), "verify", "-CAfile", str(root), "-untrusted", str(ca.paths.issuing_cert)]
    assert subprocess.run([*base, str(pem)], capture_output=True, check=False).returncode == 0
    ca.write_crl(revoked=[(cert.serial_number, utcnow())], now=utcnow())
    checked = subprocess.run(
        [*base, "-crl_check", "-CRLfile", str(ca.paths.crl), str(pem)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode != 0
    assert "revoked" in checked.stdout + checked.stderr
    ca.write_crl(revoked=[], now=utcnow())


@pytest.mark.parametrize(
    ("pem", "why"),
    [
        ("garbage", "not a PEM"),
        (csr_pem(new_key(), cn="lhr-0044").replace("MI", "Mi", 1), ""),
        (csr_pem(ec.generate_private_key(ec.SECP384R1()), cn="lhr-0044"), "P-256"),
    ],
)
def test_bad_csrs_are_refused(pem: str, why: str) -> None:
    with pytest.raises(CsrInvalid, match=why or None):
        parse_csr(pem)


def test_a_csr_for_another_node_id_is_refused() -> None:
    csr = parse_csr(csr_pem(new_key(), cn="lhr-0045"))
    with pytest.raises(CsrInvalid, match="must be the node id"):
        check_csr(csr, expected_cn="lhr-0046")


def test_the_ca_commands_make_an_offline_root_and_an_online_issuing_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROOT_PASS", "correct horse battery staple")
    root_dir, data_dir = tmp_path / "usb", tmp_path / "server"
    args = ["--root-dir", str(root_dir), "--passphrase-env", "ROOT_PASS"]

    assert nigehbaan(["server", "ca", "init", *args]) == 0
    assert nigehbaan(["server", "ca", "init", *args]) == 1  # never overwrites a root
    assert (
        nigehbaan(["server", "ca", "issue-intermediate", *args, "--data-dir", str(data_dir)]) == 0
    )

    paths = PkiPaths(data_dir / "pki")
    assert paths.exists
    assert mode(paths.issuing_key) == 0o600
    assert len(x509.load_pem_x509_certificates(paths.chain.read_bytes())) == 2
    monkeypatch.setenv("ROOT_PASS", "wrong")
    assert (
        nigehbaan(["server", "ca", "issue-intermediate", *args, "--data-dir", str(data_dir)]) == 1
    )
    assert "Incorrect password" in capsys.readouterr().err


def test_init_pki_is_refused_outside_development(tmp_path: Path) -> None:
    code = nigehbaan(["server", "--env", "prod", "--init-pki", "--data-dir", str(tmp_path)])
    assert code == 2
