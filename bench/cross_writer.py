"""Cross-writer evaluation: train on one set of writing passes, score on passes by other writers.

Group k-fold by topic keeps whole topics out of training, but every domain of the corpus was first
written by one writer (two domains per pass), so a model can still learn a writer's habits. The
later passes H-K re-write four domains (城乡建设, 教育, 环境保护, 市场监管) with different voices and
places; training on A-G and scoring on H-K is the closest thing we have to unseen citizens.

    python bench/cross_writer.py [--embeddings] [--heldout H,I,J,K]

Prints one JSON report: domain accuracy / macro-F1 restricted to the held-out domains, scope
macro-F1, and the in-corpus group k-fold figures for comparison when the shipped manifest has them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT / "corpora" / "suggestions.csv"))
    ap.add_argument("--heldout", default="H,I,J,K", help="slice letters (submitter prefix) to hold out")
    ap.add_argument("--embeddings", action="store_true")
    args = ap.parse_args(argv)

    from triage.cli import main as triage_main
    from triage.assess.features import join_columns
    from triage.assess.model import metrics_report
    from triage.pipeline import Triage

    df = pd.read_csv(args.data, dtype=str, keep_default_na=False)
    held = set(args.heldout.split(","))
    writer = df["submitter"].str.split("-").str[0]
    test = df[writer.isin(held)].reset_index(drop=True)
    train = df[~writer.isin(held)].reset_index(drop=True)
    with tempfile.TemporaryDirectory() as tmp:
        tpath = Path(tmp) / "train.csv"
        train.to_csv(tpath, index=False)
        cmd = ["train", "--data", str(tpath), "--text-col", "title", "--text-col", "text", "--label-col", "domain",
               "--scope-col", "scope", "--department-col", "department", "--group-col", "topic", "--no-eval",
               "--out", str(Path(tmp) / "m")]
        if args.embeddings:
            cmd.append("--embeddings")
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            triage_main(cmd)
        tri = Triage.load(Path(tmp) / "m")
        res = tri.assess_texts(join_columns(test, ["title", "text"]).tolist(), evidence=False)
    dom = metrics_report(test["domain"], [a.domain for a in res])
    domains = sorted(set(test["domain"]))
    report = {
        "train_rows": len(train), "test_rows": len(test), "heldout_slices": sorted(held),
        "features": "words+chars+cues" + ("+USE" if args.embeddings else ""),
        "domain_accuracy": dom["accuracy"],
        "domain_f1_heldout_domains": {d: dom["per_class_f1"].get(d) for d in domains},
        "domain_macro_f1_heldout_domains": round(sum(dom["per_class_f1"].get(d, 0) for d in domains) / len(domains), 4),
        "scope": metrics_report(test["scope"], [a.scope for a in res]),
    }
    print(json.dumps(report, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
