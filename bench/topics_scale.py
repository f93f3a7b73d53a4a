"""Time and peak memory to build candidate topics for 10k, 30k and 100k messages.

Each size runs in its own process (so peak RSS is that size's own), twice against one embedding
cache file: first from scratch (every text embedded), then from the cache (re-clustering). It also
times incremental assignment of single new messages against the built index.

Messages are corpus messages replicated into many "places" and periods (place names suffixed, dates
shifted) and lightly perturbed, so the number of topics grows with the number of messages as it does
in a real office.

    python bench/topics_scale.py [--sizes 10000 30000 100000] [--scratch-max 100000] [--encoder use]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def synth(n: int, seed: int = 0) -> pd.DataFrame:
    corpus = pd.read_csv(ROOT / "corpora" / "suggestions.csv", dtype=str, keep_default_na=False)
    from triage.text.places import default_gazetteer

    names = sorted(default_gazetteer().level, key=len, reverse=True)
    rng = np.random.default_rng(seed)
    rows = []
    reps = int(np.ceil(n / len(corpus)))
    tails = ["", "。", "！", "，谢谢", "，盼回复", "，急", "😡", "🙏", "，请尽快", "，希望重视"]
    for r in range(reps):
        shift = pd.Timedelta(days=int(r % 8) * 120)
        for _, row in corpus.iterrows():
            text = row["text"]
            if r:
                for nm in names:
                    if nm in text:
                        text = text.replace(nm, f"{nm[:-1]}{r}{nm[-1]}")
            text = text + tails[int(rng.integers(len(tails)))] + ("" if r == 0 else f"（{r}）")
            rows.append({"id": f"{row['id']}-{r}", "text": text, "channel": row["channel"],
                         "submitted_at": str(pd.Timestamp(row["submitted_at"]) + shift),
                         "submitter": f"{row.get('submitter', '')}-{r}", "support": row.get("support", "0")})
            if len(rows) >= n:
                return pd.DataFrame(rows)
    return pd.DataFrame(rows)


def one(n: int, cache: str, encoder: str) -> dict:
    from triage.candidates import build_candidates
    from triage.embed.encoders import CachedEncoder, EmbeddingCache, get_encoder, topic_embeddings
    from triage.pipeline import Triage
    from triage.text.normalise import clean, tokens
    from triage.topics.builder import TopicIndex

    frame = synth(n)
    tri = Triage.load()
    enc = CachedEncoder(get_encoder(encoder), EmbeddingCache(cache))
    t0 = time.perf_counter()
    res = build_candidates(tri, frame, ["text"], encoder=enc)
    total = time.perf_counter() - t0
    # incremental assignment of new messages against the built index
    index = TopicIndex(res.builder)
    probes = frame.sample(min(200, len(frame)), random_state=1)["text"].tolist()
    masked = [clean(t + "，补充一下").text for t in probes]
    toks = [" ".join(tokens(t)) for t in masked]
    embs = topic_embeddings(enc, masked)  # as the topics were built
    t1 = time.perf_counter()
    for t, tk, e in zip(masked, toks, embs):
        index.assign(t, tk, e, None, pd.Timestamp("2026-11-01"))
    per_msg_ms = (time.perf_counter() - t1) / len(masked) * 1000
    return {"messages": n, "topics": len(res.topics), "embedded": enc.misses, "seconds": round(total, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
            "assign_ms": round(per_msg_ms, 2), "stages": res.seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 30000, 100000])
    ap.add_argument("--scratch-max", type=int, default=100000, help="largest size also timed from scratch")
    ap.add_argument("--encoder", default="use")
    ap.add_argument("--one", type=int, default=0)
    ap.add_argument("--cache", default="")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.cache, args.encoder)))
        return
    print(f"{'messages':>9} {'mode':<8} {'topics':>7} {'embedded':>9} {'seconds':>8} {'peak MB':>8} {'assign ms':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            cache = os.path.join(tmp, f"emb{n}.sqlite")
            modes = ["scratch", "cached"] if n <= args.scratch_max else ["cached"]
            if "scratch" not in modes:  # fill the cache outside the timed run
                subprocess.run([sys.executable, __file__, "--one", str(n), "--cache", cache, "--encoder", args.encoder],
                               check=True, capture_output=True)
            for mode in modes:
                out = subprocess.run([sys.executable, __file__, "--one", str(n), "--cache", cache,
                                      "--encoder", args.encoder], check=True, capture_output=True, text=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{r['messages']:>9} {mode:<8} {r['topics']:>7} {r['embedded']:>9} {r['seconds']:>8} "
                      f"{r['peak_rss_mb']:>8.0f} {r['assign_ms']:>9}  "
                      + " ".join(f"{k}={v}" for k, v in r.get("stages", {}).items()), flush=True)
    print("targets: 100k messages clustered from cached embeddings in < 300 s; one new message assigned in < 20 ms")


if __name__ == "__main__":
    main()
