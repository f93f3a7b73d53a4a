"""The fork pool refuses to fork a multi-threaded process (a forked child can inherit a held lock)."""

from __future__ import annotations

import threading

from triage.parallel import can_fork, chunked_map


def _double(chunk, k):
    return [x * k for x in chunk]


def test_a_process_with_other_threads_runs_the_work_in_process_with_the_same_result() -> None:
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert can_fork() is False
        parts = chunked_map(_double, list(range(40)), 2, 3)
    finally:
        stop.set()
        t.join()
    assert [x for p in parts for x in p] == [x * 3 for x in range(40)]


def test_a_single_threaded_process_may_fork() -> None:
    import multiprocessing as mp

    # earlier test modules may leave daemon threads behind (the service's batchers)
    alone = threading.active_count() == 1
    assert can_fork() == ("fork" in mp.get_all_start_methods() and alone)
    parts = chunked_map(_double, list(range(40)), 2, 2)
    assert [x for p in parts for x in p] == [x * 2 for x in range(40)]
