"""The model and configuration slots are what the node runs, and the health gate covers them.

A configuration bundle's `agent.toml` is laid over the node's own config at start (who
the node is and its OTA client stay pinned); a model bundle's manifests are searched
before the shipped ones and every model in it must load with its runtime. A bundle that
does not (a corrupt model file, a config that does not validate) keeps the node up on
what it had, reports the node not healthy, and the trial switches back by itself.
Also here: a version that rolled back is not installed again by the next scheduled
check, and a node that deferred looks again soon.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import config_from_dict
from edge_agent.inference import builtin_manifest, use_model_dirs
from edge_agent.node import build_node
from edge_agent.ota import BundleHealth, check_model_bundle, config_with_slot
from hardware import ManualClock, SimBackend
from ota.artifacts import ArtifactKind, ArtifactManifest, build_artifact
from ota.slots import SlotStore
from proto.messages import OtaEvent
from tests.support.polling import until
from tests.unit.test_ota_component import (
    GROUP,
    _advance_until,
    _node,
    _phases,
    _repository,
    _run,
    _running,
)

pytest.importorskip("onnxruntime")

NODE = "lhr-ota-0001"


def _model_source(tmp_path: Path, version: str, *, corrupt: bool = False) -> Path:
    """A model bundle: a real small ONNX model (the shipped ppocr-cls) and its manifest."""
    shipped = builtin_manifest("ppocr-cls")
    src = tmp_path / f"model-{version}{'-bad' if corrupt else ''}"
    src.mkdir(parents=True)
    model = src / "plate-direction.onnx"
    if corrupt:
        # Bytes whose hash the manifest states: they verify, but no runtime can load them.
        model.write_bytes(b"not an onnx graph" * 1000)
    else:
        shutil.copyfile(shipped.model_path(), model)
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    (src / "plate-direction.yaml").write_text(
        f"name: plate-direction\nversion: '{version}'\nsha256: {sha}\n"
        "input_shape: [null, 3, 48, 192]\nruntime: onnxruntime\nlicence: Apache-2.0\n"
        "source: test copy of PaddleOCR's direction classifier\nfile: plate-direction.onnx\n",
        encoding="utf-8",
    )
    return src


def _bundle(
    src: Path, kind: ArtifactKind, name: str, version: str
) -> tuple[bytes, ArtifactManifest]:
    return build_artifact(src, kind=kind, name=name, version=version, hardware=["sim"])


def _install(data_dir: Path, kind: ArtifactKind, blob: bytes, tmp_path: Path) -> None:
    path = tmp_path / f"{kind.value}-{hashlib.sha256(blob).hexdigest()[:8]}.tar"
    path.write_bytes(blob)
    SlotStore(data_dir / "ota" / "slots", kind).install(path)


def _config(tmp_path: Path) -> dict[str, object]:
    return {
        "node_id": NODE,
        "serial": "SN-OTA-1",
        "data_dir": str(tmp_path / NODE),
        "hardware": {"type": "sim"},
        "outbox": {"synchronous": "normal"},
        "ota": {"enabled": True, "maintenance_window": None},
    }


def _config_bundle(tmp_path: Path, version: str, toml: str) -> bytes:
    src = tmp_path / f"config-{version}"
    src.mkdir()
    (src / "agent.toml").write_text(toml, encoding="utf-8")
    blob, _ = _bundle(src, ArtifactKind.CONFIG, "lahore-pillars", version)
    return blob


def test_a_configuration_bundle_in_the_active_slot_is_the_config_the_node_runs(
    tmp_path: Path,
) -> None:
    data = tmp_path / NODE
    _install(data, ArtifactKind.CONFIG, _config_bundle(tmp_path, "1.0.0",
             "[telemetry]\ninterval_s = 77.0\n"), tmp_path)  # fmt: skip
    node = build_node(config_from_dict(_config(tmp_path)), backend=SimBackend(), renewal=False)
    try:
        assert node.config.telemetry.interval_s == 77.0
        assert node.config.node_id == NODE
        bundles = next(p for p in node.components if p.name == "ota_bundles")
        assert bundles.health().ok
    finally:
        node.close()


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ('node_id = "someone-else"\n', "may not set node_id"),
        ("[ota]\nenabled = false\n", "may not set ota"),
        ("[telemetry]\ninterval_s = -5\n", "telemetry"),
        ("[telemetry\n", "cannot parse"),
    ],
)
def test_a_bad_configuration_bundle_keeps_the_base_config_and_reports_the_node_sick(
    tmp_path: Path, toml: str, words: str
) -> None:
    data = tmp_path / NODE
    _install(data, ArtifactKind.CONFIG, _config_bundle(tmp_path, "1.0.0", toml), tmp_path)
    base = config_from_dict(_config(tmp_path))
    config, problem = config_with_slot(base)
    assert config == base
    assert problem is not None
    assert words in problem
    health = BundleHealth(data_dir=data, config_problem=problem).health()
    assert not health.ok
    assert words in health.detail


def test_a_model_bundle_is_searched_before_the_shipped_models_and_must_load(
    tmp_path: Path,
) -> None:
    data = tmp_path / NODE
    good, _ = _bundle(_model_source(tmp_path, "1.0.0"), ArtifactKind.MODEL, "plates", "1.0.0")
    _install(data, ArtifactKind.MODEL, good, tmp_path)
    node = build_node(config_from_dict(_config(tmp_path)), backend=SimBackend(), renewal=False)
    try:
        manifest = builtin_manifest("plate-direction")  # only the slot has this name
        assert (
            manifest.model_path().resolve().parent
            == (data / "ota" / "slots" / "model" / "current").resolve()
        )
        bundles = next(p for p in node.components if p.name == "ota_bundles")
        assert bundles.health().ok, bundles.health().detail
    finally:
        node.close()
        use_model_dirs([])
    bad = _model_source(tmp_path, "1.1.0", corrupt=True)
    problem = check_model_bundle(bad)
    assert problem is not None
    assert "plate-direction" in problem


def test_a_model_bundle_that_does_not_load_rolls_back_by_itself(tmp_path: Path) -> None:
    clock = ManualClock(start=0.0)
    sim = _repository(tmp_path)
    bundles = BundleHealth(data_dir=tmp_path / NODE)
    node, component = _node(tmp_path, clock, sim, bundles, kinds=["model"])
    good, _ = _bundle(_model_source(tmp_path, "1.0.0"), ArtifactKind.MODEL, "plates", "1.0.0")
    first = tmp_path / "first.tar"
    first.write_bytes(good)
    component.store("model").install(first)
    bad, manifest = _bundle(
        _model_source(tmp_path, "1.1.0", corrupt=True), ArtifactKind.MODEL, "plates", "1.1.0"
    )
    sim.repo.add_artifact(bad)
    sim.repo.assign(GROUP, manifest, campaign_id="c-9")
    sim.publish()

    async def body() -> None:
        async with _running(node, clock) as transport:
            transport.connect()
            await until(lambda: ("installed", None) in _phases(transport), "installed")
            await _advance_until(
                clock, lambda: ("rolled_back", "health") in _phases(transport), "rollback",
                step=30.0,
            )  # fmt: skip
            event = next(e for e in transport.messages(OtaEvent) if e.phase == "rolled_back")
            assert event.detail is not None
            assert "ota_bundles" in event.detail
            assert "plate-direction" in event.detail
            # The next scheduled check finds 1.1.0 still assigned and leaves it alone.
            checks = component.checks_done
            await _advance_until(clock, lambda: component.checks_done > checks, "re-check",
                                 step=60.0, limit=7 * 3600.0)  # fmt: skip
            # (Unacknowledged events are sent again: count distinct events.)
            installs = {e.event_id for e in transport.messages(OtaEvent) if e.phase == "installed"}
            assert len(installs) == 1
        assert component.store("model").installed_version() == "1.0.0"
        assert bundles.health().ok

    _run(body)


def test_a_node_that_deferred_looks_again_after_deferred_recheck_s(tmp_path: Path) -> None:
    from tests.unit.test_ota_component import _Alert, _offer, _preinstall

    clock = ManualClock(start=0.0)
    sim = _repository(tmp_path)
    node, component = _node(tmp_path, clock, sim, _Alert(), deferred_recheck_s=120.0)
    _preinstall(component, tmp_path, "1.0.0")
    _offer(sim, tmp_path, "1.1.0")

    async def body() -> None:
        async with _running(node, clock) as transport:
            transport.connect()
            await until(lambda: ("deferred", "alert_active") in _phases(transport), "deferred")
            first = component.checks
            # Far sooner than the 6 h schedule: within the 120 s re-check.
            await _advance_until(clock, lambda: component.checks > first, "re-check",
                                 step=10.0, limit=200.0)  # fmt: skip

    _run(body)


def test_a_rollback_at_boot_names_the_failed_version_and_its_campaign(tmp_path: Path) -> None:
    from tests.unit.test_ota_component import _app, _preinstall

    clock = ManualClock(start=0.0)
    sim = _repository(tmp_path)
    node, component = _node(tmp_path, clock, sim)
    _preinstall(component, tmp_path, "1.0.0")
    blob, _ = _app(tmp_path, "1.1.0")
    artifact = tmp_path / "next.tar"
    artifact.write_bytes(blob)
    store = component.store("app")
    store.install(artifact)
    # Switched two minutes ago with a one-minute window; the node crashed and boots now.
    store.switch(now=clock.now().timestamp() - 120, deadline_s=60, campaign="c-5")

    async def body() -> None:
        async with _running(node, clock) as transport:
            transport.connect()
            await until(lambda: ("rolled_back", "boot") in _phases(transport), "boot rollback")
            event = next(e for e in transport.messages(OtaEvent) if e.phase == "rolled_back")
            # What the server's campaign must mark: the failed version, not the one running.
            assert event.version == "1.1.0"
            assert event.campaign_id == "c-5"
        assert store.installed_version() == "1.0.0"

    _run(body)


def test_a_plain_http_repository_is_refused_outside_development_mode(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from edge_agent.ota import OtaComponent, OtaConfig

    settings = OtaConfig(enabled=True, repository_url="http://127.0.0.1:9/ota")
    ctx: Any = SimpleNamespace(clock=ManualClock(start=0.0))
    field_node = OtaComponent(settings, data_dir=tmp_path, group="g", hardware="sim")
    with pytest.raises(RuntimeError, match="http:// needs dev_mode"):
        field_node._update_client(ctx)
    simulated = OtaComponent(
        settings, data_dir=tmp_path / "sim", group="g", hardware="sim", dev_mode=True
    )
    assert simulated._update_client(ctx) is not None
