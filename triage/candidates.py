"""From messages to ranked, routed candidate topics: the composition of the topic stages.

assess (domain, scope) → places → embeddings (cached) → clustering → scorecard → heat → route.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from triage.embed.encoders import CachedEncoder, Encoder, get_encoder, topic_embeddings
from triage.assess.features import join_columns
from triage.pipeline import validate_text
from triage.text.places import PlaceExtractor
from triage.judge.principles import PrincipleJudge
from triage.judge.rank import counts_by_age, default_heat_config, heat
from triage.judge.route import RoutingMemory, route_topic
from triage.io.tables import TITLE_COLUMNS
from triage.topics.builder import TopicBuilder, TopicConfig

log = logging.getLogger(__name__)

#: Optional input columns and the names they are commonly given.
COLUMN_ALIASES = {
    "id": ("id", "编号", "留言编号", "receipt"),
    "submitted_at": ("submitted_at", "时间", "留言时间", "提交时间", "date", "created_at"),
    "channel": ("channel", "渠道", "来源"),
    "submitter": ("submitter", "submitter_key", "提交人", "用户", "留言用户", "user", "用户ID"),
    "support": ("support", "点赞数", "附议数", "likes"),
    "oppose": ("oppose", "反对数", "dislikes"),
}


@dataclass
class CandidateTopics:
    topics: pd.DataFrame        # ranked, one row per topic
    members: pd.DataFrame       # the input rows + topic_id (+ assessments)
    themes: pd.DataFrame
    builder: TopicBuilder
    scorecards: dict[str, dict]
    seconds: dict[str, float] = field(default_factory=dict)   # per stage: what bounds a large run


def _pick(frame: pd.DataFrame, key: str) -> pd.Series | None:
    lower = {str(c).lower(): c for c in frame.columns}
    for name in COLUMN_ALIASES[key]:
        if name.lower() in lower:
            return frame[lower[name.lower()]]
    return None


def _net_support(frame: pd.DataFrame) -> pd.Series | int:
    """Likes and co-signatures less oppositions (点赞数 − 反对数), never below zero per message."""
    up, down = _pick(frame, "support"), _pick(frame, "oppose")
    if up is None and down is None:
        return 0
    likes = pd.to_numeric(up, errors="coerce").fillna(0) if up is not None else pd.Series(0, index=frame.index)
    against = pd.to_numeric(down, errors="coerce").fillna(0) if down is not None else pd.Series(0, index=frame.index)
    return (likes.clip(lower=0) - against.clip(lower=0)).clip(lower=0).astype(int)


#: how each stage of :func:`build_candidates` is named in its progress lines
STAGE_LABELS = {"prepare": "规范化与脱敏", "classify": "分类", "places_embed": "地点与句向量", "cluster_describe": "聚类与描述",
                "judge_rank": "五大原则与排序", "themes": "主题归并"}


def build_candidates(triage, frame: pd.DataFrame, text_columns: Sequence[str], *, encoder: Encoder | None = None,
                     now: pd.Timestamp | None = None, previous: Mapping[str, Iterable[str]] | None = None,
                     config: TopicConfig | None = None, memory: RoutingMemory | None = None,
                     stored: pd.DataFrame | None = None,
                     progress: Callable[[dict], None] | None = None) -> CandidateTopics:
    """Ranked candidate topics for the rows of ``frame``.

    ``stored`` (the service's re-clustering) gives, row for row, what intake already worked out and
    kept: the masked ``text``, jieba ``tokens`` and the ``domain``/``scope`` (corrected by staff where
    they corrected it); ``places``/``place`` too if given, else they are found in the text. Segmenting and classifying every stored message again at each re-clustering
    cost about as much as the clustering itself, and would undo corrections.

    ``progress`` (a job's reporter) is called as each stage ends with ``{"stage": its Chinese name,
    "step": stages done, "steps": len(STAGE_LABELS), "messages": n, "seconds": so far}``.
    """
    clock = {"start": time.perf_counter()}

    def lap(stage: str) -> None:
        """Record a stage's end and say so: on a long run (a province's backlog, an import) each stage
        is a line of progress, with its time, instead of one line at the very end."""
        clock[stage] = time.perf_counter()
        log.info("候选议题：%s完成（%d 条，%.1f 秒） / %s done", STAGE_LABELS.get(stage, stage), len(frame),
                 clock[stage] - clock["start"], stage)
        if progress is not None:
            progress({"stage": STAGE_LABELS.get(stage, stage), "step": list(STAGE_LABELS).index(stage) + 1,
                      "steps": len(STAGE_LABELS), "messages": len(frame),
                      "seconds": round(clock[stage] - clock["start"], 1)})

    frame = frame.reset_index(drop=True)
    if stored is None:
        texts = join_columns(frame, text_columns).tolist()
        valid = [validate_text(t) is None for t in texts]
        # jieba once per message, on every core for large inputs
        workers = os.cpu_count() or 1
        prepared = triage.prepare([t for t, v in zip(texts, valid) if v], encoder=encoder, workers=workers)
        lap("prepare")
        assessed = triage.assess_frame(frame, text_columns, prepared=prepared, workers=workers)
        lap("classify")
        masked, toks = [""] * len(texts), [""] * len(texts)
        for i, t, tk in zip(np.flatnonzero(valid), prepared["text"], prepared["tokens"]):
            masked[i], toks[i] = t, tk
    else:
        stored = stored.reset_index(drop=True)
        prepared = pd.DataFrame()
        assessed = frame.assign(domain=stored["domain"].to_numpy(), scope=stored["scope"].to_numpy(), triage_error=None)
        masked, toks = stored["text"].tolist(), stored["tokens"].tolist()
        lap("prepare")
        lap("classify")
    ok = assessed["triage_error"].isna().to_numpy()
    places = PlaceExtractor()
    if stored is not None and {"places", "place"} <= set(stored.columns):
        names = [list(ps) for ps in stored["places"]]
        primary = [p if isinstance(p, str) and p else None for p in stored["place"]]
    else:
        found = [places.extract(t) for t in masked]
        names = [[p.name for p in ps] for ps in found]
        primary = [(places.primary(ps).name if ps else None) for ps in found]
    ids = _pick(frame, "id")
    msgs = pd.DataFrame({
        "id": (ids.astype(str) if ids is not None else pd.Series([f"row{i + 1}" for i in range(len(frame))])),
        "text": masked,
        "tokens": toks,
        "submitted_at": pd.to_datetime(_pick(frame, "submitted_at"), errors="coerce")
        if _pick(frame, "submitted_at") is not None else pd.Timestamp.now().normalize(),
        "channel": _pick(frame, "channel") if _pick(frame, "channel") is not None else "",
        "submitter": _pick(frame, "submitter") if _pick(frame, "submitter") is not None else "",
        "support": _net_support(frame),
        "scope": assessed["scope"], "domain": assessed["domain"],
        "places": names,
        "place": primary,
    })
    title_col = next((c for c in text_columns[:1] if len(text_columns) > 1 and str(c).lower() in TITLE_COLUMNS), None)
    if title_col is not None:
        # the masked title is the masked text's first line (join_columns puts it there; masking keeps lines)
        has = frame[title_col].astype("string").fillna("").str.strip().ne("").to_numpy()
        msgs["title"] = [t.split("\n", 1)[0] if h else "" for t, h in zip(masked, has)]
    if msgs["id"].duplicated().any():  # ids must be unique to track membership
        msgs["id"] = [f"{v}#{i}" if d else v for i, (v, d) in enumerate(zip(msgs["id"], msgs["id"].duplicated()))]
    good = msgs[ok].reset_index(drop=True)
    enc = encoder or triage.encoder or CachedEncoder(get_encoder())
    # topics, scorecards (plan matching) and routing memory all work in one space: the embedding of
    # each message's opening (see embed.topic_embeddings); the classifier's own features, if it has
    # embedding features at all, are a different thing
    emb = topic_embeddings(enc, good["text"].tolist())
    lap("places_embed")
    builder = TopicBuilder(config, places).fit(good, emb, previous)
    lap("cluster_describe")
    now = now if now is not None else (good["submitted_at"].max() if len(good) else pd.Timestamp.now())
    judge = PrincipleJudge(encoder=enc, taxonomy=triage.taxonomy)
    hc = default_heat_config()
    pos = {m: i for i, m in enumerate(good["id"])}
    texts_l, tokens_l = good["text"].tolist(), good["tokens"].tolist()
    # message age in days, once: per-topic pandas date arithmetic dominated at 100k messages
    age = ((pd.Timestamp(now) - pd.to_datetime(good["submitted_at"], errors="coerce")).dt.total_seconds()
           / 86400.0).to_numpy(dtype=float)
    rows, cards = [], {}
    for t in builder.topics_:
        idx = [pos[m] for m in t.members]
        centroid = emb[idx].mean(0)
        centroid = centroid / (np.linalg.norm(centroid) or 1.0)
        card = judge.judge(t, [texts_l[k] for k in idx], [tokens_l[k] for k in idx], centroid)
        this, prev = counts_by_age(age[idx], hc.period_days)
        h = heat(voices=t.voices, submitters=t.submitters, support=t.support,
                 last_seen=t.last_seen, this_period=this, previous_period=prev, channels=len(t.channels),
                 places=len(t.places), principle_score=card.score, now=now, config=hc)
        route = route_topic(triage.router, t.domain, t.group_share, centroid, memory)
        cards[t.id] = {"scorecard": card.as_dict(), "heat": h.terms, "route": route.__dict__}
        rows.append({"heat": h.score, "verdict": card.verdict, "principle_score": round(card.score, 3), "committee": route.name if route.kind == "committee" else "",
                     "department": route.name if route.kind == "department" else "", "route_reason": route.reason,
                     "principles": " ".join(f"{p.name}:{p.verdict}" for p in card.principles),
                     "verdict_reason": card.reason,
                     "heat_terms": "；".join(f"{k} {v['points']:.3f}" for k, v in h.terms.items()),
                     "this_period": this, "previous_period": prev})
    topics = pd.concat([builder.topics_frame(), pd.DataFrame(rows)], axis=1)
    if len(topics):
        topics = topics.sort_values(["heat", "size"], ascending=False, kind="stable").reset_index(drop=True)
        topics.insert(0, "rank", np.arange(1, len(topics) + 1))
    members = assessed.copy()
    members["topic_id"] = [builder.topic_of_.get(m) if good_ else None for m, good_ in zip(msgs["id"], ok)]
    members["place_found"] = msgs["place"].fillna("")
    lap("judge_rank")
    themes = rank_themes(builder, topics, good, age, now, hc)
    lap("themes")
    names = list(clock)
    seconds = {b: round(clock[b] - clock[a], 2) for a, b in zip(names, names[1:])}
    log.info("candidate topics for %d messages: %s", len(frame), seconds)
    return CandidateTopics(topics, members, themes, builder, cards, seconds)


def rank_themes(builder: TopicBuilder, topics: pd.DataFrame, good: pd.DataFrame, age: np.ndarray,
                now: pd.Timestamp, hc) -> pd.DataFrame:
    """Themes (the same problem at several places) ranked by the heat of all their messages.

    A county-level office often takes the theme, not one village's topic, as its consultation
    topic; its heat counts every voice across places, its principle fit is its best topic's.
    """
    if not builder.themes_:
        return pd.DataFrame(columns=["rank", "id", "label", "heat", "topics", "places", "size", "submitters",
                                     "domain", "committee", "heat_terms"])
    pos = {m: i for i, m in enumerate(good["id"])}
    by_id = {t.id: t for t in builder.topics_}
    info = topics.set_index("topic_id") if len(topics) else pd.DataFrame()
    subm = good["submitter"].fillna("").astype(str).tolist()
    rows = []
    for th in builder.themes_:
        ts = [by_id[t] for t in th["topics"]]
        idx = [pos[m] for t in ts for m in t.members]
        this, prev = counts_by_age(age[idx], hc.period_days)
        people = {subm[k] or f"_anon{k}" for k in idx}
        best = max(th["topics"], key=lambda t: float(info.at[t, "heat"]))
        score = max(float(info.at[t, "principle_score"]) for t in th["topics"])
        h = heat(voices=sum(t.voices for t in ts), submitters=len(people), support=sum(t.support for t in ts),
                 last_seen=max(t.last_seen for t in ts),
                 this_period=this, previous_period=prev, channels=len({c for t in ts for c in t.channels}),
                 places=len(th["places"]), principle_score=score, now=now, config=hc)
        rows.append({**th, "heat": h.score, "submitters": len(people), "committee": info.at[best, "committee"],
                     "heat_terms": "；".join(f"{k} {v['points']:.3f}" for k, v in h.terms.items())})
    out = pd.DataFrame(rows).sort_values(["heat", "size"], ascending=False, kind="stable").reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out

