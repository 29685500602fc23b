"""The operating system as an artifact kind: its own delegated role, signed and found like
the others; a repository made before the kind existed opens and says what to do."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from ota.artifacts import ArtifactKind, build_artifact
from ota.errors import RepositoryError
from ota.keys import generate_signer
from ota.memory import SimulatedRepository
from ota.repository import Repository
from ota.trust import UpdateClient


def _os_bundle(tmp_path: Path, version: str) -> bytes:
    src = tmp_path / f"os-{version}"
    src.mkdir()
    # The payload is what the node's OS updater takes (a RAUC bundle on a RAUC image).
    (src / "rootfs.raucb").write_bytes(b"hsqs" + version.encode() * 5000)
    blob, _ = build_artifact(
        src, kind=ArtifactKind.OS, name="nigehbaan-os", version=version, hardware=["rpi"]
    )
    return blob


def test_an_os_bundle_is_signed_in_its_own_role_and_a_node_finds_it(tmp_path: Path) -> None:
    sim = SimulatedRepository(
        tmp_path / "repo", root_keys=1, root_threshold=1, clock=lambda: datetime.now(timezone.utc)
    )
    blob = _os_bundle(tmp_path, "2026.11.1")
    listed = sim.repo.add_artifact(blob)
    assert listed.path.startswith("os/")
    _, manifest = build_artifact(
        tmp_path / "os-2026.11.1", kind=ArtifactKind.OS, name="nigehbaan-os",
        version="2026.11.1", hardware=["rpi"],
    )  # fmt: skip
    sim.repo.assign("lhr-0001", manifest, campaign_id="os-1")
    sim.publish()
    node = UpdateClient(
        cache_dir=tmp_path / "node", metadata_url=f"{sim.base_url}/metadata/",
        targets_url=f"{sim.base_url}/targets/", transport=sim.transport, group="lhr-0001",
        hardware="rpi", trusted_root=sim.trusted_root,
    )  # fmt: skip
    offer = node.check(ArtifactKind.OS)
    assert offer is not None
    assert (offer.kind, offer.version, offer.campaign) == (ArtifactKind.OS, "2026.11.1", "os-1")
    assert node.check(ArtifactKind.APP) is None  # the kinds do not mix
    got = node.download(offer)
    assert got.path.read_bytes() == blob


def test_a_repository_made_before_the_os_kind_opens_and_refuses_os_with_the_way_out(
    tmp_path: Path,
) -> None:
    from ota.keys import OnlineKeys

    online = OnlineKeys.generate()
    repo = Repository.create(
        tmp_path / "repo", root_signers=[generate_signer()], root_threshold=1,
        targets_signer=generate_signer(), online=online,
    )  # fmt: skip
    (repo.metadata_dir / "os.json").unlink()  # as an older repository has no such role
    reopened = Repository.open(tmp_path / "repo", online=online)
    assert reopened.artifacts() == []  # every other kind works as before
    with pytest.raises(RepositoryError, match="next key ceremony"):
        reopened.add_artifact(_os_bundle(tmp_path, "2026.11.2"))
