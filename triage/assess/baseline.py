"""The plain baseline every classifier of ours is measured against.

TF-IDF over plain ``jieba.lcut`` words and characters 1-3, sklearn's defaults, a default
``LinearSVC``: what any engineer would try first. ``triage train`` reports its cross-validated score
beside the model's own (same folds), and ``bench/real_classify.py`` runs it beside triage on real
messages, so an office sees what the model buys it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp


def plain_words(texts: Sequence[str]) -> list[str]:
    """Space-joined ``jieba.lcut`` of each text: jieba's own dictionary, nothing removed."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return [" ".join(jieba.lcut(str(t))) for t in texts]


class PlainBaseline:
    """TF-IDF (words from :func:`plain_words` + characters 1-3) and a default LinearSVC."""

    def __init__(self) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.svm import LinearSVC

        self.words = TfidfVectorizer(token_pattern=r"\S+")
        self.chars = TfidfVectorizer(analyzer="char", ngram_range=(1, 3))
        self.svm = LinearSVC()

    def _x(self, words: Sequence[str], texts: Sequence[str], fit: bool) -> sp.csr_matrix:
        if fit:
            return sp.hstack([self.words.fit_transform(words), self.chars.fit_transform(texts)]).tocsr()
        return sp.hstack([self.words.transform(words), self.chars.transform(texts)]).tocsr()

    def fit(self, words: Sequence[str], texts: Sequence[str], y: Sequence[str]) -> "PlainBaseline":
        self.svm.fit(self._x(words, texts, True), np.asarray(y, dtype=object))
        self.classes_ = self.svm.classes_
        return self

    def decision_function(self, words: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        return self.svm.decision_function(self._x(words, texts, False))

    def predict(self, words: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        return self.svm.predict(self._x(words, texts, False))
