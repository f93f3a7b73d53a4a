"""Per-process state of the service: settings, the store, the loaded models (once per process),
per-key rate limits and metrics. Everything here is rebuildable from the store."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from triage.assess.model import DEFAULT_MODEL_DIR
from triage.office.common import OfficeConfig
from triage.office.intake import Submission
from triage.office.office import Office
from triage.pipeline import Triage
from triage.store.database import ApiKey, Store, home_dir

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
ROLE_RATE = {"portal": 600, "staff": 600, "admin": 0}   # requests per minute; 0 = unlimited


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass
class Settings:
    database_url: str | None = None
    model_dir: str | None = None                 # intake model (default: models/default)
    fast_model_dir: str | None = None            # live hints (default: the main model)
    home: str | None = None
    max_body_bytes: int = 256 * 1024
    recluster_every: int = 200
    recluster_quiet_s: float = 120.0             # re-cluster once intake has been quiet this long (0: never)
    # a re-clustering or index rebuild of this many stored messages runs in a child process at low
    # priority, so intake does not share the worker with it (0: always in the worker)
    recluster_apart_from: int = 3000
    role_rate: dict[str, int] = field(default_factory=lambda: dict(ROLE_RATE))
    model_check_seconds: float = 10.0
    alerts_interval_s: float = 60.0              # evaluate and deliver alerts this often (0: only `triage alerts run`)

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(database_url=os.environ.get("TRIAGE_DATABASE_URL"), model_dir=os.environ.get("TRIAGE_MODEL"),
                   fast_model_dir=os.environ.get("TRIAGE_FAST_MODEL"), home=os.environ.get("TRIAGE_HOME"),
                   max_body_bytes=_env_int("TRIAGE_MAX_BODY_BYTES", 256 * 1024),
                   recluster_every=_env_int("TRIAGE_RECLUSTER_EVERY", 200),
                   recluster_quiet_s=float(_env_int("TRIAGE_RECLUSTER_QUIET_S", 120)),
                   recluster_apart_from=_env_int("TRIAGE_RECLUSTER_APART_FROM", 3000),
                   alerts_interval_s=float(_env_int("TRIAGE_ALERTS_INTERVAL_S", 60)))


class RateLimiter:
    """Requests per key per minute, counted in the database by every worker together (a sliding window,
    ``Store.rate_hit``): a per-process bucket gave a key N times its rate behind N workers."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def allow(self, key_id: int, per_minute: int) -> tuple[bool, float]:
        return self.store.rate_hit(key_id, per_minute)


class KeyCache:
    """Key lookups, cached per worker and dropped as soon as any key is created or revoked anywhere:
    each worker compares the store's key revision at most once a second (one small query), so a
    revoked key stops working on every worker within a second (it took up to 30 s)."""

    def __init__(self, store: Store, ttl: float = 30.0, size: int = 4096, recheck_s: float = 1.0) -> None:
        self.store, self.ttl, self.size, self.recheck_s = store, ttl, size, recheck_s
        self._c: OrderedDict[str, tuple[float, ApiKey | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._revision: tuple | None = None
        self._checked = 0.0
        self._generation = 0   # bumped at every clear: a lookup that raced one is not cached

    def _fresh(self, now: float) -> None:
        if now - self._checked < self.recheck_s:
            return
        rev = self.store.keys_revision()
        with self._lock:
            self._checked = now
            if rev != self._revision:
                self._revision = rev
                self._c.clear()
                self._generation += 1

    def get(self, key: str) -> ApiKey | None:
        now = time.monotonic()
        self._fresh(now)
        with self._lock:
            hit = self._c.get(key)
            if hit and now - hit[0] < self.ttl:
                return hit[1]
            generation = self._generation
        row = self.store.find_key(key)
        with self._lock:
            # a clear (a revocation seen) while the row was read: it may be stale, answer without caching
            if generation == self._generation:
                self._c[key] = (now, row)
                while len(self._c) > self.size:
                    self._c.popitem(last=False)
        return row

    def clear(self) -> None:
        with self._lock:
            self._c.clear()
            self._generation += 1


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("triage_http_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("triage_http_request_seconds", "request latency", ["method", "route"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                                 registry=self.registry)
        self.suggestions = Counter("triage_suggestions_stored_total", "suggestions stored", ["channel_kind"],
                                   registry=self.registry)
        self.model = Gauge("triage_model_info", "active model", ["version"], registry=self.registry,
                           multiprocess_mode="liveall")

    def exposition(self) -> bytes:
        """This worker's metrics, or every worker's when the server runs several
        (``PROMETHEUS_MULTIPROC_DIR``, set by ``triage serve --workers N``)."""
        from prometheus_client import generate_latest

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            reg = CollectorRegistry()
            multiprocess.MultiProcessCollector(reg)
            return generate_latest(reg)
        return generate_latest(self.registry)


class Runtime:
    def __init__(self, settings: Settings | None = None, store: Store | None = None) -> None:
        self.settings = settings or Settings.from_env()
        if self.settings.home:
            os.environ["TRIAGE_HOME"] = self.settings.home
        migrate = os.environ.get("TRIAGE_MIGRATED") != "1"   # `triage serve` migrates once, before the workers
        self.store = store or Store(self.settings.database_url, migrate=migrate)
        self.keys = KeyCache(self.store)
        self.limiter = RateLimiter(self.store)
        self.metrics = Metrics()
        self._model_lock = threading.Lock()
        self._checked = 0.0
        self.probe = ThreadPoolExecutor(max_workers=1, thread_name_prefix="triage-probe")   # readiness checks
        self.office = self._load_office()
        from service.batching import MicroBatcher

        self.classify_fast = MicroBatcher(lambda texts: self.office.intake.classify(texts, full=False))
        self.classify_full = MicroBatcher(lambda texts: self.office.intake.classify(texts, full=True), max_texts=16)
        self.analyse = MicroBatcher(lambda texts: self.office.intake.analyse(texts), max_texts=32)
        # intake's group commit: the submissions analysed meanwhile are written in one transaction
        self.store_submissions = MicroBatcher(lambda items: self.office.intake.submit_many(items), max_texts=64)
        self.office.warm()
        from triage.assess.retrain import RetrainConfig

        data = os.environ.get("TRIAGE_RETRAIN_DATA")
        self.retrain_config = RetrainConfig(data=Path(data) if data else None)
        from triage.office.alerts import AlertEngine, AlertsConfig

        self.alerts_config = AlertsConfig.from_env()
        self.alerts = AlertEngine(self.store, self.alerts_config)
        self._alerts_stop = threading.Event()
        self._alerts_thread: threading.Thread | None = None
        if self.settings.alerts_interval_s > 0:
            self._alerts_thread = threading.Thread(target=self._alert_loop, name="triage-alerts", daemon=True)
            self._alerts_thread.start()

    async def submit(self, item: Submission) -> tuple:
        """Store one analysed submission in the next group commit: (row, assessment, replayed), or
        raise the error that refused it (only its own: the rest of its group is stored)."""
        outcome = (await self.store_submissions([item]))[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _alert_loop(self) -> None:
        """Every worker runs the same loop: the outbox decides each alert once and a claim sends it once."""
        while not self._alerts_stop.wait(self.settings.alerts_interval_s):
            try:
                done = self.alerts.run_once()
                if any(done.values()):
                    log.info("alerts: %s", done)
            except Exception:  # noqa: BLE001 - a mail server or database hiccup must not end the loop
                log.exception("alert round failed; retried at the next interval")

    def close(self) -> None:
        """Stop the batcher threads, the alert loop and the office's settle timer, and close the database pool."""
        self._alerts_stop.set()
        if self._alerts_thread is not None:
            self._alerts_thread.join(30)
        self.office.close()
        for b in (self.classify_fast, self.classify_full, self.analyse, self.store_submissions):
            b.close()
        self.probe.shutdown(wait=True)
        self.store.engine.dispose()

    def _model_dirs(self) -> tuple[str, str]:
        active = self.store.get_setting("active_model")
        main = (active or {}).get("dir") or self.settings.model_dir or str(DEFAULT_MODEL_DIR)
        fast = self.settings.fast_model_dir or main
        return main, fast

    def _load_office(self) -> Office:
        main, fast = self._model_dirs()
        tri = Triage.load(main)
        quick = Triage.load(fast) if Path(fast, "manifest.json").exists() and fast != main else tri
        self.metrics.model.labels(version=tri.version).set(1)
        self._loaded_dir = main
        log.info("model %s loaded (live hints: %s)", tri.version, quick.version)
        return Office(self.store, tri, quick, config=OfficeConfig(
            recluster_every=self.settings.recluster_every, recluster_quiet_s=self.settings.recluster_quiet_s,
            recluster_apart_from=self.settings.recluster_apart_from or None))

    def check_model(self) -> None:
        """Switch to a newly activated model (retraining in any worker) without a restart."""
        now = time.monotonic()
        if now - self._checked < self.settings.model_check_seconds:
            return
        self._checked = now
        main, _ = self._model_dirs()
        if main != self._loaded_dir:
            with self._model_lock:
                if main != self._loaded_dir:
                    old = self.office.triage.version
                    tri = Triage.load(main)
                    self.office.triage = tri
                    if self.office.fast.version == old:
                        self.office.fast = tri
                    self.metrics.model.clear()
                    self.metrics.model.labels(version=tri.version).set(1)
                    self._loaded_dir = main
                    log.info("switched to model %s", tri.version)

    @property
    def ready(self) -> bool:
        return self.store.ping() and self.office is not None

    def models_dir(self) -> Path:
        d = home_dir() / "models"
        d.mkdir(parents=True, exist_ok=True)
        return d
