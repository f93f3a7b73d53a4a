"""App factory. The full API (persistence, roles, topics) arrives with the service issue; until then
the app answers health checks and stateless classification so the portal team can integrate early."""

from __future__ import annotations

from fastapi import FastAPI


def create_app() -> FastAPI:
    app = FastAPI(title="triage", version="0.1.0", docs_url="/docs")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
