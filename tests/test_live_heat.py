"""Topics as staff see them between re-clusterings: heat follows the store's clock."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from triage.office.common import Intake
from triage.judge.rank import reage
from triage.store.database import Suggestion, Topic


@pytest.fixture()
def office(tmp_path):
    from service.runtime import Runtime, Settings

    rt = Runtime(Settings(database_url=f"sqlite:///{tmp_path / 'h.db'}", home=str(tmp_path), recluster_every=10_000, recluster_quiet_s=0))
    yield rt.office
    rt.close()


def _topic_of(office, receipt: str) -> Topic:
    with office.store.session() as s:
        tid = s.execute(select(Suggestion.topic_id).where(Suggestion.receipt == receipt)).scalar_one()
        return s.get(Topic, tid)


def test_a_silent_topic_cools_as_the_stores_clock_moves_without_a_reclustering(office) -> None:
    from triage.office.common import Intake

    day0 = dt.datetime(2026, 1, 5, 9)
    for k, text in enumerate(["北辰社区3栋楼道灯坏了一个月没人修", "北辰社区3栋的楼道灯还是不亮，晚上摸黑"]):
        row, *_ = office.intake.submit(Intake(text=text, submitter=f"c{k}", submitted_at=day0 + dt.timedelta(hours=k)),
                                auto_recluster=False)
    fresh = _topic_of(office, row.receipt)
    assert fresh.heat > 0 and fresh.heat_terms["recency"]["value"] < 1
    # sixty days on, another problem elsewhere: the lamp topic is not touched, yet it is sixty days older
    office.intake.submit(Intake(text="上庄村到石桥镇的公交一天只有两趟，老人看病不方便", submitter="c9",
                         submitted_at=day0 + dt.timedelta(days=60)), auto_recluster=False)
    old = _topic_of(office, row.receipt)
    assert old.size == fresh.size and old.heat < fresh.heat
    assert old.heat_terms["recency"]["value"] == pytest.approx(60, abs=1)
    assert sum(t["points"] for t in old.heat_terms.values()) == pytest.approx(old.heat, abs=1e-3)


def test_reageing_moves_only_the_recency_term_and_keeps_the_sum() -> None:
    from triage.judge.rank import heat

    now = dt.datetime(2026, 3, 1)
    import pandas as pd

    h = heat(voices=3, submitters=3, support=0, last_seen=pd.Timestamp(now), this_period=3, previous_period=0,
             channels=1, places=1, principle_score=0.8, now=pd.Timestamp(now))
    later = reage(h.terms, 90.0)
    assert later.score < h.score
    assert {k: v for k, v in later.terms.items() if k != "recency"} == {k: v for k, v in h.terms.items() if k != "recency"}
    assert sum(t["points"] for t in later.terms.values()) == pytest.approx(later.score, abs=1e-3)
    # …and computing it afresh at that clock agrees on the recency term
    again = heat(voices=3, submitters=3, support=0, last_seen=pd.Timestamp(now), this_period=3, previous_period=0,
                 channels=1, places=1, principle_score=0.8, now=pd.Timestamp(now) + pd.Timedelta(days=90))
    assert later.terms["recency"]["points"] == pytest.approx(again.terms["recency"]["points"], abs=1e-3)


def test_once_intake_goes_quiet_the_service_reclusters_once_and_stops_when_closed(office, monkeypatch) -> None:
    """Counting alone left the newest messages on their intake-time topics until 200 more came: a
    quiet spell after a burst now settles them, one run per spell (each submission re-arms the timer)."""
    import time

    from triage.office.common import Intake

    settles: list[dict] = []
    started: list[float] = []   # when each settle run began: a wrongful run shows even if slow
    real = office.clustering.recluster

    def recording(*a, **kw):
        if kw.get("settle"):
            started.append(time.monotonic())
        out = real(*a, **kw)
        if kw.get("settle"):
            settles.append(out)
        return out

    monkeypatch.setattr(office.clustering, "recluster", recording)
    office.config.recluster_quiet_s = 1.5   # well above one submission's time, on a slow machine too

    def burst(texts: list[str], who: str) -> None:
        for k, text in enumerate(texts):
            office.intake.submit(Intake(text=text, submitter=f"{who}{k}"))

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 60
        while len(settles) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2.0)   # longer than the quiet time: a second, wrongful run would have started

    burst(["北辰社区3栋楼道灯坏了一个月没人修", "北辰社区3栋的楼道灯还是不亮", "北辰社区楼道灯坏了老人摔倒"], "a")
    wait_for(1)
    assert len(settles) == len(started) == 1
    assert real(only_if_due=True, settle=True).get("skipped") == "not due"   # nothing new since
    burst(["上庄村到石桥镇的公交一天只有两趟", "上庄村的公交班次太少，老人看病不方便"], "b")
    wait_for(2)
    assert len(settles) == len(started) == 2 and settles[1].get("messages", 0) >= 5 and "skipped" not in settles[1]
    burst(["文化街的宠物店门口总有狗粪"], "c")
    office.close()   # a worker shutting down drops its pending settle run
    time.sleep(2.5)
    assert len(started) == 2


def test_when_the_store_grows_past_the_trigger_a_reclustering_runs_and_decided_topics_stay(office, monkeypatch) -> None:
    """The count-based trigger's positive path (it was tested only as "not due")."""
    import time

    from triage.office.common import Actor, Intake

    runs: list[dict] = []
    real = office.clustering.recluster

    def recording(*a, **kw):
        out = real(*a, **kw)
        runs.append(out)
        return out

    monkeypatch.setattr(office.clustering, "recluster", recording)
    office.config.recluster_every, office.config.recluster_growth = 6, 0.0
    lamps = ["北辰社区3栋楼道灯坏了一个月没人修", "北辰社区3栋的楼道灯还是不亮", "北辰社区楼道灯坏了老人摔倒"]
    rows = [office.intake.submit(Intake(text=t, submitter=f"a{k}"), auto_recluster=False)[0] for k, t in enumerate(lamps)]
    office.clustering.recluster()
    runs.clear()
    tid = _topic_of(office, rows[0].receipt).id
    staff = Actor("审核员", "staff")
    office.decisions.decide(tid, "accept", staff, "列为协商议题")
    before = _topic_of(office, rows[0].receipt)
    more = ["上庄村到石桥镇的公交一天只有两趟", "上庄村的公交班次太少，老人看病不方便", "上庄村公交太少希望加班次",
            "北辰社区楼道灯又坏了", "文化街的宠物店门口总有狗粪", "文化街宠物店外面狗粪没人清理"]
    for k, t in enumerate(more):
        office.intake.submit(Intake(text=t, submitter=f"b{k}"))
    deadline = time.monotonic() + 60
    while not any(r.get("messages") for r in runs) and time.monotonic() < deadline:
        time.sleep(0.1)
    done = [r for r in runs if r.get("messages")]
    assert done and "skipped" not in done[0]
    after = _topic_of(office, rows[0].receipt)
    assert after.id == tid and after.status == before.status == "accepted"
    with office.store.session() as s:
        members = set(s.execute(select(Suggestion.id).where(Suggestion.topic_id == tid)).scalars())
    assert {r.id for r in rows} <= members


def test_a_message_right_after_a_reclustering_joins_where_the_members_went_not_a_dropped_topic(office) -> None:
    """Before the index's background rebuild lands, the old index still holds the topics a re-clustering
    dropped; a message assigned to one of them brought it back beside the topic its members joined."""
    texts = ["锦绣家园小区的路灯坏了一个多月，晚上出门很不安全，请尽快修复。联系电话1",
             "锦绣家园小区路灯坏了很久了，老人晚上摔倒过，希望尽快维修路灯", "反映锦绣家园小区路灯不亮的问题，晚上一片漆黑，身份证号2",
             "锦绣家园小区路灯一直不亮，物业不管，请有关部门督促修复路灯"]
    for k, t in enumerate(texts):   # an hour ago: each opens a topic of its own (the store had no index)
        office.intake.submit(Intake(text=t, submitter=f"c{k}", submitted_at=dt.datetime.utcnow() - dt.timedelta(minutes=60 - k)),
                      auto_recluster=False)
    office.clustering.recluster()
    with office.store.session() as s:
        kept = set(s.execute(select(Suggestion.topic_id)).scalars())
    assert len(kept) == 1
    for k, t in enumerate(["锦绣家园小区的路灯坏了，晚上回家看不见路，请求修复", "锦绣家园小区里的路灯全坏了，希望相关部门尽快维修"]):
        row, _a, _r = office.intake.submit(Intake(text=t, submitter=f"d{k}"), auto_recluster=False)
        assert row.topic_id in kept
    with office.store.session() as s:
        assert set(s.execute(select(Topic.id)).scalars()) == kept


def test_a_message_that_would_join_a_dropped_topic_does_not_wait_for_the_index_rebuild(office, monkeypatch) -> None:
    """The index rebuild after a re-clustering runs in the background (seconds at 20k stored messages).
    A submission that would join a dropped topic used to rebuild it there and then, under the index
    lock, and every submission of the worker waited; it now follows the dropped topic's members."""
    import threading

    texts = ["幸福里小区电梯经常困人，业主多次反映没人修，请督促物业维修电梯",
             "幸福里小区的电梯又坏了，老人上下楼很困难，物业一直不修电梯", "反映幸福里小区电梯故障频繁困人的问题",
             "幸福里小区电梯坏了半个月，请有关部门督促物业尽快修好电梯"]
    first_topic = {}
    for k, t in enumerate(texts):
        row, _a, _r = office.intake.submit(Intake(text=t, submitter=f"c{k}", submitted_at=dt.datetime.utcnow() - dt.timedelta(minutes=60 - k)),
                                    auto_recluster=False)
        first_topic[t] = row.topic_id
    office.index.current()   # this worker's index holds the topics as they were before the re-clustering
    office.clustering.recluster()
    with office.store.session() as s:
        kept = set(s.execute(select(Suggestion.topic_id)).scalars())
        topics_before = set(s.execute(select(Topic.id)).scalars())
    assert len(kept) == 1 and topics_before == kept
    # a message worded as one whose topic went: the old index sends it to that dropped topic
    gone = [t for t in texts if first_topic[t] not in kept]
    assert gone, "the re-clustering dropped no topic; the test needs one"
    release, builds = threading.Event(), []
    real_build = office.index.build

    def held_build():   # the background rebuild cannot finish until the submissions are in
        builds.append(threading.current_thread().name)
        assert release.wait(30)
        return real_build()

    monkeypatch.setattr(office.index, "build", held_build)
    try:
        for k, t in enumerate(gone[:2]):
            row, _a, _r = office.intake.submit(Intake(text=t, submitter=f"d{k}"), auto_recluster=False)
            assert row.topic_id in kept
    finally:
        release.set()
    assert threading.current_thread().name not in builds   # no rebuild on the submitting thread
    with office.store.session() as s:
        assert set(s.execute(select(Topic.id)).scalars()) == kept


def test_a_worker_two_re_clusterings_behind_still_finds_where_a_dropped_topic_went(office, monkeypatch) -> None:
    with office.store.session() as s:
        office.index.record_successors(s, {"T000001": "T000002", "T000003": None})
    with office.store.session() as s:   # the next run drops T000002 into T000004
        office.index.record_successors(s, {"T000002": "T000004"})
    chain = office.store.get_setting("topics_redirect")
    assert chain == {"T000001": "T000004", "T000003": None, "T000002": "T000004"}
    monkeypatch.setattr(office.index, "REDIRECTS_KEPT", 2)
    with office.store.session() as s:
        office.index.record_successors(s, {"T000005": "T000004"})
    assert list(office.store.get_setting("topics_redirect")) == ["T000002", "T000005"]   # the oldest go first
