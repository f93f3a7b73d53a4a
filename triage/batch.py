"""Batch reclassification of a file: every row accounted for, all cores, atomic output.

The output keeps every input column and the row order and adds the assessment columns; rows that
cannot be processed keep their place (empty results, ``triage_error`` says why) and are also listed in
``OUTPUT.errors.csv`` with their line number. ``processed + failed == total`` always.
"""

from __future__ import annotations

import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
import multiprocessing as mp

import pandas as pd
from tqdm import tqdm

from triage.pipeline import Triage
from triage.tableio import read_table, resolve_text_columns, write_table

log = logging.getLogger(__name__)

CHUNK_ROWS = 2000

_worker: dict[str, object] = {}  # per-process cache of the loaded model (rebuilt from disk)


def _init_worker(model_dir: str | None) -> None:
    # one BLAS thread per process: the processes already use every core
    from threadpoolctl import threadpool_limits

    _worker["limits"] = threadpool_limits(1)
    if "triage" not in _worker:  # inherited through fork when possible: no second load
        _worker["triage"] = Triage.load(model_dir)


def _run_chunk(args: tuple[pd.DataFrame, list[str]]) -> pd.DataFrame:
    frame, cols = args
    tri = _worker["triage"]
    assert isinstance(tri, Triage)
    return tri.assess_frame(frame, cols)


def errors_path(output: str | os.PathLike[str]) -> Path:
    p = Path(output)
    return p.with_name(p.name + ".errors.csv") if p.suffix.lower() != ".csv" else p.with_suffix(".errors.csv")


def classify_frame(frame: pd.DataFrame, cols: list[str], model_dir: str | None, workers: int = 0,
                   quiet: bool = False) -> pd.DataFrame:
    n = len(frame)
    workers = workers or os.cpu_count() or 1
    chunks = [(frame.iloc[i:i + CHUNK_ROWS], cols) for i in range(0, n, CHUNK_ROWS)]
    show = not quiet and sys.stderr.isatty() and not os.environ.get("CI")
    bar = tqdm(total=n, unit="行", desc="分拣", disable=not show, smoothing=0.1)
    parts: list[pd.DataFrame] = []
    if workers <= 1 or len(chunks) <= 1:
        _init_worker(model_dir)
        for ch in chunks:
            parts.append(_run_chunk(ch))
            bar.update(len(ch[0]))
    else:
        fork = "fork" in mp.get_all_start_methods()
        ctx = mp.get_context("fork" if fork else "spawn")
        if fork:
            _worker["triage"] = Triage.load(model_dir)
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(model_dir,)) as pool:
            for part in pool.map(_run_chunk, chunks):
                parts.append(part)
                bar.update(len(part))
    bar.close()
    return pd.concat(parts) if parts else frame.assign(triage_error=pd.Series(dtype=object))


def classify_file(input_path: str, output_path: str, model_dir: str | None = None,
                  text_columns: list[str] | None = None, workers: int = 0, quiet: bool = False) -> dict:
    table = read_table(input_path)
    cols = resolve_text_columns(table.frame, text_columns)
    result = classify_frame(table.frame, cols, model_dir, workers, quiet)
    result.insert(0, "_line", table.lines) if "_line" not in result.columns else None
    failed_rows = result[result["triage_error"].notna()]
    errors = [{"line": e.line, "reason": e.reason} for e in table.errors]
    errors += [{"line": int(r["_line"]), "reason": r["triage_error"]} for _, r in failed_rows.iterrows()]
    out = result.drop(columns=["_line"])
    if output_path == "-":
        out.to_csv(sys.stdout, index=False)
    else:
        write_table(out, output_path)
    epath = errors_path(output_path) if output_path != "-" else None
    if errors and epath is not None:
        pd.DataFrame(sorted(errors, key=lambda e: e["line"])).to_csv(epath, index=False, encoding="utf-8-sig")
    elif epath is not None and epath.exists():
        epath.unlink()  # a stale report from an earlier run would mislead
    failed = len(errors)
    summary = {"input": str(input_path), "output": str(output_path), "encoding": table.encoding,
               "text_columns": cols, "total": table.total_rows, "processed": table.total_rows - failed,
               "failed": failed, "skipped": 0, "errors_file": str(epath) if errors and epath else None}
    for e in sorted(errors, key=lambda e: e["line"])[:20]:
        log.warning("第 %s 行未处理：%s", e["line"], e["reason"])
    return summary
