"""Alembic environment: runs the collector's migrations on the connection db.migrate passes in."""

from __future__ import annotations

from alembic import context

from capture.collector.db import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
