"""回音壁: published consultation topics and their outcomes. No key, no personal data."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from service.deps import office_views
from service.schemas import BoardItem
from triage.office.views import Views
from triage.store.database import OUTCOME_CLASSES

router = APIRouter(tags=["public"])


@router.get("/public/board", response_model=list[BoardItem], summary="回音壁：已公示的协商议题与成果")
def board(limit: int = Query(100, ge=1, le=500), views: Views = Depends(office_views)) -> list[dict]:
    return [{"id": t.id, "label": t.label, "domain": t.domain, "committee": t.committee, "stage": t.stage,
             "outcome_class": t.outcome_class, "outcome_class_name": OUTCOME_CLASSES.get(t.outcome_class or ""),
             "outcome_unit": t.outcome_unit, "outcome": t.outcome, "size": t.size, "published_at": t.published_at}
            for t in views.board(limit)]
