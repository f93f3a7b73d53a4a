"""Running the service on several cores.

uvicorn's own ``--workers`` mode (0.54 here) answers every keep-alive request about 40 ms late
(measured on loopback: 44 ms for a bare FastAPI health check against 1.2 ms with one worker). The
cause is Nagle's algorithm meeting delayed ACKs: asyncio switches Nagle off only for sockets whose
``proto`` is ``IPPROTO_TCP``, and a socket made with ``socket.socket(AF_INET, SOCK_STREAM)`` (what a
pre-bound socket handed to workers is) has proto 0, so its connections keep Nagle on. Each worker
here binds its own socket, created with ``IPPROTO_TCP`` and ``SO_REUSEPORT`` (the kernel spreads
connections over the workers; each listens before loading the app, see :func:`_worker`), and this supervisor restarts a worker that dies (kill -9, out of
memory) so the port keeps answering.
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
        return p

    def stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    procs = [start() for _ in range(workers)]
    try:
        while not stopping:
            time.sleep(0.5)
            for i, p in enumerate(procs):
                if not p.is_alive() and not stopping:
                    log.warning("worker %s exited with %s; starting a new one", p.pid, p.exitcode)
                    procs[i] = start()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(20)
            if p.is_alive():
                p.kill()
