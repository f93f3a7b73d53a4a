"""`triage import` of a history into a fresh store, clustered, against one-row-at-a-time intake, one run.

    python bench/import_scale.py                       # 2,000 rows both ways, then 20,000 batched
    python bench/import_scale.py --sizes 2000,100000   # the issue's 100k (about an hour on 2 cores)

Rows are the corpus's messages replicated into many places and periods (``topics_scale.synth``), with
a time and a submitter. Each run is a fresh process on a fresh SQLite file (peak resident memory is its
own):

* **batched** — ``triage import`` as an office runs it: rows analysed in batches on every core and
  written in bulk without a topic, then one re-clustering builds every topic;
* **per row** — the earlier path, in the same run on the first size only: ``office.intake.submit`` for each row
  (its own model calls and a topic update under the lock), then the same re-clustering.

Prints rows/s, wall seconds, peak MiB and, for the batched runs, the seconds of analysis and of the
re-clustering; the ratio to the per-row path of the same size.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def child(path: str, db: str, mode: str) -> dict:
    """One import in this process; its figures."""
    import resource

    import pandas as pd

    from triage.cli import _people_columns
    from triage.office.office import Office
    from triage.pipeline import Triage
    from triage.store.database import Store
    from triage.io.tables import read_table, resolve_text_columns

    table = read_table(path)
    frame = _people_columns(table.frame, argparse.Namespace(user_col=None, support_col=None, oppose_col=None,
                                                            time_col=None))
    cols = resolve_text_columns(frame, None)
    office = Office(Store(f"sqlite:///{db}"), Triage.load(ROOT / "models" / "default"))
    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    if mode == "batched":
        def progress(p: dict) -> None:
            stages[p["stage"]] = p["seconds"]

        res = office.history.import_frame(frame, cols, progress=progress)
    else:
        from triage.candidates import _pick
        from triage.office.common import Intake, InvalidRequest

        when, who = _pick(frame, "submitted_at"), _pick(frame, "submitter")

        stored = failed = 0
        for i in range(len(frame)):
            try:
                office.intake.submit(Intake(text=str(frame[cols[-1]].iat[i]),
                                     title=str(frame[cols[0]].iat[i]) if len(cols) > 1 else "",
                                     submitted_at=pd.Timestamp(when.iat[i]).to_pydatetime(),
                                     submitter=str(who.iat[i])), auto_recluster=False)
                stored += 1
            except InvalidRequest:
                failed += 1
        stages["分析与写入"] = round(time.perf_counter() - t0, 1)
        office.clustering.recluster()
        res = {"stored": stored, "failed": failed}
    wall = time.perf_counter() - t0
    office.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"mode": mode, "rows": int(len(frame)), **res, "seconds": round(wall, 1),
            "rows_per_s": round(len(frame) / wall, 1), "analysis_s": stages.get("分析与写入"),
            "peak_mib": round(max(peak, kids))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2000,20000")
    ap.add_argument("--child", nargs=3, metavar=("CSV", "DB", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(child(*args.child)))
        return 0
    import pandas as pd
    from topics_scale import synth

    sizes = [int(x) for x in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="import_scale_") as tmp:
        for k, n in enumerate(sizes):
            frame = synth(n).rename(columns={"submitter": "留言用户"})
            # synth spreads the corpus over later periods: moved back so that none lies in the future
            # (intake refuses those, and the import with it)
            when = pd.to_datetime(frame["submitted_at"])
            late = when.max() - pd.Timestamp.now() + pd.Timedelta(days=1)
            frame["submitted_at"] = (when - max(late, pd.Timedelta(0))).astype(str)
            path = Path(tmp) / f"history_{n}.csv"
            frame.to_csv(path, index=False)
            for mode in (("per_row", "batched") if k == 0 else ("batched",)):
                db = Path(tmp) / f"{mode}_{n}.db"
                out = subprocess.run([sys.executable, __file__, "--child", str(path), str(db), mode],
                                     capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
                if out.returncode:
                    print(out.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"{mode} {n}: failed")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(r)
                print(json.dumps(r, ensure_ascii=False), flush=True)
    base = next((r for r in rows if r["mode"] == "per_row"), None)
    print("\n| rows | path | stored | seconds | rows/s | analysis and writing s | peak MiB | vs per row |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['rows_per_s'] / base['rows_per_s']:.1f}×" if base else ""
        print(f"| {r['rows']:,} | {r['mode']} | {r['stored']:,} | {r['seconds']} | {r['rows_per_s']} | "
              f"{r['analysis_s']} | {r['peak_mib']} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
