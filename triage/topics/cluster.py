"""Similarity between messages and the clustering that turns them into candidate topics.

Two messages belong to one topic when they describe the same problem (semantic + lexical similarity)
at a compatible place (place term) in the same period (time term); two individual petitions clear a
slightly higher bar (each is one person's own case). Candidates come from a k-nearest-
neighbour search on the embeddings (chunked matrix products, optionally blocked by domain at scale);
edges above the threshold form connected components, and average linkage inside each component undoes
the chaining that plain components would suffer from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from triage.parallel import thread_map
from triage.text.places import SPECIFICITY, PlaceExtractor

log = logging.getLogger(__name__)


@dataclass
class SimilarityConfig:
    """Weights of the pairwise similarity; each default says why beside it."""

    # The lexical view (problem words) says "same problem", the sentence encoder mostly "same field":
    # two different pension questions, or a graduate's hukou and a migrant child's school place, score
    # 0.6-0.7 in USE and share few words. On 420 labelled pairs of a city's real board drawn around the
    # old merge threshold (bench/realdata_labels/topic_pairs.csv), a logistic fit put the semantic
    # share of the two at 0.18-0.32 (each half of the pairs), and 0.3/0.7 ranked the other half's
    # pairs better than 0.5/0.5 (ROC AUC 0.881 vs 0.863, 0.865 vs 0.847). The threshold keeps the old
    # recall on those pairs (83 of 88 same-problem pairs above it) with 141 instead of 197 different-
    # problem pairs above it; bench/real_topics.py prints what the clustering then does with them.
    w_semantic: float = 0.3
    w_lexical: float = 0.7
    place_bonus: float = 0.08        # both name the same (or nested) place
    # both name places that cannot be the same: identical texts sent the same day (1.0 + the time
    # bonus 0.10) fall below the threshold
    place_penalty: float = 0.85
    place_unrelated: float = 0.30    # both name places, of different kinds, and no name in common
    # Citizens raise an unresolved problem again months later ("第二次投诉", "再次反映"): on a city's
    # real board most same-problem pairs that a 60-day window split were 2-6 months apart, and of the
    # labelled pairs 4-8 months apart a third were the same problem (a fifth of those 1-4 months apart).
    # So the penalty starts after six months (the gold's "same period") and is whole at nine: the same
    # plea a year on is a new topic.
    time_window_days: float = 180.0  # beyond this gap, a penalty grows with the gap
    time_ramp_days: float = 90.0     # ... and is whole this much later (nine months apart)
    time_penalty: float = 0.80       # whole: identical texts fall below the threshold
    time_bonus: float = 0.10         # messages days apart are likelier the same topic than months apart
    time_bonus_days: float = 30.0
    # Two individual petitions (个人诉求: my pension, my purchase permit) are each about one person's
    # own case: they share a topic when they ask the same specific thing, not because they share a
    # policy's words (养老保险, 购房资格) or the encoder's "same field". On the labelled real pairs,
    # petition-petition pairs were half of the different problems a topic joined (38 of 77; 14 of
    # 78 same-problem pairs kept), against 20 of 73 between group issues. A small extra bar, chosen on
    # one half of the pairs (0.03: 41 -> 36 different joined, 37/41 same kept) and checked on the
    # other (36 -> 31 different joined, 41/46 same kept, unchanged).
    petition_pair: float = 0.03
    threshold: float = 0.30          # average-linkage merge threshold on the combined similarity (see the weights)
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
    mentions: list[frozenset[str]] | None = None  # every place each message names (the primary among them)
    petition: np.ndarray | None = None  # bool: the message is an individual petition (scope "individual")
    _codes: np.ndarray | None = field(default=None, init=False, repr=False)
    _keys: list[tuple[str, frozenset[str]]] = field(default_factory=list, init=False, repr=False)

    def place_codes(self) -> tuple[np.ndarray, list[tuple[str, frozenset[str]]]]:
        """Each message's (primary, mentions) as an integer code (-1: no place) and the distinct keys.

        Few distinct keys, millions of candidate pairs: the place term is computed once per distinct
        pair of keys, not once per pair of messages.
        """
        if self._codes is None:
            code: dict[tuple[str, frozenset[str]], int] = {}
            out = np.full(len(self.place), -1, dtype=np.int64)
            empty: frozenset[str] = frozenset()
            for k, pl in enumerate(self.place):
                if pl:
                    key = (pl, self.mentions[k] if self.mentions is not None else empty)
                    out[k] = code.setdefault(key, len(code))
            self._codes, self._keys = out, list(code)
        return self._codes, self._keys


class Similarity:
    def __init__(self, config: SimilarityConfig, places: PlaceExtractor) -> None:
        self.cfg = config
        self.places = places
        self._place_memo: dict[tuple[str, str], float] = {}  # few distinct place pairs, millions of lookups

    def place_term(self, a: str | None, b: str | None, mentions_a: frozenset[str] = frozenset(),
                   mentions_b: frozenset[str] = frozenset()) -> float:
        """Bonus when the primary places agree, penalty when they cannot be the same place.

        The primary place is one guess per message (the most specific name found), and extraction
        errs: a long proposal names several places, the short complaint about one of them names just
        that one. So a conflict between the primaries is forgiven (neutral, not a bonus) when either
        message also names the other's primary place or a place inside it; naming only a broader
        place (the town both villages belong to) is no evidence and forgives nothing.
        """
        if not a or not b:
            return 0.0
        if a == b:
            return self._bonus(a, b)
        key = (a, b, mentions_a, mentions_b)
        v = self._place_memo.get(key)
        if v is None:
            v = self._place_memo[key] = self._place_term(a, b, mentions_a, mentions_b)
        return v

    def _place_term(self, a: str, b: str, mentions_a: frozenset[str], mentions_b: frozenset[str]) -> float:
        c = self.places.compatible(a, b)
        if c is False and (self._names_within(a, mentions_b) or self._names_within(b, mentions_a)):
            c = None
        if c is True:
            return self._bonus(a, b)
        if c is False:
            return -self.cfg.place_penalty
        # A county and a compound, a city and a company: they may nest, but nothing says so. Without
        # a gazetteer entry for either (an office's gazetteer never lists every compound, and the
        # real-message files anonymise counties), two messages that name places and share none
        # are told apart: on a city's board most same-theme pairs of this kind are different places
        # (拖欠工资 at three companies in three cities), while the same problem's messages share
        # at least the county or the compound.
        # Two point-like places of different kinds (a compound and a road, a company and a park) may
        # adjoin, but sharing only the district or city both lie in says nothing: every two
        # kindergartens of one district share it.
        point = min(self.places.specificity(a), self.places.specificity(b)) >= SPECIFICITY["road"]
        if self._share_a_place(a, b, mentions_a, mentions_b, SPECIFICITY["town"] if point else 0):
            return 0.0
        return -self.cfg.place_unrelated

    def _bonus(self, a: str, b: str) -> float:
        """The same place is evidence of the same topic only when it is a specific one (a compound, a
        village, a school, a road, a town). Two messages on a city's board that both name the city (or
        one county) share nothing more than every other pair there: the bonus pulled different
        problems of one city into one topic (a reading of the real board's top 20)."""
        spec = min(self.places.specificity(a), self.places.specificity(b))
        return self.cfg.place_bonus if spec >= SPECIFICITY["town"] else 0.0

    def _share_a_place(self, a: str, b: str, mentions_a: frozenset[str], mentions_b: frozenset[str],
                       at_least: int = 0) -> bool:
        """Whether the two messages name one place in common (or one nested in the other), of at
        least the specificity ``at_least``."""
        xs, ys = mentions_a | {a}, mentions_b | {b}
        if at_least:
            xs = {x for x in xs if self.places.specificity(x) >= at_least}
            ys = {y for y in ys if self.places.specificity(y) >= at_least}
        return bool(xs & ys) or self.places.related(xs, ys)

    def _names_within(self, place: str, mentions: frozenset[str]) -> bool:
        """Whether one of ``mentions`` is ``place`` or a place inside it."""
        spec = self.places.specificity(place)
        return any(self.places.specificity(x) >= spec and self.places.compatible(place, x) is True for x in mentions)

    def time_term(self, gap_days: np.ndarray) -> np.ndarray:
        gap = np.abs(gap_days)
        over = np.clip(gap - self.cfg.time_window_days, 0, None)
        near = self.cfg.time_bonus * np.clip(1.0 - gap / self.cfg.time_bonus_days, 0, None)
        return near - self.cfg.time_penalty * np.minimum(1.0, over / max(self.cfg.time_ramp_days, 1e-9))

    def pairs(self, p: Points, i: np.ndarray, j: np.ndarray, sem: np.ndarray | None = None,
              lex: np.ndarray | None = None) -> np.ndarray:
        """Combined similarity for index pairs (vectorised); ``sem``/``lex`` when already known."""
        if sem is None:
            sem = np.einsum("ij,ij->i", p.emb[i], p.emb[j])
        if lex is None:
            lex = np.asarray(p.lex[i].multiply(p.lex[j]).sum(axis=1)).ravel()
        s = self.cfg.w_semantic * sem + self.cfg.w_lexical * lex
        s += self.place_terms(p, i, j)
        s += self.time_term(p.day[i] - p.day[j])
        if p.petition is not None and self.cfg.petition_pair:
            s -= self.cfg.petition_pair * (p.petition[i] & p.petition[j])
        return s

    def place_terms(self, p: Points, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Place term for index pairs, computed once per distinct pair of place keys."""
        codes, keys = p.place_codes()
        ci, cj = codes[i], codes[j]
        out = np.zeros(len(i))
        both = (ci >= 0) & (cj >= 0)
        if not both.any():
            return out
        lo, hi = np.minimum(ci[both], cj[both]), np.maximum(ci[both], cj[both])
        uniq, inv = np.unique(lo * len(keys) + hi, return_inverse=True)
        vals = np.fromiter((self.place_term(keys[u // len(keys)][0], keys[u % len(keys)][0],
                                            keys[u // len(keys)][1], keys[u % len(keys)][1]) for u in uniq.tolist()),
                           float, len(uniq))
        out[both] = vals[inv.ravel()]
        return out

    def matrix(self, p: Points, idx: np.ndarray) -> np.ndarray:
        """Dense combined similarity among a (small) set of messages."""
        e = p.emb[idx]
        s = self.cfg.w_semantic * (e @ e.T) + self.cfg.w_lexical * _gram(p.lex[idx])
        codes, keys = p.place_codes()
        ci = codes[idx]
        known = ci >= 0
        if known.any():
            uniq, inv = np.unique(ci[known], return_inverse=True)
            ks = [keys[u] for u in uniq.tolist()]
            # the place term is symmetric: the upper triangle is worked out, the lower one mirrors it
            # (a large component names hundreds of distinct places)
            table = np.zeros((len(ks), len(ks)))
            for r, a in enumerate(ks):
                table[r, r:] = [self.place_term(a[0], b[0], a[1], b[1]) for b in ks[r:]]
            table = np.triu(table) + np.triu(table, 1).T
            inv = inv.ravel()
            s[np.ix_(known, known)] += table[np.ix_(inv, inv)]
        d = p.day[idx]
        s += self.time_term(d[:, None] - d[None, :])
        if p.petition is not None and self.cfg.petition_pair:
            pe = p.petition[idx]
            s -= self.cfg.petition_pair * (pe[:, None] & pe[None, :])
        return s


def _gram(lx: sp.csr_matrix, threads: int = 2, min_rows: int = 512) -> np.ndarray:
    """``(lx @ lx.T).toarray()``, its row blocks on ``threads`` threads for a large component: scipy's
    sparse product releases the GIL, and each row's products are the same whoever computes them."""
    if threads < 2 or lx.shape[0] < min_rows:
        return (lx @ lx.T).toarray()
    lt = lx.T.tocsr()
    step = -(-lx.shape[0] // threads)
    return np.vstack(thread_map(lambda s: (lx[s:s + step] @ lt).toarray(), range(0, lx.shape[0], step), threads))


def scored_candidates(emb: np.ndarray, lex: sp.csr_matrix, k_sem: int, k_lex: int,
                      blocks: Sequence[str] | None = None, chunk: int = 1024, threads: int = 2
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs (i < j) with their embedding cosine and tf-idf cosine.

    Each row's ``k_sem`` nearest neighbours by embedding and ``k_lex`` by tf-idf (two messages
    sharing a rare problem word may sit far apart in a multilingual model's space). One pass over
    chunks of rows computes both similarity blocks, picks the neighbours and reads both values of
    every picked pair from the blocks already in memory: gathering a million pairs' vectors again
    afterwards (dense rows and sparse rows) cost more than the search itself at 100k messages.
    Chunks run on ``threads`` threads (at most one per core): on a city's 5,000 messages the sparse
    products took 3.1 s in one thread and 2.0 s in two.
    """
    n = len(emb)
    if blocks is None:
        groups = [np.arange(n)]
    else:
        b = np.asarray(blocks, dtype=object)
        groups = [np.flatnonzero(b == v) for v in dict.fromkeys(b.tolist())]
    rows, cols, sems, lexs = [], [], [], []
    # two chunks in memory at once (about 0.6 GB more at 30,000 messages in one block). Halving the
    # chunks instead changed topics: BLAS's sums for a row depend on how many rows it multiplies
    for g in groups:
        if len(g) < 2:
            continue
        ks, kl = min(k_sem, len(g) - 1), min(k_lex, len(g) - 1)
        eg = emb[g]
        lg = sp.csr_matrix(lex[g])
        lt = lg.T.tocsr()

        def pick(s: int, g=g, eg=eg, lg=lg, lt=lt, ks=ks, kl=kl):
            e = slice(s, min(s + chunk, len(g)))
            sem = eg[e] @ eg.T
            lx = (lg[e] @ lt).toarray()
            np.fill_diagonal(sem[:, e], -np.inf)
            np.fill_diagonal(lx[:, e], -np.inf)
            picked = [np.argpartition(-sem, ks - 1, axis=1)[:, :ks]]
            if kl > 0:
                picked.append(np.argpartition(-lx, kl - 1, axis=1)[:, :kl])
            nb = np.concatenate(picked, axis=1)
            return (np.repeat(g[e], nb.shape[1]), g[nb.ravel()], np.take_along_axis(sem, nb, axis=1).ravel(),
                    np.take_along_axis(lx, nb, axis=1).ravel())

        # chunks in threads: scipy's sparse product and numpy release the GIL, and the results come
        # back in chunk order, so the candidates are those of one thread
        for r, c, se, lxs in thread_map(pick, range(0, len(g), chunk), threads):
            rows.append(r)
            cols.append(c)
            sems.append(se)
            lexs.append(lxs)
    if not rows:
        z = np.zeros(0, int)
        return z, z, np.zeros(0), np.zeros(0)
    i, j = np.concatenate(rows), np.concatenate(cols)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    _, first = np.unique(lo.astype(np.int64) * n + hi, return_index=True)
    return lo[first], hi[first], np.concatenate(sems)[first], np.concatenate(lexs)[first]


def cluster(p: Points, sim: Similarity, max_component: int = 4000) -> np.ndarray:
    """Cluster labels (0..k-1) for every message."""
    n = len(p.emb)
    if n == 0:
        return np.zeros(0, dtype=int)
    cfg = sim.cfg
    blocks = p.block if (p.block is not None and n > cfg.block_above) else None
    i, j, sem, lex = scored_candidates(p.emb, p.lex, cfg.knn, cfg.knn // 2, blocks)
    if len(i):
        s = sim.pairs(p, i, j, sem, lex)
        keep = s >= cfg.threshold
        i, j = i[keep], j[keep]
    graph = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    ncomp, comp = connected_components(graph, directed=False)
    # Singletons and pairs need no linkage: a component of two exists only because its one pair
    # scored above the threshold. Tens of thousands of such components at 100k messages, so they
    # are labelled with array operations and the loop below sees the larger components only.
    sizes = np.bincount(comp, minlength=ncomp)
    small = sizes[comp] <= 2
    labels = np.full(n, -1, dtype=int)
    small_comp = np.unique(comp[small])
    labels[small] = np.searchsorted(small_comp, comp[small])
    nxt = len(small_comp)
    big = np.flatnonzero(~small)
    order = big[np.argsort(comp[big], kind="stable")]
    bounds = np.flatnonzero(np.diff(comp[order])) + 1
    for members in (np.split(order, bounds) if len(order) else []):
        if len(members) > max_component:  # pathological chaining: split by embedding k-means first
            parts = _split(p.emb[members], max_component)
        else:
            parts = [np.arange(len(members))]
        for part in parts:
            idx = members[part]
            sub = _average_linkage(sim.matrix(p, idx), cfg.threshold) if len(idx) > 1 else np.zeros(1, int)
            labels[idx] = sub + nxt
            nxt += int(sub.max()) + 1
    return labels


def _average_linkage(similarity: np.ndarray, threshold: float) -> np.ndarray:
    """Flat clusters (0..k-1) of average linkage: groups merge while their mean similarity is >= threshold.

    scipy's linkage on the condensed distances directly; sklearn's wrapper around the same call cost
    more in validation than the clustering itself on the many small components.
    """
    dist = np.clip(1.0 - similarity, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    z = linkage(squareform(dist, checks=False), method="average")
    # merges at a distance of exactly 1 - threshold are made (similarity >= threshold)
    flat = fcluster(z, t=1.0 - threshold, criterion="distance")
    return np.unique(flat, return_inverse=True)[1].ravel()


def _split(emb: np.ndarray, size: int) -> list[np.ndarray]:
    from sklearn.cluster import MiniBatchKMeans

    k = int(np.ceil(len(emb) / size)) * 2
    lab = MiniBatchKMeans(n_clusters=k, random_state=0, n_init=3).fit_predict(emb)
    return [np.flatnonzero(lab == c) for c in range(k) if (lab == c).any()]
