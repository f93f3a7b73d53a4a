"""One facade over the stages, used alike by the CLI, batch jobs and the service."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from triage.config import Taxonomy, default_taxonomy
from triage.errors import ModelError
from triage.assess.features import PARALLEL_MIN_TEXTS, join_columns, prepare_texts
from triage.assess.model import ModelBundle
from triage.judge.route import Router
from triage.schemas import Assessment
from triage.assess.scope import explain_scope

log = logging.getLogger(__name__)

#: Columns that ``assess_frame`` adds (in this order) to the caller's table.
OUTPUT_COLUMNS = ("domain", "domain_confidence", "domain_evidence", "scope", "scope_confidence",
                  "route_kind", "committee", "department", "route_reason")

MIN_CHARS = 2          # fewer meaningful characters than this is not a message
MAX_CHARS = 20000      # longer is almost certainly a pasted document or an attack


def validate_text(raw: object, max_chars: int = MAX_CHARS) -> str | None:
    """A clerk-readable reason why a cell is not a message, or None when it is one."""
    if raw is None or (isinstance(raw, float) and np.isnan(raw)):
        return "文本为空 / empty text"
    if not isinstance(raw, str):
        return f"文本不是文字（{type(raw).__name__}）/ not text"
    if len(raw) > max_chars:
        return f"文本过长（{len(raw)} 字符，上限 {max_chars}）/ text too long"
    meaningful = 0
    for c in raw:   # stops at the MIN_CHARS-th letter: counting every one was a fifth of classifying
        if c.isalpha():
            meaningful += 1
            if meaningful >= MIN_CHARS:
                return None
    return "文本为空或不含文字 / empty or no words" if raw.strip() else "文本为空 / empty text"


#: the loaded pipeline, visible to forked workers of :meth:`Triage._assess_parallel` (set only while
#: a pool runs; a per-process cache of the loaded model, like :mod:`triage.batch.runner`'s)
_FORKED: dict[str, "Triage"] = {}


def _assess_chunk(frame: pd.DataFrame, evidence: bool) -> list[Assessment]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # the processes already use every core
        return list(_FORKED["triage"]._assess(frame.reset_index(drop=True), evidence))


class Triage:
    """Load once, assess many: ``Triage.load().assess_texts([...])``."""

    def __init__(self, bundle: ModelBundle, taxonomy: Taxonomy | None = None) -> None:
        self.bundle = bundle
        self.taxonomy = taxonomy or default_taxonomy()
        self.router = Router(self.taxonomy)
        self.encoder = None
        if bundle.encoder_spec:  # the model was trained with sentence-embedding features
            from triage.embed.encoders import CachedEncoder, get_encoder

            asked = os.environ.get("TRIAGE_ENCODER")
            if asked and asked != bundle.encoder_spec:
                # its features are that encoder's vectors: another one would feed it numbers it never saw
                raise ModelError(f"模型 {bundle.version} 以句向量编码器 {bundle.encoder_spec!r} 训练，不能改用 "
                                 f"TRIAGE_ENCODER={asked!r}；请去掉该设置，或用该编码器重新训练模型 / the model was "
                                 f"trained with the {bundle.encoder_spec!r} encoder: unset TRIAGE_ENCODER or retrain")
            self.encoder = CachedEncoder(get_encoder(bundle.encoder_spec))

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str] | None = None, taxonomy: Taxonomy | None = None) -> "Triage":
        return cls(ModelBundle.load(model_dir or os.environ.get("TRIAGE_MODEL") or None), taxonomy)

    @property
    def version(self) -> str:
        return self.bundle.version

    def prepare(self, texts: Sequence[object], encoder=None, workers: int = 1) -> pd.DataFrame:
        """The model input frame (masked text, jieba tokens, cues, embeddings) for valid texts.

        Callers that also need the tokens (topic building) prepare once and pass the frame to
        :meth:`assess_texts`, so jieba runs once per message. ``encoder`` may replace the model's own
        when it is the same encoder (e.g. one with a persistent cache), never a different one: the
        classifier was trained on that encoder's space.
        """
        enc = self.encoder
        if enc is not None and encoder is not None and getattr(encoder, "name", None) == enc.name:
            enc = encoder
        return prepare_texts(texts, self.bundle.cues, enc, workers=workers)

    def assess_texts(self, texts: Sequence[object], evidence: bool = True,
                     prepared: pd.DataFrame | None = None, workers: int = 1,
                     max_chars: int = MAX_CHARS) -> list[Assessment]:
        """Assess each text; ``prepared`` (from :meth:`prepare`) covers the valid texts, in order."""
        out: list[Assessment | None] = [None] * len(texts)
        reasons = [validate_text(t, max_chars) for t in texts]
        good = [i for i, r in enumerate(reasons) if r is None]
        if prepared is not None and len(prepared) != len(good):
            raise ValueError("prepared frame does not match the valid texts")
        for i, reason in enumerate(reasons):
            if reason is not None:
                out[i] = Assessment(text="", domain=None, domain_confidence=0.0, domain_evidence=[], scope=None,
                                    scope_confidence=0.0, scope_cues={}, scope_evidence=[],
                                    route=self.router.route(None, None), model_version=self.version, error=reason)
        if good:
            frame = prepared if prepared is not None else self.prepare([texts[i] for i in good])
            results = (self._assess_parallel(frame, evidence, workers)
                       if workers > 1 and len(frame) >= PARALLEL_MIN_TEXTS else self._assess(frame, evidence))
            for i, a in zip(good, results):
                out[i] = a
        return [a for a in out if a is not None]

    def _assess_parallel(self, frame: pd.DataFrame, evidence: bool, workers: int) -> list[Assessment]:
        """Feature extraction and prediction over processes that inherit this loaded model (fork)."""
        from triage.parallel import can_fork, chunked_map

        if not can_fork():  # spawn would copy the model into every task
            return list(self._assess(frame, evidence))
        _FORKED["triage"] = self
        try:
            parts = chunked_map(_assess_chunk, frame, workers, evidence)
        finally:
            _FORKED.pop("triage", None)
        return [a for part in parts for a in part]

    def _columns(self, texts: Sequence[object], max_chars: int) -> dict[str, list]:
        """The columns of :meth:`assess_frame` without evidence, straight from the label arrays.

        The batch path: the same values as building an :class:`Assessment` per row (a test holds
        the two equal), without the per-row objects, and with routes shared by rows that route alike.
        """
        n = len(texts)
        reasons = [validate_text(t, max_chars) for t in texts]
        good = [i for i, r in enumerate(reasons) if r is None]
        cols: dict[str, list] = {c: [None] * n for c in (*OUTPUT_COLUMNS, "triage_error")}
        cols["domain_evidence"] = [""] * n
        cols["triage_error"] = reasons
        if not good:
            return cols
        b = self.bundle
        X = b.transform(self.prepare([texts[i] for i in good]))
        m = len(good)

        def labels(clf) -> tuple[list, list[float]]:
            if clf is None:
                return [None] * m, [0.0] * m
            prob = clf.predict_proba(X)
            return [str(v) for v in clf.classes_[prob.argmax(1)]], prob.max(1).tolist()

        dlab, dconf = labels(b.domain)
        slab, sconf = labels(b.scope)
        plab, pconf = labels(b.department)
        routes = self.router.route_many(dlab, slab, plab, pconf)
        for j, i in enumerate(good):
            r = routes[j]
            cols["domain"][i] = dlab[j]
            cols["domain_confidence"][i] = round(dconf[j], 4)
            cols["scope"][i] = slab[j]
            cols["scope_confidence"][i] = round(sconf[j], 4)
            cols["route_kind"][i] = r.kind
            cols["committee"][i] = r.name if r.kind == "committee" else None
            cols["department"][i] = r.name if r.kind == "department" else None
            cols["route_reason"][i] = r.reason
        return cols

    def _assess(self, frame: pd.DataFrame, evidence: bool) -> Iterable[Assessment]:
        b = self.bundle
        X = b.transform(frame)
        n = len(frame)
        dprob = b.domain.predict_proba(X)
        dlab, dconf = b.domain.classes_[dprob.argmax(1)], dprob.max(1)
        if b.scope is not None:
            sprob = b.scope.predict_proba(X)
            slab, sconf = b.scope.classes_[sprob.argmax(1)], sprob.max(1)
        else:
            slab, sconf = np.array([None] * n, dtype=object), np.zeros(n)
        if b.department is not None:
            pprob = b.department.predict_proba(X)
            plab, pconf = b.department.classes_[pprob.argmax(1)], pprob.max(1)
        else:
            plab, pconf = np.array([None] * n, dtype=object), np.zeros(n)
        dev = b.domain.evidence(X, list(dlab), b.names) if evidence else [[] for _ in range(n)]
        sev = (explain_scope(b.scope, b.cues, X, frame["text"].tolist(), list(slab), b.names)
               if (evidence and b.scope is not None) else None)
        texts, pii = frame["text"].tolist(), frame["pii"].tolist()
        for i in range(n):
            scope = None if slab[i] is None else str(slab[i])
            yield Assessment(
                text=texts[i],
                domain=str(dlab[i]), domain_confidence=round(float(dconf[i]), 4), domain_evidence=dev[i],
                scope=scope, scope_confidence=round(float(sconf[i]), 4),
                scope_cues=sev[i].cues if sev else {}, scope_evidence=sev[i].terms if sev else [],
                route=self.router.route(str(dlab[i]), scope, None if plab[i] is None else str(plab[i]), float(pconf[i])),
                pii_kinds=list(pii[i]), model_version=self.version,
            )

    def assess_frame(self, frame: pd.DataFrame, text_columns: Sequence[str], evidence: bool = False,
                     prepared: pd.DataFrame | None = None, workers: int = 1,
                     max_chars: int = MAX_CHARS) -> pd.DataFrame:
        """The caller's frame, every column and row order kept, with the assessment columns added."""
        texts = join_columns(frame, text_columns).tolist()
        # A cell that was not text in the source (e.g. a bare number) arrives as a string here;
        # validate_text rejects those with no letters.
        if not evidence and prepared is None and workers <= 1:
            out = frame.copy()
            for k, v in self._columns(texts, max_chars).items():
                out[k] = v
            return out
        results = self.assess_texts(texts, evidence=evidence, prepared=prepared, workers=workers,
                                    max_chars=max_chars)
        out = frame.copy()
        out["domain"] = [a.domain for a in results]
        out["domain_confidence"] = [a.domain_confidence if a.error is None else None for a in results]
        out["domain_evidence"] = ["、".join(t for t, _ in a.domain_evidence) for a in results]
        out["scope"] = [a.scope for a in results]
        out["scope_confidence"] = [a.scope_confidence if a.error is None else None for a in results]
        out["route_kind"] = [a.route.kind if a.error is None else None for a in results]
        out["committee"] = [a.route.name if a.route.kind == "committee" else None for a in results]
        out["department"] = [a.route.name if a.route.kind == "department" else None for a in results]
        out["route_reason"] = [a.route.reason if a.error is None else None for a in results]
        out["triage_error"] = [a.error for a in results]
        return out
