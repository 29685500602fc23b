"""Evidence: `evidenceitem`, `evidencerequest`, `evidencecase`, `evidencecaseitem`, `evidenceexport`

Node-signed evidence files by SHA-256 (claim, signature, the certificate that
signed, upload state), the server's requests for files nodes keep until
asked, cases whose open state is a legal hold, and export requests with
their purpose and approver. fleet_server.evidence, docs/evidence.md.
Issues 14 and 15.

Revision ID: 0012
Revises: 0011
Created: 2026-11-30 16:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fleet_server.models.common import UtcDateTime

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "evidenceitem",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data_class", sa.String(length=16), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("district", sa.String(length=64), nullable=True),
        sa.Column("camera_id", sa.String(length=64), nullable=True),
        sa.Column("event_id", sa.String(length=26), nullable=True),
        sa.Column("event_type", sa.String(length=32), nullable=True),
        sa.Column("alert_id", sa.String(length=26), nullable=True),
        sa.Column("captured_at", UtcDateTime(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("claim", sa.JSON(), nullable=False),
        sa.Column("signature", sa.String(length=256), nullable=False),
        sa.Column("cert_serial", sa.String(length=64), nullable=False),
        sa.Column("cert_pem", sa.String(length=8000), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("received_bytes", sa.Integer(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("stored_at", UtcDateTime(), nullable=True),
        sa.Column("deleted_at", UtcDateTime(), nullable=True),
        sa.Column("delete_reason", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.create_index(
        "ix_evidenceitem_retention", "evidenceitem", ["state", "data_class", "captured_at"]
    )
    op.create_index("ix_evidenceitem_alert", "evidenceitem", ["alert_id"])
    op.create_index("ix_evidenceitem_event", "evidenceitem", ["event_id"])
    op.create_table(
        "evidencerequest",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("requested_at", UtcDateTime(), nullable=False),
        sa.Column("purpose", sa.String(length=600), nullable=False),
        sa.Column("fulfilled_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.create_index("ix_evidencerequest_node_id", "evidencerequest", ["node_id"])
    op.create_table(
        "evidencecase",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("district", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("released_by", sa.String(length=128), nullable=True),
        sa.Column("released_at", UtcDateTime(), nullable=True),
        sa.Column("release_note", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("reference"),
    )
    op.create_table(
        "evidencecaseitem",
        sa.Column("case_id", sa.String(length=26), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("added_by", sa.String(length=128), nullable=False),
        sa.Column("added_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["evidencecase.id"]),
        sa.ForeignKeyConstraint(["sha256"], ["evidenceitem.sha256"]),
        sa.PrimaryKeyConstraint("case_id", "sha256"),
    )
    op.create_table(
        "evidenceexport",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=600), nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("requested_at", UtcDateTime(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("approved_by", sa.String(length=128), nullable=True),
        sa.Column("decided_at", UtcDateTime(), nullable=True),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("evidenceexport")
    op.drop_table("evidencecaseitem")
    op.drop_table("evidencecase")
    op.drop_index("ix_evidencerequest_node_id", table_name="evidencerequest")
    op.drop_table("evidencerequest")
    op.drop_index("ix_evidenceitem_event", table_name="evidenceitem")
    op.drop_index("ix_evidenceitem_alert", table_name="evidenceitem")
    op.drop_index("ix_evidenceitem_retention", table_name="evidenceitem")
    op.drop_table("evidenceitem")
