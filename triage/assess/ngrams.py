"""Counting a fitted vocabulary's n-grams with array operations instead of one dict lookup per n-gram.

scikit-learn's ``TfidfVectorizer.transform`` builds every n-gram of every document as a Python
string and looks it up in the vocabulary: for our character 1-3-grams about 400 strings per
message, a fifth of the batch path's time. Here each document becomes an array of unit ids (code
points for character n-grams, token ids for word n-grams), each n-gram an integer code computed
over the whole chunk at once, and the vocabulary a hash table of codes probed for all of them at
once. The counts matrix is the one scikit-learn builds (same entries, same order),
and the tf-idf weighting and normalisation are scikit-learn's own, applied to it, so the features
are identical, which ``tests/test_ngrams.py`` checks against ``TfidfVectorizer.transform``.

Vectorisers this does not cover (other analyzers, stop words, n-gram codes that would not fit in
64 bits) keep scikit-learn's path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

_WHITE_SPACES = re.compile(r"\s\s+")  # what scikit-learn's character analyzer collapses to one space
_MAX_CODEPOINT = 0x110000


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing multiplier


class _HashIndex:
    """A fixed integer → feature map as an open-addressing table, probed for many keys at once.

    ``np.searchsorted`` over a 60,000-entry sorted array costs a cache miss per level for each of a
    chunk's million n-grams; a table four times the key count, hashed by multiplication, answers most
    keys in one probe.
    """

    def __init__(self, codes: np.ndarray, feats: np.ndarray) -> None:
        bits = max(4, int(np.ceil(np.log2(max(1, len(codes)) * 4))))
        self.shift = np.uint64(64 - bits)
        self.mask = (1 << bits) - 1
        self.keys = np.full(1 << bits, -1, dtype=np.int64)
        self.vals = np.full(1 << bits, -1, dtype=np.int64)
        self.probes = 1
        for code, feat, h in zip(codes.tolist(), feats.tolist(), self._hash(codes).tolist()):
            p = 1
            while self.keys[h] != -1:
                h = (h + 1) & self.mask
                p += 1
            self.keys[h], self.vals[h] = code, feat
            self.probes = max(self.probes, p)

    def _hash(self, q: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return ((q.astype(np.uint64) * _GOLDEN) >> self.shift).astype(np.int64)

    def lookup(self, q: np.ndarray) -> np.ndarray:
        """The feature of each key, -1 where the key is not in the vocabulary."""
        out = np.full(len(q), -1, dtype=np.int64)
        h = self._hash(q)
        todo = np.arange(len(q))
        for _ in range(self.probes):
            k = self.keys[h]
            found = k == q[todo]
            out[todo[found]] = self.vals[h[found]]
            more = ~found & (k != -1)          # occupied by another key: look at the next slot
            todo, h = todo[more], (h[more] + 1) & self.mask
            if not len(todo):
                break
        return out


class NgramCounter:
    """Fast ``transform`` for a fitted ``TfidfVectorizer`` with a ``char`` or ``\\S+``-word analyzer."""

    def __init__(self, vec: TfidfVectorizer) -> None:
        self.vec = vec
        self.kind = vec.analyzer
        self.min_n, self.max_n = vec.ngram_range
        vocab: dict[str, int] = vec.vocabulary_
        self.n_features = len(vocab)
        if self.kind == "char":
            chars = sorted({c for t in vocab for c in t})
            self.char_ids = np.full(_MAX_CODEPOINT, -1, dtype=np.int64)
            self.char_ids[[ord(c) for c in chars]] = np.arange(len(chars))
            units = {t: [int(self.char_ids[ord(c)]) for c in t] for t in vocab}
            base = len(chars)
        else:
            words = sorted({w for t in vocab for w in t.split(" ")})
            self.word_ids = {w: i for i, w in enumerate(words)}
            units = {t: [self.word_ids[w] for w in t.split(" ")] for t in vocab}
            base = len(words)
        self.base = max(1, base)
        self.tables: dict[int, _HashIndex] = {}
        by_n: dict[int, tuple[list[int], list[int]]] = {}
        for term, us in units.items():
            codes, feats = by_n.setdefault(len(us), ([], []))
            codes.append(self._code(us))
            feats.append(vocab[term])
        for n, (codes, feats) in by_n.items():
            self.tables[n] = _HashIndex(np.asarray(codes, dtype=np.int64), np.asarray(feats, dtype=np.int64))

    @staticmethod
    def supports(vec: TfidfVectorizer) -> bool:
        """Whether this counter reproduces ``vec`` exactly (else scikit-learn's transform is used)."""
        if not hasattr(vec, "vocabulary_") or vec.stop_words is not None or vec.preprocessor is not None:
            return False
        if vec.tokenizer is not None or vec.strip_accents is not None or vec.binary or vec.input != "content":
            return False
        _, max_n = vec.ngram_range
        if vec.analyzer == "char":
            units = {c for t in vec.vocabulary_ for c in t}
        elif vec.analyzer == "word" and vec.token_pattern == r"\S+" and not vec.lowercase:
            units = {w for t in vec.vocabulary_ for w in t.split(" ")}
        else:
            return False
        return max(1, len(units)) ** max_n < 2**62  # every n-gram code fits in an int64

    def _code(self, units: list[int]) -> int:
        code = 0
        for u in units:
            code = code * self.base + u
        return code

    def _units(self, docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Unit ids of all documents end to end, and each document's start offset (plus the end)."""
        if self.kind == "char":
            lower = self.vec.lowercase
            docs = [_WHITE_SPACES.sub(" ", d.lower() if lower else d) for d in docs]
            lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
            cps = np.frombuffer("".join(docs).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
            units = self.char_ids[cps]
        else:
            get = self.word_ids.get
            ids: list[int] = []
            lengths = np.empty(len(docs), dtype=np.int64)
            for i, d in enumerate(docs):
                toks = d.split()
                lengths[i] = len(toks)
                ids.extend([get(t, -1) for t in toks])
            units = np.asarray(ids, dtype=np.int64)
        offsets = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return units, offsets

    def counts(self, docs: Iterable[str]) -> sp.csr_matrix:
        """The term-count matrix scikit-learn's ``CountVectorizer`` part would build."""
        docs = list(docs)
        units, offsets = self._units(docs)
        total = len(units)
        doc_of = np.repeat(np.arange(len(docs), dtype=np.int64), np.diff(offsets))
        doc_end = offsets[1:][doc_of] if total else np.zeros(0, dtype=np.int64)
        pos = np.arange(total, dtype=np.int64)
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        for n in range(self.min_n, self.max_n + 1):
            if n not in self.tables or total < n:
                continue
            m = total - n + 1
            valid = pos[:m] + n <= doc_end[:m]
            code = np.zeros(m, dtype=np.int64)
            for k in range(n):
                u = units[k:k + m]
                valid &= u >= 0
                code = code * self.base + np.where(u >= 0, u, 0)
            feat = self.tables[n].lookup(code[valid])
            hit = feat >= 0
            rows.append(doc_of[:m][valid][hit])
            cols.append(feat[hit])
        r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        # COO → CSR sums the repeated (document, feature) pairs into counts, sorted within each row
        X = sp.coo_matrix((np.ones(len(r), dtype=self.vec.dtype), (r, c)),
                          shape=(len(docs), self.n_features)).tocsr()
        X.sum_duplicates()
        X.sort_indices()
        return X

    def transform(self, docs: Iterable[str]) -> sp.csr_matrix:
        """``vec.transform(docs)``: our counts, scikit-learn's weighting and normalisation."""
        return self.vec._tfidf.transform(self.counts(docs), copy=False)


def fast_transformer(vec: TfidfVectorizer):
    """``vec.transform`` or an equivalent :class:`NgramCounter` where one applies."""
    return NgramCounter(vec).transform if NgramCounter.supports(vec) else vec.transform


def counts_char_wb_supported(vec: TfidfVectorizer) -> bool:
    """Whether :func:`count_char_wb` builds exactly what ``vec``'s own counting would: scikit-learn's
    ``char_wb`` analyzer with its default preprocessing, n-grams of at most three characters (a padded
    word is never shorter than that, so scikit-learn's short-word rule never applies) and no cap on
    the number of features (its cut is left to scikit-learn)."""
    min_n, max_n = vec.ngram_range
    return (vec.analyzer == "char_wb" and 1 <= min_n <= max_n <= 3 and vec.preprocessor is None and vec.strip_accents is None
            and vec.stop_words is None and vec.tokenizer is None and not vec.binary and vec.input == "content"
            and vec.max_features is None and vec.vocabulary is None)


def count_char_wb(docs: Iterable[str], ngram_range: tuple[int, int], lowercase: bool,
                  dtype=np.float64, seen_order: bool = False) -> tuple[list[str], sp.csr_matrix]:
    """The sorted vocabulary and the count matrix that ``CountVectorizer(analyzer="char_wb")`` builds
    when it fits ``docs`` (before its document-frequency limits), with array operations.

    scikit-learn pads each whitespace-separated word with a space on both sides and makes a Python
    string of every n-gram inside it: on a city's 5,000 real messages (their problem tokens) that fit
    was five seconds, a quarter of the clustering stage, and forked workers did not shorten it (the
    merge of their vocabularies cost what the split saved). Here all documents become one array of
    character ids, laid out exactly as the padded words (" w1  w2 "); an n-gram is one integer code,
    kept where it stays inside its word; the vocabulary is the distinct codes, decoded and sorted as
    scikit-learn sorts its terms. ``tests/test_ngrams.py`` checks the result against scikit-learn.

    Each row's entries are in column order, or with ``seen_order`` in the order scikit-learn stores
    them: by when the corpus first showed each n-gram. The values are the same; sums over a row
    (sparse products, later) add in that order, and float32 sums in another order can differ in
    their last bits.
    """
    min_n, max_n = ngram_range
    padded = []
    for d in docs:
        words = (d.lower() if lowercase else d).split()
        padded.append(" " + "  ".join(words) + " " if words else "")
    lengths = np.fromiter((len(p) for p in padded), dtype=np.int64, count=len(padded))
    cps = np.frombuffer("".join(padded).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    total = len(cps)
    doc_of = np.repeat(np.arange(len(padded), dtype=np.int64), lengths)
    # a word starts at a space that begins the text or follows a space (the previous word's pad)
    space = cps == ord(" ")
    start = space.copy()
    start[1:] &= space[:-1]
    word_of = np.cumsum(start)
    present = np.zeros(_MAX_CODEPOINT, dtype=bool)
    present[cps] = True
    chars = np.flatnonzero(present).astype(np.uint32)
    ids = np.cumsum(present, dtype=np.int64)            # 1-based: 0 is never a character
    units = ids[cps]
    base = len(chars) + 1
    # per n: distinct codes, each n-gram's code, its document, each distinct code's first sighting
    by_n: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for n in range(min_n, max_n + 1):
        m = max(total - n + 1, 0)
        inside = word_of[:m] == word_of[n - 1:]
        code = np.zeros(int(inside.sum()), dtype=np.int64)
        for k in range(n):
            code = code * base + units[k:k + m][inside]
        inv, uniq = pd.factorize(code, sort=False)   # hashing: a sort of ten million codes cost seconds
        inv = np.asarray(inv, dtype=np.int64)
        at = np.flatnonzero(inside)
        # where each distinct n-gram first occurs: scikit-learn's stream runs word by word, and in a
        # word through the shorter n-grams first, so (word, n, position) orders first sightings
        first = np.empty(len(uniq), dtype=np.int64)
        first[inv[::-1]] = at[::-1]
        seen = (word_of[first] * (max_n - min_n + 1) + (n - min_n)) * (total + 1) + first
        by_n.append((np.asarray(uniq, dtype=np.int64), inv, doc_of[:m][inside], seen))
    terms: list[str] = []
    for n, (uniq, _, _, _) in zip(range(min_n, max_n + 1), by_n):
        if not len(uniq):
            continue
        ids = np.empty((len(uniq), n), dtype=np.int64)   # each code's characters (1-based ids), first first
        rest = uniq.copy()
        for k in range(n - 1, -1, -1):
            ids[:, k] = rest % base
            rest //= base
        # decoded as UTF-32, not viewed as numpy strings: those drop a trailing U+0000
        flat = chars[ids - 1].astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")
        terms.extend(flat[k:k + n] for k in range(0, len(flat), n))
    order = sorted(range(len(terms)), key=terms.__getitem__)
    rank = np.empty(len(terms), dtype=np.int64)
    rank[np.asarray(order, dtype=np.int64)] = np.arange(len(terms), dtype=np.int64)
    rows, cols, first = [], [], 0
    for uniq, inv, doc, _ in by_n:
        rows.append(doc)
        cols.append(rank[first + inv])
        first += len(uniq)
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    X = sp.coo_matrix((np.ones(len(r), dtype=dtype), (r, c)), shape=(len(padded), len(terms))).tocsr()
    X.sum_duplicates()
    X.sort_indices()
    if seen_order and X.nnz:
        seen_rank = np.empty(len(terms), dtype=np.int64)   # by column: its first sighting's rank
        seen_rank[rank] = np.argsort(np.argsort(np.concatenate([b[3] for b in by_n]), kind="stable"), kind="stable")
        row_of = np.repeat(np.arange(X.shape[0], dtype=np.int64), np.diff(X.indptr))
        o = np.lexsort((seen_rank[X.indices], row_of))
        X = sp.csr_matrix((X.data[o], X.indices[o], X.indptr), shape=X.shape)
        X.has_sorted_indices = False
    return [terms[k] for k in order], X


def char_ngram_counts(docs: Iterable[str], ngram_range: tuple[int, int], lowercase: bool = True,
                      dtype=np.float64) -> sp.csr_matrix:
    """Counts of every character n-gram of each document, as scikit-learn's ``char`` analyzer cuts
    them (runs of whitespace collapsed to one space), one column per distinct n-gram in no particular
    order: for similarities between the documents themselves, where no vocabulary is kept.

    Near-duplicates inside a topic were found with ``HashingVectorizer``, whose Python n-gram strings
    and hashing took 11 of the 40 s that clustering 30,000 messages took; its columns also merged
    n-grams that collide in the hash. Here each n-gram is an integer code and its column the code's
    first appearance (``tests/test_ngrams.py`` checks the counts against scikit-learn's).
    """
    min_n, max_n = ngram_range
    texts = [_WHITE_SPACES.sub(" ", d.lower() if lowercase else d) for d in docs]
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    cps = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
    total = len(cps)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    doc_of = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
    rows, cols, first = [], [], 0
    for n in range(min_n, max_n + 1):
        m = max(total - n + 1, 0)
        inside = np.arange(m, dtype=np.int64) + n <= offsets[1:][doc_of[:m]]
        code = np.zeros(int(inside.sum()), dtype=np.int64)
        for k in range(n):   # code points are below 2**21: three of them fit in an int64
            code = (code << 21) | cps[k:k + m][inside]
        inv, uniq = pd.factorize(code, sort=False)
        rows.append(doc_of[:m][inside])
        cols.append(np.asarray(inv, dtype=np.int64) + first)
        first += len(uniq)
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    X = sp.coo_matrix((np.ones(len(r), dtype=dtype), (r, c)), shape=(len(texts), first)).tocsr()
    X.sum_duplicates()
    return X


def word_counts(docs: Iterable[str]) -> tuple[np.ndarray, sp.csr_matrix]:
    """``CountVectorizer(token_pattern=r"\\S+", lowercase=False)``'s fit on ``docs``: its sorted feature
    names and its count matrix, with a hash table of the words instead of a dict lookup per word
    (``\\S+`` finds exactly the words ``str.split`` makes: both stop at ``str.isspace`` characters).
    Raises scikit-learn's ValueError when there is no word at all."""
    split = [d.split() for d in docs]
    lengths = np.fromiter(map(len, split), dtype=np.int64, count=len(split))
    words = [w for ws in split for w in ws]
    if not words:
        raise ValueError("empty vocabulary; perhaps the documents only contain stop words")
    codes, uniq = pd.factorize(np.array(words, dtype=object), sort=False)
    order = np.argsort(uniq, kind="stable")   # distinct strings, compared as Python compares them
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[order] = np.arange(len(uniq), dtype=np.int64)
    rows = np.repeat(np.arange(len(split), dtype=np.int64), lengths)
    X = sp.coo_matrix((np.ones(len(words), dtype=np.int64), (rows, rank[codes])),
                      shape=(len(split), len(uniq))).tocsr()
    X.sum_duplicates()
    X.sort_indices()
    return np.asarray(uniq[order], dtype=object), X
