"""The operating system as an artifact kind: its own delegated role, signed and found like
the others; a repository made before the kind existed opens and says what to do."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from ota.artifacts import ArtifactKind, build_artifact
from ota.errors import RepositoryError
from ota.keys import generate_signer
from ota.memory import SimulatedRepository
from ota.repository import Repository
from ota.system import OsSlotStatus, OsUpdater
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


class FakeRauc(OsUpdater):
    """RAUC as the node sees it: install into the other slot, boot it on reboot, mark."""

    def __init__(self, version: str) -> None:
        self.slots = {"A": version, "B": None}
        self.booted = "A"
        self.next_boot = "A"
        self.marks: list[str] = []

    def install(self, bundle: Path) -> None:
        other = "B" if self.booted == "A" else "A"
        self.slots[other] = bundle.read_bytes().split(b":")[1].decode()
        self.next_boot = other  # RAUC makes the new slot primary

    def status(self) -> OsSlotStatus:
        return OsSlotStatus(booted=self.booted, booted_version=self.slots[self.booted], good=None)

    def mark_good(self) -> None:
        self.marks.append(f"good {self.booted}")

    def mark_bad(self) -> None:
        self.marks.append(f"bad {self.booted}")
        self.next_boot = "B" if self.booted == "A" else "A"

    def reboot(self) -> None:
        self.booted = self.next_boot


def _os_node(tmp_path: Path, sick: bool) -> tuple[Any, Any, FakeRauc, Any, Any]:
    from edge_agent.component import ComponentBase, Health
    from edge_agent.config import config_from_dict
    from edge_agent.memory import memory_transport
    from edge_agent.node import build_node
    from edge_agent.ota import OtaComponent, OtaConfig
    from hardware import ManualClock, SimBackend

    class Camera(ComponentBase):
        name = "camera"

        def health(self) -> Health:
            return Health(not sick, "no frames since the new OS" if sick else "")

    clock = ManualClock(start=0.0)
    sim = SimulatedRepository(
        tmp_path / "repo", root_keys=1, root_threshold=1, clock=lambda: datetime.now(timezone.utc)
    )
    src = tmp_path / "os-new"
    src.mkdir()
    (src / "rootfs.raucb").write_bytes(b"RAUC:2026.11.1:" + b"\0" * 2048)
    blob, manifest = build_artifact(
        src, kind=ArtifactKind.OS, name="nigehbaan-os", version="2026.11.1", hardware=["sim"]
    )
    sim.repo.add_artifact(blob)
    sim.repo.assign("lhr-os-1", manifest, campaign_id="os-7")
    sim.publish()
    rauc = FakeRauc("2026.10.0")
    data = tmp_path / "node"
    (data / "ota").mkdir(parents=True)
    (data / "ota" / "root.json").write_bytes(sim.trusted_root)
    settings = OtaConfig.model_validate({
        "enabled": True, "first_check_s": 0, "maintenance_window": None, "kinds": ["os"],
        "os_updater": "rauc", "health_deadline_s": 600, "repository_url": sim.base_url,
    })  # fmt: skip
    component = OtaComponent(
        settings, data_dir=data / "ota", group="lhr-os-1", hardware="sim",
        transport=sim.transport, os_updater=rauc, reboot=rauc.reboot,
    )  # fmt: skip
    config = config_from_dict({
        "node_id": "lhr-os-1", "serial": "SN-OS-1", "data_dir": str(data),
        "hardware": {"type": "sim"}, "outbox": {"synchronous": "normal"},
    })  # fmt: skip
    node = build_node(
        config, backend=SimBackend(clock=clock), transport_factory=memory_transport(),
        components=[component, Camera()], renewal=False,
    )  # fmt: skip
    return node, component, rauc, clock, sim


def test_an_os_update_goes_through_rauc_and_is_marked_good_once_healthy(tmp_path: Path) -> None:
    from proto.messages import OtaEvent
    from tests.support.polling import until
    from tests.unit.test_ota_component import _advance_until, _phases, _run, _running

    node, component, rauc, clock, _ = _os_node(tmp_path, sick=False)

    async def body() -> None:
        async with _running(node, clock) as transport:
            transport.connect()
            await until(lambda: ("installed", None) in _phases(transport), "installed")
            await _advance_until(clock, lambda: ("healthy", None) in _phases(transport),
                                 "healthy", step=5.0)  # fmt: skip
            healthy = next(e for e in transport.messages(OtaEvent) if e.phase == "healthy")
            assert (healthy.version, healthy.campaign_id) == ("2026.11.1", "os-7")
        assert rauc.booted == "B"
        assert rauc.marks == ["good B"]
        assert component.store("os").installed_version() == "2026.11.1"

    _run(body)


def test_a_sick_new_os_is_marked_bad_and_the_node_boots_the_old_one(tmp_path: Path) -> None:
    from tests.support.polling import until
    from tests.unit.test_ota_component import _advance_until, _phases, _run, _running

    node, component, rauc, clock, _ = _os_node(tmp_path, sick=True)

    async def body() -> None:
        async with _running(node, clock) as transport:
            transport.connect()
            await until(lambda: ("installed", None) in _phases(transport), "installed")
            await _advance_until(clock, lambda: ("rolled_back", "health") in _phases(transport),
                                 "rollback", step=30.0)  # fmt: skip
        assert rauc.marks == ["bad B"]
        assert rauc.booted == "A"
        assert component.store("os").installed_version() == "2026.10.0"

    _run(body)
