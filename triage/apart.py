"""Run one CPU-heavy call in a child process at low priority, with its progress reported back.

Why: the service's re-clustering ran in a thread of the worker that took the job. For the
clustering's length (about 40 s at 20,000 stored messages) that worker's intake shared a core *and*
Python's interpreter lock with it, and its submissions' p99 went from under a second to about four
(``bench/intake_during_recluster.py``). A child process shares no lock with the worker, and at a
lower scheduling priority (``nice``) it takes the cores only when intake leaves them idle.

The child is started with ``spawn`` (a fresh interpreter): forking a worker that runs threads (the
web server's, the micro-batchers', the alert loop's) can copy a lock another thread held at that
moment, and the child would wait on it forever.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
import sys
import threading
import traceback
from typing import Any, Callable

log = logging.getLogger(__name__)


class ApartError(RuntimeError):
    """The child process failed or died; the message says how (its traceback when it raised).

    ``killed``: a signal ended it (the kernel's out-of-memory killer, an operator): the same work in
    the parent would most likely meet the same end, and take the worker with it."""

    def __init__(self, message: str, exitcode: int | None = None) -> None:
        super().__init__(message)
        self.exitcode = exitcode

    @property
    def killed(self) -> bool:
        return self.exitcode is not None and self.exitcode < 0


def _die_with_parent() -> None:
    """Exit the moment the parent process does: a worker killed outright (out of memory, a
    supervisor's SIGKILL) would otherwise leave this child computing on, then blocked for ever
    writing a result nobody reads, holding the model and the data."""
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="triage-apart-parent", daemon=True).start()


def _child(q: Any, fn: Callable[..., Any], args: tuple, kwargs: dict, nice: int) -> None:
    _die_with_parent()
    if nice:
        try:
            os.nice(nice)
        except OSError:   # not permitted here: run at the parent's priority
            pass
    logging.basicConfig(level=logging.WARNING)
    try:
        result = fn(*args, progress=lambda p: q.put(("progress", p)), **kwargs)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it as ApartError
        q.put(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    else:
        q.put(("done", result))


_START = threading.Lock()


@contextlib.contextmanager
def _main_not_reimported():
    """Start the child without re-running the parent's main script.

    ``spawn`` imports the parent's ``__main__`` again in the child (as ``__mp_main__``), from its
    file or module name. A script that calls the library at top level, without an
    ``if __name__ == "__main__"`` guard (an office's own import script, say), would then run a second
    time in the child: read its file and write to the store again before failing. The functions run
    here live in the library, so the child never needs the parent's main module: while the child
    starts, ``__main__`` shows neither its spec nor its file, and multiprocessing skips it.
    """
    main = sys.modules.get("__main__")
    with _START:
        saved = {a: getattr(main, a) for a in ("__spec__", "__file__") if main is not None and hasattr(main, a)}
        try:
            if main is not None:
                main.__spec__ = None
                if "__file__" in saved:
                    del main.__file__
            yield
        finally:
            for a, v in saved.items():
                setattr(main, a, v)


def run_apart(fn: Callable[..., Any], *args: Any, progress: Callable[[Any], None] | None = None,
              nice: int = 10, poll_s: float = 1.0, **kwargs: Any) -> Any:
    """``fn(*args, progress=…, **kwargs)`` in a spawned child process; its return value.

    ``fn`` must be a module-level function of an importable module (not the main script: the child
    does not load that, see :func:`_main_not_reimported`), and its arguments and result picklable. Whatever it
    passes to its ``progress`` argument reaches ``progress`` here, in this thread, in order.
    Raises :class:`ApartError` when ``fn`` raises (with the child's traceback) or the child dies.
    """
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q, fn, args, kwargs, nice), daemon=True, name="triage-apart")
    try:
        with _main_not_reimported():
            p.start()   # the arguments are pickled here
    except Exception as exc:  # noqa: BLE001 - an argument that cannot be pickled, no process to start
        q.close()
        raise ApartError(f"子进程无法启动：{exc} / the child process could not start") from exc
    finished = False
    try:
        while True:
            try:
                kind, payload = q.get(timeout=poll_s)
            except queue.Empty:
                if p.is_alive():
                    continue
                try:   # it may have sent its result and exited between the two checks
                    kind, payload = q.get(timeout=poll_s)
                except queue.Empty:
                    raise ApartError(f"子进程意外退出（退出码 {p.exitcode}） / the child process died "
                                     f"(exit code {p.exitcode})", exitcode=p.exitcode) from None
            if kind == "progress":
                if progress is not None:
                    progress(payload)
            elif kind == "error":
                finished = True
                raise ApartError(payload)
            else:
                finished = True
                return payload
    finally:
        p.join(timeout=30 if finished else 0)   # on any other way out (a failing reporter), stop it now
        if p.is_alive():
            p.kill()
            p.join()
        q.close()
