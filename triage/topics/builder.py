"""Candidate topics (议题): one concrete problem, at one place, in one period.

:class:`TopicBuilder` clusters a batch of messages (the periodic re-clustering) and builds readable
topics: keywords by class-based TF-IDF over jieba tokens, places, a representative message, a label
("北辰社区 · 3栋楼道灯坏了"), first/last seen, voices after near-duplicate collapsing. Topic ids stay
stable across re-clusterings by matching old to new memberships. :class:`TopicIndex` assigns a new
message to an existing topic (or opens one) in milliseconds between re-clusterings. Topics roll up into
themes (the same problem across places).
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from triage.text.ngram_counts import char_ngram_counts, word_counts
from triage.topics.cluster import Points, Similarity, SimilarityConfig, cluster
from triage.text.places import SITE_KINDS, PlaceExtractor
from triage.text.normalise import PLACE_CODE_RE

log = logging.getLogger(__name__)


@dataclass
class TopicConfig:
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    duplicate_threshold: float = 0.88     # char 2-3-gram cosine: same text sent twice / copy-paste
    theme_threshold: float = 0.35         # looser than topics (0.30), and place-blind: the same problem elsewhere
    keywords: int = 6
    lexical: str = "chars"                # "words" (jieba tokens) or "chars" (character 2-3-grams)
    id_match_min_jaccard: float = 0.3
    gist_tokens: int = 20                 # opening tokens counted twice in the lexical view (see gist_doc)


@dataclass
class Message:
    id: str
    text: str                    # normalised + masked
    tokens: str                  # space-joined content tokens
    submitted_at: pd.Timestamp
    channel: str = ""
    submitter: str = ""
    support: int = 0
    scope: str | None = None
    domain: str | None = None
    places: list[str] = field(default_factory=list)
    place: str | None = None     # most specific


@dataclass
class Topic:
    id: str
    members: list[str]                       # message ids
    label: str = ""
    keywords: list[str] = field(default_factory=list)
    places: list[str] = field(default_factory=list)
    place: str | None = None
    representative: str = ""                 # message id
    representative_text: str = ""
    first_seen: pd.Timestamp | None = None
    last_seen: pd.Timestamp | None = None
    size: int = 0
    voices: int = 0                          # messages after collapsing near-duplicates
    duplicates: int = 0
    submitters: int = 0
    channels: list[str] = field(default_factory=list)
    support: int = 0
    group_share: float = 0.0
    domain: str | None = None
    domain_share: float = 0.0
    campaign: bool = False                   # near-identical messages from few submitters
    theme: str | None = None
    extra: dict = field(default_factory=dict)


def _days(ts: pd.Series) -> np.ndarray:
    t = pd.to_datetime(ts, errors="coerce")
    d = (t - pd.Timestamp("1970-01-01")).dt.total_seconds().to_numpy(dtype=float) / 86400.0
    return np.where(np.isnan(d), np.nanmedian(d) if np.isfinite(d).any() else 0.0, d)


class TopicBuilder:
    """Batch clustering of messages into topics; fitted attributes end in ``_``."""

    def __init__(self, config: TopicConfig | None = None, places: PlaceExtractor | None = None,
                 workers: int | None = None) -> None:
        self.config = config or TopicConfig()
        self.places = places or PlaceExtractor()
        # character n-gram vectorising is pure Python: large batches spread it over forked workers
        self.workers = workers if workers is not None else (os.cpu_count() or 1)

    # ------------------------------------------------------------------ fitting
    def fit(self, msgs: pd.DataFrame, emb: np.ndarray, previous: Mapping[str, Iterable[str]] | None = None,
            id_prefix: str = "T", labels: np.ndarray | None = None, describe: bool = True) -> "TopicBuilder":
        """Cluster ``msgs`` (columns of :class:`Message`) with their embeddings.

        ``previous`` maps existing topic ids to their member ids; matched clusters keep those ids.
        ``labels`` skips clustering: the service rebuilds its incremental index from the stored
        membership (staff decisions included) without re-clustering. ``describe=False`` gives each
        topic only its members and places, which is all :class:`TopicIndex` reads: labels, keywords,
        representatives, near-duplicates and themes were 13 of the 31 s an index rebuild took at 20k
        stored messages, in a thread that shares the worker with intake (``bench/intake_during_recluster.py``).
        """
        cfg = self.config
        msgs = msgs.reset_index(drop=True)
        self.msgs_ = msgs
        self.emb_ = np.asarray(emb, dtype=np.float32)
        if cfg.lexical == "chars":
            # character n-grams inside content tokens: 楼道灯 / 楼道照明 share 楼道
            self.lexvec_ = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 3), sublinear_tf=True, min_df=1,
                                           max_df=0.5 if len(msgs) > 50 else 1.0, dtype=np.float32)
        else:
            self.lexvec_ = TfidfVectorizer(token_pattern=r"\S+", lowercase=False, sublinear_tf=True, min_df=1,
                                           max_df=0.5 if len(msgs) > 50 else 1.0, dtype=np.float32)
        # the lexical view is place-blind: a shared place name (锦绣家园小区) would otherwise make two
        # different problems at one place look alike; the place term of the similarity judges places
        self.lex_ = fit_tfidf(self.lexvec_, problem_tokens(msgs, cfg.gist_tokens), self.workers).tocsr()
        self.sim_ = Similarity(cfg.similarity, self.places)
        place = [p if isinstance(p, str) and p else None for p in msgs["place"]]
        mentions = ([frozenset(ps) if isinstance(ps, list) else frozenset() for ps in msgs["places"]]
                    if "places" in msgs else None)
        self.points_ = Points(self.emb_, self.lex_, place, _days(msgs["submitted_at"]),
                              list(msgs["domain"]) if "domain" in msgs else None, mentions, petitions(msgs))
        labels = cluster(self.points_, self.sim_) if labels is None else np.asarray(labels)
        self.labels_ = labels
        ids = match_ids(labels, msgs["id"].tolist(), previous or {}, cfg.id_match_min_jaccard, id_prefix)
        self.topic_of_ = dict(zip(msgs["id"], (ids[lab] for lab in labels)))
        if not describe:
            self.topics_, self.themes_ = self._members_and_places(labels, ids), []
            return self
        self.topics_ = self._describe(labels, ids)
        self._themes()
        return self

    def _members_and_places(self, labels: np.ndarray, ids: dict[int, str]) -> list[Topic]:
        """Each topic's members and places only (see ``describe`` in :meth:`fit`)."""
        msgs = self.msgs_
        mid = msgs["id"].astype(str).to_numpy(dtype=object)
        plist = [ps if isinstance(ps, list) else [] for ps in msgs["places"]]
        prim = [p if isinstance(p, str) and p else None for p in msgs["place"]]
        out = []
        for idx in _label_groups(labels):
            t = Topic(id=ids[int(labels[idx[0]])], members=mid[idx].tolist(), size=len(idx))
            t.places, t.place = _topic_places(idx, plist, prim)
            out.append(t)
        return out

    def _describe(self, labels: np.ndarray, ids: dict[int, str]) -> list[Topic]:
        # Per-message columns are turned into plain arrays once: at 100k messages there are tens of
        # thousands of topics, most of them singletons, and per-topic pandas indexing dominated.
        cfg = self.config
        msgs = self.msgs_
        n = len(msgs)
        kw = ctfidf_keywords(msgs["tokens"].fillna("").tolist(), labels, cfg.keywords)
        mid = msgs["id"].astype(str).to_numpy(dtype=object)
        text = msgs["text"].fillna("").astype(str).to_numpy(dtype=object)
        subm = np.array([s if isinstance(s, str) and s else f"_anon{m}" for s, m in zip(msgs["submitter"], mid)],
                        dtype=object)
        chan = np.array([c if isinstance(c, str) else "" for c in msgs["channel"]], dtype=object)
        supp = pd.to_numeric(msgs["support"], errors="coerce").fillna(0).clip(lower=0).to_numpy(dtype=np.int64)
        scope = np.array([x if isinstance(x, str) else "" for x in msgs["scope"]], dtype=object)
        dom = np.array([x if isinstance(x, str) else "" for x in msgs["domain"]], dtype=object)
        plist = [ps if isinstance(ps, list) else [] for ps in msgs["places"]]
        prim = [p if isinstance(p, str) and p else None for p in msgs["place"]]
        tsv = pd.to_datetime(msgs["submitted_at"], errors="coerce").to_numpy(dtype="datetime64[ns]")
        lengths = np.fromiter((len(t) for t in text), dtype=np.int64, count=n)
        # the citizen's own title (masked like the text), where the input had a title column
        titles = msgs["title"].fillna("").astype(str).to_numpy(dtype=object) if "title" in msgs else None
        self.lengths_ = lengths
        out: list[Topic] = []
        groups = _label_groups(labels)
        # near-duplicates only matter inside a topic: singletons (most topics at scale) are not vectorised
        in_multi = np.concatenate([g for g in groups if len(g) > 1] or [np.zeros(0, int)])
        at = np.full(n, -1)
        at[in_multi] = np.arange(len(in_multi))
        # near-duplicates: cosine of character 2-3-gram counts (each n-gram its own column, no hashing)
        dv = normalize(char_ngram_counts(text[in_multi].tolist(), (2, 3))) if len(in_multi) else None
        voices = _voices(dv, [at[g] if len(g) > 1 else g for g in groups], cfg.duplicate_threshold) if n else []
        reps = self._representatives(groups, scope) if n else []
        for idx, nvoices, rep in zip(groups, voices, reps):
            lab = int(labels[idx[0]])
            size = len(idx)
            t = Topic(id=ids[lab], members=mid[idx].tolist(), size=size)
            t.voices = nvoices
            t.duplicates = size - t.voices
            t.submitters = len(set(subm[idx].tolist()))
            t.campaign = size >= 3 and t.duplicates >= max(2, size // 2) and t.submitters <= max(2, size // 3)
            t.channels = sorted({c for c in chan[idx].tolist() if c})
            t.support = int(supp[idx].sum())
            t.group_share = float((scope[idx] == "group").mean())
            doms = Counter(d for d in dom[idx].tolist() if d)
            if doms:
                t.domain, c = doms.most_common(1)[0]
                t.domain_share = c / size
            t.places, t.place = _topic_places(idx, plist, prim)
            tsi = tsv[idx]
            tsi = tsi[~np.isnat(tsi)]  # an unparseable date is unknown, not the earliest
            t.first_seen, t.last_seen = (pd.Timestamp(tsi.min()), pd.Timestamp(tsi.max())) if len(tsi) else (pd.NaT, pd.NaT)
            t.keywords = kw.get(lab, [])
            t.representative = str(mid[rep])
            t.representative_text = str(text[rep])
            # place and problem from one message: the representative's own place when it names one (a
            # label with one member's place and another member's problem described neither)
            t.label = make_label(prim[rep] or t.place, t.representative_text, t.keywords,
                                 title=str(titles[rep]) if titles is not None else None)
            out.append(t)
        return out

    def _representatives(self, groups: Sequence[np.ndarray], scopes: np.ndarray, batch_rows: int = 4096) -> list[int]:
        """Per topic, the member closest to its centre, preferring group-scope, mid-length messages.

        closeness = cosine to the mean embedding + tf-idf dot with the mean tf-idf vector. All topics
        at once: one membership product for the centres, then one sparse product per batch of about
        ``batch_rows`` messages (pairs across topics ignored), instead of a few scipy calls per topic.
        """
        out = [int(g[0]) for g in groups]
        multi = [t for t, g in enumerate(groups) if len(g) > 1]
        if not multi:
            return out
        idx = np.concatenate([groups[t] for t in multi])
        owner = np.repeat(np.arange(len(multi)), [len(groups[t]) for t in multi])
        M = sp.csr_matrix((1.0 / np.bincount(owner)[owner], (owner, np.arange(len(idx)))), shape=(len(multi), len(idx)))
        centre_e = np.asarray(M @ self.emb_[idx], dtype=np.float32)
        centre_l = sp.csr_matrix(M @ self.lex_[idx])
        score = np.einsum("ij,ij->i", self.emb_[idx], centre_e[owner]).astype(np.float64)
        for s in range(0, len(idx), batch_rows):
            e = slice(s, s + batch_rows)
            own = owner[e]
            lo, hi = int(own[0]), int(own[-1]) + 1
            prod = (self.lex_[idx[e]] @ centre_l[lo:hi].T).toarray()
            score[e] += prod[np.arange(len(own)), own - lo]
        lengths = self.lengths_[idx]
        score += np.where((lengths >= 15) & (lengths <= 160), 0.05, 0.0)
        score += np.where(scopes[idx] == "group", 0.03, 0.0)
        # per topic: best first; equal scores (a two-member topic's members are equally central) go to
        # the earliest message, not to whichever float rounding favours
        best = np.lexsort((np.arange(len(idx)), -np.round(score, 6), owner))
        first = np.flatnonzero(np.r_[True, np.diff(owner[best]) > 0])
        for t, k in zip(multi, best[first]):
            out[t] = int(idx[k])
        return out

    def _themes(self) -> None:
        """Roll topics up into themes: place-blind clustering of topic centroids."""
        topics = self.topics_
        if not topics:
            self.themes_ = []
            return
        # centroids as one sparse membership product: a dense lexical centroid per topic would be
        # topics x vocabulary floats (gigabytes at 100k messages)
        M = self._membership()
        cent_e = np.asarray(M @ self.emb_, dtype=np.float32)
        norms = np.linalg.norm(cent_e, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        cent_e /= norms
        cent_l = _l2_sparse(sp.csr_matrix(M @ self.lex_))
        cfg = SimilarityConfig(**{**self.config.similarity.__dict__, "place_bonus": 0.0, "place_penalty": 0.0,
                                  "time_penalty": 0.0, "threshold": self.config.theme_threshold})
        pts = Points(cent_e, cent_l, [None] * len(topics), np.zeros(len(topics)), [t.domain or "" for t in topics])
        cfg.block_above = 0  # themes never cross domains
        labels = cluster(pts, Similarity(cfg, self.places))
        themes: dict[int, list[Topic]] = {}
        for t, lab in zip(topics, labels):
            themes.setdefault(int(lab), []).append(t)
        self.themes_ = []
        for lab, ts in themes.items():
            best = max(ts, key=lambda t: t.size)
            kws = Counter(k for t in ts for k in t.keywords[:4] if not any(k in (u.place or "") for u in ts))
            # the problem as its largest topic states it, without that topic's place
            label = best.label.split(" · ", 1)[1] if " · " in best.label else "、".join(k for k, _ in kws.most_common(3))
            theme_id = f"{best.id}-theme" if len(ts) > 1 else None
            for t in ts:
                t.theme = theme_id
            if theme_id:
                self.themes_.append({"id": theme_id, "label": label, "topics": [t.id for t in ts],
                                     "places": sorted({t.place for t in ts if t.place}),
                                     "size": sum(t.size for t in ts), "domain": best.domain})

    def _membership(self) -> sp.csr_matrix:
        """(topics x messages) matrix of 1/size: ``M @ X`` is every topic's mean row of ``X``."""
        pos = {m: i for i, m in enumerate(self.msgs_["id"])}
        rows, cols, vals = [], [], []
        for k, t in enumerate(self.topics_):
            rows.extend([k] * len(t.members))
            cols.extend(pos[m] for m in t.members)
            vals.extend([1.0 / len(t.members)] * len(t.members))
        return sp.csr_matrix((vals, (rows, cols)), shape=(len(self.topics_), len(pos)))

    # ------------------------------------------------------------------ outputs
    def topics_frame(self) -> pd.DataFrame:
        rows = []
        for t in self.topics_:
            rows.append({"topic_id": t.id, "label": t.label, "keywords": "、".join(t.keywords),
                         "place": t.place or "", "places": "、".join(t.places), "size": t.size,
                         "voices": t.voices, "duplicates": t.duplicates, "submitters": t.submitters,
                         "channels": "、".join(t.channels), "support": t.support,
                         "group_share": round(t.group_share, 3), "domain": t.domain or "",
                         "first_seen": t.first_seen, "last_seen": t.last_seen, "campaign": t.campaign,
                         "theme": t.theme or "", "representative_id": t.representative,
                         "representative": t.representative_text})
        return pd.DataFrame(rows)


def _label_groups(labels: np.ndarray) -> list[np.ndarray]:
    """The message positions of each topic, topics in label order, members in message order."""
    order = np.argsort(labels, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(labels[order])) + 1) if len(order) else []


def _topic_places(idx: np.ndarray, plist: Sequence[list[str]], prim: Sequence[str | None]) -> tuple[list[str], str | None]:
    """A topic's places (the five its members name most) and its place (its members' commonest primary)."""
    pc = Counter(p for k in idx for p in plist[k])
    specific = Counter(prim[k] for k in idx if prim[k])
    return [p for p, _ in pc.most_common(5)], (specific.most_common(1)[0][0] if specific else None)


def _strip_places(tokens: str, places: Sequence[str]) -> str:
    """Tokens without those that are part of a place name (two characters or more).

    The kind of site a name ends in stays (城铁 of 长株潭城铁, 医院 of 第三人民医院): it says what the
    problem is about, where the name before it says where.
    """
    # Tokens are lower-cased (normalisation) and names are not: compared as written, no lettered
    # place (C市, E12市, K10县) was ever taken out, and every pair of messages naming C市 shared
    # " c " in the lexical view. On a city's real board that joined a graduate's archive question
    # with another's tuition question, and two companies' wage arrears in J市 (bench/real_topics.py).
    # Such a code is one token (a7县, see triage.text.normalise.PLACE_CODE_RE) and is a place even where the
    # place list missed it; a lone Chinese character stays (路 of 镇东路 says little of where).
    names = [p.lower() for p in places if isinstance(p, str) and p]
    if not tokens:
        return ""
    # one substring test against the names joined by a character no token holds, instead of one per
    # name: the same answer (a token lies inside the joined string only inside one name), and half a
    # million generator steps fewer on a 5,000-message board
    joined = "\x00".join(names)
    return " ".join(t for t in tokens.split()
                    if not PLACE_CODE_RE.fullmatch(t)
                    and ((len(t) < 2 and not t.isascii())
                         or (t in SITE_KINDS and any(p.endswith(t) for p in names))
                         or t not in joined))


def gist_doc(tokens: str, gist_tokens: int = 20) -> str:
    """A message's lexical document: its tokens, with the opening ``gist_tokens`` counted twice.

    Citizens state the problem first (the title, the first sentence) and then tell its history: a
    600-character petition and a one-line complaint about the same lift share their opening words
    and little else. Counting the opening twice pulls the long text towards its gist (the lexical
    counterpart of :func:`triage.embed.encoders.topic_embeddings`); a short message is its opening.
    """
    toks = tokens.split()
    return " ".join(toks + toks[:gist_tokens]) if toks else ""


def petitions(msgs: pd.DataFrame) -> np.ndarray | None:
    """Which messages are individual petitions (scope "individual"); None when no scope is known."""
    if "scope" not in msgs:
        return None
    return (msgs["scope"].astype("string").fillna("") == "individual").to_numpy(dtype=bool)


def problem_tokens(msgs: pd.DataFrame, gist_tokens: int = 20) -> list[str]:
    """Each message's lexical document with its place names taken out: what the problem is, not where."""
    toks = msgs["tokens"].fillna("").tolist()
    if "places" not in msgs:
        return [gist_doc(t, gist_tokens) for t in toks]
    return [gist_doc(_strip_places(t, ps if isinstance(ps, list) else []), gist_tokens)
            for t, ps in zip(toks, msgs["places"])]


#: below this many texts, vectorising in one process is faster than forking workers
PARALLEL_MIN_TEXTS = 5000


def _count_chunk(docs: Sequence[str], params: dict) -> tuple[list[str], sp.csr_matrix]:
    from sklearn.feature_extraction.text import CountVectorizer

    cv = CountVectorizer(**params)
    try:
        X = cv.fit_transform(docs)
    except ValueError:  # a chunk with no n-gram at all
        return [], sp.csr_matrix((len(docs), 0), dtype=params.get("dtype", np.float64))
    return cv.get_feature_names_out().tolist(), X.tocsr()


def fit_tfidf(vec: TfidfVectorizer, docs: Sequence[str], workers: int = 1) -> sp.csr_matrix:
    """``vec.fit_transform(docs)``, with the n-gram counting done faster than scikit-learn's own.

    The topics' character n-grams (``char_wb``) are counted with array operations
    (:func:`~triage.text.ngram_counts.count_char_wb`: 5 s → about 1.4 s on a city's 5,000 messages); other
    analyzers, on large batches, are counted by forked workers, each with its own vocabulary, merged
    (sorted, as scikit-learn sorts them). Either way the document-frequency limits are applied as
    scikit-learn applies them and its own TfidfTransformer weighs the counts, so the vocabulary, the
    matrix's entries and ``vec.transform`` are those of ``vec.fit_transform`` (bit for bit; on the
    forked path, in float64, a row's norm may differ in the last bit, summed in column order).

    The order of each row's entries is kept as the earlier code left it: in column order where it
    counted in forked workers (5,000 messages or more, where it may fork), else as scikit-learn
    stores them (by first sighting). Sparse products over the rows (the candidate search, a
    component's similarities) add in that order, and float32 sums in another order moved a
    similarity by about 1e-6 and one message of 20,000 to another topic in a store's re-clustering.
    """
    from triage.text.ngram_counts import count_char_wb, counts_char_wb_supported
    from triage.parallel import can_fork, chunked_map

    vec._validate_params()   # scikit-learn's own refusal of a bad max_df or ngram_range, on every path
    if isinstance(docs, str):
        raise ValueError("Iterable over raw text documents expected, string object received.")
    docs = list(docs)
    if counts_char_wb_supported(vec) and all(isinstance(d, str) for d in docs):
        # rows in the order the earlier code left them (see the docstring): same sums, same topics
        forked = workers > 1 and len(docs) >= PARALLEL_MIN_TEXTS and can_fork()
        vocab, counts = count_char_wb(docs, vec.ngram_range, vec.lowercase, vec.dtype, seen_order=not forked)
        return _weigh_counts(vec, vocab, counts)
    if workers <= 1 or len(docs) < PARALLEL_MIN_TEXTS or not can_fork():
        return vec.fit_transform(docs)
    params = {k: v for k, v in vec.get_params().items()
              if k in ("analyzer", "ngram_range", "token_pattern", "lowercase", "preprocessor", "tokenizer",
                       "strip_accents", "stop_words", "encoding", "decode_error", "input", "binary", "dtype")}
    parts = chunked_map(_count_chunk, docs, workers, params)
    vocab = sorted(set().union(*(names for names, _ in parts)))
    where = {t: k for k, t in enumerate(vocab)}
    blocks = []
    for names, X in parts:
        remap = np.fromiter((where[t] for t in names), dtype=np.int64, count=len(names))
        blocks.append(sp.csr_matrix((X.data, remap[X.indices], X.indptr), shape=(X.shape[0], len(vocab))))
    counts = sp.vstack(blocks).tocsr()
    counts.sort_indices()
    return _weigh_counts(vec, vocab, counts)


def _weigh_counts(vec: TfidfVectorizer, vocab: list[str], counts: sp.csr_matrix) -> sp.csr_matrix:
    """What ``vec.fit_transform`` does after counting (``vocab`` sorted, ``counts`` its columns): the
    document-frequency limits, scikit-learn's TfidfTransformer, the fitted state ``vec.transform``
    reads, and scikit-learn's errors where it would raise them."""
    from sklearn.feature_extraction.text import TfidfTransformer

    if not vocab:
        raise ValueError("empty vocabulary; perhaps the documents only contain stop words")
    n_doc = counts.shape[0]
    high = vec.max_df if isinstance(vec.max_df, (int, np.integer)) else vec.max_df * n_doc
    low = vec.min_df if isinstance(vec.min_df, (int, np.integer)) else vec.min_df * n_doc
    if high < low:
        raise ValueError("max_df corresponds to < documents than min_df")
    dfs = np.bincount(counts.indices, minlength=len(vocab))
    keep = np.flatnonzero((dfs <= high) & (dfs >= low))
    if not len(keep):
        raise ValueError("After pruning, no terms remain. Try a lower min_df or a higher max_df.")
    counts = counts[:, keep]
    tt = TfidfTransformer(norm=vec.norm, use_idf=vec.use_idf, smooth_idf=vec.smooth_idf, sublinear_tf=vec.sublinear_tf)
    out = tt.fit_transform(counts)
    # the state a serial fit leaves behind, so that vec.transform() weighs new messages the same way
    vec.vocabulary_ = {vocab[k]: n for n, k in enumerate(keep)}
    vec.fixed_vocabulary_ = False
    vec._tfidf = tt
    return out


def _l2(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return (v / n if n else v).astype(np.float32)


def _l2_sparse(m: sp.csr_matrix) -> sp.csr_matrix:
    n = np.sqrt(np.asarray(m.multiply(m).sum(1)).ravel())
    n[n == 0] = 1.0
    return sp.diags(1.0 / n) @ m


def _voices(dv: sp.csr_matrix, groups: Sequence[np.ndarray], threshold: float, batch_rows: int = 2048,
            threads: int = 2) -> list[int]:
    """Voices per topic: members whose texts are near-identical (char 2-3-gram cosine) are one voice.

    Topics are processed in batches of about ``batch_rows`` messages: one sparse product and one
    connected-components call per batch, with pairs across topics masked out, instead of several
    scipy calls per topic (tens of thousands of topics at 100k messages). Batches run on ``threads``
    threads (scipy's sparse product releases the GIL); each batch's answer is its own.
    """
    from scipy.sparse.csgraph import connected_components

    from triage.parallel import thread_map

    out = [1] * len(groups)
    multi = [g for g, idx in enumerate(groups) if len(idx) > 1]
    batches: list[list[int]] = []
    k = 0
    while k < len(multi):
        batch = [multi[k]]
        rows = len(groups[multi[k]])
        k += 1
        while k < len(multi) and rows + len(groups[multi[k]]) <= batch_rows:
            batch.append(multi[k])
            rows += len(groups[multi[k]])
            k += 1
        batches.append(batch)

    def count(batch: list[int]) -> np.ndarray:
        idx = np.concatenate([groups[g] for g in batch])
        rows = len(idx)
        owner = np.repeat(np.arange(len(batch)), [len(groups[g]) for g in batch])
        sim = (dv[idx] @ dv[idx].T).tocoo()
        keep = (sim.data >= threshold) & (owner[sim.row] == owner[sim.col])
        adj = sp.csr_matrix((np.ones(int(keep.sum())), (sim.row[keep], sim.col[keep])), shape=(rows, rows))
        comp = connected_components(adj, directed=False)[1]
        distinct = np.unique(np.stack([owner, comp], axis=1), axis=0)[:, 0]  # (topic, voice) pairs
        return np.bincount(distinct, minlength=len(batch))

    for batch, counts in zip(batches, thread_map(count, batches, threads)):
        for b, cnt in enumerate(counts):
            out[batch[b]] = int(cnt)
    return out


def ctfidf_keywords(docs: Sequence[str], labels: np.ndarray, k: int) -> dict[int, list[str]]:
    """Class-based TF-IDF: a term is a keyword of a topic when it is frequent there and rare elsewhere.

    tf is per-topic term frequency normalised by topic length; idf = log(1 + A / f_t) with A the average
    topic length in tokens and f_t the term's frequency over all topics.
    """
    if not len(docs):
        return {}
    try:
        names, X = word_counts(docs)   # scikit-learn's CountVectorizer(token_pattern=r"\S+"), faster
    except ValueError:  # no word at all
        return {}
    uniq = np.unique(labels)
    pos = {lab: n for n, lab in enumerate(uniq)}
    agg = sp.csr_matrix((np.ones(len(labels)), (np.array([pos[l] for l in labels]), np.arange(len(labels)))),
                        shape=(len(uniq), len(labels))) @ X
    agg = sp.csr_matrix(agg, dtype=np.float64)
    f = np.asarray(agg.sum(0)).ravel()
    A = agg.sum() / max(len(uniq), 1)
    idf = np.log1p(A / np.maximum(f, 1))
    rows = np.asarray(agg.sum(1)).ravel()
    # scores of every (topic, term) entry at once; per-topic getrow() calls dominated at 50k topics
    agg.sort_indices()
    counts = np.diff(agg.indptr)
    row_of = np.repeat(np.arange(agg.shape[0]), counts)
    score = agg.data / np.maximum(rows[row_of], 1) * idf[agg.indices]
    # a keyword is a word: place-mask tokens (〔…〕) and single characters are never keywords
    usable = np.array([not w.startswith("〔") and len(w) > 1 for w in names], dtype=bool)
    order = np.lexsort((agg.indices, -score, row_of))  # by topic, best first; ties by vocabulary order
    rank = np.arange(len(order)) - np.repeat(agg.indptr[:-1], counts)
    top = order[rank < k * 2]
    top = top[usable[agg.indices[top]]]
    words_of: dict[int, list[str]] = {}
    for r, w in zip(row_of[top].tolist(), names[agg.indices[top]].tolist()):
        lst = words_of.setdefault(r, [])
        if len(lst) < k:
            lst.append(w)
    return {int(lab): words_of.get(r, []) for lab, r in pos.items()}


#: characters that, right after a place, belong to it ("A7县段", "E12市内", "A5区境内")
_BOUND_AFTER_PLACE = set("段内境外区里城郊")
_CLAUSE_SPLIT = re.compile(r"[,，。!！?？;；:：\n、…~～]+|\s{2,}")
_PROBLEM = re.compile(r"少|坏|难|乱|堵|没有|缺|不够|太|差|贵|危险|隐患|扰民|污染|拖欠|欠|占用|占道|增设|加装|新建|改造|整治|规范|解决|恢复|维修|修")
_LEAD = re.compile(r"^(?:您好|你好|领导好|尊敬的[^,，]{0,8}|请问|建议|希望|强烈要求|强烈|要求|再次|第[二三四五]次|反映|投诉|举报|咨询|"
                   r"关于|请求|恳请|我想问一下|我们|俺们|我)+")


_BEFORE_PLACE = ("住在", "位于", "家住", "在")
_AFTER_PLACE = ("的", "这边", "那边", "那个", "这个")


def _drop_place(text: str, place: str) -> str:
    """``text`` without ``place`` and the words that hang on it (在 / 住在 … before, 的 / 这边 … after; 里
    after a place that had a word before it), left to right as ``re.sub`` would take out
    ``(?:住在|位于|家住|在)PLACE(?:的|这边|那边|那个|这个|里)?|PLACE(?:的|这边|那边|那个|这个)?``.
    An empty place takes nothing out (the pattern would take out every 在 and 的).

    Without a pattern: compiling that pattern for every place (thousands of distinct places on a
    city's board, beyond the re module's cache) was 2 of the 14 s that describing its topics took.
    """
    if not place:
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        j = -1
        for before in _BEFORE_PLACE:
            if text.startswith(before, i) and text.startswith(place, i + len(before)):
                j = i + len(before) + len(place)
                j += next((len(a) for a in (*_AFTER_PLACE, "里") if text.startswith(a, j)), 0)
                break
        if j < 0 and text.startswith(place, i):
            j = i + len(place)
            j += next((len(a) for a in _AFTER_PLACE if text.startswith(a, j)), 0)
        if j < 0:
            out.append(text[i])
            i += 1
        else:
            i = j
    return "".join(out)


def make_label(place: str | None, text: str, keywords: Sequence[str], max_len: int = 18,
               title: str | None = None) -> str:
    """``place · problem``: the message's own title when it has one, else the clause of the
    representative message that covers most keywords.

    A citizen's title is their own one-line statement of the problem ("K9县二中强制学生补课"); on real
    boards the clause picked from a long body was backstory as often as not ("几个月过去了仍然没有给出
    解释"). The title loses its leading verbs (投诉, 反映, 关于 …) and the place, which leads the label.
    """
    clauses = [c.strip() for c in _CLAUSE_SPLIT.split(text) if c and len(c.strip()) >= 4]
    best = ""
    head = _LEAD.sub("", (title or "").strip()).strip(" 的")
    if len(head) >= 4:
        clauses, max_len = [head], max(max_len, 24)
    if clauses:
        kw = list(keywords[:5])
        def score(k: int, c: str) -> tuple[float, int]:
            s = sum(1.0 / (1 + i) for i, w in enumerate(kw) if w in c)
            s += 0.4 if _PROBLEM.search(c) else 0.0      # a label names the problem, not the backstory
            s += 0.3 if k == 0 else 0.0                  # titles and opening sentences summarise
            s -= 0.3 if re.search(r"\d{3,}|[0-9]+[点号栋]", c) else 0.0
            return (s, -abs(len(c) - 12))
        best = max(enumerate(clauses), key=lambda kc: score(*kc))[1]
        if place:  # the place leads the label already; take it out with the words that hang on it
            best = re.sub(r"([省市县区])\1", r"\1", best)   # "L10县县金域华府": a doubled unit character
            if place not in best:
                # nothing to take out: compiling the pattern below for every place (thousands on a
                # city's board, beyond the re module's cache) took a second of a 5,000-message run
                best = best.strip(" 的")
            else:
                cut = _drop_place(best, place).strip(" 的")
                # …unless what follows was bound to it ("A7县段环城…", "E12市内网吧"): then the place stays
                end = best.find(place) + len(place)
                bound = best[end:end + 1] in _BOUND_AFTER_PLACE
                best = best if bound else cut
        best = _LEAD.sub("", best).strip(" 的")
        if len(best) > max_len:
            best = best[:max_len] + "…"
    if not best:
        best = "、".join(keywords[:3])
    return f"{place} · {best}" if place else best


def match_ids(labels: np.ndarray, member_ids: Sequence[str], previous: Mapping[str, Iterable[str]],
              min_jaccard: float, prefix: str) -> dict[int, str]:
    """New cluster label → topic id, reusing an old id when memberships overlap enough.

    Greedy on Jaccard overlap (largest first), one-to-one; unmatched clusters get new ids numbered after
    the largest old one. This keeps staff decisions attached to "the same" topic after re-clustering.
    """
    clusters: dict[int, set[str]] = {}
    for lab, mid in zip(labels, member_ids):
        clusters.setdefault(int(lab), set()).add(str(mid))
    old = {tid: set(map(str, mem)) for tid, mem in previous.items()}
    where: dict[str, list[str]] = {}
    for tid, mem in old.items():
        for m in mem:
            where.setdefault(m, []).append(tid)
    cand = []
    for lab, mem in clusters.items():
        touched = Counter(t for m in mem for t in where.get(m, []))
        for tid, inter in touched.items():
            jac = inter / len(mem | old[tid])
            if jac >= min_jaccard:
                cand.append((jac, inter, lab, tid))
    cand.sort(key=lambda x: (-x[0], -x[1], x[2], x[3]))
    out: dict[int, str] = {}
    used: set[str] = set()
    for _, _, lab, tid in cand:
        if lab in out or tid in used:
            continue
        out[lab] = tid
        used.add(tid)
    nums = [int(m.group(1)) for t in old for m in [re.fullmatch(rf"{re.escape(prefix)}(\d+)", t)] if m]
    nxt = max(nums, default=0) + 1
    # deterministic numbering of new topics: by earliest member id order
    first = {lab: min(mem) for lab, mem in clusters.items()}
    for lab in sorted(clusters, key=lambda lab: (first[lab], lab)):
        if lab not in out:
            out[lab] = f"{prefix}{nxt:06d}"
            nxt += 1
    return out


class TopicIndex:
    """Incremental assignment between re-clusterings: nearest topic above the threshold, with place
    and time compatibility, else a new topic. Centroids are running means; the periodic re-clustering
    (``TopicBuilder.fit`` with ``previous=``) repairs whatever drift this introduces.
    """

    def __init__(self, builder: TopicBuilder, id_prefix: str = "T") -> None:
        b = builder
        self.sim = b.sim_
        self.lexvec = b.lexvec_
        self.gist_tokens = b.config.gist_tokens
        self.prefix = id_prefix
        pos = {m: i for i, m in enumerate(b.msgs_["id"])}
        self.ids: list[str] = []
        self.count: list[int] = []
        self.place, self.last_day = [], []
        self.mentions: list[frozenset[str]] = []   # places the topic's messages name (most common five)
        self.petitions: list[int] = []   # how many of each topic's messages are individual petitions
        days = b.points_.day
        pet = b.points_.petition if b.points_.petition is not None else np.zeros(len(days), dtype=bool)
        for t in b.topics_:
            idx = [pos[m] for m in t.members]
            self.ids.append(t.id)
            self.count.append(len(idx))
            self.petitions.append(int(pet[idx].sum()))
            self.place.append(t.place)
            self.mentions.append(frozenset(t.places))
            self.last_day.append(float(days[idx].max()))
        dim = b.emb_.shape[1] if b.emb_.ndim == 2 else 0
        if b.topics_:
            M = b._membership()
            self.E = np.asarray(M @ b.emb_, dtype=np.float32)
            self.L = sp.csr_matrix(M @ b.lex_)
        else:
            self.E = np.zeros((0, dim), np.float32)
            self.L = sp.csr_matrix((0, len(self.lexvec.vocabulary_)))
        self._norm()
        nums = [int(m.group(1)) for t in self.ids for m in [re.fullmatch(rf"{re.escape(id_prefix)}(\d+)", t)] if m]
        self.next = max(nums, default=0) + 1

    def _norm(self) -> None:
        # growable buffers: appending a topic must not copy 100k centroids
        n = len(self.ids)
        cap = max(64, int(n * 1.5))
        E = np.zeros((cap, self.E.shape[1]), np.float32)
        E[:n] = self.E
        self.E = E
        norms = np.linalg.norm(E[:n], axis=1, keepdims=True)
        norms[norms == 0] = 1
        self.En = np.zeros_like(E)
        self.En[:n] = E[:n] / norms
        # the lexical means, column-major (an inverted index); rows of topics opened since, and the
        # rows of messages that joined a topic since, are kept aside until there are enough to fold in
        self.Lc = sp.csr_matrix(self.L).tocsc()
        self._l_count = np.asarray(self.count, dtype=np.float64)   # members behind each mean row
        self._new_lex: list[sp.csr_matrix] = []
        self._joined: list[tuple[int, sp.csr_matrix]] = []
        # the rows kept aside, stacked as far as the last message read them (both lists only grow
        # until a fold): stacking up to 256 one-row matrices again for every message was most of a
        # submission's topic assignment
        self._new_stack: sp.csr_matrix | None = None
        self._joined_stack: sp.csr_matrix | None = None
        self._days = np.zeros(cap)  # last_day as an array: the time term is one vector operation
        self._days[:n] = self.last_day
        self._pshare = np.zeros(cap)  # each topic's share of individual petitions, likewise
        self._pshare[:n] = np.asarray(self.petitions, dtype=float) / np.maximum(np.asarray(self.count, dtype=float), 1.0)

    def _fold(self) -> None:
        """Fold the rows kept aside into the column-major means (a few hundred at a time)."""
        L = sp.vstack([self.Lc.tocsr(), *self._new_lex]).tocsr() if self._new_lex else self.Lc.tocsr()
        n = L.shape[0]
        cnt = np.concatenate([self._l_count, np.ones(n - len(self._l_count))])
        if self._joined:
            owner = np.array([k for k, _ in self._joined])
            rows = sp.vstack([r for _, r in self._joined]).tocsr()
            add = sp.csr_matrix((np.ones(len(owner)), (owner, np.arange(len(owner)))), shape=(n, len(owner))) @ rows
            more = np.bincount(owner, minlength=n).astype(np.float64)
            L = sp.diags(cnt / (cnt + more)) @ L + sp.diags(1.0 / (cnt + more)) @ add
            cnt = cnt + more
        self.Lc, self._l_count = sp.csr_matrix(L).tocsc(), cnt
        self._new_lex, self._joined = [], []
        self._new_stack = self._joined_stack = None

    @staticmethod
    def _stacked(rows: list[sp.csr_matrix], done: sp.csr_matrix | None) -> sp.csr_matrix:
        """``rows`` as one matrix, reusing ``done``, the stack of their first rows."""
        have = 0 if done is None else done.shape[0]
        if have == len(rows):
            return done
        return sp.vstack(([done] if have else []) + rows[have:], format="csr")

    def _lex_sims(self, lv: sp.csr_matrix) -> np.ndarray:
        """The message's mean lexical similarity to each topic's members (its dot product with their
        mean row): the same quantity average linkage merges on in :func:`triage.topics.cluster.cluster`.

        An inverted index: the means kept column-major, only the columns of the message's own n-grams
        are read (a full sparse x sparse product cost ~8 ms a message at 10k topics). A normalised
        centroid, as before, scored a spread-out topic higher than its members do on average: mixed
        topics drew more messages the more mixed they were.
        """
        if len(self._new_lex) + len(self._joined) > 256:
            self._fold()
        cols, vals = lv.indices, lv.data
        base = np.asarray(self.Lc[:, cols] @ vals).ravel() if self.Lc.shape[0] else np.zeros(0)
        if self._new_lex:
            self._new_stack = self._stacked(self._new_lex, self._new_stack)
            base = np.concatenate([base, np.asarray(self._new_stack[:, cols] @ vals).ravel()])
        if self._joined:
            n = len(base)
            cnt = np.concatenate([self._l_count, np.ones(n - len(self._l_count))])
            owner = np.array([k for k, _ in self._joined])
            self._joined_stack = self._stacked([r for _, r in self._joined], self._joined_stack)
            dots = np.asarray(self._joined_stack[:, cols] @ vals).ravel()
            more = np.bincount(owner, minlength=n)
            base = (cnt * base + np.bincount(owner, weights=dots, minlength=n)) / (cnt + more)
        return base

    def lexical(self, tokens: Sequence[str], places: Sequence[Sequence[str]]) -> list[sp.csr_matrix]:
        """The place-blind lexical rows of several messages in one vectoriser call (the service
        computes them for a batch of submissions before taking the index lock)."""
        docs = [gist_doc(_strip_places(t, list(ps)), self.gist_tokens) for t, ps in zip(tokens, places)]
        m = _l2_sparse(sp.csr_matrix(self.lexvec.transform(docs), dtype=np.float64))
        return [m[i] for i in range(m.shape[0])]

    def assign(self, text: str, tokens: str, emb: np.ndarray, place: str | None,
               submitted_at: pd.Timestamp, places: Sequence[str] = (),
               lex: sp.csr_matrix | None = None, petition: bool = False) -> tuple[str, float, bool]:
        """(topic id, similarity, is_new). Updates the index in place.

        ``places`` are all places named in the message (``place`` is the most specific); their
        tokens are left out of the lexical view, as in :meth:`TopicBuilder.fit`. ``lex`` is the
        message's row from :meth:`lexical`, when already computed. ``petition``: the message is an
        individual petition, which pays the clustering's ``petition_pair`` towards each petition
        among a topic's members (the mean, as average linkage would).
        """
        cfg = self.sim.cfg
        day = (pd.Timestamp(submitted_at) - pd.Timestamp("1970-01-01")).total_seconds() / 86400.0
        e = np.asarray(emb, dtype=np.float32)
        names = [*places, *([place] if place else [])]
        named = frozenset(names)
        lv = lex if lex is not None else self.lexical([tokens], [names])[0]
        n = len(self.ids)
        best, best_s = -1, -np.inf
        if n:
            # mean similarity to the members (their mean vector), as average linkage measures it
            s = cfg.w_semantic * (self.E[:n] @ e) + cfg.w_lexical * self._lex_sims(lv)
            s += self.sim.time_term(self._days[:n] - day)
            if petition and cfg.petition_pair:
                s -= cfg.petition_pair * self._pshare[:n]
            # place term only for the best candidates (string comparisons are the slow part)
            top = np.argpartition(-s, min(20, n) - 1)[:20] if n > 20 else np.arange(n)
            for k in top:
                v = s[k] + self.sim.place_term(place, self.place[k], named, self.mentions[k])
                if v > best_s:
                    best, best_s = int(k), float(v)
        if best >= 0 and best_s >= cfg.threshold:
            self._join(best, e, day, lv, petition)
            return self.ids[best], best_s, False
        tid = f"{self.prefix}{self.next:06d}"
        self.next += 1
        self._open(tid, e, lv, place, named, day, petition)
        return tid, float(best_s) if best >= 0 else 0.0, True

    def absorb(self, rows: Sequence[tuple]) -> None:
        """Count messages already stored in a topic: (topic id, tokens, embedding, place, time, places
        [, petition]).

        An index rebuilt in the background misses the messages stored while it was built; they are
        absorbed before it replaces the old one, so no topic of those seconds is forgotten. A topic
        the index does not know is opened under its stored id.
        """
        rows = list(rows)
        pos = {t: i for i, t in enumerate(self.ids)}
        # pandas gives NaN for a missing place
        places_of = [r[3] if isinstance(r[3], str) and r[3] else None for r in rows]
        names_of = [[*r[5], *([p] if p else [])] for r, p in zip(rows, places_of)]
        # every row's lexical vector in one vectoriser call (a call per row held the intake lock for
        # about a second when a rebuilt index absorbed the thousand messages stored meanwhile)
        lex = self.lexical([r[1] for r in rows], names_of) if rows else []
        for (tid, _tokens, emb, _place, submitted_at, _places, *rest), place, names, lv in zip(rows, places_of, names_of, lex):
            petition = bool(rest[0]) if rest else False
            day = (pd.Timestamp(submitted_at) - pd.Timestamp("1970-01-01")).total_seconds() / 86400.0
            e = np.asarray(emb, dtype=np.float32)
            if tid in pos:
                self._join(pos[tid], e, day, lv, petition)
                continue
            pos[tid] = len(self.ids)
            self._open(tid, e, lv, place, frozenset(names), day, petition)

    def _join(self, k: int, e: np.ndarray, day: float, lv: sp.csr_matrix | None = None, petition: bool = False) -> None:
        if lv is not None:
            self._joined.append((k, lv))
        self.petitions[k] += int(petition)
        self._pshare[k] = self.petitions[k] / (self.count[k] + 1)
        c = self.count[k]
        self.E[k] = (self.E[k] * c + e) / (c + 1)
        self.En[k] = self.E[k] / (np.linalg.norm(self.E[k]) or 1)
        self.count[k] = c + 1
        self.last_day[k] = max(self.last_day[k], day)
        self._days[k] = self.last_day[k]

    def _open(self, tid: str, e: np.ndarray, lv: sp.csr_matrix, place: str | None, named: frozenset[str],
              day: float, petition: bool = False) -> None:
        n = len(self.ids)
        if n >= len(self.E):
            grow = np.zeros((len(self.E), self.E.shape[1]), np.float32)
            self.E, self.En = np.vstack([self.E, grow]), np.vstack([self.En, grow])
        self.E[n] = e
        self.En[n] = e / (np.linalg.norm(e) or 1)
        self.ids.append(tid)
        self.count.append(1)
        self.petitions.append(int(petition))
        self.place.append(place)
        self.mentions.append(named)
        self.last_day.append(day)
        if n >= len(self._days):
            self._days = np.concatenate([self._days, np.zeros(len(self._days) + 1)])
            self._pshare = np.concatenate([self._pshare, np.zeros(len(self._pshare) + 1)])
        self._days[n] = day
        self._pshare[n] = float(petition)
        self._new_lex.append(lv)
