"""Draw the held-out personal-data sample: message ids only (no text), after the name rules were written.

    python bench/realdata_labels/make_name_heldout.py   # writes pii_heldout.csv (120 ids)

The name and number rules of 2026-12-06 were fixed by reading the misses on ``pii_sample.csv`` (300
ids) and ``pii_numbers_sample.csv`` (150): figures on those samples are development figures. This draw
(seed 61208) takes 120 more messages outside both, half a random draw from the three real files and
half among messages the same broad cue marks as ``pii_sample.csv``'s cued half (see pii_rules.md), so
that ``bench/real_pii.py`` can report a figure no rule was written against. Labels: ``pii_q*.csv``,
every kind, same rules.
"""

from __future__ import annotations

import csv
import random
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_number_sample import FILES, REAL  # noqa: E402  (the same three files, beside the project)

N, SEED = 120, 61208
CUE = re.compile(r"\d{7,}|先生|女士|书记|局长|主任|老师|师傅|大爷|阿姨|经理|老板|我叫|本人|姓名|电话|手机|身份证|卡号|账号|车牌|联系人|@")


def main() -> None:
    taken = {row["id"] for f in ("pii_sample.csv", "pii_numbers_sample.csv", "pii_numbers_heldout.csv")
             if (HERE / f).exists() for row in csv.DictReader((HERE / f).open(encoding="utf-8"))}
    every, cued = [], []
    for f in FILES:
        with (REAL / f).open(encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row["id"] in taken:
                    continue
                every.append(row["id"])
                if CUE.search(row.get("title", "") + "\n" + row["text"]):
                    cued.append(row["id"])
    rng = random.Random(SEED)
    random_half = rng.sample(sorted(every), N // 2)
    cued_half = rng.sample(sorted(set(cued) - set(random_half)), N // 2)
    with (HERE / "pii_heldout.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "stratum", "batch"])
        for k, (i, stratum) in enumerate([(i, "random") for i in random_half] + [(i, "cued") for i in cued_half]):
            w.writerow([i, stratum, f"q{k % 2 + 1}"])
    print(len(every), len(cued), N)


if __name__ == "__main__":
    main()
