"""Face thresholds per watchlist category: measured from impostor scores, signed into the bundle.

`bench faces --impostors all` turns every different-person pair into a
false-accept measurement; the threshold at a false-accept rate is the
lowest one that lets at most that share of impostors through. The table
that came of it travels in each list's signed bundle, the node's voter
applies the list's threshold to that list's templates, and a node refuses a
bundle whose threshold no sane policy would choose. All on synthetic scores
and vectors: no photo of a person is read here.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from edge_agent.faces import FaceError, FaceMatcher, Template, TrackVoter, VoterConfig
from edge_agent.faces.matching import check_threshold
from edge_agent.watchlist import BundleRefused, WatchlistStore
from fleet_server.pki.store import PkiPaths, init_dev_pki
from fleet_server.settings import Settings
from fleet_server.watchlists.sealing import PlainTemplate, Recipient, seal_faces
from fleet_server.watchlists.service import face_threshold
from fleet_server.watchlists.signing import WatchlistSigner, sign_bundle
from proto.watchlist import (
    FACE_THRESHOLD_RANGE,
    FACE_THRESHOLDS,
    WatchlistBody,
    WatchlistFaces,
    signed_payload,
)
from simulators.bench_faces import (
    FacesBenchError,
    Pair,
    all_pairs,
    identities,
    impostor_figures,
    threshold_at_far,
)

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)
NODE = "lhr-face-0002"
MODEL_SHA = "cd" * 32


# --- the false-accept computation -------------------------------------------------------


def test_the_threshold_at_a_far_lets_through_at_most_that_share_of_impostors() -> None:
    impostors = [i / 10_000 for i in range(10_000)]  # 0.0000 .. 0.9999, evenly
    for far in (1e-2, 1e-3, 1e-4):
        threshold = threshold_at_far(impostors, far)
        assert threshold is not None
        accepted = sum(1 for s in impostors if s >= threshold)
        assert accepted == round(far * len(impostors))
        # one step lower would let one more impostor through
        assert sum(1 for s in impostors if s >= threshold - 1e-4) == accepted + 1
    assert threshold_at_far([], 1e-3) is None


def test_below_the_set_s_resolution_the_threshold_sits_just_above_the_highest_impostor() -> None:
    impostors = [0.1, 0.2, 0.35, 0.3]
    threshold = threshold_at_far(impostors, 1e-3)  # 1e-3 x 4 < 1: none may pass
    assert threshold is not None
    assert 0.35 < threshold < 0.3501


def test_impostor_mode_counts_every_pair_and_says_which_rates_it_could_measure() -> None:
    rng = np.random.default_rng(7)
    genuine = list(rng.uniform(0.45, 0.9, size=200))
    impostor = [*rng.uniform(-0.1, 0.3, size=1998), 0.41, 0.38]  # two bad tails
    scored = [(Pair("a", "b", True), s) for s in genuine] + [
        (Pair("a", "c", False), s) for s in impostor
    ]
    figures = impostor_figures(scored, category_thresholds={"wanted_person": 0.46, "x": 0.40})
    assert figures["genuine_pairs"] == 200
    assert figures["impostor_pairs"] == 2000
    assert figures["far_resolution"] == 0.0005
    assert figures["far_measured"] == {"0.01": True, "0.001": True, "0.0001": False}
    # at 1e-3 two of 2000 impostors may pass: the threshold is just above the third highest
    third = sorted(impostor)[-3]
    assert third < figures["threshold_at_far"]["0.001"] <= third + 1e-4
    # at 1e-4 none may: just above the 0.41 tail
    assert 0.41 < figures["threshold_at_far"]["0.0001"] <= 0.4101
    assert figures["tar_at_far"]["0.0001"] == 1.0
    assert figures["impostor_top"][:2] == [0.41, 0.38]
    assert figures["categories"]["x"]["false_accepts"] == 1
    assert figures["categories"]["wanted_person"]["false_accepts"] == 0
    curve = {row["threshold"]: row for row in figures["far_curve"]}
    assert curve[0.4]["false_accepts"] == 1
    assert curve[0.36]["false_accepts"] == 2
    assert curve[0.3]["threshold"] == 0.3
    assert curve[0.6]["threshold"] == 0.6


def test_identities_come_from_the_same_person_pairs_and_every_other_pair_is_an_impostor() -> None:
    pairs = [
        Pair("a1", "a2", True), Pair("a2", "a3", True), Pair("b1", "b2", True),
        Pair("a1", "b1", False), Pair("c1", "a3", False),
    ]  # fmt: skip
    ids = identities(pairs)
    assert ids["a1"] == ids["a3"] != ids["b2"]
    assert len(set(ids.values())) == 3  # a, b and c (seen only in a different pair)
    every = all_pairs(ids)
    assert len(every) == math.comb(6, 2)
    assert sum(1 for p in every if p.same) == 3 + 1  # a: 3 pairs, b: 1
    with pytest.raises(FacesBenchError, match="listed as different"):
        identities([*pairs, Pair("a1", "a3", False)])


# --- the table, the settings override and the range -------------------------------------


def test_the_shipped_table_is_inside_the_range_and_wanted_is_stricter_than_missing() -> None:
    low, high = FACE_THRESHOLD_RANGE
    assert all(low <= t <= high for t in FACE_THRESHOLDS.values())
    assert FACE_THRESHOLDS["wanted_person"] > FACE_THRESHOLDS["missing_child"]
    assert face_threshold("wanted_person") == FACE_THRESHOLDS["wanted_person"]
    assert face_threshold("missing_child", overrides={"missing_child": 0.37}) == 0.37
    assert face_threshold("no_such_category") == FACE_THRESHOLDS["other"]


def test_an_admin_overrides_a_category_threshold_through_the_settings() -> None:
    settings = Settings.from_env({"NIGEHBAAN_FACE_THRESHOLDS": "wanted_person=0.5, suspect=0.48"})
    assert settings.face_thresholds == {"wanted_person": 0.5, "suspect": 0.48}
    assert Settings.from_env({}).face_thresholds == {}
    for bad in ("wanted_person=0.05", "wanted_person=0.95", "wanted=0.5", "wanted_person"):
        with pytest.raises(ValueError, match=r"threshold|category"):
            Settings.from_env({"NIGEHBAAN_FACE_THRESHOLDS": bad})


def test_a_threshold_outside_the_range_is_refused_before_it_is_applied() -> None:
    assert check_threshold(0.46) == 0.46
    for bad in (0.05, 0.29, 0.81, -0.5):
        with pytest.raises(FaceError, match="outside"):
            check_threshold(bad)
        with pytest.raises(FaceError):
            Template("x", "wanted_person", np.ones(128, dtype=np.float32), threshold=bad)


# --- the bundle carries it, the node applies it -----------------------------------------


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


@pytest.fixture(scope="module")
def node_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v)


def at_cosine(template: np.ndarray, cosine: float, *, seed: int) -> np.ndarray:
    """A unit vector whose cosine with `template` is exactly `cosine`."""
    other = unit(seed)
    other = other - float(other @ template) * template
    other /= np.linalg.norm(other)
    return cosine * template + math.sqrt(1 - cosine**2) * other


def signed_list(
    signer: WatchlistSigner,
    key: ec.EllipticCurvePrivateKey,
    *,
    name: str,
    category: str,
    vector: np.ndarray,
    threshold: float | None,
) -> str:
    faces = seal_faces(
        watchlist_id=name, version=1,
        templates=[PlainTemplate(f"{name}-e1", vector.astype("<f4").tobytes())],
        recipients=[Recipient(NODE, key.public_key())],
        model="sface 2021dec", model_sha256=MODEL_SHA, dim=128,
    )  # fmt: skip
    if threshold is not None:
        faces = WatchlistFaces.model_validate({**faces.model_dump(), "threshold": threshold})
    body = WatchlistBody(
        watchlist_id=name, version=1, category=category, purpose="test",
        owner_agency="Punjab Police", issued_at=T0, expires_at=T0 + timedelta(days=7),
        persons=1, faces=faces,
    )  # fmt: skip
    return sign_bundle(body, signer=signer).model_dump_json()


def node_store(
    trusted: list[x509.Certificate], key: ec.EllipticCurvePrivateKey, directory: Path
) -> WatchlistStore:
    return WatchlistStore(
        trusted=trusted, directory=directory, node_id=NODE, node_key=key, model_sha256=MODEL_SHA
    )


def test_a_score_between_two_lists_thresholds_is_a_hit_for_one_and_not_the_other(
    signer: WatchlistSigner,
    trusted: list[x509.Certificate],
    node_key: ec.EllipticCurvePrivateKey,
    tmp_path: Path,
) -> None:
    store = node_store(trusted, node_key, tmp_path)
    wanted, missing = unit(1), unit(2)
    store.install(
        signed_list(signer, node_key, name="wanted-lhr", category="wanted_person",
                    vector=wanted, threshold=0.50),
        now=T0,
    )  # fmt: skip
    store.install(
        signed_list(signer, node_key, name="missing-lhr", category="missing_child",
                    vector=missing, threshold=0.36),
        now=T0,
    )  # fmt: skip
    held = {t.watchlist_id: t for t in store.templates()}
    assert held["wanted-lhr"].threshold == 0.50
    assert held["missing-lhr"].threshold == 0.36
    matcher = FaceMatcher(store.templates())
    # the node's own table would put both categories elsewhere: the bundles' values decide
    voter = TrackVoter(VoterConfig(min_frames=3, category_thresholds={}, default_threshold=0.7))
    hits = {}
    for frame in range(3):
        for track, template in (("t-wanted", wanted), ("t-missing", missing)):
            match = matcher.best(at_cosine(template, 0.43, seed=10 + frame))
            assert match is not None
            assert abs(match.score - 0.43) < 1e-4
            hit = voter.add(track, frame=frame, match=match, area=4000, quality=1.0)
            if hit is not None:
                hits[track] = hit
    assert set(hits) == {"t-missing"}
    assert hits["t-missing"].category == "missing_child"
    assert hits["t-missing"].watchlist_id == "missing-lhr"


@pytest.mark.parametrize("threshold", [0.05, 0.95])
def test_a_signed_bundle_with_a_threshold_outside_the_range_is_refused(
    signer: WatchlistSigner,
    trusted: list[x509.Certificate],
    node_key: ec.EllipticCurvePrivateKey,
    tmp_path: Path,
    threshold: float,
) -> None:
    store = node_store(trusted, node_key, tmp_path)
    raw = signed_list(signer, node_key, name="wanted-lhr", category="wanted_person",
                      vector=unit(1), threshold=threshold)  # fmt: skip
    with pytest.raises(BundleRefused) as refused:
        store.install(raw, now=T0)
    assert refused.value.reason == "threshold"
    assert store.refusals == {"threshold": 1}
    assert store.templates() == []
    assert not list(tmp_path.glob("*.json")), "a refused bundle is not kept"


def test_a_bundle_from_before_the_threshold_field_still_verifies_and_uses_the_node_s_table(
    signer: WatchlistSigner,
    trusted: list[x509.Certificate],
    node_key: ec.EllipticCurvePrivateKey,
    tmp_path: Path,
) -> None:
    raw = signed_list(signer, node_key, name="missing-old", category="missing_child",
                      vector=unit(3), threshold=None)  # fmt: skip
    assert "threshold" not in json.loads(raw)["body"]["faces"]
    body = WatchlistBody.model_validate(json.loads(raw)["body"])
    assert b"threshold" not in signed_payload(body)  # encodes as it was signed
    store = node_store(trusted, node_key, tmp_path)
    store.install(raw, now=T0)
    (template,) = store.templates()
    assert template.threshold is None
    match = FaceMatcher([template]).best(template.vector)
    assert match is not None
    assert VoterConfig().threshold_for(match) == FACE_THRESHOLDS["missing_child"]
