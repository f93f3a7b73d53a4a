"""The 五大原则 scorecard for a candidate topic, each principle with a score, a verdict and evidence.

政治性 fits the party/government's central work (annual_plan.yaml, matched semantically and by words)
and is none of the excluded matters; 群众性 is the share of group-issue messages, distinct submitters and
population cues; 前瞻性 fits the annual consultation plan; 民主性 is breadth (submitters, channels,
places) with copy-paste campaigns flagged; 可行性 is within remit (the topic's domain is one a
committee of this office answers for, committees.yaml via taxonomy.yaml; the evidence quotes its remit)
and not a matter for courts, arbitration, police or discipline bodies. The overall verdict is one of four, and says why.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from triage.config import Taxonomy, corpora_dir, default_taxonomy
from triage.errors import ConfigError
from triage.topics.builder import Topic

PROPOSE = "建议列为协商议题"
RESEARCH = "需补充调研"
FORWARD = "转交有关部门办理"
UNSUITABLE = "不宜协商"
VERDICTS = (PROPOSE, RESEARCH, FORWARD, UNSUITABLE)

MEETS, PARTLY, FAILS = "符合", "部分符合", "不符合"

_POPULATION = re.compile(
    r"(?:涉及|影响|关系到|覆盖|周边|全)[^,，。]{0,8}?(?:[0-9一二三四五六七八九十两百千万几数多]+)\s*(?:个|多个)?(?:村|小区|社区|户|家|所学校|人|名|位)"
    r"|(?:近|约|上|超过|有)?[0-9一二三四五六七八九十两百千万几]+(?:多|余)?(?:户|名|位|个)?(?:居民|村民|群众|家长|学生|老人|业主|商户|职工|工人|人)"
)


@dataclass
class PlanItem:
    title: str
    description: str
    kind: str                     # central_work | consultation_plan


@dataclass
class Exclusion:
    pattern: re.Pattern[str]
    reason: str


@dataclass
class AnnualPlan:
    year: int
    items: list[PlanItem]
    excluded: list[Exclusion]


def load_plan(path: str | Path | None = None) -> AnnualPlan:
    p = Path(path) if path else corpora_dir() / "annual_plan.yaml"
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(str(p), "(文件)", "文件不存在") from exc
    items: list[PlanItem] = []
    for kind in ("central_work", "consultation_plan"):
        for i, it in enumerate(data.get(kind) or []):
            if not isinstance(it, dict) or not it.get("title") or not it.get("description"):
                raise ConfigError(str(p), f"{kind}[{i}]", "需要 title 和 description")
            items.append(PlanItem(str(it["title"]), str(it["description"]), kind))
    excluded = []
    for i, ex in enumerate(data.get("excluded") or []):
        try:
            excluded.append(Exclusion(re.compile(ex["pattern"]), str(ex["reason"])))
        except (KeyError, TypeError, re.error) as exc:
            raise ConfigError(str(p), f"excluded[{i}]", f"需要有效的 pattern 与 reason：{exc}") from exc
    return AnnualPlan(int(data.get("year") or 0), items, excluded)


@functools.lru_cache(maxsize=1)
def default_plan() -> AnnualPlan:
    return load_plan()


@dataclass
class Principle:
    name: str
    score: float
    verdict: str
    evidence: list[str] = field(default_factory=list)


@dataclass
class Scorecard:
    principles: list[Principle]
    verdict: str
    reason: str
    score: float

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "reason": self.reason, "score": round(self.score, 3),
                "principles": [{"name": p.name, "score": round(p.score, 3), "verdict": p.verdict,
                                "evidence": p.evidence} for p in self.principles]}


@dataclass
class ScorecardConfig:
    plan_meets: float = 0.45           # combined plan similarity for 符合
    plan_partly: float = 0.30
    group_share_min: float = 0.5       # below: mostly individual petitions → forward
    propose_min: float = 0.55          # overall score for 建议列为协商议题
    democratic_min: float = 0.35
    #: more than this share of members must be the excluded matter to exclude the topic. Citizens tell
    #: how they escalated ("已向纪委反映", "多次报警", "去法院问过"): on a real city board a third
    #: excluded 26 of 366 multi-citizen topics, e.g. a bar's noise (one message asked 纪委 to look) and a
    #: property firm locking a compound's lifts; such a mention stays as evidence under 可行性.
    excluded_share: float = 0.5
    propose_min_submitters: int = 3    # "raised broadly": fewer voices need research first …
    #: … unless the party/government assigned it: these channels (None: the taxonomy's assigned_channels)
    assigned_channels: tuple[str, ...] | None = None


def _tokset(s: str) -> set[str]:
    return {t for t in s.split() if len(t) > 1}


class PrincipleJudge:
    """Scores topics against the five principles; plan matching uses the same encoder as topics."""

    def __init__(self, plan: AnnualPlan | None = None, encoder=None, config: ScorecardConfig | None = None,
                 taxonomy: Taxonomy | None = None) -> None:
        from triage.text.normalise import tokens

        self.plan = plan or default_plan()
        self.cfg = config or ScorecardConfig()
        self.taxonomy = taxonomy or default_taxonomy()
        self.assigned_channels = (self.cfg.assigned_channels if self.cfg.assigned_channels is not None
                                  else self.taxonomy.assigned_channels)
        self.encoder = encoder
        texts = [f"{it.title} {it.description}" for it in self.plan.items]
        self._item_tokens = [set(tokens(t)) | set(re.split(r"[、，,\s]+", it.description)) for t, it in zip(texts, self.plan.items)]
        self._item_emb = encoder.encode(texts) if encoder is not None and texts else None

    def _plan_match(self, kind: str, centroid: np.ndarray | None, toks: set[str]) -> tuple[float, PlanItem | None, list[str]]:
        best, best_item, best_words = 0.0, None, []
        joined = "\x1f".join(t for t in toks if t)
        for k, it in enumerate(self.plan.items):
            if it.kind != kind:
                continue
            # a plan word counts when it is a topic token or part of one: one substring search in the
            # joined tokens (the separator never occurs in a word) instead of a loop over every token
            words = sorted(w for w in self._item_tokens[k] if w in toks or (len(w) >= 2 and w in joined))
            lex = min(1.0, len(words) / 3)
            sem = float(centroid @ self._item_emb[k]) if (centroid is not None and self._item_emb is not None) else 0.0
            s = 0.5 * max(sem, 0.0) + 0.5 * lex
            if s > best:
                best, best_item, best_words = s, it, words
        return best, best_item, best_words[:5]

    def judge(self, topic: Topic, texts: Sequence[str], tokens: Sequence[str], centroid: np.ndarray | None = None,
              places_count: int | None = None) -> Scorecard:
        cfg = self.cfg
        toks = set().union(*(_tokset(t) for t in tokens)) if tokens else set()
        joined = "\n".join(texts)

        # exclusions (used by 政治性 and 可行性)
        hits: list[tuple[Exclusion, int]] = []
        for ex in self.plan.excluded:
            n = sum(1 for t in texts if ex.pattern.search(t))
            if n:
                hits.append((ex, n))
        excluded = [(ex, n) for ex, n in hits if n / max(len(texts), 1) > cfg.excluded_share]

        # 政治性
        s, item, words = self._plan_match("central_work", centroid, toks)
        assigned = [c for c in topic.channels if c in self.assigned_channels]
        if assigned and not excluded:
            pol = Principle("政治性", 1.0, MEETS, [f"党委政府交办（{'、'.join(assigned)}）"] + (
                [f"契合中心工作“{item.title}”（匹配度 {s:.2f}）"] if item is not None and s >= cfg.plan_partly else []))
        elif excluded:
            pol = Principle("政治性", 0.0, FAILS, [f"{ex.reason}（{n}/{len(texts)} 条留言涉及）" for ex, n in excluded])
        elif item is not None and s >= cfg.plan_partly:
            pol = Principle("政治性", min(1.0, s / cfg.plan_meets), MEETS if s >= cfg.plan_meets else PARTLY,
                            [f"契合党委政府中心工作“{item.title}”（匹配度 {s:.2f}；共同词：{'、'.join(words) or '语义相近'}）"])
        else:
            pol = Principle("政治性", min(1.0, s / cfg.plan_meets) * 0.6, PARTLY,
                            ["未明显对应年度中心工作，需结合实际判断" + (f"（最接近“{item.title}”，{s:.2f}）" if item else "")])

        # 群众性
        pop = list(dict.fromkeys(m.group(0) for m in _POPULATION.finditer(joined)))[:3]
        sub_term = min(1.0, math.log1p(topic.submitters) / math.log1p(10))
        mass_score = 0.6 * topic.group_share + 0.25 * sub_term + (0.15 if pop else 0.0)
        ev = [f"群众性问题占 {topic.group_share:.0%}（{topic.size} 条留言，{topic.submitters} 位提交人）"]
        if pop:
            ev.append("涉及人群：" + "；".join(pop))
        if topic.group_share < cfg.group_share_min:
            mass = Principle("群众性", mass_score, FAILS, ev + ["以个人诉求为主：不作为协商议题，转交主管部门或信访部门办理"])
        else:
            mass = Principle("群众性", mass_score, MEETS if mass_score >= 0.6 else PARTLY, ev)

        # 前瞻性
        s2, item2, words2 = self._plan_match("consultation_plan", centroid, toks)
        if item2 is not None and s2 >= cfg.plan_partly:
            fwd = Principle("前瞻性", min(1.0, s2 / cfg.plan_meets), MEETS if s2 >= cfg.plan_meets else PARTLY,
                            [f"对应年度协商计划“{item2.title}”（匹配度 {s2:.2f}；共同词：{'、'.join(words2) or '语义相近'}）"])
        else:
            fwd = Principle("前瞻性", min(1.0, s2 / cfg.plan_meets) * 0.6, PARTLY,
                            ["不在年度协商计划内，可作为计划外议题储备"])

        # 民主性
        nplaces = places_count if places_count is not None else len(topic.places)
        demo_score = (min(1.0, topic.submitters / 5) + min(1.0, len(topic.channels) / 3) + min(1.0, nplaces / 2)) / 3
        dev = [f"{topic.submitters} 位提交人，{len(topic.channels)} 个渠道（{'、'.join(topic.channels) or '未知'}），"
               f"{nplaces} 处地点"]
        if topic.campaign:
            demo_score *= 0.4
            dev.append(f"疑似集中复制粘贴：{topic.size} 条中有 {topic.duplicates} 条几乎相同，仅来自 {topic.submitters} 位提交人")
        demo = Principle("民主性", demo_score, MEETS if demo_score >= 0.6 else PARTLY if demo_score >= cfg.democratic_min else FAILS, dev)

        # 可行性
        if excluded:
            feas = Principle("可行性", 0.0, FAILS, [ex.reason for ex, _ in excluded])
        elif topic.domain is None:
            feas = Principle("可行性", 0.5, PARTLY, ["领域不明，需人工确认是否属于政协协商范围"])
        elif (com := self.taxonomy.committee_for(topic.domain)) is None:
            # remit is configuration: a domain that no committee of this office answers for
            feas = Principle("可行性", 0.5, PARTLY, [f"“{topic.domain}”领域不在本会任何专委会的职责范围内（committees.yaml），"
                                                   "需人工确认由谁组织协商"])
        else:
            fev = [f"属于“{topic.domain}”领域，在{com.name}职责范围内（{com.remit}）"]
            if hits:
                fev.append("个别留言涉及：" + "；".join(ex.reason for ex, _ in hits))
            feas = Principle("可行性", 1.0 if not hits else 0.8, MEETS, fev)

        principles = [pol, mass, fwd, demo, feas]
        score = float(np.mean([p.score for p in principles]))
        if mass.verdict == FAILS:
            verdict, reason = FORWARD, "以个人诉求为主（群众性不符合），按诉求转交有关部门办理，并告知提交人"
        elif excluded:
            verdict, reason = UNSUITABLE, "；".join(ex.reason for ex, _ in excluded)
        elif score >= cfg.propose_min and demo.verdict != FAILS and not topic.campaign and (
                topic.submitters >= cfg.propose_min_submitters or assigned):
            verdict, reason = PROPOSE, f"五项原则综合得分 {score:.2f}，群众关注面广，建议列为协商议题"
        else:
            weak = [p.name for p in principles if p.verdict != MEETS]
            reason = f"综合得分 {score:.2f}；{'、'.join(weak)}尚需补充" if weak else f"综合得分 {score:.2f}"
            if topic.campaign:
                reason += "；存在集中复制粘贴，需核实真实民意"
            elif topic.submitters < cfg.propose_min_submitters and not assigned:
                reason += f"；目前仅 {topic.submitters} 位提交人，需观察是否有更多群众反映"
            verdict = RESEARCH
        return Scorecard(principles, verdict, reason, score)
