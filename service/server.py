"""Running the service on several cores.

uvicorn's own ``--workers`` mode (0.54 here) answers every keep-alive request about 40 ms late
(measured on loopback: 44 ms for a bare FastAPI health check against 1.2 ms with one worker). The
cause is Nagle's algorithm meeting delayed ACKs: asyncio switches Nagle off only for sockets whose
``proto`` is ``IPPROTO_TCP``, and a socket made with ``socket.socket(AF_INET, SOCK_STREAM)`` (what a
pre-bound socket handed to workers is) has proto 0, so its connections keep Nagle on. Each worker
here binds its own socket, created with ``IPPROTO_TCP`` and ``SO_REUSEPORT`` (the kernel spreads
connections over the workers; each listens before loading the app, see :func:`_worker`), and this supervisor restarts a worker that dies (kill -9, out of
memory) so the port keeps answering, with a growing delay while new workers keep dying (:class:`Backoff`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import socket
import time

log = logging.getLogger(__name__)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)   # see the module docstring
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker(host: str, port: int, log_level: str, access_log: bool) -> None:  # pragma: no cover - child process
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sock = _bind(host, port)
    # Listen before the app loads (seconds: the models). Otherwise the first worker to finish loading
    # is the only one listening when clients connect, and keeps every keep-alive connection: a load
    # run with 64 connections found one worker at 99% of a core and the other idle. Connections that
    # reach a worker still loading wait in its backlog.
    sock.listen(2048)
    config = uvicorn.Config("service.app:create_app", factory=True, log_level=log_level, access_log=access_log)
    uvicorn.Server(config).run(sockets=[sock])


class Backoff:
    """When to restart a worker slot whose process died: at once the first time, then after a delay
    that doubles (0.5 s, 1 s, 2 s … up to ``cap``) while its workers keep dying within ``stable_s`` of
    their start; a worker that lived longer resets it. A worker that cannot start (a broken model, a
    database refusing connections) would otherwise be restarted every half second forever, each start
    loading the models again."""

    def __init__(self, first: float = 0.5, cap: float = 60.0, stable_s: float = 30.0) -> None:
        self.first, self.cap, self.stable_s = first, cap, stable_s
        self.failures = 0

    def delay(self, lived_s: float) -> float:
        """Seconds to wait before the next start, given how long the dead worker lived."""
        if lived_s >= self.stable_s:
            self.failures = 0
        self.failures += 1
        return 0.0 if self.failures == 1 else min(self.cap, self.first * 2 ** min(self.failures - 2, 30))


def serve(host: str, port: int, workers: int = 1, log_level: str = "info", access_log: bool = True) -> None:
    import uvicorn

    if workers <= 1:
        uvicorn.run("service.app:create_app", factory=True, host=host, port=port, log_level=log_level,
                    access_log=access_log)
        return
    _bind(host, port).close()          # fail here, clearly, if the port is taken
    ctx = mp.get_context("spawn")      # a fresh interpreter per worker: no state copied from this one
    stopping = False

    def start() -> mp.Process:
        p = ctx.Process(target=_worker, args=(host, port, log_level, access_log), daemon=False)
        p.start()
        started[p.pid] = time.monotonic()
        return p

    started: dict[int | None, float] = {}

    def stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    procs: list[mp.Process | None] = [start() for _ in range(workers)]
    backoff = [Backoff() for _ in range(workers)]
    due: list[float] = [0.0] * workers     # when an empty slot starts its next worker
    try:
        while not stopping:
            time.sleep(0.5)
            now = time.monotonic()
            for i, p in enumerate(procs):
                if stopping:
                    break
                if p is not None and not p.is_alive():
                    lived = now - started.pop(p.pid, now)
                    wait = backoff[i].delay(lived)
                    log.warning("worker %s exited with %s after %.0f s; starting a new one%s", p.pid, p.exitcode,
                                lived, f" in {wait:.1f} s" if wait else "")
                    procs[i], due[i] = None, now + wait
                if procs[i] is None and now >= due[i]:
                    procs[i] = start()
    finally:
        alive = [p for p in procs if p is not None]
        for p in alive:
            if p.is_alive():
                p.terminate()
        for p in alive:
            p.join(20)
            if p.is_alive():
                p.kill()
