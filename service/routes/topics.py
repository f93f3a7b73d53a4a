"""Candidate topics for staff: list, detail (masked; unmasking audited), decisions, re-clustering."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query

from service import jobs
from service.deps import STAFF, actor_of, office_clustering, office_decisions, office_views, require, runtime
from service.runtime import Runtime
from service.schemas import DecisionIn, IsoDateTime, JobOut, TopicDetail, TopicList
from triage.office.clustering import ClusteringCoordinator
from triage.office.decisions import Decisions
from triage.office.views import Views
from triage.store.database import ApiKey, Topic

router = APIRouter(tags=["topics"])

TOPIC_FIELDS = ("id", "label", "status", "stage", "domain", "committee_id", "committee", "department",
                "route_reason", "heat", "verdict", "size", "submitters", "keywords", "places", "place",
                "first_seen", "last_seen", "theme", "merged_into", "outcome_class", "outcome_unit")


def topic_out(t: Topic) -> dict:
    return {k: getattr(t, k) for k in TOPIC_FIELDS}


@router.get("/topics", response_model=TopicList, summary="候选议题列表（按群众人数、再按热度排序）")
def list_topics(status: Literal["candidate", "accepted", "rejected", "merged"] | None = None,
                domain: str | None = None, committee: str | None = None, verdict: str | None = None,
                since: IsoDateTime | None = Query(None, description="最后一条留言不早于（ISO 8601）"),
                until: IsoDateTime | None = Query(None, description="第一条留言不晚于（ISO 8601）"),
                q: str | None = Query(None, max_length=100, description="标签或任一成员留言（脱敏后）包含"),
                sort: Literal["heat", "size", "recent"] = Query("heat", description="heat：群众人数优先、人数相同按热度；size：留言数；recent：最近留言"),
                limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0, le=1_000_000_000),
                petitions: bool = Query(False, description="也列出个人诉求（转部门办理的议题）；多位群众反映的同一诉求总在列表中"),
                key: ApiKey = Depends(require(*STAFF)), views: Views = Depends(office_views)) -> dict:
    total, rows = views.list_topics(status=status, domain=domain, committee=committee, verdict=verdict, since=since,
                                  until=until, q=q, sort=sort, limit=limit, offset=offset, petitions=petitions)
    return {"total": total, "items": [topic_out(t) for t in rows]}


@router.get("/topics/{topic_id}", response_model=TopicDetail, summary="议题详情：成员留言（已脱敏）、关键词、热度、五大原则")
def get_topic(topic_id: str, unmask: bool = Query(False, description="显示原文与联系方式（需权限，记入审计）"),
              reason: str = Query("", max_length=500, description="unmask 的理由"),
              key: ApiKey = Depends(require(*STAFF)), views: Views = Depends(office_views)) -> dict:
    d = views.topic(topic_id, actor_of(key), unmask=unmask, reason=reason)
    t = d["topic"]
    return {**topic_out(t), "representative": d["representative"], "heat_terms": t.heat_terms or {},
            "scorecard": t.scorecard or {}, "outcome": t.outcome, "members": d["members"],
            "decisions": [{"id": e.id, "at": e.at, "actor": e.actor, "role": e.role, "action": e.action,
                           "reason": e.reason, "detail": e.detail or {}} for e in d["decisions"]]}


@router.post("/topics/{topic_id}/decisions", summary="工作人员决定：采纳、驳回、合并、拆分、改派、改标签、更正、推进流程")
def decide(topic_id: str, body: DecisionIn, key: ApiKey = Depends(require(*STAFF)),
           decisions: Decisions = Depends(office_decisions)) -> dict:
    params = body.model_dump(exclude={"action", "reason"}, exclude_none=True)
    return decisions.decide(topic_id, body.action, actor_of(key), body.reason, **params)


@router.post("/topics/recluster", status_code=202, response_model=JobOut,
             summary="重新聚类（未经人工决定的候选议题）：返回任务，凭 GET /api/v1/jobs/{id} 查看进度与结果；议题编号按成员重叠保持不变")
def recluster(key: ApiKey = Depends(require(*STAFF)), clustering: ClusteringCoordinator = Depends(office_clustering),
              rt: Runtime = Depends(runtime)) -> dict:
    # minutes at 100k messages: a job, not a request held open (its worker's heartbeat shows it alive)
    busy = "正在重新聚类，请稍后再试 / a re-clustering is already running; try again shortly"
    if clustering.running_elsewhere():   # the service's own automatic run, or another worker's job
        raise HTTPException(409, busy)
    actor = actor_of(key)
    return jobs.start(rt, "recluster", actor.name,
                      lambda job: clustering.recluster(actor, progress=jobs.reporter(rt, job)), busy)
