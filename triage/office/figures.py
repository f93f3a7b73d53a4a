"""A topic's figures at intake: heat, scorecard, counts, keywords, label, refreshed from its members.

Staff see topics between re-clusterings, so the topic a message joins is brought up to date at once
(the same heat and judge as a re-clustering, over its members only), and every topic's recency moves
with the store's clock. A failure here never costs a citizen their submission.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections import Counter

import numpy as np
import pandas as pd
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from triage.judge.route import route_topic
from triage.office.common import OfficeService, masked_title
from triage.store.database import Suggestion, Topic, utcnow
from triage.topics.builder import TopicIndex, make_label

log = logging.getLogger(__name__)


class EarlierVoices:
    """Whether a submitter of a group writes to a topic for the first time (anonymous ones always
    count), from one query for the whole group: a query per message cost about 5 % of intake."""

    def __init__(self, seen: set[tuple[str, str]]) -> None:
        self.seen = seen   # (topic, submitter) pairs that already have a message

    def new(self, tid: str, row: Suggestion) -> int:
        """1 if ``row``'s submitter has not written to ``tid`` before: in the store, or earlier in
        the group (asked in the order the group's rows join their topics)."""
        if not row.submitter:
            return 1
        if (tid, row.submitter) in self.seen:
            return 0
        self.seen.add((tid, row.submitter))
        return 1


def earlier_voices(s: Session, rows: list[tuple[str | None, Suggestion]]) -> EarlierVoices:
    """The :class:`EarlierVoices` of a group about to join topics: (topic, row) for each of its rows."""
    pairs = {(tid, r.submitter) for tid, r in rows if tid is not None and r.submitter}
    if not pairs:
        return EarlierVoices(set())
    found = s.execute(select(Suggestion.topic_id, Suggestion.submitter).distinct().where(
        Suggestion.topic_id.in_(sorted({t for t, _ in pairs})), Suggestion.submitter.in_(sorted({u for _, u in pairs})),
        Suggestion.id.not_in([r.id for _, r in rows]))).all()
    return EarlierVoices({(t, u) for t, u in found} & pairs)


def submitters(s: Session, tid: str, extra: Suggestion | None = None) -> int:
    rows = s.execute(select(Suggestion.id, Suggestion.submitter).where(Suggestion.topic_id == tid)).all()
    people = {sub or f"_anon{sid}" for sid, sub in rows}
    if extra is not None and extra.id not in {sid for sid, _ in rows}:
        people.add(extra.submitter or f"_anon{extra.id}")
    return len(people)


class TopicFigures(OfficeService):
    """Heat, scorecard and description of the topic a message joins; every topic's recency."""

    def __init__(self, state) -> None:
        super().__init__(state)
        self._principle_judge = None           # built on first use (it embeds the annual plan)
        self._heat_clock: dt.datetime | None = None   # the store clock at this worker's last re-ageing

    def judge(self):
        """The 五大原则 judge, built once (it embeds the annual plan's items)."""
        if self._principle_judge is None:
            from triage.judge.principles import PrincipleJudge

            self._principle_judge = PrincipleJudge(encoder=self.encoder, taxonomy=self.triage.taxonomy)
        return self._principle_judge

    #: above this many members a topic's figures are refreshed at every 5 % of growth, not every message
    REFRESH_EVERY_ABOVE = 300

    def store_clock(self, s: Session) -> pd.Timestamp:
        """The store's clock: its newest message's time (the same clock as a re-clustering)."""
        return pd.Timestamp(self.sane_time(s.execute(select(func.max(Suggestion.submitted_at))).scalar() or utcnow()))

    def due(self, t: Topic, grew_from: int | None = None) -> bool:
        """Whether a topic that grew from ``grew_from`` members (default: one less) is refreshed now: a
        large topic when its growth crosses a multiple of its 5 % step, so a batch that adds several
        members at once does not step over the multiple."""
        size = t.size or 0
        before = size - 1 if grew_from is None else grew_from
        step = max(1, size // 20)
        return not (size > self.REFRESH_EVERY_ABOVE and size // step == before // step)

    def refresh_many_quietly(self, s: Session, grown: list[tuple[Topic, int]], index: TopicIndex | None) -> None:
        """:meth:`refresh` of each (topic, size before) of a group that is :meth:`due`, at one clock
        (:meth:`store_clock`, read once), in one savepoint: a savepoint per topic cost about a tenth
        of a group's write. Where any refresh fails, they are all rolled back and done again one
        savepoint each (:meth:`refresh_quietly`), so a failure costs only its own topic."""
        due = [t for t, before in grown if self.due(t, before)]
        if not due:
            return
        # the group's own writes first, outside the guarded read: a database error there is the
        # group's (its caller retries or refuses it), not a clock that could not be read
        s.flush()
        now = None
        try:   # in a savepoint, as each refresh read it: a failed read (a statement timeout) costs no submission
            with s.begin_nested():
                now = self.store_clock(s)
        except Exception:  # noqa: BLE001 - each refresh reads the clock itself then
            log.warning("the store's clock was not read for a group's refreshes; each refresh reads it", exc_info=True)
        if len(due) > 1:
            try:
                with s.begin_nested():
                    for t in due:
                        self.refresh(s, t, index, now)
                return
            except Exception:  # noqa: BLE001 - one of them: found, and logged, one at a time below
                pass
        for t in due:
            self.refresh_quietly(s, t, index, now)

    def refresh_quietly(self, s: Session, t: Topic, index: TopicIndex | None, now: pd.Timestamp | None = None) -> None:
        """:meth:`refresh`, but a failure there never costs a citizen their submission: the
        message is stored and the next re-clustering recomputes the topic."""
        try:
            with s.begin_nested():
                self.refresh(s, t, index, now)
        except Exception:  # noqa: BLE001 - logged; intake goes on
            log.exception("topic %s not refreshed at intake; the next re-clustering will", t.id)

    def refresh(self, s: Session, t: Topic, index: TopicIndex | None = None, now: pd.Timestamp | None = None) -> None:
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
        # count every word, then walk them from the most frequent, skipping the short ones, the masks
        # and the places' parts, until six: a dozen words are tested, not every occurrence against
        # every place (a third of a busy topic's refresh). The sort is stable, so ties keep the text order.
        seen = Counter(w for r in rows for w in dict.fromkeys((r.tokens or "").split()))
        data.keywords = list(itertools.islice(
            (w for w, _ in seen.most_common()
             if len(w) > 1 and not w.startswith("〔") and not any(w in p for p in place_words)), 6))
        times = [self.sane_time(r.submitted_at) for r in rows if r.submitted_at is not None]
        data.first_seen, data.last_seen = (min(times), max(times)) if times else (None, None)
        centroid = None
        if index is not None and t.id in index.ids:
            centroid = index.En[index.ids.index(t.id)]
        card = self.judge().judge(data, texts, [r.tokens or "" for r in rows], centroid)
        # the same clock as a re-clustering: the newest message in the store, not the wall clock
        now = now if now is not None else self.store_clock(s)
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

    def new_topic(self, s: Session, tid: str, row: Suggestion, a) -> Topic:
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

    def reage_quietly(self) -> None:
        """Every topic's recency at the store's clock, once the clock has moved a tenth of a half-life.

        Intake refreshes only the topic a message joins; every other topic kept the recency of its
        last message's day, so long-silent topics stayed on top of the staff list until a
        re-clustering (replaying a real board through the API: 1 of the 10 issues the most citizens
        raised in the top 20, 2 after one more re-clustering). A failure costs no submission.
        """
        from triage.judge.rank import default_heat_config, reage

        hc = default_heat_config()
        try:
            with self.lock, self.store.session() as s:
                now = self.sane_time(s.execute(select(func.max(Suggestion.submitted_at))).scalar())
                if now is None or (self._heat_clock is not None
                                   and now - self._heat_clock < dt.timedelta(days=hc.half_life_days / 10)):
                    return
                rows = s.execute(select(Topic.id, Topic.heat_terms, Topic.last_seen, Topic.updated_at)
                                 .where(Topic.status != "merged", Topic.last_seen.is_not(None))).all()
                changes = []
                for r in rows:
                    if not r.heat_terms:
                        continue
                    h = reage(r.heat_terms, (now - self.sane_time(r.last_seen)).total_seconds() / 86400.0, hc)
                    changes.append({"b_id": r.id, "b_at": r.updated_at, "b_heat": h.score, "b_terms": h.terms})
                if changes:
                    changes.sort(key=lambda c: c["b_id"])   # row locks in id order, as intake's groups take them
                    # a topic another worker refreshed meanwhile keeps its newer figures
                    tbl = Topic.__table__   # a Core executemany: the ORM would insist on bulk-by-primary-key
                    s.connection().execute(
                        update(tbl).where(tbl.c.id == bindparam("b_id"), tbl.c.updated_at == bindparam("b_at"))
                        .values(heat=bindparam("b_heat"), heat_terms=bindparam("b_terms")), changes)
            self._heat_clock = now
        except Exception:  # noqa: BLE001 - logged; the next submission or re-clustering tries again
            log.exception("re-ageing topic heat failed")

