"""What each reader may see: a citizen's receipt, the staff topic list and a topic's members, the 回音壁.

Read-only, except the audit event an unmasking leaves. Texts are masked; the raw text and contact
only with a key that may unmask, and a reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from triage.judge.rank import rank_order_by
from triage.office.common import Actor, Forbidden, NotFound, OfficeService, masked_title, shown_id
from triage.store.database import PUBLISHED_STAGES, ApiKey, Assessment, AuditEvent, Suggestion, Topic


class Views(OfficeService):
    """Receipts, topic lists, one topic, the published board."""

    def receipts(self, key: ApiKey | None, *, receipts: Sequence[str] | None = None,
                 since: dt.datetime | None = None, until: dt.datetime | None = None,
                 limit: int = 1000) -> list[dict[str, Any]]:
        """Several suggestions' :meth:`receipt` records, newest first, as a caller may see them: a
        portal key its own submissions, a staff or admin key every one, no key only those whose
        topic is published on 回音壁 (what the office has already made public). Texts are masked."""
        stmt = select(Suggestion).order_by(Suggestion.submitted_at.desc(), Suggestion.id.desc()).limit(limit)
        if receipts:
            stmt = stmt.where(Suggestion.receipt.in_(list(receipts)[:1000]))
        else:
            if since is not None:
                stmt = stmt.where(Suggestion.submitted_at >= since)
            if until is not None:
                stmt = stmt.where(Suggestion.submitted_at <= until)
        if key is None:
            published = select(Topic.id).where(Topic.status == "accepted", Topic.stage.in_(PUBLISHED_STAGES))
            stmt = stmt.where(Suggestion.topic_id.in_(published))
        elif key.role == "portal":
            stmt = stmt.where(Suggestion.api_key_id == key.id)
        with self.store.session() as s:
            return [self._receipt_of(s, row) for row in s.execute(stmt).scalars()]

    def receipt(self, receipt: str, key: ApiKey | None) -> dict[str, Any]:
        """What a citizen may know about their own suggestion: status, not other people's data.

        ``key`` None is the holder of the receipt number alone (an Open311 client asking by id): the
        number is unguessable (8 random base-32 characters), so knowing it is the right to ask."""
        with self.store.session() as s:
            row = s.execute(select(Suggestion).where(Suggestion.receipt == receipt)).scalar_one_or_none()
            if row is None or (key is not None and key.role == "portal" and row.api_key_id != key.id):
                raise NotFound(f"回执编号 {shown_id(receipt)} 不存在 / no such receipt")
            return self._receipt_of(s, row)

    @staticmethod
    def _receipt_of(s: Session, row: Suggestion) -> dict[str, Any]:
        """One suggestion's status record (the caller has checked who may see it)."""
        topic = s.get(Topic, row.topic_id) if row.topic_id else None
        for _ in range(20):   # a chain of merges; bounded: two workers merging opposite ways make a loop
            if topic is None or topic.status != "merged" or not topic.merged_into:
                break
            topic = s.get(Topic, topic.merged_into)
        out: dict[str, Any] = {"receipt": row.receipt, "submitted_at": row.submitted_at, "channel": row.channel,
                               "text": row.text, "status": "received", "status_text": "已受理",
                               "stage": None, "topic": None, "forwarded_to": None, "outcome": None,
                               "domain": row.stated_domain or row.domain, "place": row.place_given or row.place,
                               "updated_at": max(row.created_at, topic.updated_at) if topic is not None
                               and topic.updated_at else row.created_at}
        if row.scope == "individual" and row.route_kind == "department" and (
                topic is None or topic.status != "accepted"):
            out.update(status="forwarded", status_text=f"属个人诉求，已转交{row.route_name}办理",
                       forwarded_to=row.route_name)
        elif topic is not None and topic.status == "accepted":
            out.update(status="accepted", status_text=f"已列为协商议题（{topic.stage}）", stage=topic.stage,
                       topic={"label": topic.label, "stage": topic.stage})
            if topic.stage in PUBLISHED_STAGES:
                out["outcome"] = {"class": topic.outcome_class, "unit": topic.outcome_unit, "text": topic.outcome}
        elif topic is not None and topic.status == "rejected":
            out.update(status="not_selected", status_text="经审核，未列为本期协商议题，意见已存档供参考")
        elif topic is not None:
            out.update(status="in_review", status_text="已受理，归入候选议题，待审核")
        return out

    def list_topics(self, *, status: str | None = None, domain: str | None = None, committee: str | None = None,
                    verdict: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None,
                    q: str | None = None, sort: str = "heat", limit: int = 50, offset: int = 0,
                    petitions: bool = False) -> tuple[int, list[Topic]]:
        """Topics, most distinct citizens first, then hottest (``sort="heat"``). Individual petitions (routed to a department) stay out of the list
        unless ``petitions``: they belong in the 个人诉求 view by department, and on a real board they
        outnumber group issues. A petition that many different citizens raise (twenty workers owed
        wages by one employer) is a group issue by the 群众性 test and stays in."""
        stmt = select(Topic)
        stmt = stmt.where(Topic.status == status) if status else stmt.where(Topic.status != "merged")
        if not petitions and status in (None, "candidate"):
            stmt = stmt.where((Topic.route_kind != "department") | (Topic.route_kind.is_(None)) | Topic.pinned
                              | (Topic.status != "candidate") | (Topic.submitters >= self.config.petition_group_min))
        if domain:
            stmt = stmt.where(Topic.domain == domain)
        if committee:
            stmt = stmt.where((Topic.committee_id == committee) | (Topic.committee == committee))
        if verdict:
            stmt = stmt.where(Topic.verdict == verdict)
        if since:
            stmt = stmt.where(Topic.last_seen >= since)
        if until:
            stmt = stmt.where(Topic.first_seen <= until)
        if q:
            # the label or any member's (masked) text, which holds the keywords: staff search for 路灯 and expect
            # the topic whose messages say 路灯不亮 whatever its label says. Masked text only, so a
            # search never finds a topic by a citizen's phone number or name.
            members = select(Suggestion.topic_id).where(self.store.text_matches(q), Suggestion.topic_id.is_not(None))
            stmt = stmt.where(Topic.label.contains(q, autoescape=True) | Topic.id.in_(members))
        order = {"heat": rank_order_by(Topic),   # citizens first, then heat
                 "size": (Topic.size.desc(), Topic.heat.desc()),
                 "recent": (Topic.last_seen.desc(),)}[sort]
        with self.store.session() as s:
            total = s.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
            rows = list(s.execute(stmt.order_by(*order, Topic.id).limit(limit).offset(offset)).scalars())
        return int(total), rows

    def topic(self, tid: str, actor: Actor, unmask: bool = False, reason: str = "") -> dict[str, Any]:
        if unmask:
            if not actor.can_unmask:
                raise Forbidden("此密钥无查看个人信息的权限 / this key may not unmask personal data")
            self.need_reason(reason)
        with self.store.session() as s:
            t = s.get(Topic, tid)
            if t is None:
                raise NotFound(f"议题 {shown_id(tid)} 不存在 / no such topic")
            members = list(s.execute(select(Suggestion).where(Suggestion.topic_id == tid)
                                     .order_by(Suggestion.submitted_at, Suggestion.id)).scalars())
            conf = {r.suggestion_id: r for r in s.execute(
                select(Assessment).where(Assessment.suggestion_id.in_([m.id for m in members]))
                .order_by(Assessment.id)).scalars()} if members else {}
            trail = list(s.execute(select(AuditEvent).where(AuditEvent.target_type == "topic",
                                                            AuditEvent.target_id == tid).order_by(AuditEvent.id)).scalars())
            if unmask:
                s.add(AuditEvent(actor=actor.name, role=actor.role, action="unmask", target_type="topic", target_id=tid,
                                 reason=reason, detail={"suggestions": [m.id for m in members]}))
            rep = next((m for m in members if m.id == t.representative_id), members[0] if members else None)
            out = {"topic": t, "representative": rep.text if rep else "", "decisions": trail, "members": []}
            for m in members:
                a = conf.get(m.id)
                item = {"id": m.id, "submitted_at": m.submitted_at, "channel": m.channel, "text": m.text,
                        # the title as masked at intake (the masked text's first line), never the stored raw title
                        "title": masked_title(m.title, m.text), "place": m.place, "support": m.support,
                        "domain": m.domain, "scope": m.scope, "stated_domain": m.stated_domain,
                        "domain_confidence": a.domain_confidence if a else None,
                        "scope_confidence": a.scope_confidence if a else None,
                        "model_version": a.model_version if a else None}
                if unmask:
                    item.update(raw_text=m.raw_text, raw_title=m.title or "", contact=m.contact)
                out["members"].append(item)
            return out

    def board(self, limit: int = 100) -> list[Topic]:
        """回音壁: published topics and their outcomes (no member data)."""
        with self.store.session() as s:
            return list(s.execute(select(Topic).where(Topic.status == "accepted", Topic.stage.in_(PUBLISHED_STAGES))
                                  .order_by(Topic.published_at.desc()).limit(limit)).scalars())
