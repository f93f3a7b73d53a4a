"""The array n-gram counter gives exactly scikit-learn's tf-idf features, and the batch columns
exactly the per-row assessments: speed-ups that change no result."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from triage.assess.ngrams import NgramCounter, fast_transformer
from triage.text.ngram_counts import char_ngram_counts, count_char_wb, counts_char_wb_supported, word_counts

ODD = ["", "a", "İstanbul ＡＢＣ Abc", "  多个   空格\n\n换行\t制表", "😡😡😡 emoji", "x" * 7, "没有 见过 的 词",
       "〔手机号〕 联系", "\udcff坏字节"]


def _same(a, b) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.data, b.data)  # bit for bit, not approximately


@pytest.mark.parametrize("kind", ["char", "word"])
def test_the_counter_reproduces_the_fitted_vectorizer_bit_for_bit(corpus, kind):
    from triage.text.normalise import tokens

    texts = (corpus["title"] + "\n" + corpus["text"]).tolist()
    if kind == "char":
        vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2,
                              max_features=20000, dtype=np.float32)
        docs = texts
    else:
        vec = TfidfVectorizer(token_pattern=r"\S+", lowercase=False, ngram_range=(1, 2), sublinear_tf=True,
                              max_features=15000, dtype=np.float32)  # truncated: some bigrams outlive a unigram
        docs = [" ".join(tokens(t)) for t in texts]
    vec.fit(docs[: len(docs) // 2])
    unseen = docs[len(docs) // 2:] + ODD
    assert NgramCounter.supports(vec)
    _same(vec.transform(unseen), NgramCounter(vec).transform(unseen))


@pytest.mark.parametrize("ngram_range,lowercase", [((2, 3), True), ((1, 3), False), ((1, 1), True), ((3, 3), True)])
def test_char_wb_fit_counts_are_scikit_learns(corpus, ngram_range, lowercase):
    """The topics' lexical fit (character n-grams inside words): the same sorted vocabulary and the
    same count matrix as CountVectorizer's, bit for bit, odd texts included (one-character words,
    astral characters, runs of whitespace, a lone surrogate, empty documents)."""
    from sklearn.feature_extraction.text import CountVectorizer

    from triage.text.normalise import tokens

    docs = [" ".join(tokens(t)) for t in (corpus["title"] + "\n" + corpus["text"]).tolist()[:300]] + ODD
    docs += ["A b", "Ab  CD\u3000x ＡＢ", "𠀀𠀁 x 𠀀", "的 的 的", "灯\x00坏 \x00", "İ ẞ K"]
    cv = CountVectorizer(analyzer="char_wb", ngram_range=ngram_range, lowercase=lowercase, dtype=np.float32)
    expected = cv.fit_transform(docs).tocsr()
    expected.sort_indices()
    terms, counts = count_char_wb(docs, ngram_range, lowercase, np.float32)
    assert terms == cv.get_feature_names_out().tolist()
    _same(expected, counts)
    # and in scikit-learn's own order of each row's entries (first sighting), where sums must match it
    unsorted = CountVectorizer(analyzer="char_wb", ngram_range=ngram_range, lowercase=lowercase,
                               dtype=np.float32).fit_transform(docs).tocsr()
    _same(unsorted, count_char_wb(docs, ngram_range, lowercase, np.float32, seen_order=True)[1])


@pytest.mark.parametrize("ngram_range", [(2, 3), (1, 2), (3, 3)])
def test_char_ngram_counts_are_scikit_learns_up_to_the_order_of_columns(corpus, ngram_range):
    """Near-duplicates are found on these counts: the same documents' similarities (the Gram matrix,
    exact integers) and the same column totals as CountVectorizer(analyzer="char"), odd texts included."""
    from sklearn.feature_extraction.text import CountVectorizer

    docs = (corpus["title"] + "\n" + corpus["text"]).tolist()[:300] + ODD + ["ab", "A\n\nb  c\td", "𠀀𠀁x"]
    ours = char_ngram_counts(docs, ngram_range)
    theirs = CountVectorizer(analyzer="char", ngram_range=ngram_range).fit_transform(docs).tocsr().astype(np.float64)
    assert ours.shape == theirs.shape
    assert np.array_equal((ours @ ours.T).toarray(), (theirs @ theirs.T).toarray())
    assert sorted(np.asarray(ours.sum(0)).ravel()) == sorted(np.asarray(theirs.sum(0)).ravel())
    assert np.array_equal(np.asarray(ours.sum(1)).ravel(), np.asarray(theirs.sum(1)).ravel())


def test_word_counts_are_scikit_learns(corpus):
    """The topics' keywords count words (``\\S+``): the same sorted names and counts as CountVectorizer."""
    from sklearn.feature_extraction.text import CountVectorizer

    from triage.text.normalise import tokens

    docs = [" ".join(tokens(t)) for t in corpus["text"].tolist()[:300]] + ODD + ["A a Ä\u3000\x1cb\x85c", ""]
    cv = CountVectorizer(token_pattern=r"\S+", lowercase=False)
    expected = cv.fit_transform(docs).tocsr()
    expected.sort_indices()
    names, counts = word_counts(docs)
    assert names.tolist() == cv.get_feature_names_out().tolist()
    _same(expected, counts)
    with pytest.raises(ValueError):
        word_counts(["", "  "])


def test_char_wb_fit_applies_only_where_it_is_exact():
    ok = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 3), max_df=0.5)
    assert counts_char_wb_supported(ok)
    for bad in (TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)),     # a padded word can be shorter
                TfidfVectorizer(analyzer="char_wb", ngram_range=(0, 2)),
                TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 2)),
                TfidfVectorizer(analyzer="char_wb", max_features=10),        # scikit-learn's own cut
                TfidfVectorizer(analyzer="char", ngram_range=(2, 3)),
                TfidfVectorizer(analyzer="char_wb", strip_accents="unicode")):
        assert not counts_char_wb_supported(bad)


def test_vectorizers_it_cannot_reproduce_keep_scikit_learns_transform():
    vec = TfidfVectorizer(analyzer="char_wb").fit(["路灯坏了", "公交太少"])
    assert fast_transformer(vec) == vec.transform


def test_batch_columns_equal_the_per_row_assessments(corpus, small_model_dir):
    from triage.pipeline import Triage

    tri = Triage.load(small_model_dir)
    frame = corpus[["title", "text"]].head(400).copy()
    frame.loc[3, ["title", "text"]] = ["", ""]
    frame.loc[7, "text"] = "长" * 3000
    fast = tri.assess_frame(frame, ["title", "text"], max_chars=2500)
    slow = tri.assess_frame(frame, ["title", "text"], max_chars=2500, workers=2)  # the Assessment path
    assert fast.equals(slow)
    assert fast["triage_error"].notna().sum() == 2
