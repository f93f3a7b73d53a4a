"""Two workers, one database: a key's rate limit and its revocation hold for both at once.

Each worker is a Runtime (as each server process has its own) over the same store: what they share
is only what the database holds, as between real workers.
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient


@pytest.fixture()
def workers(db_url: str, tmp_path):
    from service.app import create_app
    from service.runtime import Runtime, Settings

    rts = [Runtime(Settings(database_url=db_url, home=str(tmp_path), recluster_every=10_000, recluster_quiet_s=0))
           for _ in range(2)]
    clients = [TestClient(create_app(runtime=rt), raise_server_exceptions=False) for rt in rts]
    yield rts, clients
    for c in clients:
        c.close()
    for rt in rts:
        rt.close()


def test_a_keys_rate_is_shared_by_every_worker(workers):
    rts, (a, b) = workers
    _row, key = rts[0].store.create_key("portal", "门户-限流", False, 10)   # ten a minute
    h = {"X-API-Key": key}
    codes = [c.post("/api/v1/classify", json={"texts": ["路灯坏了"]}, headers=h).status_code
             for _ in range(7) for c in (a, b)]
    # a per-worker bucket let 10 through each (20 in all); shared, the eleventh is refused wherever it lands
    assert codes.count(200) == 10 and codes[:10] == [200] * 10 and set(codes[10:]) == {429}
    r = b.post("/api/v1/classify", json={"texts": ["路灯坏了"]}, headers=h)
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60


def test_a_key_revoked_through_one_worker_stops_working_on_the_other_within_a_second(workers):
    rts, (a, b) = workers
    _row, admin = rts[0].store.create_key("admin", "管理员", False, None)
    _row, admin2 = rts[0].store.create_key("admin", "管理员2", False, None)
    row, key = rts[0].store.create_key("staff", "将吊销", False, None)
    h = {"X-API-Key": key}
    assert b.get("/api/v1/topics", headers=h).status_code == 200        # cached by worker b now
    assert a.delete(f"/api/v1/keys/{row.id}", headers={"X-API-Key": admin}).status_code == 200
    time.sleep(1.1)
    assert b.get("/api/v1/topics", headers=h).status_code == 401
