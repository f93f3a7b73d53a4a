"""The HTTP API on SQLite and on PostgreSQL: every endpoint, every role boundary, idempotent retries,
and bad input answered with a 4xx that leaves no half-written row."""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select

from triage.store.database import Assessment, AuditEvent, Correction, Suggestion, Topic

from .conftest import ROOT, valid_id

PHONE = "13912345678"


@pytest.fixture(scope="module")
def api(db_url: str, tmp_path_factory: pytest.TempPathFactory):
    from service.app import create_app
    from service.runtime import Runtime, Settings

    home = tmp_path_factory.mktemp("home")
    saved = os.environ.get("TRIAGE_HOME")
    rt = Runtime(Settings(database_url=db_url, home=str(home), recluster_every=10_000, recluster_quiet_s=0, max_body_bytes=128 * 1024))
    demo = pd.read_csv(ROOT / "corpora" / "demo.csv", dtype=str, keep_default_na=False)
    rt.office.history.import_frame(demo, ["title", "text"])
    keys = {}
    for name, role, unmask, rate in (("admin", "admin", False, None), ("staff", "staff", True, None),
                                     ("clerk", "staff", False, None), ("portal", "portal", False, 0),
                                     ("portal2", "portal", False, 0), ("slow", "portal", False, 2)):
        keys[name] = rt.store.create_key(role, name, unmask, rate)[1]
    client = TestClient(create_app(runtime=rt), raise_server_exceptions=False)

    def h(who: str, **extra: str) -> dict[str, str]:
        return {"X-API-Key": keys[who], **extra}

    yield SimpleNamespace(client=client, rt=rt, keys=keys, h=h)
    client.close()
    rt.close()   # batcher threads would keep later tests from forking
    if saved is None:
        os.environ.pop("TRIAGE_HOME", None)
    else:
        os.environ["TRIAGE_HOME"] = saved


def count(api, model=Suggestion) -> int:
    with api.rt.store.session() as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


def submit(api, text: str, who: str = "portal", **fields):
    return api.client.post("/api/v1/suggestions", json={"text": text, **fields}, headers=api.h(who))


def recluster(api, who: str = "staff") -> dict:
    """POST /topics/recluster (a job since it can take minutes), then wait for the job: its result."""
    import time

    r = api.client.post("/api/v1/topics/recluster", headers=api.h(who))
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "recluster" and job["status"] == "running"
    for _ in range(1200):
        st = api.client.get(f"/api/v1/jobs/{job['id']}", headers=api.h(who)).json()
        if st["status"] != "running":
            break
        time.sleep(0.1)
    assert st["status"] == "done", st
    return st["result"]


def first_topic(api, **params) -> dict:
    r = api.client.get("/api/v1/topics", params={"status": "candidate", **params}, headers=api.h("staff"))
    assert r.status_code == 200, r.text
    return r.json()["items"][0]


# ------------------------------------------------------------------ intake and receipts
def test_a_portal_submission_gets_a_receipt_and_no_assessment(api) -> None:
    before = count(api)
    r = submit(api, "幸福村到镇上的公交一天只有两班，老人看病很不方便", place="幸福村", channel="二维码")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["receipt"].startswith("YS") and body["assessment"] is None and body["topic_id"] is None
    assert count(api) == before + 1


def test_a_staff_submission_gets_the_full_assessment_with_the_model_version(api) -> None:
    r = submit(api, "建议在锦绣家园小区增设电动车集中充电桩，楼道里充电太危险了", who="staff")
    assert r.status_code == 201, r.text
    a = r.json()["assessment"]
    assert a["domain"] and a["route"]["name"] and a["model_version"] == api.rt.office.triage.version
    assert r.json()["topic_id"].startswith("T")
    with api.rt.store.session() as s:
        row = s.execute(select(Suggestion).where(Suggestion.receipt == r.json()["receipt"])).scalar_one()
        versions = s.execute(select(Assessment.model_version).where(Assessment.suggestion_id == row.id)).scalars().all()
    assert versions == [api.rt.office.triage.version]


def test_personal_data_is_masked_in_the_stored_text_and_kept_raw_only_for_unmasking(api) -> None:
    pid = valid_id("11010519491231002")
    r = submit(api, f"我叫王小明，身份证{pid}，电话{PHONE}，我家门口的下水道堵了一个月", who="staff")
    a = r.json()["assessment"]
    assert PHONE not in a["text"] and pid not in a["text"] and "王小明" not in a["text"]
    assert set(a["pii_kinds"]) == {"name", "id_number", "mobile"}
    # the raw values: in the raw column, and readable through the API only by unmasking (audited)
    tid = r.json()["topic_id"]
    with api.rt.store.session() as s:
        row = s.execute(select(Suggestion).where(Suggestion.receipt == r.json()["receipt"])).scalar_one()
        assert PHONE in row.raw_text and pid in row.raw_text and PHONE not in row.text
    for who in ("clerk", "staff"):   # no unmask asked (and for the clerk, no right to): masked
        plain = api.client.get(f"/api/v1/topics/{tid}", headers=api.h(who))
        assert plain.status_code == 200 and PHONE not in plain.text and pid not in plain.text
    assert api.client.get(f"/api/v1/topics/{tid}", params={"unmask": True, "reason": "核实"},
                          headers=api.h("clerk")).status_code == 403
    shown = api.client.get(f"/api/v1/topics/{tid}", params={"unmask": True, "reason": "回访核实"}, headers=api.h("staff"))
    assert shown.status_code == 200 and PHONE in shown.text and pid in shown.text


def test_a_receipt_shows_its_own_suggestion_only_to_the_key_that_submitted_it(api) -> None:
    mine = submit(api, "北辰社区3栋的楼道灯又坏了，晚上太黑", place="北辰社区").json()["receipt"]
    submit(api, f"另一位居民的留言，电话{PHONE}", who="portal2")
    r = api.client.get(f"/api/v1/suggestions/{mine}", headers=api.h("portal"))
    assert r.status_code == 200
    body = r.json()
    assert body["receipt"] == mine and "楼道灯" in body["text"] and PHONE not in r.text
    assert body["status"] in ("in_review", "forwarded", "received") and body["status_text"]
    assert api.client.get(f"/api/v1/suggestions/{mine}", headers=api.h("portal2")).status_code == 404
    assert api.client.get(f"/api/v1/suggestions/{mine}", headers=api.h("staff")).status_code == 200
    assert api.client.get("/api/v1/suggestions/YS20260101-AAAAAAAA", headers=api.h("portal")).status_code == 404


def test_an_idempotent_retry_returns_the_first_receipt_and_stores_nothing_twice(api) -> None:
    body = {"text": "滨江路夜市烧烤油烟太大，晚上窗户都不敢开", "place": "滨江路"}
    h = api.h("portal", **{"Idempotency-Key": "retry-1"})
    first = api.client.post("/api/v1/suggestions", json=body, headers=h)
    n = count(api)
    again = api.client.post("/api/v1/suggestions", json=body, headers=h)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["receipt"] == first.json()["receipt"] and again.headers["Idempotent-Replayed"] == "true"
    assert count(api) == n


def test_the_same_idempotency_key_with_another_body_is_a_conflict(api) -> None:
    h = api.h("portal", **{"Idempotency-Key": "retry-2"})
    assert api.client.post("/api/v1/suggestions", json={"text": "路灯坏了好久没人修"}, headers=h).status_code == 201
    n = count(api)
    r = api.client.post("/api/v1/suggestions", json={"text": "另外一件事：公园厕所太脏"}, headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    assert count(api) == n


def test_concurrent_retries_with_one_key_store_one_suggestion(api) -> None:
    body = {"text": "临河中学门口放学时段太堵，建议设置临时停车接送区"}
    h = api.h("portal", **{"Idempotency-Key": "race-1"})
    n = count(api)
    out: list = []
    threads = [threading.Thread(target=lambda: out.append(api.client.post("/api/v1/suggestions", json=body, headers=h)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in out)[0] in (200, 201) and all(r.status_code in (200, 201) for r in out)
    assert len({r.json()["receipt"] for r in out}) == 1
    assert count(api) == n + 1


def test_concurrent_submissions_are_stored_in_groups_each_answered_on_its_own(api, monkeypatch) -> None:
    groups: list[int] = []
    real = api.rt.office.intake.submit_many

    def counted(items, *args, **kwargs):
        groups.append(len(items))
        return real(items, *args, **kwargs)

    monkeypatch.setattr(api.rt.office.intake, "submit_many", counted)
    n = count(api)
    bodies = [{"text": f"建议在第{k}中学门口增设减速带和人行横道", "submitter": f"g{k}"} for k in range(10)]
    bodies.insert(4, {"text": "……"})   # refused on its own: the others are stored
    out: dict[int, object] = {}
    threads = [threading.Thread(target=lambda k=k, b=b: out.__setitem__(
        k, api.client.post("/api/v1/suggestions", json=b, headers=api.h("staff")))) for k, b in enumerate(bodies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out[4].status_code == 422
    good = [out[k] for k in range(len(bodies)) if k != 4]
    assert all(r.status_code == 201 and r.json()["topic_id"] for r in good)
    assert len({r.json()["receipt"] for r in good}) == 10 and count(api) == n + 10
    assert sum(groups) == 10   # the refused text never reached the store


def test_the_same_idempotency_key_from_two_portals_is_two_suggestions(api) -> None:
    body = {"text": "建议在幸福村村口增设公交候车亭"}
    a = api.client.post("/api/v1/suggestions", json=body, headers=api.h("portal", **{"Idempotency-Key": "k"}))
    b = api.client.post("/api/v1/suggestions", json=body, headers=api.h("portal2", **{"Idempotency-Key": "k"}))
    assert a.status_code == b.status_code == 201 and a.json()["receipt"] != b.json()["receipt"]


@pytest.mark.parametrize("payload, status, words", [
    ("{not json", 400, "JSON"),
    ('{"text": 12345}', 422, "text"),
    ('{"text": "路灯坏了", "colour": "red"}', 422, "colour"),
    ('{"text": "' + "很" * 20001 + '"}', 422, "text"),
    ('{"text": "   "}', 422, "empty"),
    ('{"text": ""}', 422, "text"),
    ('{"title": "no text"}', 422, "text"),
    ('{"text": "路灯坏了", "support": -3}', 422, "support"),
    ("[1, 2, 3]", 422, ""),
], ids=["malformed", "wrong-type", "unknown-field", "over-long", "blank", "empty", "missing", "negative", "not-object"])
def test_bad_bodies_get_a_4xx_with_a_reason_and_write_nothing(api, payload: str, status: int, words: str) -> None:
    n, na = count(api), count(api, Assessment)
    r = api.client.post("/api/v1/suggestions", content=payload.encode("utf-8"),
                        headers=api.h("portal", **{"Content-Type": "application/json"}))
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] and words.lower() in err["message"].lower()
    assert (count(api), count(api, Assessment)) == (n, na)


def test_a_body_over_the_size_limit_is_413(api) -> None:
    n = count(api)
    r = api.client.post("/api/v1/suggestions", content=b'{"text": "' + b"a" * 200_000 + b'"}',
                        headers=api.h("portal", **{"Content-Type": "application/json"}))
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert count(api) == n


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "tri_p_wrong"}, {"Authorization": "Bearer nope"},
                                     {"Authorization": "Basic abc"}])
def test_a_missing_or_bad_key_is_401_and_writes_nothing(api, headers: dict) -> None:
    n = count(api)
    r = api.client.post("/api/v1/suggestions", json={"text": "路灯坏了"}, headers=headers)
    assert r.status_code == 401 and "key" in r.json()["error"]["message"].lower()
    assert count(api) == n


def test_a_bearer_token_is_accepted_like_the_header(api) -> None:
    r = api.client.post("/api/v1/classify", json={"texts": ["公交太少"]},
                        headers={"Authorization": f"Bearer {api.keys['portal']}"})
    assert r.status_code == 200


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(api) -> None:
    codes = [api.client.post("/api/v1/classify", json={"texts": ["公交太少"]}, headers=api.h("slow")).status_code
             for _ in range(4)]
    assert codes[:2] == [200, 200] and codes[-1] == 429
    r = api.client.post("/api/v1/classify", json={"texts": ["公交太少"]}, headers=api.h("slow"))
    assert int(r.headers["Retry-After"]) >= 1


# ------------------------------------------------------------------ classify
def test_classify_answers_each_text_and_stores_nothing(api) -> None:
    n = count(api)
    r = api.client.post("/api/v1/classify", json={"texts": ["村里到镇上的公交太少", "孩子上学没有学位", "  "]},
                        headers=api.h("portal"))
    assert r.status_code == 200
    res = r.json()["results"]
    assert [x["domain"] for x in res[:2]] == ["交通运输", "教育"] and res[2]["error"]
    assert count(api) == n


def test_classify_with_the_full_model_names_that_model(api) -> None:
    r = api.client.post("/api/v1/classify", json={"texts": ["路灯坏了"], "full": True}, headers=api.h("portal"))
    assert r.json()["results"][0]["model_version"] == api.rt.office.triage.version


def test_classify_refuses_an_empty_list_and_too_many_texts(api) -> None:
    assert api.client.post("/api/v1/classify", json={"texts": []}, headers=api.h("portal")).status_code == 422
    r = api.client.post("/api/v1/classify", json={"texts": ["路灯"] * 101}, headers=api.h("portal"))
    assert r.status_code == 422


# ------------------------------------------------------------------ role boundaries
@pytest.mark.parametrize("method, path, body", [
    ("get", "/api/v1/topics", None), ("get", "/api/v1/topics/T000001", None),
    ("post", "/api/v1/topics/T000001/decisions", {"action": "accept", "reason": "要"}),
    ("post", "/api/v1/topics/recluster", None), ("post", "/api/v1/retrain", None),
    ("get", "/api/v1/keys", None), ("post", "/api/v1/keys", {"role": "admin"}), ("get", "/api/v1/config", None),
    ("get", "/api/v1/jobs/1", None),
])
def test_a_portal_key_cannot_read_topics_decide_or_administer(api, method: str, path: str, body) -> None:
    r = getattr(api.client, method)(path, headers=api.h("portal"), **({"json": body} if body else {}))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize("method, path, body", [
    ("post", "/api/v1/retrain", None), ("get", "/api/v1/keys", None), ("post", "/api/v1/keys", {"role": "admin"}),
    ("delete", "/api/v1/keys/1", None), ("get", "/api/v1/config", None),
])
def test_a_staff_key_cannot_administer(api, method: str, path: str, body) -> None:
    r = getattr(api.client, method)(path, headers=api.h("staff"), **({"json": body} if body else {}))
    assert r.status_code == 403


def test_an_admin_creates_lists_and_revokes_keys_and_the_key_is_shown_once(api) -> None:
    r = api.client.post("/api/v1/keys", json={"role": "portal", "name": "新门户"}, headers=api.h("admin"))
    assert r.status_code == 201
    new = r.json()
    assert new["key"].startswith("tri_p_")
    listed = api.client.get("/api/v1/keys", headers=api.h("admin")).json()
    assert all(k["key"] is None for k in listed) and new["id"] in [k["id"] for k in listed]
    assert api.client.post("/api/v1/classify", json={"texts": ["路灯"]}, headers={"X-API-Key": new["key"]}).status_code == 200
    assert api.client.delete(f"/api/v1/keys/{new['id']}", headers=api.h("admin")).status_code == 200
    assert api.client.post("/api/v1/classify", json={"texts": ["路灯"]}, headers={"X-API-Key": new["key"]}).status_code == 401
    assert api.client.delete(f"/api/v1/keys/{new['id']}", headers=api.h("admin")).status_code == 404


def test_admin_reads_the_configuration(api) -> None:
    r = api.client.get("/api/v1/config", headers=api.h("admin"))
    assert r.status_code == 200 and "交通运输" in [d["name"] for d in r.json()["domains"]]


# ------------------------------------------------------------------ topics
def test_topics_are_listed_by_citizens_then_heat_and_filtered(api) -> None:
    r = api.client.get("/api/v1/topics", params={"limit": 100}, headers=api.h("staff"))
    items = r.json()["items"]
    assert r.json()["total"] >= len(items) > 3
    keys = [(t["submitters"], t["heat"], t["size"]) for t in items]
    assert keys == sorted(keys, reverse=True)
    dom = items[0]["domain"]
    only = api.client.get("/api/v1/topics", params={"domain": dom}, headers=api.h("staff")).json()["items"]
    assert only and all(t["domain"] == dom for t in only)
    com = items[0]["committee_id"]
    if com:
        assert all(t["committee_id"] == com for t in
                   api.client.get("/api/v1/topics", params={"committee": com}, headers=api.h("staff")).json()["items"])
    assert api.client.get("/api/v1/topics", params={"sort": "sideways"}, headers=api.h("staff")).status_code == 422
    assert api.client.get("/api/v1/topics", params={"since": "2999-01-01"}, headers=api.h("staff")).json()["total"] == 0


def test_a_topic_shows_masked_members_keywords_heat_terms_and_the_scorecard(api) -> None:
    tid = first_topic(api)["id"]
    d = api.client.get(f"/api/v1/topics/{tid}", headers=api.h("clerk")).json()
    assert d["members"] and d["representative"] and d["keywords"] and d["heat_terms"]
    assert {p["name"] for p in d["scorecard"]["principles"]} >= {"政治性", "群众性", "前瞻性", "民主性", "可行性"}
    assert all("raw_text" not in m or m["raw_text"] is None for m in d["members"])


def test_unmasking_needs_the_permission_and_a_reason_and_is_audited(api) -> None:
    r = submit(api, f"我叫李大爷，电话{PHONE}，北辰社区3栋楼道灯坏了没人修", who="staff", place="北辰社区")
    tid = r.json()["topic_id"]
    masked = api.client.get(f"/api/v1/topics/{tid}", headers=api.h("staff"))
    assert PHONE not in masked.text
    assert api.client.get(f"/api/v1/topics/{tid}", params={"unmask": True, "reason": "核实"},
                          headers=api.h("clerk")).status_code == 403
    assert api.client.get(f"/api/v1/topics/{tid}", params={"unmask": True}, headers=api.h("staff")).status_code == 422
    with api.rt.store.session() as s:
        before = s.execute(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "unmask")).scalar_one()
    r = api.client.get(f"/api/v1/topics/{tid}", params={"unmask": True, "reason": "回访核实"}, headers=api.h("staff"))
    assert r.status_code == 200 and PHONE in r.text
    with api.rt.store.session() as s:
        ev = s.execute(select(AuditEvent).where(AuditEvent.action == "unmask").order_by(AuditEvent.id.desc())).scalars().first()
        after = s.execute(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "unmask")).scalar_one()
    assert after == before + 1 and ev.reason == "回访核实" and ev.actor.startswith("staff")


def test_an_unknown_topic_is_404(api) -> None:
    r = api.client.get("/api/v1/topics/T999999", headers=api.h("staff"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def decide(api, tid: str, **body):
    return api.client.post(f"/api/v1/topics/{tid}/decisions", json=body, headers=api.h("staff"))


def test_accept_moves_a_topic_to_确定议题_and_records_who_and_why(api) -> None:
    tid = first_topic(api)["id"]
    r = decide(api, tid, action="accept", reason="群众反映集中，列入本季度协商")
    assert r.status_code == 200, r.text
    d = api.client.get(f"/api/v1/topics/{tid}", headers=api.h("staff")).json()
    assert d["status"] == "accepted" and d["stage"] == "确定议题"
    assert d["decisions"][-1]["action"] == "accept" and d["decisions"][-1]["reason"] == "群众反映集中，列入本季度协商"
    assert decide(api, tid, action="accept", reason="again").status_code == 409


def test_a_decision_without_a_reason_is_refused(api) -> None:
    tid = first_topic(api)["id"]
    r = decide(api, tid, action="reject", reason="")
    assert r.status_code == 422
    assert decide(api, tid, action="explode", reason="x").status_code == 422


def test_the_lifecycle_runs_forward_to_the_回音壁_and_outcomes_need_a_class_and_unit(api) -> None:
    tid = first_topic(api)["id"]
    assert decide(api, tid, action="advance", reason="未采纳先推进").status_code == 409
    decide(api, tid, action="accept", reason="列为议题")
    for stage in ("议前调研", "协商议事", "公开公示"):
        r = decide(api, tid, action="advance", reason=f"进入{stage}")
        assert r.status_code == 200 and r.json()["stage"] == stage
    assert decide(api, tid, action="advance", stage="议前调研", reason="回退").status_code == 409
    board = api.client.get("/api/v1/public/board").json()
    assert tid in [b["id"] for b in board]
    assert decide(api, tid, action="advance", reason="办结").status_code == 422   # no outcome class
    r = decide(api, tid, action="advance", reason="办结", outcome_class="A", outcome_unit="县交通运输局",
               outcome="新增两班公交")
    assert r.status_code == 200 and r.json()["stage"] == "成果转化"
    item = next(b for b in api.client.get("/api/v1/public/board").json() if b["id"] == tid)
    assert item["outcome_class"] == "A" and item["outcome_class_name"] == "承办单位办理" and item["outcome_unit"] == "县交通运输局"


def test_the_board_needs_no_key_and_carries_no_member_text(api) -> None:
    r = api.client.get("/api/v1/public/board")
    assert r.status_code == 200
    assert PHONE not in r.text and "members" not in r.text and "raw_text" not in r.text


def test_a_citizen_sees_the_stage_of_the_topic_their_suggestion_joined(api) -> None:
    r = submit(api, "上庄村到镇上的公交太少了，一天就两趟，大家都希望增加班次", place="上庄村")
    rec = r.json()["receipt"]
    with api.rt.store.session() as s:
        tid = s.execute(select(Suggestion.topic_id).where(Suggestion.receipt == rec)).scalar_one()
    if api.client.get(f"/api/v1/topics/{tid}", headers=api.h("staff")).json()["status"] == "candidate":
        decide(api, tid, action="accept", reason="列为议题")
    topic = api.client.get(f"/api/v1/topics/{tid}", headers=api.h("staff")).json()
    body = api.client.get(f"/api/v1/suggestions/{rec}", headers=api.h("portal")).json()
    assert body["status"] in ("accepted", "forwarded")
    if body["status"] == "accepted":
        assert body["stage"] == topic["stage"] and body["topic"]["label"] == topic["label"]
        assert "members" not in body["topic"]


def test_merge_moves_every_member_and_marks_the_source(api) -> None:
    items = api.client.get("/api/v1/topics", params={"status": "candidate", "limit": 50}, headers=api.h("staff")).json()["items"]
    src, dst = items[-1], items[-2]
    r = decide(api, src["id"], action="merge", into=dst["id"], reason="同一问题")
    assert r.status_code == 200 and r.json()["moved"] == src["size"]
    s2 = api.client.get(f"/api/v1/topics/{src['id']}", headers=api.h("staff")).json()
    d2 = api.client.get(f"/api/v1/topics/{dst['id']}", headers=api.h("staff")).json()
    assert s2["status"] == "merged" and s2["merged_into"] == dst["id"] and not s2["members"]
    assert d2["size"] == dst["size"] + src["size"] == len(d2["members"])
    assert decide(api, src["id"], action="accept", reason="x x").status_code == 409
    assert decide(api, dst["id"], action="merge", into=dst["id"], reason="自己").status_code == 422
    assert decide(api, dst["id"], action="merge", into="T999999", reason="不存在").status_code == 404


def test_split_takes_the_selected_members_into_a_new_topic(api) -> None:
    t = next(x for x in api.client.get("/api/v1/topics", params={"limit": 100}, headers=api.h("staff")).json()["items"]
             if x["size"] >= 2 and x["status"] == "candidate")
    members = api.client.get(f"/api/v1/topics/{t['id']}", headers=api.h("staff")).json()["members"]
    take = [members[0]["id"]]
    r = decide(api, t["id"], action="split", members=take, label="拆出的议题", reason="不是同一个问题")
    assert r.status_code == 200, r.text
    new = api.client.get(f"/api/v1/topics/{r.json()['new_topic_id']}", headers=api.h("staff")).json()
    assert [m["id"] for m in new["members"]] == take and new["label"] == "拆出的议题"
    assert api.client.get(f"/api/v1/topics/{t['id']}", headers=api.h("staff")).json()["size"] == t["size"] - 1
    assert decide(api, t["id"], action="split", members=[10 ** 9], reason="不存在").status_code == 422
    rest = [m["id"] for m in api.client.get(f"/api/v1/topics/{t['id']}", headers=api.h("staff")).json()["members"]]
    assert decide(api, t["id"], action="split", members=rest, reason="全部").status_code == 422


def test_reroute_and_relabel_stick_and_a_relabelled_topic_survives_reclustering(api) -> None:
    t = first_topic(api)
    assert decide(api, t["id"], action="reroute", committee="tian", reason="跨领域").json()["committee"] == "提案委员会"
    assert decide(api, t["id"], action="reroute", committee="nosuch", reason="错").status_code == 422
    assert decide(api, t["id"], action="relabel", label="改好的标签", reason="更清楚").status_code == 200
    others = api.client.get("/api/v1/topics", params={"status": "candidate", "limit": 500}, headers=api.h("staff")).json()["items"]
    before = {x["id"] for x in others if x["id"] != t["id"]}
    assert recluster(api)["messages"] > 0
    d = api.client.get(f"/api/v1/topics/{t['id']}", headers=api.h("staff")).json()
    assert d["label"] == "改好的标签" and d["committee"] == "提案委员会" and len(d["members"]) == t["size"]
    after = {x["id"] for x in api.client.get("/api/v1/topics", params={"status": "candidate", "limit": 500},
                                             headers=api.h("staff")).json()["items"]}
    assert len(before & after) >= 0.7 * len(before)   # ids stay stable across re-clustering


def test_a_correction_is_recorded_for_retraining(api) -> None:
    t = first_topic(api)
    m = api.client.get(f"/api/v1/topics/{t['id']}", headers=api.h("staff")).json()["members"][0]
    n = count(api, Correction)
    r = decide(api, t["id"], action="correct", suggestion_id=m["id"], domain="公共安全", scope="group", reason="分错了")
    assert r.status_code == 200, r.text
    assert count(api, Correction) == n + 2
    assert decide(api, t["id"], action="correct", suggestion_id=m["id"], domain="不存在的领域", reason="x x").status_code == 422
    assert decide(api, t["id"], action="correct", suggestion_id=10 ** 9, domain="教育", reason="x x").status_code == 422


def test_decision_bodies_with_unknown_fields_or_wrong_types_are_422(api) -> None:
    tid = first_topic(api)["id"]
    assert api.client.post(f"/api/v1/topics/{tid}/decisions", json={"action": "accept", "reason": "ok", "x": 1},
                           headers=api.h("staff")).status_code == 422
    assert api.client.post(f"/api/v1/topics/{tid}/decisions", json={"action": "split", "reason": "ok", "members": "1,2"},
                           headers=api.h("staff")).status_code == 422


# ------------------------------------------------------------------ Open311
def test_open311_lists_services_and_accepts_a_form_request_with_its_api_key(api) -> None:
    services = api.client.get("/open311/v2/services.json").json()
    assert {"service_code", "service_name", "metadata", "type"} <= set(services[0])
    code = next(s["service_code"] for s in services if s["service_name"] == "交通运输")
    n = count(api)
    r = api.client.post("/open311/v2/requests.json", data={
        "api_key": api.keys["portal"], "service_code": code, "description": "幸福村公交站没有候车亭，下雨没处躲",
        "address_string": "幸福村", "phone": PHONE, "first_name": "明", "last_name": "王"})
    assert r.status_code == 201, r.text
    rid = r.json()[0]["service_request_id"]
    assert count(api) == n + 1
    st = api.client.get(f"/open311/v2/requests/{rid}.json", params={"api_key": api.keys["portal"]})
    assert st.status_code == 200 and st.json()[0]["status"] in ("open", "closed") and PHONE not in st.text
    with api.rt.store.session() as s:
        row = s.execute(select(Suggestion).where(Suggestion.receipt == rid)).scalar_one()
    assert row.stated_domain == "交通运输" and PHONE in row.contact and row.channel == "Open311"
    # the citizen's own choice of service is shown to staff beside the model's domain (API and page)
    topic = api.client.get(f"/api/v1/topics/{row.topic_id}", headers=api.h("clerk")).json()
    assert next(m for m in topic["members"] if m["id"] == row.id)["stated_domain"] == "交通运输"
    api.client.post("/review/login", data={"key": api.keys["clerk"]})
    assert "自选：交通运输" in api.client.get(f"/review/topics/{row.topic_id}").text
    api.client.get("/review/logout")


@pytest.mark.parametrize("form, status", [({"service_code": "D01", "description": "路灯坏了"}, 401),
                                          ({"service_code": "X99", "description": "路灯坏了"}, 400),
                                          ({"service_code": "D01", "description": ""}, 400),
                                          ({"service_code": "D01", "description": "00"}, 400)])   # fuzzer: was a 500
def test_open311_errors_use_the_georeport_shape(api, form: dict, status: int) -> None:
    if status != 401:
        form = {**form, "api_key": api.keys["portal"]}
    n = count(api)
    r = api.client.post("/open311/v2/requests.json", data=form)
    assert r.status_code == status and r.json()[0]["code"] == status and r.json()[0]["description"]
    assert count(api) == n


# ------------------------------------------------------------------ ops
def test_health_readiness_and_metrics(api) -> None:
    submit(api, "路灯坏了好久没人修")
    assert api.client.get("/healthz").json() == {"status": "ok"}
    r = api.client.get("/readyz")
    assert r.status_code == 200 and r.json()["database"] == "ok"
    m = api.client.get("/metrics").text
    assert 'triage_http_requests_total{method="POST",route="/api/v1/suggestions"' in m
    assert "triage_model_info" in m and "YS20" not in m and PHONE not in m


def test_unknown_paths_and_methods_answer_in_the_error_shape(api) -> None:
    r = api.client.get("/api/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = api.client.put("/api/v1/suggestions", json={})
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_the_openapi_schema_documents_every_endpoint(api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    for p in ("/api/v1/suggestions", "/api/v1/suggestions/{receipt}", "/api/v1/classify", "/api/v1/topics",
              "/api/v1/topics/{topic_id}", "/api/v1/topics/{topic_id}/decisions", "/api/v1/public/board",
              "/api/v1/retrain", "/open311/v2/services.json", "/open311/v2/requests.json", "/healthz", "/readyz"):
        assert p in paths
    assert api.client.get("/docs").status_code == 200


# ------------------------------------------------------------------ retraining
def test_a_retraining_job_whose_worker_died_is_failed_with_the_reason_and_no_longer_blocks(api, monkeypatch) -> None:
    """A killed worker left its job "running" and every later retrain answered 409 forever."""
    import datetime as dt

    import service.routes.admin as admin
    from triage.store.database import Job, utcnow

    ran: list[str] = []

    def fake_retrain(rt, actor, progress=None):   # the job itself is not what is tested here
        ran.append(actor)
        return {"fake": True}

    monkeypatch.setattr(admin, "_retrain", fake_retrain)
    t = first_topic(api)
    m = api.client.get(f"/api/v1/topics/{t['id']}", headers=api.h("staff")).json()["members"][0]
    decide(api, t["id"], action="correct", suggestion_id=m["id"], domain="交通运输", reason="应为交通")
    with api.rt.store.session() as s:
        alive = Job(kind="retrain", status="running", holder="host:1", heartbeat_at=utcnow())
        s.add(alive)
        s.flush()
        alive_id = alive.id
    assert api.client.post("/api/v1/retrain", headers=api.h("admin")).status_code == 409   # a live job blocks
    with api.rt.store.session() as s:   # its worker is killed: no beat for ten minutes
        s.get(Job, alive_id).heartbeat_at = utcnow() - dt.timedelta(minutes=10)
    st = api.client.get(f"/api/v1/jobs/{alive_id}", headers=api.h("admin")).json()
    assert st["status"] == "failed" and "进程已停止" in st["error"] and "host:1" in st["error"]
    r = api.client.post("/api/v1/retrain", headers=api.h("admin"))
    assert r.status_code == 202, r.text
    import time

    for _ in range(100):
        st = api.client.get(f"/api/v1/jobs/{r.json()['id']}", headers=api.h("admin")).json()
        if st["status"] != "running":
            break
        time.sleep(0.05)
    assert st["status"] == "done" and st["result"] == {"fake": True} and len(ran) == 1
    # a staff key reads re-clustering jobs, not retraining ones
    assert api.client.get(f"/api/v1/jobs/{r.json()['id']}", headers=api.h("staff")).status_code == 404


@pytest.mark.slow
def test_at_the_default_tolerance_a_candidate_taught_wrong_labels_is_not_activated(api, corpus, small_corpus,
                                                                                     tmp_path) -> None:
    """The gate's default (tolerance 0: not worse than the baseline) against a candidate that is really
    worse: 224 messages of the corpus (none of the training rows), each corrected to the next domain in
    the taxonomy's order, so the candidate learns a shifted map of words to domains.

    With 8 per domain (112) the damage was at the mercy of the held-out split, which keeps each
    intake topic whole: a change to the place finder regrouped the messages at intake and the gap
    fell from over 0.05 to 0.01 (12 per domain even left the candidate ahead). At 16 per domain it
    shows for every draw tried (random states 1, 2, 3).

    It used to correct forty messages of the shared store to 教育. Whether those were enough to show on
    a held-out split of 14 domains depended on which messages earlier tests had stored and how topics
    grouped them (a held-out domain F1 of about 0.35 moves by as much with the split); this damage does
    not. Its messages go to a store of its own, so later tests never meet them."""
    from triage.office.common import Intake
    from triage.office.office import Office
    from triage.assess.retrain import RetrainConfig, Retrainer
    from triage.store.database import Correction, Store

    data = tmp_path / "small.csv"
    small_corpus.to_csv(data, index=False)
    domains = sorted(corpus["domain"].unique())
    wrong = {d: domains[(k + 1) % len(domains)] for k, d in enumerate(domains)}
    taught = (corpus[~corpus["text"].isin(set(small_corpus["text"]))]
              .groupby("domain").sample(16, random_state=1).reset_index(drop=True))
    store = Store(f"sqlite:///{tmp_path / 'gate.db'}")
    office = Office(store, api.rt.office.triage)
    try:
        ids = [office.intake.submit(Intake(text=r.text, title=r.title), auto_recluster=False)[0].id
               for r in taught.itertuples()]
        with store.session() as s:
            s.add_all([Correction(suggestion_id=i, field="domain", old_value=d, value=wrong[d], actor="test",
                                  reason="故意标错") for i, d in zip(ids, taught["domain"])])
        result = Retrainer(store, office.triage.bundle, tmp_path / "m", RetrainConfig(data=data)).run()
    finally:
        office.close()
    sc = result["scores"]
    assert sc["candidate"]["domain_macro_f1"] < sc["baseline"]["domain_macro_f1"] - 0.05, sc
    assert result["activated"] is False and "未启用" in result["reason"]
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


@pytest.mark.slow
def test_retraining_is_an_admin_job_gated_on_a_held_out_split_and_switches_the_model(api, small_corpus, tmp_path) -> None:
    import time

    from triage.assess.retrain import RetrainConfig, Retrainer

    data = tmp_path / "small.csv"
    small_corpus.to_csv(data, index=False)
    t = first_topic(api)
    m = api.client.get(f"/api/v1/topics/{t['id']}", headers=api.h("staff")).json()["members"][0]
    decide(api, t["id"], action="correct", suggestion_id=m["id"], domain="交通运输", reason="应为交通")
    old = api.rt.office.triage.version
    # an impossible bar: the candidate must beat the baseline by more than 1.0 macro-F1
    refused = Retrainer(api.rt.store, api.rt.office.triage.bundle, tmp_path / "m",
                        RetrainConfig(data=data, tolerance=-1.0)).run()
    assert refused["activated"] is False and refused["reason"]
    assert {"baseline", "candidate", "active"} <= set(refused["scores"]) and refused["corrections"] >= 1
    api.rt.retrain_config = RetrainConfig(data=data, tolerance=1.0)   # any candidate passes
    r = api.client.post("/api/v1/retrain", headers=api.h("admin"))
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    for _ in range(240):
        st = api.client.get(f"/api/v1/jobs/{job}", headers=api.h("admin")).json()
        if st["status"] in ("done", "failed"):
            break
        time.sleep(0.5)
    assert st["status"] == "done", st
    assert st["result"]["activated"] is True and st["result"]["new_corrections"] >= 1
    assert st["progress"]["stage"] == "训练并保存新模型" and st["progress"]["step"] == st["progress"]["steps"] == 6
    api.rt._checked = 0.0
    r = submit(api, "村里到镇上的公交太少", who="staff")
    assert r.json()["assessment"]["model_version"] == st["result"]["version"] != old
    with api.rt.store.session() as s:
        assert s.execute(select(AuditEvent).where(AuditEvent.action == "retrain")).scalars().first() is not None


# ------------------------------------------------------------- stored embeddings, background index, lease
def test_every_stored_message_keeps_its_embeddings_and_rebuilds_embed_nothing(api) -> None:
    from triage.embed.encoders import topic_embeddings

    off = api.rt.office
    with api.rt.store.session() as s:
        rows = s.execute(select(Suggestion.embedding, Suggestion.embedding_model, Suggestion.text,
                                Suggestion.head_embedding)).all()
        msgs = off.index.messages(s, Suggestion.id > 0)
    assert rows and all(r.embedding_model == off.encoder.name for r in rows)
    # the topic space is each message's opening: a short text's own embedding, a long text's head
    assert all((r.head_embedding is not None) == (len(r.text) > 120) for r in rows)
    assert all(r.embedding is not None for r in rows if len(r.text) <= 120)
    enc = off.index.stored_encoder(msgs)
    got = topic_embeddings(enc, msgs["text"].tolist())
    assert enc.misses == 0
    fresh = topic_embeddings(off.state.raw, msgs["text"][:20].tolist())   # the stored vectors are the real ones
    assert np.allclose(got[:20], fresh, atol=1e-4)


def test_reclustering_reads_stored_embeddings_and_embeds_only_older_rows(api) -> None:
    def last_run() -> dict:
        with api.rt.store.session() as s:
            return s.execute(select(AuditEvent.detail).where(AuditEvent.action == "recluster")
                             .order_by(AuditEvent.id.desc())).scalars().first()

    recluster(api)
    before = last_run()
    assert before["without_embeddings"] == 0   # texts_embedded: only the principles' reference sentences
    with api.rt.store.session() as s:
        free = select(Topic.id).where(Topic.status == "candidate", Topic.pinned.is_(False))
        rows = s.execute(select(Suggestion).where(Suggestion.topic_id.in_(free)).order_by(Suggestion.id)
                         .limit(3)).scalars().all()
        texts = {r.text for r in rows}
        for r in rows:   # as if stored before revision 0002
            r.embedding = r.head_embedding = None
    recluster(api)
    after = last_run()
    assert len(texts) == 3 and after["without_embeddings"] == 3
    assert after["texts_embedded"] - before["texts_embedded"] == 3


def test_a_running_reclustering_elsewhere_is_a_409_not_a_second_run(api) -> None:
    assert api.rt.store.claim("recluster", "elsewhere:1:x", 60) is not None
    try:
        r = api.client.post("/api/v1/topics/recluster", headers=api.h("staff"))
        assert r.status_code == 409 and "聚类" in r.json()["error"]["message"]
    finally:
        api.rt.store.release("recluster", "elsewhere:1:x")
    recluster(api)


def test_a_reclustering_job_says_which_stage_it_is_in_while_it_runs(api, monkeypatch) -> None:
    """Minutes at 100k stored messages: GET /jobs/{id} shows the stage, not just "running"."""
    import threading
    import time

    import triage.candidates as candidates

    seen: list[dict] = []
    res = api.rt.office.clustering.recluster(progress=seen.append)
    assert [p["step"] for p in seen] == list(range(1, 9)) and {p["steps"] for p in seen} == {8}
    assert seen[0]["stage"] == "读取留言" and seen[-1]["stage"] == "写入议题" and seen[4]["stage"] == "聚类与描述"
    assert {p["messages"] for p in seen} == {res["messages"]} and res["messages"] > 0
    assert [p["seconds"] for p in seen] == sorted(p["seconds"] for p in seen)

    # held inside the run, right after 五大原则与排序: the job's row says so
    release, reached = threading.Event(), threading.Event()
    themes = candidates.rank_themes

    def held(*a, **kw):
        reached.set()
        assert release.wait(60)
        return themes(*a, **kw)

    monkeypatch.setattr(candidates, "rank_themes", held)
    r = api.client.post("/api/v1/topics/recluster", headers=api.h("staff"))
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    try:
        assert reached.wait(60)
        st = api.client.get(f"/api/v1/jobs/{job}", headers=api.h("staff")).json()
        assert st["status"] == "running"
        assert st["progress"]["stage"] == "五大原则与排序" and (st["progress"]["step"], st["progress"]["steps"]) == (6, 8)
    finally:
        release.set()
    for _ in range(600):
        st = api.client.get(f"/api/v1/jobs/{job}", headers=api.h("staff")).json()
        if st["status"] != "running":
            break
        time.sleep(0.1)
    assert st["status"] == "done" and st["progress"]["stage"] == "写入议题" and st["progress"]["step"] == 8
    assert st["progress"]["messages"] == st["result"]["messages"]


def test_automatic_reclustering_waits_until_the_store_has_grown(api) -> None:
    off = api.rt.office
    assert off.clustering.recluster(only_if_due=True).get("skipped") == "not due"   # just re-clustered


def test_a_background_rebuild_absorbs_what_was_stored_while_it_ran(api) -> None:
    off = api.rt.office
    assert off.index._rebuilding.acquire(timeout=60)   # a rebuild after the last re-clustering may be running
    off.index._rebuilding.release()
    early, upto = off.index.build()
    r = submit(api, "城北新区科技园到地铁站之间没有任何公交接驳，员工每天步行四十分钟", who="staff", submitter="late-1")
    assert r.status_code == 201, r.text
    tid = r.json()["topic_id"]
    real_build = off.index.build
    off.index.build = lambda: (early, upto)   # the index as it was before that submission
    try:
        assert off.index._rebuilding.acquire(timeout=60)
        off.index._rebuild("gen-test")
    finally:
        off.index.build = real_build
    assert off.index.latest is early and off.index._index_gen == "gen-test" and tid in early.ids


def test_a_rebuild_absorbs_outside_the_lock_then_what_came_since_under_it_each_message_once(api) -> None:
    """The messages stored while the index was built are absorbed before the intake lock is taken;
    under it, only those stored since, and none of them twice."""
    off = api.rt.office
    assert off.index._rebuilding.acquire(timeout=60)
    off.index._rebuilding.release()
    early, upto = off.index.build()
    first = submit(api, "城北新区科技园到地铁站之间没有任何公交接驳，员工每天步行四十分钟", who="staff", submitter="late-a")
    assert first.status_code == 201, first.text
    real_build, real_absorb, passes = off.index.build, off.index._absorb_late, []

    def held() -> bool:   # whether some thread holds the intake lock (an RLock: asked from another thread)
        got: list[bool] = []

        def probe() -> None:
            got.append(off.index.lock.acquire(blocking=False))
            if got[0]:
                off.index.lock.release()

        t = threading.Thread(target=probe)
        t.start()
        t.join()
        return not got[0]

    def absorb(index, upto_, seen):
        passes.append((held(), set(seen)))
        got = real_absorb(index, upto_, seen)
        if len(passes) == 1:   # between the two passes, another message arrives
            later = submit(api, "城北新区科技园门口的公交站没有遮雨棚，下雨天员工只能淋雨", who="staff", submitter="late-b")
            assert later.status_code == 201, later.text
            passes.append(later.json()["topic_id"])
        return got

    off.index.build, off.index._absorb_late = (lambda: (early, upto)), absorb
    try:
        assert off.index._rebuilding.acquire(timeout=60)
        off.index._rebuild("gen-test")
    finally:
        off.index.build, off.index._absorb_late = real_build, real_absorb
    (unlocked, none_seen), later_tid, (locked, seen) = passes
    assert not unlocked and not none_seen and locked and seen   # outside the lock first, then under it
    tid = first.json()["topic_id"]
    assert off.index.latest is early and tid in early.ids and later_tid in early.ids
    with api.rt.store.session() as s:   # each message counted once in its topic
        for t in {tid, later_tid}:
            stored = s.execute(select(func.count()).select_from(Suggestion).where(Suggestion.topic_id == t)).scalar_one()
            assert early.count[early.ids.index(t)] == stored


def test_submissions_during_a_reclustering_keep_a_topic_and_sizes_add_up(api, monkeypatch) -> None:
    import triage.candidates as cand
    from triage.office.common import Intake

    off = api.rt.office
    real = cand.build_candidates
    arrived: list[int] = []

    def slow_build(*a, **kw):   # intake goes on while the clustering runs
        for t in ("北辰社区楼道灯又不亮了，晚上上下楼很危险", "幸福村公交一天两班太少了", "锦绣家园停车位太少"):
            row, _a, _r = off.intake.submit(Intake(text=t, submitter=f"meanwhile-{len(arrived)}"), auto_recluster=False)
            arrived.append(row.id)
        return real(*a, **kw)

    monkeypatch.setattr(cand, "build_candidates", slow_build)
    recluster(api)
    with api.rt.store.session() as s:
        late = s.execute(select(Suggestion.topic_id).where(Suggestion.id.in_(arrived))).scalars().all()
        assert len(late) == 3 and all(late)
        sizes = dict(s.execute(select(Topic.id, Topic.size).where(Topic.status == "candidate")).all())
        members = dict(s.execute(select(Suggestion.topic_id, func.count()).group_by(Suggestion.topic_id)).all())
    assert {t: n for t, n in sizes.items() if n} == {t: members.get(t, 0) for t, n in sizes.items() if n}


def test_a_lease_left_by_a_dead_process_or_a_failed_release_is_taken_over(api) -> None:
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for holder in (f"{socket.gethostname()}:{dead.stdout.strip()}:gone",    # kill -9 of a worker
                   f"{socket.gethostname()}:{os.getpid()}:unreleased"):     # this process, release failed
        assert api.rt.store.claim("recluster", holder, 600) is not None
        recluster(api)


def test_one_submitter_posting_four_times_is_one_citizen_in_the_topic_and_its_heat(api) -> None:
    texts = ["江心岛渡口趸船的栏杆锈断了，坐船的人很容易掉下去", "江心岛渡口趸船栏杆还是断的，没人来修",
             "再次反映江心岛渡口趸船栏杆断裂的问题，太危险了", "江心岛渡口的趸船栏杆断了两个月了，请尽快修复"]
    receipts = []
    for t in texts:
        r = submit(api, t, submitter="same-citizen-1")
        assert r.status_code == 201, r.text
        receipts.append(r.json()["receipt"])
    recluster(api)
    with api.rt.store.session() as s:
        tids = set(s.execute(select(Suggestion.topic_id).where(Suggestion.receipt.in_(receipts))).scalars())
        assert len(tids) == 1
        topic = s.get(Topic, tids.pop())
        assert topic.size == 4 and topic.submitters == 1
        assert topic.heat_terms["submitters"]["value"] == 1


def test_a_topic_is_fresh_the_moment_a_message_joins_it_without_a_reclustering(api) -> None:
    texts = ["青石巷社区三号楼的电梯坏了一个月，老人上下楼很困难", "青石巷社区三号楼电梯停运一个月了，请尽快维修",
             "青石巷社区三号楼的电梯又坏了，住高层的老人出不了门"]
    tids = []
    for k, t in enumerate(texts):
        r = submit(api, t, submitter=f"lift-{k}", title="青石巷社区三号楼电梯坏了" if k == 0 else "")
        assert r.status_code == 201, r.text
        with api.rt.store.session() as s:
            tids.append(s.execute(select(Suggestion.topic_id).where(Suggestion.receipt == r.json()["receipt"])).scalar_one())
    with api.rt.store.session() as s:
        topic = s.get(Topic, tids[-1])
        members = s.execute(select(func.count()).select_from(Suggestion).where(Suggestion.topic_id == topic.id)).scalar()
        assert topic.heat > 0 and topic.scorecard.get("principles") and topic.verdict
        assert topic.keywords and topic.label
        # the counts, the heat's citizens and the 群众性 evidence all say the same number of messages
        assert topic.size == members and topic.heat_terms["submitters"]["value"] == topic.submitters
        mass = next(p for p in topic.scorecard["principles"] if p["name"] == "群众性")
        assert f"{members} 条留言" in " ".join(mass["evidence"])


def test_search_finds_a_topic_by_words_in_its_members_not_only_its_label(api) -> None:
    r = submit(api, "花溪巷口的路灯三个月不亮了，晚上走路看不见", submitter="lamp-searcher")
    assert r.status_code == 201, r.text
    with api.rt.store.session() as s:
        tid = s.execute(select(Suggestion.topic_id).where(Suggestion.receipt == r.json()["receipt"])).scalar_one()
        s.get(Topic, tid).label = "花溪巷 · 夜间照明"          # a label that does not say 路灯
    found = api.client.get("/api/v1/topics", params={"q": "路灯"}, headers=api.h("staff")).json()
    assert tid in [t["id"] for t in found["items"]]
    # masked text only: a phone number in a member never finds its topic
    r = submit(api, "花溪巷口路灯坏了，联系电话13812345678", submitter="lamp-searcher-2")
    assert api.client.get("/api/v1/topics", params={"q": "13812345678"}, headers=api.h("staff")).json()["total"] == 0


def test_individual_petitions_stay_out_of_the_topic_list_unless_many_citizens_raise_them(api) -> None:
    r = submit(api, "我叫王小明，我家的低保去年被取消了，请帮我查一下是什么原因", submitter="one-petitioner")
    assert r.status_code == 201, r.text
    with api.rt.store.session() as s:
        tid = s.execute(select(Suggestion.topic_id).where(Suggestion.receipt == r.json()["receipt"])).scalar_one()
        topic = s.get(Topic, tid)
        kind = topic.route_kind
        topic.submitters = 1          # one citizen's petition (earlier tests may have written alike)
    assert kind == "department"
    listed = lambda **p: [t["id"] for t in api.client.get("/api/v1/topics", params={"limit": 1000, **p},
                                                            headers=api.h("staff")).json()["items"]]
    assert tid not in listed() and tid in listed(petitions=True)
    with api.rt.store.session() as s:      # the same petition from many different citizens: a group issue
        s.get(Topic, tid).submitters = api.rt.office.config.petition_group_min
    assert tid in listed()


def test_a_title_with_personal_data_is_masked_for_staff_and_raw_only_through_the_audited_unmask(api) -> None:
    r = submit(api, "小区三号楼地下室漏水好几个月了，物业一直不管", title="张三 13812345678 反映小区漏水",
               submitter="title-pii")
    assert r.status_code == 201, r.text
    with api.rt.store.session() as s:
        tid = s.execute(select(Suggestion.topic_id).where(Suggestion.receipt == r.json()["receipt"])).scalar_one()
    d = api.client.get(f"/api/v1/topics/{tid}", headers=api.h("staff")).json()
    mine = [m for m in d["members"] if "漏水" in m["title"]]
    assert mine and all("13812345678" not in m["title"] and "13812345678" not in m["text"] for m in mine)
    assert all(m.get("raw_title") is None for m in d["members"])
    api.client.post("/review/login", data={"key": api.h("staff")["X-API-Key"]})
    page = api.client.get(f"/review/topics/{tid}")
    api.client.get("/review/logout")
    assert page.status_code == 200 and "反映小区漏水" in page.text and "13812345678" not in page.text
    # the staff key here may unmask: with a reason, the raw title comes back (and the look is audited)
    raw = api.client.get(f"/api/v1/topics/{tid}", params={"unmask": True, "reason": "回访核实"},
                         headers=api.h("staff")).json()
    assert any(m.get("raw_title") == "张三 13812345678 反映小区漏水" for m in raw["members"])


def test_a_message_joining_a_rerouted_topic_moves_its_figures_not_the_staff_decision(api) -> None:
    texts = ["松柏路菜场门口的下水道堵了，污水漫到路上", "松柏路菜场门口下水道又堵了，臭气熏天",
             "松柏路菜场门口的下水道堵塞一周了，请疏通"]
    r = submit(api, texts[0], submitter="drain-0")
    with api.rt.store.session() as s:
        tid = s.execute(select(Suggestion.topic_id).where(Suggestion.receipt == r.json()["receipt"])).scalar_one()
    assert decide(api, tid, action="reroute", committee="tian", reason="跨领域").status_code == 200
    before = api.client.get(f"/api/v1/topics/{tid}", headers=api.h("staff")).json()
    for k, t in enumerate(texts[1:], 1):
        assert submit(api, t, submitter=f"drain-{k}").status_code == 201
    after = api.client.get(f"/api/v1/topics/{tid}", headers=api.h("staff")).json()
    assert after["size"] > before["size"]                  # they joined it, and it moved
    assert after["committee"] == before["committee"] == "提案委员会"
    assert after["route_reason"] == before["route_reason"]


def test_a_search_for_a_wildcard_character_is_taken_literally(api) -> None:
    assert api.client.get("/api/v1/topics", params={"q": "%"}, headers=api.h("staff")).json()["total"] == 0
    assert api.client.get("/api/v1/topics", params={"q": "_"}, headers=api.h("staff")).json()["total"] == 0


def test_search_uses_the_databases_full_text_index_and_needs_no_word_segmentation(api) -> None:
    # jieba cuts 路灯不亮 as 路 / 灯不亮, so a search over its tokens would never find 路灯
    r = submit(api, "枫林湾东门外的路灯不亮已经两周，夜里出行很危险", submitter="fts-1")
    assert r.status_code == 201, r.text
    assert api.rt.store.full_text == ("tsvector" if api.rt.store.dialect == "postgresql" else "fts5")
    with api.rt.store.session() as s:
        tid = s.execute(select(Suggestion.topic_id).where(Suggestion.receipt == r.json()["receipt"])).scalar_one()
        s.get(Topic, tid).label = "枫林湾 · 夜间照明"

    def hits(q: str) -> list[str]:
        res = api.client.get("/api/v1/topics", params={"q": q, "limit": 200}, headers=api.h("staff"))
        assert res.status_code == 200, res.text
        return [t["id"] for t in res.json()["items"]]

    assert tid in hits("路灯") and tid in hits("灯不亮") and tid in hits("路灯不亮")
    assert tid in hits("路灯 夜里")                  # every word of the query, anywhere in the text
    assert tid not in hits("路灯 地铁")              # …all of them
    assert tid not in hits("亮不灯路")               # a phrase is its characters in order
    assert tid in hits("湾")                         # one character: a substring scan, same answer
    assert tid in hits("路灯 夜") and tid not in hits("路灯 昼")   # a two-character and a one-character part
    assert tid in hits("路燈")                       # the query is normalised as the text was
    r = submit(api, "枫林湾西门的路灯，灯不亮的问题也有", submitter="fts-2")
    with api.rt.store.session() as s:
        other = s.execute(select(Suggestion.topic_id).where(Suggestion.receipt == r.json()["receipt"])).scalar_one()
        s.get(Topic, other).label = "枫林湾 · 照明"
    if other != tid:       # its bigrams are those of 路灯不亮, its text is not
        assert other not in hits("路灯不亮") and other in hits("路灯")


def test_on_postgresql_the_text_search_can_use_its_gin_index(api) -> None:
    if api.rt.store.dialect != "postgresql":
        pytest.skip("the GIN index is PostgreSQL's; SQLite's FTS5 table is queried directly")
    from sqlalchemy import text as sql

    cond = api.rt.office.store.text_matches("路灯不亮")
    stmt = select(Suggestion.id).where(cond)
    with api.rt.store.session() as s:
        s.execute(sql("SET LOCAL enable_seqscan = off"))   # a tiny table: make the planner show its choice
        plan = "\n".join(r[0] for r in s.execute(sql("EXPLAIN " + str(stmt.compile(
            dialect=s.bind.dialect, compile_kwargs={"literal_binds": True})))))
    assert "ix_suggestions_search" in plan, plan


# ------------------------------------------------------------- found by a schema fuzzer and a newcomer
def test_a_decision_with_a_field_its_action_does_not_use_is_a_422_naming_it(api) -> None:
    t = first_topic(api)
    r = decide(api, t["id"], action="reject", reason="测试理由", label="y")
    assert r.status_code == 422, r.text
    assert "label" in r.text and "不使用" in r.text
    assert api.client.get(f"/api/v1/topics/{t['id']}", headers=api.h("staff")).json()["status"] == t["status"]


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59", "2300-01-01T00:00:00", "0001-01-01T00:00:00",
                                  "9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:00"])
def test_a_submission_time_outside_the_offices_history_and_now_is_refused(api, when: str) -> None:
    r = submit(api, "锦江路口的红绿灯时间太短，老人过不去", submitted_at=when, submitter="bad-clock")
    assert r.status_code == 422, r.text
    assert "提交时间" in r.json()["error"]["message"]


def test_a_bad_time_already_stored_does_not_break_reclustering_or_heat(api) -> None:
    import datetime as dt

    r = submit(api, "锦江路口的红绿灯时间太短，老人过马路过不去", submitter="old-bad-clock")
    assert r.status_code == 201, r.text
    with api.rt.store.session() as s:   # as written before intake bounded the time
        row = s.execute(select(Suggestion).where(Suggestion.receipt == r.json()["receipt"])).scalar_one()
        row.submitted_at = dt.datetime(9999, 12, 31, 23, 59, 59)
    recluster(api)
    assert submit(api, "锦江路口红绿灯时间太短了", submitter="after-bad-clock").status_code == 201
    listed = api.client.get("/api/v1/topics", params={"limit": 500}, headers=api.h("staff")).json()["items"]
    assert listed and all(0.0 <= t["heat"] <= 1.0 for t in listed)


def test_a_retrain_with_no_new_corrections_is_refused_with_the_reason(api, tmp_path) -> None:
    from triage.assess.retrain import NothingToLearn, Retrainer

    bundle = api.rt.office.triage.bundle
    with api.rt.store.session() as s:
        newest = s.execute(select(func.max(Correction.id))).scalar() or 0
    saved = bundle.manifest.get("max_correction_id")
    bundle.manifest["max_correction_id"] = newest      # the active model has seen every correction
    try:
        r = api.client.post("/api/v1/retrain", headers=api.h("admin"))
        assert r.status_code == 409 and "没有新的人工更正" in r.json()["error"]["message"], r.text
        with pytest.raises(NothingToLearn):
            Retrainer(api.rt.store, bundle, tmp_path / "m").run()
    finally:
        if saved is None:
            bundle.manifest.pop("max_correction_id", None)
        else:
            bundle.manifest["max_correction_id"] = saved


def test_the_last_active_admin_key_cannot_be_revoked(api) -> None:
    me = api.rt.store.find_key(api.keys["admin"])
    others = [k for k in api.rt.store.list_keys() if k.role == "admin" and k.revoked_at is None and k.id != me.id]
    for k in others:      # admin keys made by earlier tests, if any
        api.rt.store.revoke_key(k.id, "test")
    r = api.client.delete(f"/api/v1/keys/{me.id}", headers=api.h("admin"))
    assert r.status_code == 409 and "最后一把" in r.json()["error"]["message"], r.text
    assert api.client.get("/api/v1/keys", headers=api.h("admin")).status_code == 200   # still in charge
    # with a second admin key the first may go (here: the second revokes the new one, which is allowed)
    made = api.client.post("/api/v1/keys", json={"role": "admin", "name": "第二管理员"}, headers=api.h("admin")).json()
    assert api.client.delete(f"/api/v1/keys/{made['id']}", headers=api.h("admin")).status_code == 200


def test_personal_data_sent_through_the_api_and_open311_reaches_no_staff_view_without_unmask(api, caplog) -> None:
    """A title and a body with a name in no trigger context, a mobile, a mistyped ID and a bank card:
    none of them in any answer to a staff key without unmask, on a page, in an export, in the logs
    or in the masked columns; the raw values only through the audited unmask path."""
    import logging

    secrets_ = ["张伟军", "13698765432", "43010219900101123", "6222020200112233445"]
    text = ("锦绣小区东门的下水道堵了三天，物业经理张伟军说不归他管。联系电话13698765432，"
            "身份证号43010219900101123，退款请打到银行卡6222020200112233445")
    caplog.set_level(logging.DEBUG)
    r = submit(api, text, title="张伟军 13698765432 推诿下水道堵塞", submitter="pii-through")
    assert r.status_code == 201, r.text
    services = api.client.get("/open311/v2/services.json").json()
    o = api.client.post("/open311/v2/requests.json", data={
        "api_key": api.keys["portal"], "service_code": services[0]["service_code"], "description": text})
    assert o.status_code == 201, o.text
    with api.rt.store.session() as s:
        rows = s.execute(select(Suggestion).where(Suggestion.receipt.in_(
            [r.json()["receipt"], o.json()[0]["service_request_id"]]))).scalars().all()
        tids = {x.topic_id for x in rows}
        masked_cols = " ".join(f"{x.text} {x.tokens} {x.search_doc}" for x in rows)
    assert len(rows) == 2 and not any(v in masked_cols for v in secrets_)
    seen = [api.client.get(f"/api/v1/topics/{t}", headers=api.h("clerk")).text for t in tids]
    seen.append(api.client.get("/api/v1/topics", params={"limit": 500}, headers=api.h("clerk")).text)
    seen.append(r.text + o.text)
    api.client.post("/review/login", data={"key": api.keys["clerk"]})
    seen += [api.client.get(f"/review/topics/{t}").text for t in tids]
    seen += [api.client.get("/review/export", params={"ids": list(tids), "format": f}).content.decode("utf-8-sig")
             for f in ("html", "csv")]
    api.client.get("/review/logout")
    seen.append(caplog.text)
    for page_ in seen:
        assert not any(v in page_ for v in secrets_), [v for v in secrets_ if v in page_]
    # the raw values: only with the unmask permission and a reason, and the look is audited
    raw = api.client.get(f"/api/v1/topics/{next(iter(tids))}", params={"unmask": True, "reason": "回访核实"},
                         headers=api.h("staff"))
    assert raw.status_code == 200 and "张伟军" in raw.text
    with api.rt.store.session() as s:
        assert s.execute(select(AuditEvent).where(AuditEvent.action == "unmask")).scalars().first() is not None


def test_the_schema_documents_every_answer_the_service_gives(api) -> None:
    spec = api.client.get("/openapi.json").json()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            if path.startswith("/api/v1/") or path.startswith("/open311/"):
                assert {"401", "403", "404", "409", "413", "422", "429", "503"} <= codes, (method, path, codes)
    assert list(spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    body = spec["paths"]["/open311/v2/requests.json"]["post"]["requestBody"]["content"]
    codes = [s["service_code"] for s in api.client.get("/open311/v2/services.json").json()]
    assert body["application/x-www-form-urlencoded"]["schema"]["properties"]["service_code"]["enum"] == codes


@pytest.mark.parametrize("method, path, kw", [
    ("get", "/api/v1/topics", {"params": {"until": "0.5"}}),                       # a number is no date
    ("post", "/api/v1/classify", {"json": {"texts": ["路灯坏了"], "full": 0}}),       # 0 is no boolean
    ("get", "/api/v1/jobs/3044059227555489989961492035796992", {}),                  # no INTEGER holds it
    ("post", "/api/v1/suggestions", {"json": {"text": "路灯坏了好几天", "support": False}}),
])
def test_what_the_schema_forbids_is_refused_not_coerced(api, method: str, path: str, kw: dict) -> None:
    r = getattr(api.client, method)(path, headers=api.h("admin"), **kw)
    assert r.status_code == 422, r.text


def test_a_405_names_every_method_the_path_serves(api) -> None:
    r = api.client.put("/api/v1/keys", headers=api.h("admin"))
    assert r.status_code == 405 and set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}


def test_a_title_and_body_over_the_limit_together_is_refused_with_the_reason_not_a_500(api) -> None:
    """Each within its own limit, together longer than a message may be: the model reads both."""
    from triage.pipeline import MAX_CHARS

    body = ("村里的路灯坏了半年没人修，晚上出行很不方便。" * 2000)[:MAX_CHARS - 5]
    r = submit(api, body, title="关于村里路灯长期损坏无人维修的问题反映")
    assert 400 <= r.status_code < 500 and "过长" in r.json()["error"]["message"], r.text
    assert submit(api, body[:MAX_CHARS - 100], title="路灯").status_code == 201
