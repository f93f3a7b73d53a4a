"""The array n-gram counter gives exactly scikit-learn's tf-idf features, and the batch columns
exactly the per-row assessments: speed-ups that change no result."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from triage.assess.ngrams import NgramCounter, fast_transformer

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
