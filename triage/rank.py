"""Heat: a transparent score whose every term staff can see.

Each term is scaled to 0..1 (log saturation for counts, half-life decay for recency) and multiplied
by its weight from ``corpora/ranking.yaml``; heat is their sum. Nothing else enters the ranking.
People, not posts: distinct submitters are the main volume term, the number of posts (near-duplicates
collapsed) a small persistence term, and support is likes and co-signatures less oppositions; resending
the same text adds nothing (it is counted, and a campaign flagged, in the topic itself).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from triage.config import corpora_dir
from triage.errors import ConfigError

TERMS = ("volume", "submitters", "support", "recency", "growth", "breadth", "principles")
#: how staff read each term (the review page and exports show these, the API keeps the keys)
TERM_LABELS = {"volume": "留言量（持续反映）", "submitters": "群众人数", "support": "点赞与附议（减反对）", "recency": "新近程度",
               "growth": "增长", "breadth": "渠道与地点广度", "principles": "五大原则契合度"}


@dataclass
class HeatConfig:
    #: distinct citizens carry the volume; posts add only a small persistence term, so one person's
    #: repeated complaint cannot outrank a problem many people raise
    weights: dict[str, float] = field(default_factory=lambda: {
        "volume": 0.05, "submitters": 0.35, "support": 0.1, "recency": 0.15, "growth": 0.1, "breadth": 0.1,
        "principles": 0.15})
    half_life_days: float = 30.0
    period_days: float = 30.0
    saturation: dict[str, float] = field(default_factory=lambda: {"volume": 10, "submitters": 10, "support": 100,
                                                                  "breadth": 6})


def load_heat_config(path: str | Path | None = None) -> HeatConfig:
    p = Path(path) if path else corpora_dir() / "ranking.yaml"
    if not p.exists():
        return HeatConfig()
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    cfg = HeatConfig()
    w = data.get("weights") or {}
    unknown = set(w) - set(TERMS)
    if unknown:
        raise ConfigError(str(p), "weights", f"未知的热度项 {', '.join(sorted(unknown))}（可用：{', '.join(TERMS)}）")
    for k, v in w.items():
        if not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(str(p), f"weights.{k}", "权重应为非负数")
    cfg.weights.update({k: float(v) for k, v in w.items()})
    cfg.half_life_days = float(data.get("half_life_days", cfg.half_life_days))
    cfg.period_days = float(data.get("period_days", cfg.period_days))
    cfg.saturation.update({k: float(v) for k, v in (data.get("saturation") or {}).items()})
    return cfg


@functools.lru_cache(maxsize=1)
def default_heat_config() -> HeatConfig:
    return load_heat_config()


def _sat(x: float, at: float) -> float:
    """log saturation: 0 at 0, ~0.9 at ``at``, approaching 1."""
    if x <= 0:
        return 0.0
    return min(1.0, 0.9 * math.log1p(x) / math.log1p(at))


@dataclass
class Heat:
    score: float
    terms: dict[str, dict[str, float]]   # term → {"value": raw, "scaled": 0..1, "weight": w, "points": w*scaled}


def heat(*, voices: int, submitters: int, support: int, last_seen: pd.Timestamp | None,
         this_period: int, previous_period: int, channels: int, places: int, principle_score: float,
         now: pd.Timestamp, config: HeatConfig | None = None) -> Heat:
    cfg = config or default_heat_config()
    age = max(0.0, (now - last_seen).total_seconds() / 86400.0) if last_seen is not None and not pd.isna(last_seen) else 365.0
    growth_raw = (this_period - previous_period) / (previous_period + 1)
    raw = {
        "volume": float(voices), "submitters": float(submitters), "support": float(support),
        "recency": round(age, 1), "growth": round(growth_raw, 3), "breadth": float(channels + places),
        "principles": round(principle_score, 3),
    }
    scaled = {
        "volume": _sat(voices, cfg.saturation["volume"]),
        "submitters": _sat(submitters, cfg.saturation["submitters"]),
        "support": _sat(support, cfg.saturation["support"]),
        "recency": 0.5 ** (age / cfg.half_life_days),
        "growth": max(0.0, min(1.0, 0.5 + growth_raw / 4)),
        "breadth": _sat(channels + places, cfg.saturation["breadth"]),
        "principles": max(0.0, min(1.0, principle_score)),
    }
    terms = {k: {"value": raw[k], "scaled": round(scaled[k], 4), "weight": cfg.weights.get(k, 0.0),
                 "points": round(cfg.weights.get(k, 0.0) * scaled[k], 4)} for k in TERMS}
    return Heat(round(sum(t["points"] for t in terms.values()), 4), terms)


def period_counts(times: pd.Series, now: pd.Timestamp, period_days: float) -> tuple[int, int]:
    t = pd.to_datetime(times, errors="coerce")
    return counts_by_age(((now - t).dt.total_seconds() / 86400.0).to_numpy(dtype=float), period_days)


def counts_by_age(age_days: np.ndarray, period_days: float) -> tuple[int, int]:
    """Messages in this period and in the one before, from their ages in days."""
    a = np.asarray(age_days, dtype=float)
    return int((a <= period_days).sum()), int(((a > period_days) & (a <= 2 * period_days)).sum())
