"""Merge the hand-written slices (corpora/slices/*.jsonl) into corpora/suggestions.csv.

Each slice is one writing pass (see corpora/README.md). Merging is deterministic so that the
training data hash in a model's manifest changes only when a message does: rows are validated
against the configuration, exact duplicate texts are dropped (the first one kept), a ``place``
that does not occur in the message is blanked (place extraction is evaluated against this column,
so it must be literally in the text), petitions keep their department and group issues don't,
and ids are assigned in submission-time order.

    python corpora/build_corpus.py            # rewrite corpora/suggestions.csv
    python corpora/build_corpus.py --check    # exit 1 when suggestions.csv is out of date
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from triage.config import load_taxonomy  # noqa: E402

COLUMNS = ["id", "text", "title", "channel", "submitted_at", "place", "domain", "scope", "topic", "theme",
           "committee", "department", "submitter", "support"]
CHANNELS = {"意见箱", "二维码", "网上表单", "委员荐题", "党政交题", "社情民意"}
_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}")


class SliceError(ValueError):
    pass


def _rows(path: Path) -> list[dict]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SliceError(f"{path.name}:{n}: not JSON ({exc})") from exc
        rec["_where"] = f"{path.name}:{n}"
        out.append(rec)
    return out


def build(slices_dir: Path = HERE / "slices") -> tuple[list[dict], dict[str, int]]:
    tax = load_taxonomy(HERE)
    departments = {d.id for d in tax.departments}
    rows: list[dict] = []
    seen: set[str] = set()
    stats = {"read": 0, "duplicates": 0, "places_blanked": 0}
    for path in sorted(slices_dir.glob("*.jsonl")):
        for rec in _rows(path):
            stats["read"] += 1
            where = rec["_where"]
            text = str(rec.get("text") or "").strip()
            if not text:
                raise SliceError(f"{where}: empty text")
            if text in seen:
                stats["duplicates"] += 1
                continue
            seen.add(text)
            domain = rec.get("domain")
            if tax.domain(domain) is None:
                raise SliceError(f"{where}: unknown domain {domain!r}")
            if rec.get("scope") not in ("group", "individual"):
                raise SliceError(f"{where}: scope must be group or individual, not {rec.get('scope')!r}")
            if rec.get("channel") not in CHANNELS:
                raise SliceError(f"{where}: unknown channel {rec.get('channel')!r}")
            if not _TIME_RE.fullmatch(str(rec.get("submitted_at", ""))):
                raise SliceError(f"{where}: submitted_at must be YYYY-MM-DD HH:MM")
            dept = str(rec.get("department") or "")
            if dept and dept not in departments:
                raise SliceError(f"{where}: unknown department {dept!r}")
            title = str(rec.get("title") or "").strip()
            place = str(rec.get("place") or "").strip()
            if place and place not in f"{title}\n{text}":
                stats["places_blanked"] += 1
                place = ""
            rows.append({
                "text": text, "title": title, "channel": rec["channel"], "submitted_at": rec["submitted_at"],
                "place": place, "domain": domain, "scope": rec["scope"],
                "topic": str(rec.get("topic") or ""), "theme": str(rec.get("theme") or ""),
                "committee": tax.committee_for(domain).name,
                "department": dept if rec["scope"] == "individual" else "",
                "submitter": str(rec.get("submitter") or ""), "support": int(rec.get("support") or 0),
                "_order": where,
            })
    rows.sort(key=lambda r: (r["submitted_at"], r["_order"]))
    for i, r in enumerate(rows, start=1):
        r["id"] = f"S{i:05d}"
        del r["_order"]
    return rows, stats


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "suggestions.csv"))
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    try:
        rows, stats = build()
    except SliceError as exc:
        print(f"slice error: {exc}", file=sys.stderr)
        return 2
    text = to_csv(rows)
    out = Path(args.out)
    if args.check:
        current = out.read_text(encoding="utf-8") if out.exists() else ""
        if current != text:
            print(f"{out} is out of date: run python corpora/build_corpus.py", file=sys.stderr)
            return 1
        return 0
    out.write_text(text, encoding="utf-8")
    print(json.dumps({**stats, "written": len(rows), "out": str(out)}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
