"""Latency and throughput of the running service, driven from this (second) process over loopback.

Starts ``triage serve`` on a fresh SQLite file (or ``--database URL``), creates an unlimited portal
key, then for ``POST /api/v1/classify`` (one message: the portal's live hint) and
``POST /api/v1/suggestions`` sends requests at concurrency 1, 16 and 64 (aiohttp clients) and prints requests/s and
p50/p95/p99 latency. Afterwards it counts the stored rows: every 2xx submission must be in the
database exactly once.

    python bench/api_latency.py [--workers 2] [--requests 400] [--database postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, server: subprocess.Popen, why, tries: int = 240) -> None:
    """Until ``/readyz`` answers 200 (half a second between tries); ``why()`` explains an early exit."""
    for _ in range(tries):
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise SystemExit(f"service exited: {why()}")
        time.sleep(0.5)
    raise SystemExit(f"service not ready after {tries // 2} s")


def stop(server: subprocess.Popen, wait_s: float) -> None:
    """Terminate the service, killing it if it has not exited after ``wait_s`` seconds."""
    server.terminate()
    try:
        server.wait(wait_s)
    except subprocess.TimeoutExpired:
        server.kill()


def texts() -> list[str]:
    corpus = pd.read_csv(ROOT / "corpora" / "suggestions.csv", dtype=str, keep_default_na=False)
    return corpus["text"].tolist()


async def drive(base: str, key: str, path: str, bodies: list[dict], concurrency: int) -> dict:
    """``concurrency`` clients, each sending its next request when the last one is answered.

    aiohttp, not httpx: at 64 connections httpx's pool kept this process at 100% of a core and the
    numbers measured the client (82 requests/s against ~200 at 16), not the service."""
    import aiohttp

    lat: list[float] = []
    codes: dict[int, int] = {}
    receipts: list[str] = []
    queue: asyncio.Queue = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    conn = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(base, connector=conn, timeout=timeout,
                                     headers={"X-API-Key": key}) as client:
        async def worker() -> None:
            while True:
                try:
                    body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t = time.perf_counter()
                try:
                    async with client.post(path, json=body) as r:
                        code = r.status
                        data = await r.read()
                    if code in (200, 201) and path.endswith("suggestions"):
                        receipts.append(json.loads(data)["receipt"])
                except aiohttp.ClientError:
                    code = -1
                lat.append(time.perf_counter() - t)
                codes[code] = codes.get(code, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ms = np.array(lat) * 1000
    return {"path": path, "concurrency": concurrency, "requests": len(bodies), "seconds": round(wall, 2),
            "rps": round(len(bodies) / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "codes": codes, "receipts": receipts, "latencies_ms": ms.round(1).tolist()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--requests", type=int, default=400, help="per path and concurrency")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--database", default=None)
    ap.add_argument("--paths", nargs="+", default=["/api/v1/classify", "/api/v1/suggestions"])
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="triage-bench-"))
    url = args.database or f"sqlite:///{home / 'bench.db'}"
    env = {**os.environ, "TRIAGE_HOME": str(home), "TRIAGE_DATABASE_URL": url,
           "TRIAGE_RECLUSTER_EVERY": "1000000"}   # measure intake, not the periodic re-clustering
    triage = [sys.executable, "-m", "triage.cli"]
    key = subprocess.run([*triage, "keys", "create", "--role", "portal", "--rate", "0", "--name", "bench"], env=env,
                         check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    port = free_port()
    server = subprocess.Popen([*triage, "serve", "--port", str(port), "--workers", str(args.workers), "--quiet"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server, lambda: server.stderr.read()[-2000:])
        pool = texts()
        rnd = random.Random(0)
        # let every worker finish starting (the first ready one answers /readyz), then warm them
        time.sleep(5 * args.workers)
        asyncio.run(drive(base, key, "/api/v1/classify", [{"texts": [t]} for t in pool[:80]], 16))
        rows = []
        stored_ok: list[str] = []
        for path in args.paths:
            for c in args.concurrency:
                sample = [rnd.choice(pool) for _ in range(args.requests)]
                bodies = ([{"texts": [t]} for t in sample] if path.endswith("classify")
                          else [{"text": t, "channel": "网上征题", "submitter": f"u{i}"} for i, t in enumerate(sample)])
                res = asyncio.run(drive(base, key, path, bodies, c))
                stored_ok += res.pop("receipts")
                res.pop("latencies_ms")
                rows.append(res)
                print(json.dumps(res, ensure_ascii=False), flush=True)
        from sqlalchemy import func, select

        from triage.store.database import Store, Suggestion

        store = Store(url, migrate=False)
        with store.session() as s:
            n = s.execute(select(func.count()).select_from(Suggestion)).scalar_one()
            have = set(s.execute(select(Suggestion.receipt)).scalars())
        missing = [r for r in stored_ok if r not in have]
        print(json.dumps({"accepted_2xx": len(stored_ok), "distinct_receipts": len(set(stored_ok)), "rows": n,
                          "missing": len(missing), "every_accepted_stored_once": not missing and n == len(set(stored_ok))
                          == len(stored_ok)}, ensure_ascii=False))
        table = pd.DataFrame(rows)[["path", "concurrency", "rps", "p50_ms", "p95_ms", "p99_ms", "codes"]]
        print(table.to_string(index=False))
    finally:
        stop(server, 20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
