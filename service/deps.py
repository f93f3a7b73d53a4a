"""Dependencies: the runtime (store, loaded model), the caller's key and role."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Header, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from service.runtime import Runtime
from triage.office.clustering import ClusteringCoordinator
from triage.office.common import Actor
from triage.office.decisions import Decisions
from triage.office.intake import IntakeDesk
from triage.office.office import Office
from triage.office.views import Views
from triage.store.database import ApiKey

ALL = ("portal", "staff", "admin")
STAFF = ("staff", "admin")
ADMIN = ("admin",)


# Dependencies are coroutines; the caller's check (key lookup, shared rate count: both may read or
# write the database) takes one hop through the thread pool, so the event loop never waits on it.
async def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    rt.check_model()
    return rt


async def office(rt: Runtime = Depends(runtime)) -> Office:
    return rt.office


# the office's services, for routes that need one of them (FastAPI's template: dependencies injected)
async def intake_desk(rt: Runtime = Depends(runtime)) -> IntakeDesk:
    return rt.office.intake


async def office_views(rt: Runtime = Depends(runtime)) -> Views:
    return rt.office.views


async def office_decisions(rt: Runtime = Depends(runtime)) -> Decisions:
    return rt.office.decisions


async def office_clustering(rt: Runtime = Depends(runtime)) -> ClusteringCoordinator:
    return rt.office.clustering


async def caller(request: Request, rt: Runtime = Depends(runtime),
           x_api_key: str | None = Header(None, description="API 密钥"),
           authorization: str | None = Header(None, description="Bearer <API 密钥>")) -> ApiKey:
    key = x_api_key
    if not key and authorization and authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    if not key:
        raise HTTPException(401, "缺少 API 密钥（X-API-Key 或 Authorization: Bearer）/ API key required")
    if len(key) > 200:
        raise HTTPException(401, "API 密钥无效或已吊销 / invalid or revoked API key")
    # both may wait on the database (the key, the shared rate count): off the event loop
    row, (ok, wait) = await run_in_threadpool(_check, rt, key)
    if row is None:
        raise HTTPException(401, "API 密钥无效或已吊销 / invalid or revoked API key")
    if not ok:
        raise HTTPException(429, f"请求过于频繁，请 {wait:.1f} 秒后再试 / rate limit exceeded",
                            headers={"Retry-After": str(max(1, int(wait + 0.999)))})
    request.state.key = row
    return row


def _check(rt: Runtime, key: str) -> tuple[ApiKey | None, tuple[bool, float]]:
    row = rt.keys.get(key)
    if row is None:
        return None, (True, 0.0)
    limit = row.rate_per_minute if row.rate_per_minute is not None else rt.settings.role_rate.get(row.role, 0)
    return row, rt.limiter.allow(row.id, limit)


def require(*roles: str) -> Callable[..., ApiKey]:
    async def dep(key: ApiKey = Depends(caller)) -> ApiKey:
        if key.role not in roles:
            raise HTTPException(403, f"角色 {key.role} 无权执行此操作（需要 {' / '.join(roles)}）/ forbidden for this role")
        return key
    return dep


def actor_of(key: ApiKey) -> Actor:
    return Actor(name=f"{key.name}#{key.id}", role=key.role, key_id=key.id, can_unmask=key.can_unmask)
