"""Artifacts: the bundles an update carries, their manifest, and bsdiff4 deltas between them.

An artifact is an uncompressed, deterministic tar (sorted names, mtime 0, owner 0) of the
agent application, a model bundle or a configuration bundle, with `MANIFEST.json` as its
first member (kind, version, hardware it runs on, every file's sha256 and size). The tar
is not compressed so that a small change gives a small bsdiff4 delta; LTE bytes are what
counts, and deltas already carry bsdiff's own compression. The `ArtifactManifest` (the
same fields plus the sha256 and size of the whole tar) is what the repository puts into
the TUF target's custom metadata, so a node decides on hardware and version before it
downloads a byte. The OS itself is not an artifact kind here yet (docs/ota.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import bsdiff4  # type: ignore[import-untyped]

from ota.errors import ArtifactError

__all__ = [
    "MANIFEST_NAME",
    "ArtifactKind",
    "ArtifactManifest",
    "apply_delta",
    "build_artifact",
    "make_delta",
    "parse_version",
    "read_bundle",
]

MANIFEST_NAME = "MANIFEST.json"
_VERSION = re.compile(r"^\d+(\.\d+){0,3}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class ArtifactKind(str, Enum):
    """What an artifact updates; each kind has its own delegated TUF role and A/B slots."""

    APP = "app"
    MODEL = "model"
    CONFIG = "config"
    # The operating system: a bundle whose payload is an image for the node's OS updater
    # (a RAUC bundle, `ota.system`), installed into the OS's own A/B slots, not ours.
    OS = "os"


def parse_version(version: str) -> tuple[int, ...]:
    """`1.2.10` → (1, 2, 10): versions compare numerically, never as text."""
    if not _VERSION.match(version):
        raise ArtifactError(f"version {version!r} is not dotted numbers like 1.4.2")
    return tuple(int(part) for part in version.split("."))


@dataclass(frozen=True)
class ArtifactManifest:
    """What the repository signs about an artifact (TUF target custom metadata)."""

    kind: ArtifactKind
    name: str
    version: str
    hardware: tuple[str, ...]
    sha256: str
    size: int
    files: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)

    @property
    def filename(self) -> str:
        """The artifact's file name in the repository: `<name>-<version>.tar`."""
        return f"{self.name}-{self.version}.tar"

    @property
    def target_path(self) -> str:
        """The TUF target path: `<kind>/<name>-<version>.tar`."""
        return f"{self.kind.value}/{self.filename}"

    def runs_on(self, hardware: str) -> bool:
        """True when the artifact declares this hardware (or `any`)."""
        return "any" in self.hardware or hardware in self.hardware

    def custom(self) -> dict[str, Any]:
        """The fields as TUF custom metadata (files left out: they are inside the tar)."""
        data = asdict(self)
        data.pop("files")
        data["kind"] = self.kind.value
        data["hardware"] = list(self.hardware)
        return data

    @classmethod
    def from_custom(cls, data: dict[str, Any]) -> ArtifactManifest:
        """Read the manifest back from TUF custom metadata or MANIFEST.json."""
        try:
            return cls(
                kind=ArtifactKind(data["kind"]),
                name=str(data["name"]),
                version=str(data["version"]),
                hardware=tuple(str(h) for h in data["hardware"]),
                sha256=str(data.get("sha256", "")),
                size=int(data.get("size", 0)),
                files=dict(data.get("files", {})),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ArtifactError(f"artifact manifest is malformed: {exc}") from exc


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build_artifact(
    source: Path,
    *,
    kind: ArtifactKind,
    name: str,
    version: str,
    hardware: tuple[str, ...] | list[str],
) -> tuple[bytes, ArtifactManifest]:
    """Pack `source` (a directory) into a deterministic tar; return its bytes and manifest.

    The same tree always gives the same bytes, so CI rebuilds are reproducible and a delta
    between two builds only carries what changed.
    """
    if not _NAME.match(name):
        raise ArtifactError(f"artifact name {name!r}: lower-case letters, digits, . _ -")
    parse_version(version)
    if not hardware:
        raise ArtifactError("an artifact must say which hardware it runs on (or 'any')")
    if not source.is_dir():
        raise ArtifactError(f"{source} is not a directory")
    files: dict[str, dict[str, Any]] = {}
    contents: list[tuple[str, bytes]] = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = path.relative_to(source).as_posix()
        if rel == MANIFEST_NAME:
            continue
        data = path.read_bytes()
        files[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        contents.append((rel, data))
    inner = {
        "kind": kind.value,
        "name": name,
        "version": version,
        "hardware": list(hardware),
        "files": files,
    }
    manifest_bytes = json.dumps(inner, sort_keys=True, indent=1).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tarinfo(MANIFEST_NAME, len(manifest_bytes)), io.BytesIO(manifest_bytes))
        for rel, data in contents:
            tar.addfile(_tarinfo(rel, len(data)), io.BytesIO(data))
    blob = buffer.getvalue()
    manifest = ArtifactManifest(
        kind=kind,
        name=name,
        version=version,
        hardware=tuple(hardware),
        sha256=hashlib.sha256(blob).hexdigest(),
        size=len(blob),
        files=files,
    )
    return blob, manifest


def read_bundle(blob: bytes) -> tuple[ArtifactManifest, dict[str, bytes]]:
    """Open an artifact tar: its manifest and files, every file checked against the manifest.

    Refuses absolute paths, `..`, links and anything not listed: a bundle only ever
    writes inside its slot.
    """
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
            members = tar.getmembers()
            if not members or members[0].name != MANIFEST_NAME:
                raise ArtifactError(f"the bundle's first member is not {MANIFEST_NAME}")
            files: dict[str, bytes] = {}
            raw: dict[str, Any] = {}
            for member in members:
                if not member.isfile():
                    raise ArtifactError(f"bundle member {member.name!r} is not a plain file")
                parts = Path(member.name).parts
                if member.name.startswith("/") or ".." in parts:
                    raise ArtifactError(f"bundle member {member.name!r} leaves its slot")
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                if member.name == MANIFEST_NAME:
                    raw = json.loads(data)
                else:
                    files[member.name] = data
    except (tarfile.TarError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"bundle is not a readable artifact: {exc}") from exc
    raw = dict(raw)
    raw["sha256"] = hashlib.sha256(blob).hexdigest()
    raw["size"] = len(blob)
    manifest = ArtifactManifest.from_custom(raw)
    if set(files) != set(manifest.files):
        raise ArtifactError("the bundle's files differ from its manifest")
    for rel, data in files.items():
        if hashlib.sha256(data).hexdigest() != manifest.files[rel].get("sha256"):
            raise ArtifactError(f"bundle file {rel!r} does not match its manifest hash")
    return manifest, files


def make_delta(old: bytes, new: bytes) -> bytes:
    """A bsdiff4 patch that turns `old` into `new` (the server makes these)."""
    return bytes(bsdiff4.diff(old, new))


def apply_delta(old: bytes, delta: bytes, *, expected_sha256: str) -> bytes:
    """Apply a bsdiff4 patch and check the result's hash; any failure is an ArtifactError.

    The caller falls back to the full artifact on this error.
    """
    try:
        result = bytes(bsdiff4.patch(old, delta))
    except Exception as exc:  # bsdiff4 raises ValueError or plain errors from C
        raise ArtifactError(f"the delta does not apply: {exc}") from exc
    if hashlib.sha256(result).hexdigest() != expected_sha256:
        raise ArtifactError("the delta applied but the result's hash is wrong")
    return result
