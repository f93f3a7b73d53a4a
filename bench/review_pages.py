"""The review page's queries at 1k and 100k stored messages: what a staff member waits for on each view.

    python bench/review_pages.py [--sizes 1000,100000] [--repeat 3]

A synthetic store (SQLite, bulk-inserted: suggestions with their assessment, one topic per 20
messages, a fifth of the messages individual petitions over 23 departments) is read by the queue
(``needs_review``), the petitions view (``petitions_by_department``) and the overview (``overview``).
Printed in one run for each size: the median seconds of each view, beside the plain baseline of
reading every row and filtering in Python (what the page did before the filters and limits moved
into SQL), and the ratio 100k / 1k.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from triage.office.review import needs_review, overview, petitions_by_department  # noqa: E402
from triage.store.database import Assessment, Correction, Store, Suggestion, Topic  # noqa: E402

log = logging.getLogger("bench.review_pages")
DEPTS = [f"部门{k}" for k in range(23)]
DOMAINS = ["交通运输", "教育", "城乡建设", "环境保护", "社会保障", "卫生健康", "社区治理"]


def build(url: str, n: int, seed: int = 0) -> Store:
    store = Store(url)
    rng = np.random.default_rng(seed)
    t0 = dt.datetime(2026, 1, 1)
    ntopics = max(1, n // 20)
    topics = [{"id": f"T{k:06d}", "label": f"议题{k}", "status": "candidate", "domain": DOMAINS[k % len(DOMAINS)],
               "size": 20, "submitters": 5, "heat": float(rng.random()), "keywords": [], "places": [],
               "heat_terms": {}, "scorecard": {}, "route_kind": "committee", "label_locked": False, "pinned": False,
               "stage": "", "route_reason": "", "created_at": t0, "updated_at": t0} for k in range(ntopics)]
    sugs, asses = [], []
    for i in range(1, n + 1):
        petition = rng.random() < 0.2
        sugs.append({"id": i, "receipt": f"YS{i:09d}", "created_at": t0, "submitted_at": t0 + dt.timedelta(minutes=5 * i),
                     "channel": "网上表单", "title": "", "raw_text": f"第{i}条留言：小区路灯坏了", "text": f"第{i}条留言：小区路灯坏了",
                     "tokens": "小区 路灯", "pii_kinds": [], "places": [], "support": 0, "submitter": f"u{i % 997}",
                     "body_hash": "", "route_kind": "department" if petition else "committee",
                     "route_name": DEPTS[i % len(DEPTS)] if petition else None,
                     "scope": "individual" if petition else "group", "domain": DOMAINS[int(rng.integers(len(DOMAINS)))],
                     "topic_id": topics[i % ntopics]["id"], "search_doc": ""})
        asses.append({"suggestion_id": i, "created_at": t0, "model_version": "bench", "domain": sugs[-1]["domain"],
                      "domain_confidence": float(rng.random()), "scope": sugs[-1]["scope"],
                      "scope_confidence": float(rng.random()), "route_kind": "committee", "route_reason": "",
                      "evidence": {}})
    with store.session() as s:
        s.execute(Topic.__table__.insert(), topics)
        for k in range(0, n, 20000):
            s.execute(Suggestion.__table__.insert(), sugs[k:k + 20000])
            s.execute(Assessment.__table__.insert(), asses[k:k + 20000])
        s.execute(Correction.__table__.insert(), [{"suggestion_id": i, "field": "domain", "value": "教育", "actor": "b",
                                                   "reason": "b", "created_at": t0} for i in range(1, n + 1, 50)])
    return store


# ---- the plain baseline: every row read, filtered in Python (the page before this change)
def all_rows_queue(store: Store, limit: int = 100, low: float = 0.5) -> list[int]:
    from sqlalchemy import select

    with store.session() as s:
        latest = {a.suggestion_id: a for a in s.execute(select(Assessment).order_by(Assessment.id)).scalars()}
        corrected = set(s.execute(select(Correction.suggestion_id)).scalars())
        rows = s.execute(select(Suggestion, Topic).outerjoin(Topic, Suggestion.topic_id == Topic.id)).all()
    out = []
    for sug, topic in rows:
        a = latest.get(sug.id)
        if a is None or sug.id in corrected:
            continue
        if a.domain_confidence < low or a.scope_confidence < low + 0.15 or (
                topic is not None and topic.domain and sug.domain and topic.domain != sug.domain and topic.size >= 2):
            out.append((1.0 - min(a.domain_confidence, a.scope_confidence), sug.id))
    return [i for _u, i in sorted(out, key=lambda x: (-x[0], x[1]))[:limit]]


def all_rows_petitions(store: Store, per_department: int = 20) -> dict:
    from sqlalchemy import select

    with store.session() as s:
        rows = s.execute(select(Suggestion).where(Suggestion.scope == "individual")
                         .order_by(Suggestion.submitted_at.desc())).scalars().all()
    groups = defaultdict(list)
    for r in rows:
        groups[r.route_name or "未分办"].append(r.id)
    return {d: v[:per_department] for d, v in groups.items()}


def all_rows_overview(store: Store, weeks: int = 12) -> dict:
    from sqlalchemy import select

    from triage.office.review import week_start

    with store.session() as s:
        sug = s.execute(select(Suggestion.submitted_at, Suggestion.domain, Suggestion.scope)).all()
        verdicts = s.execute(select(Topic.verdict, Topic.status).where(Topic.status != "merged")).all()
    end = week_start(max(r[0] for r in sug))
    by_week = defaultdict(lambda: [0] * weeks)
    for at, dom, _scope in sug:
        k = weeks - 1 - (end - week_start(at)).days // 7
        if 0 <= k < weeks:
            by_week[dom or "未分类"][k] += 1
    return {"by_domain": dict(by_week), "scopes": dict(Counter(sc for _a, _d, sc in sug)),
            "verdicts": dict(Counter(v for v, _ in verdicts))}


def timed(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,100000")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sizes = [int(x) for x in args.sizes.split(",")]
    views = {"queue (needs_review)": (lambda st: needs_review(st), all_rows_queue),
             "petitions by department": (lambda st: petitions_by_department(st), all_rows_petitions),
             "overview": (lambda st: overview(st), all_rows_overview)}
    res: dict[tuple[str, int], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="review_pages_") as tmp:
        for n in sizes:
            t = time.perf_counter()
            store = build(f"sqlite:///{Path(tmp) / f's{n}.db'}", n)
            log.info("store of %d messages built in %.1f s", n, time.perf_counter() - t)
            assert needs_review(store, limit=100) and [q.suggestion_id for q in needs_review(store)] == all_rows_queue(store)
            for name, (new, old) in views.items():
                res[name, n] = (timed(lambda: new(store), args.repeat), timed(lambda: old(store), args.repeat))
            store.engine.dispose()
    print(f"\n| view | {' | '.join(f'{n:,} msgs: SQL / all rows (s)' for n in sizes)} | {sizes[-1]:,} / {sizes[0]:,}: SQL, all rows |")
    print("|---|" + "---|" * (len(sizes) + 1))
    for name in views:
        cells = " | ".join(f"{res[name, n][0]:.3f} / {res[name, n][1]:.3f}" for n in sizes)
        a, b = res[name, sizes[-1]], res[name, sizes[0]]
        print(f"| {name} | {cells} | {a[0] / max(b[0], 1e-9):.0f}x, {a[1] / max(b[1], 1e-9):.0f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
