"""From messages to ranked, routed candidate topics: the composition of the topic stages.

A run is a list of stages over one :class:`TopicRun` (spaCy's pipeline is the model): prepare
(normalise, mask, tokens) → classify (domain, scope) → places and embeddings → clustering and
descriptions → 五大原则, heat and route → themes. A re-clustering swaps the first two for what intake
stored (:data:`FROM_STORE`); a caller may pass its own list.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from triage.embed.encoders import CachedEncoder, Encoder, get_encoder, topic_embeddings
from triage.assess.features import join_columns
from triage.pipeline import validate_text
from triage.text.places import PlaceExtractor
from triage.judge.principles import PrincipleJudge
from triage.judge.rank import RANK_ORDER, counts_by_age, default_heat_config, heat, rank_frame
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


#: how each stage of a topic run is named in its progress lines
STAGE_LABELS = {"prepare": "规范化与脱敏", "classify": "分类", "places_embed": "地点与句向量", "cluster_describe": "聚类与描述",
                "judge_rank": "五大原则与排序", "themes": "主题归并"}


@dataclass
class TopicRun:
    """A batch of messages on its way to ranked topics: each stage reads what the stages before it added
    and adds its own fields, so a stage never calls back into the composition."""

    # what the caller gives
    triage: Any
    frame: pd.DataFrame
    text_columns: Sequence[str]
    encoder: Encoder | None = None
    now: pd.Timestamp | None = None
    previous: Mapping[str, Iterable[str]] | None = None
    config: TopicConfig | None = None
    memory: RoutingMemory | None = None
    stored: pd.DataFrame | None = None
    # what the stages add, in order
    prepared: pd.DataFrame | None = None      # prepare: masked texts, tokens (features) of the valid rows
    valid: list[bool] = field(default_factory=list)
    assessed: pd.DataFrame | None = None      # classify: the rows with domain, scope, triage_error
    masked: list[str] = field(default_factory=list)
    toks: list[str] = field(default_factory=list)
    msgs: pd.DataFrame | None = None          # places_embed: one row per message, as the topic stages read it
    good: pd.DataFrame | None = None          # ... the messages that could be assessed
    ok: np.ndarray | None = None
    place_finder: PlaceExtractor | None = None
    enc: Encoder | None = None
    emb: np.ndarray | None = None
    builder: TopicBuilder | None = None       # cluster_describe
    topics: pd.DataFrame | None = None        # judge_rank: ranked, with scorecards and routes
    members: pd.DataFrame | None = None
    cards: dict[str, dict] = field(default_factory=dict)
    age: np.ndarray | None = None
    heat_config: Any = None
    themes: pd.DataFrame | None = None        # themes


@dataclass(frozen=True)
class Stage:
    """One step of a topic run: ``run`` adds its fields to the :class:`TopicRun`."""

    name: str                                 # as progress lines and ``CandidateTopics.seconds`` name it
    run: Callable[[TopicRun], None]


def _prepare(r: TopicRun) -> None:
    texts = join_columns(r.frame, r.text_columns).tolist()
    r.valid = [validate_text(t) is None for t in texts]
    # jieba once per message, on every core for large inputs
    r.prepared = r.triage.prepare([t for t, v in zip(texts, r.valid) if v], encoder=r.encoder, workers=os.cpu_count() or 1)


def _classify(r: TopicRun) -> None:
    r.assessed = r.triage.assess_frame(r.frame, r.text_columns, prepared=r.prepared, workers=os.cpu_count() or 1)
    r.masked, r.toks = [""] * len(r.frame), [""] * len(r.frame)
    for i, t, tk in zip(np.flatnonzero(r.valid), r.prepared["text"], r.prepared["tokens"]):
        r.masked[i], r.toks[i] = t, tk


def _stored_texts(r: TopicRun) -> None:
    """The masked ``text`` and jieba ``tokens`` intake kept: segmenting every stored message again at
    each re-clustering cost about as much as the clustering itself."""
    if r.stored is None:
        raise ValueError("FROM_STORE 需要 stored（每行已存的 text、tokens、domain、scope）/ FROM_STORE needs stored=")
    missing = [c for c in ("text", "tokens", "domain", "scope") if c not in r.stored.columns]
    if missing or len(r.stored) != len(r.frame):
        raise ValueError(f"stored 应与 frame 逐行对应并含 text、tokens、domain、scope（缺 {'、'.join(missing) or '无'}，"
                         f"{len(r.stored)} 行对 {len(r.frame)} 行）/ stored must match frame row for row")
    r.stored = r.stored.reset_index(drop=True)
    r.prepared = pd.DataFrame()
    r.masked, r.toks = r.stored["text"].tolist(), r.stored["tokens"].tolist()


def _stored_assessments(r: TopicRun) -> None:
    """The stored ``domain``/``scope``, corrected by staff where they corrected it: classifying again
    would undo their corrections."""
    r.assessed = r.frame.assign(domain=r.stored["domain"].to_numpy(), scope=r.stored["scope"].to_numpy(), triage_error=None)


def _places_embed(r: TopicRun) -> None:
    frame, stored = r.frame, r.stored
    r.ok = r.assessed["triage_error"].isna().to_numpy()
    places = r.place_finder = PlaceExtractor()
    if stored is not None and {"places", "place"} <= set(stored.columns):
        names = [list(ps) for ps in stored["places"]]
        primary = [p if isinstance(p, str) and p else None for p in stored["place"]]
    else:
        names, primary = places.names_and_primary(r.masked, workers=os.cpu_count() or 1)
    ids = _pick(frame, "id")
    msgs = pd.DataFrame({
        "id": (ids.astype(str) if ids is not None else pd.Series([f"row{i + 1}" for i in range(len(frame))])),
        "text": r.masked,
        "tokens": r.toks,
        "submitted_at": pd.to_datetime(_pick(frame, "submitted_at"), errors="coerce")
        if _pick(frame, "submitted_at") is not None else pd.Timestamp.now().normalize(),
        "channel": _pick(frame, "channel") if _pick(frame, "channel") is not None else "",
        "submitter": _pick(frame, "submitter") if _pick(frame, "submitter") is not None else "",
        "support": _net_support(frame),
        "scope": r.assessed["scope"], "domain": r.assessed["domain"],
        "places": names,
        "place": primary,
    })
    cols = r.text_columns
    title_col = next((c for c in cols[:1] if len(cols) > 1 and str(c).lower() in TITLE_COLUMNS), None)
    if title_col is not None:
        # the masked title is the masked text's first line (join_columns puts it there; masking keeps lines)
        has = frame[title_col].astype("string").fillna("").str.strip().ne("").to_numpy()
        msgs["title"] = [t.split("\n", 1)[0] if h else "" for t, h in zip(r.masked, has)]
    if msgs["id"].duplicated().any():  # ids must be unique to track membership
        msgs["id"] = [f"{v}#{i}" if d else v for i, (v, d) in enumerate(zip(msgs["id"], msgs["id"].duplicated()))]
    r.msgs, r.good = msgs, msgs[r.ok].reset_index(drop=True)
    r.enc = r.encoder or r.triage.encoder or CachedEncoder(get_encoder())
    # topics, scorecards (plan matching) and routing memory all work in one space: the embedding of
    # each message's opening (see embed.topic_embeddings); the classifier's own features, if it has
    # embedding features at all, are a different thing
    r.emb = topic_embeddings(r.enc, r.good["text"].tolist())


def _cluster_describe(r: TopicRun) -> None:
    r.builder = TopicBuilder(r.config, r.place_finder or PlaceExtractor()).fit(r.good, r.emb, r.previous)


def _judge_rank(r: TopicRun) -> None:
    good, emb, builder = r.good, r.emb, r.builder
    r.now = r.now if r.now is not None else (good["submitted_at"].max() if len(good) else pd.Timestamp.now())
    judge = PrincipleJudge(encoder=r.enc, taxonomy=r.triage.taxonomy)
    hc = r.heat_config = default_heat_config()
    pos = {m: i for i, m in enumerate(good["id"])}
    texts_l, tokens_l = good["text"].tolist(), good["tokens"].tolist()
    # message age in days, once: per-topic pandas date arithmetic dominated at 100k messages
    r.age = age = ((pd.Timestamp(r.now) - pd.to_datetime(good["submitted_at"], errors="coerce")).dt.total_seconds()
                   / 86400.0).to_numpy(dtype=float)
    rows = []
    for t in builder.topics_:
        idx = [pos[m] for m in t.members]
        centroid = emb[idx].mean(0)
        centroid = centroid / (np.linalg.norm(centroid) or 1.0)
        card = judge.judge(t, [texts_l[k] for k in idx], [tokens_l[k] for k in idx], centroid)
        this, prev = counts_by_age(age[idx], hc.period_days)
        h = heat(voices=t.voices, submitters=t.submitters, support=t.support,
                 last_seen=t.last_seen, this_period=this, previous_period=prev, channels=len(t.channels),
                 places=len(t.places), principle_score=card.score, now=r.now, config=hc)
        route = route_topic(r.triage.router, t.domain, t.group_share, centroid, r.memory)
        r.cards[t.id] = {"scorecard": card.as_dict(), "heat": h.terms, "route": route.__dict__}
        rows.append({"heat": h.score, "verdict": card.verdict, "principle_score": round(card.score, 3), "committee": route.name if route.kind == "committee" else "",
                     "department": route.name if route.kind == "department" else "", "route_reason": route.reason,
                     "principles": " ".join(f"{p.name}:{p.verdict}" for p in card.principles),
                     "verdict_reason": card.reason,
                     "heat_terms": "；".join(f"{k} {v['points']:.3f}" for k, v in h.terms.items()),
                     "this_period": this, "previous_period": prev})
    topics = pd.concat([builder.topics_frame(), pd.DataFrame(rows)], axis=1)
    if len(topics):
        topics = rank_frame(topics)
    r.topics = topics
    members = r.assessed.copy()
    members["topic_id"] = [builder.topic_of_.get(m) if good_ else None for m, good_ in zip(r.msgs["id"], r.ok)]
    members["place_found"] = r.msgs["place"].fillna("")
    r.members = members


def _themes(r: TopicRun) -> None:
    r.themes = rank_themes(r.builder, r.topics, r.good, r.age, r.now, r.heat_config)


#: A run from raw texts, in order. A stage is added, dropped or swapped in such a list (and passed as
#: ``stages``), never as a new branch inside :func:`build_candidates`.
FROM_TEXT: tuple[Stage, ...] = (Stage("prepare", _prepare), Stage("classify", _classify),
                                Stage("places_embed", _places_embed), Stage("cluster_describe", _cluster_describe),
                                Stage("judge_rank", _judge_rank), Stage("themes", _themes))
#: A re-clustering's run: what intake worked out and kept is read, not redone (see ``stored``).
FROM_STORE: tuple[Stage, ...] = (Stage("prepare", _stored_texts), Stage("classify", _stored_assessments), *FROM_TEXT[2:])


def build_candidates(triage, frame: pd.DataFrame, text_columns: Sequence[str], *, encoder: Encoder | None = None,
                     now: pd.Timestamp | None = None, previous: Mapping[str, Iterable[str]] | None = None,
                     config: TopicConfig | None = None, memory: RoutingMemory | None = None,
                     stored: pd.DataFrame | None = None,
                     progress: Callable[[dict], None] | None = None,
                     stages: Sequence[Stage] | None = None) -> CandidateTopics:
    """Ranked candidate topics for the rows of ``frame``: the stages (:data:`FROM_TEXT`, or
    :data:`FROM_STORE` when ``stored`` is given) run in order over one :class:`TopicRun`.

    ``stored`` (the service's re-clustering) gives, row for row, what intake already worked out and
    kept: the masked ``text``, jieba ``tokens`` and the ``domain``/``scope`` (corrected by staff where
    they corrected it); ``places``/``place`` too if given, else they are found in the text. Segmenting and classifying every stored message again at each re-clustering
    cost about as much as the clustering itself, and would undo corrections.

    ``progress`` (a job's reporter) is called as each stage ends with ``{"stage": its Chinese name,
    "step": stages done, "steps": the number of stages, "messages": n, "seconds": so far}``.
    """
    stages = tuple(stages) if stages is not None else (FROM_STORE if stored is not None else FROM_TEXT)
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"阶段名重复：{'、'.join(sorted({n for n in names if names.count(n) > 1}))} / stage names must be unique")
    run = TopicRun(triage, frame.reset_index(drop=True), text_columns, encoder, now, previous, config, memory, stored)
    clock = {"start": time.perf_counter()}
    for k, stage in enumerate(stages):
        stage.run(run)
        # each stage's end is a line of progress, with its time: on a long run (a province's backlog,
        # an import) that says where it is, instead of one line at the very end
        clock[stage.name] = time.perf_counter()
        label = STAGE_LABELS.get(stage.name, stage.name)
        log.info("候选议题：%s完成（%d 条，%.1f 秒） / %s done", label, len(run.frame),
                 clock[stage.name] - clock["start"], stage.name)
        if progress is not None:
            progress({"stage": label, "step": k + 1, "steps": len(stages), "messages": len(run.frame),
                      "seconds": round(clock[stage.name] - clock["start"], 1)})
    marks = list(clock)
    seconds = {b: round(clock[b] - clock[a], 2) for a, b in zip(marks, marks[1:])}
    log.info("candidate topics for %d messages: %s", len(run.frame), seconds)
    return CandidateTopics(run.topics, run.members, run.themes, run.builder, run.cards, seconds)


def rank_themes(builder: TopicBuilder, topics: pd.DataFrame, good: pd.DataFrame, age: np.ndarray,
                now: pd.Timestamp, hc) -> pd.DataFrame:
    """Themes (the same problem at several places) ranked like topics: distinct citizens across all their
    messages first, then the heat of all their messages.

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
        best = max(th["topics"], key=lambda t: tuple(float(info.at[t, c]) for c in RANK_ORDER))
        score = max(float(info.at[t, "principle_score"]) for t in th["topics"])
        h = heat(voices=sum(t.voices for t in ts), submitters=len(people), support=sum(t.support for t in ts),
                 last_seen=max(t.last_seen for t in ts),
                 this_period=this, previous_period=prev, channels=len({c for t in ts for c in t.channels}),
                 places=len(th["places"]), principle_score=score, now=now, config=hc)
        rows.append({**th, "heat": h.score, "submitters": len(people), "committee": info.at[best, "committee"],
                     "heat_terms": "；".join(f"{k} {v['points']:.3f}" for k, v in h.terms.items())})
    return rank_frame(pd.DataFrame(rows))

