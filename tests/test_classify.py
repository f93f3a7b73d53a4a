"""The NBSVM classifier, its temperature calibration and the plain baseline beside it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from triage.assess.classify import (FeatureConfig, TextClassifier, TextClassifierConfig, fit_margins, fit_temperature,
                             nb_ratios)


@pytest.fixture(scope="module")
def features_and_labels(small_corpus):
    from triage.assess.classify import FeatureSpace, build_features
    from triage.assess.features import prepare_texts
    from triage.assess.model import default_cues

    frame = prepare_texts(small_corpus["text"].tolist(), default_cues())
    space = FeatureSpace.from_column_transformer(build_features(FeatureConfig()).fit(frame))
    return space.transform(frame), small_corpus["domain"].to_numpy(dtype=object), small_corpus["scope"].to_numpy(dtype=object)


def test_nb_ratio_is_positive_for_a_feature_only_the_class_has():
    X = sp.csr_matrix(np.array([[1, 0, 1], [1, 0, 1], [0, 1, 1], [0, 1, 1]], dtype=np.float32))
    r = nb_ratios(X, np.array([True, True, False, False]))
    assert r[0] > 0 > r[1] and abs(r[2]) < 1e-6


def test_nbsvm_weights_fold_the_nb_scaling_into_one_linear_model(features_and_labels):
    from sklearn.svm import LinearSVC

    X, y, _ = features_and_labels
    cfg = TextClassifierConfig(estimator="nbsvm")
    classes, coef, intercept = fit_margins(X, y, cfg)
    k = 3  # the third class's model, refitted by hand on the NB-scaled features
    pos = y == classes[k]
    r = nb_ratios(X, pos)
    svm = LinearSVC(C=cfg.C, class_weight=cfg.class_weight, max_iter=5000, random_state=cfg.seed)
    svm.fit(X.multiply(r).tocsr(), pos.astype(np.int8))
    expected = svm.decision_function(X.multiply(r).tocsr())
    got = np.asarray(X @ coef[k]).ravel() + intercept[k]
    assert np.allclose(expected, got, atol=1e-4)


def test_the_default_averages_the_nbsvm_and_plain_svm_margins(features_and_labels):
    X, y, _ = features_and_labels
    _, c1, b1 = fit_margins(X, y, TextClassifierConfig(estimator="nbsvm"))
    _, c2, b2 = fit_margins(X, y, TextClassifierConfig(estimator="linear_svc"))
    _, c, b = fit_margins(X, y, TextClassifierConfig())
    assert np.allclose(c, (c1 + c2) / 2) and np.allclose(b, (b1 + b2) / 2)


def test_temperature_softens_overconfident_margins():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    margins = rng.normal(size=(400, 3))
    margins[np.arange(400), y] += 1.0          # informative but noisy
    t = fit_temperature(margins * 20, y)       # the same margins blown up twentyfold
    assert t > 5


@pytest.mark.parametrize("which", ["domain", "scope"])
def test_calibrated_classifier_gives_probabilities_and_is_a_plain_logistic_model(features_and_labels, which):
    from sklearn.linear_model import LogisticRegression

    X, domain, scope = features_and_labels
    y = domain if which == "domain" else scope
    clf = TextClassifier(TextClassifierConfig(calibration_rounds=2)).fit(X, y)
    p = clf.predict_proba(X)
    assert type(clf.model_) is LogisticRegression and clf.calibrated_
    assert p.shape == (len(y), len(set(y))) and np.allclose(p.sum(axis=1), 1.0)
    assert (clf.predict(X) == y).mean() > 0.9  # it learnt its own training data


def test_a_label_with_one_example_trains_uncalibrated_and_says_so(features_and_labels):
    X, domain, _ = features_and_labels
    y = domain.copy()
    y[0] = "孤例"
    clf = TextClassifier().fit(X, y)
    assert not clf.calibrated_ and "孤例" in set(clf.classes_)


def test_cross_validation_reports_the_plain_baseline_on_the_same_folds(small_corpus):
    from triage.assess.baseline import plain_words
    from triage.assess.features import prepare_texts
    from triage.assess.model import cross_validate, default_cues

    cues = default_cues()
    frame = prepare_texts(small_corpus["text"].tolist(), cues)
    cfg = FeatureConfig(cue_columns=tuple(cues.columns))
    rep = cross_validate(frame, small_corpus["domain"].tolist(), None, cfg, TextClassifierConfig(), n_folds=3,
                         baseline_words=plain_words(frame["text"].tolist()))
    assert 0 <= rep["plain_baseline"]["macro_f1"] <= 1 and "LinearSVC" in rep["plain_baseline"]["recipe"]
    assert rep["n"] == len(small_corpus)


@pytest.mark.parametrize("seed", range(12))
def test_calibration_skips_a_fold_that_holds_out_a_whole_label_with_its_topic(seed):
    rng = np.random.default_rng(seed)
    y = np.array(["a"] * 40 + ["b"] * 40 + ["c"] * 12, dtype=object)
    groups = [f"g{i % 10}" for i in range(80)] + ["only-c"] * 12   # every "c" in one topic
    dense = rng.random((len(y), 30)) * (rng.random((len(y), 30)) < 0.3)
    dense[y == "c", 0] = 1.0
    X = sp.csr_matrix(dense)
    clf = TextClassifier(TextClassifierConfig(seed=seed)).fit(X, y, groups)
    assert clf.calibrated_ and clf.temperature_ != 1.0


def test_dense_columns_with_negative_values_are_not_scaled_as_words():
    X = sp.csr_matrix(np.array([[1, -0.5, 0.2], [1, 0.4, 0.1], [0, -0.3, 0.3], [0, 0.2, 0.0]], dtype=np.float32))
    r = nb_ratios(X, np.array([True, True, False, False]))
    assert r[1] == 1.0 and r[0] > 0


def test_an_old_manifest_keeps_its_cue_counts_and_ngram_ranges():
    from triage.assess.classify import feature_config_from_manifest

    old = {"word_ngrams": [1, 2], "char_ngrams": [1, 3], "char_min_df": 2,
           "cue_columns": ["cue_personal", "cue_remedy"], "embedding": None, "embedding_columns": []}
    cfg = feature_config_from_manifest(old)
    assert cfg.cue_features and cfg.word_ngrams == (1, 2) and cfg.cue_columns == ("cue_personal", "cue_remedy")
    assert not feature_config_from_manifest({**old, "cue_features": False}).cue_features


def test_a_loaded_model_keeps_its_weights_feature_major_with_the_same_probabilities(features_and_labels):
    """At load the weights are stored so that ``coef_.T`` is C-ordered (scipy copied the whole matrix
    on every call otherwise); the probabilities are bit-for-bit those of the usual layout."""
    X, y, _ = features_and_labels
    fitted = TextClassifier(TextClassifierConfig()).fit(X, y)
    usual = fitted.predict_proba(X[:8])
    assert fitted.model_.coef_.flags["C_CONTIGUOUS"]
    loaded = TextClassifier.from_fitted(fitted.model_, TextClassifierConfig())
    assert loaded.model_.coef_.T.flags["C_CONTIGUOUS"]
    assert np.array_equal(loaded.predict_proba(X[:8]), usual)
    assert loaded.evidence(X[:2], list(loaded.classes_[[0, 0]]), np.array([f"f{i}" for i in range(X.shape[1])]))
