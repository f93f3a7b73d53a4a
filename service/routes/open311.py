"""Open311 GeoReport v2 intake, so existing civic-reporting clients can submit without new code.

Services are the taxonomy's domains (the client's choice is kept as the stated domain; the model still
classifies the text). The key may come as ``api_key`` in the form, as the spec says, or as a header.
Errors use the GeoReport shape: ``[{"code": 400, "description": "..."}]``.
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from service.deps import office, runtime
from service.runtime import Runtime
from triage.office.common import Intake, NotFound, full_text
from triage.office.intake import Submission
from triage.office.office import Office
from triage.pipeline import MAX_CHARS, validate_text

router = APIRouter(prefix="/open311/v2", tags=["open311"])


class Open311Error(Exception):
    def __init__(self, code: int, description: str) -> None:
        self.code, self.description = code, description


def _services(off: Office) -> list[dict]:
    return [{"service_code": f"D{i + 1:02d}", "service_name": d.name, "description": d.description,
             "metadata": False, "type": "realtime", "keywords": d.description.replace("、", ","),
             "group": off.triage.taxonomy.committee(d.committee).name if off.triage.taxonomy.committee(d.committee) else ""}
            for i, d in enumerate(off.triage.taxonomy.domains)]


@router.get("/services.json", summary="Open311: services (= domains)")
def services(off: Office = Depends(office)) -> list[dict]:
    return _services(off)


async def _fields(request: Request) -> dict[str, str]:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        try:
            data = await request.json()
        except ValueError as exc:
            raise Open311Error(400, "请求体不是有效的 JSON / malformed JSON") from exc
        if not isinstance(data, dict):
            raise Open311Error(400, "请求体应为对象 / body must be an object")
    else:
        form: FormData = await request.form()
        data = {k: v for k, v in form.items() if isinstance(v, str)}
    out = {}
    for k, v in data.items():
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise Open311Error(400, f"字段 {shown_field(k)} 类型错误 / wrong type")
        if k in ("lat", "long"):      # numbers in JSON, numeric text in a form
            try:
                float(v)
            except ValueError as exc:
                raise Open311Error(400, f"字段 {k} 应为数字 / must be a number") from exc
        elif k in _REQUEST_FIELDS and not isinstance(v, str):
            raise Open311Error(400, f"字段 {shown_field(k)} 应为文字 / must be a string")
        out[str(k)] = str(v)
    return out


def shown_field(name: object) -> str:
    """A field name fit to echo back: printable and short."""
    text = str(name)
    return text if text.isprintable() and len(text) <= 40 else "（字段名无效）"


_REQUEST_FIELDS = {
    "api_key": {"type": "string", "maxLength": 200, "description": "门户密钥（也可用 X-API-Key 头）"},
    "service_code": {"type": "string", "description": "services.json 中的编号"},
    "description": {"type": "string", "minLength": 2, "maxLength": MAX_CHARS, "pattern": r"[^\W\d_][\s\S]*[^\W\d_]",
                    "description": "留言正文（至少两个文字）"},
    "address_string": {"type": "string"}, "lat": {"type": "number"}, "long": {"type": "number"},
    "first_name": {"type": "string"}, "last_name": {"type": "string"}, "phone": {"type": "string"},
    "email": {"type": "string"}, "device_id": {"type": "string"},
}
_REQUEST_BODY = {"requestBody": {"required": True, "content": {
    ct: {"schema": {"type": "object", "properties": _REQUEST_FIELDS, "required": ["service_code", "description"],
                    # GeoReport's attribute[...] extras: plain values only
                    "additionalProperties": {"type": ["string", "number"]}}}
    for ct in ("application/x-www-form-urlencoded", "application/json")}}}


@router.post("/requests.json", status_code=201, summary="Open311: submit a service request",
             openapi_extra=_REQUEST_BODY)
async def create_request(request: Request, off: Office = Depends(office), rt: Runtime = Depends(runtime)):
    f = await _fields(request)
    key_text = f.get("api_key") or request.headers.get("x-api-key")
    # everything that may wait on the database or the models runs off the event loop, as the JSON
    # intake does: run on the loop, one Open311 submission stalled every other request of the worker
    key = await run_in_threadpool(rt.keys.get, key_text) if key_text and len(key_text) <= 200 else None
    if key is None:
        raise Open311Error(401, "api_key 缺失或无效 / missing or invalid api_key")
    limit = key.rate_per_minute if key.rate_per_minute is not None else rt.settings.role_rate.get(key.role, 0)
    if not (await run_in_threadpool(rt.limiter.allow, key.id, limit))[0]:
        raise Open311Error(429, "请求过于频繁 / rate limit exceeded")
    codes = {s["service_code"]: s["service_name"] for s in await run_in_threadpool(_services, off)}
    code = f.get("service_code", "")
    if code not in codes:
        raise Open311Error(400, f"service_code {code!r} 不存在，见 services.json / unknown service_code")
    desc = f.get("description", "").strip()
    if not desc:
        raise Open311Error(400, "description 不能为空 / description is required")
    if len(desc) > MAX_CHARS:
        raise Open311Error(400, f"description 过长（上限 {MAX_CHARS} 字）/ description too long")
    contact = " ".join(v for v in (f.get("last_name", "") + f.get("first_name", ""), f.get("phone", ""),
                                   f.get("email", "")) if v) or None
    place = f.get("address_string") or None
    loc = f" ({f['lat']},{f['long']})" if f.get("lat") and f.get("long") else ""
    data = Intake(text=desc, channel="Open311", place=(place[:120] if place else None),
                  contact=(contact + loc)[:200] if contact else (loc.strip() or None), stated_domain=codes[code],
                  submitter=f.get("device_id", "")[:120])
    idem = request.headers.get("idempotency-key")
    replay = await run_in_threadpool(off.intake.replay, data, key, idem)
    if replay is None:
        reason = validate_text(data.text)   # "00", "……": nothing a model can read (as the JSON intake)
        if reason is not None:
            raise Open311Error(400, f"description 无法受理：{reason}")
        analysed = (await rt.analyse([full_text(data)]))[0]   # shared model calls, as the JSON intake
        row, _a, _replayed = await rt.submit(Submission(data, key, idem, analysed))
    else:
        (row, _a), _replayed = replay, True
    if not _replayed:
        rt.metrics.suggestions.labels(channel_kind="open311").inc()
    return [{"service_request_id": row.receipt, "service_notice": "已受理，凭编号查询办理情况", "account_id": None}]


def _key(request: Request, api_key: str | None, rt: Runtime):
    """The caller's key (``api_key`` or X-API-Key), None when it gave none; 401 for a wrong one."""
    key_text = api_key or request.headers.get("x-api-key")
    if not key_text:
        return None
    key = rt.keys.get(key_text) if len(key_text) <= 200 else None
    if key is None:
        raise Open311Error(401, "api_key 无效 / invalid api_key")
    return key


def _record(r: dict, codes: dict[str, str], keyed: bool) -> dict:
    """One request as GeoReport v2 lists it (the description masked, as every staff view; the address
    only for a key holder: a citizen's address_string may be their home)."""
    closed = r["status"] in ("forwarded", "not_selected") or (r["stage"] == "成果转化")
    utc = dt.timezone.utc
    return {"service_request_id": r["receipt"], "status": "closed" if closed else "open",
            "status_notes": r["status_text"], "service_name": r["domain"], "service_code": codes.get(r["domain"]),
            "description": r["text"], "agency_responsible": r["forwarded_to"],
            "service_notice": "凭编号查询办理情况", "requested_datetime": r["submitted_at"].replace(tzinfo=utc).isoformat(),
            "updated_datetime": r["updated_at"].replace(tzinfo=utc).isoformat(), "expected_datetime": None,
            "address": r["place"] if keyed else None, "address_id": None, "zipcode": None, "lat": None, "long": None, "media_url": None}


def _w3(value: str | None, name: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        ts = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise Open311Error(400, f"{name} 应为 W3C 日期时间，如 2026-01-01T00:00:00Z / must be a w3 datetime") from exc
    return ts.astimezone(dt.timezone.utc).replace(tzinfo=None) if ts.tzinfo else ts


@router.get("/requests.json", summary="Open311: requests, newest first (the spec's filters; 90 days at most)")
def list_requests(request: Request, api_key: str | None = None, service_request_id: str | None = None,
                  service_code: str | None = None,
                  start_date: str | None = Query(None, json_schema_extra={"format": "date-time"},
                                                 description="W3C 日期时间；缺省为 end_date 前 90 天"),
                  end_date: str | None = Query(None, json_schema_extra={"format": "date-time"},
                                               description="W3C 日期时间；缺省为现在"),
                  status: str | None = Query(None, pattern=r"^(open|closed)(,(open|closed))*$"), off: Office = Depends(office), rt: Runtime = Depends(runtime)):
    """Who sees what, and why: citizens' messages here are not public records (unlike a pothole on
    FixMyStreet), so a caller without a key sees only requests whose topic the office has published
    on 回音壁; a portal key sees the requests it submitted; a staff or admin key every request. The
    description is always the masked text."""
    key = _key(request, api_key, rt)
    codes = {s["service_name"]: s["service_code"] for s in _services(off)}
    if service_request_id:
        ids = [x.strip() for x in service_request_id.split(",") if x.strip()]
        rows = off.views.receipts(key, receipts=ids)
    else:
        end = _w3(end_date, "end_date") or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        start = _w3(start_date, "start_date") or end - dt.timedelta(days=90)
        if end - start > dt.timedelta(days=90):
            raise Open311Error(400, "start_date 与 end_date 相隔不得超过 90 天 / the range may not span more than 90 days")
        rows = off.views.receipts(key, since=start, until=end)
    out = [_record(r, codes, key is not None) for r in rows]
    if not service_request_id:
        if service_code:
            wanted = {c.strip() for c in service_code.split(",")}
            out = [x for x in out if x["service_code"] in wanted]
        if status:
            states = {x.strip() for x in status.split(",")}
            out = [x for x in out if x["status"] in states]
    return out


@router.get("/requests/{request_id}.json", summary="Open311: one request by its id (the id is the right to ask)")
def get_request(request_id: str, request: Request, api_key: str | None = None,
                off: Office = Depends(office), rt: Runtime = Depends(runtime)):
    key = _key(request, api_key, rt)
    try:
        r = off.views.receipt(request_id, key)
    except NotFound as exc:
        raise Open311Error(404, str(exc)) from exc
    return [_record(r, {s["service_name"]: s["service_code"] for s in _services(off)}, key is not None)]


def open311_error_response(exc: Open311Error) -> JSONResponse:
    return JSONResponse([{"code": exc.code, "description": exc.description}], status_code=exc.code)
