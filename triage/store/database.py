"""Persistence: SQLAlchemy 2 on SQLite (WAL) by default, PostgreSQL when ``TRIAGE_DATABASE_URL`` says so.

The store is the one copy of what staff rely on: suggestions (raw text kept only here, for staff
with the unmasking permission), assessments with the model version that made them, topics and
their membership, an append-only audit trail of decisions and unmaskings, hashed API keys, and
jobs. In-process state (the loaded model, the incremental topic index, the embedding cache) is
rebuilt from it. The schema is created and upgraded by Alembic (``triage/store/migrations``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, and_,
                        create_engine, delete, event, func, literal_column, select, text, update)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker, validates
from sqlalchemy.pool import NullPool

from triage.text import search
from triage.errors import TriageError

log = logging.getLogger(__name__)

ROLES = ("portal", "staff", "admin")
#: the consultation lifecycle of an accepted topic (收集议题 is every candidate's stage)
LIFECYCLE = ("收集议题", "确定议题", "议前调研", "协商议事", "公开公示", "成果转化")
PUBLISHED_STAGES = ("公开公示", "成果转化")
OUTCOME_CLASSES = {"A": "承办单位办理", "B": "报党委政府或村(居)自治", "C": "宣传解释"}
TOPIC_STATUSES = ("candidate", "accepted", "rejected", "merged")


_UNKNOWN = object()


class LastAdminKey(TriageError):
    """Revoking this key would leave the office without an active admin key (the service answers 409)."""


class StoreError(TriageError):
    """The database cannot be reached or refuses a write (the service answers 503)."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def home_dir() -> Path:
    """Where the embedded defaults keep their files (``TRIAGE_HOME``, else ``./var``)."""
    d = Path(os.environ.get("TRIAGE_HOME", "var"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def default_url() -> str:
    return os.environ.get("TRIAGE_DATABASE_URL") or f"sqlite:///{(home_dir() / 'triage.db').resolve()}"


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    role: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    can_unmask: Mapped[bool] = mapped_column(Boolean, default=False)
    rate_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class Suggestion(Base):
    __tablename__ = "suggestions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    receipt: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    submitted_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    channel: Mapped[str] = mapped_column(String(32), default="")
    title: Mapped[str] = mapped_column(Text, default="")
    raw_text: Mapped[str] = mapped_column(Text)                 # as submitted: staff with permission only
    text: Mapped[str] = mapped_column(Text)                     # normalised, personal data masked
    tokens: Mapped[str] = mapped_column(Text, default="")
    pii_kinds: Mapped[list] = mapped_column(JSON, default=list)
    contact: Mapped[str | None] = mapped_column(Text, nullable=True)
    place_given: Mapped[str | None] = mapped_column(String(120), nullable=True)
    place: Mapped[str | None] = mapped_column(String(120), nullable=True)
    places: Mapped[list] = mapped_column(JSON, default=list)
    stated_domain: Mapped[str | None] = mapped_column(String(64), nullable=True)
    support: Mapped[int] = mapped_column(Integer, default=0)
    submitter: Mapped[str] = mapped_column(String(120), default="")
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True, index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    body_hash: Mapped[str] = mapped_column(String(64), default="")
    topic_id: Mapped[str | None] = mapped_column(ForeignKey("topics.id"), nullable=True, index=True)
    domain: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)     # latest, or corrected
    scope: Mapped[str | None] = mapped_column(String(16), nullable=True)
    route_kind: Mapped[str] = mapped_column(String(16), default="none")
    route_name: Mapped[str | None] = mapped_column(String(120), nullable=True)
    # The sentence embeddings made at intake (float32 bytes): of the whole text and, for a long text,
    # of its opening. Index rebuilds and re-clustering read them instead of embedding every stored
    # message again, in every worker and after every restart. ``embedding_model`` names the encoder;
    # rows made by another encoder are embedded afresh.
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    head_embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    embedding_model: Mapped[str | None] = mapped_column(String(80), nullable=True)
    # What full-text search indexes (SQLite FTS5 table ``suggestion_fts`` kept in step by triggers;
    # a GIN index over to_tsvector('simple', …) on PostgreSQL): the masked text's character bigrams,
    # see triage.text.search. Set whenever ``text`` is, so no write path can leave a message unsearchable.
    search_doc: Mapped[str] = mapped_column(Text, default="")

    @validates("text")
    def _index_text(self, _key: str, value: str) -> str:
        self.search_doc = search.document(value)
        return value


class Assessment(Base):
    __tablename__ = "assessments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    suggestion_id: Mapped[int] = mapped_column(ForeignKey("suggestions.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    model_version: Mapped[str] = mapped_column(String(80))
    domain: Mapped[str | None] = mapped_column(String(64), nullable=True)
    domain_confidence: Mapped[float] = mapped_column(Float, default=0.0)
    scope: Mapped[str | None] = mapped_column(String(16), nullable=True)
    scope_confidence: Mapped[float] = mapped_column(Float, default=0.0)
    route_kind: Mapped[str] = mapped_column(String(16), default="none")
    route_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    route_name: Mapped[str | None] = mapped_column(String(120), nullable=True)
    route_reason: Mapped[str] = mapped_column(Text, default="")
    evidence: Mapped[dict] = mapped_column(JSON, default=dict)


class Correction(Base):
    """A staff correction of a message's domain or scope: training data for the next model."""

    __tablename__ = "corrections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    suggestion_id: Mapped[int] = mapped_column(ForeignKey("suggestions.id"), index=True)
    field: Mapped[str] = mapped_column(String(16))
    old_value: Mapped[str | None] = mapped_column(String(64), nullable=True)
    value: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(120))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Topic(Base):
    __tablename__ = "topics"
    # every list of topics is ordered by (submitters, heat, size), descending: triage.judge.rank.RANK_ORDER
    __table_args__ = (Index("ix_topics_rank", "submitters", "heat", "size"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    label: Mapped[str] = mapped_column(Text, default="")
    label_locked: Mapped[bool] = mapped_column(Boolean, default=False)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)      # touched by staff: kept out of re-clustering
    keywords: Mapped[list] = mapped_column(JSON, default=list)
    places: Mapped[list] = mapped_column(JSON, default=list)
    place: Mapped[str | None] = mapped_column(String(120), nullable=True)
    domain: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    route_kind: Mapped[str] = mapped_column(String(16), default="committee")
    committee_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    committee: Mapped[str | None] = mapped_column(String(120), nullable=True)
    department: Mapped[str | None] = mapped_column(String(120), nullable=True)
    route_reason: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="candidate", index=True)
    stage: Mapped[str] = mapped_column(String(16), default=LIFECYCLE[0])
    outcome_class: Mapped[str | None] = mapped_column(String(1), nullable=True)
    outcome_unit: Mapped[str | None] = mapped_column(String(200), nullable=True)
    outcome: Mapped[str | None] = mapped_column(Text, nullable=True)
    merged_into: Mapped[str | None] = mapped_column(String(32), nullable=True)
    heat: Mapped[float] = mapped_column(Float, default=0.0, index=True)
    heat_terms: Mapped[dict] = mapped_column(JSON, default=dict)
    scorecard: Mapped[dict] = mapped_column(JSON, default=dict)
    verdict: Mapped[str] = mapped_column(String(32), default="", index=True)
    size: Mapped[int] = mapped_column(Integer, default=0)
    submitters: Mapped[int] = mapped_column(Integer, default=0)
    representative_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    theme: Mapped[str | None] = mapped_column(String(48), nullable=True)
    first_seen: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    last_seen: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    published_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class AuditEvent(Base):
    """Append-only: who did what, to what, when and why. Never updated, never deleted."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(120))
    role: Mapped[str] = mapped_column(String(16), default="")
    action: Mapped[str] = mapped_column(String(32), index=True)
    target_type: Mapped[str] = mapped_column(String(16))
    target_id: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    result: Mapped[dict] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    # the worker running it (host:pid) and its last sign of life: a job whose beat is older than
    # JOB_STALE_S is dead (its worker was killed), see Store.reap_stale_jobs
    holder: Mapped[str | None] = mapped_column(String(64), nullable=True)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    # where a long job is: {"stage", "step", "steps", "messages", "seconds"} (see Store.job_progress)
    progress: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class Setting(Base):
    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


class Counter(Base):
    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class RateWindow(Base):
    """Requests per key per minute, shared by every worker (a sliding-window rate limit: this minute's
    count plus the share of the last minute's that still falls inside the past 60 s)."""

    __tablename__ = "rate_windows"
    key_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    minute: Mapped[int] = mapped_column(Integer, primary_key=True)      # minutes since the epoch
    count: Mapped[int] = mapped_column(Integer, default=0)


class Lease(Base):
    """A store-wide lock with an expiry, for work that one worker should do for all (re-clustering).

    ``mark`` is what the last holder finished (for re-clustering: the number of stored suggestions it
    saw), so the next worker can tell whether the work is due again.
    """
    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64), default="")
    until: Mapped[dt.datetime] = mapped_column(DateTime)
    mark: Mapped[int] = mapped_column(Integer, default=0)


class Subscription(Base):
    """Who wants to hear about which topics, how and when (see triage.office.alerts).

    ``filters``: committee, domain, place, keyword, verdict (all optional, all must match);
    ``triggers``: new_topic, heat_above, growth {days, factor}, campaign, backlog {days};
    ``channel``: email (``target`` an address), webhook (``target`` a URL, ``secret`` signs the body)
    or atom (read at ``/api/v1/feeds/{feed_token}.atom``); ``schedule``: now, daily or weekly.
    """

    __tablename__ = "subscriptions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True, index=True)
    owner: Mapped[str] = mapped_column(String(120), default="")
    name: Mapped[str] = mapped_column(String(200), default="")
    filters: Mapped[dict] = mapped_column(JSON, default=dict)
    triggers: Mapped[dict] = mapped_column(JSON, default=dict)
    channel: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(500), default="")
    secret: Mapped[str] = mapped_column(String(128), default="")
    feed_token: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    schedule: Mapped[str] = mapped_column(String(16), default="now")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_digest_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class Alert(Base):
    """The outbox: one row per alert that is due, decided once (``dedup_key`` is unique, so two
    workers or a restart cannot decide it twice) and delivered until it succeeds or gives up."""

    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"), index=True)
    dedup_key: Mapped[str] = mapped_column(String(200), unique=True)
    trigger: Mapped[str] = mapped_column(String(32))
    topic_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    title: Mapped[str] = mapped_column(Text, default="")
    payload: Mapped[dict] = mapped_column(JSON, default=dict)     # masked content only, see triage.office.alerts
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)   # pending, sent, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_until: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class Delivery(Base):
    """Every attempt to deliver an alert (or a digest of several): when, how it went, the answer's code."""

    __tablename__ = "deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    channel: Mapped[str] = mapped_column(String(16))
    ok: Mapped[bool] = mapped_column(Boolean, default=False)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str] = mapped_column(String(64), default="")


def hash_key(key: str) -> str:
    # Keys are 256-bit random tokens, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")      # readers never block the writer
    cur.execute("PRAGMA synchronous=NORMAL")    # durable at checkpoints; WAL keeps it consistent
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=15000")    # several service workers share one file
    cur.close()


class Store:
    """Engine, sessions and the few queries every caller needs."""

    def __init__(self, url: str | None = None, migrate: bool = True) -> None:
        self.url = url or default_url()
        # hide_parameters: a database error never carries a citizen's text into a log line
        kw: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True}
        if self.url.startswith("sqlite"):
            kw["connect_args"] = {"check_same_thread": False, "timeout": 15}
        else:
            kw.update(pool_size=10, max_overflow=20)
        self.engine: Engine = create_engine(self.url, **kw)
        if self.url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._probe: Engine | None = None
        self._full_text: Any = _UNKNOWN
        if migrate:
            self.upgrade()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def reachable_from_other_processes(self) -> bool:
        """Whether another process opening :attr:`url` sees this store (not an in-memory SQLite one)."""
        database = self.engine.url.database if self.dialect == "sqlite" else "server"
        return bool(database) and ":memory:" not in database and "mode=memory" not in self.url

    @property
    def full_text(self) -> str | None:
        """Which full-text index answers text searches: "fts5", "tsvector", or None (substring scan:
        an SQLite built without FTS5, or a store not yet upgraded)."""
        if self._full_text is _UNKNOWN:
            if self.dialect == "postgresql":
                self._full_text = "tsvector"
            elif self.dialect == "sqlite":
                with self.engine.connect() as c:
                    found = c.execute(text("SELECT name FROM sqlite_master WHERE name = 'suggestion_fts'")).first()
                self._full_text = "fts5" if found else None
            else:
                self._full_text = None
        return self._full_text

    def text_matches(self, q: str):
        """A condition on :class:`Suggestion`: its masked text holds the words of ``q``.

        The database's full-text index narrows (FTS5 on SQLite, a GIN-indexed tsvector on PostgreSQL,
        over character bigrams: see triage.text.search) and every run of the query must then appear as
        written; a run of one Han character has no bigram and is only scanned for.
        """
        from triage.text.normalise import normalize

        q = normalize(q)   # the stored text is normalised: 路燈 finds 路灯
        runs = search.query_runs(q)
        exact = and_(*(Suggestion.text.contains(r, autoescape=True) for r in runs)) if runs else \
            Suggestion.text.contains(q, autoescape=True)
        phrases = search.query_phrases(q)
        if phrases is None or self.full_text is None:
            return exact
        if self.full_text == "fts5":
            hits = text("SELECT rowid FROM suggestion_fts WHERE suggestion_fts MATCH :m").bindparams(
                m=search.fts5_query(phrases)).columns(rowid=Integer)
            return Suggestion.id.in_(select(hits.subquery().c.rowid)) & exact
        vec = func.to_tsvector(literal_column("'simple'"), Suggestion.search_doc)   # the GIN index's expression
        return and_(*(vec.op("@@", return_type=Boolean)(
            func.phraseto_tsquery(literal_column("'simple'"), search.tsquery_text(p))) for p in phrases), exact)

    def upgrade(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        # one INFO line per alembic plugin at every start is noise (they are logged at import)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except OperationalError as exc:
            raise StoreError(f"数据库无法连接或升级 / database unavailable: {exc.orig}") from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error (no half-written rows)."""
        s = self._sessions()
        try:
            yield s
            s.commit()
        except Exception:
            s.rollback()
            raise
        finally:
            s.close()

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """:meth:`session` for a group of writes, each in its own savepoint (intake's group commit).

        On SQLite the transaction takes the write lock at once (``BEGIN IMMEDIATE``): the driver
        otherwise begins a transaction only at the first INSERT or UPDATE, so a savepoint opened
        before it would begin, and at its release commit, a transaction of its own (each message
        committed alone, not the group). Taking the lock first also means that the group waits for
        another worker's write (``busy_timeout``) before it reads anything, not midway."""
        with self.session() as s:
            if self.dialect == "sqlite":
                s.execute(text("BEGIN IMMEDIATE"))
            yield s

    def ping(self) -> bool:
        """Whether the database answers, on a connection of its own: under load every pooled
        connection may be busy, and a readiness probe must not wait in that queue (it timed out at
        1 s twice in a 20,000-submission run although the database was fine)."""
        if self._probe is None:
            kw: dict[str, Any] = {"poolclass": NullPool, "hide_parameters": True}
            if self.url.startswith("sqlite"):
                kw["connect_args"] = {"check_same_thread": False, "timeout": 2}
            else:
                kw["connect_args"] = {"connect_timeout": 2}
            self._probe = create_engine(self.url, **kw)
        try:
            with self._probe.connect() as c:
                c.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - readiness is a yes/no question
            return False

    # ---------------------------------------------------------------- counters, settings
    def reserve_values(self, name: str, n: int) -> list[int]:
        """``n`` values of the sequence ``name``, taken in a transaction of their own and committed at
        once, like a database sequence: a later rollback of the caller's work leaves a gap, never a
        value handed out twice (intake's group commit takes its new topics' ids this way: a topic id
        rolled back and taken again by another worker had this worker's index file messages into
        that worker's unrelated topic)."""
        if n <= 0:
            return []
        with self.session() as s:
            last = self.next_value(s, name, n)
        return list(range(last - n + 1, last + 1))

    @staticmethod
    def is_transient(exc: BaseException) -> bool:
        """A database error that a retry of the same transaction may pass: PostgreSQL's deadlock and
        serialisation failures (SQLSTATE class 40), which roll the victim's transaction back."""
        orig = getattr(exc, "orig", None)
        code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or ""
        return str(code).startswith("40")

    def next_value(self, s: Session, name: str, step: int = 1) -> int:
        """A database-wide sequence (topic ids), safe across workers: its value after adding ``step``."""
        row = s.execute(update(Counter).where(Counter.name == name).values(value=Counter.value + step)
                        .returning(Counter.value)).scalar_one_or_none()
        if row is None:
            try:
                with s.begin_nested():   # two workers may both open the first topic at once
                    s.add(Counter(name=name, value=step))
                return step
            except IntegrityError:
                return self.next_value(s, name, step)
        return int(row)

    #: a running job's worker beats this often; a beat older than JOB_STALE_S means the worker is gone
    JOB_BEAT_S = 10.0
    JOB_STALE_S = 90.0

    def beat(self, job_id: int, holder: str) -> None:
        """A running job's sign of life (see :meth:`reap_stale_jobs`)."""
        with self.session() as s:
            s.execute(update(Job).where(Job.id == job_id, Job.status == "running")
                      .values(heartbeat_at=utcnow(), holder=holder))

    def job_progress(self, job_id: int, progress: dict[str, Any]) -> None:
        """A running job's stage (what staff read at ``GET /api/v1/jobs/{id}``); a report is also a
        heartbeat. A report that fails is logged and dropped: progress never stops the work."""
        try:
            with self.session() as s:
                s.execute(update(Job).where(Job.id == job_id, Job.status == "running")
                          .values(progress=progress, heartbeat_at=utcnow()))
        except Exception:  # noqa: BLE001 - a lost progress line must not fail a re-clustering
            log.warning("job %s: progress not recorded", job_id, exc_info=True)

    def reap_stale_jobs(self, kind: str, stale_s: float | None = None) -> list[int]:
        """Mark failed the queued or running jobs of ``kind`` whose worker stopped beating: a killed
        worker cannot say so itself, and its job would block every later one. Their ids."""
        cutoff = utcnow() - dt.timedelta(seconds=self.JOB_STALE_S if stale_s is None else stale_s)
        with self.session() as s:
            dead = list(s.execute(select(Job).where(
                Job.kind == kind, Job.status.in_(("queued", "running")),
                func.coalesce(Job.heartbeat_at, Job.created_at) < cutoff)).scalars())
            for j in dead:
                last = j.heartbeat_at or j.created_at
                j.status, j.finished_at = "failed", utcnow()
                j.error = (f"执行该任务的进程已停止（{j.holder or '未知进程'}，最后心跳 {last:%Y-%m-%d %H:%M:%S} UTC），"
                           f"可重新提交 / the worker running this job went away")
            return [j.id for j in dead]

    def rate_hit(self, key_id: int, per_minute: int, now: float | None = None) -> tuple[bool, float]:
        """Count one request of ``key_id`` against ``per_minute``, for all workers at once: (allowed,
        seconds to wait). A refused request is not counted. One upsert (and a read of the last minute)."""
        if per_minute <= 0:
            return True, 0.0
        now = time.time() if now is None else now
        minute, frac = int(now // 60), (now % 60) / 60.0
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as upsert
        else:
            from sqlalchemy.dialects.sqlite import insert as upsert
        stmt = upsert(RateWindow).values(key_id=key_id, minute=minute, count=1)
        stmt = stmt.on_conflict_do_update(index_elements=["key_id", "minute"],
                                          set_={"count": RateWindow.count + 1}).returning(RateWindow.count)
        with self.session() as s:
            current = int(s.execute(stmt).scalar_one())
            previous = int(s.execute(select(RateWindow.count).where(RateWindow.key_id == key_id,
                                                                    RateWindow.minute == minute - 1)).scalar() or 0)
            used = previous * (1.0 - frac) + current
            if used <= per_minute:
                if current == 1:   # a new minute for this key: forget minutes no window reads any more
                    s.execute(delete(RateWindow).where(RateWindow.key_id == key_id, RateWindow.minute < minute - 1))
                return True, 0.0
            s.execute(update(RateWindow).where(RateWindow.key_id == key_id, RateWindow.minute == minute)
                      .values(count=RateWindow.count - 1))
        over = used - per_minute
        # the last minute's share falls by previous/60 a second; with none, this minute must pass
        wait = over / (previous / 60.0) if previous and over <= previous * (1.0 - frac) else 60.0 * (1.0 - frac)
        return False, max(0.1, min(60.0, wait))

    def keys_revision(self) -> tuple:
        """Changes whenever a key is created or revoked: workers compare it to drop cached keys."""
        with self.session() as s:
            # counts, not timestamps: a revoking host's clock may be behind (keys are never un-revoked)
            return tuple(s.execute(select(func.count(ApiKey.id), func.count(ApiKey.revoked_at))).one())

    def lease_holder(self, name: str) -> str | None:
        """Who holds the lease ``name`` now (None when it is free or expired)."""
        with self.session() as s:
            row = s.get(Lease, name)
            return row.holder if row is not None and row.holder and row.until >= utcnow() else None

    def claim(self, name: str, holder: str, seconds: float, stale=None) -> int | None:
        """Take the lease ``name`` for ``seconds`` if nobody holds it; its mark, or None if taken.

        One conditional UPDATE: atomic on SQLite and PostgreSQL alike, so two workers never both win.
        ``stale(holder)`` may say that the current holder is known dead; its lease is then taken over.
        """
        now = utcnow()
        with self.session() as s:
            if s.get(Lease, name) is None:
                try:
                    with s.begin_nested():
                        s.add(Lease(name=name, holder="", until=now - dt.timedelta(seconds=1), mark=0))
                except IntegrityError:   # another worker inserted it first: fine, compete below
                    pass
            until = now + dt.timedelta(seconds=seconds)
            won = s.execute(update(Lease).where(Lease.name == name, Lease.until < now)
                            .values(holder=holder, until=until)).rowcount
            if not won and stale is not None:
                current = s.execute(select(Lease.holder).where(Lease.name == name)).scalar_one_or_none()
                if current and stale(current):
                    log.warning("taking over the %s lease of a process that is gone", name)
                    won = s.execute(update(Lease).where(Lease.name == name, Lease.holder == current)
                                    .values(holder=holder, until=until)).rowcount
            if not won:
                return None
            return int(s.get(Lease, name).mark or 0)

    def release(self, name: str, holder: str, mark: int | None = None) -> None:
        with self.session() as s:
            values: dict[str, Any] = {"until": utcnow() - dt.timedelta(seconds=1)}
            if mark is not None:
                values["mark"] = mark
            s.execute(update(Lease).where(Lease.name == name, Lease.holder == holder).values(**values))

    def hold_writes(self, s: Session) -> None:
        """Keep every other writer of suggestions waiting until ``s`` commits.

        SQLite has one writer at a time; a first write takes that lock now, before the reads that
        must not miss a concurrent insert (a read outside a write transaction holds no lock). On
        PostgreSQL that write locks the topic-id counter row, which intake takes before inserting,
        so the table lock that follows (it conflicts with inserts and updates, not with reads) is
        always taken in intake's order: no deadlock.
        """
        s.execute(update(Counter).where(Counter.name == "topic").values(value=Counter.value))
        if self.dialect == "postgresql":
            s.execute(text("LOCK TABLE suggestions IN SHARE ROW EXCLUSIVE MODE"))

    def count_suggestions(self) -> int:
        with self.session() as s:
            return int(s.execute(select(func.count(Suggestion.id))).scalar_one())

    def get_setting(self, key: str, default: Any = None) -> Any:
        with self.session() as s:
            row = s.get(Setting, key)
            return default if row is None else row.value

    def set_setting(self, s: Session, key: str, value: Any) -> None:
        row = s.get(Setting, key)
        if row is None:
            try:
                with s.begin_nested():   # another worker may create the same setting at the same moment
                    s.add(Setting(key=key, value=value))
                return
            except IntegrityError:
                row = s.get(Setting, key)
        row.value = value

    # ---------------------------------------------------------------- keys
    def create_key(self, role: str, name: str = "", can_unmask: bool = False,
                   rate_per_minute: int | None = None) -> tuple[ApiKey, str]:
        """(row, the key itself). The key is shown once: only its hash is stored."""
        if role not in ROLES:
            raise TriageError(f"角色 {role!r} 不存在，可选 {', '.join(ROLES)} / unknown role")
        key = f"tri_{role[0]}_{secrets.token_urlsafe(32)}"
        row = ApiKey(name=name or role, role=role, key_hash=hash_key(key), prefix=key[:10],
                     can_unmask=bool(can_unmask and role in ("staff", "admin")), rate_per_minute=rate_per_minute)
        with self.session() as s:
            s.add(row)
            s.flush()
            s.add(AuditEvent(actor="system", action="key_created", target_type="api_key", target_id=str(row.id),
                             detail={"role": role, "name": row.name, "can_unmask": row.can_unmask}))
        return row, key

    def find_key(self, key: str) -> ApiKey | None:
        with self.session() as s:
            row = s.execute(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).scalar_one_or_none()
            if row is None or row.revoked_at is not None:
                return None
            return row

    def revoke_key(self, key_id: int, actor: str) -> bool:
        """Revoke a key (False: none such, or already revoked). The last active admin key is never
        revoked: that would lock the office out of its own keys, retraining and configuration."""
        with self.session() as s:
            if self.dialect == "postgresql":   # two admins revoking each other at once: one at a time
                s.execute(text("LOCK TABLE api_keys IN SHARE ROW EXCLUSIVE MODE"))
            else:
                s.execute(update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=ApiKey.revoked_at))
            row = s.get(ApiKey, key_id)
            if row is None or row.revoked_at is not None:
                return False
            if row.role == "admin":
                admins = s.execute(select(func.count()).select_from(ApiKey).where(
                    ApiKey.role == "admin", ApiKey.revoked_at.is_(None))).scalar_one()
                if admins <= 1:
                    raise LastAdminKey("这是最后一把有效的管理员密钥，不能吊销；请先新建另一把管理员密钥 / "
                                       "the last active admin key cannot be revoked: create another admin key first")
            row.revoked_at = utcnow()
            s.add(AuditEvent(actor=actor, action="key_revoked", target_type="api_key", target_id=str(key_id)))
            return True

    def list_keys(self) -> list[ApiKey]:
        with self.session() as s:
            return list(s.execute(select(ApiKey).order_by(ApiKey.id)).scalars())
