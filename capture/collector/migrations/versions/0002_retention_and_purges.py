"""Collector schema revision 0002: a study's retention, and the datasets a withdrawal must purge."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("retention_days", sa.Integer, nullable=False,
                                   server_default="365"))
    op.create_table(
        "purges",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("registry_seq", sa.Integer, nullable=False),
        sa.Column("bundle_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("dataset_id", sa.String(64), nullable=False),
        sa.Column("dataset_name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
    )
