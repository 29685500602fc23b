"""OTA API: artifacts, campaigns, node tags, site windows, and the repository nodes read.

Admins write; admins, operators and auditors read. Every refusal is
``{"detail": {"reason", "message"}}`` with the code from `fleet_server.ota`
(docs/ota-server.md lists them). The repository (`/ota/repository/metadata/…`,
`/ota/repository/targets/…`) is what nodes download from: metadata files as
stored, targets with HTTP Range (206, `If-Range` on the SHA-256 ETag, 416).
It answers a signed-in user, a node by its client certificate (verified by
the TLS layer and passed in the ASGI `tls` extension, `fleet_server.ota.mtls`),
or anyone when `ota_repo_open` is set (docs/ota-server.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from sqlmodel import Session, col, delete, select

from fleet_server import audit
from fleet_server.api.deps import (
    AdminUser,
    Offset,
    RuntimeDep,
    SessionDep,
    TokenDep,
    _user_for,
    require_roles,
)
from fleet_server.api.errors import ErrorBody
from fleet_server.api.routes.enrollment import refusal
from fleet_server.api.scope import FleetScope
from fleet_server.models import Node, Role, User, utcnow
from fleet_server.models.ota import (
    CampaignCreate,
    CampaignState,
    OtaArtifactPublic,
    OtaArtifactsPublic,
    OtaCampaignPublic,
    OtaCampaignsPublic,
    OtaNodeTag,
    OtaSiteWindow,
    SiteWindowIn,
)
from fleet_server.ota import campaigns as campaign_data
from fleet_server.ota.artifacts import (
    artifact_in_use,
    delete_artifact,
    find_target,
    get_artifact,
    list_artifacts,
    public_artifact,
    upload_artifact,
)
from fleet_server.ota.errors import (
    ArtifactInUse,
    ArtifactNotFound,
    CampaignNotFound,
    OtaServerError,
    StorageError,
)
from fleet_server.ota.mtls import node_for_certificate
from fleet_server.ota.ranges import RangeNotSatisfiable, parse_range
from fleet_server.ota.signing import repository_for
from fleet_server.ota.storage import CHUNK, LocalArtifactStore
from fleet_server.runtime import Runtime
from ota.groups import is_group_name

__all__ = ["router", "store_for"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/ota", tags=["ota"])
# OTA management is fleet-wide (a campaign spans districts): only an every-district
# scope manages or reads it (`FleetScope`, docs/access.md); the repository routes
# are for nodes (mTLS) and need no scope.

ReaderUser = Annotated[User, Depends(require_roles(Role.ADMIN, Role.OPERATOR, Role.AUDITOR))]

_STATUS: dict[type[OtaServerError], int] = {
    ArtifactNotFound: status.HTTP_404_NOT_FOUND,
    CampaignNotFound: status.HTTP_404_NOT_FOUND,
    ArtifactInUse: status.HTTP_409_CONFLICT,
    StorageError: status.HTTP_507_INSUFFICIENT_STORAGE,
}
_REASON_STATUS = {
    "too_large": status.HTTP_413_CONTENT_TOO_LARGE,
    "version_exists": status.HTTP_409_CONFLICT,
    "illegal_transition": status.HTTP_409_CONFLICT,
    "nothing_to_retry": status.HTTP_409_CONFLICT,
}
_TOO_LARGE: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorBody, "description": "larger than ota_max_artifact_bytes"}
}
_STORAGE: dict[int | str, dict[str, Any]] = {
    507: {"model": ErrorBody, "description": "the artifact store could not keep it"}
}


def _refused(exc: OtaServerError) -> Exception:
    code = _REASON_STATUS.get(exc.reason) or _STATUS.get(type(exc)) or 422
    return refusal(exc.reason, exc.message, status_code=code)


@cache
def _store_at(path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(path)


def store_for(runtime: Runtime) -> LocalArtifactStore:
    """The server's artifact store (one per directory, made on first use)."""
    return _store_at(runtime.settings.ota_path.resolve())


# -------------------------------------------------------------- artifacts


@router.post(
    "/artifacts", status_code=status.HTTP_201_CREATED, responses={**_TOO_LARGE, **_STORAGE}
)
async def upload(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    user: AdminUser,
    _fleet: FleetScope,
    file: Annotated[UploadFile, File(description="the artifact bundle")],
    kind: Annotated[str, Form(description="app | model | config")],
    name: Annotated[str, Form(min_length=1, max_length=64)],
    version: Annotated[str, Form(min_length=1, max_length=64, description="dotted numbers")],
    hardware: Annotated[str, Form(description="comma-separated hardware names, or `any`")],
    note: Annotated[str, Form(max_length=500)] = "",
) -> OtaArtifactPublic:
    """Upload an artifact (multipart): its SHA-256 and length are computed here.

    Refused: an unknown kind, hardware no node runs (`wrong_hardware`), a
    version that is not dotted numbers, a name and version that exist, an
    upload over `ota_max_artifact_bytes` (413).
    """
    limit = runtime.settings.ota_max_artifact_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise refusal("too_large", f"the upload is larger than {limit} bytes", status_code=413)
    known = [*runtime.settings.ota_known_hardware, "any"]
    store = store_for(runtime)

    def chunks() -> Iterator[bytes]:
        file.file.seek(0)
        while chunk := file.file.read(CHUNK):
            yield chunk

    def work() -> OtaArtifactPublic:
        artifact = upload_artifact(
            session=session, store=store, kind=kind, name=name, version=version,
            hardware=hardware.split(","), chunks=chunks(), max_bytes=limit,
            known_hardware=known, created_by=user.username, now=utcnow(), note=note,
            repository=repository_for(runtime.settings),
        )  # fmt: skip
        session.commit()
        return public_artifact(artifact)

    try:
        return await run_in_threadpool(work)
    except OtaServerError as exc:
        raise _refused(exc) from None


@router.get("/artifacts")
def read_artifacts(
    session: SessionDep,
    _user: ReaderUser,
    _fleet: FleetScope,
    kind: str | None = None,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> OtaArtifactsPublic:
    """Artifacts, newest first, with whether a campaign names each."""
    data, count = list_artifacts(session=session, kind=kind, offset=offset, limit=limit)
    return OtaArtifactsPublic(data=data, count=count)


@router.get("/artifacts/{artifact_id}")
def read_artifact(
    session: SessionDep, _user: ReaderUser, _fleet: FleetScope, artifact_id: str
) -> OtaArtifactPublic:
    """One artifact."""
    try:
        artifact = get_artifact(session=session, artifact_id=artifact_id)
    except OtaServerError as exc:
        raise _refused(exc) from None
    return public_artifact(
        artifact, in_use=artifact_in_use(session=session, artifact_id=artifact_id)
    )


@router.delete("/artifacts/{artifact_id}")
def remove_artifact(
    session: SessionDep, runtime: RuntimeDep, user: AdminUser, _fleet: FleetScope, artifact_id: str
) -> OtaArtifactPublic:
    """Delete an artifact no campaign names (409 `artifact_in_use` otherwise)."""
    try:
        artifact = delete_artifact(
            session=session, store=store_for(runtime), artifact_id=artifact_id
        )
    except OtaServerError as exc:
        raise _refused(exc) from None
    audit.record(
        session, actor=f"user:{user.username}", action="ota.artifact_deleted",
        object=f"ota-artifact:{artifact_id}",
        detail={"name": artifact.name, "version": artifact.version, "sha256": artifact.sha256},
    )  # fmt: skip
    session.commit()
    logger.info("artifact %s deleted by %s", artifact_id, user.username)
    return public_artifact(artifact)


# -------------------------------------------------------------- campaigns


@router.post("/campaigns", status_code=status.HTTP_201_CREATED)
def create(
    session: SessionDep, user: AdminUser, _fleet: FleetScope, campaign_in: CampaignCreate
) -> OtaCampaignPublic:
    """Start a campaign; refused (422 `targets_nothing`) when its target reaches no node."""
    try:
        campaign = campaign_data.create_campaign(
            session=session, campaign_in=campaign_in, created_by=user.username, now=utcnow()
        )
    except OtaServerError as exc:
        raise _refused(exc) from None
    session.commit()
    return campaign_data.campaign_public(session=session, campaign=campaign, with_nodes=True)


@router.get("/campaigns")
def read_campaigns(
    session: SessionDep,
    _user: ReaderUser,
    _fleet: FleetScope,
    state: CampaignState | None = None,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> OtaCampaignsPublic:
    """Campaigns, newest first, with their node counts per state."""
    data, count = campaign_data.list_campaigns(
        session=session, state=state, offset=offset, limit=limit
    )
    return OtaCampaignsPublic(data=data, count=count)


@router.get("/campaigns/{campaign_id}")
def read_campaign(
    session: SessionDep, _user: ReaderUser, _fleet: FleetScope, campaign_id: str
) -> OtaCampaignPublic:
    """One campaign with every node's progress (wave, state, deferral reason or error)."""
    try:
        campaign = campaign_data.get_campaign(session=session, campaign_id=campaign_id)
    except OtaServerError as exc:
        raise _refused(exc) from None
    return campaign_data.campaign_public(session=session, campaign=campaign, with_nodes=True)


def _act(session: Session, campaign_id: str, move: Any, **kw: Any) -> OtaCampaignPublic:
    try:
        move(session=session, campaign_id=campaign_id, now=utcnow(), **kw)
        campaign = campaign_data.get_campaign(session=session, campaign_id=campaign_id)
    except OtaServerError as exc:
        raise _refused(exc) from None
    session.commit()
    return campaign_data.campaign_public(session=session, campaign=campaign)


@router.post("/campaigns/{campaign_id}/pause")
def pause(
    session: SessionDep, user: AdminUser, _fleet: FleetScope, campaign_id: str
) -> OtaCampaignPublic:
    """No further offers or waves until resumed."""
    return _act(session, campaign_id, campaign_data.pause_campaign, by=user.username)


@router.post("/campaigns/{campaign_id}/resume")
def resume(
    session: SessionDep, user: AdminUser, _fleet: FleetScope, campaign_id: str
) -> OtaCampaignPublic:
    """Carry on a paused campaign."""
    return _act(session, campaign_id, campaign_data.resume_campaign, by=user.username)


@router.post("/campaigns/{campaign_id}/abort")
def abort(
    session: SessionDep, user: AdminUser, _fleet: FleetScope, campaign_id: str
) -> OtaCampaignPublic:
    """Stop a campaign for good."""
    return _act(session, campaign_id, campaign_data.abort_campaign, by=user.username)


@router.post("/campaigns/{campaign_id}/retry-failed")
def retry(
    session: SessionDep, user: AdminUser, _fleet: FleetScope, campaign_id: str
) -> OtaCampaignPublic:
    """Offer the update again to the failed and rolled-back nodes only."""
    return _act(session, campaign_id, campaign_data.retry_failed, by=user.username)


# ------------------------------------------------------ tags and windows


@router.put("/nodes/{node_id}/tags")
def set_tags(
    session: SessionDep, _user: AdminUser, _fleet: FleetScope, node_id: str, tags: list[str]
) -> list[str]:
    """Replace a node's tags (campaign targets may name tags)."""
    if session.get(Node, node_id) is None:
        raise refusal("node_unknown", f"no node {node_id!r}", status_code=404)
    clean = sorted({t.strip() for t in tags if t.strip()})
    if any(len(t) > 64 for t in clean):
        raise refusal("bad_tag", "a tag has at most 64 characters", status_code=422)
    groups = [
        t.removeprefix(campaign_data.GROUP_TAG)
        for t in clean
        if t.startswith(campaign_data.GROUP_TAG)
    ]
    if len(groups) > 1 or any(not is_group_name(g) for g in groups):
        raise refusal(
            "bad_group",
            f"at most one {campaign_data.GROUP_TAG}<group> tag, the group in lower-case "
            "letters, digits and hyphens (the node's [ota] group)",
            status_code=422,
        )
    # A shared group must not be some other node's own group: that node would take
    # (and be offered) whatever the shared group is assigned.
    for group in groups:
        owner = campaign_data.group_owner(session=session, group=group)
        if owner is not None and owner != node_id:
            raise refusal(
                "group_taken",
                f"{group!r} is node {owner}'s own OTA group; choose another shared group name",
                status_code=409,
            )
    session.execute(delete(OtaNodeTag).where(col(OtaNodeTag.node_id) == node_id))
    session.add_all(OtaNodeTag(node_id=node_id, tag=t) for t in clean)
    session.commit()
    return clean


@router.get("/nodes/{node_id}/tags")
def read_tags(
    session: SessionDep, _user: ReaderUser, _fleet: FleetScope, node_id: str
) -> list[str]:
    """A node's tags."""
    return sorted(session.exec(select(OtaNodeTag.tag).where(OtaNodeTag.node_id == node_id)).all())


@router.put("/sites/{site_id}/window")
def set_window(
    session: SessionDep, _user: AdminUser, _fleet: FleetScope, site_id: str, window: SiteWindowIn
) -> SiteWindowIn:
    """When a site's nodes may install, in its own time zone (equal times: all day)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(window.tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise refusal(
            "bad_time_zone", f"unknown time zone {window.tz!r}", status_code=422
        ) from None

    def minutes(hhmm: str) -> int:
        hours, mins = hhmm.split(":")
        return int(hours) * 60 + int(mins)

    row = session.get(OtaSiteWindow, site_id) or OtaSiteWindow(
        site_id=site_id, tz=window.tz, start_minute=0, end_minute=0
    )
    row.tz, row.start_minute, row.end_minute = window.tz, minutes(window.start), minutes(window.end)
    session.add(row)
    session.commit()
    return window


# ------------------------------------------------------------- repository


def repository_reader(request: Request, token: TokenDep, runtime: RuntimeDep) -> str:
    """Who reads the repository: `open`, `node:<id>` (mTLS), or `user:<name>`.

    A client certificate arrives only when the TLS layer verified it against
    the fleet CA (`fleet_server.ota.mtls`); a certificate that is not a live
    node's is refused (403) rather than tried as a user.
    """
    if runtime.settings.ota_repo_open:
        return "open"
    extensions = request.scope.get("extensions") or {}
    chain = (extensions.get("tls") or {}).get("client_cert_chain") or []
    with Session(runtime.engine, expire_on_commit=False) as session:
        if chain and not token:
            try:
                return f"node:{node_for_certificate(session=session, pem=chain[0])}"
            except OtaServerError as exc:
                raise refusal(exc.reason, exc.message, status_code=403) from None
        user = _user_for(token, session, runtime)
    return f"user:{user.username}"


RepoReader = Annotated[str, Depends(repository_reader)]


@router.get("/repository/metadata/{name}", responses={200: {"content": {"application/json": {}}}})
def read_metadata(runtime: RuntimeDep, _reader: RepoReader, name: str) -> Response:
    """One TUF metadata file as signed (`root.json`, `2.root.json`, `timestamp.json`, …)."""
    try:
        data = store_for(runtime).metadata(name)
    except OtaServerError as exc:
        raise _refused(exc) from None
    return Response(data, media_type="application/json", headers={"Cache-Control": "no-store"})


def _file_chunks(handle: BinaryIO, start: int, length: int) -> Iterator[bytes]:
    try:
        handle.seek(start)
        left = length
        while left > 0:
            chunk = handle.read(min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk
    finally:
        handle.close()


@router.get(
    "/repository/targets/{target_path:path}",
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "the whole target"},
        206: {"content": {"application/octet-stream": {}}, "description": "the range asked"},
        416: {"model": ErrorBody, "description": "the range starts past the end"},
    },
)
def read_target(
    request: Request, session: SessionDep, runtime: RuntimeDep, _reader: RepoReader,
    target_path: str,
) -> Response:  # fmt: skip
    """A target's bytes; `Range: bytes=N-` resumes a cut download (`If-Range: "<sha256>"`)."""
    store = store_for(runtime)
    signed = store.open_signed_target(target_path)  # what the TUF repository lists, deltas too
    try:
        if signed is not None:
            handle, size, sha256 = signed
        else:
            artifact = find_target(session=session, path=target_path)
            handle, size = store.open(artifact.sha256)
            sha256 = artifact.sha256
    except OtaServerError as exc:
        raise _refused(exc) from None
    etag = f'"{sha256}"'
    headers = {"Accept-Ranges": "bytes", "ETag": etag}
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != etag:
        wanted = None  # the file changed since the part the client holds: send it whole
    try:
        byte_range = parse_range(wanted, size=size)
    except RangeNotSatisfiable:
        handle.close()
        return Response(
            content=b'{"detail":{"reason":"range_not_satisfiable","message":"the range starts '
            b'past the end of the target"}}',
            status_code=status.HTTP_416_RANGE_NOT_SATISFIABLE,
            media_type="application/json",
            headers={**headers, "Content-Range": f"bytes */{size}"},
        )
    if byte_range is None:
        headers["Content-Length"] = str(size)
        return StreamingResponse(
            _file_chunks(handle, 0, size), media_type="application/octet-stream", headers=headers
        )
    headers["Content-Length"] = str(byte_range.length)
    headers["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end}/{size}"
    return StreamingResponse(
        _file_chunks(handle, byte_range.start, byte_range.length),
        status_code=status.HTTP_206_PARTIAL_CONTENT,
        media_type="application/octet-stream",
        headers=headers,
    )
