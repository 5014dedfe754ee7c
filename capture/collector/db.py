"""The collector's database: tables (SQLAlchemy Core), engines, and migrations to the head."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

metadata = sa.MetaData()

studies = sa.Table(
    "studies", metadata,
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
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("retention_days", sa.Integer, nullable=False, server_default="365"),  # rev 0002
)

invites = sa.Table(
    "invites", metadata,
    sa.Column("code_hash", sa.String(64), primary_key=True),
    sa.Column("study_id", sa.String(64), sa.ForeignKey("studies.id"), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
)

players = sa.Table(
    "players", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("study_id", sa.String(64), sa.ForeignKey("studies.id"), nullable=False),
    sa.Column("pseudonym", sa.String(200), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("token_expires_at", sa.DateTime(timezone=True), nullable=False),
)

receipts = sa.Table(
    "receipts", metadata,
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

bundles = sa.Table(
    "bundles", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("player_id", sa.String(64), sa.ForeignKey("players.id"), nullable=False),
    sa.Column("study_id", sa.String(64), sa.ForeignKey("studies.id"), nullable=False),
    sa.Column("session_id", sa.String(128), nullable=False),
    sa.Column("receipt_id", sa.String(64), nullable=False),
    sa.Column("game", sa.String(200), nullable=False),
    # uploading | assembling | accepted | rejected | withdrawn
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("manifest_text", sa.Text, nullable=False),
    sa.Column("total_bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    # rev 0003: when an instance began assembling it (its claim lapses after CLAIM_LEASE)
    sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("player_id", "session_id", name="uq_bundles_player_session"),
)

bundle_files = sa.Table(
    "bundle_files", metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # the tus upload id
    sa.Column("bundle_id", sa.String(64), sa.ForeignKey("bundles.id"), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("length", sa.BigInteger, nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.UniqueConstraint("bundle_id", "name", name="uq_bundle_files_name"),
)

upload_chunks = sa.Table(  # confirmed chunks; the store keeps each under uploads/<file id>/
    "upload_chunks", metadata,
    sa.Column("file_id", sa.String(64), sa.ForeignKey("bundle_files.id"), primary_key=True),
    sa.Column("offset", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("length", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
)

registry = sa.Table(
    "registry", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),  # grant | revoke
    sa.Column("player_id", sa.String(64), nullable=False),
    sa.Column("entry_receipt_id", sa.String(64), nullable=False, unique=True),
    sa.Column("body", sa.Text, nullable=False),  # canonical JSON the hash is taken over
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)

datasets = sa.Table(
    "datasets", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("study_id", sa.String(64), sa.ForeignKey("studies.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

dataset_bundles = sa.Table(
    "dataset_bundles", metadata,
    sa.Column("dataset_id", sa.String(64), sa.ForeignKey("datasets.id"), primary_key=True),
    sa.Column("bundle_id", sa.String(64), sa.ForeignKey("bundles.id"), primary_key=True),
)

purges = sa.Table(  # rev 0002: datasets to purge after a withdrawal (the next step starts here)
    "purges", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("registry_seq", sa.Integer, nullable=False),
    sa.Column("bundle_id", sa.String(64), nullable=False),
    sa.Column("session_id", sa.String(128), nullable=False),
    sa.Column("dataset_id", sa.String(64), nullable=False),
    sa.Column("dataset_name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
)


def now() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """SQLite gives naive datetimes back; they were written in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'collector.sqlite3'}"


def make_engine(url: str) -> Engine:
    """An engine for `url`; `postgresql://` goes through psycopg 3, SQLite waits on locks."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(conn, _record):  # type: ignore[no-untyped-def]
            cursor = conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` with Alembic (PostgreSQL: under an advisory lock)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7210914)"))
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
