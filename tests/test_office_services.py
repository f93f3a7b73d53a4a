"""Each of the office's services on its own: built on one shared state, called directly, as the routes do.

The behaviour through the API is tested in test_api.py, test_live_heat.py, test_import.py; these tests
pin what each service owns, so that a later change to one of them fails here, by name.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from sqlalchemy import select

from triage.embed.encoders import get_encoder
from triage.office.common import Actor, Conflict, Forbidden, Intake, InvalidRequest, NotFound
from triage.office.office import Office
from triage.pipeline import Triage
from triage.store.database import Store, Suggestion, Topic

LAMPS = ["北辰社区3栋楼道灯坏了一个月没人修", "北辰社区3栋的楼道灯还是不亮，晚上老人摔倒", "北辰社区楼道灯坏了请尽快维修"]
STAFF = Actor("审核员", "staff")


@pytest.fixture
def office(tmp_path, small_model_dir):
    off = Office(Store(f"sqlite:///{tmp_path / 'o.db'}"), Triage.load(small_model_dir), encoder=get_encoder("hashing"))
    off.config.recluster_every = 10_000   # the tests below re-cluster when they mean to
    yield off
    off.close()


def _submit(office: Office, texts: list[str], who: str = "u") -> list[Suggestion]:
    return [office.intake.submit(Intake(text=t, submitter=f"{who}{k}"), auto_recluster=False)[0] for k, t in enumerate(texts)]


def test_the_services_share_one_state_and_a_new_model_reaches_all_of_them(office, small_model_dir):
    services = (office.intake, office.views, office.decisions, office.clustering, office.reclustering, office.index,
                office.figures, office.history)
    assert {id(s.state) for s in services} == {id(office.state)}
    assert office.intake.index is office.decisions.index is office.reclustering.index is office.index
    fresh = Triage.load(small_model_dir)
    office.triage = fresh
    assert all(s.triage is fresh for s in services)


def test_intake_replays_a_repeated_key_and_refuses_the_same_key_with_another_body(office):
    first, _a, replayed = office.intake.submit(Intake(text=LAMPS[0]), idempotency_key="k1", auto_recluster=False)
    again, _a, replayed2 = office.intake.submit(Intake(text=LAMPS[0]), idempotency_key="k1", auto_recluster=False)
    assert (replayed, replayed2) == (False, True) and again.receipt == first.receipt
    with pytest.raises(Conflict):
        office.intake.submit(Intake(text=LAMPS[1]), idempotency_key="k1", auto_recluster=False)
    with pytest.raises(InvalidRequest, match="提交时间"):
        office.intake.submit(Intake(text=LAMPS[1], submitted_at=dt.datetime(1890, 1, 1)), auto_recluster=False)


def test_intake_places_each_message_in_a_topic_and_its_figures_move_at_once(office):
    rows = _submit(office, LAMPS)
    with office.store.session() as s:
        tids = {s.get(Suggestion, r.id).topic_id for r in rows}
        topics = [s.get(Topic, t) for t in tids]
    assert all(tids) and sum(t.size for t in topics) == 3
    # the figures service refreshed the topic a message joined: no topic waits for a re-clustering
    assert all(t.heat and t.heat > 0 and t.heat_terms for t in topics)


def test_views_say_not_found_and_unmasking_needs_the_right_and_a_reason(office):
    row = _submit(office, LAMPS[:1])[0]
    assert office.views.receipt(row.receipt, None)["status"] in ("received", "in_review")
    with pytest.raises(NotFound):
        office.views.receipt("YS20261207-ABCDEFGH", None)
    total, listed = office.views.list_topics()
    assert total == 1 and listed[0].id == row.topic_id
    with pytest.raises(Forbidden):
        office.views.topic(row.topic_id, STAFF, unmask=True, reason="核实")
    with pytest.raises(InvalidRequest):
        office.views.topic(row.topic_id, Actor("管理员", "admin", can_unmask=True), unmask=True, reason="")
    assert office.views.board() == []   # nothing published yet


def test_decisions_check_the_action_and_its_fields_and_walk_the_lifecycle(office):
    tid = _submit(office, LAMPS[:1])[0].topic_id
    with pytest.raises(InvalidRequest):
        office.decisions.decide(tid, "delete", STAFF, "不需要")
    with pytest.raises(InvalidRequest, match="不使用字段"):
        office.decisions.decide(tid, "reject", STAFF, "不属于协商范围", label="路灯")
    with pytest.raises(InvalidRequest):
        office.decisions.decide(tid, "accept", STAFF, "")   # a reason is required
    assert office.decisions.decide(tid, "accept", STAFF, "列为协商议题")["stage"] == "确定议题"
    assert office.decisions.decide(tid, "advance", STAFF, "开始调研")["stage"] == "议前调研"
    with pytest.raises(Conflict):
        office.decisions.decide(tid, "accept", STAFF, "再次采纳")


def test_a_merge_makes_a_new_generation_so_every_index_rebuilds(office):
    a = _submit(office, LAMPS[:1], "a")[0].topic_id
    b = _submit(office, ["上庄村到石桥镇的公交一天只有两趟"], "b")[0].topic_id
    assert a != b
    before = office.store.get_setting("topics_generation")
    office.decisions.decide(a, "merge", STAFF, "同一问题", into=b)
    assert office.store.get_setting("topics_generation") != before


def test_a_corrected_scope_makes_a_new_generation_but_a_corrected_domain_does_not(office):
    # the live index counts each topic's individual petitions, which a scope correction changes
    r = _submit(office, LAMPS[:1], "a")[0]
    tid = r.topic_id
    member = office.views.topic(tid, STAFF)["members"][0]["id"]
    before = office.store.get_setting("topics_generation")
    office.decisions.decide(tid, "correct", STAFF, "领域有误", suggestion_id=member, domain="交通运输")
    assert office.store.get_setting("topics_generation") == before
    office.decisions.decide(tid, "correct", STAFF, "是个人诉求", suggestion_id=member, scope="individual")
    assert office.store.get_setting("topics_generation") != before


def test_the_coordinator_counts_submissions_and_re_clusters_when_due(office, monkeypatch):
    runs: list[str] = []
    monkeypatch.setattr(office.clustering, "soon", lambda: runs.append("soon"))
    office.config.recluster_every = 2
    office.clustering.count_submission()
    office.clustering.after_submission(index_missing=False)
    assert runs == []
    office.clustering.count_submission()
    office.clustering.after_submission(index_missing=False)
    assert runs == ["soon"]
    office.clustering.after_submission(index_missing=True, auto_recluster=False)   # an import: never
    assert runs == ["soon"]


def test_a_re_clustering_holds_the_lease_and_keeps_decided_topics(office):
    rows = _submit(office, LAMPS + ["上庄村的公交班次太少，老人看病不方便"])
    office.decisions.decide(rows[-1].topic_id, "accept", STAFF, "列为协商议题")
    out = office.clustering.recluster()
    assert out["messages"] == 3 and not office.clustering.running_elsewhere()   # the accepted one is not re-clustered
    with office.store.session() as s:
        assert s.get(Topic, rows[-1].topic_id).status == "accepted"
        assert len({t for t in s.execute(select(Suggestion.topic_id)).scalars()}) == 2


def test_the_index_keeper_follows_a_dropped_topic_to_where_its_members_went(office):
    with office.store.session() as s:
        office.index.record_successors(s, {"T000001": "T000002"})
    with office.store.session() as s:
        s.add(Topic(id="T000002", label="x", keywords=[], places=[], size=1, submitters=1))
    assert office.index.successor("T000001") == "T000002" and office.index.successor("T000009") is None
    _submit(office, LAMPS[:2])
    with office.state.lock:
        assert office.index.current() is not None   # built from the stored membership


def test_history_imports_the_good_rows_and_reports_each_bad_one_with_its_line(office, caplog):
    frame = pd.DataFrame({"标题": ["路灯", "", "公交"], "内容": [LAMPS[0], "", "上庄村的公交班次太少"],
                          "留言时间": ["2026-11-01", "2026-11-02", "不是日期"]})
    with caplog.at_level("WARNING", logger="triage.office.history"):
        out = office.history.import_frame(frame, ["标题", "内容"])
    assert out == {"stored": 1, "failed": 2}
    assert "第 3 行未导入" in caplog.text and "第 4 行未导入" in caplog.text
