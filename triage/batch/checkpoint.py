"""The work directory of a resumable batch run: a manifest and one finished part per chunk.

A run killed at any instant (Ctrl-C, ``kill -9``, power loss) leaves only whole parts behind: each
part is written to a temporary name, flushed to disk and renamed, and its statistics file (the mark
that the chunk is done) is renamed last. A restarted run checks that the manifest describes the same
input, model and options, and skips the chunks whose marks exist. Because chunk ``k`` always covers
the same input records (:mod:`triage.io.streams`), the parts of an interrupted and resumed run are the
parts an uninterrupted run would have written, and so is the output assembled from them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from triage.errors import ResumeError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` then fsync and rename over ``path``: readers see the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out: list[str] = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} → {b!r}")
    return out


class WorkDir:
    """``OUTPUT.partial.d/``: ``manifest.json``, ``part-NNNNNNN.parquet`` + ``part-NNNNNNN.json``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def part(self, index: int) -> Path:
        return self.path / f"part-{index:07d}.parquet"

    def mark(self, index: int) -> Path:
        return self.path / f"part-{index:07d}.json"

    def open(self, manifest: dict[str, Any], restart: bool = False) -> set[int]:
        """Start or continue: the indices of the chunks already done.

        A manifest that differs from this run's (another input file, a changed file, another model or
        other options) is refused with what differs, unless ``restart`` asks to start over.
        """
        manifest = {"format": FORMAT, **manifest}
        mpath = self.path / MANIFEST
        if restart and self.path.exists():
            shutil.rmtree(self.path)
        if mpath.exists():
            try:
                old = json.loads(mpath.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                old = {}
            diff = _diff(old, manifest)
            if diff:
                raise ResumeError(
                    f"工作目录 {self.path} 是另一次运行留下的（{'; '.join(diff[:5])}）。"
                    f"若要从头开始，请加 --restart；若要继续那次运行，请用与当时相同的输入、模型和参数 / "
                    f"the work directory belongs to a different run: rerun with --restart to start over")
            self._sweep()
            done = self.done()
            if done:
                log.info("继续上次中断的运行：已完成 %d 块 / resuming: %d chunks already done", len(done), len(done))
            return done
        self.path.mkdir(parents=True, exist_ok=True)
        self._sweep()
        for stale in self.path.glob("part-*"):  # parts without a manifest belong to no known run
            stale.unlink()
        write_atomic(mpath, lambda p: p.write_text(json.dumps(manifest, ensure_ascii=False, indent=1,
                                                                 sort_keys=True), encoding="utf-8"))
        return set()

    def _sweep(self) -> None:
        for tmp in self.path.glob(".*.tmp"):  # a write cut short by a kill
            tmp.unlink(missing_ok=True)

    def done(self) -> set[int]:
        out = set()
        for m in self.path.glob("part-*.json"):
            idx = int(m.stem.split("-")[1])
            if self.part(idx).exists():
                out.add(idx)
        return out

    def write_part(self, index: int, frame: pd.DataFrame, stats: dict[str, Any]) -> None:
        """The chunk's output rows, then its statistics: the second rename marks the chunk done."""
        write_atomic(self.part(index), lambda p: frame.to_parquet(p, index=False))
        write_atomic(self.mark(index), lambda p: p.write_text(json.dumps(stats, ensure_ascii=False),
                                                              encoding="utf-8"))

    def stats(self) -> Iterator[dict[str, Any]]:
        """Every done chunk's statistics, in input order."""
        for idx in sorted(self.done()):
            yield json.loads(self.mark(idx).read_text(encoding="utf-8"))

    def frames(self) -> Iterator[pd.DataFrame]:
        for idx in sorted(self.done()):
            yield pd.read_parquet(self.part(idx))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
