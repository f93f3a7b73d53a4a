"""This worker's topic index (intake assigns into it), kept in step with the store.

The index is rebuilt from the stored membership when another worker's re-clustering or a staff
merge/split makes a new generation: in the background, so that submissions never wait for it; on a
large store in a child process. A topic a re-clustering dropped is followed to where its members went.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from triage.office.common import OfficeService, sane_time
from triage.store.database import Setting, Suggestion, Topic
from triage.text.places import PlaceExtractor
from triage.topics.builder import TopicIndex

log = logging.getLogger(__name__)


MESSAGE_COLUMNS = ("id", "text", "tokens", "submitted_at", "channel", "submitter", "support", "scope", "domain",
                   "places", "place", "topic_id", "title", "raw_text", "embedding", "head_embedding",
                   "embedding_model")


def stored_messages(s: Session, where, encoder_name: str, config: Any) -> pd.DataFrame:
    """The stored messages that ``where`` selects, as the clustering reads them: submission times
    clamped as intake would (``config``: the office's :class:`OfficeConfig`), vectors only where
    ``encoder_name`` made them. Plain rows, not ORM objects: an index rebuild reads every live
    message (20,000 and more), and building an object for each cost most of the read."""
    cols = [getattr(Suggestion, c) for c in MESSAGE_COLUMNS]
    rows = s.execute(select(*cols).where(where).order_by(Suggestion.id)).all()
    own = [r.embedding_model == encoder_name for r in rows]
    return pd.DataFrame({
        "id": [str(r.id) for r in rows], "text": [r.text for r in rows], "tokens": [r.tokens for r in rows],
        "submitted_at": pd.to_datetime([sane_time(r.submitted_at, config) for r in rows]),
        "channel": [r.channel for r in rows],
        "submitter": [r.submitter for r in rows], "support": [r.support for r in rows],
        "scope": [r.scope for r in rows], "domain": [r.domain for r in rows],
        "places": [list(r.places or []) for r in rows], "place": [r.place for r in rows],
        "topic_id": [r.topic_id for r in rows], "title": [r.title for r in rows],
        "raw_text": [r.raw_text for r in rows],
        "embedding": [r.embedding if k else None for r, k in zip(rows, own)],
        "head_embedding": [r.head_embedding if k else None for r, k in zip(rows, own)]},
        index=pd.RangeIndex(len(rows)))


def in_live_topic():
    """The messages of live topics (candidate or accepted): the ones a topic index holds."""
    return Suggestion.topic_id.in_(select(Topic.id).where(Topic.status.in_(("candidate", "accepted"))))


def stored_messages_apart(store_url: str, where, encoder_name: str, config: Any) -> pd.DataFrame:
    """:func:`stored_messages` in a child process, over its own connection to the worker's store."""
    from triage.store.database import Store

    store = Store(store_url, migrate=False)
    try:
        with store.session() as s:
            return stored_messages(s, where, encoder_name, config)
    finally:
        store.engine.dispose()


class TopicIndexKeeper(OfficeService):
    """The incremental index of one worker, its generation, and the successors of dropped topics."""

    REDIRECTS_KEPT = 50_000

    def __init__(self, state) -> None:
        super().__init__(state)
        self._rebuilding = threading.Lock()
        self._redirect: dict[str, str | None] = {}   # dropped topic -> where its members went (per generation)
        self._redirect_gen: Any = object()
        self._index: TopicIndex | None = None
        self._index_gen: Any = None
        self._gen_checked = 0.0

    @property
    def latest(self) -> TopicIndex | None:
        """The index as it is now, without checking the generation (intake vectorises against it)."""
        return self._index

    def follow_new_generation(self) -> None:
        """Check the store's generation at the next :meth:`current` (a run of this worker made one)."""
        self._gen_checked = 0.0

    def bump_generation(self) -> None:
        with self.store.session() as s:
            self.store.set_setting(s, "topics_generation", secrets.token_hex(8))
        self._gen_checked = 0.0

    def current(self) -> TopicIndex | None:
        """The index to assign into (called under ``self.lock``).

        The first one is built here; after that, another worker's re-clustering (a new generation)
        is picked up by a rebuild in the background, so submissions never wait for it.
        """
        now = time.monotonic()
        if self._index is not None and now - self._gen_checked < 1.0:
            return self._index
        self._gen_checked = now
        gen = self.store.get_setting("topics_generation")
        if self._index is None:
            self._index, _ = self.build()
            self._index_gen = gen
        elif gen != self._index_gen and self._rebuilding.acquire(blocking=False):
            threading.Thread(target=self._rebuild, args=(gen,), name="triage-index", daemon=True).start()
        return self._index

    def _rebuild(self, gen: Any) -> None:
        try:
            index, upto = self.build()
            # what was stored while the index was being built (by any worker) joins it before it
            # serves: most of it here, outside the intake lock (which it would hold for as long as
            # the absorbing takes), then, under the lock, what was stored since
            seen = self._absorb_late(index, upto, set()) if index is not None else set()
            with self.lock:
                if index is not None:
                    self._absorb_late(index, upto, seen)
                self._index, self._index_gen = index, gen
        except Exception:  # noqa: BLE001 - the old index keeps serving; the next check retries
            log.exception("rebuilding the topic index failed; the previous one stays in use")
        finally:
            self._rebuilding.release()

    def _absorb_late(self, index: TopicIndex, upto: int, seen: set[int]) -> set[int]:
        """Absorb into ``index`` the live messages stored after id ``upto`` that are not in ``seen``
        (ids already absorbed); the ids absorbed so far. Ids, not a new bound: on PostgreSQL a
        group with lower ids may commit after one with higher ids."""
        with self.store.session() as s:
            after = (Suggestion.id > upto) & in_live_topic()
            if seen:   # the second pass: few new ones among those already absorbed
                new = sorted(set(s.execute(select(Suggestion.id).where(after)).scalars()) - seen)
                late = self.messages(s, after & Suggestion.id.in_(new))
            else:
                late = self.messages(s, after)
        if len(late):
            emb = self.topic_embeddings(late)
            index.absorb(list(zip(late["topic_id"], late["tokens"], emb, late["place"],
                                  late["submitted_at"], late["places"], late["scope"].eq("individual"))))
        return seen | {int(i) for i in late["id"]}

    def messages(self, s: Session, where) -> pd.DataFrame:
        """The stored messages that ``where`` selects, as the clustering reads them (:func:`stored_messages`)."""
        return stored_messages(s, where, self.encoder.name, self.config)

    @staticmethod
    def known_embeddings(msgs: pd.DataFrame) -> dict[str, np.ndarray]:
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

    def stored_encoder(self, msgs: pd.DataFrame):
        """The office's encoder, primed with the embeddings stored with these messages."""
        from triage.embed.encoders import prefilled

        return prefilled(self.encoder, self.known_embeddings(msgs))

    def goes_apart(self, messages: int) -> bool:
        limit = self.config.recluster_apart_from
        return limit is not None and messages >= limit

    def encoder_apart(self) -> tuple[str, str | None] | None:
        """How a child process builds this worker's topic encoder (its spec and cache file), or None
        when it cannot (an encoder that exists only in this process, such as a test's stand-in)."""
        from triage.embed.encoders import CachedEncoder

        inner = self.encoder.inner if isinstance(self.encoder, CachedEncoder) else self.encoder
        cache = self.encoder.cache.path if isinstance(self.encoder, CachedEncoder) else None
        spec = getattr(inner, "spec", None)
        return None if spec is None else (spec, str(cache) if cache else None)

    def apart(self, messages: int) -> tuple[str, Any, str, str | None] | None:
        """What a child process needs to re-cluster as this worker would (model directory, taxonomy,
        encoder spec, its cache file), or None to cluster here: a small store (starting a process and
        loading the model cost more than they spare), or a model or encoder that exists only in this
        process (trained in memory, a test's stand-in)."""
        encoder = self.encoder_apart() if self.goes_apart(messages) else None
        directory = getattr(self.triage.bundle, "directory", None)
        if encoder is None or directory is None:
            return None
        return directory, self.triage.taxonomy, *encoder

    def topic_embeddings(self, msgs: pd.DataFrame) -> np.ndarray:
        from triage.embed.encoders import topic_embeddings

        enc = self.stored_encoder(msgs)
        emb = topic_embeddings(enc, msgs["text"].tolist())
        if enc.misses:
            log.info("embedded %d stored messages that had no stored embedding", enc.misses)
        return emb

    def build(self) -> tuple[TopicIndex | None, int]:
        """The incremental index from the stored membership (no re-clustering), and the last
        suggestion id it covers. On a large store it is built in a child process (as a large
        re-clustering is), which reads the messages itself: the submissions this worker takes
        meanwhile wait neither on the build nor on reading, unpacking and sending 20,000 and more
        stored messages with their vectors (about 1.7 s of this worker's interpreter at 20,000)."""
        with self.store.session() as s:
            count = s.scalar(select(func.count()).select_from(Suggestion).where(in_live_topic())) or 0
        encoder = self.encoder_apart() if self.goes_apart(count) and self.store.reachable_from_other_processes else None
        if encoder is not None:
            from triage.apart import ApartError, run_apart

            try:
                return run_apart(index_from_store_apart, self.store.url, self.config, self.encoder.name, *encoder)
            except (ApartError, OSError) as exc:
                log.warning("building the topic index in a child process failed, so it is built here: %s", exc)
        with self.store.session() as s:
            msgs = self.messages(s, in_live_topic())
        return index_from_stored_rows(msgs, self.encoder, self.places)

    def successor(self, tid: str) -> str | None:
        """Where the members of a topic that a re-clustering dropped went (None: nowhere, or not known).

        Each re-clustering records, for each topic it drops, the topic most of its members joined
        (:meth:`record_successors`, the ``topics_redirect`` setting, read here once per generation).
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

    def record_successors(self, s: Session, successors: dict[str, str | None]) -> None:
        """Remember where each dropped topic's members went, for workers whose index still holds it
        (:meth:`successor`). Older entries are carried through this run's moves, so a worker two
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


def index_from_stored_rows(msgs: pd.DataFrame, encoder, places: PlaceExtractor) -> tuple[TopicIndex | None, int]:
    """:func:`index_from_stored` over messages as :func:`stored_messages` reads them, and the last
    suggestion id among them."""
    upto = int(msgs["id"].astype(int).max()) if len(msgs) else 0
    if len(msgs) < 2:
        return None, upto
    known = TopicIndexKeeper.known_embeddings(msgs)
    msgs = msgs.drop(columns=["embedding", "head_embedding", "raw_text"])
    return index_from_stored(msgs, encoder, places, known), upto


def index_from_store_apart(store_url: str, config: Any, encoder_name: str, encoder_spec: str, cache: str | None,
                           progress: Callable[[dict], None] | None = None) -> tuple[TopicIndex | None, int]:
    """The worker's index built in a fresh process from the store itself (its own connection, read
    only): the live messages as the worker would read them, the worker's encoder."""
    msgs = stored_messages_apart(store_url, in_live_topic(), encoder_name, config)
    return index_from_stored_rows(msgs, _encoder_from(encoder_spec, cache), PlaceExtractor())


def _encoder_from(spec: str, cache: str | None):
    """The worker's topic encoder rebuilt in a child process: the same model, the same cache file."""
    from triage.embed.encoders import CachedEncoder, EmbeddingCache, get_encoder

    return CachedEncoder(get_encoder(spec), EmbeddingCache(cache))
