"""Administration: API keys, retraining (gated on a held-out split), jobs, configuration."""

from __future__ import annotations

import logging
import os
import socket
import threading

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path

from service.deps import ADMIN, actor_of, require, runtime
from service.runtime import Runtime
from service.schemas import JobOut, KeyIn, KeyOut
from triage.retrain import Retrainer
from triage.store import ApiKey, AuditEvent, Job, LastAdminKey, utcnow

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


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:64]


def _beating(rt: Runtime, job_id: int) -> threading.Event:
    """Beat the job's heartbeat until the returned event is set (training is one long call)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(rt.store.JOB_BEAT_S):
            try:
                rt.store.beat(job_id, _holder())
            except Exception:  # noqa: BLE001 - a missed beat is retried; the job itself goes on
                log.warning("job %s: heartbeat failed", job_id, exc_info=True)

    threading.Thread(target=beat, daemon=True, name=f"triage-job-{job_id}-beat").start()
    return stop


def _run_retrain(rt: Runtime, job_id: int, actor: str) -> None:
    stop = _beating(rt, job_id)
    try:
        _retrain(rt, job_id, actor)
    finally:
        stop.set()


def _retrain(rt: Runtime, job_id: int, actor: str) -> None:
    try:
        result = Retrainer(rt.store, rt.office.triage.bundle, rt.models_dir(), rt.retrain_config).run()
        with rt.store.session() as s:
            job = s.get(Job, job_id)
            job.status, job.result, job.finished_at = "done", result, utcnow()
            if result.get("activated"):
                rt.store.set_setting(s, "active_model", {"dir": result["model_dir"], "version": result["version"]})
            s.add(AuditEvent(actor=actor, role="admin", action="retrain", target_type="model",
                             target_id=result.get("version", "-"), detail=result))
        rt._checked = 0.0  # pick the new model up at the next request
    except Exception as exc:  # noqa: BLE001 - the job records the failure for the admin to read
        log.exception("retraining failed")
        with rt.store.session() as s:
            job = s.get(Job, job_id)
            job.status, job.error, job.finished_at = "failed", str(exc)[:2000], utcnow()


@router.post("/retrain", response_model=JobOut, status_code=202,
             summary="用语料与工作人员更正重新训练；留出集上不差于现用模型才启用")
def retrain(key: ApiKey = Depends(require(*ADMIN)), rt: Runtime = Depends(runtime)) -> dict:
    if not Retrainer(rt.store, rt.office.triage.bundle, rt.models_dir(), rt.retrain_config).new_corrections():
        raise HTTPException(409, "自现用模型训练以来没有新的人工更正，无需重新训练 / no staff corrections since "
                                 "the active model was trained: nothing new to learn")
    rt.store.reap_stale_jobs("retrain")   # a job whose worker was killed no longer blocks this one
    with rt.store.session() as s:   # the check and the new job in one transaction
        running = s.query(Job).filter(Job.kind == "retrain", Job.status.in_(("queued", "running"))).first()
        if running is not None:
            raise HTTPException(409, f"已有重新训练任务 {running.id} 在运行 / a retraining job is running")
        job = Job(kind="retrain", status="running", params={"by": actor_of(key).name}, holder=_holder(),
                  heartbeat_at=utcnow())
        s.add(job)
        s.flush()
        out = job_out(job)
    threading.Thread(target=_run_retrain, args=(rt, out["id"], actor_of(key).name), daemon=True,
                     name="triage-retrain").start()
    return out


def job_out(j: Job) -> dict:
    return {"id": j.id, "kind": j.kind, "status": j.status, "result": j.result or {}, "error": j.error,
            "created_at": j.created_at, "finished_at": j.finished_at}


@router.get("/jobs/{job_id}", response_model=JobOut, summary="任务状态")
def get_job(job_id: DbId, key: ApiKey = Depends(require(*ADMIN)), rt: Runtime = Depends(runtime)) -> dict:
    rt.store.reap_stale_jobs("retrain")   # a dead worker's job reads as failed, with the reason
    with rt.store.session() as s:
        j = s.get(Job, job_id)
        if j is None:
            raise HTTPException(404, f"任务 {job_id} 不存在 / no such job")
        return job_out(j)


@router.get("/config", summary="分类体系、专委会、部门（只读）")
def config(key: ApiKey = Depends(require(*ADMIN)), rt: Runtime = Depends(runtime)) -> dict:
    tax = rt.office.triage.taxonomy
    return {"model_version": rt.office.triage.version, "fast_model_version": rt.office.fast.version,
            "domains": [d.__dict__ for d in tax.domains], "committees": [c.__dict__ for c in tax.committees],
            "departments": [d.__dict__ for d in tax.departments], "scopes": tax.scopes,
            "channels": list(tax.channels)}
