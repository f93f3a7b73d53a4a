"""Throughput of `triage classify` on 50,000 rows vs a naive per-row loop over the same estimators.

Prints messages/second for: the batch path (chunked, vectorised, all cores), the same batch path on
one process, the naive loop (one message at a time through the same model), and jieba alone (the
segmentation floor), so it is visible what bounds the lexical path. Ratios are against the naive
loop measured in the same run.

    python bench/classify_throughput.py [--rows 50000] [--naive-rows 1500] [--model models/default]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from triage.batch.runner import classify_file  # noqa: E402
from triage.pipeline import Triage  # noqa: E402
from triage.text.normalise import clean, tokens  # noqa: E402


def make_rows(n: int, seed: int = 0) -> pd.DataFrame:
    corpus = pd.read_csv(ROOT / "corpora" / "suggestions.csv", dtype=str, keep_default_na=False)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(corpus), n)
    # vary each row a little so nothing downstream can benefit from exact repeats
    suffix = rng.choice(["", "。", "!!", " 谢谢", "，盼回复", "😡"], n)
    return pd.DataFrame({"id": np.arange(n), "title": corpus["title"].to_numpy()[idx],
                         "text": corpus["text"].to_numpy()[idx] + suffix})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50000)
    ap.add_argument("--naive-rows", type=int, default=1500)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()

    frame = make_rows(args.rows)
    mean_len = frame["text"].str.len().mean()
    print(f"rows={len(frame)}  mean text length={mean_len:.0f} chars  cores={os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.csv"
        frame.to_csv(src, index=False)

        t0 = time.perf_counter()
        s = classify_file(str(src), str(Path(tmp) / "out.csv"), model_dir=args.model, quiet=True)
        batch_all = len(frame) / (time.perf_counter() - t0)
        assert s["processed"] + s["failed"] == len(frame)

        one = frame.iloc[:10000]
        src1 = Path(tmp) / "in1.csv"
        one.to_csv(src1, index=False)
        t0 = time.perf_counter()
        classify_file(str(src1), str(Path(tmp) / "out1.csv"), model_dir=args.model, workers=1, quiet=True)
        batch_one = len(one) / (time.perf_counter() - t0)

    tri = Triage.load(args.model)
    texts = (frame["title"] + "\n" + frame["text"]).tolist()
    naive = texts[: args.naive_rows]
    t0 = time.perf_counter()
    for t in naive:
        tri.assess_texts([t], evidence=False)
    naive_rate = len(naive) / (time.perf_counter() - t0)

    seg = texts[:10000]
    t0 = time.perf_counter()
    masked = [clean(t).text for t in seg]
    t1 = time.perf_counter()
    for t in masked:
        tokens(t)
    t2 = time.perf_counter()
    print(f"{'path':<44}{'msgs/s':>10}{'vs naive':>10}")
    for name, rate in [
        (f"triage classify, all cores ({len(frame) // 1000}k rows, file→file)", batch_all),
        ("triage classify, 1 process (10k rows)", batch_one),
        ("naive per-row loop, same estimators", naive_rate),
        ("normalise+mask only (1 core)", len(seg) / (t1 - t0)),
        ("jieba tokens only (1 core)", len(seg) / (t2 - t1)),
    ]:
        print(f"{name:<44}{rate:>10.0f}{rate / naive_rate:>9.1f}x")
    print("target: >= 1500 msgs/s for the lexical path on 2 cores")


if __name__ == "__main__":
    main()
