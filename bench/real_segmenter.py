"""Segmentation on real messages: jieba's own route beside jieba-next's Rust route, in one run.

    python bench/real_segmenter.py              # every real message (about 11,600), both routes
    python bench/real_segmenter.py --mask 2000  # also mask the first 2,000 (the name finder's cuts)

The tokenizer (:func:`triage.text.lexicon.tokenizer`) takes each clause's best route from
jieba-next's ``PrefixDict`` and keeps everything else jieba's. That is only worth having if the words
are the same: the shipped model's vocabulary and every mask depend on them. Each route runs in its own
process (``TRIAGE_FAST_ROUTE=1`` / ``0``) over the same texts, as the product reads them (title and
text joined, normalised), and prints per route the seconds for

* the tokens of every text (jieba with its HMM: :func:`triage.text.normalise.tokens`),
* the places of every text (jieba without the HMM: :meth:`triage.text.places.PlaceExtractor.extract`),
* masking (``clean_many``: the name finder's own cuts and the NER) of the first ``--mask`` texts,

and whether the two routes gave the same result for every text (a hash of each output, compared).
Reads ``../shared/realdata/``; exits 0 with the reason where it is absent. Never writes a message.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
REAL = ROOT.parent / "shared" / "realdata"
FILES = ("teddy2020_c_unlabelled.csv", "teddy2020_c_replies.csv", "teddy2020_c_dev_domain.csv")


def load_texts() -> list[str]:
    import pandas as pd

    from triage.text.normalise import normalize

    out = []
    for f in FILES:
        df = pd.read_csv(REAL / f, dtype=str).fillna("")
        titles = df["title"] if "title" in df else pd.Series([""] * len(df))
        out += [normalize(f"{t}\n{x}" if t else x) for t, x in zip(titles, df["text"])]
    return out


def digest(items) -> list[str]:
    return [hashlib.sha1(json.dumps(x, ensure_ascii=False).encode("utf-8")).hexdigest()[:16] for x in items]


def child(mask: int) -> dict:
    """One route's timings and output hashes (run with TRIAGE_FAST_ROUTE set by the parent)."""
    from triage.text.lexicon import tokenizer
    from triage.text.normalise import clean_many, tokens
    from triage.text.places import PlaceExtractor

    texts = load_texts()
    tok = tokenizer()
    tok.lcut("预热")
    finder = PlaceExtractor()
    finder.extract("预热北辰社区")
    res: dict = {"route": "jieba-next (Rust)" if getattr(tok, "_route", None) is not None else "jieba (Python)",
                 "texts": len(texts)}
    t = time.perf_counter()
    toks = [tokens(x) for x in texts]
    res["tokens_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    places = [[(p.name, p.start) for p in finder.extract(x)] for x in texts]
    res["places_s"] = round(time.perf_counter() - t, 2)
    masked = []
    if mask:
        t = time.perf_counter()
        masked = [(m.text, m.kinds) for m in clean_many(texts[:mask])]
        res["mask_s"] = round(time.perf_counter() - t, 2)
    res["hashes"] = {"tokens": digest(toks), "places": digest(places), "masks": digest(masked)}
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mask", type=int, default=0, help="also mask this many texts (the name finder's cuts)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not REAL.is_dir():
        print(f"skipped: {REAL} is absent (the real messages live beside the project, never in it)")
        return 0
    if args.child:
        print(json.dumps(child(args.mask)))
        return 0
    runs = {}
    for flag in ("0", "1"):   # jieba's own route first
        env = {**os.environ, "TRIAGE_FAST_ROUTE": flag, "PYTHONHASHSEED": "0"}
        out = subprocess.run([sys.executable, __file__, "--child", "--mask", str(args.mask)], env=env, cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        runs[flag] = json.loads(out.strip().splitlines()[-1])
    a, b = runs["0"], runs["1"]
    print(f"\n{a['texts']} real messages, one process each, 2-core machine\n")
    print("| route | tokens (HMM) s | places (no HMM) s | masking s |")
    print("|---|---|---|---|")
    for r in (a, b):
        print(f"| {r['route']} | {r['tokens_s']} | {r['places_s']} | {r.get('mask_s', '')} |")
    print(f"\nratios (Python route / Rust route): tokens {a['tokens_s'] / b['tokens_s']:.2f}×, places "
          f"{a['places_s'] / b['places_s']:.2f}×" + (f", masking {a['mask_s'] / b['mask_s']:.2f}×" if args.mask else ""))
    for k in ("tokens", "places", "masks"):
        ha, hb = a["hashes"][k], b["hashes"][k]
        same = sum(x == y for x, y in zip(ha, hb))
        print(f"{k}: {same} of {len(ha)} texts give the same result")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
