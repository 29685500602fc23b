"""Build an evidence export bundle: files, node signatures and chains, audit, a signed manifest.

The layout and every check are in `fleet_server.evidence.verify` (which runs
offline). The manifest lists every other member with its SHA-256 and is
signed by the server's ``evidence-signer`` key (a `DocumentSigner`, never
the CA key), so one changed byte anywhere in the bundle is named by the
verifier. The audit records included are those about the exported files,
the subject (``alert:<id>`` / ``case:<id>``) and this export — who captured,
viewed and exported — with their chain hashes, each re-checkable offline.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from sqlmodel import Session, col, or_, select

from fleet_server.audit.chain import format_time
from fleet_server.evidence.service import EvidenceSigner
from fleet_server.evidence.store import EvidenceBlobStore
from fleet_server.evidence.verify import BUNDLE_FORMAT, MANIFEST, MANIFEST_SIG
from fleet_server.models.audit import AuditRecord
from fleet_server.models.evidence import EvidenceItem
from fleet_server.pki.ca import cert_pem
from proto.codec import encode_canonical

__all__ = ["build_bundle"]

_EXT = {"image/jpeg": ".jpg", "image/png": ".png"}


def _audit_records(session: Session, objects: Sequence[str]) -> list[dict[str, object]]:
    rows = session.exec(
        select(AuditRecord)
        .where(or_(*(col(AuditRecord.object) == o for o in objects)))
        .order_by(col(AuditRecord.seq))
    ).all()
    return [
        {
            "seq": r.seq,
            "at": format_time(r.at),
            "actor": r.actor,
            "action": r.action,
            "object": r.object,
            "detail": r.detail,
            "prev_hash": r.prev_hash,
            "hash": r.hash,
        }
        for r in rows
    ]


def build_bundle(
    *,
    session: Session,
    items: Sequence[EvidenceItem],
    subject: str,
    export_id: str,
    purpose: str,
    exported_by: str,
    approved_by: str | None,
    signer: EvidenceSigner,
    store: EvidenceBlobStore,
    crl_path: Path | None,
    now: datetime,
) -> tuple[bytes, str]:
    """The bundle's bytes and its manifest's SHA-256 (call after recording the export)."""
    members: dict[str, bytes] = {}
    entries = []
    for item in items:
        with store.open(item.sha256) as handle:
            data = handle.read()
        path = f"files/{item.sha256}{_EXT.get(item.content_type, '.bin')}"
        claim_name, certs_name = f"claims/{item.sha256}.json", f"certs/{item.sha256}.pem"
        members[path] = data
        members[claim_name] = encode_canonical({"claim": item.claim, "signature": item.signature})
        members[certs_name] = (
            item.cert_pem.strip().encode("ascii") + b"\n" + cert_pem(signer.issuer)
        )
        entries.append(
            {
                "path": path, "sha256": item.sha256, "size": item.size, "claim": claim_name,
                "certs": certs_name, "node_id": item.node_id, "camera_id": item.camera_id,
                "captured_at": item.claim.get("captured_at"), "data_class": item.data_class,
                "event_id": item.event_id,
            }
        )  # fmt: skip
    objects = [subject, f"export:{export_id}", *(f"evidence:{i.sha256}" for i in items)]
    members["audit.json"] = json.dumps(
        {"records": _audit_records(session, objects)}, indent=1, sort_keys=True
    ).encode("utf-8")
    if crl_path is not None and crl_path.exists():
        members["crl.pem"] = crl_path.read_bytes()
    manifest = {
        "format": BUNDLE_FORMAT, "bundle_id": export_id, "created_at": now.isoformat(),
        "subject": subject, "purpose": purpose, "exported_by": exported_by,
        "approved_by": approved_by, "items": entries,
        "documents": {name: hashlib.sha256(data).hexdigest() for name, data in members.items()},
    }  # fmt: skip
    manifest_bytes = json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8")
    signature = {"signature": signer.sign(manifest_bytes), "chain_pem": signer.chain_pem}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST, manifest_bytes)
        zf.writestr(MANIFEST_SIG, json.dumps(signature, indent=1))
        for name in sorted(members):
            zf.writestr(name, members[name])
    return out.getvalue(), hashlib.sha256(manifest_bytes).hexdigest()
