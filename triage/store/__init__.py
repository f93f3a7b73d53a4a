"""Persistence: the ORM (SQLAlchemy 2; SQLite by default, PostgreSQL by URL) and its migrations.

``database``: tables, :class:`~triage.store.database.Store`, API keys, settings, the clock;
``migrations``: Alembic. State lives here; a worker keeps only rebuildable caches.
"""
