"""When this worker re-clusters, and that only one worker does at a time.

The store's lease makes one worker re-cluster for all. A run is due after ``recluster_every`` new
suggestions (or a share of the store), and once intake has been quiet for ``recluster_quiet_s``; it
runs in a background thread, never on a submission's request.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from typing import Any

from triage.office.common import Actor, Conflict, OfficeService
from triage.office.reclustering import RECLUSTER_STEPS, Reclustering

log = logging.getLogger(__name__)


class ClusteringCoordinator(OfficeService):
    """Triggers (count, quiet time), the lease, background and settle runs of :class:`Reclustering`."""

    def __init__(self, state, reclustering: Reclustering) -> None:
        super().__init__(state)
        self.reclustering = reclustering
        self._recluster_lock = threading.Lock()
        self._recluster_pending = threading.Lock()
        self._since = 0                       # submissions to this worker since its last run began
        self._settle_timer: threading.Timer | None = None
        self._settle_guard = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Stop this worker's pending settle run (a re-clustering already running finishes)."""
        with self._settle_guard:
            self._closed = True
            if self._settle_timer is not None:
                self._settle_timer.cancel()
                self._settle_timer = None

    def count_submission(self) -> None:
        """One more submission stored by this worker since its last run began."""
        self._since += 1

    def after_submission(self, index_missing: bool, auto_recluster: bool = True) -> None:
        """Re-cluster in the background when due (or when there is no index yet), and (re)arm the settle run."""
        if auto_recluster and (self._since >= self.config.recluster_every or index_missing):
            self.soon()
        if auto_recluster:   # even then: a run already going may not hold this message
            self.settle_later()

    def soon(self) -> None:
        if not self._recluster_pending.acquire(blocking=False):   # one background run at a time
            return
        threading.Thread(target=self._quietly, name="triage-recluster", daemon=True).start()

    def settle_later(self) -> None:
        """(Re)arm this worker's settle run: ``recluster_quiet_s`` after the latest submission."""
        quiet = self.config.recluster_quiet_s
        if quiet <= 0:
            return
        with self._settle_guard:
            if self._closed:
                return
            if self._settle_timer is not None:
                self._settle_timer.cancel()
            timer = threading.Timer(quiet, self._settle)
            timer.name, timer.daemon = "triage-settle", True
            timer.start()
            self._settle_timer = timer

    def _settle(self) -> None:
        if not self._recluster_pending.acquire(blocking=False):
            self.settle_later()   # a run is going: it may not hold the newest messages; look again later
            return
        self._quietly(settle=True)

    def _quietly(self, settle: bool = False) -> None:
        try:
            self.recluster(only_if_due=True, settle=settle)
        except Conflict:   # another worker is re-clustering: its result reaches this one as a new generation
            if settle:
                self.settle_later()   # but it may have started before this worker's newest messages
        except Exception:  # noqa: BLE001 - a background repair must not kill the worker; it is logged
            log.exception("re-clustering failed; topics stay as they were")
        finally:
            self._recluster_pending.release()

    def running_elsewhere(self) -> bool:
        """Whether a re-clustering runs now: this worker's own (automatic or settle) or a live worker's
        lease (a dead holder's lease is taken over)."""
        if self._recluster_lock.locked() or self._recluster_pending.locked():
            return True
        holder = self.store.lease_holder("recluster")
        return holder is not None and not self._lease_is_stale(holder)

    def _lease_is_stale(self, holder: str) -> bool:
        # A holder on this machine whose process is gone (kill -9) cannot release its lease. Nor can
        # this process, if its release failed (the database went away mid-run): the caller holds
        # ``_recluster_lock``, so no run of this process still holds the lease.
        host, _, rest = holder.partition(":")
        pid = rest.partition(":")[0]
        if host != socket.gethostname() or not pid.isdigit():
            return False
        if int(pid) == os.getpid():
            return True
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def recluster(self, actor: Actor | None = None, only_if_due: bool = False, settle: bool = False,
                  progress: Callable[[dict], None] | None = None) -> dict[str, Any]:
        """Re-cluster the messages of unpinned candidate topics; ids kept by membership overlap.

        One worker re-clusters for all (a lease in the store). Its cost grows with the store, so the
        automatic run (``only_if_due``) waits for ``recluster_every`` new suggestions or
        ``recluster_growth`` of the store, whichever is more: the cost per suggestion stays flat.
        A settle run (``settle``, after intake went quiet) is due once anything arrived since the
        last run, in any worker: its cost is one run per quiet spell, not per suggestion.
        ``progress`` receives each stage as it ends (see :meth:`triage.office.reclustering.Reclustering.run`).
        """
        holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        with self._recluster_lock:
            total = self.store.count_suggestions()
            mark = self.store.claim("recluster", holder, self.config.recluster_lease_s, stale=self._lease_is_stale)
            if mark is None:
                raise Conflict("正在重新聚类，请稍后再试 / a re-clustering is already running; try again shortly")
            done = None
            try:
                due = total > mark if settle else total - mark >= max(self.config.recluster_every,
                                                                       self.config.recluster_growth * mark)
                if only_if_due and not due:
                    self._since = 0
                    return {"messages": 0, "topics": 0, "skipped": "not due"}
                self._since = 0   # counted again from the start of this run
                result = self.reclustering.run(actor, progress)
                if result.get("skipped") == "decided meanwhile":
                    self._since = self.config.recluster_every   # run again soon
                if progress is not None and result.get("skipped") == "decided meanwhile":
                    # said after the write lock is released (the job's row is written in its own session)
                    progress({"stage": "未写入（其间有议题被决定，稍后重跑）", "step": RECLUSTER_STEPS,
                              "steps": RECLUSTER_STEPS, "messages": result["messages"], "seconds": None})
                done = total
                return result
            finally:
                self.store.release("recluster", holder, mark=done)
