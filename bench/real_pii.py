"""Personal data on real messages: what masking hides and what it leaves, per kind, beside a baseline.

    python bench/real_pii.py                      # today's code + the plain baseline
    python bench/real_pii.py --against f8649cc    # also an earlier commit's masking, same messages

Reads the team's hand labels (``bench/realdata_labels/pii_p*.csv``: ids and character spans, rules in
``pii_rules.md``) and the messages they point at in ``../shared/realdata/``. Exits 0 with the reason
when the folder is absent. Never writes a message anywhere.

Each labelled document is ``normalize(title + "\\n" + text)``. A masking run turns it into masked text;
the characters it replaced are found by aligning the two (difflib, no junk heuristic). Per kind:

* **recall** — labelled spans whose every character was replaced;
* **precision** — replaced regions that overlap some labelled span of any kind (a masked place name
  or a masked common word counts against it); reported per kind the masker claims where it says;
* the same figures for the random half of the sample (what a board looks like) and the cued half.

A row with the NER switched off (the trigger and title rules alone) shows what the NER adds, and the
masking speed is timed on 2,000 dev messages with and without it. The **plain** baseline is what a
regex-only masker does: 11-digit mobiles, 18-character IDs with a
valid check digit, and a name only right after 我叫/本人/联系人/姓名/我是/署名 (the product before the
real-message work).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import logging
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
REAL = ROOT.parent / "shared" / "realdata"
LABELS = ROOT / "bench" / "realdata_labels"
FILES = ("teddy2020_c_dev_domain.csv", "teddy2020_c_unlabelled.csv", "teddy2020_c_replies.csv")
NUMBER_KINDS = ("mobile", "landline", "id_number", "bank_card", "email", "plate", "other_contact")

log = logging.getLogger("bench.real_pii")


def load_labels(prefix: str = "p") -> pd.DataFrame | None:
    """Every-kind labels: ``pii_p*.csv`` (the development sample) or ``pii_q*.csv`` (held out)."""
    parts = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in sorted(LABELS.glob(f"pii_{prefix}[0-9]*.csv"))]
    return pd.concat(parts, ignore_index=True) if parts else None


def load_docs(ids: set[str]) -> dict[str, str]:
    from triage.text.normalise import normalize

    docs = {}
    for f in FILES:
        d = pd.read_csv(REAL / f, dtype=str, keep_default_na=False)
        title = d["title"] if "title" in d else pd.Series("", index=d.index)
        for i, t, x in zip(d["id"], title, d["text"]):
            if i in ids:
                docs[i] = normalize(t + "\n" + x)
    return docs


def replaced_spans(doc: str, masked: str) -> list[tuple[int, int]]:
    """Character ranges of ``doc`` that the masker replaced or removed."""
    sm = difflib.SequenceMatcher(None, doc, masked, autojunk=False)
    return [(i1, i2) for op, i1, i2, _j1, _j2 in sm.get_opcodes() if op in ("replace", "delete") and i2 > i1]


NUMBER_PLACEHOLDER_RE = re.compile("〔(?!姓名〕)[^〔〕]{1,6}〕")


def number_sample(prefix: str = "n") -> pd.DataFrame | None:
    """The number-only labels: ``pii_n*.csv`` (150 messages drawn among those holding a digit run, the
    rules were fixed from their misses) or ``pii_h*.csv`` (100 more drawn afterwards: held out)."""
    parts = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in sorted(LABELS.glob(f"pii_{prefix}[0-9]*.csv"))]
    return pd.concat(parts, ignore_index=True) if parts else None


def score_numbers(name: str, masked: dict[str, str], docs: dict[str, str], gold: pd.DataFrame) -> dict:
    """Recall per number kind, and precision over the regions masked as a number (not as a name)."""
    spans = [(r.id, r.kind, int(r.start), int(r.end)) for r in gold[gold["kind"] != "none"].itertuples()]
    hit, tot = defaultdict(int), defaultdict(int)
    regions = over = 0
    for i, doc in docs.items():
        sm = difflib.SequenceMatcher(None, doc, masked[i], autojunk=False)
        ops = [(i1, i2, masked[i][j1:j2]) for op, i1, i2, j1, j2 in sm.get_opcodes()
               if op in ("replace", "delete") and i2 > i1]
        covered = {k for a, b, _r in ops for k in range(a, b)}
        # precision over regions masked as a number: a placeholder other than 〔姓名〕 in what replaced it
        reps = [(a, b) for a, b, r in ops if NUMBER_PLACEHOLDER_RE.search(r)]
        mine = [(s, e) for j, _k, s, e in spans if j == i]
        for j, kind, s, e in spans:
            if j == i:
                tot[kind] += 1
                hit[kind] += all(k in covered for k in range(s, e) if not docs[i][k].isspace())   # a space is no datum
        for a, b in reps:
            regions += 1
            over += any(s < b and a < e for s, e in mine)
    row = {"run": name, "messages": len(docs), "number_regions": regions,
           "precision": round(over / regions, 3) if regions else None}
    row["numbers_recall"] = f"{sum(hit.values())}/{sum(tot.values())} = {sum(hit.values()) / max(1, sum(tot.values())):.3f}"
    for kind in sorted(tot):
        row[f"{kind}_recall"] = f"{hit[kind]}/{tot[kind]}"
    return row


def plain_mask(doc: str) -> str:
    """The regex-only baseline (see the module docstring)."""
    from triage.text.normalise import id_checksum_ok

    s = re.sub(r"(?<!\d)1[3-9]\d{9}(?!\d)", "〔手机号〕", doc)
    s = re.sub(r"(?<![0-9Xx])\d{17}[0-9Xx](?![0-9Xx])", lambda m: "〔身份证号〕" if id_checksum_ok(m.group(0)) else m.group(0), s)
    return re.sub(r"(我叫|本人|联系人|姓名|我是|署名)[:：]?([\u4e00-\u9fa5]{2,3})", r"\1〔姓名〕", s)


def mask_with(code_root: Path, docs: dict[str, str]) -> dict[str, str]:
    """Every document through ``clean`` of the code at ``code_root``: today's tree in this process, an
    earlier commit's worktree in a process of its own (its modules must not mix with today's)."""
    if code_root == ROOT:
        from triage.text.normalise import clean

        return {k: clean(v).text for k, v in docs.items()}
    script = ("import json,sys\nsys.path.insert(0, sys.argv[1])\nfrom triage.text.normalise import clean\n"
              "docs = json.load(open(sys.argv[2], encoding='utf-8'))\n"
              "json.dump({k: clean(v).text for k, v in docs.items()}, open(sys.argv[3], 'w', encoding='utf-8'))\n")
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.json", Path(tmp) / "out.json"
        src.write_text(json.dumps(docs, ensure_ascii=False), encoding="utf-8")
        subprocess.run([sys.executable, "-c", script, str(code_root), str(src), str(out)], check=True)
        return json.loads(out.read_text(encoding="utf-8"))


def score(name: str, masked: dict[str, str], docs: dict[str, str], gold: pd.DataFrame, strata: dict[str, str],
          seconds: float) -> list[dict]:
    spans = gold[gold["kind"] != "none"]
    by_id: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    for r in spans.itertuples():
        by_id[r.id].append((r.kind, int(r.start), int(r.end)))
    rows = []
    for stratum in ("all", "random", "cued"):
        keep = [i for i in docs if stratum == "all" or strata.get(i) == stratum]
        hit, tot = defaultdict(int), defaultdict(int)
        regions = over = 0
        for i in keep:
            rep = replaced_spans(docs[i], masked[i])
            covered = set()
            for a, b in rep:
                covered.update(range(a, b))
            for kind, s, e in by_id.get(i, []):
                tot[kind] += 1
                hit[kind] += all(k in covered for k in range(s, e) if not docs[i][k].isspace())   # a space is no datum
            for a, b in rep:
                regions += 1
                over += any(s < b and a < e for _k, s, e in by_id.get(i, []))
        row = {"run": name, "stratum": stratum, "messages": len(keep), "masked_regions": regions,
               "precision": round(over / regions, 3) if regions else None, "seconds": seconds}
        for kind in sorted(tot):
            row[f"{kind}_recall"] = f"{hit[kind]}/{tot[kind]} = {hit[kind] / tot[kind]:.3f}"
        numbers = sum(hit[k] for k in NUMBER_KINDS), sum(tot[k] for k in NUMBER_KINDS)
        row["numbers_recall"] = f"{numbers[0]}/{numbers[1]} = {numbers[0] / numbers[1]:.3f}" if numbers[1] else None
        rows.append(row)
    return rows


def misses(masked: dict[str, str], docs: dict[str, str], gold: pd.DataFrame) -> dict[str, int]:
    """What the missed names look like (no text): in a title-like context or not, length."""
    out: dict[str, int] = defaultdict(int)
    for r in gold[gold["kind"] == "name"].itertuples():
        rep = replaced_spans(docs[r.id], masked[r.id])
        s, e = int(r.start), int(r.end)
        if not all(any(a <= k < b for a, b in rep) for k in range(s, e)):
            after = docs[r.id][e:e + 2]
            kind = "surname+title" if e - s == 1 else f"{e - s}-char name"
            out[f"{kind}, followed by {'a title' if re.match(r'(先生|女士|书记|局长|主任|老师|师傅|大爷|经理|县长|市长|科长|所长|校长|院长|总|部长|处长)', after) else 'other'}"] += 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def every_kind_table(prefix: str, sample_csv: str, what: str, args: argparse.Namespace) -> None:
    """Recall per kind and precision on one every-kind sample, beside the rules alone and the baseline."""
    gold = load_labels(prefix)
    if gold is None:
        print(f"\n{what}: no labels yet (pii_{prefix}*.csv)")
        return
    sample = pd.read_csv(LABELS / sample_csv, dtype=str)
    strata = dict(zip(sample["id"], sample["stratum"]))
    docs = load_docs(set(gold["id"]))
    bad = [r.id for r in gold[gold["kind"] != "none"].itertuples()
           if hashlib.sha1(docs[r.id][int(r.start):int(r.end)].encode("utf-8")).hexdigest()[:8] != r.check]
    if bad:
        raise SystemExit(f"{len(bad)} labelled spans no longer match their text (normalisation moved them): {bad[:5]}")
    log.info("%d messages labelled, %d spans (%s)", len(docs), int((gold["kind"] != "none").sum()),
             ", ".join(f"{k} {v}" for k, v in gold[gold["kind"] != "none"]["kind"].value_counts().items()))

    print(f"\n{what}")
    results = []
    t0 = time.perf_counter()
    today = mask_with(ROOT, docs)
    results += score("triage (today)", today, docs, gold, strata, round(time.perf_counter() - t0, 2))
    if args.against:
        sys.path.insert(0, str(ROOT / "bench"))
        from real_topics import checkout   # the same worktree handling as the hot-issue bench

        with tempfile.TemporaryDirectory(prefix="real_pii_") as tmp, checkout(args.against, Path(tmp)) as wt:
            t0 = time.perf_counter()
            then = mask_with(wt, docs)
            results += score(f"triage at {args.against[:10]}", then, docs, gold, strata,
                             round(time.perf_counter() - t0, 2))
    import triage.text.names as names

    kept = names.person_spans
    names.person_spans = lambda text, *_: []   # the same code with the NER switched off: what it adds
    try:
        t0 = time.perf_counter()
        rules = mask_with(ROOT, docs)
        results += score("triage without the NER", rules, docs, gold, strata, round(time.perf_counter() - t0, 2))
    finally:
        names.person_spans = kept
    t0 = time.perf_counter()
    plain = {i: plain_mask(d) for i, d in docs.items()}
    results += score("plain regex + 6 triggers", plain, docs, gold, strata, round(time.perf_counter() - t0, 2))

    frame = pd.DataFrame(results)
    cols = ["run", "stratum", "messages", "masked_regions", "precision", "numbers_recall",
            *sorted(c for c in frame.columns if c.endswith("_recall") and c != "numbers_recall"), "seconds"]
    frame = frame[[c for c in cols if c in frame.columns]].fillna("")
    print("| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns))
    for row in frame.itertuples(index=False):
        print("| " + " | ".join(str(v) for v in row) + " |")
    print("\nmissed names today (shape only):", json.dumps(misses(today, docs, gold), ensure_ascii=False))


def number_table(prefix: str, what: str, args: argparse.Namespace) -> None:
    """Print the number table for one number sample, beside the plain baseline (and --against)."""
    ngold = number_sample(prefix)
    if ngold is not None:
        ndocs = load_docs(set(ngold["id"]))
        nbad = [r.id for r in ngold[ngold["kind"] != "none"].itertuples()
                if hashlib.sha1(ndocs[r.id][int(r.start):int(r.end)].encode("utf-8")).hexdigest()[:8] != r.check]
        if nbad:
            raise SystemExit(f"{len(nbad)} number spans no longer match their text: {nbad[:5]}")
        nrows = [score_numbers("triage (today)", mask_with(ROOT, ndocs), ndocs, ngold)]
        if args.against:
            from real_topics import checkout

            with tempfile.TemporaryDirectory(prefix="real_pii_") as tmp, checkout(args.against, Path(tmp)) as wt:
                nrows.append(score_numbers(f"triage at {args.against[:10]}", mask_with(wt, ndocs), ndocs, ngold))
        nrows.append(score_numbers("plain regex + 6 triggers", {i: plain_mask(d) for i, d in ndocs.items()},
                                   ndocs, ngold))
        nf = pd.DataFrame(nrows).fillna("")
        print(f"\nnumbers: {len(ndocs)} messages drawn among those holding a digit run "
              f"({what}), numbers labelled only; precision over regions masked as a number")
        print("| " + " | ".join(nf.columns) + " |\n|" + "---|" * len(nf.columns))
        for row in nf.itertuples(index=False):
            print("| " + " | ".join(str(v) for v in row) + " |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--against", default=None, help="also mask with this git commit's code, same messages")
    ap.add_argument("--speed", type=int, default=2000, help="time masking on this many dev messages (0: skip)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not REAL.is_dir():
        print(f"skipped: {REAL} is absent (the real messages live beside the project, never in it)")
        return 0
    for prefix, sample_csv, what in (
            ("p", "pii_sample.csv", "development sample (pii_sample.csv): the name rules were written from its misses"),
            ("q", "pii_heldout.csv", "held-out sample (pii_heldout.csv): drawn after those rules, read by no rule")):
        every_kind_table(prefix, sample_csv, what, args)
    for prefix, what in (("n", "pii_numbers_sample.csv: the number rules were fixed from its misses"),
                         ("h", "pii_numbers_heldout.csv: drawn after those fixes, held out")):
        number_table(prefix, what, args)
    if args.speed:
        print(f"\nmasking speed on the first {args.speed} messages of the dev file (one process, rows/s):")
        import triage.text.names as names
        from triage.text.normalise import clean, clean_many

        bodies = pd.read_csv(REAL / FILES[0], dtype=str, keep_default_na=False)["text"].head(args.speed).tolist()
        clean(bodies[0])   # jieba's dictionary and the NER model load once, outside the timing
        speeds, kept = {}, names.person_spans
        for label, off, many in (("with the NER, one text at a time (the baseline)", False, False),
                                 ("with the NER, 512 texts at a time (clean_many: batch runs, intake's batches)", False, True),
                                 ("without the NER", True, False)):
            if off:
                names.person_spans = lambda text, *_: []
            try:
                t0 = time.perf_counter()
                if many:
                    for k in range(0, len(bodies), 512):
                        clean_many(bodies[k:k + 512])
                else:
                    for b in bodies:
                        clean(b)
                speeds[label] = len(bodies) / (time.perf_counter() - t0)
                base = next(iter(speeds.values()))
                print(f"  {label}: {speeds[label]:,.0f} rows/s ({speeds[label] / base:.2f}×)")
            finally:
                names.person_spans = kept
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
