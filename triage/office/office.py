"""The consultation office's day: intake, topics, staff decisions, the lifecycle and the 回音壁.

Usable without the service (the FastAPI app is a thin layer over this class). State lives in the
:class:`~triage.store.database.Store`; this process keeps only rebuildable caches: the loaded model and the
incremental topic index. Each service worker has its own index; two workers may each open a topic
for the same new problem at the same moment, and the next re-clustering merges them (DESIGN.md).
Staff decisions pin a topic: re-clustering never touches a pinned topic or its members.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import json
import logging
import re
import os
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from triage.errors import TriageError
from triage.assess.features import PREPARE_PARALLEL_MIN
from triage.pipeline import Triage, validate_text
from triage.text.places import PlaceExtractor
from triage.judge.route import route_topic
from triage.store.database import (LIFECYCLE, OUTCOME_CLASSES, PUBLISHED_STAGES, ApiKey, Assessment, AuditEvent,
                          Correction, Setting, Store, Suggestion, Topic, utcnow)
from triage.text.normalise import normalize
from triage.topics.builder import TopicIndex, make_label

log = logging.getLogger(__name__)


class NotFound(TriageError):
    """No such receipt / topic / member (404)."""


class Conflict(TriageError):
    """The request contradicts the current state (409): a reused idempotency key, a wrong stage."""


class InvalidRequest(TriageError):
    """The request is well-formed but cannot be done as asked (422)."""


class Forbidden(TriageError):
    """The caller's key lacks the permission (403)."""


@dataclass
class Intake:
    """One suggestion as the portal or an Open311 client sends it."""

    text: str
    title: str = ""
    channel: str = "网上征题"
    place: str | None = None
    contact: str | None = None
    support: int = 0
    submitted_at: dt.datetime | None = None
    submitter: str = ""
    stated_domain: str | None = None


@dataclass
class Actor:
    """Who acts: recorded in every audit event."""

    name: str
    role: str
    key_id: int | None = None
    can_unmask: bool = False


@dataclass
class OfficeConfig:
    recluster_every: int = 200      # new suggestions (store-wide) before an automatic re-clustering …
    recluster_growth: float = 0.25  # … or this share of the store, whichever is more
    recluster_lease_s: float = 1800.0   # a re-clustering that takes longer is presumed dead
    #: once intake has been quiet this long and anything arrived since the last re-clustering, re-cluster
    #: (0: never). Counting alone left the newest messages on their intake-time topics until the next
    #: 200 (or a quarter of the store): an office with a dozen messages a day waited weeks, and a
    #: city's year replayed through the API ended with 800 messages never re-clustered (live vs full
    #: ARI 0.875). The service sets it (TRIAGE_RECLUSTER_QUIET_S, default 120 s); the library leaves it off.
    recluster_quiet_s: float = 0.0
    #: a re-clustering of at least this many messages runs in a child process at low priority, so the
    #: worker's intake shares neither its core nor Python's interpreter lock with it (None: never)
    recluster_apart_from: int | None = 3000
    min_reason_chars: int = 2
    petition_group_min: int = 5     # distinct citizens who make a petition a group issue in the topic list
    # A submission time is the citizen's (or the portal's) clock: accepted from the office's earliest
    # history to a few minutes ahead of ours. One bad clock (9999-12-31) made every later heat's age
    # term overflow; times stored before this bound are read clamped to it.
    earliest: dt.datetime = dt.datetime(2000, 1, 1)
    clock_skew_s: float = 900.0


def _naive(ts: dt.datetime | pd.Timestamp | None) -> dt.datetime | None:
    if ts is None or pd.isna(ts):
        return None
    ts = pd.Timestamp(ts)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.to_pydatetime()


def shown_id(value: object) -> str:
    """An id fit to echo in an error message: only the shapes we issue. Anything else a caller typed
    (a phone number pasted into the wrong field) is not repeated back into messages and logs."""
    v = str(value)
    return v if re.fullmatch(r"T\d{6,9}|YS\d{8}-[0-9A-Z]{8}|\d{1,9}", v) and not re.fullmatch(r"\d{7,}", v) else "（编号格式不符）"


def new_receipt(now: dt.datetime | None = None) -> str:
    """回执编号: date + 8 random base-32 characters, so receipts cannot be guessed or enumerated."""
    alphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    now = now or utcnow()
    return f"YS{now:%Y%m%d}-" + "".join(secrets.choice(alphabet) for _ in range(8))


@dataclass
class Analysed:
    assessment: Any
    tokens: str
    emb: np.ndarray                  # the topic embedding (the opening), see embed.topic_embeddings
    places: list[str] = field(default_factory=list)
    place: str | None = None
    lex: Any = None                  # the message's row in ``index``'s lexical space
    index: Any = None
    # kept in the store: the whole text's embedding (a short text's is its opening; a long text has one
    # only where the classifier uses embedding features) and a long text's opening
    full: np.ndarray | None = None
    head: np.ndarray | None = None


def masked_title(title: str | None, text: str | None) -> str:
    """A suggestion's title as staff may see it: the first line of its masked text.

    Intake masks title and body together (:func:`full_text` joins them with a line break), so the
    masked title is already stored; the ``title`` column keeps what the citizen typed, for the audited
    unmask path only. "张三 13812345678 反映小区漏水" reaches staff as "〔姓名〕 〔手机号〕 反映小区漏水".
    """
    if not title or not title.strip():
        return ""
    return (text or "").split("\n", 1)[0]


def full_text(data: Intake) -> str:
    return f"{data.title}\n{data.text}" if data.title and data.title.strip() else data.text


def body_hash(data: Intake) -> str:
    return hashlib.sha256(json.dumps(asdict(data), default=str, sort_keys=True, ensure_ascii=False)
                          .encode("utf-8")).hexdigest()


class Office:
    def __init__(self, store: Store, triage: Triage, fast: Triage | None = None, encoder=None,
                 config: OfficeConfig | None = None) -> None:
        from triage.embed.encoders import CachedEncoder, EmbeddingCache, get_encoder
        from triage.store.database import home_dir

        self.store = store
        self.triage = triage
        self.fast = fast or triage          # the model behind the portal's live hints (/classify)
        self.config = config or OfficeConfig()
        self.places = PlaceExtractor()
        if encoder is None:
            inner = triage.encoder.inner if triage.encoder is not None else get_encoder()
            encoder = CachedEncoder(inner, EmbeddingCache(home_dir() / "embeddings.sqlite"))
        self.encoder = encoder
        # intake embeds without a cache: the vectors go into the store with the message, and a
        # per-worker cache of every message ever seen would only grow
        self._raw = encoder.inner if isinstance(encoder, CachedEncoder) else encoder
        self._principle_judge = None           # built on first use (it embeds the annual plan)
        self._lock = threading.RLock()          # the index is mutated by assignment
        self._recluster_lock = threading.Lock()
        self._recluster_pending = threading.Lock()
        self._rebuilding = threading.Lock()
        self._redirect: dict[str, str | None] = {}   # dropped topic -> where its members went (per generation)
        self._redirect_gen: Any = object()
        self._index: TopicIndex | None = None
        self._index_gen: Any = None
        self._gen_checked = 0.0
        self._since_recluster = 0
        self._heat_clock: dt.datetime | None = None   # the store clock at this worker's last re-ageing
        self._settle_timer: threading.Timer | None = None
        self._settle_guard = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Stop this worker's pending settle run (a re-clustering already running finishes)."""
        with self._settle_guard:
            self._closed = True
            if self._settle_timer is not None:
                self._settle_timer.cancel()
                self._settle_timer = None

    # ================================================================ intake
    def warm(self) -> None:
        """Load everything a first request would (jieba's dictionary, the encoder's graph, the topic
        index) up front: sixteen first requests at once would otherwise each wait for it."""
        self.analyse(["预热：小区路灯坏了"])
        self.fast.assess_texts(["预热：小区路灯坏了"])
        self._judge()   # the 五大原则 judge embeds the annual plan once
        try:
            with self._lock:   # the topic index too: the first submission after a restart must not build it
                self._current_index()
        except Exception:  # noqa: BLE001 - the database may be down at start; the first submission retries
            log.warning("topic index not built at start (database unavailable?); it is built on first use")

    def analyse(self, texts: list[str], workers: int = 1) -> list["Analysed"]:
        """The model work of intake for valid texts, in one batch (the service batches concurrent
        submissions: the sentence encoder is several times faster per text in a batch). ``workers``
        processes segment and mask (a history import; the service's requests stay in one process)."""
        prepared = self.triage.prepare(texts, encoder=self._raw, workers=workers)
        results = self.triage.assess_texts(texts, prepared=prepared)
        emb_cols = [c for c in prepared.columns if str(c).startswith("emb")]
        from triage.embed.encoders import GIST_CHARS, topic_embeddings

        texts_m = [a.text for a in results]
        # the same space as re-clustering (build_candidates): each message's opening
        emb = topic_embeddings(self._raw, texts_m)
        # the whole text's embedding exists only where the classifier uses embedding features
        full = (prepared[emb_cols].to_numpy(np.float32) if emb_cols and self.triage.encoder is not None
                and self.triage.encoder.name == self.encoder.name else None)
        out = []
        for k, (a, tok, e) in enumerate(zip(results, prepared["tokens"], emb)):
            names, primary = self._places_in(a.text)
            short = len(a.text) <= GIST_CHARS
            out.append(Analysed(a, str(tok), e, names, primary,
                                full=full[k] if full is not None else (e if short else None), head=None if short else e))
        index = self._index
        if index is not None and out:   # vectorise the batch once, outside the index lock
            rows = index.lexical([x.tokens for x in out], [[*x.places, *([x.place] if x.place else [])] for x in out])
            for x, row in zip(out, rows):
                x.lex, x.index = row, index
        return out

    def replay(self, data: Intake, key: ApiKey | None, idempotency_key: str | None
               ) -> tuple[Suggestion, Assessment] | None:
        """The stored answer to an earlier request with this idempotency key, if any."""
        if not idempotency_key:
            return None
        return self._replay(f"{key.id if key else 0}:{idempotency_key}", body_hash(data))

    def submit(self, data: Intake, key: ApiKey | None = None, idempotency_key: str | None = None,
               auto_recluster: bool = True, analysed: "Analysed | None" = None) -> tuple[Suggestion, Assessment, bool]:
        """Store one suggestion with its assessment and topic; (row, assessment, replayed).

        Retrying with the same ``Idempotency-Key`` and body returns the first result; the same key
        with a different body is a conflict. Everything is written in one transaction.
        """
        bh = body_hash(data)
        idem = f"{key.id if key else 0}:{idempotency_key}" if idempotency_key else None
        if idem:
            replay = self._replay(idem, bh)
            if replay is not None:
                return (*replay, True)
        reason = validate_text(data.text) or validate_text(full_text(data))
        if reason is not None:
            raise InvalidRequest(reason)
        an = analysed or self.analyse([full_text(data)])[0]
        a, emb, tokens = an.assessment, an.emb, an.tokens
        if a.error:
            raise InvalidRequest(a.error)
        _given, place, places = self._places_of(data, an)
        submitted = self._admissible_time(data.submitted_at)
        with self._lock:
            index = self._current_index()
            tid, is_new = None, True
            if index is not None:
                lex = an.lex if an.index is index and place == an.place else None
                tid, _, is_new = index.assign(a.text, tokens, emb, place, pd.Timestamp(submitted), places, lex=lex)
                if not is_new and not self._topic_exists(tid):
                    # the index predates a re-clustering that dropped this topic (its background rebuild
                    # has not landed yet): joining it would bring the dropped topic back beside the
                    # topic its members went to. Follow them there; rebuilding the index here, under
                    # the lock, stalled every submission of this worker for the rebuild's length.
                    successor = self._successor(tid)
                    if successor is None:
                        is_new = True   # its members were left without a topic: this one opens one
                    else:
                        tid = successor
            try:
                with self.store.session() as s:
                    if is_new:
                        real = f"T{self.store.next_value(s, 'topic'):06d}"
                        if index is not None and tid is not None:
                            index.ids[index.ids.index(tid)] = real
                        tid = real
                    row = self._suggestion_row(data, an, submitted, key=key, idem=idem, bh=bh)
                    s.add(row)
                    s.flush()
                    arow = _assessment_row(row.id, a)
                    s.add(arow)
                    topic = s.get(Topic, tid)
                    if topic is None:   # a new topic, or one this worker opened in a failed transaction
                        topic = self._new_topic(s, tid, row, a)
                    row.topic_id = topic.id
                    topic.size = (topic.size or 0) + 1
                    topic.last_seen = max(topic.last_seen or submitted, submitted)
                    topic.first_seen = min(topic.first_seen or submitted, submitted)
                    topic.submitters = (topic.submitters or 0) + self._new_voice(s, topic.id, row)
                    topic.updated_at = utcnow()
                    self._refresh_quietly(s, topic, index)
            except IntegrityError:
                if idem:  # a concurrent retry with the same key won the race
                    replay = self._replay(idem, bh)
                    if replay is not None:
                        return (*replay, True)
                raise
        self._since_recluster += 1
        self._reage_quietly()
        if auto_recluster and (self._since_recluster >= self.config.recluster_every or index is None):
            self._recluster_soon()
        if auto_recluster:   # even then: a run already going may not hold this message
            self._settle_later()
        return row, arow, False

    def _admissible_time(self, when: dt.datetime | None) -> dt.datetime:
        """The submission time as stored (naive UTC; now when not given), or InvalidRequest with why."""
        try:
            submitted = _naive(when) or utcnow()
        except (ValueError, OverflowError) as exc:   # 9999-12-31T23:00-05:00 is past year 9999 in UTC
            raise InvalidRequest("提交时间超出可表示的范围 / submitted_at is out of range") from exc
        if not self.config.earliest <= submitted <= utcnow() + dt.timedelta(seconds=self.config.clock_skew_s):
            raise InvalidRequest(f"提交时间 {submitted:%Y-%m-%d %H:%M} 不在可接受范围内（{self.config.earliest:%Y-%m-%d} 至当前时间）"
                                 " / submitted_at must lie between the office's earliest history and now")
        return submitted

    def _places_in(self, text: str) -> tuple[list[str], str | None]:
        """Every place a masked text names, and its primary (most specific) one."""
        found = self.places.extract(text)
        primary = self.places.primary(found)
        return [p.name for p in found], primary.name if primary else None

    @staticmethod
    def _with_given(given: str | None, primary: str | None, names: list[str]) -> tuple[str | None, list[str]]:
        """The primary place and every place: found in the text, else the one the form gave."""
        return primary or (given or None), list(names) or ([given] if given else [])

    @classmethod
    def _places_of(cls, data: Intake, an: "Analysed") -> tuple[str | None, str | None, list[str]]:
        """The place the form gave, the message's primary place and every place (see :meth:`_with_given`)."""
        given = normalize(data.place).strip() if data.place else None
        return (given, *cls._with_given(given, an.place, an.places))

    def _suggestion_row(self, data: Intake, an: "Analysed", submitted: dt.datetime, *, key: ApiKey | None,
                        idem: str | None, bh: str | None = None) -> Suggestion:
        """The stored row of one analysed suggestion (no topic yet): intake and a history import alike."""
        a = an.assessment
        given, place, places = self._places_of(data, an)
        return Suggestion(
            receipt=new_receipt(), submitted_at=submitted, channel=data.channel or "", title=data.title or "",
            raw_text=data.text, text=a.text, tokens=an.tokens, pii_kinds=a.pii_kinds, contact=data.contact,
            place_given=given, place=place, places=places,
            stated_domain=data.stated_domain, support=max(0, int(data.support or 0)), submitter=data.submitter or "",
            api_key_id=key.id if key else None, idempotency_key=idem, body_hash=bh or body_hash(data),
            domain=a.domain, scope=a.scope, route_kind=a.route.kind, route_name=a.route.name,
            embedding=_blob(an.full), head_embedding=_blob(an.head),
            embedding_model=self.encoder.name if an.full is not None or an.head is not None else None)

    def _topic_exists(self, tid: str) -> bool:
        with self.store.session() as s:
            return s.execute(select(Topic.id).where(Topic.id == tid)).first() is not None

    REDIRECTS_KEPT = 50_000

    def _successor(self, tid: str) -> str | None:
        """Where the members of a topic that a re-clustering dropped went (None: nowhere, or not known).

        Each re-clustering records, for each topic it drops, the topic most of its members joined
        (:meth:`_recluster`, the ``topics_redirect`` setting, read here once per generation).
        """
        gen = self.store.get_setting("topics_generation")
        if self._redirect_gen != gen:
            self._redirect = dict(self.store.get_setting("topics_redirect") or {})
            self._redirect_gen = gen
        successor = self._redirect.get(tid)
        with self.store.session() as s:
            for _hop in range(8):   # staff may have merged the successor since: follow the merge
                t = s.get(Topic, successor) if successor else None
                if t is None or t.status != "merged" or not t.merged_into:
                    break
                successor = t.merged_into
        if t is None or t.status not in ("candidate", "accepted"):
            log.info("topic %s was dropped by a re-clustering and has no live successor: a new topic opens", tid)
            return None
        return successor

    def _reage_quietly(self) -> None:
        """Every topic's recency at the store's clock, once the clock has moved a tenth of a half-life.

        Intake refreshes only the topic a message joins; every other topic kept the recency of its
        last message's day, so long-silent topics stayed on top of the staff list until a
        re-clustering (replaying a real board through the API: 1 of the 10 issues the most citizens
        raised in the top 20, 2 after one more re-clustering). A failure costs no submission.
        """
        from triage.judge.rank import default_heat_config, reage

        hc = default_heat_config()
        try:
            with self._lock, self.store.session() as s:
                now = self._sane_time(s.execute(select(func.max(Suggestion.submitted_at))).scalar())
                if now is None or (self._heat_clock is not None
                                   and now - self._heat_clock < dt.timedelta(days=hc.half_life_days / 10)):
                    return
                rows = s.execute(select(Topic.id, Topic.heat_terms, Topic.last_seen, Topic.updated_at)
                                 .where(Topic.status != "merged", Topic.last_seen.is_not(None))).all()
                changes = []
                for r in rows:
                    if not r.heat_terms:
                        continue
                    h = reage(r.heat_terms, (now - self._sane_time(r.last_seen)).total_seconds() / 86400.0, hc)
                    changes.append({"b_id": r.id, "b_at": r.updated_at, "b_heat": h.score, "b_terms": h.terms})
                if changes:
                    # a topic another worker refreshed meanwhile keeps its newer figures
                    tbl = Topic.__table__   # a Core executemany: the ORM would insist on bulk-by-primary-key
                    s.connection().execute(
                        update(tbl).where(tbl.c.id == bindparam("b_id"), tbl.c.updated_at == bindparam("b_at"))
                        .values(heat=bindparam("b_heat"), heat_terms=bindparam("b_terms")), changes)
            self._heat_clock = now
        except Exception:  # noqa: BLE001 - logged; the next submission or re-clustering tries again
            log.exception("re-ageing topic heat failed")

    def _replay(self, idem: str, bh: str) -> tuple[Suggestion, Assessment] | None:
        with self.store.session() as s:
            row = s.execute(select(Suggestion).where(Suggestion.idempotency_key == idem)).scalar_one_or_none()
            if row is None:
                return None
            if row.body_hash != bh:
                raise Conflict("同一个 Idempotency-Key 已用于另一条内容不同的留言 / idempotency key reused with a different body")
            return row, self._latest_assessment(s, row.id)

    @staticmethod
    def _latest_assessment(s: Session, sid: int) -> Assessment:
        return s.execute(select(Assessment).where(Assessment.suggestion_id == sid)
                         .order_by(Assessment.id.desc()).limit(1)).scalar_one()

    @staticmethod
    def _new_voice(s: Session, tid: str, row: Suggestion) -> int:
        """1 if ``row``'s submitter has not written to this topic before (anonymous ones always count):
        one indexed lookup, not a scan of every member."""
        if not row.submitter:
            return 1
        seen = s.execute(select(Suggestion.id).where(Suggestion.topic_id == tid, Suggestion.submitter == row.submitter,
                                                     Suggestion.id != row.id).limit(1)).first()
        return 0 if seen else 1

    @staticmethod
    def _submitters(s: Session, tid: str, extra: Suggestion | None = None) -> int:
        rows = s.execute(select(Suggestion.id, Suggestion.submitter).where(Suggestion.topic_id == tid)).all()
        people = {sub or f"_anon{sid}" for sid, sub in rows}
        if extra is not None and extra.id not in {sid for sid, _ in rows}:
            people.add(extra.submitter or f"_anon{extra.id}")
        return len(people)

    def _judge(self):
        """The 五大原则 judge, built once (it embeds the annual plan's items)."""
        if self._principle_judge is None:
            from triage.judge.principles import PrincipleJudge

            self._principle_judge = PrincipleJudge(encoder=self.encoder, taxonomy=self.triage.taxonomy)
        return self._principle_judge

    #: above this many members a topic's figures are refreshed at every 5 % of growth, not every message
    REFRESH_EVERY_ABOVE = 300

    def _refresh_quietly(self, s: Session, t: Topic, index: TopicIndex | None) -> None:
        """:meth:`_refresh_topic`, but a failure there never costs a citizen their submission: the
        message is stored and the next re-clustering recomputes the topic."""
        size = t.size or 0
        if size > self.REFRESH_EVERY_ABOVE and size % max(1, size // 20):
            return
        try:
            with s.begin_nested():
                self._refresh_topic(s, t, index)
        except Exception:  # noqa: BLE001 - logged; intake goes on
            log.exception("topic %s not refreshed at intake; the next re-clustering will", t.id)

    def _refresh_topic(self, s: Session, t: Topic, index: TopicIndex | None = None) -> None:
        """Heat, scorecard, counts, keywords, places and label of one topic from its members, the
        moment a message joins it.

        Staff see topics between re-clusterings: a topic opened at intake used to show heat 0.000, no
        badges and no keywords until the next re-clustering, and sat at the bottom of the list however
        many people wrote. This is the same heat and the same judge as a re-clustering
        (:func:`triage.candidates.build_candidates`), over this topic's members only; what needs every
        topic at once (c-TF-IDF keywords, themes, near-duplicate voices) is approximated here (the
        topic's most frequent words; identical texts as one voice) and redone at the next re-clustering.
        """
        from triage.judge.rank import counts_by_age, default_heat_config, heat
        from triage.topics.builder import Topic as TopicData

        rows = s.execute(select(Suggestion.id, Suggestion.text, Suggestion.tokens, Suggestion.title,
                                Suggestion.submitter, Suggestion.support, Suggestion.submitted_at,
                                Suggestion.channel, Suggestion.scope, Suggestion.domain, Suggestion.places,
                                Suggestion.place).where(Suggestion.topic_id == t.id).order_by(Suggestion.id)).all()
        if not rows:
            return
        texts = [r.text or "" for r in rows]
        data = TopicData(id=t.id, members=[str(r.id) for r in rows], size=len(rows))
        data.submitters = len({r.submitter or f"_anon{r.id}" for r in rows})
        data.voices = len(set(texts))
        data.duplicates = data.size - data.voices
        data.channels = sorted({r.channel for r in rows if r.channel})
        data.support = int(sum(max(0, r.support or 0) for r in rows))
        data.group_share = sum(r.scope == "group" for r in rows) / len(rows)
        doms = Counter(r.domain for r in rows if r.domain)
        if doms:
            data.domain, c = doms.most_common(1)[0]
            data.domain_share = c / len(rows)
        data.places = [p for p, _ in Counter(p for r in rows for p in (r.places or [])).most_common(5)]
        prim = Counter(r.place for r in rows if r.place)
        data.place = prim.most_common(1)[0][0] if prim else None
        data.campaign = data.size >= 3 and data.duplicates >= max(2, data.size // 2) and data.submitters <= max(2, data.size // 3)
        place_words = set(data.places)
        # dict.fromkeys, not set: ties among keywords keep the text order, whatever the hash seed (the
        # label is picked by its keywords: a set made it differ from one run to the next)
        words = Counter(w for r in rows for w in dict.fromkeys((r.tokens or "").split())
                        if len(w) > 1 and not w.startswith("〔") and not any(w in p for p in place_words))
        data.keywords = [w for w, _ in words.most_common(6)]
        times = [self._sane_time(r.submitted_at) for r in rows if r.submitted_at is not None]
        data.first_seen, data.last_seen = (min(times), max(times)) if times else (None, None)
        centroid = None
        if index is not None and t.id in index.ids:
            centroid = index.En[index.ids.index(t.id)]
        card = self._judge().judge(data, texts, [r.tokens or "" for r in rows], centroid)
        # the same clock as a re-clustering: the newest message in the store, not the wall clock
        now = pd.Timestamp(self._sane_time(s.execute(select(func.max(Suggestion.submitted_at))).scalar() or utcnow()))
        hc = default_heat_config()
        ages = np.array([(now - pd.Timestamp(x)).total_seconds() / 86400.0 for x in times]) if times else np.zeros(0)
        this, prev = counts_by_age(ages, hc.period_days)
        h = heat(voices=data.voices, submitters=data.submitters, support=data.support,
                 last_seen=pd.Timestamp(data.last_seen) if data.last_seen else None, this_period=this,
                 previous_period=prev, channels=len(data.channels), places=len(data.places),
                 principle_score=card.score, now=now, config=hc)
        t.size, t.submitters = data.size, data.submitters
        t.heat, t.heat_terms = h.score, h.terms
        t.scorecard, t.verdict = card.as_dict(), card.verdict
        if t.pinned or t.status != "candidate":
            return   # staff decided this topic (its route, its representative): only its figures move
        route = route_topic(self.triage.router, data.domain, data.group_share, centroid)
        rep = next((r for r in rows if r.id == t.representative_id), rows[0])
        t.keywords, t.places, t.place, t.domain = data.keywords, data.places, data.place, data.domain
        t.route_kind, t.route_reason = route.kind, route.reason
        t.committee_id = route.id if route.kind == "committee" else None
        t.committee = route.name if route.kind == "committee" else None
        t.department = route.name if route.kind == "department" else None
        t.representative_id = rep.id
        if not t.label_locked:
            t.label = make_label(rep.place or data.place, rep.text or "", data.keywords,
                                 title=masked_title(rep.title, rep.text) or None)

    def _new_topic(self, s: Session, tid: str, row: Suggestion, a) -> Topic:
        route = route_topic(self.triage.router, a.domain, 1.0 if a.scope == "group" else 0.0)
        t = Topic(id=tid, label=make_label(row.place, a.text, []), keywords=[], places=list(row.places or []),
                  place=row.place, domain=a.domain, route_kind=route.kind,
                  committee_id=route.id if route.kind == "committee" else None,
                  committee=route.name if route.kind == "committee" else None,
                  department=route.name if route.kind == "department" else None, route_reason=route.reason,
                  size=0, submitters=0, representative_id=row.id, first_seen=row.submitted_at,
                  last_seen=row.submitted_at)
        s.add(t)
        s.flush()
        return t

    def classify(self, texts: list[str], full: bool = False) -> list:
        """Stateless assessment for the portal's live hints: nothing is stored."""
        return (self.triage if full else self.fast).assess_texts(texts)

    # ================================================================ citizen's receipt
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
        while topic is not None and topic.status == "merged" and topic.merged_into:
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

    # ================================================================ topics
    def list_topics(self, *, status: str | None = None, domain: str | None = None, committee: str | None = None,
                    verdict: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None,
                    q: str | None = None, sort: str = "heat", limit: int = 50, offset: int = 0,
                    petitions: bool = False) -> tuple[int, list[Topic]]:
        """Topics, hottest first. Individual petitions (routed to a department) stay out of the list
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
        order = {"heat": (Topic.heat.desc(), Topic.size.desc()), "size": (Topic.size.desc(), Topic.heat.desc()),
                 "recent": (Topic.last_seen.desc(),)}[sort]
        with self.store.session() as s:
            total = s.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
            rows = list(s.execute(stmt.order_by(*order, Topic.id).limit(limit).offset(offset)).scalars())
        return int(total), rows

    def _sane_time(self, ts: dt.datetime | None) -> dt.datetime | None:
        """A stored submission time clamped to what intake accepts (rows stored before the bound)."""
        if ts is None:
            return None
        return min(max(ts, self.config.earliest), utcnow() + dt.timedelta(seconds=self.config.clock_skew_s))

    def topic(self, tid: str, actor: Actor, unmask: bool = False, reason: str = "") -> dict[str, Any]:
        if unmask:
            if not actor.can_unmask:
                raise Forbidden("此密钥无查看个人信息的权限 / this key may not unmask personal data")
            self._need_reason(reason)
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

    def _need_reason(self, reason: str | None) -> str:
        if not reason or len(reason.strip()) < self.config.min_reason_chars:
            raise InvalidRequest("请填写理由 / a reason is required")
        return reason.strip()

    def decide(self, tid: str, action: str, actor: Actor, reason: str, **p: Any) -> dict[str, Any]:
        """Apply one staff decision; every one is recorded, with its reason, in the audit trail."""
        reason = self._need_reason(reason)
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
        with self._lock, self.store.session() as s:
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
        if action in ("merge", "split"):
            self._bump_generation()    # the index must learn the new membership
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
        target.submitters = self._submitters(s, target.id)
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
        new.submitters = self._submitters(s, nid)
        rest = [m for i, m in current.items() if i not in ids]
        t.size, t.submitters, t.pinned = len(rest), self._submitters(s, t.id), True
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

    def board(self, limit: int = 100) -> list[Topic]:
        """回音壁: published topics and their outcomes (no member data)."""
        with self.store.session() as s:
            return list(s.execute(select(Topic).where(Topic.status == "accepted", Topic.stage.in_(PUBLISHED_STAGES))
                                  .order_by(Topic.published_at.desc()).limit(limit)).scalars())

    # ================================================================ re-clustering and the index
    def _bump_generation(self) -> None:
        with self.store.session() as s:
            self.store.set_setting(s, "topics_generation", secrets.token_hex(8))
        self._gen_checked = 0.0

    def _current_index(self) -> TopicIndex | None:
        """The index to assign into (called under ``self._lock``).

        The first one is built here; after that, another worker's re-clustering (a new generation)
        is picked up by a rebuild in the background, so submissions never wait for it.
        """
        now = time.monotonic()
        if self._index is not None and now - self._gen_checked < 1.0:
            return self._index
        self._gen_checked = now
        gen = self.store.get_setting("topics_generation")
        if self._index is None:
            self._index, _ = self._build_index()
            self._index_gen = gen
        elif gen != self._index_gen and self._rebuilding.acquire(blocking=False):
            threading.Thread(target=self._rebuild, args=(gen,), name="triage-index", daemon=True).start()
        return self._index

    def _rebuild(self, gen: Any) -> None:
        try:
            index, upto = self._build_index()
            with self._lock:
                if index is not None:
                    # what was stored while the index was being built (by any worker) joins it now
                    with self.store.session() as s:
                        live = select(Topic.id).where(Topic.status.in_(("candidate", "accepted")))
                        late = self._messages(s, (Suggestion.id > upto) & Suggestion.topic_id.in_(live))
                    if len(late):
                        emb = self._topic_embeddings(late)
                        index.absorb(list(zip(late["topic_id"], late["tokens"], emb, late["place"],
                                              late["submitted_at"], late["places"])))
                self._index, self._index_gen = index, gen
        except Exception:  # noqa: BLE001 - the old index keeps serving; the next check retries
            log.exception("rebuilding the topic index failed; the previous one stays in use")
        finally:
            self._rebuilding.release()

    _MESSAGE_COLUMNS = ("id", "text", "tokens", "submitted_at", "channel", "submitter", "support", "scope", "domain",
                        "places", "place", "topic_id", "title", "raw_text", "embedding", "head_embedding",
                        "embedding_model")

    def _messages(self, s: Session, where) -> pd.DataFrame:
        """The stored messages that ``where`` selects, as the clustering reads them. Plain rows, not
        ORM objects: an index rebuild reads every live message (20,000 and more), and building an
        object for each cost most of the read, in the serving worker."""
        cols = [getattr(Suggestion, c) for c in self._MESSAGE_COLUMNS]
        rows = s.execute(select(*cols).where(where).order_by(Suggestion.id)).all()
        own = [r.embedding_model == self.encoder.name for r in rows]
        return pd.DataFrame({
            "id": [str(r.id) for r in rows], "text": [r.text for r in rows], "tokens": [r.tokens for r in rows],
            "submitted_at": pd.to_datetime([self._sane_time(r.submitted_at) for r in rows]),
            "channel": [r.channel for r in rows],
            "submitter": [r.submitter for r in rows], "support": [r.support for r in rows],
            "scope": [r.scope for r in rows], "domain": [r.domain for r in rows],
            "places": [list(r.places or []) for r in rows], "place": [r.place for r in rows],
            "topic_id": [r.topic_id for r in rows], "title": [r.title for r in rows],
            "raw_text": [r.raw_text for r in rows],
            "embedding": [r.embedding if k else None for r, k in zip(rows, own)],
            "head_embedding": [r.head_embedding if k else None for r, k in zip(rows, own)]},
            index=pd.RangeIndex(len(rows)))

    @staticmethod
    def _known_embeddings(msgs: pd.DataFrame) -> dict[str, np.ndarray]:
        """The embeddings stored with these messages (text or opening → vector): rebuilding the index
        or re-clustering then embeds only messages stored without them (older rows)."""
        from triage.embed.encoders import GIST_CHARS

        known: dict[str, np.ndarray] = {}
        for text, full, head in zip(msgs["text"], msgs["embedding"], msgs["head_embedding"]):
            if full is not None:
                known[text] = np.frombuffer(full, dtype=np.float32)
            if head is not None:
                known[text[:GIST_CHARS]] = np.frombuffer(head, dtype=np.float32)
        return known

    def _stored_encoder(self, msgs: pd.DataFrame):
        """The office's encoder, primed with the embeddings stored with these messages."""
        from triage.embed.encoders import prefilled

        return prefilled(self.encoder, self._known_embeddings(msgs))

    def _goes_apart(self, messages: int) -> bool:
        limit = self.config.recluster_apart_from
        return limit is not None and messages >= limit

    def _encoder_apart(self) -> tuple[str, str | None] | None:
        """How a child process builds this worker's topic encoder (its spec and cache file), or None
        when it cannot (an encoder that exists only in this process, such as a test's stand-in)."""
        from triage.embed.encoders import CachedEncoder

        inner = self.encoder.inner if isinstance(self.encoder, CachedEncoder) else self.encoder
        cache = self.encoder.cache.path if isinstance(self.encoder, CachedEncoder) else None
        spec = getattr(inner, "spec", None)
        return None if spec is None else (spec, str(cache) if cache else None)

    def _apart(self, messages: int) -> tuple[str, Any, str, str | None] | None:
        """What a child process needs to re-cluster as this worker would (model directory, taxonomy,
        encoder spec, its cache file), or None to cluster here: a small store (starting a process and
        loading the model cost more than they spare), or a model or encoder that exists only in this
        process (trained in memory, a test's stand-in)."""
        encoder = self._encoder_apart() if self._goes_apart(messages) else None
        directory = getattr(self.triage.bundle, "directory", None)
        if encoder is None or directory is None:
            return None
        return directory, self.triage.taxonomy, *encoder

    def _topic_embeddings(self, msgs: pd.DataFrame) -> np.ndarray:
        from triage.embed.encoders import topic_embeddings

        enc = self._stored_encoder(msgs)
        emb = topic_embeddings(enc, msgs["text"].tolist())
        if enc.misses:
            log.info("embedded %d stored messages that had no stored embedding", enc.misses)
        return emb

    def _build_index(self) -> tuple[TopicIndex | None, int]:
        """The incremental index from the stored membership (no re-clustering), and the last
        suggestion id it covers. On a large store it is built in a child process (as a large
        re-clustering is), so the submissions this worker takes meanwhile do not wait on it."""
        with self.store.session() as s:
            live = select(Topic.id).where(Topic.status.in_(("candidate", "accepted")))
            msgs = self._messages(s, Suggestion.topic_id.in_(live))
        upto = int(msgs["id"].astype(int).max()) if len(msgs) else 0
        if len(msgs) < 2:
            return None, upto
        known = self._known_embeddings(msgs)
        msgs = msgs.drop(columns=["embedding", "head_embedding", "raw_text"])
        encoder = self._encoder_apart() if self._goes_apart(len(msgs)) else None
        if encoder is not None:
            from triage.apart import ApartError, run_apart

            try:
                return run_apart(index_from_stored_apart, *encoder, msgs, known), upto
            except (ApartError, OSError) as exc:
                log.warning("building the topic index in a child process failed, so it is built here: %s", exc)
        return index_from_stored(msgs, self.encoder, self.places, known), upto

    def _recluster_soon(self) -> None:
        if not self._recluster_pending.acquire(blocking=False):   # one background run at a time
            return
        threading.Thread(target=self._recluster_quietly, name="triage-recluster", daemon=True).start()

    def _settle_later(self) -> None:
        """(Re)arm this worker's settle run: ``recluster_quiet_s`` after the latest submission."""
        quiet = self.config.recluster_quiet_s
        if quiet <= 0:
            return
        with self._settle_guard:
            if self._closed:
                return
            if self._settle_timer is not None:
                self._settle_timer.cancel()
            timer = threading.Timer(quiet, self._settle)
            timer.name, timer.daemon = "triage-settle", True
            timer.start()
            self._settle_timer = timer

    def _settle(self) -> None:
        if not self._recluster_pending.acquire(blocking=False):
            self._settle_later()   # a run is going: it may not hold the newest messages; look again later
            return
        self._recluster_quietly(settle=True)

    def _recluster_quietly(self, settle: bool = False) -> None:
        try:
            self.recluster(only_if_due=True, settle=settle)
        except Conflict:   # another worker is re-clustering: its result reaches this one as a new generation
            if settle:
                self._settle_later()   # but it may have started before this worker's newest messages
        except Exception:  # noqa: BLE001 - a background repair must not kill the worker; it is logged
            log.exception("re-clustering failed; topics stay as they were")
        finally:
            self._recluster_pending.release()

    def recluster_running_elsewhere(self) -> bool:
        """Whether a re-clustering runs now: this worker's own (automatic or settle) or a live worker's
        lease (a dead holder's lease is taken over)."""
        if self._recluster_lock.locked() or self._recluster_pending.locked():
            return True
        holder = self.store.lease_holder("recluster")
        return holder is not None and not self._lease_is_stale(holder)

    def _lease_is_stale(self, holder: str) -> bool:
        # A holder on this machine whose process is gone (kill -9) cannot release its lease. Nor can
        # this process, if its release failed (the database went away mid-run): the caller holds
        # ``_recluster_lock``, so no run of this process still holds the lease.
        host, _, rest = holder.partition(":")
        pid = rest.partition(":")[0]
        if host != socket.gethostname() or not pid.isdigit():
            return False
        if int(pid) == os.getpid():
            return True
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def recluster(self, actor: Actor | None = None, only_if_due: bool = False, settle: bool = False,
                  progress: Callable[[dict], None] | None = None) -> dict[str, Any]:
        """Re-cluster the messages of unpinned candidate topics; ids kept by membership overlap.

        One worker re-clusters for all (a lease in the store). Its cost grows with the store, so the
        automatic run (``only_if_due``) waits for ``recluster_every`` new suggestions or
        ``recluster_growth`` of the store, whichever is more: the cost per suggestion stays flat.
        A settle run (``settle``, after intake went quiet) is due once anything arrived since the
        last run, in any worker: its cost is one run per quiet spell, not per suggestion.
        ``progress`` receives each stage as it ends (see :meth:`_recluster`).
        """
        holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        with self._recluster_lock:
            total = self.store.count_suggestions()
            mark = self.store.claim("recluster", holder, self.config.recluster_lease_s, stale=self._lease_is_stale)
            if mark is None:
                raise Conflict("正在重新聚类，请稍后再试 / a re-clustering is already running; try again shortly")
            done = None
            try:
                due = total > mark if settle else total - mark >= max(self.config.recluster_every,
                                                                       self.config.recluster_growth * mark)
                if only_if_due and not due:
                    self._since_recluster = 0
                    return {"messages": 0, "topics": 0, "skipped": "not due"}
                result = self._recluster(actor, progress)
                if progress is not None and result.get("skipped") == "decided meanwhile":
                    # said after the write lock is released (the job's row is written in its own session)
                    progress({"stage": "未写入（其间有议题被决定，稍后重跑）", "step": self.RECLUSTER_STEPS,
                              "steps": self.RECLUSTER_STEPS, "messages": result["messages"], "seconds": None})
                done = total
                return result
            finally:
                self.store.release("recluster", holder, mark=done)

    #: a re-clustering's stages as its job reports them: reading, the topic stages, writing
    RECLUSTER_STEPS = 8

    def _recluster(self, actor: Actor | None, progress: Callable[[dict], None] | None = None) -> dict[str, Any]:
        """``progress`` gets ``{"stage", "step", "steps", "messages", "seconds"}`` as each stage ends:
        读取留言, the six stages of :func:`build_candidates`, 写入议题 (minutes at 100k stored messages,
        and staff watching the job should see where it is)."""
        t0 = time.perf_counter()

        def report(stage: str, step: int, messages: int) -> None:
            if progress is not None:
                progress({"stage": stage, "step": step, "steps": self.RECLUSTER_STEPS, "messages": messages,
                          "seconds": round(time.perf_counter() - t0, 1)})

        self._since_recluster = 0
        with self.store.session() as s:
            free = select(Topic.id).where(Topic.status == "candidate", Topic.pinned.is_(False))
            msgs = self._messages(s, Suggestion.topic_id.in_(free) | Suggestion.topic_id.is_(None))
        report("读取留言", 1, len(msgs))
        if msgs.empty:
            report("无需写入（没有未决定的留言）", self.RECLUSTER_STEPS, 0)
            return {"messages": 0, "topics": 0}
        previous = {tid: g["id"].tolist() for tid, g in msgs.groupby("topic_id")}
        frame = msgs[["id", "title", "raw_text", "submitted_at", "channel", "submitter", "support"]]
        stored = msgs[["text", "tokens", "domain", "scope"]]
        known = self._known_embeddings(msgs)
        res = None
        step = lambda p: report(p["stage"], p["step"] + 1, len(msgs))  # noqa: E731
        apart = self._apart(len(msgs))
        if apart is not None:
            from triage.apart import ApartError, run_apart

            try:
                res = run_apart(cluster_stored_apart, *apart, frame, previous, stored, known, progress=step)
            except (ApartError, OSError) as exc:   # a child that cannot start or fails: cluster here instead
                if isinstance(exc, ApartError) and exc.killed:
                    raise   # the out-of-memory killer, most likely: here it would take the worker too
                log.warning("re-clustering in a child process failed, so it runs in this worker: %s", exc)
        if res is None:
            res = cluster_stored(self.triage, self.encoder, frame, previous, stored, known, progress=step)
        from triage.embed.encoders import GIST_CHARS

        # a message's topic embedding is its opening: a short text's own embedding, a long text's head
        long_ = msgs["text"].str.len().to_numpy() > GIST_CHARS
        missing = int(np.where(long_, msgs["head_embedding"].isna(), msgs["embedding"].isna()).sum())
        if missing:
            log.info("re-clustering embedded %d messages stored without embeddings", missing)
        topics = res["topics"]
        # each topic's row, worked out before intake is held
        values = {r["topic_id"]: self._topic_values(r, res["scorecards"][r["topic_id"]])
                  for r in topics.to_dict("records")}
        w0 = time.perf_counter()
        with self._lock, self.store.session() as s:
            # Intake goes on while the clustering runs (seconds to minutes). From here to the commit
            # no other worker may store a suggestion, so that every message of a topic about to go
            # is seen and moved; the writes below are bulk statements, so this lasts well under a second.
            self.store.hold_writes(s)
            decided = s.execute(select(Topic.id).where(Topic.id.in_(list(previous)),
                                                       Topic.pinned.is_(True) | (Topic.status != "candidate"))).scalars().all()
            if decided:   # staff acted on one of these topics meanwhile: their decision wins; run again soon
                log.info("re-clustering discarded: %d of its topics were decided meanwhile", len(decided))
                self._since_recluster = self.config.recluster_every
                return {"messages": int(len(msgs)), "topics": 0, "skipped": "decided meanwhile"}
            # a topic id the store does not know yet gets a store-wide number (ids are shared by workers)
            rename = {tid: (tid if tid in previous else f"T{self.store.next_value(s, 'topic'):06d}")
                      for tid in topics["topic_id"]}
            kept = set(rename.values())
            dropped = [tid for tid in previous if tid not in kept]
            topic_of: dict[int, str | None] = {int(m): rename[t] for m, t in res["topic_of"].items()}
            # messages stored since the snapshot: in a topic that stays they stay (and count); in a
            # topic that goes they follow most of its members
            snapshot = set(msgs["id"].astype(int))
            gone = set(dropped)
            late_to: dict[str, int] = {}
            for sid, tid in s.execute(select(Suggestion.id, Suggestion.topic_id).where(Suggestion.topic_id.is_not(None))):
                if sid in snapshot or tid not in previous:
                    continue
                if tid in gone:
                    tid = self._most_joined(previous[tid], topic_of)
                    topic_of[sid] = tid
                if tid:
                    late_to[tid] = late_to.get(tid, 0) + 1
            self._write_topics(s, {rename[tid]: v for tid, v in values.items()}, late_to)
            before = dict(zip(msgs["id"].astype(int), msgs["topic_id"]))
            moves = [{"id": sid, "topic_id": tid} for sid, tid in topic_of.items() if before.get(sid, "?") != tid]
            moves += [{"id": sid, "topic_id": None} for sid, tid in before.items()
                      if sid not in topic_of and tid in gone]
            if moves:
                s.execute(update(Suggestion), moves)   # bulk UPDATE by primary key
            if dropped:
                s.execute(delete(Topic).where(Topic.id.in_(dropped), Topic.pinned.is_(False)))
                self._record_successors(s, {tid: self._most_joined(previous[tid], topic_of) for tid in dropped})
            s.add(AuditEvent(actor=actor.name if actor else "system", role=actor.role if actor else "",
                             action="recluster", target_type="topics", target_id="*",
                             detail={"messages": len(msgs), "topics": len(topics), "seconds": res["seconds"],
                                     "moved": len(moves), "arrived_meanwhile": sum(late_to.values()),
                                     "without_embeddings": missing, "texts_embedded": res["misses"], "apart": res.get("apart", False)}))
            self.store.set_setting(s, "topics_generation", secrets.token_hex(8))
        write_s = time.perf_counter() - w0   # intake waits this long (the store's writes are held)
        report("写入议题", self.RECLUSTER_STEPS, len(msgs))
        self._gen_checked = 0.0   # this worker's index follows the new generation (rebuilt in the background)
        log.info("re-clustering: %d messages, %d topics; clustering %.1f s, writing %.1f s",
                 len(msgs), len(topics), sum(res["seconds"].values()), write_s)
        return {"messages": int(len(msgs)), "topics": int(len(topics)), "seconds": res["seconds"],
                "write_seconds": round(write_s, 2)}

    @staticmethod
    def _most_joined(members: list[str], topic_of: dict[int, str | None]) -> str | None:
        votes = Counter(topic_of.get(int(m)) for m in members)
        votes.pop(None, None)
        return votes.most_common(1)[0][0] if votes else None

    def _record_successors(self, s: Session, successors: dict[str, str | None]) -> None:
        """Remember where each dropped topic's members went, for workers whose index still holds it
        (:meth:`_successor`). Older entries are carried through this run's moves, so a worker two
        generations behind still finds the live topic; the oldest go past ``REDIRECTS_KEPT``."""
        old = s.get(Setting, "topics_redirect")
        chain: dict[str, str | None] = {}
        for tid, to in (old.value if old is not None and isinstance(old.value, dict) else {}).items():
            chain[tid] = successors.get(to, to) if to is not None else None
        for tid in successors:
            chain.pop(tid, None)
        chain.update(successors)
        if len(chain) > self.REDIRECTS_KEPT:
            chain = dict(list(chain.items())[-self.REDIRECTS_KEPT:])
        self.store.set_setting(s, "topics_redirect", chain)

    @staticmethod
    def _topic_values(r: dict[str, Any], card: dict) -> dict[str, Any]:
        """A re-clustered topic's columns, from its row in the ranked topics and its scorecard."""
        route = card["route"]
        return {
            "label": r["label"], "keywords": [k for k in str(r["keywords"]).split("、") if k],
            "places": [p for p in str(r["places"]).split("、") if p], "place": r["place"] or None,
            "domain": r["domain"] or None, "route_kind": route["kind"],
            "committee_id": route["id"] if route["kind"] == "committee" else None,
            "committee": route["name"] if route["kind"] == "committee" else None,
            "department": route["name"] if route["kind"] == "department" else None,
            "route_reason": route["reason"], "heat": float(r["heat"]), "heat_terms": card["heat"],
            "scorecard": card["scorecard"], "verdict": r["verdict"], "size": int(r["size"]),
            "submitters": int(r["submitters"]), "representative_id": int(r["representative_id"]),
            "theme": r["theme"] or None, "first_seen": _naive(r["first_seen"]), "last_seen": _naive(r["last_seen"]),
            "updated_at": utcnow()}

    @staticmethod
    def _write_topics(s: Session, values: dict[str, dict[str, Any]], late_to: dict[str, int]) -> None:
        """Insert or update every re-clustered topic in a few bulk statements (intake is held meanwhile).

        One ORM load and flush per topic took about 4 s at 20,000 stored messages, all of it with
        every worker's intake waiting. A label staff locked stays theirs.
        """
        from sqlalchemy import insert

        ids = list(values)
        locked: dict[str, bool] = {}
        for k in range(0, len(ids), 5000):   # bounded IN lists
            locked.update(s.execute(select(Topic.id, Topic.label_locked).where(Topic.id.in_(ids[k:k + 5000]))).all())
        new, free, keep_label = [], [], []
        for tid, v in values.items():
            row = {**v, "id": tid, "size": v["size"] + late_to.get(tid, 0)}
            if tid not in locked:
                new.append(row)
            elif locked[tid]:
                row.pop("label")
                keep_label.append(row)
            else:
                free.append(row)
        if new:
            s.execute(insert(Topic), new)
        for rows in (free, keep_label):
            if rows:
                s.execute(update(Topic), rows)   # bulk UPDATE by primary key

    # ================================================================ bulk import (first start)
    def remask(self, batch: int = 500, actor: Actor | None = None) -> dict[str, Any]:
        """Mask every stored message again with today's masker (titles and bodies, from the raw columns).

        Masking improves (a name NER, new rules); rows stored before kept what the older masker left in
        clear, in the text every staff key reads. Segmentation and place finding improve too, and a
        re-clustering reads the stored ``tokens`` and ``places``: they are brought up to date from the
        masked text even where the text itself is unchanged (an earlier version compared the text only,
        so lettered place codes cut as one word reached no stored message). Only ``text`` (with its
        search document), ``tokens``, ``pii_kinds``, ``place`` and ``places`` change (a place the form
        gave stays the fallback, as at intake); the raw columns are the source and stay as they are.
        Topics' places, keywords and labels were made from the old rows: ``triage remask`` re-clusters
        once when any row changed. Idempotent; the store records the masker version it reached
        (``masker_version``).
        """
        from triage.text.normalise import MASKER_VERSION, clean, tokens

        changed = seen = 0
        last = 0
        while True:
            with self._lock, self.store.session() as s:
                rows = s.execute(select(Suggestion).where(Suggestion.id > last).order_by(Suggestion.id)
                                 .limit(batch)).scalars().all()
                if not rows:
                    break
                for r in rows:
                    m = clean(full_text(Intake(text=r.raw_text, title=r.title or "")))
                    toks = " ".join(tokens(m.text))
                    names, primary = self._places_in(m.text)
                    place, places = self._with_given(r.place_given, primary, names)
                    if (m.text, toks, place, places) != (r.text, r.tokens, r.place, list(r.places or [])):
                        r.text, r.tokens, r.pii_kinds, r.place, r.places = m.text, toks, m.kinds, place, places
                        changed += 1
                seen += len(rows)
                last = rows[-1].id
            log.info("remask: %d messages read, %d changed", seen, changed)
        # labels and keywords were made from the old masked texts; decided topics are never re-clustered
        topics = 0
        with self._lock, self.store.session() as s:
            for t in s.execute(select(Topic).where(Topic.label_locked.is_(False))).scalars():
                label = clean(t.label or "").text
                kept = [k for k in (t.keywords or []) if clean(k).text == k]
                if label != (t.label or "") or kept != list(t.keywords or []):
                    t.label, t.keywords = label, kept
                    topics += 1
        with self.store.session() as s:
            self.store.set_setting(s, "masker_version", MASKER_VERSION)
            s.add(AuditEvent(actor=actor.name if actor else "triage remask", role=actor.role if actor else "admin",
                             action="remask", target_type="store", target_id=MASKER_VERSION,
                             detail={"messages": seen, "changed": changed, "topics": topics}))
        return {"messages": seen, "changed": changed, "topics": topics, "masker_version": MASKER_VERSION}

    #: rows analysed and written together by :meth:`import_frame`: twice the size at which preparing
    #: texts spreads over processes, so a batch with a few refused rows still runs on every core
    IMPORT_BATCH = 2 * PREPARE_PARALLEL_MIN

    def import_frame(self, frame: pd.DataFrame, text_columns: list[str],
                     progress: Callable[[dict], None] | None = None,
                     lines: Sequence[int] | None = None) -> dict[str, int]:
        """Load a table of past suggestions (a history, the demo file on first start), then re-cluster once.

        History is not intake: no row waits for an answer and a re-clustering follows, so rows are
        analysed in batches on every core (segmenting, masking, the sentence encoder per batch) and
        written in bulk without a topic; the one re-clustering at the end builds every topic. Through
        :meth:`submit` one row at a time, each row paid for its own model calls and a topic update
        under the worker's lock. A row that cannot be stored is reported with its line in the file
        (``lines``, as :func:`triage.io.tables.read_table` counts them; else the header is line 1 and each
        row one line) and the rest goes on. ``progress`` gets ``{"stage", "done", "total", "seconds"}``
        after each batch, then the re-clustering's stages.

        Where staff have already decided topics (accepted, pinned), a re-clustering leaves those alone,
        so rows are then placed one at a time as intake places them (the model work still batched):
        a history message about an accepted topic joins it instead of opening a candidate beside it.
        """
        from triage.candidates import _net_support, _pick

        t0 = time.perf_counter()
        stored = failed = 0
        titles = frame[text_columns[0]] if len(text_columns) > 1 else None
        body = frame[text_columns[-1]]
        when, chan, who = _pick(frame, "submitted_at"), _pick(frame, "channel"), _pick(frame, "submitter")
        support = _net_support(frame)
        workers = os.cpu_count() or 1
        total = len(frame)

        def refuse(i: int, reason: str) -> None:
            nonlocal failed
            failed += 1
            log.warning("第 %d 行未导入：%s", lines[i] if lines is not None else i + 2, reason)

        with self.store.session() as s:
            decided = s.execute(select(func.count()).select_from(Topic).where(
                Topic.pinned.is_(True) | (Topic.status != "candidate"))).scalar_one()

        for lo in range(0, total, self.IMPORT_BATCH):
            batch: list[tuple[int, Intake, dt.datetime]] = []
            for i in range(lo, min(lo + self.IMPORT_BATCH, total)):
                stamp = _cell(when.iat[i]) if when is not None else ""
                data = Intake(text=_cell(body.iat[i]), title=_cell(titles.iat[i]) if titles is not None else "",
                              channel=(_cell(chan.iat[i]) if chan is not None else "") or "历史导入",
                              place=(_cell(frame["place"].iat[i]) or None) if "place" in frame else None,
                              submitted_at=pd.to_datetime(stamp, errors="coerce") if stamp else None,
                              submitter=_cell(who.iat[i]) if who is not None else "",
                              support=int(support.iat[i]) if isinstance(support, pd.Series) else 0)
                if stamp and pd.isna(data.submitted_at):   # a history row's time is not "now" by accident
                    refuse(i, f"提交时间“{stamp[:40]}”无法识别 / submitted_at is not a date")
                    continue
                reason = validate_text(data.text) or validate_text(full_text(data))
                if reason is not None:
                    refuse(i, reason)
                    continue
                try:
                    submitted = self._admissible_time(data.submitted_at)
                except InvalidRequest as exc:
                    refuse(i, str(exc))
                    continue
                batch.append((i, data, submitted))
            analysed = self.analyse([full_text(d) for _, d, _ in batch], workers=workers) if batch else []
            if decided:
                for (i, data, _), an in zip(batch, analysed):
                    try:
                        self.submit(data, auto_recluster=False, analysed=an)
                        stored += 1
                    except InvalidRequest as exc:
                        refuse(i, str(exc))
            else:
                keep = []
                for (i, data, submitted), an in zip(batch, analysed):
                    if an.assessment.error:
                        refuse(i, an.assessment.error)
                    else:
                        keep.append((data, an, submitted))
                for attempt in range(3):
                    try:
                        with self.store.session() as s:
                            rows = [self._suggestion_row(d, an, t, key=None, idem=None) for d, an, t in keep]
                            s.add_all(rows)
                            s.flush()
                            s.add_all([_assessment_row(r.id, an.assessment) for r, (_d, an, _t) in zip(rows, keep)])
                        break
                    except IntegrityError:
                        # two random receipts alike (about one batch in 200 at 100k rows): new ones, again
                        if attempt == 2:
                            raise
                        log.info("导入：回执编号重复，本批重新编号 / import: a receipt collided; renumbering the batch")
                stored += len(keep)
            done = min(lo + self.IMPORT_BATCH, total)
            secs = time.perf_counter() - t0
            log.info("导入：%d / %d 行（已存 %d，未导入 %d；%.0f 行/秒） / import: %d of %d rows", done, total, stored,
                     failed, done / max(secs, 1e-9), done, total)
            if progress is not None:
                progress({"stage": "分析与写入", "done": done, "total": total, "seconds": round(secs, 1)})
        # the rows written without a topic get theirs now: wait out another worker's run (the lease)
        # and run again if staff decided one of its topics meanwhile (it then writes nothing)
        for _attempt in range(120):
            try:
                if self.recluster(progress=progress).get("skipped") != "decided meanwhile":
                    break
            except Conflict:
                log.info("导入：另一进程正在重新聚类，稍候重试 / import: a re-clustering is running elsewhere; waiting")
                time.sleep(5)
        else:
            log.warning("导入完成，但重新聚类未能完成：这些留言将在下次重新聚类时归入议题 / imported, but the "
                        "re-clustering did not finish: the next one gives these messages their topics")
        return {"stored": stored, "failed": failed}


def _cell(v: object) -> str:
    """A table cell as text: "" for an empty one (None, NaN, NaT), never the string "None" or "nan"."""
    return "" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)


def _blob(v: np.ndarray | None) -> bytes | None:
    return None if v is None else np.asarray(v, dtype=np.float32).tobytes()


def _assessment_row(sid: int, a) -> Assessment:
    return Assessment(suggestion_id=sid, model_version=a.model_version, domain=a.domain,
                      domain_confidence=a.domain_confidence, scope=a.scope, scope_confidence=a.scope_confidence,
                      route_kind=a.route.kind, route_id=a.route.id, route_name=a.route.name,
                      route_reason=a.route.reason,
                      evidence={"domain": [[w, round(float(v), 4)] for w, v in a.domain_evidence],
                                "scope_cues": a.scope_cues,
                                "scope": [[w, round(float(v), 4)] for w, v in a.scope_evidence]})


def cluster_stored(triage: Triage, encoder, frame: pd.DataFrame, previous: dict[str, list[str]],
                   stored: pd.DataFrame, known: dict[str, np.ndarray],
                   progress: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """One re-clustering's computation (no store): topics, scorecards and each message's topic.

    The service runs it in a child process on a large store (:func:`cluster_stored_apart`), so the
    result is plain data rather than the builder itself.
    """
    from triage.candidates import build_candidates
    from triage.embed.encoders import prefilled

    enc = prefilled(encoder, known)
    res = build_candidates(triage, frame, ["title", "raw_text"], encoder=enc, previous=previous, stored=stored,
                           progress=progress)
    return {"topics": res.topics, "scorecards": res.scorecards, "topic_of": dict(res.builder.topic_of_),
            "seconds": res.seconds, "misses": enc.misses}


def cluster_stored_apart(model_dir: str, taxonomy: Any, encoder_spec: str, cache: str | None,
                         frame: pd.DataFrame, previous: dict[str, list[str]], stored: pd.DataFrame,
                         known: dict[str, np.ndarray], progress: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """:func:`cluster_stored` in a fresh process: the model and encoder loaded as the worker loaded them."""
    out = cluster_stored(Triage.load(model_dir, taxonomy), _encoder_from(encoder_spec, cache), frame, previous,
                         stored, known, progress=progress)
    out["apart"] = True
    return out


def index_from_stored(msgs: pd.DataFrame, encoder, places: PlaceExtractor,
                      known: dict[str, np.ndarray]) -> TopicIndex | None:
    """The incremental topic index over stored messages as they are grouped now (no re-clustering)."""
    from triage.embed.encoders import prefilled, topic_embeddings
    from triage.topics.builder import TopicBuilder

    if len(msgs) < 2:
        return None
    codes, uniq = pd.factorize(msgs["topic_id"])
    ids = msgs["id"].tolist()
    previous: dict[str, list[str]] = {tid: [] for tid in uniq}
    for sid, k in zip(ids, codes):
        previous[uniq[k]].append(sid)
    enc = prefilled(encoder, known)
    emb = topic_embeddings(enc, msgs["text"].tolist())
    if enc.misses:
        log.info("embedded %d stored messages that had no stored embedding", enc.misses)
    b = TopicBuilder(places=places).fit(msgs, emb, previous, labels=codes, describe=False)
    return TopicIndex(b)


def index_from_stored_apart(encoder_spec: str, cache: str | None, msgs: pd.DataFrame,
                            known: dict[str, np.ndarray], progress: Callable[[dict], None] | None = None) -> TopicIndex | None:
    """:func:`index_from_stored` in a fresh process, with the worker's encoder."""
    return index_from_stored(msgs, _encoder_from(encoder_spec, cache), PlaceExtractor(), known)


def _encoder_from(spec: str, cache: str | None):
    """The worker's topic encoder rebuilt in a child process: the same model, the same cache file."""
    from triage.embed.encoders import CachedEncoder, EmbeddingCache, get_encoder

    return CachedEncoder(get_encoder(spec), EmbeddingCache(cache))
