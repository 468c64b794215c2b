"""v1: jobs, job events, models and aliases.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from vision_trainer.store.migrations.v1_schema import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    metadata.create_all(op.get_bind())
