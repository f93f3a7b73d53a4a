"""`triage classify` at 10k, 100k and 1M rows: rows/s and peak memory, local and Dask, in one table.

Each run is the real command in a child process (`python -m triage.cli classify … --quiet`), file to
file, timed from start to the output's appearance (model load and the final assembly included).
Peak memory is the largest sum of proportional resident memory (PSS: a copy-on-write page shared by
the forked workers counts once in all) over the child and all its descendants (the pool workers, or
the Dask scheduler, nannies and workers), sampled from /proc every 2 s (chunking keeps memory on a
plateau, and a PSS read costs ~50 ms: sampled more often, it slows the run it measures). The baseline
is the local engine on one process at the smallest size, measured in the same run; "mem vs first" is
each engine's peak against its own peak at the smallest size (flat memory reads ≈ 1.0). "cpu s" is
the CPU time of the whole process tree (user + system, from the children's rusage) and rows/cpu-s
the rows per CPU second: on a machine shared with other work, wall-clock rows/s says how busy the
machine was; rows/cpu-s × cores is what the run would reach with the cores to itself (an upper
bound: it assumes perfect scaling).

Rows are drawn from corpora/suggestions.csv and varied a little (as in bench/classify_throughput.py)
and written in pieces, so the benchmark itself never holds a million rows either.

    python bench/batch_scale.py [--sizes 10000,100000,1000000] [--engines local,dask] [--model models/default]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def write_rows(path: Path, n: int, seed: int = 0, piece: int = 50_000) -> None:
    corpus = pd.read_csv(ROOT / "corpora" / "suggestions.csv", dtype=str, keep_default_na=False)
    titles, texts = corpus["title"].to_numpy(), corpus["text"].to_numpy()
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8", newline="") as f:
        for start in range(0, n, piece):
            m = min(piece, n - start)
            idx = rng.integers(0, len(corpus), m)
            suffix = rng.choice(["", "。", "!!", " 谢谢", "，盼回复", "😡"], m)
            pd.DataFrame({"id": np.arange(start, start + m), "title": titles[idx], "text": texts[idx] + suffix}
                         ).to_csv(f, index=False, header=start == 0)


def _pss(pid: int) -> int:
    """Proportional resident bytes: a page shared by n processes (a forked worker's copy-on-write
    model) counts 1/n in each, so the sum over a tree is the memory the tree really holds."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from /proc/PID/task/TID/children (no scan of all /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def _tree_memory(pid: int) -> int:
    """Memory of ``pid`` and every descendant (read from /proc; 0 for processes gone)."""
    total = 0
    for p in _descendants(pid):
        try:
            total += _pss(p)
        except (OSError, IndexError, ValueError):
            pass
    return total


def run(src: Path, out: Path, model: str | None, engine: str, workers: int) -> dict:
    cmd = [sys.executable, "-m", "triage.cli", "classify", str(src), "-o", str(out), "--quiet",
           "--engine", engine, "--workers", str(workers)]
    if model:
        cmd += ["--model", model]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_memory(proc.pid))
            done.wait(2.0)  # reading PSS walks page tables (~50 ms a sample): sparingly, the run is what we time

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - t0
    done.set()
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["processed"] + summary["failed"] + summary["skipped"] == summary["total"]
    return {"seconds": seconds, "rows": summary["total"], "peak": peak[0], "cpu": cpu}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--engines", default="local,dask")
    ap.add_argument("--model", default="models/default")
    ap.add_argument("--workers", type=int, default=0, help="0 = all cores")
    ap.add_argument("--tmp", default=None, help="folder for the generated files (default: a temporary one)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    engines = [e for e in args.engines.split(",") if e]
    workers = args.workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        results: list[tuple[str, int, dict]] = []
        first = Path(tmp) / f"in{sizes[0]}.csv"
        write_rows(first, sizes[0])
        base = run(first, Path(tmp) / "base.csv", args.model, "local", 1)
        base_rate = base["rows"] / base["seconds"]
        print(f"load average before: {os.getloadavg()[0]:.1f}")
        print(f"cores={os.cpu_count()}  model={args.model}  baseline: local engine, 1 process, {sizes[0]:,} rows: "
              f"{base_rate:,.0f} rows/s, peak {base['peak'] / 2**20:,.0f} MiB", flush=True)
        for n in sizes:
            src = Path(tmp) / f"in{n}.csv"
            if not src.exists():
                write_rows(src, n)
            for engine in engines:
                r = run(src, Path(tmp) / f"out-{engine}-{n}.csv", args.model, engine, workers)
                results.append((engine, n, r))
                print(f"  {engine:<6}{n:>10,} rows  {r['rows'] / r['seconds']:>8,.0f} rows/s  "
                      f"peak {r['peak'] / 2**20:>7,.0f} MiB", flush=True)
                (Path(tmp) / f"out-{engine}-{n}.csv").unlink()
            src.unlink()
    print(f"\n{'engine':<8}{'rows':>10}{'seconds':>10}{'rows/s':>10}{'vs 1 proc':>11}{'peak MiB':>10}"
          f"{'mem vs first':>14}{'cpu s':>9}{'rows/cpu-s':>12}")
    first_peak: dict[str, int] = {}
    for engine, n, r in results:
        first_peak.setdefault(engine, r["peak"])
        rate = r["rows"] / r["seconds"]
        print(f"{engine:<8}{n:>10,}{r['seconds']:>10.1f}{rate:>10,.0f}{rate / base_rate:>10.2f}x"
              f"{r['peak'] / 2**20:>10,.0f}{r['peak'] / first_peak[engine]:>13.2f}x{r['cpu']:>9.0f}"
              f"{r['rows'] / r['cpu']:>12,.0f}")
    print(f"load average after: {os.getloadavg()[0]:.1f} (other work on the machine shows here)")
    print(f"target: >= 2,500 rows/s on 2 cores for the lexical path (local engine), peak memory flat in the size")


if __name__ == "__main__":
    main()
