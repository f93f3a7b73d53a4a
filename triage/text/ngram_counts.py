"""Counting character and word n-grams of many texts at once with array operations, for fitting.

scikit-learn's vectorisers make a Python string of every n-gram and look each one up in a dict: on a
city's 5,000 real messages the topics' lexical fit alone took five seconds, and finding near-
duplicates inside topics (hashed n-grams) more. Here the texts become one array of character ids
(or a hash table of words), each n-gram an integer code, and the counts a sparse matrix built in one
go. Each function says which scikit-learn result it reproduces; ``tests/test_ngrams.py`` checks them.
(:mod:`triage.assess.ngrams` does the same for transforming with a fitted vocabulary.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

_WHITE_SPACES = re.compile(r"\s\s+")  # what scikit-learn's character analyzers collapse to one space
_MAX_CODEPOINT = 0x110000


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
        # where each distinct n-gram first occurs (pd.factorize numbers codes as they first appear:
        # where a number first exceeds every one before it); scikit-learn's stream runs word by word,
        # and in a word through the shorter n-grams first, so (word, n, position) orders first sightings
        if seen_order and len(inv):
            new_code = np.r_[True, inv[1:] > np.maximum.accumulate(inv)[:-1]]
            first = at[new_code]
            seen = (word_of[first] * (max_n - min_n + 1) + (n - min_n)) * (total + 1) + first
        else:
            seen = np.zeros(len(uniq), dtype=np.int64)
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
        # (the column selection that follows keeps each row's stored order, as scipy's does for scikit-learn)
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
