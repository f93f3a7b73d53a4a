"""Heat: a transparent score whose every term staff can see.

Distinct citizens first. Heat is **reach × timeliness**, written out as a sum so that staff can read
every term's share:

* *reach* (0..1) says how many people a topic speaks for: distinct submitters (the main term), net
  support (likes and co-signatures less oppositions) and the number of posts (near-duplicates
  collapsed; a small persistence term). Each is log-saturated and weighted; their weights sum to 1.
* *modifiers* (recency, growth, breadth, 五大原则 fit) can only take reach away: each costs at most its
  weight, in proportion to how far it is from ideal (a topic last heard of a year ago loses the whole
  recency weight of its reach). So a fresher or better-fitting topic wins among topics of similar
  reach, but no freshness makes one person's message outrank a problem three people raised.

A term's ``points`` are its contribution: reach terms add ``weight × scaled``; a modifier subtracts
``reach × weight × (1 − scaled)``; the points sum to the heat. Weights live in ``corpora/ranking.yaml``.
On a real city board, adding the modifiers to reach instead (the earlier design) put nine single
messages into the top 20 and none of the ten problems the most citizens raised
(``bench/real_topics.py``): recency and growth alone outweighed two more citizens.

**The order of a list** is :data:`RANK_ORDER`: distinct citizens first, then heat (support, recency,
growth, fit), then posts. Heat alone still let a fresh problem two people raised last week outrank one
three people raised last year (recency alone takes up to 30 % of reach, the modifiers together 70 %; one more citizen adds 21 %): on a
real city board three two-citizen topics of the last month sat in the top 20 above three-citizen
problems. Heat orders topics *within* one number of citizens, and staff read both on every row
("3 位群众 · 热度 0.23" above "2 位群众 · 热度 0.28"); a period filter gives what is hot this month.
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

#: terms that measure how many people a topic speaks for (weights sum to 1)
REACH = ("submitters", "support", "volume")
#: terms that can only take reach away (each at most its weight)
MODIFIERS = ("recency", "growth", "breadth", "principles")
TERMS = (*REACH, *MODIFIERS)
#: how staff read each term (the review page and exports show these, the API keeps the keys)
TERM_LABELS = {"volume": "留言量（持续反映）", "submitters": "群众人数", "support": "点赞与附议（减反对）", "recency": "新近程度",
               "growth": "增长", "breadth": "渠道与地点广度", "principles": "五大原则契合度"}


#: how every list of topics is ordered (CLI, store, review page, API, digests): these columns, each
#: descending. Distinct citizens first, as the mission says; heat decides among equal numbers of citizens.
RANK_ORDER = ("submitters", "heat", "size")


def rank_frame(topics: pd.DataFrame) -> pd.DataFrame:
    """``topics`` in :data:`RANK_ORDER`, with a 1-based ``rank`` column first (stable among equals)."""
    out = topics.sort_values(list(RANK_ORDER), ascending=False, kind="stable").reset_index(drop=True)
    if "rank" in out.columns:
        out = out.drop(columns="rank")
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out


def rank_order_by(model) -> tuple:
    """The same order as SQL ``ORDER BY`` clauses on a mapped class with those columns (the store's
    ``Topic``), for ``select(...).order_by(*rank_order_by(Topic), Topic.id)``."""
    return tuple(getattr(model, c).desc() for c in RANK_ORDER)


@dataclass
class HeatConfig:
    #: reach: distinct citizens carry it; posts add only a small persistence term, so one person's
    #: repeated complaint cannot outrank a problem many people raise. Modifiers: the most each can take.
    weights: dict[str, float] = field(default_factory=lambda: {
        "submitters": 0.7, "support": 0.2, "volume": 0.1,
        "recency": 0.3, "growth": 0.1, "breadth": 0.05, "principles": 0.25})
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
    if sum(cfg.weights[k] for k in REACH) <= 0:
        raise ConfigError(str(p), "weights", f"{'、'.join(REACH)} 的权重之和应大于 0")
    if sum(cfg.weights[k] for k in MODIFIERS) > 1:
        raise ConfigError(str(p), "weights", f"{'、'.join(MODIFIERS)} 的权重之和不应超过 1（否则热度可能为负）")
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
    w = {k: cfg.weights.get(k, 0.0) for k in TERMS}
    reach_w = sum(w[k] for k in REACH) or 1.0
    reach = sum(w[k] / reach_w * scaled[k] for k in REACH)
    points = {k: w[k] / reach_w * scaled[k] for k in REACH}
    points.update({k: -reach * w[k] * (1.0 - scaled[k]) for k in MODIFIERS})
    terms = {k: {"value": raw[k], "scaled": round(scaled[k], 4), "weight": w[k], "points": round(points[k], 4)}
             for k in TERMS}
    return Heat(round(max(0.0, sum(points.values())), 4), terms)


def reage(terms: dict[str, dict[str, float]], age_days: float, config: HeatConfig | None = None) -> Heat:
    """The heat of a topic nobody wrote to since ``terms`` were computed, now that its last message is
    ``age_days`` old: only the recency term moves (reach, breadth and fit are unchanged; growth waits
    for the next message or re-clustering, which recompute every term).

    A topic's heat is computed when a message joins it, at the store's clock of that moment. Without
    this, a topic last heard of two years ago kept the recency of the day it was fresh: replaying a
    city's year through the API, the staff list's top 20 filled with such two-person topics.
    """
    cfg = config or default_heat_config()
    out = {k: dict(v) for k, v in terms.items()}
    if "recency" not in out or any(k not in out for k in REACH):
        return Heat(round(max(0.0, sum(v.get("points", 0.0) for v in out.values())), 4), out)
    reach = sum(out[k]["points"] for k in REACH)
    scaled = 0.5 ** (max(0.0, age_days) / cfg.half_life_days)
    w = out["recency"].get("weight", cfg.weights.get("recency", 0.0))
    out["recency"].update(value=round(max(0.0, age_days), 1), scaled=round(scaled, 4),
                          points=round(-reach * w * (1.0 - scaled), 4))
    return Heat(round(max(0.0, sum(v["points"] for v in out.values())), 4), out)


def period_counts(times: pd.Series, now: pd.Timestamp, period_days: float) -> tuple[int, int]:
    t = pd.to_datetime(times, errors="coerce")
    return counts_by_age(((now - t).dt.total_seconds() / 86400.0).to_numpy(dtype=float), period_days)


def counts_by_age(age_days: np.ndarray, period_days: float) -> tuple[int, int]:
    """Messages in this period and in the one before, from their ages in days."""
    a = np.asarray(age_days, dtype=float)
    return int((a <= period_days).sum()), int(((a > period_days) & (a <= 2 * period_days)).sum())
