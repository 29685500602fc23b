"""`nigehbaan ota` on a technician's visit: a key ceremony, an offline install from a USB
copy of the repository, status on trial, a refused unsigned bundle, a rollback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ota.artifacts import ArtifactKind, ArtifactManifest, build_artifact
from ota.keys import OnlineKeys
from ota.repository import Repository


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.console", "ota", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _src(tmp_path: Path, version: str) -> Path:
    src = tmp_path / f"src-{version}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "agent.py").write_text(f"VERSION = {version!r}\n")
    return src


def _publish(repo: Repository, tmp_path: Path, version: str) -> ArtifactManifest:
    blob, manifest = build_artifact(
        _src(tmp_path, version),
        kind=ArtifactKind.APP,
        name="agent",
        version=version,
        hardware=["sim"],
    )
    repo.add_artifact(blob)
    repo.assign("pillar-7", manifest, campaign_id="usb-visit")
    repo.publish()
    return manifest


def test_a_technician_installs_offline_from_a_usb_copy_and_rolls_back(tmp_path: Path) -> None:
    env = {f"PP_{i}": f"passphrase number {i}" for i in range(1, 5)}
    keygen = _run("keygen", "--out", str(tmp_path / "ceremony"), "--passphrase-env", "PP", env=env)
    assert keygen.returncode == 0, keygen.stderr
    assert b"ENCRYPTED" in (tmp_path / "ceremony" / "root-1.pem").read_bytes()
    init = _run(
        "init",
        str(tmp_path / "repo"),
        "--root-keys",
        str(tmp_path / "ceremony"),
        "--threshold",
        "2",
        "--online-keys",
        str(tmp_path / "online"),
        "--passphrase-env",
        "PP",
        env=env,
    )
    assert init.returncode == 0, init.stderr
    repo = Repository.open(tmp_path / "repo", online=OnlineKeys.load(tmp_path / "online"))
    _publish(repo, tmp_path, "1.0.0")

    data_dir = tmp_path / "node"
    (data_dir / "ota").mkdir(parents=True)
    shutil.copy(tmp_path / "repo" / "metadata" / "1.root.json", data_dir / "ota" / "root.json")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'node_id = "pillar-7"\nserial = "SN7"\ndata_dir = "{data_dir}"\n'
        '[ota]\nenabled = true\nkinds = ["app"]\nhardware = "sim"\n'
    )

    usb = tmp_path / "usb"
    shutil.copytree(tmp_path / "repo", usb)
    first = _run("install", str(usb), "--config", str(config))
    assert first.returncode == 0, first.stderr
    status = json.loads(_run("status", "--config", str(config), "--json").stdout)
    assert status["kinds"]["app"]["version"] == "1.0.0"
    assert status["kinds"]["app"]["committed"] == "1.0.0"

    unsigned = tmp_path / "unsigned.tar"
    blob, _ = build_artifact(
        _src(tmp_path, "9.9.9"),
        kind=ArtifactKind.APP,
        name="agent",
        version="9.9.9",
        hardware=["sim"],
    )
    unsigned.write_bytes(blob)
    refused = _run("install", str(unsigned), "--config", str(config))
    assert refused.returncode == 3
    assert "refused (signature)" in refused.stderr

    _publish(repo, tmp_path, "1.1.0")
    shutil.rmtree(usb)
    shutil.copytree(tmp_path / "repo", usb)
    second = _run("install", str(usb), "--config", str(config))
    assert second.returncode == 0, second.stderr
    assert "on trial" in second.stdout
    status = json.loads(_run("status", "--config", str(config), "--json").stdout)
    assert status["kinds"]["app"]["version"] == "1.1.0"
    assert status["kinds"]["app"]["trial"]["previous"] == "a"

    back = _run("rollback", "--config", str(config))
    assert back.returncode == 0, back.stderr
    status = json.loads(_run("status", "--config", str(config), "--json").stdout)
    assert status["kinds"]["app"]["version"] == "1.0.0"
    assert status["kinds"]["app"]["last_rollback"]["reason"] == "technician"
    text = _run("status", "--config", str(config))
    assert "last rollback: 1.1.0 (technician)" in text.stdout
