"""The artifact repository's records: upload, list, find by path, delete when unused.

An artifact is one file a node installs (the agent application, a model
bundle, a configuration bundle, an OS image) with the hardware it is for. Its
bytes go to the `ArtifactStore` (content-addressed by SHA-256); its row says
what it is. The TUF target path is `<kind>/<name>-<version>.tar` (`target_path`, the
layout of `ota.repository`); with consistent snapshots a node asks for
`<kind>/<sha256>.<name>-<version>.tar`, which `find_target` resolves too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlmodel import Session, col, func, select

from fleet_server import audit
from fleet_server.models import new_id
from fleet_server.models.ota import ArtifactKind, OtaArtifact, OtaArtifactPublic, OtaCampaign
from fleet_server.ota.errors import ArtifactInUse, ArtifactNotFound, ArtifactRefused
from fleet_server.ota.signing import SignedRepository
from fleet_server.ota.storage import ArtifactStore

__all__ = [
    "artifact_filename",
    "delete_artifact",
    "find_target",
    "get_artifact",
    "list_artifacts",
    "public_artifact",
    "target_path",
    "upload_artifact",
]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# Dotted numbers, compared numerically by the node's anti-rollback check (ota.artifacts).
_VERSION = re.compile(r"^\d+(\.\d+){0,3}$")
_HASHED = re.compile(r"^([0-9a-f]{64})\.(.+)$")


def target_path(artifact: OtaArtifact) -> str:
    """The artifact's path in the repository's targets (what TUF metadata names)."""
    return f"{artifact.kind}/{artifact.filename}"


def public_artifact(artifact: OtaArtifact, *, in_use: bool = False) -> OtaArtifactPublic:
    """The API's view of an artifact row."""
    return OtaArtifactPublic.model_validate(
        {**artifact.model_dump(), "target_path": target_path(artifact), "in_use": in_use}
    )


def artifact_filename(name: str, version: str) -> str:
    """The artifact's file name in the repository (as `ota.artifacts.ArtifactManifest`)."""
    return f"{name}-{version}.tar"


def _check(*, kind: str, name: str, version: str, hardware: Sequence[str],
           known_hardware: Sequence[str]) -> list[str]:  # fmt: skip
    kinds = [k.value for k in ArtifactKind]
    if kind not in kinds:
        raise ArtifactRefused("unknown_kind", f"unknown artifact kind {kind!r}; one of {kinds}")
    if not _NAME.match(name):
        raise ArtifactRefused("bad_name", f"name {name!r}: lower-case letters, digits, . _ -")
    if not _VERSION.match(version):
        raise ArtifactRefused("bad_version", f"version {version!r}: dotted numbers like 1.4.2")
    wanted = sorted({h.strip() for h in hardware if h.strip()})
    if not wanted:
        raise ArtifactRefused("hardware_missing", "say which hardware the artifact is for")
    unknown = [h for h in wanted if h not in known_hardware]
    if unknown:
        raise ArtifactRefused(
            "wrong_hardware",
            f"no node runs hardware {unknown}; known: {sorted(known_hardware)} "
            "(ota_known_hardware)",
        )
    return wanted


def upload_artifact(
    *,
    session: Session,
    store: ArtifactStore,
    kind: str,
    name: str,
    version: str,
    hardware: Sequence[str],
    chunks: Iterable[bytes],
    max_bytes: int,
    known_hardware: Sequence[str],
    created_by: str,
    now: datetime,
    note: str = "",
    repository: SignedRepository | None = None,
) -> OtaArtifact:
    """Check what the artifact claims to be, store its bytes, record it (caller commits).

    The checks run before a byte is stored, so a refused upload costs no disk.
    The same name and version twice is refused (`version_exists`): a version
    names exactly one content for ever, or a node could not tell them apart.
    With a signed `repository` the bytes must be a bundle whose own manifest
    says the same kind, name, version and hardware; it is then listed in its
    kind's role and published (a refused bundle's bytes stay in the store,
    unnamed, until the same bytes are uploaded right).
    """
    wanted = _check(kind=kind, name=name, version=version, hardware=hardware,
                    known_hardware=known_hardware)  # fmt: skip
    clash = session.exec(
        select(OtaArtifact).where(
            OtaArtifact.kind == kind, OtaArtifact.name == name, OtaArtifact.version == version
        )
    ).first()
    if clash is not None:
        raise ArtifactRefused(
            "version_exists", f"{kind} {name} {version} exists already (artifact {clash.id})"
        )
    blob = store.put(chunks, max_bytes=max_bytes)
    if blob.length == 0:
        raise ArtifactRefused("empty", "the artifact is empty")
    if repository is not None:
        handle, _ = store.open(blob.sha256)
        with handle:
            data = handle.read()
        repository.add(data, kind=kind, name=name, version=version, hardware=wanted)
    artifact = OtaArtifact(
        id=new_id(), kind=kind, name=name, version=version, hardware=wanted,
        sha256=blob.sha256, length=blob.length, filename=artifact_filename(name, version),
        note=note, created_by=created_by, created_at=now,
    )  # fmt: skip
    session.add(artifact)
    audit.record(
        session, actor=f"user:{created_by}", action="ota.artifact_uploaded",
        object=f"ota-artifact:{artifact.id}", now=now,
        detail={"kind": kind, "name": name, "version": version, "hardware": wanted,
                "sha256": blob.sha256, "length": blob.length},
    )  # fmt: skip
    logger.info("artifact %s: %s %s %s (%d bytes) by %s", artifact.id, kind, name, version,
                blob.length, created_by)  # fmt: skip
    return artifact


def _in_use(session: Session, artifact_ids: Sequence[str]) -> set[str]:
    if not artifact_ids:
        return set()
    rows = session.exec(
        select(OtaCampaign.artifact_id).where(col(OtaCampaign.artifact_id).in_(artifact_ids))
    ).all()
    return set(rows)


def list_artifacts(
    *, session: Session, kind: str | None = None, offset: int = 0, limit: int = 100
) -> tuple[list[OtaArtifactPublic], int]:
    """Artifacts, newest first, with whether a campaign names each."""
    query = select(OtaArtifact)
    count_query = select(func.count()).select_from(OtaArtifact)
    if kind is not None:
        query = query.where(OtaArtifact.kind == kind)
        count_query = count_query.where(OtaArtifact.kind == kind)
    rows = session.exec(
        query.order_by(col(OtaArtifact.created_at).desc(), col(OtaArtifact.id).desc())
        .offset(offset)
        .limit(limit)
    ).all()
    used = _in_use(session, [r.id for r in rows])
    count = session.exec(count_query).one()
    return [public_artifact(r, in_use=r.id in used) for r in rows], count


def get_artifact(*, session: Session, artifact_id: str) -> OtaArtifact:
    """One artifact (ArtifactNotFound)."""
    artifact = session.get(OtaArtifact, artifact_id)
    if artifact is None:
        raise ArtifactNotFound("artifact_unknown", f"no artifact {artifact_id!r}")
    return artifact


def artifact_in_use(*, session: Session, artifact_id: str) -> bool:
    """Whether a campaign names the artifact."""
    return bool(_in_use(session, [artifact_id]))


def delete_artifact(*, session: Session, store: ArtifactStore, artifact_id: str) -> OtaArtifact:
    """Delete an artifact no campaign names; its bytes go when no other artifact shares them."""
    artifact = get_artifact(session=session, artifact_id=artifact_id)
    if artifact_in_use(session=session, artifact_id=artifact_id):
        raise ArtifactInUse(
            "artifact_in_use", f"artifact {artifact_id} is named by a campaign and stays"
        )
    session.delete(artifact)
    session.flush()
    shared = session.exec(select(OtaArtifact.id).where(OtaArtifact.sha256 == artifact.sha256))
    if shared.first() is None:
        store.delete(artifact.sha256)
    return artifact


def find_target(*, session: Session, path: str) -> OtaArtifact:
    """The artifact a node's target path names (plain or hash-prefixed file name)."""
    kind, _, filename = path.partition("/")
    if not (kind and filename) or "/" in filename:
        raise ArtifactNotFound("target_unknown", f"no target {path!r}")
    query = select(OtaArtifact).where(OtaArtifact.kind == kind)
    hashed = _HASHED.match(filename)
    if hashed is not None:
        query = query.where(
            OtaArtifact.sha256 == hashed.group(1), OtaArtifact.filename == hashed.group(2)
        )
    else:
        query = query.where(OtaArtifact.filename == filename)
    artifact = session.exec(query.order_by(col(OtaArtifact.created_at).desc())).first()
    if artifact is None:
        raise ArtifactNotFound("target_unknown", f"no target {path!r}")
    return artifact
