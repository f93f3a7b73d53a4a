"""Intake: one suggestion validated, analysed, stored with its assessment, and placed in a topic.

Idempotent (an ``Idempotency-Key`` replays the first answer); the topic comes from this worker's
index, and the topic's figures are refreshed at once. The model work (segmenting, masking, the
sentence encoder) is batched by :meth:`IntakeDesk.analyse`, outside the index lock.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from triage.office.clustering import ClusteringCoordinator
from triage.office.common import (Analysed, Conflict, Intake, InvalidRequest, OfficeService, _assessment_row, _blob,
                                  _naive, body_hash, full_text, new_receipt)
from triage.office.figures import TopicFigures, new_voice
from triage.errors import TriageError
from triage.office.index import TopicIndexKeeper
from triage.pipeline import validate_text
from triage.store.database import ApiKey, Assessment, Suggestion, Topic, utcnow
from triage.text.normalise import normalize
from triage.topics.builder import TopicIndex

log = logging.getLogger(__name__)


@dataclass
class Submission:
    """One submission of a group (:meth:`IntakeDesk.submit_many`); ``analysed`` when already analysed."""

    data: Intake
    key: ApiKey | None = None
    idempotency_key: str | None = None
    analysed: Analysed | None = None


#: what became of one submission: (row, assessment, replayed), or the error that refused it
Outcome = tuple[Suggestion, Assessment, bool] | Exception


class IntakeDesk(OfficeService):
    """Submissions from the portal, Open311 and a history import; the portal's live hints."""

    def __init__(self, state, index: TopicIndexKeeper, figures: TopicFigures,
                 clustering: ClusteringCoordinator) -> None:
        super().__init__(state)
        self.index, self.figures, self.clustering = index, figures, clustering

    def warm(self) -> None:
        """Load everything a first request would (jieba's dictionary, the encoder's graph, the topic
        index) up front: sixteen first requests at once would otherwise each wait for it."""
        self.analyse(["预热：小区路灯坏了"])
        self.fast.assess_texts(["预热：小区路灯坏了"])
        self.figures.judge()   # the 五大原则 judge embeds the annual plan once
        try:
            with self.lock:   # the topic index too: the first submission after a restart must not build it
                self.index.current()
        except Exception:  # noqa: BLE001 - the database may be down at start; the first submission retries
            log.warning("topic index not built at start (database unavailable?); it is built on first use")

    def analyse(self, texts: list[str], workers: int = 1) -> list["Analysed"]:
        """The model work of intake for valid texts, in one batch (the service batches concurrent
        submissions: the sentence encoder is several times faster per text in a batch). ``workers``
        processes segment and mask (a history import; the service's requests stay in one process)."""
        prepared = self.triage.prepare(texts, encoder=self.raw, workers=workers)
        results = self.triage.assess_texts(texts, prepared=prepared)
        emb_cols = [c for c in prepared.columns if str(c).startswith("emb")]
        from triage.embed.encoders import GIST_CHARS, topic_embeddings

        texts_m = [a.text for a in results]
        # the same space as re-clustering (build_candidates): each message's opening
        emb = topic_embeddings(self.raw, texts_m)
        # the whole text's embedding exists only where the classifier uses embedding features
        full = (prepared[emb_cols].to_numpy(np.float32) if emb_cols and self.triage.encoder is not None
                and self.triage.encoder.name == self.encoder.name else None)
        out = []
        for k, (a, tok, e) in enumerate(zip(results, prepared["tokens"], emb)):
            names, primary = self.places_in(a.text)
            short = len(a.text) <= GIST_CHARS
            out.append(Analysed(a, str(tok), e, names, primary,
                                full=full[k] if full is not None else (e if short else None), head=None if short else e))
        index = self.index.latest
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
        with a different body is a conflict. Everything is written in one transaction. One
        submission of :meth:`submit_many`, whose error is raised here.
        """
        outcome = self.submit_many([Submission(data, key, idempotency_key, analysed)], auto_recluster)[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def submit_many(self, items: Sequence[Submission], auto_recluster: bool = True) -> list[Outcome]:
        """Store several suggestions in one transaction (a group commit); each one's outcome in order:
        (row, assessment, replayed), or the error that refused it (nothing of it is stored).

        The service gathers the submissions that arrive while the previous group is being written
        (service/batching.py): one lock, one transaction and one commit for all of them, and each
        topic's figures refreshed once for the group instead of once per message. That per-message
        store work (about 20 ms, most of it the refresh) bounded intake at about 35 submissions/s.

        Each message is written inside its own savepoint, so one that the database refuses (a
        concurrent retry with the same ``Idempotency-Key`` that won the race: it is answered as a
        replay) costs only itself; the rest are committed. An error of the database itself (it is
        down or locked) refuses the whole group, and every caller gets it to retry.
        """
        outcomes: list[Outcome | None] = [None] * len(items)
        todo: list[tuple[int, Submission, str, str | None]] = []
        for k, it in enumerate(items):
            bh = body_hash(it.data)
            idem = f"{it.key.id if it.key else 0}:{it.idempotency_key}" if it.idempotency_key else None
            try:
                replay = self._replay(idem, bh) if idem else None
                if replay is not None:
                    outcomes[k] = (*replay, True)
                    continue
                reason = validate_text(it.data.text) or validate_text(full_text(it.data))
                if reason is not None:
                    raise InvalidRequest(reason)
            except TriageError as exc:   # a refused one: a conflicting key, an unreadable text
                outcomes[k] = exc
                continue
            todo.append((k, it, bh, idem))
        missing = [it for _k, it, _bh, _idem in todo if it.analysed is None]
        fresh = iter(self.analyse([full_text(it.data) for it in missing]) if missing else [])
        ready: list[tuple[int, Submission, str, str | None, Analysed, dt.datetime]] = []
        for k, it, bh, idem in todo:
            an = it.analysed or next(fresh)
            try:
                if an.assessment.error:
                    raise InvalidRequest(an.assessment.error)
                ready.append((k, it, bh, idem, an, self.admissible_time(it.data.submitted_at)))
            except InvalidRequest as exc:
                outcomes[k] = exc
        if not ready:
            return outcomes
        refused: dict[int, tuple[DBAPIError | None, str, str | None]] = {}
        with self.lock:
            index = self.index.current()
            with self.store.write_session() as s:
                grew: dict[str, int] = {}   # topic id -> its size before this group
                written: set[str] = set()   # the idempotency keys this group has stored
                for k, it, bh, idem, an, submitted in ready:
                    if idem in written:   # a retry within the group: answered from the first, once committed
                        refused[k] = (None, bh, idem)
                        continue
                    try:
                        with s.begin_nested():
                            outcomes[k] = (*self._store_one(s, index, it, an, submitted, idem, bh, grew), False)
                        if idem:
                            written.add(idem)
                    except (IntegrityError, DataError) as exc:
                        refused[k] = (exc, bh, idem)
                for tid, before in grew.items():
                    topic = s.get(Topic, tid)
                    if topic is not None:   # None: opened by a message whose savepoint was rolled back
                        self.figures.refresh_quietly(s, topic, index, grew_from=before)
        for k, (exc, bh, idem) in refused.items():
            # a concurrent retry with the same key won the race (another worker, or this group): the
            # winner's answer, or a conflict where the winner's body differs
            try:
                replay = self._replay(idem, bh) if idem else None
            except Conflict as conflict:
                outcomes[k] = conflict
                continue
            outcomes[k] = (*replay, True) if replay is not None else exc   # (exc is None only with a replay)
        stored = sum(1 for o in outcomes if isinstance(o, tuple) and not o[2])
        for _ in range(stored):
            self.clustering.count_submission()
        if stored:
            self.figures.reage_quietly()
            self.clustering.after_submission(index is None, auto_recluster)
        return outcomes

    def _store_one(self, s: Session, index: TopicIndex | None, it: Submission, an: Analysed,
                   submitted: dt.datetime, idem: str | None, bh: str, grew: dict[str, int]
                   ) -> tuple[Suggestion, Assessment]:
        """One message of a group: its topic in this worker's index, its rows, its topic's counts
        (the figures are refreshed once the group is written)."""
        a = an.assessment
        _given, place, places = self._places_of(it.data, an)
        tid, is_new = None, True
        if index is not None:
            lex = an.lex if an.index is index and place == an.place else None
            tid, _, is_new = index.assign(a.text, an.tokens, an.emb, place, pd.Timestamp(submitted), places, lex=lex,
                                            petition=a.scope == "individual")
            if not is_new and s.get(Topic, tid) is None:
                # the index predates a re-clustering that dropped this topic (its background rebuild
                # has not landed yet): joining it would bring the dropped topic back beside the
                # topic its members went to. Follow them there; rebuilding the index here, under
                # the lock, stalled every submission of this worker for the rebuild's length.
                successor = self.index.successor(tid)
                if successor is None:
                    is_new = True   # its members were left without a topic: this one opens one
                else:
                    tid = successor
        if is_new:
            real = f"T{self.store.next_value(s, 'topic'):06d}"
            if index is not None and tid is not None:
                index.ids[index.ids.index(tid)] = real
            tid = real
        row = self.suggestion_row(it.data, an, submitted, key=it.key, idem=idem, bh=bh)
        s.add(row)
        s.flush()
        arow = _assessment_row(row.id, a)
        s.add(arow)
        topic = s.get(Topic, tid)
        if topic is None:   # a new topic, or one this worker opened in a failed transaction
            topic = self.figures.new_topic(s, tid, row, a)
        grew.setdefault(topic.id, topic.size or 0)
        row.topic_id = topic.id
        topic.size = (topic.size or 0) + 1
        topic.last_seen = max(topic.last_seen or submitted, submitted)
        topic.first_seen = min(topic.first_seen or submitted, submitted)
        topic.submitters = (topic.submitters or 0) + new_voice(s, topic.id, row)
        topic.updated_at = utcnow()
        s.flush()   # a refusal surfaces here, inside this message's savepoint
        return row, arow

    def admissible_time(self, when: dt.datetime | None) -> dt.datetime:
        """The submission time as stored (naive UTC; now when not given), or InvalidRequest with why."""
        try:
            submitted = _naive(when) or utcnow()
        except (ValueError, OverflowError) as exc:   # 9999-12-31T23:00-05:00 is past year 9999 in UTC
            raise InvalidRequest("提交时间超出可表示的范围 / submitted_at is out of range") from exc
        if not self.config.earliest <= submitted <= utcnow() + dt.timedelta(seconds=self.config.clock_skew_s):
            raise InvalidRequest(f"提交时间 {submitted:%Y-%m-%d %H:%M} 不在可接受范围内（{self.config.earliest:%Y-%m-%d} 至当前时间）"
                                 " / submitted_at must lie between the office's earliest history and now")
        return submitted

    def places_in(self, text: str) -> tuple[list[str], str | None]:
        """Every place a masked text names, and its primary (most specific) one."""
        found = self.places.extract(text)
        primary = self.places.primary(found)
        return [p.name for p in found], primary.name if primary else None

    @staticmethod
    def with_given(given: str | None, primary: str | None, names: list[str]) -> tuple[str | None, list[str]]:
        """The primary place and every place: found in the text, else the one the form gave."""
        return primary or (given or None), list(names) or ([given] if given else [])

    @classmethod
    def _places_of(cls, data: Intake, an: "Analysed") -> tuple[str | None, str | None, list[str]]:
        """The place the form gave, the message's primary place and every place (see :meth:`with_given`)."""
        given = normalize(data.place).strip() if data.place else None
        return (given, *cls.with_given(given, an.place, an.places))

    def suggestion_row(self, data: Intake, an: "Analysed", submitted: dt.datetime, *, key: ApiKey | None,
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

    def classify(self, texts: list[str], full: bool = False) -> list:
        """Stateless assessment for the portal's live hints: nothing is stored."""
        return (self.triage if full else self.fast).assess_texts(texts)
