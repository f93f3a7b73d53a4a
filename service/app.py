"""App factory: the API under /api/v1, Open311, the 回音壁, health and metrics.

Errors always answer ``{"error": {"code", "message"}}`` (Open311 paths: the GeoReport list shape) with
a 4xx the caller can act on; a 500 means a bug and is logged with its traceback, never with the
request body (it may hold personal data).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.routes import admin, alerts, intake, ops, public, review, topics
from service.routes.open311 import Open311Error, open311_error_response
from service.routes.open311 import router as open311_router
from service.runtime import Runtime, Settings
from service.schemas import ERROR_RESPONSES, OPEN311_ERROR_RESPONSES
from triage.errors import TriageError
from triage.office.common import Conflict, Forbidden, InvalidRequest, NotFound
from triage.store.database import StoreError

log = logging.getLogger(__name__)

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid",
         429: "rate_limited", 500: "internal", 503: "unavailable"}


def _error(request: Request | None, status: int, message: str, headers: dict | None = None) -> JSONResponse:
    if request is not None and request.url.path.startswith("/open311/"):
        return JSONResponse([{"code": status, "description": message}], status_code=status, headers=headers)
    return JSONResponse({"error": {"code": CODES.get(status, str(status)), "message": message}},
                        status_code=status, headers=headers)


class BodyLimit:
    """413 for bodies over the limit, whether or not the client declared Content-Length."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            size += len(body)
            if size > self.limit:
                await self._too_large(scope, receive, send)
                return
            chunks.append(body)
            more = msg.get("more_body", False)
        whole = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        resp = _error(None, 413, f"请求体超过 {self.limit // 1024} KB 上限 / request body too large")
        if scope.get("path", "").startswith("/open311/"):
            resp = JSONResponse([{"code": 413, "description": "request body too large"}], status_code=413)
        await resp(scope, receive, send)


def _route_label(scope: Scope) -> str:
    """The path template (``/api/v1/suggestions/{receipt}``): a metric label never holds a receipt or id."""
    if scope.get("route") is None:
        return "unmatched"
    path = scope.get("path", "")
    for k, v in (scope.get("path_params") or {}).items():
        path = path.replace(f"/{v}", f"/{{{k}}}", 1)
    return path


class Observe:
    """Request counts and latency per route template (plain ASGI: BaseHTTPMiddleware costs ~1 ms)."""

    def __init__(self, app: ASGIApp, metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_status(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, send_status)
        finally:
            label = _route_label(scope)
            self.metrics.requests.labels(scope["method"], label, str(status[0])).inc()
            self.metrics.latency.labels(scope["method"], label).observe(time.perf_counter() - start)


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errs = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errs):
        return 400, "请求体不是有效的 JSON / malformed JSON body"
    parts = []
    for e in errs[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        kind = e.get("type", "")
        if kind == "extra_forbidden":
            msg = "未知字段 / unknown field"
        elif kind == "missing":
            msg = "缺少此字段 / field required"
        elif kind in ("string_too_long", "too_long"):
            msg = f"过长 / too long (max {e.get('ctx', {}).get('max_length')})"
        elif kind in ("string_too_short", "too_short"):
            msg = "不能为空 / must not be empty"
        elif kind == "string_pattern_mismatch" and loc.endswith("reason"):
            msg = "请填写理由（至少两个字）/ a reason of two characters or more is required"
        elif kind == "string_pattern_mismatch":
            msg = "为空或不含文字（至少两个字）/ empty or no words"
        else:
            msg = e.get("msg", "invalid")
        parts.append(f"{loc}: {msg}")
    return 422, "；".join(parts)


def _methods_for(app: FastAPI, path: str) -> list[str]:
    """Every method the API documents at ``path`` (the Allow header of a 405), from the schema's
    path templates: the routers are included lazily, the schema lists them all."""
    paths = app.openapi().get("paths", {})
    if path in paths:   # a fixed path (/topics/recluster) is its own resource, whatever a template matches
        return sorted(m.upper() for m in paths[path])
    methods: set[str] = set()
    for template, ops in paths.items():
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), path):
            methods |= {m.upper() for m in ops}
    return sorted(methods)


def _open311_codes_in_schema(app: FastAPI, rt: Runtime) -> None:
    """The schema lists the office's own service codes (they come from its taxonomy, known only at
    start), so a generated client offers exactly the codes the service accepts."""
    from service.routes.open311 import _services

    plain = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = plain()
            codes = [x["service_code"] for x in _services(rt.office)]
            op = schema.get("paths", {}).get("/open311/v2/requests.json", {}).get("post", {})
            for content in op.get("requestBody", {}).get("content", {}).values():
                content["schema"]["properties"]["service_code"] = {**content["schema"]["properties"]["service_code"],
                                                                   "enum": codes}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


DOCS_ASSETS = "/docs-assets"


def _api_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) served with its scripts from the installed package, as FastAPI documents for
    self-hosting: government networks are offline, and FastAPI's default loads them from a CDN (the
    page stayed blank). The assets come from ``fastapi-offline`` (MIT; Swagger UI is Apache-2.0).
    No /redoc: ReDoc fetches its logo from a CDN whatever it is told."""
    from importlib.resources import files

    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} · 接口文档",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
                                   # no badge from the online validator: nothing leaves the network
                                   swagger_ui_parameters={"validatorUrl": None})


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    rt = runtime or Runtime(settings)
    app = FastAPI(title="triage · 政协“有事来协商”留言分拣", version="0.1.0", docs_url=None, redoc_url=None,
                  description="提交留言、查询回执、即时分拣提示；候选议题、工作人员决定、协商流程与回音壁。"
                              "密钥通过 X-API-Key 或 Authorization: Bearer 传递。")
    app.state.runtime = rt

    app.add_middleware(Observe, metrics=rt.metrics)
    app.add_middleware(BodyLimit, limit=rt.settings.max_body_bytes)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        msg = exc.detail if isinstance(exc.detail, str) else CODES.get(exc.status_code, "error")
        headers = getattr(exc, "headers", None)
        if exc.status_code == 404 and msg == "Not Found":
            msg = "没有这个地址 / no such endpoint"
        if exc.status_code == 405:
            # Starlette names only the first matching route's methods (POST for /keys, which GET serves too)
            allowed = _methods_for(app, request.url.path)
            msg = f"此地址不支持 {request.method}，可用：{', '.join(allowed)} / method not allowed"
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        return _error(request, exc.status_code, msg, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        status, msg = _validation_message(exc)
        return _error(request, status, msg)

    @app.exception_handler(Open311Error)
    async def open311_error(request: Request, exc: Open311Error):
        return open311_error_response(exc)

    statuses = ((NotFound, 404), (Conflict, 409), (InvalidRequest, 422), (Forbidden, 403), (StoreError, 503))

    @app.exception_handler(TriageError)
    async def triage_error(request: Request, exc: TriageError):
        status = next((code for cls, code in statuses if isinstance(exc, cls)), 400)
        return _error(request, status, str(exc))

    @app.exception_handler(OperationalError)
    async def db_down(request: Request, exc: OperationalError):
        log.error("database unavailable: %s", type(exc.orig).__name__)
        return _error(request, 503, "数据库暂时不可用，请稍后重试 / database unavailable, retry later",
                      {"Retry-After": "5"})

    @app.exception_handler(DBAPIError)
    async def db_error(request: Request, exc: DBAPIError):
        log.error("database error: %s", type(exc.orig).__name__)
        return _error(request, 503, "数据库拒绝写入，请稍后重试 / database refused the write", {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
        return _error(request, 500, "服务内部错误，已记录 / internal error (logged)")

    app.include_router(ops.router)
    for r in (intake.router, topics.router, public.router, admin.router, alerts.router):
        app.include_router(r, prefix="/api/v1", responses=ERROR_RESPONSES)
    app.include_router(open311_router, responses=OPEN311_ERROR_RESPONSES)
    app.include_router(review.router)
    from fastapi.responses import RedirectResponse
    from fastapi.staticfiles import StaticFiles

    app.mount(f"{review.BASE}/static", StaticFiles(directory=str(Path(__file__).with_name("static"))), name="static")

    @app.exception_handler(review.LoginRequired)
    async def login_required(request: Request, exc: review.LoginRequired):
        return RedirectResponse(f"{review.BASE}/login", status_code=303)

    _api_docs(app)
    _open311_codes_in_schema(app, rt)

    @app.get("/", include_in_schema=False)
    async def root():
        return RedirectResponse(f"{review.BASE}/", status_code=307)

    return app
