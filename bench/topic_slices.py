"""Topic clustering quality per writer group: the first writers (slices A-G) and the second passes (H-K).

``triage evaluate --topics`` scores all messages together; a change that only fits the first writers'
habits shows up here as a gain on A-G and none (or a loss) on H-K. Gold topics never span slices, so
each group's ARI is computed on its own messages with a gold topic, from one clustering of the corpus.

    python bench/topic_slices.py [--data corpora/suggestions.csv] [--cache FILE.sqlite]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GROUPS = {"A-G": set("ABCDEFG"), "H-K": set("HIJK")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT / "corpora" / "suggestions.csv"))
    ap.add_argument("--cache", default="", help="embedding cache file (reruns skip the encoder)")
    args = ap.parse_args(argv)

    from sklearn.metrics import adjusted_rand_score, v_measure_score

    from triage.candidates import build_candidates
    from triage.embed.encoders import CachedEncoder, EmbeddingCache, get_encoder
    from triage.pipeline import Triage
    from triage.io.tables import read_table, resolve_text_columns

    table = read_table(args.data)
    frame = table.frame
    enc = CachedEncoder(get_encoder("use"), EmbeddingCache(args.cache or None))
    res = build_candidates(Triage.load(), frame, resolve_text_columns(frame, None), encoder=enc)
    pred = np.array([t if t else f"_none{i}" for i, t in enumerate(res.members["topic_id"].fillna(""))], dtype=object)
    gold = frame["topic"].fillna("").astype(str).to_numpy(dtype=object)
    writer = frame["submitter"].fillna("").astype(str).str.split("-").str[0].to_numpy(dtype=object)
    report = {}
    for name, letters in {"all": None, **GROUPS}.items():
        m = (gold != "") & (np.isin(writer, list(letters)) if letters else True)
        report[name] = {"n": int(m.sum()), "ari": round(adjusted_rand_score(gold[m], pred[m]), 4),
                        "v_measure": round(v_measure_score(gold[m], pred[m]), 4)}
    print(json.dumps(report, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
