"""v2: datasets and their images; jobs and models say which dataset they used.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("class_names", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("insights", sa.JSON),
    )
    op.create_table(
        "dataset_images",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("dataset_id", sa.String(32), sa.ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("label", sa.String(64)),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False, index=True),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.UniqueConstraint("dataset_id", "content_hash", name="uq_dataset_images_hash"),
    )
    op.create_index("ix_dataset_images_dataset_label", "dataset_images", ["dataset_id", "label"])
    op.add_column("jobs", sa.Column("kind", sa.String(16), nullable=False, server_default="train"))
    op.add_column("jobs", sa.Column("dataset_id", sa.String(32)))
    op.add_column("jobs", sa.Column("dataset_version", sa.Integer))
    op.create_index("ix_jobs_dataset_id", "jobs", ["dataset_id"])
    op.add_column("models", sa.Column("dataset_id", sa.String(32)))
    op.create_index("ix_models_dataset_id", "models", ["dataset_id"])
