"""The OTA repository signs TUF metadata a stock python-tuf client accepts, and keeps keys safe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Metadata

from ota.artifacts import ArtifactKind, ArtifactManifest, apply_delta, build_artifact, read_bundle
from ota.errors import ArtifactError, RepositoryError
from ota.keys import OnlineKeys, generate_signer, load_signer, save_signer
from ota.memory import SimulatedRepository
from ota.repository import Repository
from ota.trust import UpdateClient


def _app(
    tmp_path: Path, version: str, body: str = "print('hello')\n"
) -> tuple[bytes, ArtifactManifest]:
    src = tmp_path / f"src-{version}"
    (src / "edge").mkdir(parents=True, exist_ok=True)
    (src / "edge" / "main.py").write_text(body * 200)
    (src / "VERSION").write_text(version)
    return build_artifact(
        src, kind=ArtifactKind.APP, name="agent", version=version, hardware=["sim", "rpi4"]
    )


def test_a_new_repository_needs_two_of_three_root_keys(tmp_path: Path) -> None:
    roots = [generate_signer() for _ in range(3)]
    repo = Repository.create(
        tmp_path / "repo",
        root_signers=roots,
        root_threshold=2,
        targets_signer=generate_signer(),
        online=OnlineKeys.generate(),
    )
    root = Metadata.from_file(str(repo.metadata_dir / "1.root.json"))
    assert root.signed.roles["root"].threshold == 2
    assert len(root.signatures) == 3
    root.signed.verify_delegate("root", root.signed_bytes, root.signatures)


def test_root_threshold_larger_than_the_keys_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="threshold"):
        Repository.create(
            tmp_path / "repo",
            root_signers=[generate_signer()],
            root_threshold=2,
            targets_signer=generate_signer(),
            online=OnlineKeys.generate(),
        )


def test_offline_keys_are_passphrase_encrypted_and_a_wrong_passphrase_is_refused(
    tmp_path: Path,
) -> None:
    signer = generate_signer()
    save_signer(tmp_path / "root-1.pem", signer, passphrase=b"correct horse")
    pem = (tmp_path / "root-1.pem").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in pem
    assert (tmp_path / "root-1.pem").stat().st_mode & 0o777 == 0o600
    again = load_signer(tmp_path / "root-1.pem", passphrase=b"correct horse")
    assert again.public_key.keyid == signer.public_key.keyid
    with pytest.raises(RepositoryError, match=r"root-1\.pem"):
        load_signer(tmp_path / "root-1.pem", passphrase=b"wrong")


def test_an_assignment_is_signed_in_the_groups_own_role_and_published(tmp_path: Path) -> None:
    online = OnlineKeys.generate()
    repo = Repository.create(
        tmp_path / "repo",
        root_signers=[generate_signer()],
        root_threshold=1,
        targets_signer=generate_signer(),
        online=online,
    )
    blob, manifest = _app(tmp_path, "1.0.0")
    repo.add_artifact(blob, manifest)
    repo.assign("district-7", manifest, campaign_id="c-1")
    versions = repo.publish()
    assert {"app", "director", "group-district-7", "snapshot", "timestamp"} <= set(versions)
    group = json.loads((repo.metadata_dir / "group-district-7.json").read_text())
    entry = group["signed"]["targets"]["groups/district-7/app"]
    assert entry["custom"]["target"] == "app/agent-1.0.0.tar"
    assert entry["custom"]["campaign"] == "c-1"
    assert entry["hashes"]["sha256"] == manifest.sha256
    assert repo.target_file(manifest.target_path).read_bytes() == blob
    reopened = Repository.open(tmp_path / "repo", online=online)
    assert reopened.groups() == ["district-7"]
    assert reopened.role_version("group-district-7") == repo.role_version("group-district-7")


def test_artifacts_are_reproducible_and_a_small_change_gives_a_small_delta(tmp_path: Path) -> None:
    old, old_m = _app(tmp_path, "1.0.0")
    again, _ = _app(tmp_path, "1.0.0")
    assert old == again
    new, new_m = _app(tmp_path, "1.0.1", body="print('hello, world')\n")
    repo = Repository.create(
        tmp_path / "repo",
        root_signers=[generate_signer()],
        root_threshold=1,
        targets_signer=generate_signer(),
        online=OnlineKeys.generate(),
    )
    repo.add_artifact(old)
    repo.add_artifact(new)
    delta = repo.add_delta(old_m, new_m)
    assert delta.length < new_m.size / 10
    patched = apply_delta(
        old, repo.target_file(delta.path).read_bytes(), expected_sha256=new_m.sha256
    )
    assert patched == new
    with pytest.raises(ArtifactError, match="hash"):
        apply_delta(old, repo.target_file(delta.path).read_bytes(), expected_sha256="0" * 64)


def test_a_bundle_whose_file_was_changed_is_refused(tmp_path: Path) -> None:
    blob, _ = _app(tmp_path, "1.0.0")
    tampered = blob.replace(b"hello", b"HELLO", 1)
    with pytest.raises(ArtifactError, match="does not match"):
        read_bundle(tampered)


def _client_for(sim: SimulatedRepository, tmp_path: Path, name: str, group: str) -> UpdateClient:
    options: dict[str, Any] = sim.client_options()
    return UpdateClient(cache_dir=tmp_path / name, group=group, hardware="sim", **options)


def test_a_reopened_repository_publishes_metadata_nodes_still_accept(tmp_path: Path) -> None:
    sim = SimulatedRepository(tmp_path / "repo", root_keys=1, root_threshold=1)
    blob, manifest = _app(tmp_path, "1.0.0")
    sim.repo.add_artifact(blob)
    sim.repo.assign("site-a", manifest, campaign_id="c-1")
    sim.publish()
    # The server restarts: a new process opens the directory and assigns another group.
    sim.repo = Repository.open(tmp_path / "repo", online=sim.online)
    sim.repo.assign("site-b", manifest, campaign_id="c-2")
    sim.publish()
    for group in ("site-a", "site-b"):
        client = _client_for(sim, tmp_path, group, group)
        offer = client.check(ArtifactKind.APP)
        assert offer is not None
        assert offer.campaign == {"site-a": "c-1", "site-b": "c-2"}[group]


def test_online_keys_rotate_with_old_and_new_valid_through_the_change(tmp_path: Path) -> None:
    sim = SimulatedRepository(tmp_path / "repo", root_keys=3, root_threshold=2)
    blob, manifest = _app(tmp_path, "1.0.0")
    sim.repo.add_artifact(blob)
    sim.repo.assign("site-a", manifest, campaign_id="c-1")
    sim.publish()
    node = _client_for(sim, tmp_path, "node", "site-a")
    assert node.check(ArtifactKind.APP) is not None

    new = OnlineKeys.generate()
    old = sim.online
    # Ceremony 1 (offline keys): the new keys are trusted beside the old ones.
    sim.repo.ceremony_root(
        signers=sim.root_signers[:2],
        add=[("timestamp", new.timestamp.public_key), ("snapshot", new.snapshot.public_key)],
    )
    sim.repo.ceremony_delegation_keys(
        targets_signer=sim.targets_signer, role="director", add=[new.director.public_key]
    )
    for kind in ("app", "model", "config"):
        sim.repo.ceremony_delegation_keys(
            targets_signer=sim.targets_signer, role=kind, add=[new.release.public_key]
        )
    sim.sync()
    assert node.check(ArtifactKind.APP) is not None  # still signed by the old online keys
    # The server switches to the new keys; nodes that follow root accept both meanwhile.
    sim.repo.replace_online_keys(new)
    sim.publish()
    assert node.check(ArtifactKind.APP) is not None
    # Ceremony 2: the old keys are revoked.
    sim.repo.ceremony_root(
        signers=sim.root_signers[:2],
        revoke=[
            ("timestamp", old.timestamp.public_key.keyid),
            ("snapshot", old.snapshot.public_key.keyid),
        ],
    )
    sim.repo.ceremony_delegation_keys(
        targets_signer=sim.targets_signer, role="director", revoke=[old.director.public_key.keyid]
    )
    sim.sync()
    offer = node.check(ArtifactKind.APP)
    assert offer is not None
    assert offer.version == "1.0.0"
    fresh = _client_for(sim, tmp_path, "fresh", "site-a")  # provisioned with root v1
    assert fresh.check(ArtifactKind.APP) is not None
