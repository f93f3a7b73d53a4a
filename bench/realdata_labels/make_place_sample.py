"""Draw the place sample: 100 message ids of the real board (no text), for hand-labelled place names.

    python bench/realdata_labels/make_place_sample.py   # writes place_sample.csv

Place finding had no real-message figure: the corpus's places are written by us, and the real board's
places were only ever read through topic labels. This draw (seed 71207) takes 100 messages of the two
board files (titles and submitters, as ``bench/real_topics.py`` reads them) of at most 1,200
characters, so that a reader labels every place in a message without skimming; batch ``p1`` is the
first 60, ``p2`` the last 60, the 20 in both measure agreement. Labels: ``places_p1.csv``,
``places_p2.csv``; rules in ``place_rules.md``.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
REAL = HERE.parent.parent.parent / "shared" / "realdata"
FILES = ("teddy2020_c_unlabelled.csv", "teddy2020_c_replies.csv")
N, SEED, MAX_CHARS = 100, 71207, 1200


def main() -> None:
    ids = []
    for f in FILES:
        with (REAL / f).open(encoding="utf-8") as fh:
            ids += [row["id"] for row in csv.DictReader(fh) if len(row["title"]) + len(row["text"]) <= MAX_CHARS]
    ids = sorted(ids)
    random.Random(SEED).shuffle(ids)
    pick = ids[:N]
    with (HERE / "place_sample.csv").open("w", encoding="utf-8", newline="") as out:
        w = csv.writer(out)
        w.writerow(["id", "batch"])
        for k, i in enumerate(pick):
            w.writerow([i, "p1" if k < 40 else ("p1+p2" if k < 60 else "p2")])


if __name__ == "__main__":
    main()
