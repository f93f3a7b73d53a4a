"""The review page's queries (filters, order and limits in SQL) against plain Python over every row."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest
from sqlalchemy import select

from triage.office.review import needs_review, overview, petitions_by_department
from triage.store.database import Correction, Suggestion, Topic

from .conftest import ROOT


@pytest.fixture(scope="module")
def office(tmp_path_factory):
    from service.runtime import Runtime, Settings

    home = tmp_path_factory.mktemp("rq")
    rt = Runtime(Settings(database_url=f"sqlite:///{home / 'rq.db'}", home=str(home), recluster_every=10_000,
                          recluster_quiet_s=0))
    demo = pd.read_csv(ROOT / "corpora" / "demo.csv", dtype=str, keep_default_na=False)
    rt.office.history.import_frame(demo, ["title", "text"])
    with rt.store.session() as s:   # one corrected message leaves the queue
        first = s.execute(select(Suggestion.id).order_by(Suggestion.id)).scalars().first()
        s.add(Correction(suggestion_id=first, field="domain", old_value=None, value="教育", actor="t", reason="r"))
    yield rt.office
    rt.close()


def _baseline():
    """bench/review_pages.py's plain baseline: every row read, filtered in Python (the page before)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("review_pages", ROOT / "bench" / "review_pages.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("low", [0.5, 0.9, 1.01])
def test_the_needs_review_queue_is_what_reading_every_row_gives(office, low):
    want = _baseline().all_rows_queue(office.store, limit=1000, low=low)
    got = needs_review(office.store, limit=1000, low=low)
    assert [q.suggestion_id for q in got] == want and all(q.reasons for q in got)
    assert [q.suggestion_id for q in needs_review(office.store, limit=3, low=low)] == want[:3]


def test_petitions_by_department_and_the_overview_are_what_reading_every_row_gives(office):
    with office.store.session() as s:
        rows = s.execute(select(Suggestion)).scalars().all()
        topics = s.execute(select(Topic.verdict, Topic.status).where(Topic.status != "merged")).all()
    want = _baseline().all_rows_petitions(office.store, per_department=2)
    got = petitions_by_department(office.store, per_department=2)
    assert {g["department"]: [m["id"] for m in g["messages"]] for g in got} == want
    assert {g["department"]: g["count"] for g in got} == dict(Counter(r.route_name or "未分办" for r in rows
                                                                     if r.scope == "individual"))
    ov = overview(office.store)
    assert ov["messages"] == len(rows)
    assert ov["scopes"] == dict(Counter(r.scope or "unknown" for r in rows))
    assert ov["verdicts"] == dict(Counter(v or "未评估" for v, _ in topics))
    assert sum(sum(v) for v in ov["by_domain"].values()) == len(rows)   # the demo spans under 12 weeks
