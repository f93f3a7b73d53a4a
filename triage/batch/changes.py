"""The change report of a reclassification: which records moved from which label to which.

Before an office adopts a new taxonomy or model it reviews what would change. Each chunk tallies,
per compared field (domain, scope, committee), how many rows went from each previous value to each
new one, with the first few examples of every move (line number and the masked text: the report is
read by staff, so it must not carry personal data). Tallies of chunks are merged in input order, so
the examples are the first ones of the file whatever order the chunks finished in.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

#: the fields a previous column can be compared with, and their names in the report
FIELDS = {"domain": "领域 / domain", "scope": "范围 / scope", "committee": "专委会 / committee"}
NONE = "(无)"
SNIPPET_CHARS = 80


def _label(v: object) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return NONE
    s = str(v).strip()
    return s or NONE


@dataclass
class ChangeTally:
    """Counts per (field, previous, new) and up to ``examples`` (line, masked text) per move."""

    examples: int = 3
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    samples: dict[tuple[str, str, str], list[tuple[int, str]]] = field(default_factory=dict)

    def add_frame(self, frame: pd.DataFrame, previous: Mapping[str, str], texts: pd.Series, lines: pd.Series) -> None:
        """Tally the processed rows of one chunk; ``previous`` maps a field to its hidden column."""
        from triage.text.normalise import clean

        for fld, col in previous.items():
            old = frame[col].map(_label)
            new = frame[fld].map(_label)
            pairs = pd.DataFrame({"o": old, "n": new})
            for (o, n), cnt in pairs.value_counts(sort=False).items():
                key = (fld, str(o), str(n))
                self.counts[key] = self.counts.get(key, 0) + int(cnt)
                if o == n:
                    continue
                have = self.samples.setdefault(key, [])
                if len(have) >= self.examples:
                    continue
                pos = pairs.index[(pairs["o"] == o) & (pairs["n"] == n)][: self.examples - len(have)]
                for p in pos:
                    snippet = clean(texts.loc[p]).text.replace("\n", " ")
                    have.append((int(lines.loc[p]), snippet[:SNIPPET_CHARS] + ("…" if len(snippet) > SNIPPET_CHARS else "")))

    def merge(self, other: "ChangeTally") -> None:
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        for k, ex in other.samples.items():
            have = self.samples.setdefault(k, [])
            have.extend(ex[: max(0, self.examples - len(have))])

    def to_json(self) -> list[list[Any]]:
        return [[f, o, n, c, [list(e) for e in self.samples.get((f, o, n), [])]] for (f, o, n), c in self.counts.items()]

    @classmethod
    def from_json(cls, rows: Iterable[list[Any]], examples: int = 3) -> "ChangeTally":
        t = cls(examples)
        for f, o, n, c, ex in rows:
            t.counts[(f, o, n)] = int(c)
            if ex:
                t.samples[(f, o, n)] = [(int(line), str(text)) for line, text in ex]
        return t

    def summary(self) -> dict[str, dict[str, int]]:
        """Per field: rows compared, moved and unchanged."""
        out: dict[str, dict[str, int]] = {}
        for (f, o, n), c in self.counts.items():
            s = out.setdefault(f, {"compared": 0, "moved": 0, "unchanged": 0})
            s["compared"] += c
            s["moved" if o != n else "unchanged"] += c
        return out

    def write_csv(self, path: str | os.PathLike[str]) -> Path:
        """One row per (field, from, to): moves first, largest first, then the unchanged counts."""
        p = Path(path)
        rows = sorted(self.counts.items(), key=lambda kv: (list(FIELDS).index(kv[0][0]) if kv[0][0] in FIELDS else 9,
                                                            kv[0][1] == kv[0][2], -kv[1], kv[0][1], kv[0][2]))
        tmp = p.with_name(p.name + ".partial")
        with open(tmp, "w", encoding="utf-8-sig", newline="") as f:
            w = csv.writer(f)
            w.writerow(["field", "from", "to", "count", "moved", "examples"])
            for (fld, o, n), c in rows:
                ex = "；".join(f"第{line}行：{text}" for line, text in self.samples.get((fld, o, n), []))
                w.writerow([fld, o, n, c, "yes" if o != n else "no", ex])
        os.replace(tmp, p)
        return p
