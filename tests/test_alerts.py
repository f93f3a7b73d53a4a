"""Alerts end to end: messages through intake, a real SMTP server (aiosmtpd) and a real HTTP receiver on
127.0.0.1, the outbox deciding once and delivering once from several workers."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
import xml.etree.ElementTree as ET
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from triage.office.alerts import SIGNATURE_HEADER, TIMESTAMP_HEADER, AlertEngine, AlertsConfig, create_subscription
from triage.office.common import Intake
from triage.store.database import Alert, AuditEvent, Delivery, Subscription, Topic

pytest.importorskip("aiosmtpd", reason="aiosmtpd (a dev dependency) runs the test mail server")

PHONE, ID_NUMBER = "13912345678", "110101199003074477"


class Mailbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):   # aiosmtpd's handler hook
        self.messages.append(message_from_bytes(envelope.original_content, policy=policy.default))
        return "250 OK"


@pytest.fixture
def smtp():
    from aiosmtpd.controller import Controller

    import socket

    with socket.socket() as probe:   # aiosmtpd connects to its own port to check it started: no port 0
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    box = Mailbox()
    ctl = Controller(box, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield box, port
    finally:
        ctl.stop()


class Receiver:
    """An HTTP endpoint that answers 500 to its first ``fail`` requests, then 204; keeps every request."""

    def __init__(self, fail: int = 0) -> None:
        self.fail, self.requests = fail, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):   # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((dict(self.headers), body))
                self.send_response(500 if len(outer.requests) <= outer.fail else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver(fail=2)
    yield r
    r.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def rt(request, tmp_path):
    """The service's runtime on a fresh database: SQLite, and PostgreSQL where it runs (the claims and the
    unique decision keys are what two workers race on, and the two databases lock differently)."""
    from service.runtime import Runtime, Settings

    from .conftest import _drop_postgres, _postgres_url

    url = f"sqlite:///{tmp_path / 'a.db'}" if request.param == "sqlite" else _postgres_url()
    if url is None:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (database test): PostgreSQL tests skipped")
    runtime = Runtime(Settings(database_url=url, home=str(tmp_path), recluster_every=10_000,
                               recluster_quiet_s=0, alerts_interval_s=0))
    yield runtime
    runtime.close()
    if request.param == "postgresql":
        _drop_postgres(url)


def engine(rt, port: int, worker: str) -> AlertEngine:
    return AlertEngine(rt.store, AlertsConfig(public_url="http://triage.test", smtp_host="127.0.0.1", smtp_port=port,
                                              backoff_s=0, claim_s=60), worker=worker)


COMPLAINTS = [
    "锦绣家园小区的路灯坏了一个多月，晚上出门很不安全，请尽快修复。联系电话{phone}",
    "锦绣家园小区路灯坏了很久了，老人晚上摔倒过，希望尽快维修路灯",
    "反映锦绣家园小区路灯不亮的问题，晚上一片漆黑，身份证号{id}",
    "锦绣家园小区路灯一直不亮，物业不管，请有关部门督促修复路灯",
    "锦绣家园小区的路灯坏了，晚上回家看不见路，请求修复",
    "锦绣家园小区里的路灯全坏了，希望相关部门尽快维修",
]


def feed(rt, n: int, start: int = 0) -> str:
    """``n`` citizens complain about one compound's street lights; the topic they join. The first
    messages of an empty store are clustered once, as the service does, so that later ones join them."""
    tid = None
    for k in range(start, start + n):
        text = COMPLAINTS[k % len(COMPLAINTS)].format(phone=PHONE, id=ID_NUMBER)
        row, _a, _r = rt.office.intake.submit(Intake(text=text, submitter=f"citizen-{k}", channel="网上征题",
                                              submitted_at=dt.datetime.utcnow() - dt.timedelta(minutes=60 - k)),
                                       auto_recluster=False)
        tid = row.id
    if start == 0:
        rt.office.clustering.recluster()
    with rt.store.session() as s:
        from triage.store.database import Suggestion

        return s.get(Suggestion, tid).topic_id


def heat_of(rt, tid: str) -> float:
    with rt.store.session() as s:
        return float(s.get(Topic, tid).heat)


def test_a_topic_crossing_a_threshold_sends_one_email_and_one_signed_webhook(rt, smtp, receiver) -> None:
    box, port = smtp
    receiver.fail = 0
    tid = feed(rt, 2)
    threshold = round(heat_of(rt, tid) + 0.02, 3)   # crossed only once more citizens write
    mail = create_subscription(rt.store, "staff-a", None, "staff", "路灯提醒", "email", "office@example.org", "now",
                               {"keyword": "路灯"}, {"heat_above": threshold})
    hook = create_subscription(rt.store, "staff-a", None, "staff", "路灯 webhook", "webhook", receiver.url, "now",
                               {"keyword": "路灯"}, {"heat_above": threshold})
    e = engine(rt, port, "w1")
    assert e.run_once()["created"] == 0 and not box.messages and not receiver.requests
    for k in range(2, 6):   # more citizens, until the topic is hotter than the threshold
        assert feed(rt, 1, start=k) == tid
        e.run_once()
        if heat_of(rt, tid) >= threshold:
            break
    assert heat_of(rt, tid) >= threshold
    with rt.store.session() as s:
        state = [(a.dedup_key, a.status, a.attempts, a.last_error) for a in s.execute(select(Alert)).scalars()]
        state.append(s.get(Topic, tid).label)
    assert len(box.messages) == 1 and len(receiver.requests) == 1, state

    msg = box.messages[0]
    assert msg["To"] == "office@example.org" and "热度超过阈值" in msg["Subject"]
    text = msg.get_body(("plain",)).get_content()
    page = msg.get_body(("html",)).get_content()
    assert "路灯" in text and "位群众" in text and f"http://triage.test/review/topics/{tid}" in text and "五大原则" in text
    assert "<table>" in page and "代表性留言（已脱敏）" in page
    headers, body = receiver.requests[0]
    for raw in (PHONE, ID_NUMBER):
        assert raw not in text and raw not in page and raw.encode() not in body
    # the signature: HMAC-SHA256 over "timestamp.body" with the subscription's secret
    with rt.store.session() as s:
        secret = s.get(Subscription, hook.id).secret
    ts = headers[TIMESTAMP_HEADER]
    assert headers[SIGNATURE_HEADER] == "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    data = json.loads(body)
    assert data["subscription"] == hook.id and data["alerts"][0]["topic_id"] == tid and data["alerts"][0]["heat"] >= threshold

    # a restart (a new engine, another worker name) and two workers at once send nothing again
    engine(rt, port, "w2").run_once()
    pair = [engine(rt, port, f"w{k}") for k in (3, 4)]
    threads = [threading.Thread(target=x.run_once) for x in pair]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(box.messages) == 1 and len(receiver.requests) == 1
    with rt.store.session() as s:
        assert {a.status for a in s.execute(select(Alert)).scalars()} == {"sent"}
        assert s.execute(select(AuditEvent).where(AuditEvent.action == "subscribe")).scalars().all()


def test_two_workers_deciding_and_sending_at_once_send_each_alert_once(rt, smtp) -> None:
    box, port = smtp
    for k in range(3):   # subscribed first: a topic that exists already is no "new" topic
        create_subscription(rt.store, "staff-b", None, "staff", f"新议题 {k}", "email", f"c{k}@example.org", "now", {},
                            {"new_topic": True, "heat_above": 0.01})
    tid = feed(rt, 4)
    workers = [engine(rt, port, f"w{k}") for k in range(4)]
    barrier = threading.Barrier(len(workers))

    def go(x):
        barrier.wait()
        x.run_once()

    threads = [threading.Thread(target=go, args=(x,)) for x in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x in workers:   # whatever one round left claimed by another is sent by the next
        x.run_once()
    # three subscriptions × two triggers about one topic: six alerts, six e-mails, none twice
    assert len(box.messages) == 6
    assert sorted(m["To"] for m in box.messages) == sorted(f"c{k}@example.org" for k in range(3) for _ in range(2))
    with rt.store.session() as s:
        alerts = s.execute(select(Alert)).scalars().all()
        assert len(alerts) == 6 and all(a.topic_id == tid and a.status == "sent" and a.attempts == 1 for a in alerts)


def test_a_receiver_that_fails_twice_gets_the_alert_on_the_third_try(rt, smtp, receiver) -> None:
    _box, port = smtp
    feed(rt, 3)
    create_subscription(rt.store, "staff-c", None, "staff", "hook", "webhook", receiver.url, "now", {}, {"heat_above": 0.01})
    e = engine(rt, port, "w1")
    results = [e.run_once() for _ in range(3)]
    assert [r["retry"] for r in results] == [1, 1, 0] and results[2]["sent"] == 1
    assert len(receiver.requests) == 3 and receiver.requests[0][1] == receiver.requests[2][1]   # the same alert
    with rt.store.session() as s:
        tries = s.execute(select(Delivery).order_by(Delivery.id)).scalars().all()
        assert [(d.attempt, d.status_code, d.ok) for d in tries] == [(1, 500, False), (2, 500, False), (3, 204, True)]
    assert e.run_once()["sent"] == 0 and len(receiver.requests) == 3


def test_a_delivery_that_keeps_failing_is_given_up_after_max_attempts_not_lost_silently(rt) -> None:
    feed(rt, 3)
    create_subscription(rt.store, "staff-d", None, "staff", "mail", "email", "x@example.org", "now", {}, {"heat_above": 0.01})
    e = AlertEngine(rt.store, AlertsConfig(smtp_host="127.0.0.1", smtp_port=1, backoff_s=0, max_attempts=2), worker="w1")
    e.run_once()
    e.run_once()
    with rt.store.session() as s:
        a = s.execute(select(Alert)).scalar_one()
        assert a.status == "failed" and a.attempts == 2 and a.last_error


def test_the_atom_feed_validates_and_lists_the_alerts(rt, smtp) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app

    _box, port = smtp
    sub = create_subscription(rt.store, "staff-e", None, "staff", "读者", "atom", "", "now", {"keyword": "路灯"},
                              {"new_topic": True, "heat_above": 0.01})
    tid = feed(rt, 4)
    engine(rt, port, "w1").run_once()
    with TestClient(create_app(runtime=rt)) as client:
        r = client.get(f"/api/v1/feeds/{sub.feed_token}.atom")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/atom+xml")
        root = ET.fromstring(r.content)
        ns = {"a": "http://www.w3.org/2005/Atom"}
        entries = root.findall("a:entry", ns)
        assert root.tag == "{http://www.w3.org/2005/Atom}feed" and len(entries) == 2
        assert all(e.find("a:id", ns).text.startswith("urn:triage:alert:") and "路灯" in e.find("a:title", ns).text
                   for e in entries)
        assert {e.find("a:link", ns).get("href") for e in entries} == {f"http://triage.test/review/topics/{tid}"}
        assert PHONE not in r.text and ID_NUMBER not in r.text
        assert client.get("/api/v1/feeds/" + "x" * 32 + ".atom").status_code == 404


def test_the_subscription_api_checks_owns_and_audits(rt) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app

    _a, admin = rt.store.create_key("admin", "boss")
    _s, staff = rt.store.create_key("staff", "clerk")
    _o, other = rt.store.create_key("staff", "other")
    with TestClient(create_app(runtime=rt)) as client:
        body = {"name": "K3县环保", "channel": "webhook", "target": "https://hooks.example.org/x", "schedule": "weekly",
                "filters": {"place": "K3县", "domain": "环境保护"}, "triggers": {"heat_above": 0.6, "growth": {"days": 7}}}
        r = client.post("/api/v1/subscriptions", json=body, headers={"X-API-Key": staff})
        assert r.status_code == 201 and len(r.json()["secret"]) == 64 and r.json()["feed_url"].endswith(".atom")
        sid = r.json()["id"]
        assert client.get(f"/api/v1/subscriptions/{sid}", headers={"X-API-Key": staff}).json()["secret"] is None
        assert client.get(f"/api/v1/subscriptions/{sid}", headers={"X-API-Key": other}).status_code == 404
        assert [x["id"] for x in client.get("/api/v1/subscriptions", headers={"X-API-Key": admin}).json()] == [sid]
        assert client.get("/api/v1/subscriptions", headers={"X-API-Key": other}).json() == []
        bad = client.post("/api/v1/subscriptions", json={**body, "triggers": {}}, headers={"X-API-Key": staff})
        assert bad.status_code == 422 and "触发条件" in bad.text
        bad = client.post("/api/v1/subscriptions", json={**body, "channel": "email", "target": "not-an-address"},
                          headers={"X-API-Key": staff})
        assert bad.status_code == 422 and "收件地址" in bad.text
        assert client.delete(f"/api/v1/subscriptions/{sid}", headers={"X-API-Key": other}).status_code == 404
        assert client.delete(f"/api/v1/subscriptions/{sid}", headers={"X-API-Key": staff}).status_code == 200
        assert client.delete(f"/api/v1/subscriptions/{sid}", headers={"X-API-Key": staff}).status_code == 404
    with rt.store.session() as s:
        assert [e.action for e in s.execute(select(AuditEvent).where(AuditEvent.target_type == "subscription")
                                            .order_by(AuditEvent.id)).scalars()] == ["subscribe", "unsubscribe"]


def test_a_weekly_digest_goes_out_once_its_week_is_up(rt, smtp) -> None:
    box, port = smtp
    feed(rt, 4)
    sub = create_subscription(rt.store, "staff-f", None, "staff", "主席会议周报", "email", "chair@example.org", "weekly", {},
                              {"digest": True})
    now = [dt.datetime.utcnow()]
    e = engine(rt, port, "w1")
    e.clock = lambda: now[0]
    e.run_once()
    assert not box.messages                    # decided, but the week since the subscription is not up
    now[0] += dt.timedelta(days=7, minutes=1)
    e.run_once()
    assert len(box.messages) == 1 and "每周摘要" in box.messages[0].get_body(("plain",)).get_content()
    e.run_once()
    assert len(box.messages) == 1
    with rt.store.session() as s:
        assert s.get(Subscription, sub.id).last_digest_at is not None


def test_growth_campaign_and_petition_backlog_trigger_once_each(rt) -> None:
    from triage.store.database import Suggestion, utcnow

    now = utcnow()
    with rt.store.session() as s:
        s.add_all([Topic(id="T000101", label="北辰社区 · 楼道灯坏了", status="candidate", heat=0.3, size=4, submitters=4),
                   Topic(id="T000102", label="星沙 · 同一段话", status="candidate", heat=0.2, size=4, submitters=1),
                   Topic(id="T000103", label="个人诉求", status="candidate", route_kind="department", size=2)])
        s.flush()

        def msg(k, tid, days, text="北辰社区楼道灯坏了", who=None, **kw):
            return Suggestion(receipt=f"R{k:05d}", submitted_at=now - dt.timedelta(days=days), raw_text=text, text=text,
                              topic_id=tid, submitter=who or f"c{k}", **kw)

        # growth: three messages this week, one the week before
        s.add_all([msg(1, "T000101", 10), msg(2, "T000101", 2), msg(3, "T000101", 1), msg(4, "T000101", 0.5)])
        # a campaign: one submitter, the same text four times
        s.add_all([msg(10 + k, "T000102", 9, text="请支持星沙项目", who="same") for k in range(4)])   # not growing
        # petitions to one department, older than 30 days and still undecided
        s.add_all([msg(20 + k, "T000103", 40 + k, text="我的工资被拖欠", scope="individual", route_kind="department",
                       route_name="人社局") for k in range(2)])
    create_subscription(rt.store, "staff-g", None, "staff", "增长", "atom", "", "now", {},
                        {"growth": {"days": 7, "factor": 2}, "campaign": True, "backlog": {"days": 30}})
    e = AlertEngine(rt.store, AlertsConfig(), worker="w1")
    assert e.run_once()["created"] == 3
    assert e.run_once()["created"] == 0
    with rt.store.session() as s:
        got = {(a.trigger, a.topic_id or a.payload.get("department")) for a in s.execute(select(Alert)).scalars()}
    assert got == {("growth", "T000101"), ("campaign", "T000102"), ("backlog", "人社局")}


def test_a_committee_digest_lists_its_topics_most_citizens_first_then_by_heat(rt) -> None:
    """The digest's top topics are in the order of every other list (RANK_ORDER), not by heat alone."""
    from triage.office.alerts import committee_digest

    with rt.store.session() as s:
        s.add_all([Topic(id="T000201", label="甲 · 两人", status="candidate", committee_id="c-order", heat=0.30,
                         size=2, submitters=2),
                   Topic(id="T000202", label="乙 · 三人", status="candidate", committee_id="c-order", heat=0.20,
                         size=3, submitters=3),
                   Topic(id="T000203", label="丙 · 三人更热", status="candidate", committee_id="c-order", heat=0.25,
                         size=3, submitters=3)])
    until = dt.datetime.utcnow()
    with rt.store.session() as s:
        d = committee_digest(s, "c-order", until - dt.timedelta(days=7), until, "http://x")
    assert [t["topic_id"] for t in d["topics"]] == ["T000203", "T000202", "T000201"]
