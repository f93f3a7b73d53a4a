"""The staff review page: server-rendered (Jinja2, autoescaped), plain forms, no CDN.

Login puts the staff key in an HttpOnly, SameSite=Strict cookie scoped to /review; every action is a
POST that goes through :meth:`triage.office.decisions.Decisions.decide` (the same audit trail as the API) and
redirects back (post/redirect/get), so a reload never repeats an action.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from urllib.parse import urlencode

import pandas as pd
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from service import charts
from service.deps import actor_of
from service.runtime import Runtime
from triage.errors import TriageError
from triage.judge.rank import TERM_LABELS, rank_order_by
from triage.office.review import needs_review, overview, petitions_by_department, similar_topics, sparkline_points, weekly_counts
from triage.store.database import LIFECYCLE, ApiKey, Suggestion, Topic

BASE = "/review"
COOKIE = "triage_key"
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))
templates.env.globals["term_label"] = lambda k: TERM_LABELS.get(k, k)
router = APIRouter(prefix=BASE, include_in_schema=False)


class LoginRequired(Exception):
    """Raised by :func:`staff`: the app answers with a redirect to the login form."""


def _rt(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    rt.check_model()
    return rt


async def staff(request: Request) -> ApiKey:
    key = request.cookies.get(COOKIE)
    row = await run_in_threadpool(_rt(request).keys.get, key) if key and len(key) <= 200 else None
    if row is None or row.role not in ("staff", "admin"):
        raise LoginRequired()
    return row


def page(request: Request, name: str, key: ApiKey | None, **ctx) -> HTMLResponse:
    ctx.update(base=BASE, who=key, ok=request.query_params.get("ok"), err=request.query_params.get("err"))
    return templates.TemplateResponse(request, name, ctx)


def _back(url: str, **msg: str) -> RedirectResponse:
    sep = "&" if "?" in url else "?"
    return RedirectResponse(url + (sep + urlencode(msg) if msg else ""), status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return page(request, "login.html", None)


@router.post("/login")
def login(request: Request, key: str = Form(..., max_length=200)) -> Response:
    row = _rt(request).keys.get(key.strip())
    if row is None or row.role not in ("staff", "admin"):
        return _back(f"{BASE}/login", err="密钥无效，或不是工作人员密钥")
    resp = _back(f"{BASE}/", ok=f"欢迎，{row.name}")
    resp.set_cookie(COOKIE, key.strip(), httponly=True, samesite="strict", path=BASE, max_age=12 * 3600)
    return resp


@router.get("/logout")
def logout() -> Response:
    resp = _back(f"{BASE}/login", ok="已退出")
    resp.delete_cookie(COOKIE, path=BASE)
    return resp


def _lists(rt: Runtime) -> dict:
    tax = rt.office.triage.taxonomy
    return {"domains": tax.domain_names, "committees": tax.committees, "scopes": tax.scopes}


@router.get("/", response_class=HTMLResponse)
def topic_list(request: Request, key: ApiKey = Depends(staff), status: str = "", domain: str = "",
               committee: str = "", verdict: str = "", q: str = Query("", max_length=100), days: str = "",
               sort: str = "heat", limit: int = Query(500, ge=1, le=1000), offset: int = Query(0, ge=0, le=1_000_000_000)) -> HTMLResponse:
    rt = _rt(request)
    sort = sort if sort in ("heat", "size", "recent") else "heat"
    status = status if status in ("candidate", "accepted", "rejected", "merged") else ""
    since = None
    if days.isdigit():
        since = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(days=int(days))
    total, rows = rt.office.views.list_topics(status=status or None, domain=domain or None, committee=committee or None,
                                        verdict=verdict or None, since=since, q=q or None, sort=sort,
                                        limit=limit, offset=offset)
    weekly = weekly_counts(rt.store, [t.id for t in rows])
    from triage.judge.principles import FORWARD, PROPOSE, RESEARCH, UNSUITABLE

    params = dict(request.query_params)
    params["offset"] = str(offset + limit)
    return page(request, "list.html", key, topics=rows, total=total, offset=offset,
                sparks={t.id: sparkline_points(weekly.get(t.id, [])) for t in rows},
                f={"status": status, "domain": domain, "committee": committee, "verdict": verdict, "q": q,
                   "days": int(days) if days.isdigit() else None, "sort": sort},
                verdicts=[PROPOSE, RESEARCH, FORWARD, UNSUITABLE], more=offset + limit < total,
                next_url=f"{BASE}/?{urlencode(params)}", **_lists(rt))


@router.get("/topics/{topic_id}", response_class=HTMLResponse)
def topic_page(request: Request, topic_id: str, key: ApiKey = Depends(staff), unmask: str = "",
               reason: str = Query("", max_length=500)) -> Response:
    rt = _rt(request)
    try:
        d = rt.office.views.topic(topic_id, actor_of(key), unmask=bool(unmask), reason=reason)
    except TriageError as exc:
        return _back(f"{BASE}/", err=str(exc)) if not unmask else _back(f"{BASE}/topics/{topic_id}", err=str(exc))
    t = d["topic"]
    cur = LIFECYCLE.index(t.stage) if t.stage in LIFECYCLE else 0
    _total, others = rt.office.views.list_topics(status="candidate", domain=t.domain, limit=50, petitions=True)
    return page(request, "topic.html", key, t=t, representative=d["representative"], members=d["members"],
                decisions=d["decisions"], unmasked=bool(unmask), can_unmask=key.can_unmask,
                similar=similar_topics(rt.store, t), others=[o for o in others if o.id != t.id],
                stages=LIFECYCLE[cur + 1:], next_stage=LIFECYCLE[min(cur + 1, len(LIFECYCLE) - 1)], **_lists(rt))


@router.post("/topics/{topic_id}/decide")
async def decide(request: Request, topic_id: str, key: ApiKey = Depends(staff)) -> Response:
    rt = _rt(request)
    form = await request.form()
    f = {k: v.strip() for k, v in form.items() if isinstance(v, str) and v.strip()}
    action, reason = f.pop("action", ""), f.pop("reason", "")
    back = f.pop("back", "")
    params: dict = {}
    for name in ("into", "label", "committee", "department", "domain", "scope", "stage", "outcome_class",
                 "outcome_unit", "outcome"):
        if name in f:
            params[name] = f[name][:5000]
    if "suggestion_id" in f and f["suggestion_id"].isdigit():
        params["suggestion_id"] = int(f["suggestion_id"])
    if "members" in f:
        params["members"] = [int(x) for x in f["members"].split(",") if x.strip().isdigit()]
    if action == "split" and not params.get("members"):
        return _back(f"{BASE}/topics/{topic_id}", err="请先勾选要拆出的留言")
    target = f"{BASE}/queue" if back == "queue" else f"{BASE}/topics/{topic_id}"
    try:
        res = await run_in_threadpool(rt.office.decisions.decide, topic_id, action, actor_of(key), reason, **params)
    except TriageError as exc:
        return _back(target, err=str(exc))
    names = {"accept": "已采纳为协商议题", "reject": "已驳回", "merge": "已合并", "split": "已拆分", "reroute": "已改派",
             "relabel": "标签已更新", "correct": "已更正（将用于重新训练）", "advance": "流程已推进"}
    if action == "merge":
        target = f"{BASE}/topics/{params['into']}"
    if action == "split" and res.get("new_topic_id"):
        return _back(f"{BASE}/topics/{res['new_topic_id']}", ok=f"已拆出新议题 {res['new_topic_id']}")
    return _back(target, ok=names.get(action, "已完成"))


@router.get("/queue", response_class=HTMLResponse)
def queue(request: Request, key: ApiKey = Depends(staff)) -> HTMLResponse:
    rt = _rt(request)
    return page(request, "queue.html", key, nav="queue", items=needs_review(rt.store), **_lists(rt))


@router.get("/petitions", response_class=HTMLResponse)
def petitions(request: Request, key: ApiKey = Depends(staff)) -> HTMLResponse:
    rt = _rt(request)
    return page(request, "petitions.html", key, nav="petitions", groups=petitions_by_department(rt.store))


@router.get("/overview", response_class=HTMLResponse)
def overview_page(request: Request, key: ApiKey = Depends(staff)) -> HTMLResponse:
    rt = _rt(request)
    st = overview(rt.store)
    scopes = rt.office.triage.taxonomy.scopes
    ch = {"weekly": charts.stacked_weeks(st["weeks"], st["by_domain"]),
          "scopes": charts.bars({scopes.get(k, k): v for k, v in st["scopes"].items()}),
          "verdicts": charts.bars(st["verdicts"])}
    return page(request, "overview.html", key, nav="overview", stats=st, charts=ch)


@router.get("/export")
def export(request: Request, key: ApiKey = Depends(staff), ids: list[str] = Query(default=[]),
           status: str = "", format: str = "html") -> Response:
    rt = _rt(request)
    with rt.store.session() as s:
        if ids:
            topics = [t for t in (s.get(Topic, i) for i in ids[:500]) if t is not None]
        else:
            topics = list(s.execute(select(Topic).where(Topic.status == (status or "accepted"))
                                    .order_by(*rank_order_by(Topic), Topic.id).limit(500)).scalars())
        reps: dict[str, list[str]] = {}
        for t in topics:
            members = s.execute(select(Suggestion).where(Suggestion.topic_id == t.id)
                                .order_by(Suggestion.submitted_at).limit(50)).scalars().all()
            first = [m for m in members if m.id == t.representative_id] + [m for m in members if m.id != t.representative_id]
            reps[t.id] = [m.text for m in first[:3]]
    if format in ("csv", "xlsx"):
        rows = [{"编号": t.id, "标签": t.label, "热度": round(t.heat, 3), "留言数": t.size, "提交人数": t.submitters,
                 "领域": t.domain, "专委会/部门": t.committee or t.department, "状态": t.status, "阶段": t.stage,
                 "结论": t.verdict, "理由": (t.scorecard or {}).get("reason", ""),
                 **{p["name"]: p["verdict"] for p in (t.scorecard or {}).get("principles", [])},
                 "代表性留言": "\n".join(reps[t.id])} for t in topics]
        frame = pd.DataFrame(rows)
        if format == "csv":
            return Response(frame.to_csv(index=False).encode("utf-8-sig"), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": "attachment; filename=topics.csv"})
        buf = io.BytesIO()
        frame.to_excel(buf, index=False)
        return Response(buf.getvalue(), media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                        headers={"Content-Disposition": "attachment; filename=topics.xlsx"})
    q = urlencode([("ids", i) for i in ids] + ([("status", status)] if status else []))
    return templates.TemplateResponse(request, "export.html", {
        "base": BASE, "topics": topics, "reps": reps, "generated": dt.date.today().isoformat(),
        "csv_url": f"{BASE}/export?{q}&format=csv", "xlsx_url": f"{BASE}/export?{q}&format=xlsx"})


# ------------------------------------------------------------------ subscriptions (triage.office.alerts)
_CHANNELS = {"email": "电子邮件", "webhook": "Webhook", "atom": "Atom 订阅源"}
_SCHEDULES = {"now": "即时", "daily": "每日摘要", "weekly": "每周摘要"}
_FILTER_LABELS = {"committee": "专委会", "domain": "领域", "place": "地点", "keyword": "关键词", "verdict": "五大原则"}
_STATUSES = {"pending": "待发送", "sent": "已发送", "failed": "发送失败"}


@router.get("/subscriptions", response_class=HTMLResponse)
def subscriptions_page(request: Request, key: ApiKey = Depends(staff)) -> HTMLResponse:
    from service.routes.alerts import alerts_of
    from triage.office.alerts import TRIGGER_LABELS
    from triage.store.database import Subscription

    rt = _rt(request)
    with rt.store.session() as s:
        q = select(Subscription).where(Subscription.active.is_(True)).order_by(Subscription.id)
        if key.role != "admin":
            q = q.where(Subscription.owner_key_id == key.id)
        subs = s.execute(q).scalars().all()
        for x in subs:
            s.expunge(x)
    alerts = {x.id: alerts_of(rt, x.id, limit=10) for x in subs}
    from triage.judge.principles import FORWARD, PROPOSE, RESEARCH, UNSUITABLE

    return page(request, "subscriptions.html", key, nav="subscriptions", subs=subs, alerts=alerts, channels=_CHANNELS,
                schedules=_SCHEDULES, filter_labels=_FILTER_LABELS, trigger_labels=TRIGGER_LABELS, statuses=_STATUSES,
                verdicts=[PROPOSE, RESEARCH, FORWARD, UNSUITABLE], **_lists(rt))


@router.post("/subscriptions")
def subscriptions_create(request: Request, key: ApiKey = Depends(staff), name: str = Form(..., max_length=200),
                         channel: str = Form(...), target: str = Form("", max_length=500), schedule: str = Form("now"),
                         committee: str = Form("", max_length=120), domain: str = Form("", max_length=64),
                         place: str = Form("", max_length=120), keyword: str = Form("", max_length=60),
                         verdict: str = Form("", max_length=32),
                         new_topic: str = Form(""), heat_above: str = Form("", max_length=10),
                         growth_days: str = Form("", max_length=4), campaign: str = Form(""),
                         backlog_days: str = Form("", max_length=4), digest: str = Form("")) -> Response:
    from triage.office.alerts import SubscriptionError, create_subscription

    filters = {k: v.strip() for k, v in (("committee", committee), ("domain", domain), ("place", place),
                                         ("keyword", keyword), ("verdict", verdict)) if v.strip()}
    try:
        triggers: dict = {}
        if new_topic:
            triggers["new_topic"] = True
        if heat_above.strip():
            triggers["heat_above"] = float(heat_above)
        if growth_days.strip():
            triggers["growth"] = {"days": int(growth_days), "factor": 2.0}
        if campaign:
            triggers["campaign"] = True
        if backlog_days.strip():
            triggers["backlog"] = {"days": int(backlog_days)}
        if digest:
            triggers["digest"] = True
        x = create_subscription(_rt(request).store, actor_of(key).name, key.id, key.role, name.strip(), channel,
                                target, schedule, filters, triggers)
    except ValueError:
        return _back(f"{BASE}/subscriptions", err="热度与天数需要填写数字 / numbers expected")
    except SubscriptionError as exc:
        return _back(f"{BASE}/subscriptions", err=str(exc))
    msg = f"已创建订阅“{x.name}”"
    if x.secret:
        msg += f"；Webhook 签名密钥（只显示这一次）：{x.secret}"
    return _back(f"{BASE}/subscriptions", ok=msg)


@router.post("/subscriptions/{sub_id}/delete")
def subscriptions_delete(request: Request, sub_id: int, key: ApiKey = Depends(staff)) -> Response:
    from triage.office.alerts import end_subscription

    x = end_subscription(_rt(request).store, sub_id, actor_of(key).name, key.role, key.id)
    if x is None:
        return _back(f"{BASE}/subscriptions", err="没有这个订阅")
    return _back(f"{BASE}/subscriptions", ok=f"已删除订阅“{x.name}”")


@router.get("/digest", response_class=HTMLResponse)
def digest_page(request: Request, key: ApiKey = Depends(staff), committee: str = Query("", max_length=120),
                days: int = Query(7, ge=1, le=365)) -> HTMLResponse:
    from triage.office.alerts import committee_digest

    rt = _rt(request)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    with rt.store.session() as s:
        d = committee_digest(s, committee or None, now - dt.timedelta(days=days), now, rt.alerts_config.public_url,
                             limit=30)
    names = {c.id: c.name for c in rt.office.triage.taxonomy.committees}
    d["committee_name"] = names.get(committee, committee)
    return page(request, "digest.html", key, nav="subscriptions", d=d, days=days, **_lists(rt))
