"""Turning messages into the model's input frame.

All models read one pandas frame built here, so that training and prediction can never prepare text
differently: ``text`` (normalised, PII-masked), ``tokens`` (jieba content tokens, space-joined) and
one ``cue_*`` column per scope-cue family. jieba runs once per message, whatever the number of
models reading the frame.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from triage.config import corpora_dir
from triage.errors import ConfigError
from triage.text.normalise import clean_many, tokens

CueLexicon = dict[str, list[str]]


def load_cues(path: str | Path | None = None) -> CueLexicon:
    """Read and compile-check ``scope_cues.yaml`` (file, key and bad pattern named on error)."""
    p = Path(path) if path else corpora_dir() / "scope_cues.yaml"
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(str(p), "(文件)", "文件不存在") from exc
    cues = (data or {}).get("cues")
    if not isinstance(cues, dict) or not cues:
        raise ConfigError(str(p), "cues", "应为非空映射：族名 → 正则表达式列表")
    out: CueLexicon = {}
    for fam, pats in cues.items():
        if not isinstance(pats, list) or not pats:
            raise ConfigError(str(p), f"cues.{fam}", "应为非空的正则表达式列表")
        for i, pat in enumerate(pats):
            try:
                re.compile(str(pat))
            except re.error as exc:
                raise ConfigError(str(p), f"cues.{fam}[{i}]", f"正则表达式无效：{exc}") from exc
        out[str(fam)] = [str(x) for x in pats]
    return out


class CueMatcher:
    """Counts cue-family matches; also reports the matched phrases as evidence."""

    def __init__(self, cues: Mapping[str, Sequence[str]]) -> None:
        self.cues = {k: list(v) for k, v in cues.items()}
        self._res = {k: re.compile("|".join(f"(?:{p})" for p in v)) for k, v in self.cues.items()}

    @property
    def columns(self) -> list[str]:
        return [f"cue_{k}" for k in self._res]

    def counts(self, text: str) -> list[float]:
        # log1p keeps a 600-character proposal from drowning the linear model in counts
        return [math.log1p(len(r.findall(text))) for r in self._res.values()]

    def matches(self, text: str) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for k, r in self._res.items():
            hits = list(dict.fromkeys(m.group(0) for m in r.finditer(text)))
            if hits:
                found[k] = hits[:6]
        return found


def join_columns(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """Title + body (or any columns) joined by a newline; empty and NaN parts are skipped."""
    parts = [frame[c].astype("string").fillna("").str.strip() for c in columns]
    joined = parts[0]
    for p in parts[1:]:
        joined = joined.str.cat(p, sep="\n").str.strip()
    return joined.fillna("")


#: below this many texts a process pool costs more than it saves (classification)
PARALLEL_MIN_TEXTS = 8000
#: the same for preparing texts: masking now runs the name NER (about 3 ms a message), so a pool of
#: two already pays at a few hundred texts. Measured on the real board, 2 cores (one process vs two):
#: 500 texts 3.4 → 2.3 s, 2,000 texts 12.5 → 8.1 s, 5,227 texts 25.8 → 12.4 s
PREPARE_PARALLEL_MIN = 500


def prepare_texts(raw: Iterable[object], cues: CueMatcher, encoder=None, workers: int = 1) -> pd.DataFrame:
    """The model input frame for raw texts (normalise → mask → tokenise → cue counts).

    With an ``encoder`` (:mod:`triage.embed.encoders`), the sentence embedding of the masked text is added as
    columns ``emb0 … embN`` for models trained with embedding features. ``workers > 1`` spreads the
    lexical part (jieba is pure Python and the bottleneck) over processes for large inputs; the
    encoder always runs here, once.
    """
    raw = list(raw)
    if workers > 1 and len(raw) >= PREPARE_PARALLEL_MIN:
        frame = _prepare_parallel(raw, cues, workers)
    else:
        frame = _prepare_lexical(raw, cues)
    if encoder is not None:
        rows_text = frame["text"].tolist()
        emb = encoder.encode(rows_text) if rows_text else np.zeros((0, encoder.dim), np.float32)
        frame = pd.concat([frame, pd.DataFrame(emb, columns=embedding_columns(emb.shape[1]))], axis=1)
    return frame


def _prepare_parallel(raw: list[object], cues: CueMatcher, workers: int) -> pd.DataFrame:
    from triage.parallel import chunked_map
    from triage.text.normalise import tokens as _warm

    _warm("预热")  # load jieba's dictionary before forking, so every worker inherits it
    return pd.concat(chunked_map(_prepare_lexical, raw, workers, cues), ignore_index=True)


def _prepare_lexical(raw: Sequence[object], cues: CueMatcher) -> pd.DataFrame:
    rows_text: list[str] = []
    rows_tok: list[str] = []
    rows_cue: list[list[float]] = []
    rows_pii: list[list[str]] = []
    for m in clean_many(raw):
        masked = m.text
        rows_pii.append(m.kinds)
        rows_text.append(masked)
        rows_tok.append(" ".join(tokens(masked)))
        rows_cue.append(cues.counts(masked))
    cue_arr = np.asarray(rows_cue, dtype=np.float64).reshape(len(rows_text), len(cues.columns))
    # one constructor for every column: inserting the cue columns one by one cost more than counting
    # them for a service batch of a few messages
    return pd.DataFrame({"text": rows_text, "tokens": rows_tok, "pii": rows_pii,
                         **{col: cue_arr[:, i] for i, col in enumerate(cues.columns)}})


def embedding_columns(dim: int) -> list[str]:
    return [f"emb{i}" for i in range(dim)]
