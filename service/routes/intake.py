"""Portal intake: submit a suggestion, read one's own receipt, live classification hints."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Response
from starlette.concurrency import run_in_threadpool

from service.deps import ALL, intake_desk, office_views, require, runtime
from service.runtime import Runtime
from service.schemas import ClassifyIn, ClassifyOut, ReceiptOut, SuggestionIn, SuggestionOut
from triage.office.common import Intake, InvalidRequest, full_text
from triage.office.intake import IntakeDesk, Submission
from triage.office.views import Views
from triage.pipeline import validate_text
from triage.store.database import ApiKey

router = APIRouter(tags=["intake"])


def assessment_out(a) -> dict:
    return {"text": a.text, "domain": a.domain, "domain_confidence": a.domain_confidence,
            "domain_evidence": [{"term": t, "weight": float(w)} for t, w in a.domain_evidence],
            "scope": a.scope, "scope_confidence": a.scope_confidence, "scope_cues": a.scope_cues,
            "route": {"kind": a.route.kind, "id": a.route.id, "name": a.route.name, "reason": a.route.reason},
            "pii_kinds": a.pii_kinds, "model_version": a.model_version, "error": a.error}


def stored_assessment_out(row, text: str, pii: list[str]) -> dict:
    ev = row.evidence or {}
    return {"text": text, "domain": row.domain, "domain_confidence": row.domain_confidence,
            "domain_evidence": [{"term": t, "weight": w} for t, w in ev.get("domain", [])],
            "scope": row.scope, "scope_confidence": row.scope_confidence, "scope_cues": ev.get("scope_cues", {}),
            "route": {"kind": row.route_kind, "id": row.route_id, "name": row.route_name, "reason": row.route_reason},
            "pii_kinds": pii, "model_version": row.model_version}


@router.post("/suggestions", response_model=SuggestionOut, status_code=201,
             summary="提交留言（门户）：返回回执编号；工作人员密钥另返回完整分拣结果",
             responses={200: {"model": SuggestionOut,
                              "description": "同一 Idempotency-Key、同一内容的重试：原样返回首次的回执 / a retry, answered as first"}})
async def submit(body: SuggestionIn, response: Response, key: ApiKey = Depends(require(*ALL)),
                 desk: IntakeDesk = Depends(intake_desk), rt: Runtime = Depends(runtime),
                 idempotency_key: str | None = Header(None, max_length=200,
                                                      description="重试时带同一个值：不会重复受理")) -> dict:
    data = Intake(**body.model_dump())
    replay = await run_in_threadpool(desk.replay, data, key, idempotency_key)
    if replay is None:
        # the body, and the title and body together (the model reads both: within the length limit too)
        reason = validate_text(data.text) or validate_text(full_text(data))
        if reason is not None:
            raise InvalidRequest(reason)
        # concurrent submissions share one model call (the sentence encoder batches well)
        analysed = (await rt.analyse([full_text(data)]))[0]
        row, arow, replayed = await rt.submit(Submission(data, key, idempotency_key, analysed))
    else:
        (row, arow), replayed = replay, True
    if replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    else:
        rt.metrics.suggestions.labels(channel_kind="api").inc()
    out = {"receipt": row.receipt, "status": "received",
           "message": f"已受理，回执编号 {row.receipt}；可凭回执编号查询办理情况"}
    if key.role in ("staff", "admin"):
        out["assessment"] = stored_assessment_out(arow, row.text, list(row.pii_kinds or []))
        out["topic_id"] = row.topic_id
    return out


@router.get("/suggestions/{receipt}", response_model=ReceiptOut, summary="凭回执编号查询自己的留言（事事有回音）")
def receipt(receipt: str, key: ApiKey = Depends(require(*ALL)), views: Views = Depends(office_views)) -> dict:
    return views.receipt(receipt, key)


@router.post("/classify", response_model=ClassifyOut, summary="即时分拣提示（不存储）")
async def classify(body: ClassifyIn, key: ApiKey = Depends(require(*ALL)), rt: Runtime = Depends(runtime)) -> dict:
    # concurrent requests share one model call (service/batching.py); the event loop never blocks
    results = await (rt.classify_full if body.full else rt.classify_fast)(body.texts)
    return {"results": [assessment_out(a) for a in results]}
