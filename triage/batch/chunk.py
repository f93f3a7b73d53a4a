"""One chunk of a batch run: what every engine runs on its rows, wherever it runs them.

:func:`classify_chunk` assesses a chunk's rows (on the local process pool of :mod:`triage.batch.runner`, or
inside Dask's ``map_partitions`` in :mod:`triage.batch.dask_engine`) and :func:`summarise_chunk` turns the
result into the part a work directory stores and its statistics. Both engines import this module and
the runner imports the engines: the engines once imported these functions back from the runner that
dispatches to them, a cycle (``lint-imports`` forbids it now).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from triage.batch.changes import ChangeTally
from triage.pipeline import Triage
from triage.io.streams import RowError

ERROR_COLUMN = "triage_error"
LINE = "__triage_line__"   # hidden: the input line of each row, from the chunk to its part
PREV = "__triage_previous_"   # hidden: the previous labels, from the chunk to its tally
SKIP = "__triage_skipped__"   # hidden: rows left as they were (skip_existing)


@dataclass
class ChunkJob:
    """What a worker needs besides the rows: small and picklable (sent with every chunk)."""

    text_columns: list[str]
    max_chars: int
    previous: dict[str, str]
    skip_existing: str | None
    examples: int
    absent_is_missing: bool                  # JSONL: a record without the key lacks the column
    evidence: bool = False                   # domain_evidence filled (the per-row path: slower)


def classify_chunk(tri: Triage, frame: pd.DataFrame, lines: list[int], job: ChunkJob) -> pd.DataFrame:
    """The chunk's rows with the assessment columns; hidden: the line first, the previous labels last.

    The same function runs on the local pool and inside Dask's ``map_partitions``.
    """
    frame = frame.reset_index(drop=True)
    for c in job.text_columns:
        if c not in frame.columns:  # a JSONL chunk where no record has the key
            frame[c] = None
    hidden = {f"{PREV}{fld}": frame[col] if col in frame.columns else None for fld, col in job.previous.items()}
    todo = pd.Series(True, index=frame.index)
    if job.skip_existing:
        have = frame[job.skip_existing] if job.skip_existing in frame.columns else pd.Series(None, index=frame.index)
        todo = ~have.map(lambda v: v is not None and bool(str(v).strip()))
    if todo.all():
        out = tri.assess_frame(frame, job.text_columns, max_chars=job.max_chars, evidence=job.evidence)
    else:
        done = tri.assess_frame(frame[todo], job.text_columns, max_chars=job.max_chars, evidence=job.evidence)
        out = pd.concat([done, frame[~todo]]).sort_index()
    missing = pd.concat([frame[c].isna() for c in job.text_columns], axis=1).all(axis=1) & todo
    if job.absent_is_missing and missing.any():
        out[ERROR_COLUMN] = out[ERROR_COLUMN].astype(object).where(
            ~missing, f"缺少文本列 {'、'.join(job.text_columns)} / text column missing")
    out.insert(0, LINE, list(lines))
    out[SKIP] = ~todo
    for k, v in hidden.items():
        out[k] = v
    return out


def summarise_chunk(out: pd.DataFrame, index: int, read_errors: list[RowError], job: ChunkJob) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The part to store (hidden columns but the line dropped) and its statistics."""
    err = out[ERROR_COLUMN]
    skipped = out[SKIP].astype(bool)
    failed = err.notna() & ~skipped
    errors = [[e.line, e.reason, e.column] for e in read_errors]
    errors += [[int(line), str(reason), ",".join(job.text_columns)]
               for line, reason in zip(out.loc[failed, LINE], err[failed])]
    errors.sort(key=lambda e: e[0])
    tally = ChangeTally(job.examples)
    if job.previous:
        ok = ~failed & ~skipped
        prev = {fld: f"{PREV}{fld}" for fld in job.previous}
        from triage.assess.features import join_columns

        rows = out[ok]
        tally.add_frame(rows, prev, join_columns(rows, job.text_columns), rows[LINE])
    part = out.drop(columns=[c for c in out.columns if c.startswith(PREV) or c == SKIP])
    stats = {"index": index, "records": len(out) + len(read_errors), "rows": len(out),
             "processed": int((~failed & ~skipped).sum()), "failed": int(failed.sum()) + len(read_errors),
             "skipped": int(skipped.sum()), "errors": errors, "columns": [c for c in part.columns if c != LINE],
             "changes": tally.to_json()}
    return part, stats
