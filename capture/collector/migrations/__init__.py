"""Alembic migrations of the collector's database schema (one file per revision)."""
