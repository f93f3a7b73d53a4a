"""Retraining from the corpus plus staff corrections, behind a held-out gate.

The gate compares like with like. The active model was trained on the whole corpus, so scoring it on
a corpus split would flatter it and no new model could ever win. Instead, both recipes are refit on
the same training part of a grouped split (whole topics held out): the *baseline* from the data the
active model had (corpus + the corrections it already included), the *candidate* from the corpus
plus every correction so far. Both are scored on the held-out part, corrections included. The
candidate is activated only if it is not worse on domain and scope macro-F1; it is then refit on
all the data and saved as a new model directory.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupShuffleSplit
from sqlalchemy import func, select

from triage.assess.classify import TextClassifierConfig, feature_config_from_manifest
from triage.config import corpora_dir
from triage.errors import TrainingDataError
from triage.assess.features import prepare_texts
from triage.assess.model import ModelBundle, TrainSpec, default_cues, default_scope_config, train_bundle
from triage.store.database import Correction, Store, Suggestion

log = logging.getLogger(__name__)


class NothingToLearn(TrainingDataError):
    """No staff correction since the active model: a retrain would relearn the same corpus."""


@dataclass
class RetrainConfig:
    data: Path | None = None          # labelled corpus (default: corpora/suggestions.csv)
    holdout: float = 0.2
    seed: int = 0
    tolerance: float = 0.0            # how much worse than the baseline still counts as "not worse"


def corrections_frame(store: Store, max_id: int | None = None) -> pd.DataFrame:
    """One row per corrected message: its latest corrected domain/scope (else the current one)."""
    with store.session() as s:
        q = select(Correction).order_by(Correction.id)
        if max_id is not None:
            q = q.where(Correction.id <= max_id)
        corr = list(s.execute(q).scalars())
        ids = sorted({c.suggestion_id for c in corr})
        rows = {r.id: r for r in s.execute(select(Suggestion).where(Suggestion.id.in_(ids))).scalars()} if ids else {}
    latest: dict[int, dict[str, str]] = {}
    for c in corr:
        latest.setdefault(c.suggestion_id, {})[c.field] = c.value
    out = []
    for sid, fields in latest.items():
        r = rows[sid]
        out.append({"title": r.title or "", "text": r.text, "domain": fields.get("domain", r.domain or ""),
                    "scope": fields.get("scope", r.scope or ""), "department": "",
                    "topic": f"_corr{r.topic_id or sid}"})
    return pd.DataFrame(out, columns=["title", "text", "domain", "scope", "department", "topic"])


def _labelled(cfg: RetrainConfig) -> pd.DataFrame:
    path = Path(cfg.data) if cfg.data else corpora_dir() / "suggestions.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    for c in ("title", "scope", "department", "topic"):
        if c not in df:
            df[c] = ""
    return df[["title", "text", "domain", "scope", "department", "topic"]]


def _macro(y: list[str], p: list[str]) -> float:
    return round(float(f1_score(y, p, labels=sorted(set(y)), average="macro", zero_division=0)), 4)


class Retrainer:
    def __init__(self, store: Store, active: ModelBundle, out_root: Path, config: RetrainConfig | None = None) -> None:
        self.store, self.active, self.out_root = store, active, Path(out_root)
        self.config = config or RetrainConfig()

    def _spec(self, frame: pd.DataFrame) -> TrainSpec:
        cfgs = self.active.manifest.get("configs", {})
        dept = frame["department"].tolist()
        return TrainSpec(
            domain=frame["domain"].tolist(), scope=frame["scope"].tolist(),
            department=dept if sum(bool(d) for d in dept) >= 10 else None,
            groups=[g or f"_row{i}" for i, g in enumerate(frame["topic"])],
            # the active model's own recipe (features, estimators), so a retrain changes the data only
            features=feature_config_from_manifest(cfgs.get("features"), embedding=self.active.encoder_spec,
                                                  cue_columns=(), embedding_columns=()),
            domain_config=TextClassifierConfig(**cfgs["domain"]) if cfgs.get("domain") else TextClassifierConfig(),
            scope_config=(TextClassifierConfig(**cfgs["scope"]) if cfgs.get("scope")
                          else default_scope_config()))

    def _prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        encoder = None
        if self.active.encoder_spec:
            from triage.embed.encoders import CachedEncoder, EmbeddingCache, get_encoder
            from triage.store.database import home_dir

            encoder = CachedEncoder(get_encoder(self.active.encoder_spec), EmbeddingCache(home_dir() / "embeddings.sqlite"))
        texts = [f"{t}\n{x}" if t else x for t, x in zip(frame["title"], frame["text"])]
        return prepare_texts(texts, self.active.cues, encoder)

    def _fit(self, frame: pd.DataFrame, prepared: pd.DataFrame, version: str | None = None) -> ModelBundle:
        return train_bundle(prepared, self._spec(frame), self.active.cues, evaluate=False,
                            source="corpus + staff corrections", version=version)

    @staticmethod
    def _score(b: ModelBundle, test: pd.DataFrame, ptest: pd.DataFrame) -> dict[str, float]:
        if test.empty:
            return {}
        row = {"domain_macro_f1": _macro(test["domain"].tolist(), list(b.domain.predict(b.transform(ptest))))}
        has = test["scope"] != ""
        if b.scope is not None and has.any():
            Xs = b.transform(ptest[has.to_numpy()].reset_index(drop=True))
            row["scope_macro_f1"] = _macro(test.loc[has, "scope"].tolist(), list(b.scope.predict(Xs)))
        return row

    def new_corrections(self) -> int:
        """Staff corrections made since the active model was trained: with none, there is nothing new to
        learn (the corpus alone made the active model)."""
        base_max = int(self.active.manifest.get("max_correction_id", 0))
        with self.store.session() as s:
            return int(s.execute(select(func.count()).select_from(Correction).where(Correction.id > base_max)).scalar_one())

    #: the stages a retraining job reports (see :meth:`run`)
    STAGES = ("读取语料与更正", "分词与脱敏", "训练基线", "训练候选模型", "留出集评估", "训练并保存新模型")

    def run(self, progress: Callable[[dict], None] | None = None) -> dict[str, Any]:
        """Refit, judge and (if not worse) save a new model. ``progress`` gets ``{"stage", "step",
        "steps", "messages", "seconds"}`` as each of :attr:`STAGES` ends: a retraining takes minutes."""
        cfg = self.config
        t0 = time.perf_counter()
        rows = 0

        def report(step: int) -> None:
            if progress is not None:
                progress({"stage": self.STAGES[step - 1], "step": step, "steps": len(self.STAGES),
                          "messages": rows, "seconds": round(time.perf_counter() - t0, 1)})
            log.info("重新训练：%s完成（%.1f 秒） / retraining: step %d of %d done", self.STAGES[step - 1],
                     time.perf_counter() - t0, step, len(self.STAGES))

        if not self.new_corrections():
            raise NothingToLearn("自现用模型训练以来没有新的人工更正，无需重新训练 / no staff corrections since the "
                                 "active model was trained: nothing new to learn")
        base_max = int(self.active.manifest.get("max_correction_id", 0))
        with self.store.session() as s:
            newest = s.execute(select(Correction.id).order_by(Correction.id.desc()).limit(1)).scalar_one_or_none() or 0
        corpus = _labelled(cfg)
        corr_all = corrections_frame(self.store)
        old_ids = set(corrections_frame(self.store, base_max)["text"]) if base_max else set()
        data = pd.concat([corpus.assign(_new=False),
                          corr_all.assign(_new=[t not in old_ids for t in corr_all["text"]])], ignore_index=True)
        data = data[(data["domain"] != "") & (data["text"] != "")].reset_index(drop=True)
        if data["domain"].nunique() < 2:
            raise TrainingDataError("训练数据只有一个领域，无法重新训练 / need at least two domains")
        rows = len(data)
        report(1)
        groups = [g or f"_row{i}" for i, g in enumerate(data["topic"])]
        tr, te = next(GroupShuffleSplit(n_splits=1, test_size=cfg.holdout, random_state=cfg.seed)
                      .split(data, groups=groups))
        prepared = self._prepare(data)
        report(2)
        train, test = data.iloc[tr].reset_index(drop=True), data.iloc[te].reset_index(drop=True)
        ptrain, ptest = prepared.iloc[tr].reset_index(drop=True), prepared.iloc[te].reset_index(drop=True)
        keep = ~train["_new"].to_numpy(dtype=bool)   # object dtype would make ~False == -1
        baseline = self._fit(train[keep].reset_index(drop=True), ptrain[keep].reset_index(drop=True))
        report(3)
        candidate = self._fit(train, ptrain)
        report(4)
        # The gate reads the held-out rows whose labels were already trusted (the corpus and earlier
        # corrections): the new corrections are what is being judged, so they cannot also be the
        # judge. Scored on them too, for staff to read ("new_corrections_heldout").
        ref = ~test["_new"].to_numpy(dtype=bool)
        if not ref.any():
            raise TrainingDataError("留出集中没有更正前已标注的留言，无法判断新模型是否更好 / the held-out part holds "
                                    "no row labelled before these corrections: nothing to judge the candidate on")
        scores: dict[str, dict[str, float]] = {}
        for name, b in (("baseline", baseline), ("candidate", candidate), ("active", self.active)):
            row = self._score(b, test[ref].reset_index(drop=True), ptest[ref].reset_index(drop=True))
            if (~ref).any():
                row["new_corrections_heldout"] = self._score(b, test[~ref].reset_index(drop=True),
                                                             ptest[~ref].reset_index(drop=True))
            scores[name] = row
        report(5)
        ok = all(scores["candidate"].get(k, 0) >= scores["baseline"].get(k, 0) - cfg.tolerance
                 for k in ("domain_macro_f1", "scope_macro_f1"))
        result: dict[str, Any] = {"scores": scores, "activated": False, "corrections": int(len(corr_all)),
                                  "new_corrections": int(data["_new"].sum()), "train_rows": int(len(train)),
                                  "heldout_rows": int(len(test)),
                                  "method": "GroupShuffleSplit by topic; baseline and candidate refit on the same "
                                            "training part; the gate reads the held-out rows labelled before these "
                                            "corrections (the new corrections cannot judge themselves); the active "
                                            "model saw the held-out corpus rows (score for reference)"}
        if not ok:
            result["reason"] = "新模型在留出集上不优于基线，未启用 / candidate scored worse on the held-out split"
            return result
        version = f"retrained-{dt.datetime.now(dt.timezone.utc):%Y%m%d%H%M%S}"
        final = self._fit(data, prepared, version=version)
        final.manifest["max_correction_id"] = int(newest)
        final.manifest["gate"] = scores
        out = final.save(self.out_root / version)
        report(6)
        result.update(activated=True, version=version, model_dir=str(out))
        return result
