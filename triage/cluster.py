"""Similarity between messages and the clustering that turns them into candidate topics.

Two messages belong to one topic when they describe the same problem (semantic + lexical similarity)
at a compatible place (place term) in the same period (time term). Candidates come from a k-nearest-
neighbour search on the embeddings (chunked matrix products, optionally blocked by domain at scale);
edges above the threshold form connected components, and average linkage inside each component undoes
the chaining that plain components would suffer from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from sklearn.cluster import AgglomerativeClustering

from triage.places import PlaceExtractor

log = logging.getLogger(__name__)


@dataclass
class SimilarityConfig:
    """Weights of the pairwise similarity; the defaults are documented in corpora/README.md."""

    w_semantic: float = 0.5
    w_lexical: float = 0.5
    place_bonus: float = 0.08        # both name the same (or nested) place
    place_penalty: float = 0.60      # both name places that cannot be the same
    time_window_days: float = 60.0   # beyond this gap, a penalty grows with the gap
    time_penalty: float = 0.80     # at two windows apart: identical texts fall below the threshold
    time_bonus: float = 0.10         # messages days apart are likelier the same topic than months apart
    time_bonus_days: float = 30.0
    threshold: float = 0.35          # average-linkage merge threshold on the combined similarity
    knn: int = 20
    block_above: int = 20000         # block candidate search by domain above this many messages


@dataclass
class Points:
    """What the clustering needs about each message (rows aligned)."""

    emb: np.ndarray                  # (n, d) float32, L2-normalised
    lex: sp.csr_matrix               # (n, v) L2-normalised tf-idf
    place: list[str | None]          # most specific place
    day: np.ndarray                  # days since epoch (float)
    block: list[str] | None = None   # e.g. predicted domain


class Similarity:
    def __init__(self, config: SimilarityConfig, places: PlaceExtractor) -> None:
        self.cfg = config
        self.places = places
        self._place_memo: dict[tuple[str, str], float] = {}  # few distinct place pairs, millions of lookups

    def place_term(self, a: str | None, b: str | None) -> float:
        if not a or not b:
            return 0.0
        key = (a, b) if a <= b else (b, a)
        v = self._place_memo.get(key)
        if v is None:
            v = self._place_memo[key] = self._place_term(a, b)
        return v

    def _place_term(self, a: str, b: str) -> float:
        c = self.places.compatible(a, b)
        if c is True:
            return self.cfg.place_bonus
        if c is False:
            return -self.cfg.place_penalty
        return 0.0

    def time_term(self, gap_days: np.ndarray) -> np.ndarray:
        gap = np.abs(gap_days)
        over = np.clip(gap - self.cfg.time_window_days, 0, None)
        near = self.cfg.time_bonus * np.clip(1.0 - gap / self.cfg.time_bonus_days, 0, None)
        return near - self.cfg.time_penalty * np.minimum(1.0, over / self.cfg.time_window_days)

    def pairs(self, p: Points, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Combined similarity for index pairs (vectorised)."""
        sem = np.einsum("ij,ij->i", p.emb[i], p.emb[j])
        lex = np.asarray(p.lex[i].multiply(p.lex[j]).sum(axis=1)).ravel()
        s = self.cfg.w_semantic * sem + self.cfg.w_lexical * lex
        s += np.fromiter((self.place_term(p.place[a], p.place[b]) for a, b in zip(i, j)), float, len(i))
        s += self.time_term(p.day[i] - p.day[j])
        return s

    def matrix(self, p: Points, idx: np.ndarray) -> np.ndarray:
        """Dense combined similarity among a (small) set of messages."""
        e = p.emb[idx]
        lx = p.lex[idx]
        s = self.cfg.w_semantic * (e @ e.T) + self.cfg.w_lexical * (lx @ lx.T).toarray()
        pl = [p.place[k] for k in idx]
        uniq = sorted({x for x in pl if x})
        if uniq:
            code = {x: n for n, x in enumerate(uniq)}
            table = np.array([[self.place_term(a, b) for b in uniq] for a in uniq])
            ci = np.array([code.get(x, -1) for x in pl])
            known = ci >= 0
            s[np.ix_(known, known)] += table[np.ix_(ci[known], ci[known])]
        d = p.day[idx]
        s += self.time_term(d[:, None] - d[None, :])
        return s


def knn_candidates(emb: np.ndarray, k: int, blocks: Sequence[str] | None = None,
                   chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of each row's k nearest neighbours by embedding cosine."""
    n = len(emb)
    groups: list[np.ndarray]
    if blocks is None:
        groups = [np.arange(n)]
    else:
        b = np.asarray(blocks, dtype=object)
        groups = [np.flatnonzero(b == v) for v in dict.fromkeys(b.tolist())]
    rows, cols = [], []
    for g in groups:
        if len(g) < 2:
            continue
        kk = min(k, len(g) - 1)
        eg = emb[g]
        for s in range(0, len(g), chunk):
            sims = eg[s:s + chunk] @ eg.T
            np.fill_diagonal(sims[:, s:s + chunk], -np.inf)
            nb = np.argpartition(-sims, kk - 1, axis=1)[:, :kk] if kk < len(g) else np.argsort(-sims, axis=1)[:, :kk]
            rows.append(np.repeat(g[s:s + chunk], kk))
            cols.append(g[nb.ravel()])
    if not rows:
        return np.zeros(0, int), np.zeros(0, int)
    i, j = np.concatenate(rows), np.concatenate(cols)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    pairs = np.unique(np.stack([lo, hi], 1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def cluster(p: Points, sim: Similarity, max_component: int = 4000) -> np.ndarray:
    """Cluster labels (0..k-1) for every message."""
    n = len(p.emb)
    if n == 0:
        return np.zeros(0, dtype=int)
    cfg = sim.cfg
    blocks = p.block if (p.block is not None and n > cfg.block_above) else None
    i, j = knn_candidates(p.emb, cfg.knn, blocks)
    # lexical neighbours too: two messages sharing a rare place + problem word may sit far apart in
    # the embedding space of a multilingual model
    li, lj = _lexical_candidates(p.lex, cfg.knn // 2, blocks)
    if len(li):
        allp = np.unique(np.stack([np.concatenate([i, li]), np.concatenate([j, lj])], 1), axis=0)
        i, j = allp[:, 0], allp[:, 1]
    if len(i):
        s = sim.pairs(p, i, j)
        keep = s >= cfg.threshold
        i, j = i[keep], j[keep]
    graph = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    ncomp, comp = connected_components(graph, directed=False)
    labels = np.full(n, -1, dtype=int)
    nxt = 0
    order = np.argsort(comp, kind="stable")
    bounds = np.flatnonzero(np.diff(comp[order])) + 1
    for members in np.split(order, bounds):
        if len(members) == 1:
            labels[members] = nxt
            nxt += 1
            continue
        if len(members) > max_component:  # pathological chaining: split by embedding k-means first
            parts = _split(p.emb[members], max_component)
        else:
            parts = [np.arange(len(members))]
        for part in parts:
            idx = members[part]
            if len(idx) == 1:
                labels[idx] = nxt
                nxt += 1
                continue
            dist = np.clip(1.0 - sim.matrix(p, idx), 0.0, None)
            np.fill_diagonal(dist, 0.0)
            sub = AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="average",
                                          distance_threshold=1.0 - cfg.threshold).fit_predict(dist)
            labels[idx] = sub + nxt
            nxt += int(sub.max()) + 1
    return labels


def _lexical_candidates(lex: sp.csr_matrix, k: int, blocks, chunk: int = 512):
    n = lex.shape[0]
    if k < 1 or n < 2:
        return np.zeros(0, int), np.zeros(0, int)
    groups = [np.arange(n)] if blocks is None else [
        np.flatnonzero(np.asarray(blocks, dtype=object) == v) for v in dict.fromkeys(blocks)]
    rows, cols = [], []
    for g in groups:
        if len(g) < 2:
            continue
        lg = lex[g]
        kk = min(k, len(g) - 1)
        for s in range(0, len(g), chunk):
            sims = (lg[s:s + chunk] @ lg.T).toarray()
            np.fill_diagonal(sims[:, s:s + chunk], -np.inf)
            nb = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
            rows.append(np.repeat(g[s:s + chunk], kk))
            cols.append(g[nb.ravel()])
    if not rows:
        return np.zeros(0, int), np.zeros(0, int)
    i, j = np.concatenate(rows), np.concatenate(cols)
    return np.minimum(i, j), np.maximum(i, j)


def _split(emb: np.ndarray, size: int) -> list[np.ndarray]:
    from sklearn.cluster import MiniBatchKMeans

    k = int(np.ceil(len(emb) / size)) * 2
    lab = MiniBatchKMeans(n_clusters=k, random_state=0, n_init=3).fit_predict(emb)
    return [np.flatnonzero(lab == c) for c in range(k) if (lab == c).any()]
