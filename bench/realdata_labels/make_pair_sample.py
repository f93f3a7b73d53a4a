"""Draw message pairs around the merge threshold for labelling (see ``topic_pairs.md``).

    python bench/realdata_labels/make_pair_sample.py --out /tmp/pairs   # writes OUTSIDE the project

Clusters nothing: it runs the topic stages' candidate search (k nearest neighbours by embedding and
by tf-idf) on both real files with submitters, scores every candidate pair with the current
similarity, and draws ``--per-bin`` pairs from each score bin. Writes the pair list (ids and scores)
and, for the labellers, two text files with both messages of each pair; those hold message text and
so must stay outside the project. Exits 0 with the reason when ``../shared/realdata`` is absent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="a folder outside the project")
    ap.add_argument("--bins", default="0.25,0.30,0.35,0.40,0.45,0.50,0.60")
    ap.add_argument("--per-bin", type=int, default=70)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    import real_topics as rt
    if not rt.REAL.is_dir():
        print(f"skipped: {rt.REAL} is absent (the real messages are not shipped with the project)")
        return 0
    out = Path(args.out).resolve()
    if ROOT in out.parents or out == ROOT:
        raise SystemExit("--out must be outside the project: the labellers' files hold message text")
    out.mkdir(parents=True, exist_ok=True)

    from triage.candidates import build_candidates
    from triage.cluster import Similarity, scored_candidates
    from triage.pipeline import Triage
    from triage.tableio import resolve_text_columns

    board = rt.load_board(["unlabelled", "replies"])
    frame = board[rt.COLUMNS]
    res = build_candidates(Triage.load(ROOT / "models" / "default"), frame, resolve_text_columns(frame, None))
    b = res.builder
    p, cfg = b.points_, b.config.similarity
    i, j, sem, lex = scored_candidates(p.emb, p.lex, cfg.knn, cfg.knn // 2)
    score = Similarity(cfg, b.places).pairs(p, i, j, sem, lex)
    edges = [float(x) for x in args.bins.split(",")]
    pairs = pd.DataFrame({"i": i, "j": j, "sem": sem, "lex": lex, "score": score})
    pairs = pairs[(pairs["score"] >= edges[0]) & (pairs["score"] < edges[-1])]
    pairs["bin"] = pd.cut(pairs["score"], edges)
    drawn = (pairs.groupby("bin", observed=True, group_keys=False)
             .apply(lambda g: g.sample(min(len(g), args.per_bin), random_state=args.seed))
             .sample(frac=1, random_state=args.seed).reset_index(drop=True))
    ids = b.msgs_["id"].tolist()
    drawn["a"] = [ids[k] for k in drawn["i"]]
    drawn["b"] = [ids[k] for k in drawn["j"]]
    drawn[["a", "b", "sem", "lex", "score"]].to_csv(out / "pair_sample.csv", index_label="pair")
    text = board.set_index("id")

    def show(m: str) -> str:
        r = text.loc[m]
        return f"[{m}] {r['submitted_at']} 标题：{r['title']}\n正文：{' '.join(str(r['text']).split())[:350]}"

    for part, chunk in enumerate(np.array_split(drawn.index.to_numpy(), 2), start=1):
        with open(out / f"pairs_part{part}.txt", "w", encoding="utf-8") as f:
            for k in chunk:
                f.write(f"=== PAIR {k}\nA {show(drawn.at[k, 'a'])}\nB {show(drawn.at[k, 'b'])}\n\n")
    print(f"{len(drawn)} pairs → {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
