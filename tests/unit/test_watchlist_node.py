"""The node uses a watchlist only after checking it, and matches plates exact-first.

A bundle signed by the server's watchlist signer (issued by the fleet CA the
node trusts) is held; an unsigned, tampered, expired, older-version,
foreign-CA or wrong-certificate bundle is refused with a stable reason and
the list held before stays in force.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509

from edge_agent.watchlist import BundleRefused, WatchlistStore, hit_builder, verify_bundle
from fleet_server.pki.store import PkiPaths, init_dev_pki
from fleet_server.watchlists.signing import WatchlistSigner, sign_bundle
from proto.messages import PlateEvent, WatchlistHitEvent
from proto.watchlist import WatchlistBody, WatchlistPlate

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)


def _pki(root: Path) -> PkiPaths:
    paths = PkiPaths(root)
    init_dev_pki(paths, passphrase=b"test-passphrase", now=T0)
    return paths


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    return _pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def signer(pki: PkiPaths) -> WatchlistSigner:
    return WatchlistSigner.from_pki(pki, now=T0)


@pytest.fixture(scope="module")
def trusted(pki: PkiPaths) -> list[x509.Certificate]:
    return list(x509.load_pem_x509_certificates(pki.chain.read_bytes()))


def body(
    version: int = 3, *, expires: timedelta = timedelta(days=7), **kw: object
) -> WatchlistBody:
    fields: dict[str, object] = {
        "watchlist_id": "wl-stolen-lhr", "version": version, "category": "stolen_vehicle",
        "purpose": "stolen vehicles, Lahore", "owner_agency": "Punjab Police",
        "issued_at": T0, "expires_at": T0 + expires,
        "plates": [
            WatchlistPlate(entry_id="e-1", key="LEA1234", note="white Corolla"),
            WatchlistPlate(entry_id="e-2", key="KHI8O01"),
        ],
    }  # fmt: skip
    fields.update(kw)
    return WatchlistBody.model_validate(fields)


def signed(signer: WatchlistSigner, b: WatchlistBody) -> str:
    return sign_bundle(b, signer=signer).model_dump_json()


def test_a_signed_bundle_is_held_and_reported(
    signer: WatchlistSigner, trusted: list[x509.Certificate], tmp_path: Path
) -> None:
    store = WatchlistStore(trusted=trusted, directory=tmp_path)
    held = store.install(signed(signer, body()), now=T0 + timedelta(hours=1))
    assert held.version == 3
    assert store.versions() == {"wl-stolen-lhr": 3}
    # kept on disk as signed, and verified again on the next start
    again = WatchlistStore(trusted=trusted, directory=tmp_path)
    assert again.load(now=T0 + timedelta(hours=2)) == []
    assert again.versions() == {"wl-stolen-lhr": 3}


def test_an_unsigned_bundle_is_refused(
    signer: WatchlistSigner, trusted: list[x509.Certificate]
) -> None:
    raw = json.dumps({"body": body().model_dump(mode="json")})
    store = WatchlistStore(trusted=trusted)
    with pytest.raises(BundleRefused) as refused:
        store.install(raw, now=T0)
    assert refused.value.reason == "format"
    assert store.refusals == {"format": 1}
    assert store.versions() == {}


def test_a_tampered_bundle_is_refused_and_the_held_list_stays(
    signer: WatchlistSigner, trusted: list[x509.Certificate]
) -> None:
    store = WatchlistStore(trusted=trusted)
    store.install(signed(signer, body(3)), now=T0)
    doc = json.loads(signed(signer, body(4)))
    doc["body"]["plates"].append({"entry_id": "e-9", "key": "ABC123"})  # slipped in
    with pytest.raises(BundleRefused) as refused:
        store.install(json.dumps(doc), now=T0)
    assert refused.value.reason == "signature"
    assert store.versions() == {"wl-stolen-lhr": 3}
    assert store.match_plate("ABC123") == []
    # a signature that is not even base64 is the same refusal
    doc = json.loads(signed(signer, body(4)))
    doc["signature"] = "not base64!"
    with pytest.raises(BundleRefused, match="signature"):
        store.install(json.dumps(doc), now=T0)


def test_a_bundle_signed_by_another_ca_or_a_non_signer_is_refused(
    signer: WatchlistSigner, trusted: list[x509.Certificate], tmp_path: Path
) -> None:
    rogue = WatchlistSigner.from_pki(_pki(tmp_path / "rogue"), now=T0)
    with pytest.raises(BundleRefused) as refused:
        verify_bundle(signed(rogue, body()), trusted=trusted, now=T0)
    assert refused.value.reason == "signer"
    assert "fleet CA" in refused.value.detail
    # the issuing CA's own certificate is not a watchlist signer
    doc = json.loads(signed(signer, body()))
    doc["signer_pem"] = doc["signer_pem"].split("-----END CERTIFICATE-----\n", 1)[1] * 2
    with pytest.raises(BundleRefused, match="signer"):
        verify_bundle(json.dumps(doc), trusted=trusted, now=T0)


def test_an_expired_bundle_is_refused(
    signer: WatchlistSigner, trusted: list[x509.Certificate]
) -> None:
    raw = signed(signer, body(expires=timedelta(hours=1)))
    with pytest.raises(BundleRefused) as refused:
        verify_bundle(raw, trusted=trusted, now=T0 + timedelta(hours=2))
    assert refused.value.reason == "expired"


def test_an_older_or_same_version_is_refused(
    signer: WatchlistSigner, trusted: list[x509.Certificate]
) -> None:
    store = WatchlistStore(trusted=trusted)
    store.install(signed(signer, body(5)), now=T0)
    for older in (5, 4):
        with pytest.raises(BundleRefused) as refused:
            store.install(signed(signer, body(older)), now=T0)
        assert refused.value.reason == "version"
    assert store.install(signed(signer, body(6)), now=T0).version == 6


def test_a_bundle_scoped_elsewhere_is_refused(
    signer: WatchlistSigner, trusted: list[x509.Certificate]
) -> None:
    raw = signed(signer, body(districts=["karachi-south"]))
    with pytest.raises(BundleRefused, match="scope"):
        verify_bundle(raw, trusted=trusted, now=T0, district="lahore")
    assert verify_bundle(raw, trusted=trusted, now=T0, district="karachi-south")


def test_plates_match_exact_first_then_within_one_lookalike(
    signer: WatchlistSigner, trusted: list[x509.Certificate]
) -> None:
    store = WatchlistStore(trusted=trusted)
    store.install(signed(signer, body()), now=T0)
    [exact] = store.match_plate("lea-1234")
    assert (exact.entry_id, exact.match, exact.listed) == ("e-1", "exact", "LEA1234")
    [near] = store.match_plate("LEAI234")  # I read for 1
    assert (near.entry_id, near.match, near.listed) == ("e-1", "confusable", "LEA1234")
    [near] = store.match_plate("KHI8001")  # 0 read for the listed O
    assert (near.entry_id, near.match) == ("e-2", "confusable")
    assert store.match_plate("LEAI23A") == []  # two differences, one not a look-alike
    assert store.match_plate("LEX1234") == []  # X is no look-alike of A
    assert store.match_plate("LEA1234", now=T0 + timedelta(days=8)) == []  # expired


def test_a_hit_event_carries_the_pass_and_the_entry(
    signer: WatchlistSigner, trusted: list[x509.Certificate]
) -> None:
    store = WatchlistStore(trusted=trusted)
    store.install(signed(signer, body()), now=T0)
    plate = PlateEvent(
        node_id="lhr-gulberg-0042", ts=T0, event_id="01JD0Q5Z8M3K7T2W9X4Y6V1R0N", seq=7,
        camera_id="cam-north", track_id="t-1", plate="LEA-I234", confidence=0.9, frames=6,
        canonical="LEAI234",
    )  # fmt: skip
    [match] = store.match_plate(plate.canonical or plate.plate)
    hit = hit_builder(plate, match, source_event_id=plate.event_id)("01JD0Q5Z8M3K7T2W9X4Y6V1R0P", 8)
    assert isinstance(hit, WatchlistHitEvent)
    assert (hit.plate, hit.listed, hit.match, hit.watchlist_version) == (
        "LEAI234", "LEA1234", "confusable", 3,
    )  # fmt: skip
    assert hit.source_event_id == plate.event_id


def test_signature_bytes_are_base64_der(signer: WatchlistSigner) -> None:
    sig = sign_bundle(body(), signer=signer).signature
    assert base64.b64decode(sig, validate=True)[0] == 0x30  # DER SEQUENCE


def test_a_bundle_edited_on_the_node_s_disk_is_refused_at_the_next_start(
    signer: WatchlistSigner, trusted: list[x509.Certificate], tmp_path: Path
) -> None:
    WatchlistStore(trusted=trusted, directory=tmp_path).install(signed(signer, body()), now=T0)
    kept = tmp_path / "wl-stolen-lhr.json"
    kept.write_text(kept.read_text().replace("LEA1234", "LEA1235"))
    again = WatchlistStore(trusted=trusted, directory=tmp_path)
    assert again.load(now=T0) == ["wl-stolen-lhr"]
    assert again.versions() == {}
    assert again.refusals == {"signature": 1}


def test_a_node_with_cameras_and_a_fleet_ca_holds_watchlists_and_one_without_does_not(
    pki: PkiPaths, tmp_path: Path
) -> None:
    from edge_agent.camera.pipeline import CameraPipeline
    from edge_agent.config import config_from_dict
    from edge_agent.memory import memory_transport
    from edge_agent.node import build_node
    from edge_agent.watchlist import WatchlistComponent
    from hardware import ManualClock, SimBackend

    def node(name: str, **extra: object) -> object:
        config = config_from_dict(
            {
                "node_id": name, "serial": "SN-WL", "data_dir": str(tmp_path / name),
                "hardware": {"type": "sim"}, "cameras": [{"type": "sim", "id": "gate"}],
                "district": "lahore", **extra,
            }
        )  # fmt: skip
        clock = ManualClock(start=0.0)
        return build_node(
            config, backend=SimBackend(clock=clock), transport_factory=memory_transport(),
            renewal=False,
        )  # fmt: skip

    with_ca = node("lhr-wl-0101", mqtt={"ca_file": str(pki.chain)})
    component = with_ca.component("watchlist")  # type: ignore[attr-defined]
    pipeline = with_ca.component("camera")  # type: ignore[attr-defined]
    assert isinstance(component, WatchlistComponent)
    assert isinstance(pipeline, CameraPipeline)
    assert pipeline.watchlists is component.store
    assert component.store.district == "lahore"
    without = node("lhr-wl-0102")
    assert without.component("camera").watchlists is None  # type: ignore[attr-defined]
