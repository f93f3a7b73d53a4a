"""The HTTP service (FastAPI). It composes library stages; it never re-implements one."""
