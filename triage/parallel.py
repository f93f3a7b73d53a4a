"""One way to spread a pure function over processes: chunks, a forked pool, results in order.

Fork lets workers inherit what the parent has loaded (jieba's dictionary, a model) instead of
loading or unpickling it per task; where fork is unavailable the work runs here, sequentially,
rather than copying large objects into every task.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from collections.abc import Callable, Sequence
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def can_fork() -> bool:
    """Fork only a single-threaded process. Forking one with other threads (the service's request
    threads) copies their locks in whatever state they are, and the child can hang for ever: seen
    here as a re-clustering stuck in ``Popen._launch`` inside a busy service worker. There the work
    runs in-process instead. A daemon process (the service's clustering child, triage.apart) may
    not start children at all."""
    return ("fork" in mp.get_all_start_methods() and threading.active_count() == 1
            and not mp.current_process().daemon)


def chunked_map(fn: Callable[..., T], items: Sequence[Any], workers: int, *args: Any) -> list[T]:
    """``[fn(chunk, *args) for chunk in chunks(items)]`` on ``workers`` forked processes.

    Four chunks per worker keep the cores busy when chunks take unequal time.
    """
    size = max(1, -(-len(items) // (workers * 4)))
    rows = items.iloc if hasattr(items, "iloc") else items  # a DataFrame is cut by position
    chunks = [rows[i:i + size] for i in range(0, len(items), size)]
    if workers <= 1 or not can_fork():
        return [fn(ch, *args) for ch in chunks]
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
        return list(pool.map(fn, chunks, *([a] * len(chunks) for a in args)))


def thread_map(fn: Callable[[Any], T], items: Sequence[Any], threads: int = 2) -> list[T]:
    """``[fn(x) for x in items]`` on up to ``threads`` threads (never more than the cores), in order.

    For work that releases the GIL (scipy's sparse products, numpy on large arrays): the threads share
    the process's memory, so nothing is copied or forked, and a service worker may use it too. An
    exception in one item cancels the items not yet started and is raised here.
    """
    workers = max(1, min(threads, os.cpu_count() or 1))
    if workers == 1 or len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))
