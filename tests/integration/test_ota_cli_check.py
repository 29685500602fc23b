"""`nigehbaan ota check` on the command line: what a node's group is assigned, from a
repository copy on a USB stick or over plain HTTP on a development node, installing
nothing; refusals and a missing assignment said in words, with their exit codes."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ota.artifacts import ArtifactKind, build_artifact
from ota.keys import OnlineKeys, generate_signer
from ota.repository import Repository


def _ota(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.console", "ota", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
        check=False,
    )


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    repo = Repository.create(
        tmp_path / "repo", root_signers=[generate_signer()], root_threshold=1,
        targets_signer=generate_signer(), online=OnlineKeys.generate(),
    )  # fmt: skip
    src = tmp_path / "src"
    src.mkdir()
    (src / "agent.py").write_text("VERSION = '1.1.0'\n")
    blob, manifest = build_artifact(
        src, kind=ArtifactKind.APP, name="agent", version="1.1.0", hardware=["sim"]
    )
    repo.add_artifact(blob)
    repo.assign("pillar-7", manifest, campaign_id="spring-wave")
    repo.publish()
    return tmp_path / "repo"


def _node(tmp_path: Path, repo_dir: Path, *, node_id: str = "pillar-7", extra: str = "") -> Path:
    data_dir = tmp_path / f"node-{node_id}"
    (data_dir / "ota").mkdir(parents=True)
    shutil.copy(repo_dir / "metadata" / "1.root.json", data_dir / "ota" / "root.json")
    config = tmp_path / f"{node_id}.toml"
    config.write_text(
        f'node_id = "{node_id}"\nserial = "SN"\ndata_dir = "{data_dir}"\n{extra}'
        '[ota]\nenabled = true\nkinds = ["app"]\nhardware = "sim"\n'
    )
    return config


def test_check_from_a_usb_copy_names_the_offer_and_installs_nothing(
    tmp_path: Path, repo_dir: Path
) -> None:
    config = _node(tmp_path, repo_dir)
    usb = tmp_path / "usb"
    shutil.copytree(repo_dir, usb)
    done = _ota("check", "--config", str(config), "--from", str(usb), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "app": {
            "version": "1.1.0",
            "campaign": "spring-wave",
            "running": None,
            "downgrade": False,
            "length": next((repo_dir / "targets" / "app").glob("*agent-1.1.0.tar")).stat().st_size,
        }
    }
    status = json.loads(_ota("status", "--config", str(config), "--json").stdout)
    assert status["kinds"]["app"]["version"] is None  # a check installs nothing

    other = _node(tmp_path, repo_dir, node_id="pillar-8")
    text = _ota("check", "--config", str(other), "--from", str(usb))
    assert text.returncode == 0, text.stderr
    assert text.stdout.split() == ["app", "nothing", "assigned"]


def test_check_refuses_a_copy_whose_metadata_was_altered(tmp_path: Path, repo_dir: Path) -> None:
    config = _node(tmp_path, repo_dir)
    usb = tmp_path / "usb"
    shutil.copytree(repo_dir, usb)
    timestamp = usb / "metadata" / "timestamp.json"
    data = json.loads(timestamp.read_text())
    data["signed"]["version"] += 1  # a newer timestamp nobody signed
    timestamp.write_text(json.dumps(data))
    done = _ota("check", "--config", str(config), "--from", str(usb))
    assert done.returncode == 3
    assert "refused (signature): timestamp was signed by 0/1 keys" in done.stderr


@pytest.fixture
def served(repo_dir: Path) -> Iterator[str]:
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(repo_dir))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_check_over_plain_http_needs_dev_mode(tmp_path: Path, repo_dir: Path, served: str) -> None:
    dev = _node(tmp_path, repo_dir, extra="dev_mode = true\n")
    dev.write_text(dev.read_text() + f'repository_url = "{served}"\n')
    done = _ota("check", "--config", str(dev))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["app", "1.1.0"]
    assert "campaign spring-wave" in done.stdout

    field = _node(tmp_path, repo_dir, node_id="pillar-9")
    field.write_text(field.read_text() + f'repository_url = "{served}"\n')
    refused = _ota("check", "--config", str(field))
    assert refused.returncode == 2
    assert "needs dev_mode" in refused.stderr
