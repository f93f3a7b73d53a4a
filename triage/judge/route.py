"""Routing: a group issue goes to a CPPCC committee, an individual petition to a department.

Each route carries its reason in words staff can check ("领域 教育 → 教科卫体委员会（分类体系默认）").
Committee/department defaults come from the taxonomy; the department classifier, when the model
has one, refines petitions within a domain (社会保障 → 医保 / 人社 / 民政 / 残联 …).
"""

from __future__ import annotations

from collections.abc import Sequence

from triage.config import Taxonomy
from triage.schemas import Route
from triage.assess.scope import INDIVIDUAL


class Router:
    def __init__(self, taxonomy: Taxonomy, min_department_confidence: float = 0.35) -> None:
        self.taxonomy = taxonomy
        self.min_department_confidence = min_department_confidence

    def route(self, domain: str | None, scope: str | None,
              department: str | None = None, department_confidence: float = 0.0) -> Route:
        tax = self.taxonomy
        if domain is None:
            return Route("none", None, None, "未能判定领域，需人工分办 / domain unknown")
        if scope == INDIVIDUAL:
            if department and department_confidence >= self.min_department_confidence:
                dep = tax.department(department)
                if dep is not None:
                    return Route("department", dep.id, dep.name,
                                 f"个人诉求，按内容转交{dep.name}（置信度 {department_confidence:.2f}）")
            dep = tax.department_for(domain)
            if dep is not None:
                return Route("department", dep.id, dep.name, f"个人诉求，领域 {domain} 默认转交{dep.name}")
            letters = tax.department(tax.fallback_department) if tax.fallback_department else None
            return Route("department", letters.id if letters else None, letters.name if letters else None,
                         f"个人诉求，领域 {domain} 不在分类体系中，转{letters.name if letters else '有关部门'}兜底")
        com = tax.committee_for(domain)
        if com is not None:
            return Route("committee", com.id, com.name, f"群众性问题，领域 {domain} → {com.name}（分类体系默认）")
        fallback = tax.committee(tax.fallback_committee) if tax.fallback_committee else None
        return Route("committee", fallback.id if fallback else None, fallback.name if fallback else None,
                     f"领域 {domain} 不在分类体系中，交{fallback.name if fallback else '专委会'}统筹")


    def route_many(self, domains: Sequence[str | None], scopes: Sequence[str | None],
                   departments: Sequence[str | None], confidences: Sequence[float]) -> list[Route]:
        """:meth:`route` for many rows. A batch of a million rows has a few hundred distinct routes,
        so rows that route alike share one answer: the key holds everything :meth:`route` reads
        (the department's confidence only through the threshold and the two decimals it prints)."""
        memo: dict[tuple, Route] = {}
        out: list[Route] = []
        thr = self.min_department_confidence
        for d, s, p, c in zip(domains, scopes, departments, confidences):
            key = (d, s, p, c >= thr, f"{c:.2f}")
            r = memo.get(key)
            if r is None:
                r = memo[key] = self.route(d, s, p, c)
            out.append(r)
        return out


class RoutingMemory:
    """What staff decided before: (topic centroid, committee id, topic id). A new topic that is very
    similar to a re-routed one follows the staff decision, and the reason names that topic."""

    def __init__(self, min_similarity: float = 0.8) -> None:
        self.min_similarity = min_similarity
        self._vecs: list = []
        self._items: list[tuple[str, str]] = []

    def remember(self, centroid, committee_id: str, topic_id: str) -> None:
        import numpy as np

        self._vecs.append(np.asarray(centroid, dtype=np.float32))
        self._items.append((committee_id, topic_id))

    def recall(self, centroid) -> tuple[str, str, float] | None:
        import numpy as np

        if not self._vecs:
            return None
        sims = np.vstack(self._vecs) @ np.asarray(centroid, dtype=np.float32)
        k = int(np.argmax(sims))
        if sims[k] >= self.min_similarity:
            return self._items[k][0], self._items[k][1], float(sims[k])
        return None

    def __len__(self) -> int:
        return len(self._items)


def route_topic(router: Router, domain: str | None, group_share: float, centroid=None,
                memory: RoutingMemory | None = None, department: str | None = None) -> Route:
    """A topic goes to a committee unless it is mostly individual petitions (then to a department)."""
    if group_share < 0.5:
        r = router.route(domain, "individual", department, 1.0 if department else 0.0)
        return Route(r.kind, r.id, r.name, "以个人诉求为主：" + r.reason)
    if memory is not None and centroid is not None:
        hit = memory.recall(centroid)
        if hit is not None:
            com = router.taxonomy.committee(hit[0])
            if com is not None:
                return Route("committee", com.id, com.name,
                             f"参照工作人员此前对相似议题 {hit[1]} 的改派决定（相似度 {hit[2]:.2f}）→ {com.name}")
    return router.route(domain, "group")
