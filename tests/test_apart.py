"""A heavy call in a child process (triage.apart), and the service's re-clustering run that way."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select

from triage.apart import ApartError, run_apart
from triage.pipeline import Triage
from triage.store.database import Suggestion, Topic


def _count(n: int, progress) -> int:
    for k in range(n):
        progress({"step": k})
    return os.getpid()


def _raise(progress) -> None:
    raise ValueError("坏数据 in row 7")


def _die(progress) -> None:
    os._exit(3)


def test_the_result_and_every_progress_report_come_back_in_order_from_another_process() -> None:
    seen: list[dict] = []
    pid = run_apart(_count, 5, progress=seen.append)
    assert pid != os.getpid()
    assert seen == [{"step": k} for k in range(5)]


def test_an_error_in_the_child_is_raised_here_with_its_message_and_traceback() -> None:
    with pytest.raises(ApartError, match="ValueError: 坏数据 in row 7") as info:
        run_apart(_raise)
    assert "_raise" in str(info.value)   # the child's traceback names where it failed


def test_a_child_that_dies_is_an_error_not_a_wait_forever() -> None:
    with pytest.raises(ApartError, match="exit code 3"):
        run_apart(_die, poll_s=0.2)


@pytest.fixture()
def office(tmp_path):
    from service.runtime import Runtime, Settings

    rt = Runtime(Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", home=str(tmp_path), recluster_every=10_000,
                          recluster_quiet_s=0))
    yield rt.office
    rt.close()


def _decide_some(office) -> int:
    """Staff's marks on a store, so that what a child reads is told apart from reading everything:
    one topic accepted, one pinned, one rejected, and one message without a topic. How many stored
    messages the re-clustering leaves alone (those of the three decided topics) is returned."""
    from sqlalchemy import update

    with office.store.session() as s:
        sizes = s.execute(select(Suggestion.topic_id, func.count()).group_by(Suggestion.topic_id)
                          .order_by(func.count().desc(), Suggestion.topic_id)).all()
        (accepted, n1), (pinned, n2), (rejected, n3), (loose, _) = sizes[:4]
        s.execute(update(Topic).where(Topic.id == accepted).values(status="accepted"))
        s.execute(update(Topic).where(Topic.id == pinned).values(pinned=True))
        s.execute(update(Topic).where(Topic.id == rejected).values(status="rejected"))
        one = s.scalar(select(func.min(Suggestion.id)).where(Suggestion.topic_id == loose))
        s.execute(update(Suggestion).where(Suggestion.id == one).values(topic_id=None))
        s.commit()
    return n1 + n2 + n3


def _spy_run_apart(monkeypatch) -> list[str]:
    """run_apart's calls, each followed by "ok" when the child returned (a failed child falls back to
    the worker, whose result would be the same: the test must know the child did the work)."""
    import triage.apart as apart_mod

    real, calls = apart_mod.run_apart, []

    def spy(fn, *a, **kw):
        calls.append(fn.__name__)
        out = real(fn, *a, **kw)
        calls.append("ok")
        return out

    monkeypatch.setattr(apart_mod, "run_apart", spy)
    return calls


def test_a_large_store_re_clusters_in_a_child_process_exactly_as_it_would_in_the_worker(office, corpus,
                                                                                       monkeypatch) -> None:
    from triage.office.common import Intake
    from triage.store.database import AuditEvent, Suggestion

    rows = corpus.sample(60, random_state=3)
    start = dt.datetime.utcnow() - dt.timedelta(days=3)
    for k, r in enumerate(rows.itertuples()):
        office.intake.submit(Intake(text=r.text, title=r.title, submitter=f"c{k % 40}",
                             submitted_at=start + dt.timedelta(minutes=k)), auto_recluster=False)

    def membership() -> pd.Series:
        with office.store.session() as s:
            got = s.execute(select(Suggestion.id, Suggestion.topic_id).order_by(Suggestion.id)).all()
        return pd.Series({sid: tid for sid, tid in got})

    from triage.office.reclustering import cluster_snapshot, recluster_from_store_apart, undecided

    out_of_reach = _decide_some(office)
    with office.store.session() as s:
        msgs = office.index.messages(s, undecided())
    assert len(msgs) == 60 - out_of_reach and msgs["topic_id"].isna().sum() == 1
    here = cluster_snapshot(office.triage, office.encoder, msgs)
    office.config.recluster_apart_from = 0
    apart = office.index.apart(len(msgs))
    assert apart is not None, "the shipped model and the default encoder can be loaded in a child"
    # the child reads the store itself: the same snapshot, the same topics
    there = run_apart(recluster_from_store_apart, office.store.url, office.config, office.encoder.name, *apart)
    assert there["apart"] is True
    assert there["topic_of"] == here["topic_of"] and there["before"] == here["before"]
    assert there["previous"] == here["previous"] and there["missing"] == here["missing"]
    pd.testing.assert_frame_equal(there["topics"], here["topics"])
    assert there["scorecards"] == here["scorecards"]

    # and through the office: the job's audit says where it ran, and every message keeps a topic
    calls = _spy_run_apart(monkeypatch)
    office.clustering.recluster()
    assert calls == ["recluster_from_store_apart", "ok"]
    with office.store.session() as s:
        audit = s.execute(select(AuditEvent).where(AuditEvent.action == "recluster")).scalars().all()[-1]
    assert audit.detail["apart"] is True
    assert membership().notna().all()


def test_a_model_trained_in_this_process_re_clusters_here(office) -> None:
    office.config.recluster_apart_from = 0
    office.triage.bundle.directory = None   # nothing another process could load
    assert office.index.apart(10_000) is None


def test_a_large_stores_topic_index_is_built_in_a_child_process_and_is_the_same_index(office, corpus, monkeypatch) -> None:
    import numpy as np

    from triage.office.common import Intake

    rows = corpus.sample(40, random_state=5)
    for k, r in enumerate(rows.itertuples()):
        office.intake.submit(Intake(text=r.text, title=r.title, submitter=f"c{k}"), auto_recluster=False)
    _decide_some(office)   # a rejected topic's messages are not in the index
    here, upto = office.index.build()
    office.config.recluster_apart_from = 0
    calls = _spy_run_apart(monkeypatch)
    there, upto2 = office.index.build()
    assert calls == ["index_from_store_apart", "ok"] and upto2 == upto
    with office.store.session() as s:
        live = s.scalar(select(func.count()).select_from(Suggestion).join(Topic, Suggestion.topic_id == Topic.id)
                        .where(Topic.status.in_(("candidate", "accepted"))))
    assert sum(here.count) == live < 40
    assert there.ids == here.ids and there.count == here.count and there.place == here.place
    assert there.mentions == here.mentions and there.last_day == here.last_day
    np.testing.assert_array_equal(there.E, here.E)
    assert (there.L != here.L).nnz == 0


def _can_fork(progress) -> bool:
    from triage.parallel import can_fork

    return can_fork()


def _killed(progress) -> None:
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def test_the_child_never_tries_to_start_a_pool_of_its_own() -> None:
    # a daemon process may not have children: the index build's TF-IDF pool failed there at 5,000 messages
    assert run_apart(_can_fork) is False


def test_a_child_killed_by_a_signal_says_so() -> None:
    with pytest.raises(ApartError) as info:
        run_apart(_killed, poll_s=0.2)
    assert info.value.killed and info.value.exitcode == -9


def test_a_child_stops_when_its_worker_is_killed_outright(tmp_path) -> None:
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import sys; sys.path[:0] = [sys.argv[1]]\n"
        "from triage.apart import run_apart\n"
        "from tests.test_apart import _sleep_writing_pid\n"
        "if __name__ == '__main__':\n"
        "    run_apart(_sleep_writing_pid, sys.argv[2])\n"), str(Path(__file__).resolve().parent.parent), str(pid_file)])
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        child = int(pid_file.read_text())
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(child, signal.SIGKILL)
            pytest.fail("the child outlived its parent by 15 s")
    finally:
        if parent.poll() is None:
            parent.kill()


def _sleep_writing_pid(path: str, progress) -> None:
    import time

    Path(path + ".tmp").write_text(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(120)


def test_a_dropped_topics_successor_is_followed_through_a_merge_and_never_a_closed_topic(office) -> None:
    from triage.store.database import Topic

    with office.store.session() as s:
        s.add_all([Topic(id="T000011", status="merged", merged_into="T000012", pinned=True),
                   Topic(id="T000012", status="candidate")])
        office.index.record_successors(s, {"T000010": "T000011", "T000013": None})
    assert office.index.successor("T000010") == "T000012"
    assert office.index.successor("T000013") is None and office.index.successor("T000099") is None
    with office.store.session() as s:
        s.get(Topic, "T000012").status = "rejected"
    assert office.index.successor("T000010") is None


def test_a_script_without_a_main_guard_runs_once_not_again_in_the_child(tmp_path) -> None:
    import subprocess
    import sys

    script = tmp_path / "office_script.py"
    ran = tmp_path / "ran.txt"
    script.write_text(
        "import sys\n"
        f"sys.path[:0] = [{str(Path(__file__).resolve().parent.parent)!r}]\n"
        f"open({str(ran)!r}, 'a').write('x')   # a side effect: an import into the store, say\n"
        "from triage.apart import run_apart\n"
        "from tests.test_apart import _count\n"
        "print(run_apart(_count, 2) > 0)\n", encoding="utf-8")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True"
    assert ran.read_text() == "x"   # the script's top level ran once, in the parent only


def test_an_office_can_keep_re_clustering_in_the_worker(monkeypatch, tmp_path) -> None:
    from service.runtime import Runtime, Settings

    monkeypatch.setenv("TRIAGE_RECLUSTER_APART_FROM", "0")
    assert Settings.from_env().recluster_apart_from == 0
    rt = Runtime(Settings(database_url=f"sqlite:///{tmp_path / 'b.db'}", home=str(tmp_path), recluster_apart_from=0))
    try:
        assert rt.office.config.recluster_apart_from is None and rt.office.index.apart(10**6) is None
    finally:
        rt.close()
    monkeypatch.delenv("TRIAGE_RECLUSTER_APART_FROM")
    assert Settings.from_env().recluster_apart_from == 3000


def test_a_store_in_memory_is_read_and_indexed_in_the_worker(monkeypatch, corpus, tmp_path) -> None:
    """A child process reads the store itself, so a store only this process sees (SQLite in
    memory) is read, indexed and re-clustered here, whatever its size."""
    from triage.office.common import Intake
    from triage.office.office import Office
    from triage.store.database import Store

    for url in ("sqlite:///:memory:", "sqlite:///file::memory:?cache=shared&uri=true",
                "sqlite:///file:x?mode=memory&cache=shared&uri=true"):
        assert Store(url, migrate=False).reachable_from_other_processes is False, url
    assert Store(f"sqlite:///{tmp_path / 'f.db'}", migrate=False).reachable_from_other_processes is True
    store = Store("sqlite://")
    assert store.reachable_from_other_processes is False
    office = Office(store, Triage.load())
    office.config.recluster_apart_from = 0
    for k, r in enumerate(corpus.sample(6, random_state=7).itertuples()):
        office.intake.submit(Intake(text=r.text, title=r.title, submitter=f"m{k}"), auto_recluster=False)
    import triage.apart as apart_mod

    monkeypatch.setattr(apart_mod, "run_apart", lambda *a, **kw: pytest.fail("no child can read this store"))
    index, upto = office.index.build()
    assert index is not None and sum(index.count) == 6 and upto == 6
    assert office.reclustering.run(None)["messages"] == 6


def test_on_postgresql_the_child_reads_the_store_itself(tmp_path, corpus, monkeypatch) -> None:
    """The child opens its own connection to the worker's PostgreSQL store: the same index as one
    built in the worker, and a re-clustering that runs there and writes back here."""
    import numpy as np

    from service.runtime import Runtime, Settings
    from triage.office.common import Intake
    from triage.store.database import AuditEvent

    from .conftest import _drop_postgres, _postgres_url

    url = _postgres_url()
    if url is None:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (database test): PostgreSQL tests skipped")
    rt = Runtime(Settings(database_url=url, home=str(tmp_path), recluster_every=10_000, recluster_quiet_s=0))
    try:
        office = rt.office
        for k, r in enumerate(corpus.sample(30, random_state=11).itertuples()):
            office.intake.submit(Intake(text=r.text, title=r.title, submitter=f"p{k}"), auto_recluster=False)
        out_of_reach = _decide_some(office)
        here, upto = office.index.build()
        office.config.recluster_apart_from = 0
        calls = _spy_run_apart(monkeypatch)
        there, upto2 = office.index.build()
        assert calls == ["index_from_store_apart", "ok"] and upto2 == upto
        assert there.ids == here.ids and there.count == here.count and sum(there.count) < 30
        np.testing.assert_array_equal(there.E, here.E)
        assert office.clustering.recluster()["messages"] == 30 - out_of_reach
        with office.store.session() as s:
            audit = s.execute(select(AuditEvent).where(AuditEvent.action == "recluster")).scalars().all()[-1]
        assert audit.detail["apart"] is True and calls[-2:] == ["recluster_from_store_apart", "ok"]
    finally:
        rt.close()
        rt.office.store.engine.dispose()
        _drop_postgres(url)
