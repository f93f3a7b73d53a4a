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
