"""Long work behind a 202: a job row with a status, run in a thread of the worker that took it.

Retraining (minutes) and re-clustering (minutes at 100k messages) must not hold an HTTP request open.
Each job beats a heartbeat while it runs (``Store.beat``); a job whose worker was killed stops beating
and is marked failed with the reason by ``Store.reap_stale_jobs``, so it never blocks the next one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException

from service.runtime import Runtime
from sqlalchemy import text, update

from triage.store.database import Job, utcnow

log = logging.getLogger(__name__)


def holder() -> str:
    """This worker, as a job's ``holder`` (host:pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"[:64]


def job_out(j: Job) -> dict:
    return {"id": j.id, "kind": j.kind, "status": j.status, "result": j.result or {}, "error": j.error,
            "progress": j.progress, "created_at": j.created_at, "finished_at": j.finished_at}


def reporter(rt: Runtime, job_id: int) -> Callable[[dict], None]:
    """What a job's work calls as each stage ends: the stage goes to the job's row (and beats)."""
    return lambda progress: rt.store.job_progress(job_id, progress)


def start(rt: Runtime, kind: str, actor: str, work: Callable[[int], dict[str, Any]], busy: str) -> dict:
    """A new ``kind`` job running ``work(job_id)`` in a thread; 409 with ``busy`` while one runs.

    ``work`` returns the job's result (stored as ``done``); an exception is stored as ``failed`` with
    its message. The check for a running job and the new row are one transaction.
    """
    rt.store.reap_stale_jobs(kind)   # a job whose worker was killed no longer blocks this one
    with rt.store.session() as s:
        # two requests at once must not both start one: take the write lock before the check
        # (SQLite: a first write; PostgreSQL: a table lock that conflicts with itself)
        if rt.store.dialect == "postgresql":
            s.execute(text("LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE"))
        else:
            s.execute(update(Job).where(Job.kind == kind).values(kind=Job.kind))
        running = s.query(Job).filter(Job.kind == kind, Job.status.in_(("queued", "running"))).first()
        if running is not None:
            raise HTTPException(409, f"{busy}（任务 {running.id}）")
        job = Job(kind=kind, status="running", params={"by": actor}, holder=holder(), heartbeat_at=utcnow())
        s.add(job)
        s.flush()
        out = job_out(job)
    threading.Thread(target=_run, args=(rt, out["id"], work), daemon=True, name=f"triage-{kind}-{out['id']}").start()
    return out


def _run(rt: Runtime, job_id: int, work: Callable[[int], dict[str, Any]]) -> None:
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(rt.store.JOB_BEAT_S):
            try:
                rt.store.beat(job_id, holder())
            except Exception:  # noqa: BLE001 - a missed beat is retried; the job itself goes on
                log.warning("job %s: heartbeat failed", job_id, exc_info=True)

    threading.Thread(target=beat, daemon=True, name=f"triage-job-{job_id}-beat").start()
    try:
        result = work(job_id)
        _finish(rt, job_id, status="done", result=result)
    except Exception as exc:  # noqa: BLE001 - the job records the failure for staff to read
        log.exception("job %s failed", job_id)
        _finish(rt, job_id, status="failed", error=str(exc)[:2000])
    finally:
        stop.set()


def _finish(rt: Runtime, job_id: int, **values: Any) -> None:
    """Record the outcome, unless the job was meanwhile marked failed as dead (its beats stopped
    reaching the database): that verdict stands and a new job may already run."""
    with rt.store.session() as s:
        done = s.execute(update(Job).where(Job.id == job_id, Job.status == "running")
                         .values(finished_at=utcnow(), **values)).rowcount
    if not done:
        log.warning("job %s finished after it was declared dead; its outcome (%s) is not recorded",
                    job_id, values.get("status"))
