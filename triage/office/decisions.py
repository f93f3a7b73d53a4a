"""Staff decisions on a topic: accept, reject, merge, split, reroute, relabel, correct, advance.

Each is one handler (``_do_<action>``), applied under the worker's lock in one transaction and
recorded with its reason in the audit trail. A decided topic is pinned: re-clustering never touches it.
Advancing walks the lifecycle 收集议题 → … → 成果转化; published stages reach the 回音壁.
"""

from __future__ import annotations

import inspect
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from triage.office.common import Actor, Conflict, InvalidRequest, NotFound, OfficeService, shown_id
from triage.office.figures import submitters
from triage.office.index import TopicIndexKeeper
from triage.store.database import (LIFECYCLE, OUTCOME_CLASSES, PUBLISHED_STAGES, AuditEvent, Correction, Suggestion,
                                   Topic, utcnow)
from triage.text.normalise import normalize
from triage.topics.builder import make_label


class Decisions(OfficeService):
    """The eight staff actions on a topic."""

    def __init__(self, state, index: TopicIndexKeeper) -> None:
        super().__init__(state)
        self.index = index

    def decide(self, tid: str, action: str, actor: Actor, reason: str, **p: Any) -> dict[str, Any]:
        """Apply one staff decision; every one is recorded, with its reason, in the audit trail."""
        reason = self.need_reason(reason)
        handler = getattr(self, f"_do_{action}", None)
        if handler is None:
            raise InvalidRequest(f"未知操作 {action} / unknown action")
        # a field the action does not use is a client's mistake (a relabel's label sent with a reject):
        # say which, rather than drop it silently or fail inside the handler
        used = set(inspect.signature(handler).parameters) - {"s", "t", "actor"}
        extra = sorted(k for k, v in p.items() if v is not None and k not in used)
        if extra:
            raise InvalidRequest(f"操作 {action} 不使用字段：{'、'.join(extra)}（可用：{'、'.join(sorted(used)) or '无'}）"
                                 f" / fields not used by {action}: {', '.join(extra)}")
        with self.lock, self.store.session() as s:
            t = s.get(Topic, tid)
            if t is None:
                raise NotFound(f"议题 {shown_id(tid)} 不存在 / no such topic")
            if t.status == "merged":
                raise Conflict(f"议题 {tid} 已并入 {t.merged_into}，请在该议题上操作 / topic was merged")
            detail = handler(s, t, actor, **p) or {}
            t.updated_at = utcnow()
            s.add(AuditEvent(actor=actor.name, role=actor.role, action=action, target_type="topic", target_id=tid,
                             reason=reason, detail={k: v for k, v in {**p, **detail}.items() if v is not None}))
            result = {"topic_id": tid, "action": action, **detail}
        if action in ("merge", "split") or "scope" in detail.get("changed", {}):
            # the index must learn the new membership, or a message's corrected scope (two individual
            # petitions pay more to share a topic: the index counts each topic's petitions)
            self.index.bump_generation()
        return result

    def _do_accept(self, s: Session, t: Topic, actor: Actor) -> dict:
        if t.status != "candidate":
            raise Conflict(f"议题状态为 {t.status}，只能采纳候选议题 / only candidate topics can be accepted")
        t.status, t.stage, t.pinned = "accepted", LIFECYCLE[1], True
        return {"stage": t.stage}

    def _do_reject(self, s: Session, t: Topic, actor: Actor) -> dict:
        if t.status == "rejected":
            raise Conflict("议题已被驳回 / already rejected")
        t.status, t.pinned = "rejected", True
        return {}

    def _do_merge(self, s: Session, t: Topic, actor: Actor, into: str | None = None) -> dict:
        if not into or into == t.id:
            raise InvalidRequest("请指定要并入的另一个议题 into / name the topic to merge into")
        target = s.get(Topic, into)
        if target is None:
            raise NotFound(f"议题 {shown_id(into)} 不存在 / no such topic")
        if target.status in ("merged", "rejected"):
            raise Conflict(f"不能并入状态为 {target.status} 的议题 / cannot merge into that topic")
        moved = s.execute(select(Suggestion).where(Suggestion.topic_id == t.id)).scalars().all()
        for m in moved:
            m.topic_id = target.id
        s.flush()
        target.size = (target.size or 0) + len(moved)
        target.submitters = submitters(s, target.id)
        target.first_seen = min(x for x in (target.first_seen, t.first_seen) if x) if (target.first_seen or t.first_seen) else None
        target.last_seen = max(x for x in (target.last_seen, t.last_seen) if x) if (target.last_seen or t.last_seen) else None
        target.heat = max(target.heat or 0.0, t.heat or 0.0)
        target.pinned = True
        t.status, t.merged_into, t.size, t.pinned = "merged", target.id, 0, True
        return {"moved": len(moved)}

    def _do_split(self, s: Session, t: Topic, actor: Actor, members: list[int] | None = None,
                  label: str | None = None) -> dict:
        ids = sorted({int(m) for m in members or []})
        current = {m.id: m for m in s.execute(select(Suggestion).where(Suggestion.topic_id == t.id)).scalars()}
        if not ids:
            raise InvalidRequest("请选择要拆出的留言 members / select the messages to split off")
        unknown = [i for i in ids if i not in current]
        if unknown:
            raise InvalidRequest(f"留言 {[shown_id(u) for u in unknown[:5]]} 不属于议题 {t.id} / not members of this topic")
        if len(ids) == len(current):
            raise InvalidRequest("不能拆出全部留言 / cannot split off every message")
        nid = f"T{self.store.next_value(s, 'topic'):06d}"
        first = current[ids[0]]
        new = Topic(id=nid, label=(label or make_label(first.place, first.text, t.keywords or [])),
                    label_locked=bool(label), pinned=True, keywords=list(t.keywords or []), place=first.place,
                    places=sorted({p for i in ids for p in (current[i].places or [])}), domain=t.domain,
                    route_kind=t.route_kind, committee_id=t.committee_id, committee=t.committee,
                    department=t.department, route_reason=t.route_reason, heat=t.heat, verdict=t.verdict,
                    scorecard=t.scorecard, heat_terms=t.heat_terms, representative_id=first.id,
                    size=len(ids), first_seen=min(current[i].submitted_at for i in ids),
                    last_seen=max(current[i].submitted_at for i in ids))
        s.add(new)
        s.flush()
        for i in ids:
            current[i].topic_id = nid
        s.flush()
        new.submitters = submitters(s, nid)
        rest = [m for i, m in current.items() if i not in ids]
        t.size, t.submitters, t.pinned = len(rest), submitters(s, t.id), True
        if t.representative_id in ids:
            t.representative_id = rest[0].id
        s.add(AuditEvent(actor=actor.name, role=actor.role, action="split_from", target_type="topic",
                         target_id=nid, reason=f"从 {t.id} 拆出", detail={"members": ids}))
        return {"new_topic_id": nid, "members": ids}

    def _do_reroute(self, s: Session, t: Topic, actor: Actor, committee: str | None = None,
                    department: str | None = None) -> dict:
        tax = self.triage.taxonomy
        if committee:
            c = tax.committee(committee) or next((x for x in tax.committees if x.name == committee), None)
            if c is None:
                raise InvalidRequest(f"专委会不存在，可选：{'、'.join(x.id for x in tax.committees)}")
            t.route_kind, t.committee_id, t.committee, t.department = "committee", c.id, c.name, None
        elif department:
            d = tax.department(department) or next((x for x in tax.departments if x.name == department), None)
            if d is None:
                raise InvalidRequest("部门不存在，请用 departments.yaml 中的编号或名称 / no such department")
            t.route_kind, t.committee_id, t.committee, t.department = "department", None, None, d.name
        else:
            raise InvalidRequest("请指定 committee 或 department / name a committee or a department")
        t.route_reason = f"工作人员 {actor.name} 改派"
        t.pinned = True
        return {"committee": t.committee, "department": t.department}

    def _do_relabel(self, s: Session, t: Topic, actor: Actor, label: str | None = None) -> dict:
        label = " ".join((label or "").split())   # as staff typed it: full-width punctuation is kept
        if not label or len(label) > 80:
            raise InvalidRequest("标签不能为空，且不超过 80 字 / label must be 1–80 characters")
        old, t.label, t.label_locked, t.pinned = t.label, label, True, True
        return {"old_label": old}

    def _do_correct(self, s: Session, t: Topic, actor: Actor, suggestion_id: int | None = None,
                    domain: str | None = None, scope: str | None = None) -> dict:
        m = s.get(Suggestion, int(suggestion_id)) if suggestion_id is not None else None
        if m is None or m.topic_id != t.id:
            raise InvalidRequest(f"留言 {shown_id(suggestion_id)} 不属于议题 {t.id} / not a member of this topic")
        if domain is None and scope is None:
            raise InvalidRequest("请给出更正后的 domain 或 scope / give the corrected domain or scope")
        if domain is not None and domain not in self.triage.taxonomy.domain_names:
            raise InvalidRequest(f"领域不在分类体系中，可选：{'、'.join(self.triage.taxonomy.domain_names)} / unknown domain")
        if scope is not None and scope not in ("group", "individual"):
            raise InvalidRequest("scope 只能是 group 或 individual")
        changed = {}
        for fld, val in (("domain", domain), ("scope", scope)):
            if val is not None:
                s.add(Correction(suggestion_id=m.id, field=fld, old_value=getattr(m, fld), value=val,
                                 actor=actor.name, reason="staff correction"))
                changed[fld] = {"from": getattr(m, fld), "to": val}
                setattr(m, fld, val)
        return {"changed": changed}

    def _do_advance(self, s: Session, t: Topic, actor: Actor, stage: str | None = None,
                    outcome_class: str | None = None, outcome_unit: str | None = None,
                    outcome: str | None = None) -> dict:
        if t.status != "accepted":
            raise Conflict("只有已采纳的协商议题才能推进流程 / accept the topic first")
        cur = LIFECYCLE.index(t.stage) if t.stage in LIFECYCLE else 0
        target = stage or (LIFECYCLE[cur + 1] if cur + 1 < len(LIFECYCLE) else None)
        if target not in LIFECYCLE:
            raise InvalidRequest(f"阶段应为：{' → '.join(LIFECYCLE)}")
        if LIFECYCLE.index(target) <= cur:
            raise Conflict(f"议题已在 {t.stage}，不能回到 {target} / stages only move forward")
        if target == "成果转化":
            if outcome_class not in OUTCOME_CLASSES:
                raise InvalidRequest("成果转化须注明成果类别 A（承办单位办理）/ B（报党委政府或村(居)自治）/ C（宣传解释）")
            if not outcome_unit:
                raise InvalidRequest("成果转化须注明责任单位 outcome_unit")
        if outcome_class is not None:
            if outcome_class not in OUTCOME_CLASSES:
                raise InvalidRequest("成果类别只能是 A / B / C")
            t.outcome_class = outcome_class
        t.outcome_unit = outcome_unit or t.outcome_unit
        t.outcome = normalize(outcome) if outcome else t.outcome
        t.stage = target
        if target in PUBLISHED_STAGES and t.published_at is None:
            t.published_at = utcnow()
        return {"stage": target, "from": LIFECYCLE[cur]}

