"""Open311 as a real third-party client sees it: `georeport` (GeoReport v2 wrapper from PyPI) against a live server.

The client reads (services, one request, the request list with the spec's filters) and sends no key
on reads: what an anonymous caller may see is part of what is tested.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import httpx
import pytest

from .conftest import serving

georeport = pytest.importorskip("georeport", reason="georeport is not installed (pip install -e '.[dev]')")

PHONE = "13698765432"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):
    from service.app import create_app
    from service.runtime import Runtime, Settings

    home = tmp_path_factory.mktemp("o311")
    saved = os.environ.get("TRIAGE_HOME")
    rt = Runtime(Settings(database_url=f"sqlite:///{home / 'o.db'}", home=str(home), recluster_every=10_000, recluster_quiet_s=0))
    portal = rt.store.create_key("portal", "门户", False, 0)[1]
    with serving(create_app(runtime=rt)) as root:
        base = f"{root}/open311/v2"
        yield SimpleNamespace(rt=rt, base=base, portal=portal, client=georeport.GeoReport(base))
    rt.close()
    if saved is None:
        os.environ.pop("TRIAGE_HOME", None)
    else:
        os.environ["TRIAGE_HOME"] = saved


def _submit(live, code: str, text: str) -> str:
    r = httpx.post(f"{live.base}/requests.json", data={"api_key": live.portal, "service_code": code,
                                                      "description": text, "address_string": "幸福村3组"})
    assert r.status_code == 201, r.text
    return r.json()[0]["service_request_id"]


def test_a_georeport_client_lists_services_and_reads_a_request_by_its_id(live) -> None:
    services = live.client.get_service_list()
    code = next(s["service_code"] for s in services if s["service_name"] == "交通运输")
    rid = _submit(live, code, f"幸福村公交站没有候车亭，下雨没处躲，联系电话{PHONE}")
    got = live.client.get_service_request(rid)          # no key: the id is the right to ask
    assert got["service_request_id"] == rid and got["status"] in ("open", "closed") and got["status_notes"]
    assert got["service_code"] == code and got["service_name"] == "交通运输"
    assert got["requested_datetime"] and got["updated_datetime"]
    assert PHONE not in got["description"] and "候车亭" in got["description"]
    assert got["address"] is None                       # an address_string may be a home: keys only


def test_the_list_shows_an_anonymous_client_only_what_the_office_published(live) -> None:
    from sqlalchemy import select

    from triage.office.common import Actor
    from triage.store.database import Suggestion

    services = live.client.get_service_list()
    code = next(s["service_code"] for s in services if s["service_name"] == "城乡建设")
    rid = _submit(live, code, "幸福村村口的路灯坏了一个月，晚上出行很不安全")
    assert rid not in [x["service_request_id"] for x in live.client.get_service_requests()]
    # a portal key lists what it submitted, with the spec's filters
    mine = httpx.get(f"{live.base}/requests.json", params={"api_key": live.portal, "service_code": code}).json()
    assert rid in [x["service_request_id"] for x in mine] and all(x["service_code"] == code for x in mine)
    # the office accepts the topic and publishes it on 回音壁: now anyone may list it
    off = live.rt.office
    with off.store.session() as s:
        tid = s.execute(select(Suggestion.topic_id).where(Suggestion.receipt == rid)).scalar_one()
    staff = Actor(name="审核员", role="staff", can_unmask=False)
    off.decisions.decide(tid, "accept", staff, "群众反映集中")
    for stage in ("议前调研", "协商议事", "公开公示"):
        off.decisions.decide(tid, "advance", staff, "按流程推进", stage=stage)
    listed = live.client.get_service_requests(status="open")
    assert rid in [x["service_request_id"] for x in listed]
    assert live.client.get_service_requests(service_request_id=rid)[0]["service_request_id"] == rid


def test_a_range_over_ninety_days_is_refused_as_the_spec_says(live) -> None:
    import requests

    with pytest.raises(requests.HTTPError) as err:
        live.client.get_service_requests(start_date="2026-01-01T00:00:00Z", end_date="2026-06-01T00:00:00Z")
    assert err.value.response.status_code == 400


def test_a_slow_open311_submission_does_not_stall_the_workers_other_requests(live, monkeypatch) -> None:
    """Open311 intake ran the blocking submit on the event loop: every other request of the worker
    waited for it. It now takes the JSON intake's path (shared model calls, then the group commit's
    writer thread)."""
    import threading
    import time

    off = live.rt.office
    real = off.intake.submit_many
    entered = threading.Event()

    def slow_write(*a, **kw):
        entered.set()
        time.sleep(2.0)   # a database under load
        return real(*a, **kw)

    monkeypatch.setattr(off.intake, "submit_many", slow_write)
    code = live.client.get_service_list()[0]["service_code"]
    done: dict = {}
    t = threading.Thread(target=lambda: done.update(r=httpx.post(
        f"{live.base}/requests.json", timeout=30,
        data={"api_key": live.portal, "service_code": code, "description": "幸福村3组路灯坏了半个月没人修"})))
    t.start()
    assert entered.wait(20)
    root = live.base.rsplit("/open311", 1)[0]
    t0 = time.perf_counter()
    assert httpx.get(f"{root}/healthz", timeout=10).status_code == 200
    assert time.perf_counter() - t0 < 1.0
    t.join(30)
    assert done["r"].status_code == 201, done["r"].text
