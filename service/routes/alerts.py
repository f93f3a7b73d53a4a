"""Subscriptions to alerts and digests (triage.office.alerts): staff manage their own, admins everyone's;
every change is in the audit log. The Atom feed is read with the subscription's secret token instead
of an API key, so a feed reader can poll it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.responses import Response
from sqlalchemy import select

from service.deps import STAFF, actor_of, require, runtime
from service.runtime import Runtime
from service.schemas import AlertOut, SubscriptionIn, SubscriptionOut
from triage.office.alerts import SubscriptionError, atom_feed, create_subscription, end_subscription
from triage.store.database import Alert, ApiKey, Delivery, Subscription

router = APIRouter(tags=["alerts"])
DbId = Annotated[int, Path(ge=1, le=2_147_483_647)]


def sub_out(rt: Runtime, x: Subscription, secret: str | None = None) -> dict:
    return {"id": x.id, "name": x.name, "owner": x.owner, "channel": x.channel, "target": x.target,
            "schedule": x.schedule, "filters": x.filters or {}, "triggers": x.triggers or {}, "active": x.active,
            "created_at": x.created_at, "last_digest_at": x.last_digest_at,
            "feed_url": f"{rt.alerts_config.public_url}/api/v1/feeds/{x.feed_token}.atom", "secret": secret}


def _mine(rt: Runtime, key: ApiKey, sub_id: int) -> Subscription:
    with rt.store.session() as s:
        x = s.get(Subscription, sub_id)
        if x is None or not x.active or (key.role != "admin" and x.owner_key_id != key.id):
            raise HTTPException(404, f"订阅 {sub_id} 不存在 / no such subscription")
        s.expunge(x)
        return x


@router.post("/subscriptions", response_model=SubscriptionOut, status_code=201, summary="新建订阅（提醒与摘要）")
def create(body: SubscriptionIn, key: ApiKey = Depends(require(*STAFF)), rt: Runtime = Depends(runtime)) -> dict:
    filters = body.filters.model_dump(exclude_none=True)
    triggers = body.triggers.model_dump(exclude_none=True, exclude_defaults=True)
    try:
        x = create_subscription(rt.store, actor_of(key).name, key.id, key.role, body.name, body.channel, body.target,
                                body.schedule, filters, triggers)
    except SubscriptionError as exc:
        raise HTTPException(422, str(exc)) from exc
    return sub_out(rt, x, x.secret or None)


@router.get("/subscriptions", response_model=list[SubscriptionOut], summary="订阅列表（管理员：全部；工作人员：自己的）")
def list_subscriptions(key: ApiKey = Depends(require(*STAFF)), rt: Runtime = Depends(runtime)) -> list[dict]:
    with rt.store.session() as s:
        q = select(Subscription).where(Subscription.active.is_(True)).order_by(Subscription.id)
        if key.role != "admin":
            q = q.where(Subscription.owner_key_id == key.id)
        return [sub_out(rt, x) for x in s.execute(q).scalars()]


@router.get("/subscriptions/{sub_id}", response_model=SubscriptionOut, summary="一个订阅")
def get_subscription(sub_id: DbId, key: ApiKey = Depends(require(*STAFF)), rt: Runtime = Depends(runtime)) -> dict:
    return sub_out(rt, _mine(rt, key, sub_id))


@router.delete("/subscriptions/{sub_id}", summary="删除订阅（不再发送；已发送的记录保留）")
def delete_subscription(sub_id: DbId, key: ApiKey = Depends(require(*STAFF)), rt: Runtime = Depends(runtime)) -> dict:
    if end_subscription(rt.store, sub_id, actor_of(key).name, key.role, key.id) is None:
        raise HTTPException(404, f"订阅 {sub_id} 不存在 / no such subscription")
    return {"deleted": sub_id}


@router.get("/subscriptions/{sub_id}/alerts", response_model=list[AlertOut], summary="一个订阅的提醒及每次投递")
def list_alerts(sub_id: DbId, key: ApiKey = Depends(require(*STAFF)), rt: Runtime = Depends(runtime)) -> list[dict]:
    x = _mine(rt, key, sub_id)
    return alerts_of(rt, x.id)


def alerts_of(rt: Runtime, sub_id: int, limit: int = 200) -> list[dict]:
    with rt.store.session() as s:
        alerts = s.execute(select(Alert).where(Alert.subscription_id == sub_id).order_by(Alert.id.desc()).limit(limit)).scalars().all()
        tries: dict[int, list] = {}
        if alerts:
            for d in s.execute(select(Delivery).where(Delivery.alert_id.in_([a.id for a in alerts])).order_by(Delivery.id)).scalars():
                tries.setdefault(d.alert_id, []).append({"at": d.at, "attempt": d.attempt, "ok": d.ok,
                                                         "status_code": d.status_code, "error": d.error})
        return [{"id": a.id, "trigger": a.trigger, "title": a.title, "topic_id": a.topic_id, "status": a.status,
                 "attempts": a.attempts, "created_at": a.created_at, "sent_at": a.sent_at, "last_error": a.last_error,
                 "deliveries": tries.get(a.id, [])} for a in alerts]


@router.get("/feeds/{token}.atom", summary="订阅的 Atom 源（凭订阅的密钥令牌读取，无需 API 密钥）",
            responses={200: {"content": {"application/atom+xml": {}}}}, response_class=Response)
def feed(token: Annotated[str, Path(min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")],
         rt: Runtime = Depends(runtime)) -> Response:
    with rt.store.session() as s:
        x = s.execute(select(Subscription).where(Subscription.feed_token == token, Subscription.active.is_(True))).scalar_one_or_none()
        if x is None:
            raise HTTPException(404, "没有这个订阅源 / no such feed")
        alerts = s.execute(select(Alert).where(Alert.subscription_id == x.id).order_by(Alert.id.desc()).limit(100)).scalars().all()
        body = atom_feed(x, alerts, rt.alerts_config.public_url)
    return Response(body, media_type="application/atom+xml; charset=utf-8")
