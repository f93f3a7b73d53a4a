"""Places on real messages: the place finder beside jieba's own place tags, against hand labels.

    python bench/real_places.py            # both batches; agreement on the 20 both readers labelled
    python bench/real_places.py --show 20  # also the first 20 wrong or missed names, to read

Reads ``../shared/realdata/`` (the board's two files) and the team's labels in
``bench/realdata_labels/places_p*.csv`` (ids and offsets only; rules in ``place_rules.md``, sample in
``place_sample.csv``). Exits 0 with the reason when either is absent. Never writes a message anywhere.

Each message goes in as the product reads it: title and text joined by a line break, normalised and
masked (``triage.text.normalise.clean``). Printed, in one run:

* **triage**: :class:`triage.text.places.PlaceExtractor` (gazetteer names with their chain, suffix
  patterns, sentence-word trimming);
* **plain**: jieba.posseg's place tag (``ns``) on the same text, consecutive tagged words joined;

each as precision and recall over name spans, *lenient* (a found name counts when it and a labelled
one contain each other: the finder reports a compound's county and the compound, the label the
longest name written) and *exact*; and how often the message's **primary** place (the one a topic label
shows) is a labelled place. Where both readers labelled a message, batch p1's labels are scored and
the two readers' agreement is printed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
REAL = ROOT.parent / "shared" / "realdata"
LABELS = ROOT / "bench" / "realdata_labels"
FILES = ("teddy2020_c_unlabelled.csv", "teddy2020_c_replies.csv")


def load_docs(ids: set[str]) -> dict[str, tuple[str, str]]:
    """id → (the normalised document the labels' offsets point into, the masked text the product reads)."""
    import pandas as pd

    from triage.text.normalise import clean, normalize

    out = {}
    for f in FILES:
        df = pd.read_csv(REAL / f, dtype=str).fillna("")
        for r in df[df["id"].isin(ids)].itertuples():
            raw = r.title + "\n" + r.text
            out[r.id] = (normalize(raw), clean(raw).text)
    return out


def load_labels(batch: str, docs: dict[str, tuple[str, str]]) -> dict[str, set[str]]:
    """id → the labelled place names of one batch (offsets checked against the span's hash)."""
    gold: dict[str, set[str]] = {}
    with (LABELS / f"places_{batch}.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            names = gold.setdefault(row["id"], set())
            if not row["start"]:
                continue
            span = docs[row["id"]][0][int(row["start"]):int(row["end"])]
            if hashlib.sha1(span.encode("utf-8")).hexdigest()[:8] != row["check"]:
                raise SystemExit(f"{batch} {row['id']} {row['start']}-{row['end']}: offsets moved (normalisation changed?)")
            names.add(span)
    return gold


def _match(a: str, b: str) -> bool:
    return a in b or b in a


def score(found: dict[str, list[str]], primary: dict[str, str | None], gold: dict[str, set[str]]) -> dict:
    """Lenient and exact precision/recall over names, and how often the primary is a labelled place."""
    tp_p = tp_r = n_p = n_g = ex = 0
    prim_ok = prim_n = 0
    for i, names in gold.items():
        got = set(found.get(i, []))
        n_p += len(got)
        n_g += len(names)
        tp_p += sum(1 for x in got if any(_match(x, g) for g in names))
        tp_r += sum(1 for g in names if any(_match(x, g) for x in got))
        ex += len(got & names)
        if primary.get(i):
            prim_n += 1
            prim_ok += any(_match(primary[i], g) for g in names)
    return {"precision": round(tp_p / max(n_p, 1), 3), "recall": round(tp_r / max(n_g, 1), 3),
            "exact_precision": round(ex / max(n_p, 1), 3), "exact_recall": round(ex / max(n_g, 1), 3),
            "found": n_p, "labelled": n_g, "primary_right": prim_ok, "with_primary": prim_n}


def triage_places(docs: dict[str, tuple[str, str]]) -> tuple[dict[str, list[str]], dict[str, str | None]]:
    from triage.text.places import PlaceExtractor

    px = PlaceExtractor()
    found, primary = {}, {}
    for i, (_doc, masked) in docs.items():
        ps = px.extract(masked)
        found[i] = [p.name for p in ps]
        top = px.primary(ps)
        primary[i] = top.name if top else None
    return found, primary


def plain_places(docs: dict[str, tuple[str, str]]) -> tuple[dict[str, list[str]], dict[str, str | None]]:
    """jieba.posseg's ``ns`` words, consecutive ones joined (星沙 + 街道 are two words); the first is primary."""
    import jieba.posseg as pseg

    from triage.text.lexicon import tokenizer

    tokenizer()   # jieba with the civic dictionary, as the product segments
    found, primary = {}, {}
    for i, (_doc, masked) in docs.items():
        names, run = [], ""
        for w, flag in pseg.lcut(masked):
            if flag == "ns":
                run += w
            elif run:
                names.append(run)
                run = ""
        if run:
            names.append(run)
        found[i] = list(dict.fromkeys(names))
        primary[i] = found[i][0] if found[i] else None
    return found, primary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--show", type=int, default=0, help="print this many wrong and missed names of triage's")
    args = ap.parse_args(argv)
    if not REAL.exists():
        print(f"skipped: {REAL} is absent (real messages are not part of the project)")
        return 0
    batches = [b for b in ("p1", "p2") if (LABELS / f"places_{b}.csv").exists()]
    if not batches:
        print("skipped: no place labels (bench/realdata_labels/places_p*.csv)")
        return 0
    ids = {row["id"] for b in batches for row in csv.DictReader((LABELS / f"places_{b}.csv").open(encoding="utf-8"))}
    docs = load_docs(ids)
    labels = {b: load_labels(b, docs) for b in batches}
    gold: dict[str, set[str]] = {}
    for b in reversed(batches):   # p1's labels win where both read a message
        gold.update(labels[b])
    if len(batches) == 2:
        both = sorted(set(labels["p1"]) & set(labels["p2"]))
        a = score({i: sorted(labels["p2"][i]) for i in both}, {}, {i: labels["p1"][i] for i in both})
        print(f"agreement on the {len(both)} messages both read (p2 scored against p1): lenient P {a['precision']} "
              f"R {a['recall']}, exact P {a['exact_precision']} R {a['exact_recall']} "
              f"({a['labelled']} / {a['found']} names)")
    print(f"{len(gold)} messages, {sum(len(v) for v in gold.values())} labelled names")
    print("| method | precision | recall | exact precision | exact recall | names found | primary is a labelled place |")
    print("|---|---|---|---|---|---|---|")
    runs = {"triage (PlaceExtractor)": triage_places(docs), "plain (jieba ns tags)": plain_places(docs)}
    for name, (found, primary) in runs.items():
        s = score(found, primary, gold)
        print(f"| {name} | {s['precision']} | {s['recall']} | {s['exact_precision']} | {s['exact_recall']} | "
              f"{s['found']} | {s['primary_right']} / {s['with_primary']} |")
    if args.show:
        found, primary = runs["triage (PlaceExtractor)"]
        wrong = [(i, x) for i in gold for x in found.get(i, []) if not any(_match(x, g) for g in gold[i])]
        missed = [(i, g) for i in gold for g in gold[i] if not any(_match(x, g) for x in found.get(i, []))]
        print("wrong (found, not labelled):", "; ".join(f"{i} {x}" for i, x in wrong[:args.show]))
        print("missed (labelled, not found):", "; ".join(f"{i} {g}" for i, g in missed[:args.show]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
