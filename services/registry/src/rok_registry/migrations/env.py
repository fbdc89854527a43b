"""Alembic environment: runs on the connection the registry hands over (see ``database.Database.migrate``)."""

from __future__ import annotations

from alembic import context
from rok_registry.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through rok_registry.database.Database.migrate()")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
