"""The attack suite: every attack on an update is refused with a reason and nothing is applied.

Against the in-memory repository simulator (python-tuf's own testing idea): the node's
`UpdateClient` cannot tell it from HTTPS. Each test plays one attacker move.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import MetaFile  # type: ignore[attr-defined]

from ota.artifacts import ArtifactKind, ArtifactManifest, build_artifact
from ota.errors import TransportError, TrustError, TrustReason
from ota.memory import SimulatedRepository
from ota.repository import Expiry
from ota.trust import Offer, UpdateClient, check_version

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def _app(tmp_path: Path, version: str, *, size: int = 100_000) -> tuple[bytes, ArtifactManifest]:
    src = tmp_path / f"src-{version}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "agent.py").write_text(f"VERSION = {version!r}\n" + "#" * size)
    return build_artifact(
        src, kind=ArtifactKind.APP, name="agent", version=version, hardware=["sim"]
    )


@pytest.fixture
def sim(tmp_path: Path) -> SimulatedRepository:
    repo = SimulatedRepository(tmp_path / "repo", clock=lambda: NOW)
    blob, manifest = _app(tmp_path, "1.0.0")
    repo.repo.add_artifact(blob)
    repo.repo.assign("district-7", manifest, campaign_id="c-1")
    repo.repo.assign("district-9", manifest, campaign_id="c-1")
    repo.publish()
    return repo


def _client(
    sim: SimulatedRepository,
    tmp_path: Path,
    *,
    group: str = "district-7",
    clock: datetime = NOW,
    name: str = "node",
) -> UpdateClient:
    options: dict[str, Any] = sim.client_options()
    return UpdateClient(
        cache_dir=tmp_path / name, group=group, hardware="sim", clock=lambda: clock, **options
    )


def _nothing_applied(client: UpdateClient) -> bool:
    downloads = client.cache_dir / "downloads"
    return not downloads.exists() or not [
        p for p in downloads.iterdir() if not p.name.startswith(".")
    ]


def _refused(
    client: UpdateClient, reason: TrustReason, *, download: Offer | None = None
) -> TrustError:
    def attempt() -> object:
        return client.check(ArtifactKind.APP) if download is None else client.download(download)

    with pytest.raises(TrustError) as caught:
        attempt()
    assert caught.value.trust_reason is reason, caught.value
    assert _nothing_applied(client)
    return caught.value


def test_an_honest_update_is_offered_and_downloads_verified(
    sim: SimulatedRepository,
    tmp_path: Path,
) -> None:
    client = _client(sim, tmp_path)
    offer = client.check(ArtifactKind.APP)
    assert offer is not None
    assert (offer.version, offer.campaign, offer.target) == ("1.0.0", "c-1", "app/agent-1.0.0.tar")
    got = client.download(offer)
    assert got.path.read_bytes() == sim.repo.target_file(offer.target).read_bytes()
    assert not got.via_delta


def test_a_bad_signature_on_the_timestamp_is_refused(
    sim: SimulatedRepository,
    tmp_path: Path,
) -> None:
    url = next(u for u in sim.transport.files if u.endswith("/timestamp.json"))
    doc = json.loads(sim.transport.files[url])
    doc["signed"]["expires"] = "2030-01-01T00:00:00Z"
    sim.transport.files[url] = json.dumps(doc).encode()
    error = _refused(_client(sim, tmp_path), TrustReason.SIGNATURE)
    assert error.role == "timestamp"


def test_a_new_root_with_too_few_signatures_for_the_threshold_is_refused(
    sim: SimulatedRepository,
    tmp_path: Path,
) -> None:
    # One of the three root keys alone (threshold 2) signs a root that adds an attacker key.
    from ota.keys import generate_signer

    sim.repo.ceremony_root(
        signers=[sim.root_signers[0]], add=[("root", generate_signer().public_key)]
    )
    sim.sync()
    error = _refused(_client(sim, tmp_path), TrustReason.THRESHOLD)
    assert error.role == "root"


def test_a_root_rotated_with_the_threshold_of_old_and_new_keys_is_followed(
    sim: SimulatedRepository,
    tmp_path: Path,
) -> None:
    from ota.keys import generate_signer

    client = _client(sim, tmp_path)
    assert client.check(ArtifactKind.APP) is not None
    new_keys = [generate_signer() for _ in range(3)]
    # Ceremony 1: new keys added beside the old, signed by two old and all new keys.
    sim.repo.ceremony_root(
        signers=sim.root_signers[:2] + new_keys,
        add=[("root", k.public_key) for k in new_keys],
        root_threshold=2,
    )
    # Ceremony 2: old keys revoked, signed by the new keys (and two old for the old root).
    sim.repo.ceremony_root(
        signers=sim.root_signers[:2] + new_keys[:2],
        revoke=[("root", k.public_key.keyid) for k in sim.root_signers],
    )
    sim.sync()
    later = _client(sim, tmp_path)  # same cache: a node that slept through both ceremonies
    assert later.check(ArtifactKind.APP) is not None
    fresh = _client(sim, tmp_path, name="fresh")  # provisioned with root v1, walks the chain
    assert fresh.check(ArtifactKind.APP) is not None


def test_expired_snapshot_metadata_is_refused_with_the_clock_evidence(tmp_path: Path) -> None:
    sim = SimulatedRepository(
        tmp_path / "repo",
        clock=lambda: NOW - timedelta(days=2),
        expiry=Expiry(snapshot=timedelta(days=1), timestamp=timedelta(days=10)),
    )
    error = _refused(_client(sim, tmp_path), TrustReason.EXPIRED)
    assert error.role == "snapshot"
    assert error.evidence["node_time"] == NOW.isoformat()


def test_rollback_to_older_metadata_is_refused(sim: SimulatedRepository, tmp_path: Path) -> None:
    old_files = dict(sim.transport.files)
    current = sim.repo.newest(ArtifactKind.APP, "agent")
    assert current is not None
    sim.repo.assign("district-7", current, campaign_id="c-2")
    sim.publish()
    client = _client(sim, tmp_path)
    offer = client.check(ArtifactKind.APP)
    assert offer is not None
    assert offer.campaign == "c-2"
    sim.transport.files = old_files  # the attacker serves yesterday's repository
    error = _refused(client, TrustReason.ROLLBACK)
    assert "timestamp" in error.message


def test_a_frozen_timestamp_is_refused_once_it_expires(
    sim: SimulatedRepository,
    tmp_path: Path,
) -> None:
    assert _client(sim, tmp_path).check(ArtifactKind.APP) is not None
    # The attacker keeps serving the same (validly signed) timestamp; the node's clock moves on.
    error = _refused(_client(sim, tmp_path, clock=NOW + timedelta(days=2)), TrustReason.FREEZE)
    assert error.role == "timestamp"


def test_a_command_for_another_group_is_refused(sim: SimulatedRepository, tmp_path: Path) -> None:
    client = _client(sim, tmp_path)
    with pytest.raises(TrustError) as caught:
        client.check(ArtifactKind.APP, expect_group="district-9")
    assert caught.value.trust_reason is TrustReason.MIX_AND_MATCH


def test_another_groups_valid_metadata_in_place_of_ours_is_refused(
    sim: SimulatedRepository,
    tmp_path: Path,
) -> None:
    ours = next(u for u in sim.transport.files if u.endswith(".group-district-7.json"))
    theirs = next(u for u in sim.transport.files if u.endswith(".group-district-9.json"))
    sim.transport.files[ours] = sim.transport.files[theirs]
    _refused(_client(sim, tmp_path), TrustReason.MIX_AND_MATCH)


def test_endless_data_is_cut_at_the_declared_length(
    sim: SimulatedRepository,
    tmp_path: Path,
) -> None:
    client = _client(sim, tmp_path)
    offer = client.check(ArtifactKind.APP)
    assert offer is not None
    sim.transport.endless.add(".agent-1.0.0.tar")
    _refused(client, TrustReason.LENGTH, download=offer)


def test_endless_metadata_is_cut_at_the_configured_limit(
    sim: SimulatedRepository,
    tmp_path: Path,
) -> None:
    sim.transport.endless.add("/timestamp.json")
    _refused(_client(sim, tmp_path), TrustReason.LENGTH)


def test_an_artifact_with_the_wrong_hash_is_refused_and_not_kept(
    sim: SimulatedRepository,
    tmp_path: Path,
) -> None:
    client = _client(sim, tmp_path)
    offer = client.check(ArtifactKind.APP)
    assert offer is not None
    url = next(u for u in sim.transport.files if u.endswith(".agent-1.0.0.tar"))
    data = bytearray(sim.transport.files[url])
    data[-10] ^= 0xFF
    sim.transport.files[url] = bytes(data)
    _refused(client, TrustReason.HASH, download=offer)
    assert not list((client.cache_dir / "partial").glob("*.part"))


def test_a_cut_download_resumes_with_range_and_verifies_the_whole(
    sim: SimulatedRepository,
    tmp_path: Path,
) -> None:
    client = _client(sim, tmp_path)
    offer = client.check(ArtifactKind.APP)
    assert offer is not None
    url = next(u for u in sim.transport.files if u.endswith(".agent-1.0.0.tar"))
    sim.transport.cut_after[url] = 40_000
    with pytest.raises(TransportError):
        client.download(offer)
    assert _nothing_applied(client)
    got = client.download(offer)
    assert (url, 40_000) in sim.transport.requests
    assert got.path.read_bytes() == sim.transport.files[url]
    assert got.bytes_transferred == offer.length - 40_000


def test_a_resumed_download_whose_first_part_was_tampered_is_refused(
    sim: SimulatedRepository,
    tmp_path: Path,
) -> None:
    client = _client(sim, tmp_path)
    offer = client.check(ArtifactKind.APP)
    assert offer is not None
    url = next(u for u in sim.transport.files if u.endswith(".agent-1.0.0.tar"))
    sim.transport.cut_after[url] = 40_000
    with pytest.raises(TransportError):
        client.download(offer)
    part = next((client.cache_dir / "partial").glob("*.part"))
    part.write_bytes(b"X" * part.stat().st_size)
    _refused(client, TrustReason.HASH, download=offer)
    assert client.download(offer).path.exists()  # the bad partial was dropped


def test_an_artifact_for_other_hardware_is_refused(tmp_path: Path) -> None:
    sim = SimulatedRepository(tmp_path / "repo", clock=lambda: NOW)
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.onnx").write_bytes(b"\0" * 100)
    blob, manifest = build_artifact(
        src, kind=ArtifactKind.MODEL, name="plates", version="2.0", hardware=["jetson-orin"]
    )
    sim.repo.add_artifact(blob)
    sim.repo.assign("district-7", manifest, campaign_id="c-3")
    sim.publish()
    with pytest.raises(TrustError) as caught:
        _client(sim, tmp_path).check(ArtifactKind.MODEL)
    assert caught.value.trust_reason is TrustReason.HARDWARE


def test_an_older_version_is_refused_unless_the_metadata_allows_a_downgrade(
    sim: SimulatedRepository,
    tmp_path: Path,
) -> None:
    offer = _client(sim, tmp_path).check(ArtifactKind.APP)
    assert offer is not None
    with pytest.raises(TrustError) as caught:
        check_version(offer, installed="1.2.0")
    assert caught.value.trust_reason is TrustReason.VERSION
    check_version(offer, installed="0.9.9")
    manifest = sim.repo.newest(ArtifactKind.APP, "agent")
    assert manifest is not None
    sim.repo.assign("district-7", manifest, campaign_id="c-back", downgrade=True)
    sim.publish()
    downgrade = _client(sim, tmp_path).check(ArtifactKind.APP)
    assert downgrade is not None
    assert downgrade.downgrade
    check_version(downgrade, installed="1.2.0")


def test_a_node_clock_a_year_ahead_is_told_and_recovers_with_the_servers_clock(
    sim: SimulatedRepository,
    tmp_path: Path,
) -> None:
    sim.transport.server_date = NOW + timedelta(seconds=3)
    client = _client(sim, tmp_path, clock=NOW + timedelta(days=400))
    error = _refused(client, TrustReason.CLOCK)
    assert error.evidence["skew_seconds"] > 300 * 24 * 3600
    assert "trust-clock-from-server" in error.message
    offer = client.check(ArtifactKind.APP, trust_server_clock=True)
    assert offer is not None
    assert offer.version == "1.0.0"


def test_a_delta_is_used_when_it_fits_and_a_broken_delta_falls_back_to_the_full_artifact(
    sim: SimulatedRepository,
    tmp_path: Path,
) -> None:
    old = sim.repo.newest(ArtifactKind.APP, "agent")
    assert old is not None
    blob, new = _app(tmp_path, "1.0.1")
    sim.repo.add_artifact(blob)
    sim.repo.add_delta(old, new)
    sim.repo.assign("district-7", new, campaign_id="c-2")
    sim.publish()
    installed = sim.repo.target_file(old.target_path)
    client = _client(sim, tmp_path)
    offer = client.check(ArtifactKind.APP)
    assert offer is not None
    assert offer.deltas == {"1.0.0": "app/agent-1.0.0-to-1.0.1.bsdiff"}
    got = client.download(offer, installed=installed, installed_version="1.0.0")
    assert got.via_delta
    assert got.path.read_bytes() == blob
    assert got.bytes_transferred < new.size / 10
    sim.transport.replace(".agent-1.0.0-to-1.0.1.bsdiff", b"not a delta")
    other = _client(sim, tmp_path, name="other")
    offer2 = other.check(ArtifactKind.APP)
    assert offer2 is not None
    fallback = other.download(offer2, installed=installed, installed_version="1.0.0")
    assert not fallback.via_delta
    assert fallback.path.read_bytes() == blob
    assert fallback.delta_error is not None
    assert fallback.delta_error.startswith("length")


def test_a_snapshot_that_lists_an_older_role_is_a_rollback(
    sim: SimulatedRepository,
    tmp_path: Path,
) -> None:
    # The attacker holds the online snapshot and timestamp keys and lists yesterday's app role.
    client = _client(sim, tmp_path)
    old_app = next(u for u in sim.transport.files if u.endswith("/1.app.json"))
    old_bytes = sim.transport.files[old_app]
    blob, manifest = _app(tmp_path, "1.0.1")
    sim.repo.add_artifact(blob)
    sim.repo.assign("district-7", manifest, campaign_id="c-2")
    sim.publish()
    assert client.check(ArtifactKind.APP) is not None  # the node now trusts app v2
    repo = sim.repo
    repo._sign_snapshot(first=False)  # a new snapshot version …
    snapshot = repo._roles["snapshot"]
    snapshot.signed.meta["app.json"] = MetaFile(  # … that lists app v1 again
        version=1,
        length=len(old_bytes),
        hashes={"sha256": hashlib.sha256(old_bytes).hexdigest()},
    )
    repo._sign("snapshot", [sim.online.snapshot])
    repo._write_role("snapshot")
    repo._sign_timestamp(first=False)
    sim.sync()
    _refused(client, TrustReason.ROLLBACK)


def test_a_full_disk_during_download_is_a_storage_failure_and_nothing_is_kept(
    sim: SimulatedRepository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno
    import shutil

    from ota.errors import OtaError

    client = _client(sim, tmp_path)
    offer = client.check(ArtifactKind.APP)
    assert offer is not None

    def disk_full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", disk_full)  # python-tuf writes the target so
    with pytest.raises(OtaError) as caught:
        client.download(offer)
    assert caught.value.reason == "storage"
    assert "No space left" in caught.value.message
    assert _nothing_applied(client)
    assert not [p for p in (client.cache_dir / "downloads").iterdir()]
