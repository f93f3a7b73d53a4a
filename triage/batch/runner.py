"""Batch reclassification: large inputs in chunks, all cores, resumable, every row accounted for.

The input is streamed in chunks of records (:mod:`triage.io.streams`, or a database query through
:mod:`triage.io.databases`); each chunk is classified by :func:`triage.batch.chunk.classify_chunk` (on a forked process pool by
default, on a Dask cluster with ``engine="dask"``) and written as one part of a work directory
(:mod:`triage.batch.checkpoint`) next to the output. When every chunk is done the parts are concatenated
into the output, which appears atomically, and the work directory is removed. A run that is stopped
(Ctrl-C, ``kill -9``, power loss) is continued by the same command and writes the same output.

The output keeps every input column and the row order and adds the assessment columns; rows that
cannot be processed keep their place (empty results, ``triage_error`` says why). Records that could
not be read at all (wrong field count, invalid JSON, undecodable bytes) have no columns to keep and
are absent from the output. Both kinds are listed in ``OUTPUT.errors.csv`` (line, reason, column).

Accounting: ``total`` is the number of input records (blank lines and blank sheet rows are not
records); ``processed`` were classified; ``failed`` could not be read or classified (each has a line
in the errors file); ``skipped`` were left as they were on request (``skip_existing``: the column
already has a value). ``processed + failed + skipped == total`` always.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import multiprocessing as mp
import pandas as pd

from triage.batch.changes import FIELDS, ChangeTally
from triage.batch.chunk import LINE, ChunkJob, classify_chunk, summarise_chunk
from triage.batch.checkpoint import WorkDir, fsync_dir
from triage.errors import InputFileError, OutputFileError
from triage.pipeline import MAX_CHARS, OUTPUT_COLUMNS, Triage
from triage.io.streams import Chunk, TableSource
from triage.io.tables import resolve_text_columns
from triage.io.sinks import Target

log = logging.getLogger(__name__)

CHUNK_ROWS = 2000

@dataclass
class BatchConfig:
    """What a batch run does; everything that changes the output is part of the resume manifest."""

    model_dir: str | None = None
    text_columns: list[str] | None = None
    workers: int = 0                         # processes (0 = all cores); not part of the output
    chunk_rows: int = CHUNK_ROWS
    max_chars: int = MAX_CHARS               # longer texts are reported, not classified
    previous: dict[str, str] = field(default_factory=dict)   # "domain"/"scope"/"committee" → input column
    skip_existing: str | None = None         # leave rows whose column already has a value
    examples: int = 3                        # examples per move in the change report
    restart: bool = False                    # discard an earlier run's work directory
    quiet: bool = False
    engine: str = "local"                    # "local" | "dask"
    scheduler: str | None = None             # Dask scheduler address (None: a LocalCluster)
    work_dir: str | None = None              # default: OUTPUT.partial.d next to the output
    evidence: bool = False                   # fill domain_evidence (the words behind each domain; slower)


def side_path(output: str | os.PathLike[str], what: str) -> Path:
    """``out.csv`` → ``out.errors.csv``; ``out.xlsx`` → ``out.xlsx.errors.csv``."""
    p = Path(output)
    return p.with_suffix(f".{what}.csv") if p.suffix.lower() == ".csv" else p.with_name(f"{p.name}.{what}.csv")


def errors_path(output: str | os.PathLike[str]) -> Path:
    return side_path(output, "errors")


def changes_path(output: str | os.PathLike[str]) -> Path:
    return side_path(output, "changes")


# --------------------------------------------------------------------------- local engine

_worker: dict[str, Any] = {}  # per-process: the loaded model, inherited through fork when possible


def _init_worker(model_dir: str | None) -> None:
    from threadpoolctl import threadpool_limits

    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's: it lets running chunks finish
    _worker["limits"] = threadpool_limits(1)        # one BLAS thread per process: processes use the cores
    if "triage" not in _worker:
        _worker["triage"] = Triage.load(model_dir)


def _noop() -> None:
    return None


def run_chunk(chunk: Chunk, job: ChunkJob, work: str) -> dict[str, Any]:
    """Classify one chunk and store it as a part (in a worker: only the statistics travel back)."""
    tri = _worker["triage"]
    out = classify_chunk(tri, chunk.frame, chunk.lines, job)
    part, stats = summarise_chunk(out, chunk.index, chunk.errors, job)
    WorkDir(work).write_part(chunk.index, part, stats)
    return stats


class Progress:
    """A tqdm bar with rows/s and ETA, on a terminal only (never in CI or with ``quiet``)."""

    def __init__(self, quiet: bool, total_rows: int | None, size: int | None) -> None:
        self.show = not quiet and sys.stderr.isatty() and not os.environ.get("CI")
        self.rows_total, self.size = total_rows, size
        self.bar = None
        if self.show:
            from tqdm import tqdm

            tqdm.monitor_interval = 0  # no monitor thread: the pool may fork after this
            self.bar = tqdm(total=total_rows, unit="行", desc="分拣", smoothing=0.1, dynamic_ncols=True)

    def update(self, records: int, position: int = 0) -> None:
        if self.bar is None:
            return
        if self.rows_total is None and self.size and position:  # estimate from the bytes read so far
            done = self.bar.n + records
            self.bar.total = max(done, int(done * self.size / max(position, 1)))
        self.bar.update(records)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class LocalEngine:
    """A forked process pool (the default): workers inherit the loaded model and write the parts.

    The pool is started when the engine is made, before any input is read, so that no reader thread
    (pyarrow's, a database driver's) exists when the process forks. At most two chunks per worker are
    in flight, so memory stays flat whatever the input size.
    """

    def __init__(self, cfg: BatchConfig, tri: Triage) -> None:
        from triage.parallel import can_fork

        self.workers = cfg.workers or os.cpu_count() or 1
        _worker["triage"] = tri           # in-process runs, and the forked children, use this model
        self.pool: ProcessPoolExecutor | None = None
        if self.workers > 1:
            fork = can_fork()
            self.pool = ProcessPoolExecutor(max_workers=self.workers,
                                            mp_context=mp.get_context("fork" if fork else "spawn"),
                                            initializer=_init_worker, initargs=(cfg.model_dir,))
            self.pool.submit(_noop).result()  # every worker starts now

    def run(self, chunks: Iterator[Chunk], job: ChunkJob, work: WorkDir, done: set[int], progress: Progress) -> None:
        if self.pool is None:
            for ch in chunks:
                if ch.index not in done:
                    run_chunk(ch, job, str(work.path))
                progress.update(ch.records, ch.position)
            return
        inflight: dict[Future, Chunk] = {}

        def collect(futures) -> None:
            for f in futures:
                c = inflight.pop(f)
                f.result()
                progress.update(c.records, c.position)

        for ch in chunks:
            if ch.index in done:
                progress.update(ch.records, ch.position)
                continue
            while len(inflight) >= 2 * self.workers:
                collect(wait(inflight, return_when=FIRST_COMPLETED)[0])
            inflight[self.pool.submit(run_chunk, ch, job, str(work.path))] = ch
        collect(list(inflight))

    def close(self, cancel: bool = False) -> None:
        """Stop the pool; on cancel, chunks already running still finish and are kept."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=cancel)
            self.pool = None


# --------------------------------------------------------------------------- the run

def _model_identity(tri: Triage, model_dir: str | None) -> dict[str, Any]:
    import hashlib

    from triage.assess.model import DEFAULT_MODEL_DIR, MANIFEST

    d = Path(model_dir or os.environ.get("TRIAGE_MODEL") or DEFAULT_MODEL_DIR)
    digest = hashlib.sha256((d / MANIFEST).read_bytes()).hexdigest() if (d / MANIFEST).exists() else ""
    return {"version": tri.version, "manifest_sha256": digest}


def file_target(output: str, work_dir: str | None = None) -> Target:
    from triage.io.sinks import open_sink
    from triage.io.streams import file_kind

    if output == "-":
        from triage.io.sinks import StdoutCsvSink

        return Target("-", StdoutCsvSink, Path(tempfile.mkdtemp(prefix="triage-batch-")), None, None,
                      {"stdout": True}, temporary=True)
    file_kind(output)  # an unsupported extension is refused before any work
    p = Path(output)
    wd = Path(work_dir) if work_dir else p.with_name(p.name + ".partial.d")
    return Target(output, lambda cols: open_sink(p, cols), wd, errors_path(p), changes_path(p),
                  {"path": str(p.resolve())})


def make_engine(cfg: BatchConfig, tri: Triage):
    """The engine named by the config: ``local`` (a process pool) or ``dask`` (a cluster)."""
    if cfg.engine == "local":
        return LocalEngine(cfg, tri)
    if cfg.engine == "dask":
        from triage.batch.dask_engine import DaskEngine

        return DaskEngine(cfg)
    raise InputFileError(f"未知的执行引擎 {cfg.engine!r}（可选 local、dask）/ unknown engine")


class _Peeked:
    """The first chunk read ahead (the text columns are resolved from it), then the rest."""

    def __init__(self, it: Iterator[Chunk]) -> None:
        self._it = it
        self.first = next(it)

    def __iter__(self) -> Iterator[Chunk]:
        yield self.first
        yield from self._it


def _job(source: TableSource, first: Chunk, cfg: BatchConfig) -> ChunkJob:
    """The per-chunk settings, with the text columns resolved from the first chunk's columns."""
    text_cols = resolve_text_columns(first.frame, cfg.text_columns)
    for fld, col in cfg.previous.items():
        if fld not in FIELDS:
            raise InputFileError(f"无法比较 {fld}：只能比较 {', '.join(FIELDS)} / unknown field")
        if col not in first.frame.columns and source.kind != "jsonl":
            raise InputFileError(f"找不到原分类列 {col!r}；文件中的列为：{', '.join(map(str, first.frame.columns))}"
                                 f" / previous label column not found")
    return ChunkJob(text_cols, cfg.max_chars, dict(cfg.previous), cfg.skip_existing, cfg.examples,
                    absent_is_missing=source.kind == "jsonl", evidence=cfg.evidence)


def classify_source(source: TableSource, target: Target, cfg: BatchConfig) -> dict[str, Any]:
    """Classify every record of ``source`` into ``target``; see the module docstring."""
    t0 = time.perf_counter()
    tri = Triage.load(cfg.model_dir)
    from triage.text.normalise import tokens

    tokens("预热")  # jieba's dictionary loaded once, before the pool forks
    engine = make_engine(cfg, tri)
    work = WorkDir(target.work_dir)
    progress = Progress(True, None, None)
    try:
        chunks = _Peeked(iter(source.chunks(cfg.chunk_rows)))
        job = _job(source, chunks.first, cfg)
        manifest = {"input": source.identity(), "model": _model_identity(tri, cfg.model_dir),
                    "output": target.identity, "options": {**asdict(job), "chunk_rows": cfg.chunk_rows}}
        done = work.open(manifest, restart=cfg.restart or target.temporary)
        progress = Progress(cfg.quiet, source.total_hint, source.size)
        engine.run(chunks, job, work, done, progress)
    except BaseException as exc:
        engine.close(cancel=True)
        progress.close()
        if isinstance(exc, KeyboardInterrupt) and work.path.exists():
            n = len(work.done())
            log.warning("已中断：%d 块已完成并保存在 %s；用同一命令重新运行即从中断处继续 / interrupted: "
                        "%d chunks saved, rerun the same command to resume", n, work.path, n)
        raise
    engine.close()
    progress.close()
    summary = {"input": source.label, "output": target.label, "encoding": source.encoding,
               "text_columns": job.text_columns}
    summary.update(_assemble(work, target, job))
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    work.remove()
    for e in summary.pop("_first_errors"):
        log.warning("第 %s 行未处理：%s", e[0], e[1])
    return summary


def _assemble(work: WorkDir, target: Target, job: ChunkJob) -> dict[str, Any]:
    """Concatenate the parts (in input order) into the output, the errors file and the change report.

    The parts' statistics are read twice (totals, then the errors) rather than held: a file whose
    every row fails has a million error lines.
    """
    columns: list[str] = []
    totals = {"total": 0, "processed": 0, "failed": 0, "skipped": 0}
    n_err = 0
    first_errors: list[list[Any]] = []
    tally = ChangeTally(job.examples)
    for i, s in enumerate(work.stats()):
        if s["index"] != i:
            raise OutputFileError(f"工作目录 {work.path} 缺少第 {i} 块，请重新运行 / a chunk is missing: rerun")
        columns += [c for c in s["columns"] if c not in columns]
        for k, key in (("total", "records"), ("processed", "processed"), ("failed", "failed"), ("skipped", "skipped")):
            totals[k] += s[key]
        n_err += len(s["errors"])
        first_errors += s["errors"][: 20 - len(first_errors)]
        if job.previous:
            tally.merge(ChangeTally.from_json(s["changes"], job.examples))
    sink = target.open(columns)
    try:
        for frame in work.frames():
            sink.write(frame.drop(columns=[LINE]))
        sink.close()
    except BaseException:
        sink.abort()
        raise
    if target.errors is not None:
        _write_errors(target.errors, work, n_err)
    summary: dict[str, Any] = {**totals, "errors_file": str(target.errors) if n_err and target.errors else None,
                               "_first_errors": first_errors}
    if job.previous:
        if target.changes is not None:
            tally.write_csv(target.changes)
        summary["changes"] = tally.summary()
        summary["changes_file"] = str(target.changes) if target.changes else None
    return summary


def _write_errors(path: Path, work: WorkDir, n: int) -> None:
    import csv

    if not n:
        path.unlink(missing_ok=True)  # a stale report from an earlier run would mislead
        return
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f)
        w.writerow(["line", "reason", "column"])
        for s in work.stats():
            w.writerows(s["errors"])
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def classify_file(input_path: str, output_path: str, model_dir: str | None = None,
                  text_columns: list[str] | None = None, workers: int = 0, quiet: bool = False,
                  config: BatchConfig | None = None) -> dict[str, Any]:
    """Classify a CSV/XLSX/JSONL/Parquet file into another; see the module docstring."""
    from triage.io.streams import open_source

    cfg = config or BatchConfig(model_dir=model_dir, text_columns=text_columns, workers=workers, quiet=quiet)
    target = file_target(output_path, cfg.work_dir)
    return classify_source(open_source(input_path), target, cfg)
