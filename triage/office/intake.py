"""Intake: one suggestion validated, analysed, stored with its assessment, and placed in a topic.

Idempotent (an ``Idempotency-Key`` replays the first answer); the topic comes from this worker's
index, and the topic's figures are refreshed at once. The model work (segmenting, masking, the
sentence encoder) is batched by :meth:`IntakeDesk.analyse`, outside the index lock; the writes are
batched too (:meth:`IntakeDesk.submit_many`, a group commit with an outcome per submission).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from triage.office.clustering import ClusteringCoordinator
from triage.office.common import (Analysed, Conflict, Intake, InvalidRequest, OfficeService, _assessment_row, _blob,
                                  _naive, body_hash, full_text, new_receipt)
from triage.office.figures import TopicFigures, earlier_voices
from triage.office.index import TopicIndexKeeper
from triage.pipeline import validate_text
from triage.store.database import ApiKey, Assessment, StoreError, Suggestion, Topic, utcnow
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


@dataclass(eq=False)
class _Placed:
    """One submission of a group on its way into the store (see :meth:`IntakeDesk.submit_many`)."""

    k: int                       # its place in the group
    it: Submission
    bh: str                      # its body's hash
    idem: str | None             # its idempotency key as stored
    an: Analysed
    submitted: dt.datetime
    tid: str | None = None       # its topic: the index's id, then the store's
    is_new: bool = True
    same_as: "_Placed | None" = None   # joins the topic that this earlier message of the group opens

    def __post_init__(self) -> None:
        _given, self.place, self.places = IntakeDesk._places_of(self.it.data, self.an)


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
        (row, assessment, replayed), or the error that refused it (nothing of it is stored). Never
        raises: every error belongs to the submissions it refused.

        The service gathers the submissions that arrive while the previous group is being written
        (service/batching.py): one lock, one transaction and one commit for all of them, and each
        topic's figures refreshed once for the group instead of once per message. That per-message
        store work (about 20 ms, most of it the refresh) bounded intake at about 35 submissions/s.

        * Each message is placed in its topic by this worker's index first; the new topics' ids are
          then reserved in a committed transaction of their own (:meth:`Store.reserve_values`), so a
          group that fails later never hands an id out twice.
        * Each message's rows are written inside its own savepoint: one the database or a bug refuses
          costs only itself (a concurrent retry with the same ``Idempotency-Key`` that won the race
          is answered as a replay); the rest are committed.
        * The topics' rows are then updated in id order, the one order every group takes their
          locks in (on PostgreSQL two groups taking them in arrival order deadlocked). A deadlock
          with another writer retries the group's write; any other error of the database itself
          (it is down or locked) refuses the group's writes, and each of its callers gets it.
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
            except Exception as exc:  # noqa: BLE001 - a refused one (a conflicting key, an unreadable text), or the database down
                outcomes[k] = exc
                continue
            todo.append((k, it, bh, idem))
        missing = [it for _k, it, _bh, _idem in todo if it.analysed is None]
        try:
            fresh = iter(self.analyse([full_text(it.data) for it in missing]) if missing else [])
        except Exception as exc:  # noqa: BLE001 - the model failed: those waiting for it get why
            for k, it, _bh, _idem in todo:
                if it.analysed is None:
                    outcomes[k] = exc
            todo = [x for x in todo if x[1].analysed is not None]
            fresh = iter([])
        ready: list[_Placed] = []
        for k, it, bh, idem in todo:
            an = it.analysed or next(fresh)
            try:
                if an.assessment.error:
                    raise InvalidRequest(an.assessment.error)
                ready.append(_Placed(k, it, bh, idem, an, self.admissible_time(it.data.submitted_at)))
            except InvalidRequest as exc:
                outcomes[k] = exc
        index = None
        refused: dict[int, tuple[Exception | None, _Placed]] = {}
        if ready:
            with self.lock:
                try:
                    index = self.index.current()
                    placed = self._place(index, ready, outcomes)
                    self._write(index, placed, outcomes, refused)
                except Exception as exc:  # noqa: BLE001 - the database is down or locked: each caller gets it
                    log.warning("intake: a group of %d not stored (%s)", len(ready), type(exc).__name__)
                    for p in ready:
                        if outcomes[p.k] is None:
                            outcomes[p.k] = exc
        for k, (exc, p) in refused.items():
            # a concurrent retry with the same key won the race (another worker, or this group): the
            # winner's answer, or a conflict where the winner's body differs
            try:
                replay = self._replay(p.idem, p.bh) if p.idem else None
            except Exception as err:  # noqa: BLE001 - a Conflict, or the database gone since
                outcomes[k] = err
                continue
            outcomes[k] = ((*replay, True) if replay is not None else exc or StoreError(
                "同一 Idempotency-Key 的首次提交未能保存，请重试 / the first request with this key was not stored; retry"))
        stored = sum(1 for o in outcomes if isinstance(o, tuple) and not o[2])
        if stored:
            try:   # the rows are committed: what follows must not turn their callers' answers into errors
                for _ in range(stored):
                    self.clustering.count_submission()
                self.figures.reage_quietly()
                self.clustering.after_submission(index is None, auto_recluster)
            except Exception:  # noqa: BLE001 - logged; the next submission or the settle run tries again
                log.exception("intake: after-submission work failed; the messages are stored")
        return outcomes   # type: ignore[return-value] - every slot is filled above

    def _place(self, index: TopicIndex | None, ready: list["_Placed"], outcomes: list) -> list["_Placed"]:
        """Each message's topic in this worker's index (which this updates), and real ids for the
        topics the group opens: where the index's topic was dropped by a re-clustering whose index
        has not landed yet, its successor (rebuilding the index here, under the lock, stalled every
        submission of this worker for the rebuild's length); where it has none, a new topic. Where staff
        merged the index's topic since, the topic it was merged into."""
        placed: list[_Placed] = []
        for p in ready:
            try:
                if index is not None:
                    a = p.an.assessment
                    lex = p.an.lex if p.an.index is index and p.place == p.an.place else None
                    p.tid, _, p.is_new = index.assign(a.text, p.an.tokens, p.an.emb, p.place, pd.Timestamp(p.submitted),
                                                      p.places, lex=lex, petition=a.scope == "individual")
                placed.append(p)
            except Exception as exc:  # noqa: BLE001 - a bug on one message costs only that message
                log.exception("intake: a message could not be placed in a topic")
                outcomes[p.k] = exc
        joined = {p.tid for p in placed if not p.is_new}
        have: set[str] = set()
        merged: dict[str, str | None] = {}   # a topic staff merged -> the live topic it went into
        if joined:
            with self.store.session() as s:
                for tid, status, into in s.execute(select(Topic.id, Topic.status, Topic.merged_into)
                                                   .where(Topic.id.in_(joined))).all():
                    if status == "merged":
                        merged[tid] = self._merged_target(s, into)
                    else:
                        have.add(tid)
        opener: dict[str | None, _Placed] = {}   # the index's id of a topic this group opens -> its first message
        for p in placed:
            if p.tid in opener and p.tid is not None:   # joins a topic opened earlier in this group
                p.same_as = opener[p.tid]
            elif p.is_new:
                opener[p.tid if p.tid is not None else f"_{p.k}"] = p
            elif merged.get(p.tid):
                # staff merged it since this worker's index was built (its rebuild is on the way):
                # the message joins the topic it was merged into, not a topic staff no longer see
                p.tid = merged[p.tid]
            elif p.tid not in have:
                successor = self.index.successor(p.tid)
                if successor is None:   # its members were left without a topic: this one opens one
                    p.is_new = True
                    opener[p.tid] = p
                else:
                    p.tid = successor
        news = list(opener.items())
        for (index_id, p), value in zip(news, self.store.reserve_values("topic", len(news))):
            real = f"T{value:06d}"
            if index is not None and p.tid is not None:
                index.ids[index.ids.index(index_id)] = real
            p.tid, p.is_new = real, True
        for p in placed:
            if p.same_as is not None:
                p.tid = p.same_as.tid
        return placed

    @staticmethod
    def _merged_target(s: Session, tid: str | None, hops: int = 20) -> str | None:
        """The live topic (candidate or accepted) at the end of a chain of staff merges that starts at
        ``tid``; None where the chain ends elsewhere (a rejected topic, nowhere, a loop)."""
        for _ in range(hops):
            if tid is None:
                return None
            row = s.execute(select(Topic.status, Topic.merged_into).where(Topic.id == tid)).first()
            if row is None:
                return None
            if row.status != "merged":
                return tid if row.status in ("candidate", "accepted") else None
            tid = row.merged_into
        return None

    def _write(self, index: TopicIndex | None, placed: list["_Placed"], outcomes: list,
               refused: dict[int, tuple[Exception | None, "_Placed"]]) -> None:
        """Write a placed group in one transaction (see :meth:`submit_many`); a deadlock retries it."""
        for attempt in range(3):
            done: dict[int, tuple[Suggestion, Assessment]] = {}
            failed: dict[int, tuple[Exception | None, _Placed]] = {}
            try:
                with self.store.write_session() as s:
                    if not self._insert_group(s, placed, done, failed):
                        self._insert_each(s, placed, done, failed)
                    self._update_topics(s, index, [p for p in placed if p.k in done], done)
            except OperationalError as exc:
                if self.store.is_transient(exc) and attempt < 2:
                    log.info("intake: the group's write met a deadlock; writing it again")
                    continue
                raise
            for k, rows in done.items():
                outcomes[k] = (*rows, False)
            refused.update(failed)
            return

    def _insert_group(self, s: Session, placed: list["_Placed"], done: dict, failed: dict) -> bool:
        """The group's rows in one savepoint and two flushes; False (nothing written) when the database
        refused any of them, and :meth:`_insert_each` then finds which. A flush per message cost about
        a tenth of intake's time; a refusal (a key that raced, a bad value) is rare."""
        fresh: list[_Placed] = []
        keys: set[str] = set()
        for p in placed:
            if p.idem and p.idem in keys:   # a retry within the group: answered from the first, once committed
                continue
            if p.idem:
                keys.add(p.idem)
            fresh.append(p)
        try:
            with s.begin_nested():
                rows, arows = self._add_rows(s, fresh)
        except OperationalError:
            raise   # the database itself: the group's transaction is gone
        except Exception:  # noqa: BLE001 - one of them was refused: each in its own savepoint finds which
            return False
        taken = {p.k for p in fresh}
        for p in placed:
            if p.k not in taken:
                failed[p.k] = (None, p)
        for p, row, arow in zip(fresh, rows, arows):
            done[p.k] = (row, arow)
        return True

    def _insert_each(self, s: Session, placed: list["_Placed"], done: dict, failed: dict) -> None:
        """The group's rows each in its own savepoint: a refused one costs only itself."""
        written: set[str] = set()   # the idempotency keys this group has stored
        for p in placed:
            if p.idem in written:   # a retry within the group: answered from the first, once committed
                failed[p.k] = (None, p)
                continue
            try:
                with s.begin_nested():   # a refusal surfaces in its flushes, inside this message's savepoint
                    (row,), (arow,) = self._add_rows(s, [p])
            except OperationalError:
                raise   # the database itself: the group's transaction is gone
            except Exception as exc:  # noqa: BLE001 - this message only (a key that raced, a bad value)
                if not isinstance(exc, IntegrityError):
                    log.exception("intake: a message was refused by the database")
                failed[p.k] = (exc, p)
                continue
            if p.idem:
                written.add(p.idem)
            done[p.k] = (row, arow)

    def _add_rows(self, s: Session, ps: list["_Placed"]) -> tuple[list[Suggestion], list[Assessment]]:
        """The stored rows of these messages and of their assessments, added and flushed (the
        assessments need the rows' ids)."""
        rows = [self.suggestion_row(p.it.data, p.an, p.submitted, key=p.it.key, idem=p.idem, bh=p.bh) for p in ps]
        s.add_all(rows)
        s.flush()
        arows = [_assessment_row(row.id, p.an.assessment) for row, p in zip(rows, ps)]
        s.add_all(arows)
        s.flush()
        return rows, arows

    def _update_topics(self, s: Session, index: TopicIndex | None, placed: list["_Placed"],
                       done: dict[int, tuple[Suggestion, Assessment]]) -> None:
        """Open, count and refresh the group's topics, in id order (the order of their row locks)."""
        members: dict[str, list[_Placed]] = {}
        for p in placed:
            members.setdefault(p.tid, []).append(p)
        grew: dict[str, tuple[Topic, int]] = {}
        # one query for the group's topics and one for whether each submitter wrote to its topic
        # before, not one of each per message. The topics are locked as they are read (in id order,
        # as other groups and the re-ageing take them): their counts are written back as absolute
        # values, and on PostgreSQL another worker's group may have just changed them. FOR NO KEY
        # UPDATE, as an UPDATE locks: a plain FOR UPDATE also waits for the key-share lock that
        # pointing a suggestion at a topic takes, and deadlocked with a staff merge
        have = {t.id: t for t in s.execute(select(Topic).where(Topic.id.in_(sorted(members)))
                                           .order_by(Topic.id).with_for_update(key_share=True)).scalars()}
        voices = earlier_voices(s, [(p.tid, done[p.k][0]) for p in placed])
        for tid in sorted(members):
            topic = have.get(tid)
            if topic is None:   # a new topic, or one this worker opened in a failed transaction
                first = members[tid][0]
                topic = self.figures.new_topic(s, tid, done[first.k][0], first.an.assessment)
            grew[tid] = (topic, topic.size or 0)
            for p in members[tid]:
                row = done[p.k][0]
                row.topic_id = topic.id
                topic.size = (topic.size or 0) + 1
                topic.last_seen = max(topic.last_seen or p.submitted, p.submitted)
                topic.first_seen = min(topic.first_seen or p.submitted, p.submitted)
                topic.submitters = (topic.submitters or 0) + voices.new(topic.id, row)
            topic.updated_at = utcnow()
        self.figures.refresh_many_quietly(s, list(grew.values()), index)

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
