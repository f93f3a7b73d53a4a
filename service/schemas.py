"""The API's pydantic models: every request model forbids unknown fields, so a typo is a 422, not a
silently ignored value."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from triage.pipeline import MAX_CHARS


def _utc(v: dt.datetime) -> dt.datetime:
    # the store keeps naive UTC; RFC 3339 (OpenAPI's date-time) needs the offset
    return v.replace(tzinfo=dt.timezone.utc) if v.tzinfo is None else v


#: a datetime in a response: always with its UTC offset
UtcDateTime = Annotated[dt.datetime, AfterValidator(_utc)]


def _iso_only(v: object) -> object:
    """A query's date-time as written in ISO 8601 / RFC 3339: pydantic would read 0.5 as a Unix time."""
    if not isinstance(v, str) or not re.match(r"\d{4}-\d{2}-\d{2}", v):
        raise ValueError("需要 ISO 8601 日期时间，如 2026-03-01T00:00:00Z / an ISO 8601 date-time")
    return v


def _json_int(v: object) -> object:
    """An integer as JSON Schema counts one (5, 5.0), not a boolean or a string."""
    if isinstance(v, bool) or isinstance(v, str) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError("需要整数 / an integer")
    return int(v) if isinstance(v, float) else v


#: an integer field of a JSON body
JsonInt = Annotated[int, BeforeValidator(_json_int)]


#: a date-time in a query string: ISO 8601 only
IsoDateTime = Annotated[dt.datetime, BeforeValidator(_iso_only)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SuggestionIn(Strict):
    # at least two letters of any script (what intake calls a message: not "0", not "？？")
    text: StrictStr = Field(min_length=2, max_length=MAX_CHARS, pattern=r"[^\W\d_][\s\S]*[^\W\d_]",
                            description="留言正文（至少两个文字）")
    title: StrictStr = Field("", max_length=200)
    channel: StrictStr = Field("网上征题", max_length=32, description="意见箱 / 二维码 / 网上征题 / 委员荐题 / 党政交题 / 社情民意")
    place: StrictStr | None = Field(None, max_length=120)
    contact: StrictStr | None = Field(None, max_length=200, description="联系方式：只存库，只对有权限的工作人员可见")
    support: JsonInt = Field(0, ge=0, le=1_000_000, description="点赞 / 附议数")
    submitted_at: dt.datetime | None = Field(None, description="提交时间：2000-01-01 至服务器当前时间后 15 分钟之内，否则 422")
    submitter: StrictStr = Field("", max_length=120, description="提交人标识（门户账号的匿名编号）")


class Evidence(BaseModel):
    term: str
    weight: float


class RouteOut(BaseModel):
    kind: str
    id: str | None
    name: str | None
    reason: str


class AssessmentOut(BaseModel):
    text: str
    domain: str | None
    domain_confidence: float
    domain_evidence: list[Evidence]
    scope: str | None
    scope_confidence: float
    scope_cues: dict[str, list[str]]
    route: RouteOut
    pii_kinds: list[str]
    model_version: str
    error: str | None = None


class SuggestionOut(BaseModel):
    receipt: str = Field(description="回执编号：凭此查询办理情况")
    status: str
    message: str
    assessment: AssessmentOut | None = Field(None, description="工作人员密钥才返回")
    topic_id: str | None = None


class ReceiptOut(BaseModel):
    receipt: str
    submitted_at: UtcDateTime
    channel: str
    text: str
    status: str
    status_text: str
    stage: str | None
    topic: dict[str, Any] | None
    forwarded_to: str | None
    outcome: dict[str, Any] | None


class ClassifyIn(Strict):
    texts: list[StrictStr] = Field(min_length=1, max_length=100)
    full: StrictBool = Field(False, description="true: the full model (slower); false: the fast lexical model for live hints")


class ClassifyOut(BaseModel):
    results: list[AssessmentOut]


class TopicOut(BaseModel):
    id: str
    label: str
    status: str
    stage: str
    domain: str | None
    committee_id: str | None
    committee: str | None
    department: str | None
    route_reason: str
    heat: float
    verdict: str
    size: int
    submitters: int
    keywords: list[str]
    places: list[str]
    place: str | None
    first_seen: UtcDateTime | None
    last_seen: UtcDateTime | None
    theme: str | None
    merged_into: str | None
    outcome_class: str | None
    outcome_unit: str | None


class TopicList(BaseModel):
    total: int
    items: list[TopicOut]


class MemberOut(BaseModel):
    id: int
    submitted_at: UtcDateTime
    channel: str
    title: str
    text: str
    place: str | None
    support: int
    domain: str | None
    scope: str | None
    stated_domain: str | None = Field(None, description="提交人自己选的类别（如 Open311 的 service_code 对应的服务），供与模型判定对照")
    domain_confidence: float | None
    scope_confidence: float | None
    model_version: str | None
    raw_text: str | None = None
    raw_title: str | None = Field(None, description="原始标题（仅限有权查看个人信息的密钥，且每次查看都记入审计日志）")
    contact: str | None = None


class DecisionOut(BaseModel):
    id: int
    at: UtcDateTime
    actor: str
    role: str
    action: str
    reason: str
    detail: dict[str, Any]


class TopicDetail(TopicOut):
    representative: str
    heat_terms: dict[str, Any]
    scorecard: dict[str, Any]
    outcome: str | None
    members: list[MemberOut]
    decisions: list[DecisionOut]


class DecisionIn(Strict):
    action: Literal["accept", "reject", "merge", "split", "reroute", "relabel", "correct", "advance"]
    reason: StrictStr = Field(min_length=2, max_length=2000, pattern=r"\S[\s\S]*\S",
                              description="理由：记入审计日志（至少两个字）")
    into: StrictStr | None = Field(None, description="merge: 并入的议题编号")
    # ids are bounded: a 2**63 reached the database and overflowed its INTEGER (found by fuzzing)
    members: list[Annotated[int, Field(ge=1, le=2_147_483_647)]] | None = Field(
        None, max_length=10000, description="split: 拆出的留言编号")
    label: StrictStr | None = Field(None, max_length=80, description="relabel / split: 新标签")
    committee: StrictStr | None = Field(None, description="reroute: 专委会编号或名称")
    department: StrictStr | None = Field(None, description="reroute: 部门编号或名称")
    suggestion_id: int | None = Field(None, ge=1, le=2_147_483_647, description="correct: 要更正的留言")
    domain: StrictStr | None = None
    scope: Literal["group", "individual"] | None = None
    stage: StrictStr | None = Field(None, description="advance: 目标阶段（缺省为下一阶段）")
    outcome_class: Literal["A", "B", "C"] | None = None
    outcome_unit: StrictStr | None = Field(None, max_length=200)
    outcome: StrictStr | None = Field(None, max_length=5000)


class BoardItem(BaseModel):
    id: str
    label: str
    domain: str | None
    committee: str | None
    stage: str
    outcome_class: str | None
    outcome_class_name: str | None
    outcome_unit: str | None
    outcome: str | None
    size: int
    published_at: UtcDateTime | None


class KeyIn(Strict):
    role: Literal["portal", "staff", "admin"]
    name: StrictStr = Field("", max_length=120)
    can_unmask: StrictBool = False
    rate_per_minute: JsonInt | None = Field(None, ge=0, le=1_000_000, description="0 = unlimited; default by role")


class KeyOut(BaseModel):
    id: int
    name: str
    role: str
    prefix: str
    can_unmask: bool
    rate_per_minute: int | None
    created_at: UtcDateTime
    revoked_at: UtcDateTime | None
    key: str | None = Field(None, description="shown once, at creation")


class JobOut(BaseModel):
    id: int
    kind: str
    status: str
    result: dict[str, Any]
    error: str | None
    progress: dict[str, Any] | None = Field(
        default=None, description="长任务所处阶段：stage（阶段名）、step / steps（已完成阶段数 / 阶段总数）、messages、seconds")
    created_at: UtcDateTime
    finished_at: UtcDateTime | None


class ErrorBody(BaseModel):
    code: str = Field(description="bad_request, unauthorized, forbidden, not_found, conflict, payload_too_large, "
                                  "invalid, rate_limited, unavailable …")
    message: str = Field(description="原因，中文在前 / the reason, Chinese first")


class ErrorOut(BaseModel):
    error: ErrorBody


class Open311ErrorItem(BaseModel):
    code: int
    description: str


_ERROR_WHEN = {400: "请求无法处理 / bad request", 401: "缺少或无效的密钥 / no or unknown key",
               403: "此密钥无权执行 / this key's role may not", 404: "不存在 / not found",
               409: "与当前状态冲突 / conflicts with the current state", 413: "请求体过大 / body too large",
               422: "内容无效，说明哪个字段 / invalid, naming the field", 429: "超出速率限制 / rate limited (Retry-After)",
               503: "数据库暂时不可用 / database unavailable (Retry-After)"}
#: every error a JSON API operation can answer, in one shape (the portal team generates clients from it)
ERROR_RESPONSES: dict[int | str, dict] = {code: {"model": ErrorOut, "description": d} for code, d in _ERROR_WHEN.items()}
#: the same for the GeoReport v2 paths, in their spec's shape
OPEN311_ERROR_RESPONSES: dict[int | str, dict] = {code: {"model": list[Open311ErrorItem], "description": d}
                                                  for code, d in _ERROR_WHEN.items()}


class SubscriptionFilters(Strict):
    committee: StrictStr | None = Field(None, max_length=120, description="专委会 id 或名称")
    domain: StrictStr | None = Field(None, max_length=64)
    place: StrictStr | None = Field(None, max_length=120, description="地名（议题地点包含它即可）")
    keyword: StrictStr | None = Field(None, max_length=60, description="议题标签包含的词")
    verdict: StrictStr | None = Field(None, max_length=32, description="五大原则结论")


class DaysSpec(Strict):
    days: JsonInt = Field(..., ge=1, le=365)
    factor: float = Field(2.0, gt=1, le=100, description="growth: 近 N 天留言数 ≥ 之前 N 天的倍数")


class SubscriptionTriggers(Strict):
    new_topic: StrictBool = Field(False, description="出现符合条件的新候选议题（至少两位群众）")
    heat_above: float | None = Field(None, gt=0, le=1, description="热度超过此值")
    growth: DaysSpec | None = Field(None, description="近 N 天增长到之前 N 天的 factor 倍")
    campaign: StrictBool = Field(False, description="疑似集中刷帖")
    backlog: DaysSpec | None = Field(None, description="个人诉求超过 N 天未处理（按部门）")
    digest: StrictBool = Field(False, description="每周（或每日）专委会摘要")


class SubscriptionIn(Strict):
    name: StrictStr = Field(..., min_length=1, max_length=200)
    channel: Literal["email", "webhook", "atom"]
    target: StrictStr = Field("", max_length=500, description="email: 收件地址；webhook: http(s) 地址；atom: 留空")
    schedule: Literal["now", "daily", "weekly"] = "now"
    filters: SubscriptionFilters = Field(default_factory=SubscriptionFilters)
    triggers: SubscriptionTriggers


class SubscriptionOut(BaseModel):
    id: int
    name: str
    owner: str
    channel: str
    target: str
    schedule: str
    filters: dict[str, Any]
    triggers: dict[str, Any]
    active: bool
    created_at: UtcDateTime
    last_digest_at: UtcDateTime | None = None
    feed_url: str
    secret: str | None = Field(None, description="webhook 签名密钥：只在创建时显示一次")


class DeliveryOut(BaseModel):
    at: UtcDateTime
    attempt: int
    ok: bool
    status_code: int | None = None
    error: str | None = None


class AlertOut(BaseModel):
    id: int
    trigger: str
    title: str
    topic_id: str | None = None
    status: str
    attempts: int
    created_at: UtcDateTime
    sent_at: UtcDateTime | None = None
    last_error: str | None = None
    deliveries: list[DeliveryOut]
