"""Load and faults: N submissions at concurrency C against `triage serve` with several workers, on
SQLite or PostgreSQL, optionally killing the whole service with SIGKILL or restarting PostgreSQL in
the middle. Afterwards every acknowledged submission must be in the database exactly once, and no
row may be half-stored (a suggestion without its assessment).

The client behaves like a careful portal: every submission carries its own ``Idempotency-Key`` and
is retried (same key) on a connection error, a 5xx or a 429, so a submission that was stored but
whose answer was lost in a crash is acknowledged by the retry, not stored twice.

    python bench/load.py --n 20000 --concurrency 64 --workers 2                      # SQLite
    python bench/load.py --n 20000 --database postgresql+psycopg://postgres@127.0.0.1:5432/test_load
    python bench/load.py --n 20000 --kill-at 0.5                                     # kill -9 mid-run
    python bench/load.py --n 5000 --database ... --restart-postgres-at 0.5

Prints one JSON summary line (and a table); exit status 1 if the invariant is broken.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """`triage serve` in its own process group, so SIGKILL takes the supervisor and every worker."""

    def __init__(self, env: dict, port: int, workers: int) -> None:
        self.env, self.port, self.workers = env, port, workers
        self.proc: subprocess.Popen | None = None
        self.log = open(Path(env["TRIAGE_HOME"]) / "service.log", "a")

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "triage.cli", "serve", "--port", str(self.port),
                                      "--workers", str(self.workers), "--quiet"], env=self.env,
                                     stdout=self.log, stderr=self.log, start_new_session=True)

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def wait_ready(base: str, timeout: float = 180) -> float:
    t = time.perf_counter()
    while time.perf_counter() - t < timeout:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return time.perf_counter() - t
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit("service did not become ready")


def restart_postgres() -> None:
    versions = sorted(os.listdir("/etc/postgresql"))
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "restart"], check=True,
                   capture_output=True)


def watch_ready(base: str, stop: threading.Event, out: list) -> None:
    last = None
    while not stop.is_set():
        try:
            code = httpx.get(f"{base}/readyz", timeout=1).status_code
        except httpx.HTTPError:
            code = -1
        if code != last:
            out.append((round(time.time(), 2), code))
            last = code
        time.sleep(0.1)


async def run_load(base: str, key: str, bodies: list[dict], concurrency: int, fault, fault_after: int) -> dict:
    acked: dict[str, str] = {}           # idempotency key -> receipt
    errors: dict[str, int] = {}
    attempts = 0
    fired = False
    lat: list[float] = []
    stamps: list[float] = []             # when each acknowledgement arrived: throughput over the run
    queue: asyncio.Queue = asyncio.Queue()
    for i, b in enumerate(bodies):
        queue.put_nowait((f"load-{i}", b))
    import aiohttp   # not httpx: its pool kept the client at 100% of a core at 64 connections

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=conn, timeout=aiohttp.ClientTimeout(total=60),
                                     headers={"X-API-Key": key}) as client:
        async def worker() -> None:
            nonlocal attempts, fired
            while True:
                try:
                    ikey, body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                start = time.perf_counter()
                delay = 0.2
                while True:
                    attempts += 1
                    try:
                        async with client.post("/api/v1/suggestions", json=body,
                                               headers={"Idempotency-Key": ikey}) as r:
                            status = r.status
                            data = await r.read()
                        if status in (200, 201):
                            acked[ikey] = json.loads(data)["receipt"]
                            stamps.append(time.perf_counter())
                            break
                        kind = str(status)
                        if status < 500 and status != 429:
                            errors[f"{kind} (not retried)"] = errors.get(f"{kind} (not retried)", 0) + 1
                            break
                    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                        kind = type(exc).__name__
                    errors[kind] = errors.get(kind, 0) + 1
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 3.0)
                lat.append(time.perf_counter() - start)
                if fault is not None and not fired and len(acked) >= fault_after:
                    fired = True
                    await asyncio.get_running_loop().run_in_executor(None, fault)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat.sort()
    # acknowledgements per second in each tenth of the run: does intake slow down as the store grows?
    tenths = []
    if len(stamps) >= 10:
        cuts = [stamps[0] - 1e-9] + [stamps[min(len(stamps) - 1, (len(stamps) * k) // 10 - 1)] for k in range(1, 11)]
        step = len(stamps) / 10
        tenths = [round(step / max(b - a, 1e-6), 1) for a, b in zip(cuts, cuts[1:])]
    return {"acked": acked, "rps_by_tenth": tenths, "errors": errors, "attempts": attempts, "seconds": round(wall, 1),
            "p50_ms": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
            "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 1) if lat else None}


def check(url: str, acked: dict[str, str]) -> dict:
    from sqlalchemy import func, select

    from triage.store.database import Assessment, Store, Suggestion

    store = Store(url, migrate=False)
    with store.session() as s:
        rows = s.execute(select(Suggestion.receipt, Suggestion.idempotency_key)).all()
        assessed = set(s.execute(select(Assessment.suggestion_id)).scalars())
        ids = list(s.execute(select(Suggestion.id)).scalars())
        n_assess = s.execute(select(func.count()).select_from(Assessment)).scalar_one()
    receipts = [r for r, _ in rows]
    have = set(receipts)
    by_key: dict[str, int] = {}
    for _r, k in rows:
        by_key[k] = by_key.get(k, 0) + 1
    store.engine.dispose()
    return {"rows": len(rows), "assessments": n_assess,
            "lost": sum(1 for r in acked.values() if r not in have),
            "duplicates": len(receipts) - len(have) + sum(v - 1 for v in by_key.values() if v > 1),
            "half_stored": sum(1 for i in ids if i not in assessed),
            "unacknowledged_rows": len(have - set(acked.values()))}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--database", default=None,
                    help="SQLAlchemy URL, or 'postgresql' for a fresh database on 127.0.0.1:5432; default a fresh SQLite file")
    ap.add_argument("--model", default=None, help="intake model directory (default: the shipped default)")
    ap.add_argument("--kill-at", type=float, default=None, help="SIGKILL the whole service after this share is acked")
    ap.add_argument("--restart-postgres-at", type=float, default=None)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="triage-load-"))
    fresh_pg = None
    if args.database == "postgresql":   # a fresh database on the machine's server, dropped afterwards
        import psycopg

        fresh_pg = f"triage_load_{os.getpid()}"
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{fresh_pg}"')
        args.database = f"postgresql+psycopg://postgres@127.0.0.1:5432/{fresh_pg}"
    url = args.database or f"sqlite:///{home / 'load.db'}"
    # the service's own re-clustering schedule (every 200 new suggestions or a quarter of the store)
    env = {**os.environ, "TRIAGE_HOME": str(home), "TRIAGE_DATABASE_URL": url}
    if args.model:
        env["TRIAGE_MODEL"] = args.model
    try:
        return run(args, home, url, env)
    finally:
        if fresh_pg:   # even when this script is interrupted
            import psycopg

            with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{fresh_pg}" WITH (FORCE)')


def run(args: argparse.Namespace, home: Path, url: str, env: dict) -> int:
    key = subprocess.run([sys.executable, "-m", "triage.cli", "keys", "create", "--role", "portal", "--rate", "0"],
                         env=env, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    svc = Service(env, port, args.workers)
    svc.start()
    startup = wait_ready(base)
    corpus = pd.read_csv(ROOT / "corpora" / "suggestions.csv", dtype=str, keep_default_na=False)
    rnd = random.Random(0)
    pool = list(zip(corpus["text"], corpus["channel"]))
    bodies = []
    for i in range(args.n):
        t, ch = rnd.choice(pool)
        bodies.append({"text": t, "channel": ch, "submitter": f"load-{i % 5000}", "support": i % 7})
    fault, after, ready_log, restarted = None, 0, [], {}
    stop = threading.Event()
    watcher = threading.Thread(target=watch_ready, args=(base, stop, ready_log), daemon=True)
    if args.kill_at is not None:
        after = int(args.n * args.kill_at)

        def fault() -> None:
            t = time.perf_counter()
            svc.kill9()
            svc.start()
            wait_ready(base)
            restarted["kill9_recovery_s"] = round(time.perf_counter() - t, 1)
    elif args.restart_postgres_at is not None:
        after = int(args.n * args.restart_postgres_at)

        def fault() -> None:
            t = time.perf_counter()
            restart_postgres()
            restarted["postgres_restart_s"] = round(time.perf_counter() - t, 1)
    watcher.start()
    try:
        res = asyncio.run(run_load(base, key, bodies, args.concurrency, fault, after))
        # the last probe may have timed out while the final submissions were written (a busy 2-core
        # machine): readiness "follows" when the watcher sees it back, so give it that moment
        deadline = time.time() + 30
        while time.time() < deadline and (not ready_log or ready_log[-1][1] != 200):
            time.sleep(0.2)
    finally:
        stop.set()
        watcher.join(5)
        svc.stop()
    acked = res.pop("acked")
    inv = check(url, acked)
    ok = inv["lost"] == 0 and inv["duplicates"] == 0 and inv["half_stored"] == 0 and len(acked) == args.n
    summary = {"database": url.split("://")[0], "home": str(home), "n": args.n, "concurrency": args.concurrency,
               "workers": args.workers, "startup_s": round(startup, 1), "acked": len(acked),
               "rps": round(len(acked) / res["seconds"], 1) if res["seconds"] else None, **res, **inv,
               **restarted, "ready_transitions": [c for _t, c in ready_log], "invariant_holds": ok}
    print(json.dumps(summary, ensure_ascii=False))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
