"""Draw the scope-labelling sample: message ids only (no text), stratified by the organisers' domain.

    python bench/realdata_labels/make_scope_sample.py   # writes scope_sample.txt (640 ids)

The ids index ``../shared/realdata/teddy2020_c_dev_domain.csv``; the labels live in ``scope.csv``.
"""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[2] / "shared" / "realdata" / "teddy2020_c_dev_domain.csv"
N, SEED = 640, 14


def main() -> None:
    by_domain: dict[str, list[str]] = defaultdict(list)
    with SOURCE.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            by_domain[row["domain"]].append(row["id"])
    total = sum(map(len, by_domain.values()))
    rng = random.Random(SEED)
    picked: list[str] = []
    for dom in sorted(by_domain):
        ids = sorted(by_domain[dom])
        picked += rng.sample(ids, round(N * len(ids) / total))
    rng.shuffle(picked)
    (HERE / "scope_sample.txt").write_text("\n".join(picked) + "\n", encoding="utf-8")
    print(len(picked))


if __name__ == "__main__":
    main()
