"""OTA on the server: artifacts, campaigns and each node's progress, node tags, site windows

`otaartifact` records what was uploaded (kind, version, hardware, SHA-256;
the bytes live in the artifact store), `otacampaign` a rollout in waves and
`otacampaignnode` every targeted node's wave and state. `otanodetag` and
`otasitewindow` hold what campaigns target and when a site may install
(issue 13, fleet_server/ota).

Revision ID: 0007
Revises: 0006
Created: 2026-11-30 13:51:15.580832
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import fleet_server.models.common

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "otaartifact",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("hardware", sa.JSON(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("created_at", fleet_server.models.common.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("otaartifact", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_otaartifact_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_otaartifact_name"), ["name"], unique=False)
        batch_op.create_index(batch_op.f("ix_otaartifact_sha256"), ["sha256"], unique=False)

    op.create_table(
        "otanodetag",
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("node_id", "tag"),
    )
    with op.batch_alter_table("otanodetag", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_otanodetag_tag"), ["tag"], unique=False)

    op.create_table(
        "otasitewindow",
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("tz", sa.String(length=64), nullable=False),
        sa.Column("start_minute", sa.Integer(), nullable=False),
        sa.Column("end_minute", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("site_id"),
    )
    op.create_table(
        "otacampaign",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("artifact_id", sa.String(length=26), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("waves", sa.JSON(), nullable=False),
        sa.Column("min_sample", sa.Integer(), nullable=False),
        sa.Column("failure_threshold", sa.Float(), nullable=False),
        sa.Column("wave_max_s", sa.Float(), nullable=True),
        sa.Column("offer_resend_s", sa.Float(), nullable=False),
        sa.Column("downgrade", sa.Boolean(), nullable=False),
        sa.Column("wave_index", sa.Integer(), nullable=False),
        sa.Column("wave_started_at", fleet_server.models.common.UtcDateTime(), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("created_at", fleet_server.models.common.UtcDateTime(), nullable=False),
        sa.Column("updated_at", fleet_server.models.common.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["artifact_id"],
            ["otaartifact.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("otacampaign", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_otacampaign_artifact_id"), ["artifact_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_otacampaign_state"), ["state"], unique=False)

    op.create_table(
        "otacampaignnode",
        sa.Column("campaign_id", sa.String(length=26), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("offers", sa.Integer(), nullable=False),
        sa.Column("offered_at", fleet_server.models.common.UtcDateTime(), nullable=True),
        sa.Column("updated_at", fleet_server.models.common.UtcDateTime(), nullable=False),
        sa.Column("reported_at", fleet_server.models.common.UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["otacampaign.id"],
        ),
        sa.PrimaryKeyConstraint("campaign_id", "node_id"),
    )
    with op.batch_alter_table("otacampaignnode", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_otacampaignnode_node_id"), ["node_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("otacampaignnode", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_otacampaignnode_node_id"))

    op.drop_table("otacampaignnode")
    with op.batch_alter_table("otacampaign", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_otacampaign_state"))
        batch_op.drop_index(batch_op.f("ix_otacampaign_artifact_id"))

    op.drop_table("otacampaign")
    op.drop_table("otasitewindow")
    with op.batch_alter_table("otanodetag", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_otanodetag_tag"))

    op.drop_table("otanodetag")
    with op.batch_alter_table("otaartifact", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_otaartifact_sha256"))
        batch_op.drop_index(batch_op.f("ix_otaartifact_name"))
        batch_op.drop_index(batch_op.f("ix_otaartifact_kind"))

    op.drop_table("otaartifact")
