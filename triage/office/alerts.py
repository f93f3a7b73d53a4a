"""Alerts and digests: a committee hears about a heating topic in its remit without opening the page.

A :class:`~triage.store.database.Subscription` says which topics (filters: committee, domain, place, keyword,
verdict), on what (triggers: a new candidate topic, heat crossing a threshold, growth over N days, a
campaign flagged, a backlog of individual petitions per department, a weekly committee digest), how
(e-mail over SMTP, a signed webhook, an Atom feed) and when (at once, daily or weekly digest).

Exactly once, from several workers (the outbox pattern): :meth:`AlertEngine.evaluate` writes every
alert that is due as a row whose ``dedup_key`` is unique, so the decision is made once whichever
worker makes it, and a restart finds it made. :meth:`AlertEngine.deliver` claims a due row with a
conditional UPDATE (one worker wins the claim), sends it, records the attempt in ``deliveries`` and
marks it sent; a failure is retried with exponential backoff until ``max_attempts``. The one window
left is a worker killed between a successful send and its mark: the claim expires and the alert is
sent again (at least once there, never silently lost).

Alerts never carry raw personal data: the payload is built from masked columns only (labels and
texts masked at intake), and every free-text field is masked once more when the payload is built.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import html
import json
import logging
import os
import secrets
import smtplib
import socket
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from sqlalchemy import case, func, or_, select, update

from triage.errors import TriageError
from triage.judge.rank import TERM_LABELS, rank_order_by
from triage.store.database import Alert, AuditEvent, Delivery, Store, Subscription, Suggestion, Topic, utcnow
from triage.text.normalise import clean

log = logging.getLogger(__name__)

CHANNELS = ("email", "webhook", "atom")
SCHEDULES = ("now", "daily", "weekly")
FILTERS = ("committee", "domain", "place", "keyword", "verdict")
TRIGGERS = ("new_topic", "heat_above", "growth", "campaign", "backlog", "digest")
PERIOD = {"daily": dt.timedelta(days=1), "weekly": dt.timedelta(days=7)}
TRIGGER_LABELS = {"new_topic": "新候选议题", "heat_above": "热度超过阈值", "growth": "快速增长", "campaign": "疑似集中刷帖",
                  "backlog": "个人诉求积压", "digest": "每周摘要"}
#: header of a webhook's signature: ``sha256=`` + HMAC-SHA256(secret, timestamp + "." + body), hex
SIGNATURE_HEADER = "X-Triage-Signature"
TIMESTAMP_HEADER = "X-Triage-Timestamp"


class SubscriptionError(TriageError):
    """A subscription that cannot work as given (the API answers 422 with this message)."""


@dataclass
class AlertsConfig:
    """Where alerts go out and how hard delivery tries; read from the environment by :meth:`from_env`."""

    public_url: str = "http://127.0.0.1:8000"
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_sender: str = "triage@localhost"
    max_attempts: int = 6
    backoff_s: float = 30.0          # the first retry waits this long, each next one twice as long
    claim_s: float = 120.0           # a claimed alert is another worker's again after this
    timeout_s: float = 10.0
    min_submitters: int = 2          # a "new topic" is one that at least this many citizens raised

    @classmethod
    def from_env(cls) -> "AlertsConfig":
        e = os.environ.get
        return cls(public_url=(e("TRIAGE_PUBLIC_URL") or cls.public_url).rstrip("/"),
                   smtp_host=e("TRIAGE_SMTP_HOST", ""), smtp_port=int(e("TRIAGE_SMTP_PORT") or 25),
                   smtp_starttls=(e("TRIAGE_SMTP_STARTTLS", "") or "").lower() in ("1", "true", "yes"),
                   smtp_user=e("TRIAGE_SMTP_USER", ""), smtp_password=e("TRIAGE_SMTP_PASSWORD", ""),
                   smtp_sender=e("TRIAGE_SMTP_SENDER") or cls.smtp_sender)


def check_subscription(channel: str, target: str, schedule: str, filters: dict, triggers: dict) -> None:
    """Refuse a subscription that could never deliver or never fire, with a message a clerk can act on."""
    if channel not in CHANNELS:
        raise SubscriptionError(f"渠道 {channel!r} 不可用（可用：{'、'.join(CHANNELS)}）/ unknown channel")
    if schedule not in SCHEDULES:
        raise SubscriptionError(f"发送频率 {schedule!r} 不可用（可用：{'、'.join(SCHEDULES)}）/ unknown schedule")
    if channel == "email" and ("@" not in target or len(target) > 254 or any(c in target for c in " \r\n<>,;")):
        raise SubscriptionError("邮件订阅需要一个有效的收件地址 / an e-mail subscription needs one address")
    if channel == "webhook" and not target.startswith(("http://", "https://")):
        raise SubscriptionError("Webhook 订阅需要 http(s):// 开头的地址 / a webhook needs an http(s) URL")
    unknown = (set(filters) - set(FILTERS)) | (set(triggers) - set(TRIGGERS))
    if unknown:
        raise SubscriptionError(f"未知的条件 {'、'.join(sorted(unknown))} / unknown filter or trigger")
    if not any(v not in (None, False, "", {}) for v in triggers.values()):
        raise SubscriptionError("至少需要一个触发条件 / at least one trigger is needed")
    heat = triggers.get("heat_above")
    if heat is not None and not (isinstance(heat, (int, float)) and 0 < heat <= 1):
        raise SubscriptionError("热度阈值应在 0 到 1 之间 / heat_above must lie in (0, 1]")
    for name in ("growth", "backlog"):
        spec = triggers.get(name)
        if spec:
            days = spec.get("days") if isinstance(spec, dict) else None
            if not isinstance(days, int) or not 1 <= days <= 365:
                raise SubscriptionError(f"{TRIGGER_LABELS[name]}需要 1 到 365 之间的天数 / {name}.days must be 1-365")
    growth = triggers.get("growth")
    if growth and not (isinstance(growth.get("factor", 2), (int, float)) and growth.get("factor", 2) > 1):
        raise SubscriptionError("增长倍数应大于 1 / growth.factor must exceed 1")


def new_feed_token() -> str:
    return secrets.token_urlsafe(24)


def create_subscription(store: Store, owner: str, owner_key_id: int | None, role: str, name: str, channel: str,
                        target: str, schedule: str, filters: dict, triggers: dict) -> Subscription:
    """Check, store and audit a subscription; a webhook gets its signing secret here (shown once)."""
    target = (target or "").strip()
    check_subscription(channel, target, schedule, filters, triggers)
    with store.session() as s:
        x = Subscription(owner=owner, owner_key_id=owner_key_id, name=name, channel=channel,
                         target="" if channel == "atom" else target, schedule=schedule, filters=filters,
                         triggers=triggers, feed_token=new_feed_token(),
                         secret=secrets.token_hex(32) if channel == "webhook" else "", created_at=utcnow())
        s.add(x)
        s.flush()
        s.add(AuditEvent(actor=owner, role=role, action="subscribe", target_type="subscription", target_id=str(x.id),
                         detail={"name": name, "channel": channel, "schedule": schedule, "filters": filters,
                                 "triggers": triggers}))
        s.flush()
        s.expunge(x)
    return x


def end_subscription(store: Store, sub_id: int, actor: str, role: str, key_id: int | None) -> Subscription | None:
    """Stop a subscription (its alerts and deliveries stay on record) and audit it; None when there is
    no such active subscription that this caller may end (their own, or any for an admin)."""
    with store.session() as s:
        x = s.get(Subscription, sub_id)
        if x is None or not x.active or (role != "admin" and x.owner_key_id != key_id):
            return None
        x.active = False
        s.add(AuditEvent(actor=actor, role=role, action="unsubscribe", target_type="subscription",
                         target_id=str(x.id), detail={"name": x.name}))
        s.flush()
        s.expunge(x)
        return x


# ------------------------------------------------------------------------------------ content

def _masked(value: Any) -> Any:
    """Every free text once more through the masker: labels and texts were masked at intake, and an
    alert leaves the building, so nothing that slipped past an older masker goes with it."""
    return clean(value).text if isinstance(value, str) and value else value


def topic_payload(t: Topic, representative: str | None, trigger: str, public_url: str, **extra: Any) -> dict:
    """What an alert about one topic says: masked label and text, heat with its terms, the 五大原则
    verdicts, places, route and a link to the topic page."""
    card = t.scorecard or {}
    return {"kind": "topic", "trigger": trigger, "trigger_label": TRIGGER_LABELS[trigger], "topic_id": t.id,
            "label": _masked(t.label), "heat": round(float(t.heat or 0), 3),
            "heat_terms": {TERM_LABELS.get(k, k): (v.get("points") if isinstance(v, dict) else v)
                           for k, v in (t.heat_terms or {}).items()},
            "verdict": t.verdict, "scorecard": [{"name": p.get("name"), "verdict": p.get("verdict"),
                                                 "evidence": _masked("；".join(map(str, p.get("evidence") or [])))}
                                                for p in card.get("principles", []) if isinstance(p, dict)],
            "places": list(t.places or []), "committee": t.committee or "", "department": t.department or "",
            "size": t.size, "submitters": t.submitters, "status": t.status,
            "representative": _masked((representative or "")[:300]),
            "link": f"{public_url}/review/topics/{t.id}", **extra}


def render(sub: Subscription, alerts: Sequence[Alert]) -> tuple[str, str, str]:
    """(subject, plain text, HTML) of one message carrying ``alerts`` (one, or a digest of several)."""
    items = [a.payload for a in alerts]
    if len(items) == 1:
        p = items[0]
        subject = f"【议题提醒】{p.get('trigger_label', '')}：{p.get('label') or p.get('department') or p.get('committee', '')}"
    else:
        subject = f"【议题提醒】{sub.name or '订阅'}：{len(items)} 条提醒"
    text_parts, html_parts = [], []
    for p in items:
        t, h = _render_one(p)
        text_parts.append(t)
        html_parts.append(h)
    text = f"{sub.name or '订阅'}（{len(items)} 条）\n\n" + "\n\n".join(text_parts) + "\n\n— triage 议题提醒，退订请在审阅页面的“订阅”中删除。\n"
    page = ("<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'><title>" + html.escape(subject) +
            "</title><style>body{font-family:'WenQuanYi Zen Hei','Noto Sans CJK SC',sans-serif;max-width:720px;"
            "margin:auto;color:#222}h2{font-size:1.1em;margin:1.2em 0 .3em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;font-size:.9em}.rep{background:#f6f6f6;padding:6px}"
            ".tag{color:#a00}</style></head><body><h1>" + html.escape(sub.name or "议题提醒") + "</h1>" +
            "".join(html_parts) + "<p style='color:#777'>triage 议题提醒；退订请在审阅页面的“订阅”中删除。</p></body></html>")
    return subject, text, page


def _render_one(p: dict) -> tuple[str, str]:
    e = html.escape
    if p.get("kind") == "backlog":
        t = f"[{p['trigger_label']}] {p['department']}：{p['count']} 件个人诉求超过 {p['days']} 天未处理（最早 {p['oldest']}）"
        return t, f"<h2><span class='tag'>[{e(p['trigger_label'])}]</span> {e(p['department'])}</h2><p>{p['count']} 件个人诉求超过 {p['days']} 天未处理（最早 {e(str(p['oldest']))}）</p>"
    if p.get("kind") == "digest":
        lines = [f"[每周摘要] {p.get('committee') or '全部专委会'}，{p['since']} 至 {p['until']}"]
        rows = []
        for k, tp in enumerate(p.get("topics", []), 1):
            flags = "、".join(tp.get("changes", [])) or "—"
            lines.append(f"{k}. {tp['label']}  热度 {tp['heat']:.3f}  {tp['submitters']} 位群众 / {tp['size']} 条留言  变化：{flags}  {tp['link']}")
            rows.append(f"<tr><td>{k}</td><td><a href='{e(tp['link'])}'>{e(tp['label'])}</a></td><td>{tp['heat']:.3f}</td>"
                        f"<td>{tp['submitters']} 位群众 / {tp['size']} 条留言</td><td>{e(flags)}</td></tr>")
        return "\n".join(lines), (f"<h2>每周摘要：{e(p.get('committee') or '全部专委会')}</h2><p>{e(p['since'])} 至 {e(p['until'])}</p>"
                                  "<table><tr><th>#</th><th>议题</th><th>热度</th><th>人数</th><th>变化</th></tr>" + "".join(rows) + "</table>")
    terms = "；".join(f"{k} {v:+.3f}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in p.get("heat_terms", {}).items())
    principles = "；".join(f"{c['name']}：{c['verdict']}" for c in p.get("scorecard", []))
    t = (f"[{p['trigger_label']}] {p['label']}\n热度 {p['heat']:.3f}（{terms}）\n{p['submitters']} 位群众 / {p['size']} 条留言；"
         f"地点：{'、'.join(p.get('places', [])) or '—'}；专委会：{p.get('committee') or p.get('department') or '—'}\n"
         f"五大原则：{p.get('verdict') or '—'}（{principles or '—'}）\n代表性留言（已脱敏）：{p.get('representative') or '—'}\n{p['link']}")
    card = "".join(f"<tr><td>{e(c['name'] or '')}</td><td>{e(c['verdict'] or '')}</td><td>{e(c['evidence'] or '')}</td></tr>"
                   for c in p.get("scorecard", []))
    h = (f"<h2><span class='tag'>[{e(p['trigger_label'])}]</span> <a href='{e(p['link'])}'>{e(p['label'])}</a></h2>"
         f"<p>热度 <b>{p['heat']:.3f}</b>（{e(terms)}）<br>{p['submitters']} 位群众 / {p['size']} 条留言；"
         f"地点：{e('、'.join(p.get('places', [])) or '—')}；专委会：{e(p.get('committee') or p.get('department') or '—')}</p>"
         f"<table><tr><th>原则</th><th>判断</th><th>依据</th></tr>{card}</table>"
         f"<p class='rep'>代表性留言（已脱敏）：{e(p.get('representative') or '—')}</p>")
    return t, h


def atom_feed(sub: Subscription, alerts: Sequence[Alert], public_url: str) -> str:
    """An Atom 1.0 document (RFC 4287) of a subscription's alerts, newest first."""
    ns = "http://www.w3.org/2005/Atom"
    ET.register_namespace("", ns)
    feed = ET.Element(f"{{{ns}}}feed")
    ET.SubElement(feed, f"{{{ns}}}id").text = f"urn:triage:subscription:{sub.id}"
    ET.SubElement(feed, f"{{{ns}}}title").text = f"议题提醒：{sub.name or sub.id}"
    updated = max((a.created_at for a in alerts), default=sub.created_at)
    ET.SubElement(feed, f"{{{ns}}}updated").text = _iso(updated)
    ET.SubElement(ET.SubElement(feed, f"{{{ns}}}author"), f"{{{ns}}}name").text = "triage"
    ET.SubElement(feed, f"{{{ns}}}link", href=f"{public_url}/review/subscriptions")
    for a in alerts:
        entry = ET.SubElement(feed, f"{{{ns}}}entry")
        ET.SubElement(entry, f"{{{ns}}}id").text = f"urn:triage:alert:{a.id}"
        ET.SubElement(entry, f"{{{ns}}}title").text = a.title
        ET.SubElement(entry, f"{{{ns}}}updated").text = _iso(a.created_at)
        if a.payload.get("link"):
            ET.SubElement(entry, f"{{{ns}}}link", href=a.payload["link"])
        ET.SubElement(entry, f"{{{ns}}}content", type="text").text = _render_one(a.payload)[0]
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(feed, encoding="unicode")


def _iso(t: dt.datetime) -> str:
    return t.replace(microsecond=0).isoformat() + "Z"


# ------------------------------------------------------------------------------------ senders

@dataclass
class Outcome:
    ok: bool
    status_code: int | None = None
    error: str | None = None


def send_email(config: AlertsConfig, to: str, subject: str, text: str, page: str) -> Outcome:
    """One message over SMTP (STARTTLS and login when configured), plain text with an HTML alternative."""
    if not config.smtp_host:
        return Outcome(False, None, "未配置邮件服务器（TRIAGE_SMTP_HOST）/ no SMTP host configured")
    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["To"] = subject, config.smtp_sender, to
    msg.set_content(text)
    msg.add_alternative(page, subtype="html")
    try:
        with smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=config.timeout_s) as smtp:
            if config.smtp_starttls:
                smtp.starttls()
            if config.smtp_user:
                smtp.login(config.smtp_user, config.smtp_password)
            smtp.send_message(msg)
        return Outcome(True, 250)
    except (smtplib.SMTPException, OSError) as exc:
        return Outcome(False, getattr(exc, "smtp_code", None), f"{type(exc).__name__}: {exc}"[:500])


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The webhook signature: hex HMAC-SHA256 of ``timestamp + "." + body`` under the subscription's secret
    (receivers recompute it and refuse a timestamp older than a few minutes: no replays)."""
    return hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def send_webhook(config: AlertsConfig, sub: Subscription, alerts: Sequence[Alert], now: dt.datetime) -> Outcome:
    import httpx

    body = json.dumps({"subscription": sub.id, "name": sub.name, "alerts": [
        {"id": a.id, "trigger": a.trigger, "title": a.title, "created_at": _iso(a.created_at), **a.payload}
        for a in alerts]}, ensure_ascii=False, sort_keys=True).encode("utf-8")
    ts = str(int(now.replace(tzinfo=dt.timezone.utc).timestamp()))
    headers = {"Content-Type": "application/json; charset=utf-8", TIMESTAMP_HEADER: ts,
               SIGNATURE_HEADER: "sha256=" + sign(sub.secret, ts, body), "User-Agent": "triage-alerts"}
    try:
        r = httpx.post(sub.target, content=body, headers=headers, timeout=config.timeout_s)
    except httpx.HTTPError as exc:
        return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:500])
    return Outcome(200 <= r.status_code < 300, r.status_code, None if r.is_success else r.text[:300])


# ------------------------------------------------------------------------------------ engine

def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:64]


@dataclass
class AlertEngine:
    """Decides which alerts are due (:meth:`evaluate`) and delivers them (:meth:`deliver`)."""

    store: Store
    config: AlertsConfig = field(default_factory=AlertsConfig.from_env)
    worker: str = field(default_factory=worker_name)
    clock: Callable[[], dt.datetime] = utcnow

    def run_once(self) -> dict[str, int]:
        """One round, as ``triage alerts run`` and the service's scheduler do it."""
        made = self.evaluate()
        return {"created": made, **self.deliver()}

    # ------------------------------------------------------------------ deciding
    def evaluate(self) -> int:
        """Write every alert that is due and not yet decided; the number written by this call."""
        now = self.clock()
        with self.store.session() as s:
            subs = s.execute(select(Subscription).where(Subscription.active.is_(True))).scalars().all()
            for sub in subs:
                s.expunge(sub)
        made = 0
        for sub in subs:
            try:
                made += self._insert(sub, self._due(sub, now))
            except Exception:  # noqa: BLE001 - one broken subscription must not stop the others
                log.exception("subscription %s could not be evaluated", sub.id)
        return made

    def _insert(self, sub: Subscription, due: list[tuple[str, str, str | None, str, dict]]) -> int:
        if not due:
            return 0
        from sqlalchemy.exc import IntegrityError

        made = 0
        with self.store.session() as s:
            known = set(s.execute(select(Alert.dedup_key).where(Alert.dedup_key.in_([d[0] for d in due]))).scalars())
            for key, trigger, tid, title, payload in due:
                if key in known:
                    continue
                try:
                    with s.begin_nested():   # another worker may decide the same alert at this moment
                        s.add(Alert(subscription_id=sub.id, dedup_key=key, trigger=trigger, topic_id=tid,
                                    title=title, payload=payload, created_at=self.clock(),
                                    next_attempt_at=self.clock()))
                    made += 1
                except IntegrityError:
                    continue
        return made

    def _topics(self, s, sub: Subscription):
        f = sub.filters or {}
        q = select(Topic).where(Topic.status.in_(("candidate", "accepted")), Topic.size > 0)
        if f.get("committee"):
            q = q.where(or_(Topic.committee_id == f["committee"], Topic.committee == f["committee"]))
        if f.get("domain"):
            q = q.where(Topic.domain == f["domain"])
        if f.get("verdict"):
            q = q.where(Topic.verdict == f["verdict"])
        if f.get("keyword"):   # in the label, the keywords or any member's (masked) text, as the page's search
            members = select(Suggestion.topic_id).where(self.store.text_matches(f["keyword"]),
                                                        Suggestion.topic_id.is_not(None))
            q = q.where(or_(Topic.label.contains(f["keyword"], autoescape=True), Topic.id.in_(members)))
        trig = sub.triggers or {}
        if not (trig.get("growth") or trig.get("campaign")):
            # only topics that can fire are read: every worker runs this each minute, and at a large
            # store reading every candidate topic for every subscription was most of the round
            could = []
            if trig.get("heat_above") is not None:
                could.append(Topic.heat >= float(trig["heat_above"]))
            if trig.get("new_topic"):
                could.append((Topic.created_at >= sub.created_at) & (Topic.submitters >= self.config.min_submitters))
            q = q.where(or_(*could)) if could else q
        topics = s.execute(q).scalars().all()
        if f.get("place"):
            topics = [t for t in topics if f["place"] == t.place or any(f["place"] in p for p in (t.places or []))
                      or f["place"] in (t.label or "")]
        return topics

    def _due(self, sub: Subscription, now: dt.datetime) -> list[tuple[str, str, str | None, str, dict]]:
        trig = sub.triggers or {}
        out: list[tuple[str, str, str | None, str, dict]] = []
        url = self.config.public_url
        with self.store.session() as s:
            topics = self._topics(s, sub) if any(trig.get(k) for k in ("new_topic", "heat_above", "growth", "campaign")) else []
            reps = {}
            ids = [t.representative_id for t in topics if t.representative_id]
            if ids:
                reps = dict(s.execute(select(Suggestion.id, Suggestion.text).where(Suggestion.id.in_(ids))).all())

            def add(trigger: str, t: Topic, suffix: str = "", **extra: Any) -> None:
                p = topic_payload(t, reps.get(t.representative_id), trigger, url, **extra)
                out.append((f"{sub.id}:{trigger}:{t.id}{suffix}", trigger, t.id, f"[{TRIGGER_LABELS[trigger]}] {p['label']}", p))

            for t in topics:
                if trig.get("new_topic") and t.created_at >= sub.created_at and (t.submitters or 0) >= self.config.min_submitters:
                    add("new_topic", t)
                if trig.get("heat_above") is not None and float(t.heat or 0) >= float(trig["heat_above"]):
                    add("heat_above", t, threshold=float(trig["heat_above"]))
            if trig.get("growth") and topics:
                days = int(trig["growth"]["days"])
                factor = float(trig["growth"].get("factor", 2))
                recent, before = self._counts(s, [t.id for t in topics], now, days)
                bucket = int(now.timestamp() // (days * 86400))
                for t in topics:
                    r, b = recent.get(t.id, 0), before.get(t.id, 0)
                    if r >= 2 and r >= factor * max(b, 1):
                        add("growth", t, f":{bucket}", days=days, recent=r, before=b)
            if trig.get("campaign") and topics:
                for t in self._campaigns(s, [t for t in topics if (t.size or 0) >= 3]):
                    add("campaign", t)
            if trig.get("backlog"):
                out += self._backlog(s, sub, int(trig["backlog"]["days"]), now)
            if trig.get("digest"):
                period = PERIOD.get(sub.schedule, PERIOD["weekly"])
                bucket = int(now.timestamp() // period.total_seconds())
                since = sub.last_digest_at or now - period   # what changed since the last digest went out
                p = committee_digest(s, (sub.filters or {}).get("committee"), since, now, url)
                out.append((f"{sub.id}:digest:{bucket}", "digest", None, f"[每周摘要] {p.get('committee') or '全部专委会'}", p))
        return out

    @staticmethod
    def _counts(s, tids: list[str], now: dt.datetime, days: int) -> tuple[dict, dict]:
        start, mid = now - dt.timedelta(days=2 * days), now - dt.timedelta(days=days)
        # one row per topic, the two windows as conditional sums (grouping by a comparison with a bound
        # parameter is refused by PostgreSQL: the two parameters are not known to be the same)
        rows = s.execute(select(Suggestion.topic_id, func.sum(case((Suggestion.submitted_at >= mid, 1), else_=0)),
                                func.count())
                         .where(Suggestion.topic_id.in_(tids), Suggestion.submitted_at >= start,
                                Suggestion.submitted_at <= now)
                         .group_by(Suggestion.topic_id)).all()
        recent, before = defaultdict(int), defaultdict(int)
        for tid, r, n in rows:
            recent[tid], before[tid] = int(r or 0), int(n) - int(r or 0)
        return recent, before

    @staticmethod
    def _campaigns(s, topics: list[Topic]) -> list[Topic]:
        """Topics of near-identical messages from few submitters: the same rule as the topic stages."""
        if not topics:
            return []
        rows = s.execute(select(Suggestion.topic_id, Suggestion.text, Suggestion.submitter, Suggestion.id)
                         .where(Suggestion.topic_id.in_([t.id for t in topics]))).all()
        texts, people = defaultdict(list), defaultdict(set)
        for tid, text, who, sid in rows:
            texts[tid].append(text)
            people[tid].add(who or f"_anon{sid}")
        out = []
        for t in topics:
            size = len(texts[t.id])
            dups = size - len(set(texts[t.id]))
            if size >= 3 and dups >= max(2, size // 2) and len(people[t.id]) <= max(2, size // 3):
                out.append(t)
        return out

    def _backlog(self, s, sub: Subscription, days: int, now: dt.datetime) -> list:
        cutoff = now - dt.timedelta(days=days)
        dept = func.coalesce(func.nullif(Suggestion.route_name, ""), "未分办")
        q = (select(dept, func.count(), func.min(Suggestion.submitted_at))
             .join(Topic, Topic.id == Suggestion.topic_id, isouter=True)
             .where(Suggestion.scope == "individual", Suggestion.submitted_at < cutoff,
                    or_(Topic.status.is_(None), Topic.status == "candidate")).group_by(dept))
        wanted = (sub.filters or {}).get("place")   # a department filter reads as the place of its remit
        bucket = int(now.timestamp() // (days * 86400))
        out = []
        for department, count, oldest in s.execute(q).all():
            if wanted and wanted not in department:
                continue
            p = {"kind": "backlog", "trigger": "backlog", "trigger_label": TRIGGER_LABELS["backlog"],
                 "department": department, "count": int(count), "days": days, "oldest": oldest.strftime("%Y-%m-%d"),
                 "link": f"{self.config.public_url}/review/petitions"}
            out.append((f"{sub.id}:backlog:{department}:{bucket}", "backlog", None,
                        f"[个人诉求积压] {department}：{count} 件超过 {days} 天", p))
        return out

    # ------------------------------------------------------------------ delivering
    def deliver(self) -> dict[str, int]:
        """Send what is due: each alert of an at-once subscription, a digest per daily/weekly one whose
        period is up; Atom subscriptions are served by their feed and need no sending."""
        now = self.clock()
        counts = Counter()
        with self.store.session() as s:
            subs = {x.id: x for x in s.execute(select(Subscription).where(Subscription.active.is_(True))).scalars()}
            due = s.execute(select(Alert.id, Alert.subscription_id)
                            .where(Alert.status == "pending", Alert.next_attempt_at <= now,
                                   or_(Alert.claimed_until.is_(None), Alert.claimed_until < now))
                            .order_by(Alert.id)).all()
            for x in subs.values():
                s.expunge(x)
        by_sub: dict[int, list[int]] = defaultdict(list)
        for aid, sid in due:
            if sid in subs:
                by_sub[sid].append(aid)
        for sid, aids in by_sub.items():
            sub = subs[sid]
            if sub.schedule in PERIOD and sub.channel != "atom":
                last = sub.last_digest_at or sub.created_at
                if now - last < PERIOD[sub.schedule]:
                    continue
                batches = [aids]
            else:
                batches = [[a] for a in aids]
            for batch in batches:
                claimed = self._claim(batch, now)
                if claimed:
                    counts[self._send(sub, claimed, now)] += len(claimed)
        return {"sent": counts["sent"], "retry": counts["retry"], "failed": counts["failed"]}

    def _claim(self, ids: list[int], now: dt.datetime) -> list[int]:
        """The alerts of ``ids`` this worker won: a conditional UPDATE per row, so of two workers
        claiming at once exactly one sees its row change."""
        until = now + dt.timedelta(seconds=self.config.claim_s)
        won = []
        with self.store.session() as s:
            for aid in ids:
                r = s.execute(update(Alert).where(Alert.id == aid, Alert.status == "pending",
                                                  or_(Alert.claimed_until.is_(None), Alert.claimed_until < now))
                              .values(claimed_by=self.worker, claimed_until=until))
                if r.rowcount == 1:
                    won.append(aid)
        return won

    def _send(self, sub: Subscription, ids: list[int], now: dt.datetime) -> str:
        with self.store.session() as s:
            alerts = s.execute(select(Alert).where(Alert.id.in_(ids)).order_by(Alert.id)).scalars().all()
            for a in alerts:
                s.expunge(a)
        if sub.channel == "atom":
            outcome = Outcome(True, None, None)          # the feed serves it
        elif sub.channel == "email":
            subject, text, page = render(sub, alerts)
            outcome = send_email(self.config, sub.target, subject, text, page)
        else:
            outcome = send_webhook(self.config, sub, alerts, now)
        with self.store.session() as s:
            result = "sent"
            for a in s.execute(select(Alert).where(Alert.id.in_(ids), Alert.claimed_by == self.worker)).scalars():
                a.attempts += 1
                s.add(Delivery(alert_id=a.id, at=self.clock(), attempt=a.attempts, channel=sub.channel, ok=outcome.ok,
                               status_code=outcome.status_code, error=outcome.error, worker=self.worker))
                a.claimed_by, a.claimed_until = None, None
                if outcome.ok:
                    a.status, a.sent_at, a.last_error = "sent", self.clock(), None
                elif a.attempts >= self.config.max_attempts:
                    a.status, a.last_error, result = "failed", outcome.error, "failed"
                    log.error("alert %s given up after %d attempts: %s", a.id, a.attempts, outcome.error)
                else:
                    a.last_error, result = outcome.error, "retry"
                    a.next_attempt_at = now + dt.timedelta(seconds=self.config.backoff_s * 2 ** (a.attempts - 1))
            if outcome.ok and sub.schedule in PERIOD and sub.channel != "atom":
                row = s.get(Subscription, sub.id)
                if row is not None:
                    row.last_digest_at = now
        return result


# ------------------------------------------------------------------------------------ digest

def committee_digest(s, committee: str | None, since: dt.datetime, until: dt.datetime, public_url: str,
                     limit: int = 10) -> dict:
    """The top topics of a committee's remit and what changed since ``since``: new, rising (more
    messages in the period than in the one before), decided (accepted or rejected), published (回音壁)."""
    q = select(Topic).where(Topic.status.in_(("candidate", "accepted")), Topic.route_kind == "committee")
    if committee:
        q = q.where(or_(Topic.committee_id == committee, Topic.committee == committee))
    top = s.execute(q.order_by(*rank_order_by(Topic), Topic.id).limit(limit)).scalars().all()
    decided = set(s.execute(select(AuditEvent.target_id).where(AuditEvent.target_type == "topic", AuditEvent.at >= since,
                                                               AuditEvent.action.in_(("accept", "reject")))).scalars())
    tids = [t.id for t in top]
    period = until - since
    recent, before = AlertEngine._counts(s, tids, until, max(1, period.days)) if tids else ({}, {})
    topics = []
    for t in top:
        changes = []
        if t.created_at and t.created_at >= since:
            changes.append("新增")
        if recent.get(t.id, 0) > before.get(t.id, 0):
            changes.append("上升")
        if t.id in decided:
            changes.append("已决定")
        if t.published_at and t.published_at >= since:
            changes.append("已上回音壁")
        topics.append({"topic_id": t.id, "label": _masked(t.label), "heat": round(float(t.heat or 0), 3),
                       "submitters": t.submitters, "size": t.size, "status": t.status, "changes": changes,
                       "link": f"{public_url}/review/topics/{t.id}"})
    return {"kind": "digest", "trigger": "digest", "trigger_label": TRIGGER_LABELS["digest"], "committee": committee or "",
            "since": since.strftime("%Y-%m-%d"), "until": until.strftime("%Y-%m-%d"), "topics": topics,
            "link": f"{public_url}/review/digest" + (f"?committee={committee}" if committee else "")}
