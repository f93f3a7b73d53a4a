"""bench/load.py at a bounded size: the service is killed with SIGKILL (SQLite) or PostgreSQL is
restarted under load, and still every acknowledged submission is stored exactly once."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT, _postgres_url


def run_load(*args: str) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), *args], capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    assert lines, out.stderr[-3000:]
    return json.loads(lines[-1])


def assert_nothing_lost(res: dict, n: int) -> None:
    assert res["acked"] == n and res["rows"] == n
    assert res["lost"] == res["duplicates"] == res["half_stored"] == res["unacknowledged_rows"] == 0
    assert res["invariant_holds"] is True


@pytest.mark.slow
def test_a_sigkill_of_the_whole_service_under_load_loses_and_duplicates_nothing() -> None:
    res = run_load("--n", "120", "--concurrency", "24", "--kill-at", "0.4")
    assert_nothing_lost(res, 120)
    assert -1 in res["ready_transitions"] and res["ready_transitions"][-1] == 200   # it was down, and came back


@pytest.mark.slow
def test_a_postgres_restart_under_load_is_survived_and_readiness_follows_it() -> None:
    url = _postgres_url()
    if url is None or not shutil.which("pg_ctlcluster"):
        pytest.skip("PostgreSQL (with pg_ctlcluster) is not available here: restart test skipped")
    from .conftest import _drop_postgres

    _drop_postgres(url)
    res = run_load("--n", "120", "--concurrency", "24", "--database", "postgresql", "--restart-postgres-at", "0.3")
    assert_nothing_lost(res, 120)
    assert res["ready_transitions"][0] == 200 and res["ready_transitions"][-1] == 200
