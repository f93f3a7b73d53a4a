"""Micro-batching: concurrent single-message requests share one model call (the portal's live hints,
intake's analysis) or one transaction (intake's group commit).

Per-call overhead (input validation, sparse transforms, calibrated probabilities) dominates a
one-message assessment, so 16 clients asking at once cost little more than one when batched. The
batcher thread waits at most ``max_wait_s`` after the first request for others to join, runs one
``assess_texts`` over all of them and hands each caller its own results on its own event loop.
While one batch runs, the next requests queue up and form the next batch: the busier the service,
the larger the batches.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)


class MicroBatcher:
    def __init__(self, fn: Callable[[list[Any]], list[Any]], max_texts: int = 64, max_wait_s: float = 0.002) -> None:
        self.fn, self.max_texts, self.max_wait_s = fn, max_texts, max_wait_s
        self._q: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="triage-batcher", daemon=True)
        self._thread.start()

    async def __call__(self, texts: Sequence[Any]) -> list[Any]:
        """``fn``'s results for these items (texts, or intake's submissions), in order."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._q.put((list(texts), fut, loop))
        return await fut

    def close(self) -> None:
        """Stop the thread (after what is queued). A process with extra threads may not fork, so
        tests and embedding code that build a runtime close it when done."""
        self._q.put(None)
        self._thread.join(10)

    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch = [first]
            n = len(first[0])
            try:
                while n < self.max_texts:
                    item = self._q.get(timeout=self.max_wait_s)
                    if item is None:
                        self._q.put(None)   # finish this batch, then stop
                        break
                    batch.append(item)
                    n += len(item[0])
            except queue.Empty:
                pass
            texts = [t for item in batch for t in item[0]]
            try:
                results = self.fn(texts)
                k = 0
                for item_texts, fut, loop in batch:
                    part = results[k:k + len(item_texts)]
                    k += len(item_texts)
                    loop.call_soon_threadsafe(_settle, fut, part, None)
            except Exception as exc:  # noqa: BLE001 - each caller gets the error, the thread lives on
                log.exception("batched call failed")
                for _t, fut, loop in batch:
                    loop.call_soon_threadsafe(_settle, fut, None, exc)


def _settle(fut: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if fut.done():   # the client went away
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
