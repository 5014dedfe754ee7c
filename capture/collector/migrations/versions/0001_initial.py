"""Collector schema revision 0001: studies, invites, players, receipts, bundles, registry."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("terms_text", sa.Text, nullable=False),
        sa.Column("terms_version", sa.String(64), nullable=False),
        sa.Column("terms_sha256", sa.String(64), nullable=False),
        sa.Column("games", sa.JSON, nullable=False),
        sa.Column("scope", sa.JSON, nullable=False),
        sa.Column("purposes", sa.JSON, nullable=False),
        sa.Column("licence", sa.String(200), nullable=False),
        sa.Column("controller", sa.JSON, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "invites",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("study_id", sa.String(64), sa.ForeignKey("studies.id"), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("used_at", _TS, nullable=True),
    )
    op.create_table(
        "players",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("study_id", sa.String(64), sa.ForeignKey("studies.id"), nullable=False),
        sa.Column("pseudonym", sa.String(200), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("token_expires_at", _TS, nullable=False),
    )
    op.create_table(
        "receipts",
        sa.Column("receipt_id", sa.String(64), primary_key=True),
        sa.Column("player_id", sa.String(64), sa.ForeignKey("players.id"), nullable=False),
        sa.Column("study_id", sa.String(64), sa.ForeignKey("studies.id"), nullable=False),
        sa.Column("terms_sha256", sa.String(64), nullable=False),
        sa.Column("games", sa.JSON, nullable=False),
        sa.Column("scope", sa.JSON, nullable=False),
        sa.Column("withdrawn_games", sa.JSON, nullable=False),
        sa.Column("entry", sa.JSON, nullable=False),
        sa.Column("registry_seq", sa.Integer, nullable=False),
    )
    op.create_table(
        "bundles",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("player_id", sa.String(64), sa.ForeignKey("players.id"), nullable=False),
        sa.Column("study_id", sa.String(64), sa.ForeignKey("studies.id"), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("receipt_id", sa.String(64), nullable=False),
        sa.Column("game", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("manifest_text", sa.Text, nullable=False),
        sa.Column("total_bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
        sa.UniqueConstraint("player_id", "session_id", name="uq_bundles_player_session"),
    )
    op.create_table(
        "bundle_files",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("bundle_id", sa.String(64), sa.ForeignKey("bundles.id"), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("length", sa.BigInteger, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.UniqueConstraint("bundle_id", "name", name="uq_bundle_files_name"),
    )
    op.create_table(
        "upload_chunks",
        sa.Column("file_id", sa.String(64), sa.ForeignKey("bundle_files.id"), primary_key=True),
        sa.Column("offset", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("length", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
    )
    op.create_table(
        "registry",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("player_id", sa.String(64), nullable=False),
        sa.Column("entry_receipt_id", sa.String(64), nullable=False, unique=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("recorded_at", _TS, nullable=False),
    )
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("study_id", sa.String(64), sa.ForeignKey("studies.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "dataset_bundles",
        sa.Column("dataset_id", sa.String(64), sa.ForeignKey("datasets.id"), primary_key=True),
        sa.Column("bundle_id", sa.String(64), sa.ForeignKey("bundles.id"), primary_key=True),
    )
