"""Liveness, readiness and Prometheus metrics (labels carry route templates, never receipts or text)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="进程存活")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="可以接收请求：数据库可达、模型已加载",
            responses={503: {"description": "数据库不可达 / database unreachable (same body, status unready)"}})
async def readyz(request: Request) -> Response:
    rt = request.app.state.runtime
    # not in the request thread pool: under load it is full of submissions waiting their turn
    db = await asyncio.get_running_loop().run_in_executor(rt.probe, rt.store.ping)
    body = {"status": "ready" if db else "unready", "database": "ok" if db else "unreachable",
            "model": rt.office.triage.version}
    return JSONResponse(body, status_code=200 if db else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse,
            responses={200: {"description": "Prometheus text exposition format 0.0.4",
                             "content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics(request: Request) -> Response:
    return Response(request.app.state.runtime.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
