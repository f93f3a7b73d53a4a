"""What every office service shares: the request records, the errors, the configuration, and the
worker's state (store, models, encoder, lock) that the services are built on.

The office is a few small services over one store (intake, views, decisions, the index, re-clustering
and its coordinator, history): :class:`OfficeState` is what one worker's services hold in common, and
:class:`OfficeService` their base, so that each reads ``self.store``, ``self.triage``, ``self.config``
as the single class they were split from did.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from triage.errors import TriageError
from triage.pipeline import Triage
from triage.store.database import Assessment, Store, utcnow
from triage.text.places import PlaceExtractor


class NotFound(TriageError):
    """No such receipt / topic / member (404)."""


class Conflict(TriageError):
    """The request contradicts the current state (409): a reused idempotency key, a wrong stage."""


class InvalidRequest(TriageError):
    """The request is well-formed but cannot be done as asked (422)."""


class Forbidden(TriageError):
    """The caller's key lacks the permission (403)."""


@dataclass
class Intake:
    """One suggestion as the portal or an Open311 client sends it."""

    text: str
    title: str = ""
    channel: str = "网上征题"
    place: str | None = None
    contact: str | None = None
    support: int = 0
    submitted_at: dt.datetime | None = None
    submitter: str = ""
    stated_domain: str | None = None


@dataclass
class Actor:
    """Who acts: recorded in every audit event."""

    name: str
    role: str
    key_id: int | None = None
    can_unmask: bool = False


@dataclass
class OfficeConfig:
    recluster_every: int = 200      # new suggestions (store-wide) before an automatic re-clustering …
    recluster_growth: float = 0.25  # … or this share of the store, whichever is more
    recluster_lease_s: float = 1800.0   # a re-clustering that takes longer is presumed dead
    #: once intake has been quiet this long and anything arrived since the last re-clustering, re-cluster
    #: (0: never). Counting alone left the newest messages on their intake-time topics until the next
    #: 200 (or a quarter of the store): an office with a dozen messages a day waited weeks, and a
    #: city's year replayed through the API ended with 800 messages never re-clustered (live vs full
    #: ARI 0.875). The service sets it (TRIAGE_RECLUSTER_QUIET_S, default 120 s); the library leaves it off.
    recluster_quiet_s: float = 0.0
    #: a re-clustering of at least this many messages runs in a child process at low priority, so the
    #: worker's intake shares neither its core nor Python's interpreter lock with it (None: never)
    recluster_apart_from: int | None = 3000
    min_reason_chars: int = 2
    petition_group_min: int = 5     # distinct citizens who make a petition a group issue in the topic list
    # A submission time is the citizen's (or the portal's) clock: accepted from the office's earliest
    # history to a few minutes ahead of ours. One bad clock (9999-12-31) made every later heat's age
    # term overflow; times stored before this bound are read clamped to it.
    earliest: dt.datetime = dt.datetime(2000, 1, 1)
    clock_skew_s: float = 900.0


def _naive(ts: dt.datetime | pd.Timestamp | None) -> dt.datetime | None:
    if ts is None or pd.isna(ts):
        return None
    ts = pd.Timestamp(ts)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.to_pydatetime()


def sane_time(ts: dt.datetime | None, config: OfficeConfig) -> dt.datetime | None:
    """A stored submission time clamped to what intake accepts (rows stored before the bound)."""
    if ts is None:
        return None
    return min(max(ts, config.earliest), utcnow() + dt.timedelta(seconds=config.clock_skew_s))


def shown_id(value: object) -> str:
    """An id fit to echo in an error message: only the shapes we issue. Anything else a caller typed
    (a phone number pasted into the wrong field) is not repeated back into messages and logs."""
    v = str(value)
    return v if re.fullmatch(r"T\d{6,9}|YS\d{8}-[0-9A-Z]{8}|\d{1,9}", v) and not re.fullmatch(r"\d{7,}", v) else "（编号格式不符）"


def new_receipt(now: dt.datetime | None = None) -> str:
    """回执编号: date + 8 random base-32 characters, so receipts cannot be guessed or enumerated."""
    alphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
    now = now or utcnow()
    return f"YS{now:%Y%m%d}-" + "".join(secrets.choice(alphabet) for _ in range(8))


@dataclass
class Analysed:
    assessment: Any
    tokens: str
    emb: np.ndarray                  # the topic embedding (the opening), see embed.topic_embeddings
    places: list[str] = field(default_factory=list)
    place: str | None = None
    lex: Any = None                  # the message's row in ``index``'s lexical space
    index: Any = None
    # kept in the store: the whole text's embedding (a short text's is its opening; a long text has one
    # only where the classifier uses embedding features) and a long text's opening
    full: np.ndarray | None = None
    head: np.ndarray | None = None


def masked_title(title: str | None, text: str | None) -> str:
    """A suggestion's title as staff may see it: the first line of its masked text.

    Intake masks title and body together (:func:`full_text` joins them with a line break), so the
    masked title is already stored; the ``title`` column keeps what the citizen typed, for the audited
    unmask path only. "张三 13812345678 反映小区漏水" reaches staff as "〔姓名〕 〔手机号〕 反映小区漏水".
    """
    if not title or not title.strip():
        return ""
    return (text or "").split("\n", 1)[0]


def full_text(data: Intake) -> str:
    return f"{data.title}\n{data.text}" if data.title and data.title.strip() else data.text


def body_hash(data: Intake) -> str:
    return hashlib.sha256(json.dumps(asdict(data), default=str, sort_keys=True, ensure_ascii=False)
                          .encode("utf-8")).hexdigest()


def _cell(v: object) -> str:
    """A table cell as text: "" for an empty one (None, NaN, NaT), never the string "None" or "nan"."""
    return "" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)


def _blob(v: np.ndarray | None) -> bytes | None:
    return None if v is None else np.asarray(v, dtype=np.float32).tobytes()


def _assessment_row(sid: int, a) -> Assessment:
    return Assessment(suggestion_id=sid, model_version=a.model_version, domain=a.domain,
                      domain_confidence=a.domain_confidence, scope=a.scope, scope_confidence=a.scope_confidence,
                      route_kind=a.route.kind, route_id=a.route.id, route_name=a.route.name,
                      route_reason=a.route.reason,
                      evidence={"domain": [[w, round(float(v), 4)] for w, v in a.domain_evidence],
                                "scope_cues": a.scope_cues,
                                "scope": [[w, round(float(v), 4)] for w, v in a.scope_evidence]})


@dataclass
class OfficeState:
    """One worker's shared state: the store, the loaded models, the topic encoder, and the lock that
    guards the topic index (assignment mutates it; decisions and re-clustering writes take it too)."""

    store: Store
    triage: Triage
    fast: Triage                 # the model behind the portal's live hints (/classify)
    config: OfficeConfig
    encoder: Any                 # the topic encoder, cached (re-clustering, the index)
    raw: Any                     # the same encoder without the cache (intake: vectors go into the store)
    places: PlaceExtractor = field(default_factory=PlaceExtractor)
    lock: threading.RLock = field(default_factory=threading.RLock)


class OfficeService:
    """Base of the office's services: the shared state under the names the services read."""

    def __init__(self, state: OfficeState) -> None:
        self.state = state

    store = property(lambda self: self.state.store)
    triage = property(lambda self: self.state.triage)
    fast = property(lambda self: self.state.fast)
    config = property(lambda self: self.state.config)
    encoder = property(lambda self: self.state.encoder)
    raw = property(lambda self: self.state.raw)
    places = property(lambda self: self.state.places)
    lock = property(lambda self: self.state.lock)

    def sane_time(self, ts: dt.datetime | None) -> dt.datetime | None:
        """A stored submission time clamped to what intake accepts (rows stored before the bound)."""
        return sane_time(ts, self.config)

    def need_reason(self, reason: str | None) -> str:
        if not reason or len(reason.strip()) < self.config.min_reason_chars:
            raise InvalidRequest("请填写理由 / a reason is required")
        return reason.strip()

