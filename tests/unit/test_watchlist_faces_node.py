"""Face templates reach a node sealed for it, open only in its memory, and never touch its disk.

The server seals each person's template under a key made for the bundle
and wraps that key for every node in scope (ECDH P-256 with the node
certificate's key, HKDF, AES-GCM); the node opens them with its own key.
A bundle sealed for another node, a ciphertext that does not decrypt, or
templates made by another model are refused with a stable reason, like a
bad signature; a ciphertext changed after signing fails the signature.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge_agent.watchlist import BundleRefused, WatchlistStore, key_sha256
from fleet_server.pki.store import PkiPaths, init_dev_pki
from fleet_server.watchlists.sealing import PlainTemplate, Recipient, seal_faces
from fleet_server.watchlists.signing import WatchlistSigner, sign_bundle
from proto.watchlist import WatchlistBody, WatchlistFaces

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)
NODE = "lhr-face-0001"
MODEL_SHA = "ab" * 32


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    paths = PkiPaths(tmp_path_factory.mktemp("pki"))
    init_dev_pki(paths, passphrase=b"test-passphrase", now=T0)
    return paths


@pytest.fixture(scope="module")
def signer(pki: PkiPaths) -> WatchlistSigner:
    return WatchlistSigner.from_pki(pki, now=T0)


@pytest.fixture(scope="module")
def trusted(pki: PkiPaths) -> list[x509.Certificate]:
    return list(x509.load_pem_x509_certificates(pki.chain.read_bytes()))


def vectors(n: int, *, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        v = rng.normal(size=128).astype("<f4")
        out.append(v / np.linalg.norm(v))
    return out


def faces_for(
    recipients: list[tuple[str, ec.EllipticCurvePrivateKey]],
    vecs: list[np.ndarray],
    *,
    version: int = 2,
    model_sha256: str = MODEL_SHA,
) -> WatchlistFaces:
    return seal_faces(
        watchlist_id="wanted-lhr", version=version,
        templates=[PlainTemplate(f"e-{i}", v.astype("<f4").tobytes()) for i, v in enumerate(vecs)],
        recipients=[Recipient(node_id, key.public_key()) for node_id, key in recipients],
        model="sface 2021dec", model_sha256=model_sha256, dim=128,
    )  # fmt: skip


def bundle(signer: WatchlistSigner, faces: WatchlistFaces, *, version: int = 2) -> str:
    body = WatchlistBody(
        watchlist_id="wanted-lhr", version=version, category="wanted_person",
        purpose="wanted persons, Lahore", owner_agency="Punjab Police", issued_at=T0,
        expires_at=T0 + timedelta(days=7), persons=len(faces.templates), faces=faces,
    )  # fmt: skip
    return sign_bundle(body, signer=signer).model_dump_json()


def store_for(
    trusted: list[x509.Certificate], key: ec.EllipticCurvePrivateKey | None, directory: Path
) -> WatchlistStore:
    return WatchlistStore(
        trusted=trusted, directory=directory, node_id=NODE, node_key=key, model_sha256=MODEL_SHA
    )


def test_the_templates_open_in_memory_with_the_node_s_key(
    signer: WatchlistSigner, trusted: list[x509.Certificate], tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    vecs = vectors(3)
    store = store_for(trusted, key, tmp_path)
    store.install(bundle(signer, faces_for([("lhr-other-9", other), (NODE, key)], vecs)), now=T0)
    held = store.templates()
    assert [t.entry_id for t in held] == ["e-0", "e-1", "e-2"]
    assert {(t.watchlist_id, t.version, t.category) for t in held} == {
        ("wanted-lhr", 2, "wanted_person")
    }
    for template, vec in zip(held, vecs, strict=True):
        assert np.allclose(template.vector, vec)
    assert store.generation == 1
    # a restart opens them again from the bundle kept on disk
    again = store_for(trusted, key, tmp_path)
    assert again.load(now=T0 + timedelta(hours=1)) == []
    assert len(again.templates()) == 3


def test_a_bundle_sealed_for_another_node_is_refused(
    signer: WatchlistSigner, trusted: list[x509.Certificate], tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    store = store_for(trusted, key, tmp_path)
    with pytest.raises(BundleRefused) as refused:
        store.install(bundle(signer, faces_for([("lhr-other-9", other)], vectors(1))), now=T0)
    assert refused.value.reason == "recipient"
    # its own node id, but wrapped for a key the node does not hold (a renewed certificate)
    with pytest.raises(BundleRefused) as refused:
        store.install(bundle(signer, faces_for([(NODE, other)], vectors(1))), now=T0)
    assert refused.value.reason == "recipient"
    assert store.versions() == {}
    assert store.templates() == []
    # a node with no key at all opens nothing
    with pytest.raises(BundleRefused) as refused:
        store_for(trusted, None, tmp_path).install(
            bundle(signer, faces_for([(NODE, key)], vectors(1))), now=T0
        )
    assert refused.value.reason == "recipient"


def test_a_tampered_ciphertext_is_refused(
    signer: WatchlistSigner, trusted: list[x509.Certificate], tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    good = faces_for([(NODE, key)], vectors(2))
    store = store_for(trusted, key, tmp_path)
    # changed after signing: the signature no longer matches
    doc = json.loads(bundle(signer, good))
    ct = bytearray(base64.b64decode(doc["body"]["faces"]["templates"][0]["ciphertext"]))
    ct[5] ^= 0x01
    doc["body"]["faces"]["templates"][0]["ciphertext"] = base64.b64encode(ct).decode()
    with pytest.raises(BundleRefused) as refused:
        store.install(json.dumps(doc), now=T0)
    assert refused.value.reason == "signature"
    # signed over a ciphertext that does not decrypt (a server bug, a swapped entry): refused
    swapped = good.model_copy(
        update={
            "templates": [
                good.templates[0].model_copy(update={"entry_id": good.templates[1].entry_id}),
                good.templates[1],
            ]
        }
    )
    with pytest.raises(BundleRefused) as refused:
        store.install(bundle(signer, swapped), now=T0)
    assert refused.value.reason == "decrypt"
    flipped = good.model_copy(
        update={
            "templates": [
                good.templates[0].model_copy(update={"ciphertext": good.templates[1].ciphertext})
            ]
        }
    )
    with pytest.raises(BundleRefused) as refused:
        store.install(bundle(signer, flipped), now=T0)
    assert refused.value.reason == "decrypt"
    assert store.templates() == []
    assert store.refusals == {"signature": 1, "decrypt": 2}


def test_templates_made_by_another_model_are_refused(
    signer: WatchlistSigner, trusted: list[x509.Certificate], tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    faces = faces_for([(NODE, key)], vectors(1), model_sha256="cd" * 32)
    with pytest.raises(BundleRefused) as refused:
        store_for(trusted, key, tmp_path).install(bundle(signer, faces), now=T0)
    assert refused.value.reason == "model"


def _needles(vec: np.ndarray) -> list[bytes]:
    raw = vec.astype("<f4").tobytes()
    as_text = [f"{float(x):.6f}"[:8].encode() for x in vec[:4]]
    return [
        raw[:32],
        base64.b64encode(raw)[:32],
        raw.hex().encode()[:32],
        vec.astype("<f8").tobytes()[:32],
        *as_text,
    ]


def test_no_plaintext_template_is_on_the_node_s_disk(
    signer: WatchlistSigner, trusted: list[x509.Certificate], tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    vecs = vectors(4, seed=9)
    data_dir = tmp_path / "node-data"
    store = store_for(trusted, key, data_dir / "watchlists")
    store.install(bundle(signer, faces_for([(NODE, key)], vecs)), now=T0)
    assert len(store.templates()) == 4  # open in memory
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert files, "the signed bundle is kept on disk"
    for path in files:
        content = path.read_bytes()
        for vec in vecs:
            for needle in _needles(vec):
                assert needle not in content, f"{path.name} holds a template in plaintext"
    # and the needles are real: the plaintext itself would have been found
    plain = json.dumps([float(x) for x in vecs[0]]).encode() + vecs[0].astype("<f4").tobytes()
    assert all(n in plain for n in _needles(vecs[0])[:1])


def test_the_node_key_fingerprint_is_the_server_s(tmp_path: Path) -> None:
    from fleet_server.pki.ca import key_fingerprint

    key = ec.generate_private_key(ec.SECP256R1())
    assert key_sha256(key) == key_fingerprint(key.public_key())
    assert key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_where_faces_are_not_allowed_the_templates_are_never_opened(
    signer: WatchlistSigner, trusted: list[x509.Certificate], tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    store = WatchlistStore(
        trusted=trusted, directory=tmp_path, node_id=NODE, node_key=key, model_sha256=MODEL_SHA,
        faces_allowed=False,
    )  # fmt: skip
    # sealed for another node: no refusal, because nothing is opened at all
    store.install(bundle(signer, faces_for([("lhr-other-9", other)], vectors(2))), now=T0)
    assert store.versions() == {"wanted-lhr": 2}
    assert store.templates() == []
    assert store.generation == 0
