"""Administration: API keys, retraining (gated on a held-out split), jobs, configuration."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path

from service import jobs
from service.deps import ADMIN, STAFF, actor_of, require, runtime
from service.runtime import Runtime
from service.schemas import JobOut, KeyIn, KeyOut
from triage.assess.retrain import Retrainer
from triage.store.database import ApiKey, AuditEvent, Job, LastAdminKey

log = logging.getLogger(__name__)
router = APIRouter(tags=["admin"])
#: a row id: the database's INTEGER holds no more (2**63 reached it once and overflowed: a 500)
DbId = Annotated[int, Path(ge=1, le=2_147_483_647)]


def key_out(k: ApiKey, secret: str | None = None) -> dict:
    return {"id": k.id, "name": k.name, "role": k.role, "prefix": k.prefix, "can_unmask": k.can_unmask,
            "rate_per_minute": k.rate_per_minute, "created_at": k.created_at, "revoked_at": k.revoked_at,
            "key": secret}


@router.post("/keys", response_model=KeyOut, status_code=201, summary="新建 API 密钥（只显示一次）")
def create_key(body: KeyIn, key: ApiKey = Depends(require(*ADMIN)), rt: Runtime = Depends(runtime)) -> dict:
    row, secret = rt.store.create_key(body.role, body.name, body.can_unmask, body.rate_per_minute)
    return key_out(row, secret)


@router.get("/keys", response_model=list[KeyOut], summary="API 密钥列表（不含密钥本身）")
def list_keys(key: ApiKey = Depends(require(*ADMIN)), rt: Runtime = Depends(runtime)) -> list[dict]:
    return [key_out(k) for k in rt.store.list_keys()]


@router.delete("/keys/{key_id}", summary="吊销 API 密钥")
def revoke_key(key_id: DbId, key: ApiKey = Depends(require(*ADMIN)), rt: Runtime = Depends(runtime)) -> dict:
    try:
        revoked = rt.store.revoke_key(key_id, actor_of(key).name)
    except LastAdminKey as exc:
        raise HTTPException(409, str(exc)) from exc
    if not revoked:
        raise HTTPException(404, f"密钥 {key_id} 不存在或已吊销 / no such active key")
    rt.keys.clear()
    return {"revoked": key_id}


def _retrain(rt: Runtime, actor: str, progress: Callable[[dict], None] | None = None) -> dict:
    """The retraining job's work: gate, activate if not worse, audit (see triage.assess.retrain)."""
    result = Retrainer(rt.store, rt.office.triage.bundle, rt.models_dir(), rt.retrain_config).run(progress)
    with rt.store.session() as s:
        if result.get("activated"):
            rt.store.set_setting(s, "active_model", {"dir": result["model_dir"], "version": result["version"]})
        s.add(AuditEvent(actor=actor, role="admin", action="retrain", target_type="model",
                         target_id=result.get("version", "-"), detail=result))
    rt._checked = 0.0  # pick the new model up at the next request
    return result


@router.post("/retrain", response_model=JobOut, status_code=202,
             summary="用语料与工作人员更正重新训练；留出集上不差于现用模型才启用")
def retrain(key: ApiKey = Depends(require(*ADMIN)), rt: Runtime = Depends(runtime)) -> dict:
    if not Retrainer(rt.store, rt.office.triage.bundle, rt.models_dir(), rt.retrain_config).new_corrections():
        raise HTTPException(409, "自现用模型训练以来没有新的人工更正，无需重新训练 / no staff corrections since "
                                 "the active model was trained: nothing new to learn")
    name = actor_of(key).name
    return jobs.start(rt, "retrain", name, lambda job: _retrain(rt, name, jobs.reporter(rt, job)),
                      "已有重新训练任务在运行 / a retraining job is running")


@router.get("/jobs/{job_id}", response_model=JobOut, summary="任务状态（重新训练：管理员；重新聚类：工作人员）")
def get_job(job_id: DbId, key: ApiKey = Depends(require(*STAFF)), rt: Runtime = Depends(runtime)) -> dict:
    for kind in ("retrain", "recluster"):   # a dead worker's job reads as failed, with the reason
        rt.store.reap_stale_jobs(kind)
    with rt.store.session() as s:
        j = s.get(Job, job_id)
        if j is None or (j.kind == "retrain" and key.role not in ADMIN):
            raise HTTPException(404, f"任务 {job_id} 不存在 / no such job")
        return jobs.job_out(j)


@router.get("/config", summary="分类体系、专委会、部门（只读）")
def config(key: ApiKey = Depends(require(*ADMIN)), rt: Runtime = Depends(runtime)) -> dict:
    tax = rt.office.triage.taxonomy
    return {"model_version": rt.office.triage.version, "fast_model_version": rt.office.fast.version,
            "domains": [d.__dict__ for d in tax.domains], "committees": [c.__dict__ for c in tax.committees],
            "departments": [d.__dict__ for d in tax.departments], "scopes": tax.scopes,
            "channels": list(tax.channels)}
