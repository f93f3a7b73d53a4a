"""One re-clustering of the store: read the undecided messages, cluster them, write the topics back.

The computation (:func:`cluster_stored`) needs no store, so that a large store's runs in a child
process (:func:`recluster_from_store_apart`, which reads the messages itself); the write is a few bulk statements under the store's write
hold, so intake waits well under a second. When to run, and who runs, is
:class:`triage.office.clustering.ClusteringCoordinator`'s.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from triage.candidates import FROM_STORE
from triage.office.common import Actor, OfficeService, _naive
from triage.office.index import TopicIndexKeeper, _encoder_from, stored_messages_apart
from triage.pipeline import Triage
from triage.store.database import AuditEvent, Suggestion, Topic, utcnow

log = logging.getLogger(__name__)

#: a re-clustering's stages as its job reports them: reading, the topic run's stages, writing
RECLUSTER_STEPS = len(FROM_STORE) + 2


class Reclustering(OfficeService):
    """One run: the undecided topics' messages re-clustered; ids kept by membership overlap."""

    def __init__(self, state, index: TopicIndexKeeper) -> None:
        super().__init__(state)
        self.index = index

    def run(self, actor: Actor | None, progress: Callable[[dict], None] | None = None) -> dict[str, Any]:
        """One run, without the lease: call it through :meth:`ClusteringCoordinator.recluster`, which takes
        the store's lease and keeps this worker's count. ``progress`` gets ``{"stage", "step", "steps", "messages", "seconds"}`` as each stage ends:
        读取留言, the stages of :data:`triage.candidates.FROM_STORE`, 写入议题 (minutes at 100k stored messages,
        and staff watching the job should see where it is)."""
        t0 = time.perf_counter()

        def report(stage: str, step: int, messages: int) -> None:
            if progress is not None:
                progress({"stage": stage, "step": step, "steps": RECLUSTER_STEPS, "messages": messages,
                          "seconds": round(time.perf_counter() - t0, 1)})

        with self.store.session() as s:
            count = s.scalar(select(func.count()).select_from(Suggestion).where(undecided())) or 0
        if not count:
            report("读取留言", 1, 0)
            report("无需写入（没有未决定的留言）", RECLUSTER_STEPS, 0)
            return {"messages": 0, "topics": 0}
        res = None
        step = lambda p: report(p["stage"], p["step"] + 1, p.get("messages", count))  # noqa: E731
        apart = self.index.apart(count) if self.store.reachable_from_other_processes else None
        if apart is not None:
            from triage.apart import ApartError, run_apart

            try:
                # the child reads the messages itself: reading, unpacking and sending 20,000 of them
                # with their vectors took this worker's interpreter about 2 s while it served intake
                res = run_apart(recluster_from_store_apart, self.store.url, self.config, self.encoder.name, *apart,
                                progress=step)
            except (ApartError, OSError) as exc:   # a child that cannot start or fails: cluster here instead
                if isinstance(exc, ApartError) and exc.killed:
                    raise   # the out-of-memory killer, most likely: here it would take the worker too
                log.warning("re-clustering in a child process failed, so it runs in this worker: %s", exc)
        if res is None:
            with self.store.session() as s:
                msgs = self.index.messages(s, undecided())
            report("读取留言", 1, len(msgs))
            read = len(msgs)
            res = cluster_snapshot(self.triage, self.encoder, msgs,
                                   progress=lambda p: report(p["stage"], p["step"] + 1, read))
        before, previous, missing = res["before"], res["previous"], res["missing"]
        if not before:
            report("无需写入（没有未决定的留言）", RECLUSTER_STEPS, 0)
            return {"messages": 0, "topics": 0}
        if missing:
            log.info("re-clustering embedded %d messages stored without embeddings", missing)
        topics = res["topics"]
        # each topic's row, worked out before intake is held
        values = {r["topic_id"]: self._topic_values(r, res["scorecards"][r["topic_id"]])
                  for r in topics.to_dict("records")}
        w0 = time.perf_counter()
        with self.lock, self.store.session() as s:
            # Intake goes on while the clustering runs (seconds to minutes). From here to the commit
            # no other worker may store a suggestion, so that every message of a topic about to go
            # is seen and moved; the writes below are bulk statements, so this lasts well under a second.
            self.store.hold_writes(s)
            # every stored topic this write may change or drop (all are among `previous`), locked in id
            # order as intake's groups and the re-ageing take them, and checked for staff decisions under
            # that lock: updated in the clustering's order, a row locked ahead of a lower one deadlocked
            # with a re-ageing on PostgreSQL, and a decision another worker committed after an unlocked
            # check was overwritten (SQLite: its write lock, taken above, already covers both)
            ids, decided = sorted(previous), []
            for k in range(0, len(ids), 5000):
                rows = s.execute(select(Topic.id, Topic.pinned, Topic.status).where(Topic.id.in_(ids[k:k + 5000]))
                                 .order_by(Topic.id).with_for_update())
                decided += [tid for tid, pinned, status in rows if pinned or status != "candidate"]
            if decided:   # staff acted on one of these topics meanwhile: their decision wins; run again soon
                log.info("re-clustering discarded: %d of its topics were decided meanwhile", len(decided))
                return {"messages": len(before), "topics": 0, "skipped": "decided meanwhile"}
            # a topic id the store does not know yet gets a store-wide number (ids are shared by workers)
            rename = {tid: (tid if tid in previous else f"T{self.store.next_value(s, 'topic'):06d}")
                      for tid in topics["topic_id"]}
            kept = set(rename.values())
            dropped = [tid for tid in previous if tid not in kept]
            topic_of: dict[int, str | None] = {int(m): rename[t] for m, t in res["topic_of"].items()}
            # messages stored since the snapshot: in a topic that stays they stay (and count); in a
            # topic that goes they follow most of its members
            snapshot = set(before)
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
            moves = [{"id": sid, "topic_id": tid} for sid, tid in topic_of.items() if before.get(sid, "?") != tid]
            moves += [{"id": sid, "topic_id": None} for sid, tid in before.items()
                      if sid not in topic_of and tid in gone]
            if moves:
                s.execute(update(Suggestion), moves)   # bulk UPDATE by primary key
            if dropped:
                s.execute(delete(Topic).where(Topic.id.in_(dropped), Topic.pinned.is_(False)))
                self.index.record_successors(s, {tid: self._most_joined(previous[tid], topic_of) for tid in dropped})
            s.add(AuditEvent(actor=actor.name if actor else "system", role=actor.role if actor else "",
                             action="recluster", target_type="topics", target_id="*",
                             detail={"messages": len(before), "topics": len(topics), "seconds": res["seconds"],
                                     "moved": len(moves), "arrived_meanwhile": sum(late_to.values()),
                                     "without_embeddings": missing, "texts_embedded": res["misses"], "apart": res.get("apart", False)}))
            self.store.set_setting(s, "topics_generation", secrets.token_hex(8))
        write_s = time.perf_counter() - w0   # intake waits this long (the store's writes are held)
        report("写入议题", RECLUSTER_STEPS, len(before))
        self.index.follow_new_generation()   # rebuilt in the background
        log.info("re-clustering: %d messages, %d topics; clustering %.1f s, writing %.1f s",
                 len(before), len(topics), sum(res["seconds"].values()), write_s)
        return {"messages": len(before), "topics": int(len(topics)), "seconds": res["seconds"],
                "write_seconds": round(write_s, 2)}

    @staticmethod
    def _most_joined(members: list[str], topic_of: dict[int, str | None]) -> str | None:
        votes = Counter(topic_of.get(int(m)) for m in members)
        votes.pop(None, None)
        return votes.most_common(1)[0][0] if votes else None

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


def cluster_stored(triage: Triage, encoder, frame: pd.DataFrame, previous: dict[str, list[str]],
                   stored: pd.DataFrame, known: dict[str, np.ndarray],
                   progress: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """One re-clustering's computation (no store): topics, scorecards and each message's topic.

    The service runs it in a child process on a large store (:func:`recluster_from_store_apart`), so
    the result is plain data rather than the builder itself.
    """
    from triage.candidates import build_candidates
    from triage.embed.encoders import prefilled

    enc = prefilled(encoder, known)
    res = build_candidates(triage, frame, ["title", "raw_text"], encoder=enc, previous=previous, stored=stored,
                           progress=progress)
    return {"topics": res.topics, "scorecards": res.scorecards, "topic_of": dict(res.builder.topic_of_),
            "seconds": res.seconds, "misses": enc.misses}


def undecided():
    """The messages a re-clustering reads: those of undecided, unpinned topics, and those without one."""
    free = select(Topic.id).where(Topic.status == "candidate", Topic.pinned.is_(False))
    return Suggestion.topic_id.in_(free) | Suggestion.topic_id.is_(None)


def _empty_snapshot() -> dict[str, Any]:
    """What :func:`cluster_snapshot` gives for no messages: nothing before, nothing to write."""
    return {"before": {}, "previous": {}, "missing": 0}


def cluster_snapshot(triage: Triage, encoder, msgs: pd.DataFrame,
                     progress: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """:func:`cluster_stored` over messages as :func:`~triage.office.index.stored_messages` reads
    them, with what the write needs of the snapshot: each message's topic before (``before``, by
    id), each topic's members before (``previous``), and how many had no stored embedding."""
    from triage.embed.encoders import GIST_CHARS

    if msgs.empty:
        return _empty_snapshot()
    previous = {tid: g["id"].tolist() for tid, g in msgs.groupby("topic_id")}
    frame = msgs[["id", "title", "raw_text", "submitted_at", "channel", "submitter", "support"]]
    stored = msgs[["text", "tokens", "domain", "scope"]]
    known = TopicIndexKeeper.known_embeddings(msgs)
    # a message's topic embedding is its opening: a short text's own embedding, a long text's head
    long_ = msgs["text"].str.len().to_numpy() > GIST_CHARS
    missing = int(np.where(long_, msgs["head_embedding"].isna(), msgs["embedding"].isna()).sum())
    res = cluster_stored(triage, encoder, frame, previous, stored, known, progress=progress)
    topic_before = [t if isinstance(t, str) else None for t in msgs["topic_id"]]   # None, not pandas' NaN
    res.update(before=dict(zip(msgs["id"].astype(int).tolist(), topic_before)), previous=previous, missing=missing)
    return res


def recluster_from_store_apart(store_url: str, config: Any, encoder_name: str, model_dir: str, taxonomy: Any,
                               encoder_spec: str, cache: str | None,
                               progress: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """:func:`cluster_snapshot` in a fresh process that reads the store itself (its own connection,
    read only), with the model and encoder loaded as the worker loaded them."""
    msgs = stored_messages_apart(store_url, undecided(), encoder_name, config)
    if progress is not None:
        progress({"stage": "读取留言", "step": 0, "messages": len(msgs)})
    if msgs.empty:   # all decided since the count: nothing to load the model for
        return {**_empty_snapshot(), "apart": True}
    read = len(msgs)
    tell = None if progress is None else (lambda p: progress({**p, "messages": read}))
    out = cluster_snapshot(Triage.load(model_dir, taxonomy), _encoder_from(encoder_spec, cache), msgs, progress=tell)
    out["apart"] = True
    return out
