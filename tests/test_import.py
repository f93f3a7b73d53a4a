"""A history import: batches analysed on every core, rows written in bulk, one re-clustering at the end.

The import must store exactly what intake would have stored for the same rows (masked text, tokens,
domain, scope, places), report each row it cannot store with its line, and leave every stored row in
a topic once it returns.
"""

from __future__ import annotations

import logging

import pandas as pd
import pytest
from sqlalchemy import func, select

from triage.office.common import Intake
from triage.office.office import Office
from triage.pipeline import Triage
from triage.store.database import Assessment, Store, Suggestion, Topic


@pytest.fixture(scope="module")
def history(corpus: pd.DataFrame) -> pd.DataFrame:
    """40 corpus messages with a title, a time and a submitter, and two rows that cannot be stored."""
    rows = corpus.groupby("domain").head(3).head(40).reset_index(drop=True)
    frame = pd.DataFrame({"标题": rows["title"], "内容": rows["text"],
                          "留言时间": pd.date_range("2026-03-01", periods=len(rows), freq="D").astype(str),
                          "留言用户": [f"u{k % 25}" for k in range(len(rows))]})
    bad = pd.DataFrame({"标题": ["空", "太早"], "内容": ["", "村里的路灯坏了半年没人修，晚上出行很不方便"],
                        "留言时间": ["2026-03-05", "1890-01-01"], "留言用户": ["x", "y"]})
    # the bad rows in the middle: lines 12 and 13 of the file (the header is line 1)
    return pd.concat([frame.iloc[:10], bad, frame.iloc[10:]], ignore_index=True)


def test_an_import_stores_what_intake_would_and_leaves_every_row_in_a_topic(db_url, small_model_dir, history,
                                                                            caplog, tmp_path) -> None:
    tri = Triage.load(small_model_dir)
    office = Office(Store(db_url), tri)
    seen: list[dict] = []
    office.history.IMPORT_BATCH = 16   # several batches on a small file
    try:
        with caplog.at_level(logging.WARNING, logger="triage.office.history"):
            res = office.history.import_frame(history, ["标题", "内容"], progress=seen.append)
        assert res == {"stored": 40, "failed": 2}
        refused = [r.getMessage() for r in caplog.records if "未导入" in r.getMessage()]
        assert len(refused) == 2 and refused[0].startswith("第 12 行") and refused[1].startswith("第 13 行")
        batches = [p for p in seen if p["stage"] == "分析与写入"]
        assert [p["done"] for p in batches] == [16, 32, 42] and {p["total"] for p in batches} == {42}
        assert seen[-1]["stage"] == "写入议题" and seen[-1]["step"] == seen[-1]["steps"]
        with office.store.session() as s:
            rows = s.execute(select(Suggestion).order_by(Suggestion.id)).scalars().all()
            assert len(rows) == 40 and all(r.topic_id for r in rows)
            assert len({r.receipt for r in rows}) == 40
            assert s.execute(select(func.count()).select_from(Assessment)).scalar_one() == 40
            assert {r.topic_id for r in rows} <= set(s.execute(select(Topic.id)).scalars())
            imported = {r.raw_text: (r.text, r.tokens, r.domain, r.scope, r.place, r.submitter, r.title)
                        for r in rows}
    finally:
        office.close()

    # the same rows through intake, one at a time, into another store: the same analysis
    other = Office(Store(f"sqlite:///{tmp_path / 'intake.db'}"), tri)
    try:
        for r in history.drop(index=[10, 11]).itertuples():
            row, _, _ = other.intake.submit(Intake(text=r.内容, title=r.标题, submitter=r.留言用户,
                                            submitted_at=pd.Timestamp(r.留言时间).to_pydatetime()),
                                     auto_recluster=False)
            assert imported[r.内容] == (row.text, row.tokens, row.domain, row.scope, row.place, row.submitter,
                                       row.title)
    finally:
        other.close()


def test_a_row_too_long_with_its_title_is_refused_with_its_line_and_the_rest_is_stored(small_model_dir, tmp_path,
                                                                                    caplog) -> None:
    from triage.pipeline import MAX_CHARS

    body = "村里的路灯坏了半年没人修，晚上出行很不方便。" * (MAX_CHARS // 22)
    body = body[:MAX_CHARS - 10]
    frame = pd.DataFrame({"标题": ["路灯", "很长的标题" * 10, "垃圾"],
                          "内容": ["村里的路灯坏了半年没人修", body, "小区门口的垃圾三天没人清运"]})
    office = Office(Store(f"sqlite:///{tmp_path / 'long.db'}"), Triage.load(small_model_dir))
    try:
        with caplog.at_level(logging.WARNING, logger="triage.office.history"):
            res = office.history.import_frame(frame, ["标题", "内容"], lines=[2, 5, 9])
    finally:
        office.close()
    assert res == {"stored": 2, "failed": 1}
    refused = [r.getMessage() for r in caplog.records if "未导入" in r.getMessage()]
    assert len(refused) == 1 and refused[0].startswith("第 5 行") and "过长" in refused[0]


def test_a_history_row_about_an_accepted_topic_joins_it(small_model_dir, history, tmp_path) -> None:
    """A re-clustering leaves decided topics alone: with one in the store, rows are placed as intake
    places them, so the accepted topic gets its history instead of a candidate beside it."""
    office = Office(Store(f"sqlite:///{tmp_path / 'decided.db'}"), Triage.load(small_model_dir))
    try:
        office.history.import_frame(history.iloc[:10], ["标题", "内容"])
        with office.store.session() as s:
            first = s.execute(select(Suggestion).order_by(Suggestion.id)).scalars().first()
            tid, text, title = first.topic_id, first.raw_text, first.title
            s.get(Topic, tid).status = "accepted"
        again = pd.DataFrame({"标题": [title], "内容": [text + "，盼回复"], "留言时间": ["2026-03-02"],
                              "留言用户": ["someone-else"]})
        assert office.history.import_frame(again, ["标题", "内容"]) == {"stored": 1, "failed": 0}
        with office.store.session() as s:
            last = s.execute(select(Suggestion).order_by(Suggestion.id.desc())).scalars().first()
            assert last.raw_text == text + "，盼回复" and last.topic_id == tid
    finally:
        office.close()


def test_an_unreadable_time_is_refused_and_an_empty_channel_is_the_import_channel(small_model_dir, tmp_path,
                                                                                 caplog) -> None:
    frame = pd.DataFrame({"内容": ["村里的路灯坏了半年没人修", "小区门口的垃圾三天没人清运"],
                          "留言时间": ["上个月", "2026-03-02"], "渠道": [None, None]})
    office = Office(Store(f"sqlite:///{tmp_path / 'cells.db'}"), Triage.load(small_model_dir))
    try:
        with caplog.at_level(logging.WARNING, logger="triage.office.history"):
            assert office.history.import_frame(frame, ["内容"]) == {"stored": 1, "failed": 1}
        with office.store.session() as s:
            row = s.execute(select(Suggestion)).scalars().one()
            assert row.channel == "历史导入" and row.submitted_at.date().isoformat() == "2026-03-02"
    finally:
        office.close()
    refused = [r.getMessage() for r in caplog.records if "未导入" in r.getMessage()]
    assert len(refused) == 1 and refused[0].startswith("第 2 行") and "无法识别" in refused[0]
