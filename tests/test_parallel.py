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


def test_a_forked_worker_loads_its_own_ner_session_not_the_parents():
    """ONNX Runtime's state is not fork-safe: a child must not run the session its parent loaded. Run in
    a fresh process: this one has threads from other tests (servers, timers), so it may not fork."""
    import subprocess
    import sys

    from .conftest import ROOT

    script = """
import sys
sys.path.insert(0, sys.argv[1])
from triage.text.names import _lac
from triage.parallel import can_fork, chunked_map

def inherited(chunk):
    return [_lac.cache_info().currsize for _ in chunk]

if __name__ == "__main__":
    assert can_fork(), "a fresh single-threaded process forks"
    _lac()
    assert _lac.cache_info().currsize == 1
    print(sorted(set(sum(chunked_map(inherited, list(range(8)), 2), []))))
"""
    out = subprocess.run([sys.executable, "-c", script, str(ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[0]"
