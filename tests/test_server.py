"""The multi-worker supervisor: a dead worker is replaced, with a growing delay while they keep dying."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.server import Backoff

ROOT = Path(__file__).resolve().parent.parent


def test_backoff_doubles_while_workers_keep_dying_and_resets_after_a_stable_one():
    b = Backoff(first=0.5, cap=8.0, stable_s=30.0)
    assert [b.delay(1.0) for _ in range(7)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert b.delay(300.0) == 0.0          # it had run for five minutes: a one-off death, restart at once
    assert b.delay(2.0) == 0.5
    assert max(b.delay(1.0) for _ in range(5000)) == 8.0   # a day-long outage: no overflow, still capped


def _children(pid: int) -> set[int]:
    """The supervisor's worker processes (spawn also starts a resource tracker: not a worker)."""
    out = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for kid in (task / "children").read_text().split():
            try:
                cmd = Path(f"/proc/{kid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"resource_tracker" not in cmd:
                out.add(int(kid))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc to find the workers")
def test_a_killed_worker_is_replaced_while_the_other_keeps_answering(tmp_path):
    port = _free_port()
    env = {**os.environ, "TRIAGE_HOME": str(tmp_path), "TRIAGE_DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}",
           "TRIAGE_RECLUSTER_QUIET_S": "0"}
    server = subprocess.Popen([sys.executable, "-m", "triage.cli", "serve", "--workers", "2", "--port", str(port)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "w"))
    base = f"http://127.0.0.1:{port}"
    try:
        def ready_workers(n: int, timeout: float) -> set[int]:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                kids = _children(server.pid)
                if len(kids) == n:
                    try:
                        if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                            return kids
                    except httpx.HTTPError:
                        pass
                time.sleep(0.3)
            raise AssertionError((tmp_path / "serve.log").read_text()[-3000:])

        first = ready_workers(2, 180)
        time.sleep(3)   # /readyz proves one worker ready: give the other time to finish loading too
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        while Path(f"/proc/{victim}").exists() and Path(f"/proc/{victim}/cmdline").read_bytes():
            time.sleep(0.05)   # until it is gone (a zombie's cmdline is empty), its socket closed

        def healthz() -> int:
            for _ in range(3):   # a connection the kernel had queued on the dying socket is reset
                try:
                    return httpx.get(f"{base}/healthz", timeout=10).status_code
                except httpx.TransportError:
                    time.sleep(0.2)
            return 0

        # the other worker keeps answering meanwhile (SO_REUSEPORT spreads new connections)
        assert [healthz() for _ in range(10)] == [200] * 10
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            now = _children(server.pid)
            if len(now) == 2 and victim not in now:
                break
            time.sleep(0.3)
        assert len(now) == 2 and victim not in now and (first - {victim}) <= now
        assert "exited with -9" in (tmp_path / "serve.log").read_text()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
