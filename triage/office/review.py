"""Read-only views for the staff review page: weekly volumes, the needs-review queue, petitions by
department, overview counts, similar decided topics. Pure queries over the store; no HTML here."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import and_, case, exists, func, or_, select

from triage.store.database import Assessment, Correction, Store, Suggestion, Topic, utcnow


def week_start(ts: dt.datetime) -> dt.date:
    d = ts.date()
    return d - dt.timedelta(days=d.weekday())


def weekly_counts(store: Store, topic_ids: list[str], weeks: int = 12,
                  now: dt.datetime | None = None) -> dict[str, list[int]]:
    """Messages per week for each topic, oldest week first, ending with the week of ``now``
    (default: the newest message among these topics, so an archive still shows its shape)."""
    if not topic_ids:
        return {}
    with store.session() as s:
        rows = s.execute(select(Suggestion.topic_id, Suggestion.submitted_at)
                         .where(Suggestion.topic_id.in_(topic_ids))).all()
    if not rows:
        return {t: [0] * weeks for t in topic_ids}
    end = week_start(now or max(r[1] for r in rows))
    out = {t: [0] * weeks for t in topic_ids}
    for tid, at in rows:
        k = weeks - 1 - (end - week_start(at)).days // 7
        if 0 <= k < weeks:
            out[tid][k] += 1
    return out


@dataclass
class QueueItem:
    suggestion_id: int
    topic_id: str | None
    topic_label: str
    text: str
    domain: str | None
    domain_confidence: float
    scope: str | None
    scope_confidence: float
    topic_domain: str | None
    reasons: list[str]
    uncertainty: float


def needs_review(store: Store, limit: int = 100, low: float = 0.5) -> list[QueueItem]:
    """Assessments a correction would teach the most: low confidence, or a domain that disagrees
    with the topic's majority. Ordered by uncertainty (1 - the lower confidence), highest first.

    One query with the filter, the order and the limit in SQL: the page read every suggestion,
    assessment and topic of the store on each view (seconds at 100k messages, see bench/review_pages.py).
    """
    latest = (select(Assessment.suggestion_id, func.max(Assessment.id).label("aid"))
              .group_by(Assessment.suggestion_id).subquery())
    lower = case((Assessment.domain_confidence < Assessment.scope_confidence, Assessment.domain_confidence),
                 else_=Assessment.scope_confidence)
    disagrees = and_(Topic.domain.is_not(None), Suggestion.domain.is_not(None), Topic.domain != Suggestion.domain,
                     func.coalesce(Topic.size, 0) >= 2)
    q = (select(Suggestion, Topic, Assessment)
         .join(latest, latest.c.suggestion_id == Suggestion.id)
         .join(Assessment, Assessment.id == latest.c.aid)
         .outerjoin(Topic, Suggestion.topic_id == Topic.id)
         .where(~exists().where(Correction.suggestion_id == Suggestion.id))
         .where(or_(Assessment.domain_confidence < low, Assessment.scope_confidence < low + 0.15, disagrees))
         .order_by(lower, Suggestion.id).limit(limit))
    with store.session() as s:
        rows = s.execute(q).all()
    items: list[QueueItem] = []
    for sug, topic, a in rows:
        reasons = []
        if a.domain_confidence < low:
            reasons.append(f"领域置信度低（{a.domain_confidence:.2f}）")
        if a.scope_confidence < low + 0.15:
            reasons.append(f"群众性/个人诉求置信度低（{a.scope_confidence:.2f}）")
        if topic is not None and topic.domain and sug.domain and topic.domain != sug.domain and (topic.size or 0) >= 2:
            reasons.append(f"与议题多数领域（{topic.domain}）不一致")
        unc = 1.0 - min(a.domain_confidence, a.scope_confidence)
        items.append(QueueItem(sug.id, topic.id if topic else None, topic.label if topic else "", sug.text,
                               sug.domain, a.domain_confidence, sug.scope, a.scope_confidence,
                               topic.domain if topic else None, reasons, round(unc, 3)))
    return items


def petitions_by_department(store: Store, per_department: int = 20) -> list[dict[str, Any]]:
    """Individual petitions (个人诉求), grouped by the department they were forwarded to: the counts
    by GROUP BY, the newest ``per_department`` of each by a window function (not the whole table)."""
    dept = func.coalesce(func.nullif(Suggestion.route_name, ""), "未分办")
    petition = Suggestion.scope == "individual"
    with store.session() as s:
        counts = dict(s.execute(select(dept, func.count()).where(petition).group_by(dept)).all())
        ranked = (select(Suggestion.id, dept.label("dept"),
                         func.row_number().over(partition_by=dept, order_by=(Suggestion.submitted_at.desc(),
                                                                               Suggestion.id.desc())).label("n"))
                  .where(petition).subquery())
        rows = s.execute(select(Suggestion, ranked.c.dept).join(ranked, ranked.c.id == Suggestion.id)
                         .where(ranked.c.n <= per_department)
                         .order_by(ranked.c.dept, Suggestion.submitted_at.desc(), Suggestion.id.desc())).all()
    groups: dict[str, list[Suggestion]] = defaultdict(list)
    for r, d in rows:
        groups[d].append(r)
    out = [{"department": d, "count": int(n),
            "messages": [{"id": r.id, "submitted_at": r.submitted_at, "text": r.text, "domain": r.domain,
                          "channel": r.channel} for r in groups.get(d, [])]}
           for d, n in counts.items()]
    return sorted(out, key=lambda g: -g["count"])


def overview(store: Store, weeks: int = 12) -> dict[str, Any]:
    """Counts behind the overview plots: totals by GROUP BY; rows read only for the weeks plotted."""
    with store.session() as s:
        newest = s.execute(select(func.max(Suggestion.submitted_at))).scalar()
        end = week_start(newest or utcnow())
        start = dt.datetime.combine(end - dt.timedelta(weeks=weeks - 1), dt.time())
        recent = s.execute(select(Suggestion.submitted_at, Suggestion.domain)
                           .where(Suggestion.submitted_at >= start)).all()
        scopes: Counter = Counter()
        for sc, n in s.execute(select(Suggestion.scope, func.count()).group_by(Suggestion.scope)).all():
            scopes[sc or "unknown"] += int(n)   # NULL and "" are both unknown
        verdicts = s.execute(select(Topic.verdict, Topic.status, func.count()).where(Topic.status != "merged")
                             .group_by(Topic.verdict, Topic.status)).all()
    labels = [(end - dt.timedelta(weeks=weeks - 1 - k)).isoformat() for k in range(weeks)]
    by_week: dict[str, list[int]] = defaultdict(lambda: [0] * weeks)
    for at, dom in recent:
        k = weeks - 1 - (end - week_start(at)).days // 7
        if 0 <= k < weeks:
            by_week[dom or "未分类"][k] += 1
    vc: Counter = Counter()
    sc: Counter = Counter()
    for v, st, n in verdicts:
        vc[v or "未评估"] += n
        sc[st] += n
    return {"weeks": labels, "by_domain": dict(sorted(by_week.items(), key=lambda kv: -sum(kv[1]))),
            "scopes": dict(scopes), "verdicts": dict(vc), "statuses": dict(sc), "messages": sum(scopes.values())}


def similar_topics(store: Store, topic: Topic, limit: int = 5) -> list[dict[str, Any]]:
    """Decided topics (accepted or rejected) about the same problem: what staff did then."""
    mine = set(topic.keywords or [])
    with store.session() as s:
        rows = s.execute(select(Topic).where(Topic.id != topic.id, Topic.status.in_(("accepted", "rejected")))).scalars().all()
    scored = []
    for t in rows:
        kw = set(t.keywords or [])
        overlap = len(mine & kw) / max(1, len(mine | kw))
        same = 0.2 if t.domain == topic.domain else 0.0
        score = overlap + same
        if score >= 0.25:
            scored.append((score, t))
    scored.sort(key=lambda x: -x[0])
    return [{"id": t.id, "label": t.label, "status": t.status, "stage": t.stage, "score": round(sc, 2),
             "outcome_class": t.outcome_class} for sc, t in scored[:limit]]


def sparkline_points(counts: list[int], width: int = 96, height: int = 20) -> str:
    """SVG polyline points for a weekly-volume sparkline."""
    if not counts:
        return ""
    top = max(max(counts), 1)
    xs = np.linspace(1, width - 1, len(counts))
    return " ".join(f"{x:.1f},{height - 1 - (c / top) * (height - 3):.1f}" for x, c in zip(xs, counts))
