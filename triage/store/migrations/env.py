"""Alembic environment: run by :meth:`triage.store.database.Store.upgrade` with a live connection.

``alembic -c triage/store/migrations/alembic.ini revision --autogenerate -m "..."`` (with
``TRIAGE_DATABASE_URL`` set) writes a new revision after a model change.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from triage.store.database import Base, default_url

config = context.config
target_metadata = Base.metadata


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is not None:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(os.environ.get("TRIAGE_DATABASE_URL") or default_url())
    with engine.begin() as c:
        context.configure(connection=c, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
