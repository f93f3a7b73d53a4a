"""Intake latency while a re-clustering job runs, beside intake on the same store with none, one run.

    python bench/intake_during_recluster.py                  # a store of 20,000 past messages
    python bench/intake_during_recluster.py --rows 100000    # issue 21's size (the import alone ~16 min)
    python bench/intake_during_recluster.py --store S.db     # a copy of a store an earlier import made

Issue 21 asks that a re-clustering at 100k stored messages "never blocks intake for more than its short
bulk write". This measures it as an office would meet it:

1. ``triage import`` loads ``--rows`` past messages into a fresh SQLite store and clusters them (the
   corpus replicated over places and periods, ``topics_scale.synth``; wall seconds printed);
2. ``triage serve`` (``--workers``, default 2) starts on that store;
3. **quiet**: ``--requests`` submissions at 16 clients, no job running: p50 / p95 / p99 / max, rows/s;
4. **during**: ``POST /api/v1/topics/recluster`` (a staff key), then submissions in rounds of the same
   kind until the job reports done; only requests sent while it ran count. Also the job's seconds;
5. **after**: the quiet round again (the service with the new index).

Every accepted submission is then looked for in the store (each must be there once). Latency figures
are this machine's; compare the rows of one run, not runs on different days.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
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
sys.path.insert(0, str(ROOT / "bench"))

from api_latency import drive, free_port, stop, texts, wait_ready  # noqa: E402


def history(rows: int, path: Path) -> None:
    """``rows`` past messages, none in the future (intake refuses those, and the import with them)."""
    from topics_scale import synth

    frame = synth(rows).rename(columns={"submitter": "留言用户"})
    when = pd.to_datetime(frame["submitted_at"])
    late = when.max() - pd.Timestamp.now() + pd.Timedelta(days=1)
    frame["submitted_at"] = (when - max(late, pd.Timedelta(0))).astype(str)
    frame.to_csv(path, index=False)


def summary(name: str, lat_ms: list[float], seconds: float, codes: dict[int, int]) -> dict:
    a = np.array(lat_ms) if lat_ms else np.zeros(1)
    return {"phase": name, "requests": len(lat_ms), "rps": round(len(lat_ms) / seconds, 1) if seconds else None,
            "p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1), "max_ms": round(float(a.max()), 1), "codes": codes}


def one_round(base: str, key: str, pool: list[str], n: int, rnd: random.Random, tag: str) -> dict:
    bodies = [{"text": rnd.choice(pool), "channel": "网上征题", "submitter": f"{tag}{i}"} for i in range(n)]
    return asyncio.run(drive(base, key, "/api/v1/suggestions", bodies, 16))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000, help="past messages in the store")
    ap.add_argument("--requests", type=int, default=400, help="submissions in each quiet round")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--store", type=Path, default=None,
                    help="an SQLite store a previous import made (copied, not changed): skips the import, so that "
                         "two versions of the code can be compared on the same store in turn")
    args = ap.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="triage-recluster-bench-"))
    url = f"sqlite:///{home / 'store.db'}"
    env = {**os.environ, "TRIAGE_HOME": str(home), "TRIAGE_DATABASE_URL": url, "PYTHONHASHSEED": "0",
           "TRIAGE_RECLUSTER_EVERY": "1000000", "TRIAGE_RECLUSTER_QUIET_S": "0"}   # only the job re-clusters
    triage = [sys.executable, "-m", "triage.cli"]
    imported_s = None
    if args.store is not None:
        import shutil

        if not args.store.is_file():
            raise SystemExit(f"--store {args.store}: 没有这个文件 / no such store file")
        shutil.copyfile(args.store, home / "store.db")
        if Path(f"{args.store}-wal").exists():   # whatever its last writer left in the write-ahead log
            shutil.copyfile(f"{args.store}-wal", home / "store.db-wal")
        print(json.dumps({"store": str(args.store), "import_s": None}), flush=True)
    else:
        csv = home / "history.csv"
        history(args.rows, csv)
        t0 = time.perf_counter()
        subprocess.run([*triage, "import", str(csv), "--database", url], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        imported_s = round(time.perf_counter() - t0, 1)
        print(json.dumps({"rows": args.rows, "import_s": imported_s}), flush=True)

    def key(role: str) -> str:
        return subprocess.run([*triage, "keys", "create", "--role", role, "--rate", "0", "--name", f"bench-{role}"],
                              env=env, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]

    portal, staff = key("portal"), key("staff")
    port = free_port()
    server = subprocess.Popen([*triage, "serve", "--port", str(port), "--workers", str(args.workers), "--quiet"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    rnd = random.Random(0)
    pool = texts()
    accepted: list[str] = []
    rows = []
    try:
        wait_ready(base, server, lambda: server.stderr.read()[-2000:])
        time.sleep(5 * args.workers)   # every worker started and has loaded its topic index
        one_round(base, portal, pool, 48, rnd, "warm")

        def quiet(name: str) -> None:
            r = one_round(base, portal, pool, args.requests, rnd, name)
            accepted.extend(r["receipts"])
            rows.append(summary(name, r["latencies_ms"], r["seconds"], r["codes"]))
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)

        quiet("quiet")
        started = time.perf_counter()
        job = httpx.post(f"{base}/api/v1/topics/recluster", headers={"X-API-Key": staff}, timeout=30)
        if job.status_code != 202:
            raise SystemExit(f"re-clustering not started: {job.status_code} {job.text[:500]}")
        job_id = job.json()["id"]
        lat: list[float] = []
        codes: dict[int, int] = {}
        busy_s, status, progress, result = 0.0, "running", None, None
        k = 0
        while status in ("queued", "running"):
            t = time.perf_counter()
            r = one_round(base, portal, pool, 32, rnd, f"during{k}-")
            busy_s += time.perf_counter() - t
            k += 1
            accepted.extend(r["receipts"])
            lat.extend(r["latencies_ms"])
            for c, n in r["codes"].items():
                codes[c] = codes.get(c, 0) + n
            j = httpx.get(f"{base}/api/v1/jobs/{job_id}", headers={"X-API-Key": staff}, timeout=30).json()
            status, progress, result = j["status"], j.get("progress"), j.get("result")
        job_s = round(time.perf_counter() - started, 1)
        rows.append({**summary("during re-clustering", lat, busy_s, codes), "job_status": status,
                     "job_s": job_s, "job_progress": progress, "job_result": result})
        print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
        quiet("after")
    finally:
        stop(server, 30)
    from sqlalchemy import select

    from triage.store.database import Store, Suggestion

    store = Store(url, migrate=False)
    with store.session() as s:
        have = set(s.execute(select(Suggestion.receipt)).scalars())
    missing = [r for r in accepted if r not in have]
    print(json.dumps({"accepted_2xx": len(accepted), "distinct": len(set(accepted)), "missing": len(missing)}))
    q = next(r for r in rows if r["phase"] == "quiet")
    made = f"a copy of {args.store}" if args.store is not None else f"{args.rows:,} past messages (import {imported_s} s)"
    print(f"\nstore of {made}, {args.workers} workers, 16 clients")
    print("| phase | requests | rows/s | p50 ms | p95 ms | p99 ms | max ms | p99 vs quiet |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['phase']} | {r['requests']} | {r['rps']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | "
              f"{r['max_ms']} | {r['p99_ms'] / q['p99_ms']:.1f}× |")
    during = next(r for r in rows if r["phase"].startswith("during"))
    res = during.get("job_result") or {}
    print(f"re-clustering job: {during['job_status']} in {during['job_s']} s "
          f"(clustering {res.get('seconds')} s, the bulk write that holds intake {res.get('write_seconds')} s)")
    return 0 if not missing else 1


if __name__ == "__main__":
    raise SystemExit(main())
