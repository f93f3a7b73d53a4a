"""Topics as staff see them: a real board replayed through the portal API, read back through the staff API.

    python bench/real_live_topics.py                     # the unlabelled file, in time order
    python bench/real_live_topics.py --limit 600         # a quick look

Starts ``triage serve`` (one worker, a fresh SQLite file in a temporary folder, default settings: the
service re-clusters by itself every 200 submissions, or a quarter of the store, and once intake has
been quiet for two minutes, as in production), submits every message of
``../shared/realdata/teddy2020_c_unlabelled.csv`` in time order through ``POST /api/v1/suggestions``
(title, body, time, submitter; one request at a time, as a portal forwards them), then reads every
topic and its members back through the staff API (``GET /api/v1/topics`` and ``/topics/{id}``): right
after the last message, and again once the service has settled by itself. The same messages go
through ``triage topics`` once (the full run). Printed, in one run:

* intake rate (submissions/s, start-up excluded);
* ARI between the live partition and the full run's, over every message;
* member F1 and ARI against the team's development gold (``bench/realdata_labels/topics_*.csv``, the
  groups on this file) for the live topics and for the full run;
* topic counts (individual petitions included), the ranks of the ten gold groups raised by the most
  citizens in the staff list as shown (petitions are in the 个人诉求 view), and its top 20 with labels.

Exits 0 with the reason when ``../shared/realdata`` is absent. Never writes a message into the project.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from api_latency import free_port, stop, wait_ready  # noqa: E402  (the same service start-up as the latency bench)
REAL = ROOT.parent / "shared" / "realdata"
SOURCE = "teddy2020_c_unlabelled.csv"

log = logging.getLogger("bench.real_live_topics")


def start_service(home: Path, env: dict) -> tuple[subprocess.Popen, str, str, str]:
    triage = [sys.executable, "-m", "triage.cli"]

    def key(role: str) -> str:
        out = subprocess.run([*triage, "keys", "create", "--role", role, "--rate", "0", "--name", f"bench-{role}"],
                             env=env, check=True, capture_output=True, text=True, cwd=ROOT)
        return out.stdout.strip().splitlines()[-1]

    portal, staff = key("portal"), key("staff")
    port = free_port()
    server = subprocess.Popen([*triage, "serve", "--port", str(port), "--workers", "1", "--quiet"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=open(home / "serve.log", "w"))
    return server, f"http://127.0.0.1:{port}", portal, staff


def replay(base: str, portal: str, board: pd.DataFrame) -> tuple[list[str], float]:
    """Submit every message in order; the topic id the service gave each one (its receipt's topic)."""
    import httpx

    h = {"X-API-Key": portal}
    t0 = time.perf_counter()
    receipts = []
    with httpx.Client(base_url=base, timeout=120) as c:
        for k, r in enumerate(board.itertuples(index=False)):
            body = {"text": str(r.text) if pd.notna(r.text) else "", "title": str(r.title) if pd.notna(r.title) else "",
                    "submitted_at": pd.Timestamp(r.submitted_at).isoformat(), "submitter": str(r.user),
                    "channel": "网上征题"}
            resp = c.post("/api/v1/suggestions", json=body, headers={**h, "Idempotency-Key": f"replay-{r.id}"})
            if resp.status_code != 201:
                log.warning("%s: %s %s", r.id, resp.status_code, resp.text[:200])
                receipts.append(None)
            else:
                receipts.append(resp.json()["receipt"])
            if (k + 1) % 500 == 0:
                log.info("%d submitted (%.1f/s)", k + 1, (k + 1) / (time.perf_counter() - t0))
    return receipts, time.perf_counter() - t0


def read_back(base: str, staff: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every topic, individual petitions included, in the staff list's order (hottest first), with a
    column saying whether the default list shows it; and every member (suggestion id → topic id)."""
    import httpx

    h = {"X-API-Key": staff}
    topics, members = [], []
    with httpx.Client(base_url=base, timeout=120, headers=h) as c:
        shown: set[str] = set()
        offset = 0
        while True:
            page = c.get("/api/v1/topics", params={"limit": 1000, "offset": offset}).json()
            shown |= {t["id"] for t in page["items"]}
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                break
        offset = 0
        while True:
            page = c.get("/api/v1/topics", params={"limit": 1000, "offset": offset, "petitions": "true"}).json()
            topics += page["items"]
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                break
        for t in topics:
            t["listed"] = t["id"] in shown
            d = c.get(f"/api/v1/topics/{t['id']}").json()
            members += [{"sid": m["id"], "topic_id": t["id"]} for m in d.get("members", [])]
    return pd.DataFrame(topics), pd.DataFrame(members)


def wait_settled(db: Path, timeout: float) -> float:
    """Seconds until the service's own re-clustering covers every stored message and has finished
    (its lease's mark is the store's count, the lease free): read from the service's database file,
    as an operator would; nothing is asked of the API."""
    import sqlite3

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as c:
            total = c.execute("select count(*) from suggestions").fetchone()[0]
            row = c.execute("select mark, until < datetime('now') from leases where name = 'recluster'").fetchone()
        if row is not None and row[0] >= total and row[1]:
            return time.monotonic() - t0
        time.sleep(2)
    raise SystemExit(f"the service did not settle within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=0, help="only the first N messages in time order")
    ap.add_argument("--show-top", type=int, default=20)
    ap.add_argument("--save", default=None, help="a folder outside the project for the staff list (ids, labels, members)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not REAL.is_dir():
        print(f"skipped: {REAL} is absent (the real messages live beside the project, never in it)")
        return 0
    import real_topics as rt
    from sklearn.metrics import adjusted_rand_score

    board = pd.read_csv(REAL / SOURCE, dtype=str)
    board["_t"] = pd.to_datetime(board["submitted_at"], errors="coerce")
    board = board.sort_values(["_t", "id"], kind="stable").drop(columns="_t").reset_index(drop=True)
    if args.limit:
        board = board.head(args.limit)
    gold = rt.load_gold()
    gold = gold[gold["id"].isin(set(board["id"]))]
    with tempfile.TemporaryDirectory(prefix="real_live_") as tmp:
        home = Path(tmp)
        env = {**os.environ, "TRIAGE_HOME": str(home), "TRIAGE_DATABASE_URL": f"sqlite:///{home / 'live.db'}",
               "PYTHONHASHSEED": "0"}
        server, base, portal, staff = start_service(home, env)
        try:
            wait_ready(base, server, lambda: (home / "serve.log").read_text()[-2000:], tries=480)
            receipts, seconds = replay(base, portal, board)
            time.sleep(2)
            topics, members = read_back(base, staff)
            # then nothing more arrives: the service re-clusters by itself once intake has been quiet
            # (TRIAGE_RECLUSTER_QUIET_S, default 120 s); what staff see from then on
            waited = wait_settled(home / "live.db", timeout=900)
            log.info("the service settled %.0f s after the last message", waited)
            topics_rc, members_rc = read_back(base, staff)
        finally:
            stop(server, 30)
        # one worker, one request at a time, a fresh store: suggestion ids follow the submission order
        ok = [i for i, r in enumerate(receipts) if r is not None]
        sid_to_msg = {k + 1: board["id"].iat[i] for k, i in enumerate(ok)}
        live = {sid_to_msg[s]: t for s, t in zip(members["sid"], members["topic_id"]) if s in sid_to_msg}
        after = {sid_to_msg[s]: t for s, t in zip(members_rc["sid"], members_rc["topic_id"]) if s in sid_to_msg}
        csv = home / "board.csv"
        board[rt.COLUMNS].to_csv(csv, index=False)
        full = rt.triage_run(csv, home, ROOT, "full")
    if args.save:
        keep = Path(args.save)
        keep.mkdir(parents=True, exist_ok=True)
        by_topic: dict[str, list[str]] = {}
        for m, t in live.items():
            by_topic.setdefault(str(t), []).append(m)
        topics.assign(members=topics["id"].map(lambda t: " ".join(by_topic.get(t, [])))).to_csv(
            keep / "live_topics.csv", index=False)
    ids = [i for i in board["id"] if i in live and i in full["topic_of"]]
    live_p = [str(live[i]) for i in ids]
    full_p = [str(full["topic_of"][i]) for i in ids]
    g_of = dict(zip(gold["id"], gold["group"]))
    gl = [g_of.get(i) for i in ids]
    # ranks in the staff list as shown (individual petitions are in the 个人诉求 view, not ranked here)
    listed = topics[topics["listed"]].reset_index(drop=True)
    live_rank = {t: k + 1 for k, t in enumerate(listed["id"])}
    live_run = {"topics": listed.assign(topic_id=listed["id"], rank=range(1, len(listed) + 1)),
                "topic_of": live, "rank": live_rank, "seconds": round(seconds, 1), "peak_mib": None}
    s_live = rt.score(live_run, board, gold, set(ids))
    s_full = rt.score(full, board, gold, set(ids))
    listed_rc = topics_rc[topics_rc["listed"]].reset_index(drop=True)
    rc_run = {"topics": listed_rc.assign(topic_id=listed_rc["id"], rank=range(1, len(listed_rc) + 1)),
              "topic_of": after, "rank": {t: k + 1 for k, t in enumerate(listed_rc["id"])}, "seconds": 0.0,
              "peak_mib": None}
    s_rc = rt.score(rc_run, board, gold, set(ids))
    out = {"messages": len(board), "accepted": len(ok), "intake_per_s": round(len(ok) / seconds, 1),
           "live_vs_full_ari": round(adjusted_rand_score(full_p, live_p), 4),
           "reclustered_vs_full_ari": round(adjusted_rand_score(full_p, [str(after.get(i)) for i in ids]), 4),
           "live": {k: s_live[k] for k in ("member_f1", "ari", "topics", "top10_groups_in_top20", "top10_ranks", "top10_tie")},
           "full": {k: s_full[k] for k in ("member_f1", "ari", "topics", "top10_groups_in_top20", "top10_ranks", "top10_tie")},
           "gold_groups": int(gold["group"].nunique())}
    print(f"\n{len(board)} messages replayed in time order, {len(ok)} accepted, {out['intake_per_s']} submissions/s")
    print("| partition | member F1 | ARI on gold | topics | top-10 groups in top 20 |")
    print("|---|---|---|---|---|")
    for name, sc in (("live (intake + the service's own re-clustering)", s_live),
                     ("once intake went quiet (the service's own re-clustering)", s_rc), ("full `triage topics`", s_full)):
        print(f"| {name} | {sc['member_f1']:.3f} | {sc['ari']:.3f} | {sc['topics']} | {sc['top10_groups_in_top20']}/10 |")
    for name, sc in (("live", s_live), ("full", s_full)):
        print(f"{name}: {rt.tie_note(sc)}")
    print(f"live vs full ARI (every message): right after the last message {out['live_vs_full_ari']:.3f}; "
          f"once intake went quiet {out['reclustered_vs_full_ari']:.3f}")
    hit = {v["topic"]: g for g, v in s_live["per_group"].items() if v["topic"] is not None}
    print(f"\nstaff list, top {args.show_top}:")
    for k, t in enumerate(listed.head(args.show_top).itertuples(index=False), 1):
        print(f"{k:>3}. [{t.heat:.3f}] {t.label}  ({t.submitters} 位群众 / {t.size} 条留言) {t.verdict}"
              f"{'  ← ' + hit[t.id] if t.id in hit else ''}")
    print(json.dumps(out, ensure_ascii=False, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
