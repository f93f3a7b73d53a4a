"""Intake's group commit (IntakeDesk.submit_many): several submissions in one transaction, each with
its own outcome, on SQLite and on PostgreSQL.

What a group must keep of one-at-a-time intake: the same topics and figures, a refused message that
costs only itself, a repeated Idempotency-Key answered as a replay, and all or nothing when the
database itself fails.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from tests.conftest import _drop_postgres, _postgres_url
from triage.embed.encoders import get_encoder
from triage.office.common import Conflict, Intake, InvalidRequest
from triage.office.intake import Submission
from triage.office.office import Office
from triage.pipeline import Triage
from triage.store.database import Store, Suggestion, Topic

TEXTS = ["北辰社区3栋楼道灯坏了一个月没人修", "北辰社区3栋的楼道灯还是不亮，晚上老人摔倒", "南湖公园东门的公共厕所太脏了",
         "北辰社区楼道灯坏了请尽快维修", "南湖公园东门厕所没有人打扫，气味很大", "希望在滨江小学门口增设红绿灯",
         "滨江小学门口没有红绿灯，孩子过马路危险", "北辰社区楼道灯坏了请尽快维修"]


@pytest.fixture(params=["sqlite", "postgresql"])
def make_office(request, tmp_path, small_model_dir):
    """A factory of fresh offices (each on its own empty database) of the parametrised kind."""
    made: list[tuple[Office, str | None]] = []

    def make() -> Office:
        if request.param == "sqlite":
            url, pg = f"sqlite:///{tmp_path / f'g{len(made)}.db'}", None
        else:
            url = pg = _postgres_url()
            if url is None:
                pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (database test): PostgreSQL tests skipped")
        off = Office(Store(url), Triage.load(small_model_dir), encoder=get_encoder("hashing"))
        off.config.recluster_every = 10_000
        made.append((off, pg))
        return off

    yield make
    for off, pg in made:
        off.close()
        off.store.engine.dispose()
        if pg:
            _drop_postgres(pg)


def _topics(office: Office) -> list[tuple]:
    """Every topic's membership (by text and submitter) and its figures, comparable across stores."""
    with office.store.session() as s:
        out = []
        for t in s.execute(select(Topic).order_by(Topic.id)).scalars():
            members = s.execute(select(Suggestion.text, Suggestion.submitter).where(Suggestion.topic_id == t.id)
                                .order_by(Suggestion.id)).all()
            out.append((tuple(map(tuple, members)), t.size, t.submitters, round(t.heat, 9), t.keywords, t.label,
                        t.verdict, t.domain, t.route_kind, t.place))
        return out


def test_a_group_gives_the_same_topics_and_figures_as_one_at_a_time(make_office):
    one, group = make_office(), make_office()
    items = [Intake(text=t, submitter=f"u{k % 5}") for k, t in enumerate(TEXTS)]
    for data in items:
        one.intake.submit(data, auto_recluster=False)
    outcomes = group.intake.submit_many([Submission(d) for d in items[:3]], auto_recluster=False)
    outcomes += group.intake.submit_many([Submission(d) for d in items[3:]], auto_recluster=False)
    assert all(isinstance(o, tuple) and o[2] is False for o in outcomes)
    assert len({o[0].receipt for o in outcomes}) == len(items)
    assert _topics(group) == _topics(one)
    assert any(len(t[0]) > 1 for t in _topics(group))   # the test means something: messages did join topics


def test_a_group_counts_each_submitter_once_per_topic_as_one_at_a_time_does(make_office, monkeypatch):
    """The voices of a group are looked up once for the group: a submitter who wrote to the topic
    before, or earlier in the same group, is not a new voice; anonymous messages always are. (The
    count is what a topic shows where its figures are not refreshed: above 300 members, between
    its 5 % steps; here every refresh is skipped so that the count alone is seen.)"""
    one, group = make_office(), make_office()
    for office in (one, group):
        monkeypatch.setattr(office.figures, "refresh", lambda *a, **k: None)
    lamp = [TEXTS[0], TEXTS[3], TEXTS[7], TEXTS[1], TEXTS[3]]
    # two stored messages first: below two there is no topic index, and a group's messages then each
    # open a topic (one at a time, the second message already has an index to join)
    first = [Intake(text=lamp[0], submitter="u1"), Intake(text=TEXTS[2], submitter="u3")]
    later = [Intake(text=lamp[1], submitter="u1"), Intake(text=lamp[2], submitter="u2"),
             Intake(text=lamp[3], submitter="u2"), Intake(text=lamp[4]), Intake(text=lamp[2]),
             Intake(text=TEXTS[5], submitter="u1")]
    for data in [*first, *later]:
        one.intake.submit(data, auto_recluster=False)
    for data in first:
        group.intake.submit(data, auto_recluster=False)
    outcomes = group.intake.submit_many([Submission(d) for d in later], auto_recluster=False)
    assert all(isinstance(o, tuple) for o in outcomes)
    assert _topics(group) == _topics(one)
    with group.store.session() as s:
        busiest = s.execute(select(Topic).order_by(Topic.size.desc()).limit(1)).scalar_one()
        assert busiest.size >= 4   # the lamp messages share a topic: the counting was exercised
        people = s.execute(select(Suggestion.submitter, Suggestion.id).where(Suggestion.topic_id == busiest.id)).all()
        assert busiest.submitters == len({u or f"_{i}" for u, i in people})


def test_a_topic_whose_figures_fail_costs_only_its_own_refresh(make_office, monkeypatch, caplog):
    """A group's topics are refreshed in one savepoint; where one refresh fails, the others are
    still refreshed (each in its own savepoint then), the failure is logged once, and every
    message of the group is stored."""
    one, group = make_office(), make_office()
    for office in (one, group):
        for data in (Intake(text=TEXTS[0]), Intake(text=TEXTS[2])):
            office.intake.submit(data, auto_recluster=False)
    items = [Intake(text=t) for t in (TEXTS[3], TEXTS[4], TEXTS[6])]
    for data in items:
        one.intake.submit(data, auto_recluster=False)
    real = group.figures.refresh

    def fragile(s, t, *args, **kwargs):
        real(s, t, *args, **kwargs)   # the topic's figures are changed, then the refresh fails
        if any("厕所" in (m.text or "") for m in s.execute(select(Suggestion).where(Suggestion.topic_id == t.id)).scalars()):
            raise ValueError("a bug in this topic's figures")

    monkeypatch.setattr(group.figures, "refresh", fragile)
    outcomes = group.intake.submit_many([Submission(d) for d in items], auto_recluster=False)
    assert all(isinstance(o, tuple) and o[2] is False for o in outcomes)
    failed = [r.getMessage() for r in caplog.records if "not refreshed" in r.getMessage()]
    assert len(failed) == 1
    toilet = outcomes[1][0].topic_id
    assert failed[0].split()[1] == toilet
    expected = {t[0]: t for t in _topics(one)}
    for t in _topics(group):
        if any("厕所" in text for text, _ in t[0]):
            assert t[1] == 2 and t[3] != expected[t[0]][3]   # counted, but its heat not refreshed
        else:
            assert t == expected[t[0]]                        # refreshed as one at a time does


def test_a_group_waits_for_another_worker_s_topic_counts_and_keeps_them(make_office, monkeypatch, request):
    """PostgreSQL: another worker's uncommitted group holds two topics' rows; this group waits for it,
    then adds to the counts it committed (the counts are written back as absolute values, so they
    are read under the row lock, not before it)."""
    if request.node.callspec.params["make_office"] != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite's writers take the whole file (BEGIN IMMEDIATE)")
    import threading
    import time

    import psycopg
    from sqlalchemy.engine import make_url

    office = make_office()
    for k, t in enumerate([TEXTS[0], TEXTS[2], TEXTS[3], TEXTS[4]]):
        office.intake.submit(Intake(text=t, submitter=f"u{k}"), auto_recluster=False)
    monkeypatch.setattr(office.figures, "refresh", lambda *a, **k: None)   # as above 300 members, between steps
    with office.store.session() as s:
        before = {t.id: (t.size, t.submitters, t.last_seen) for t in s.execute(select(Topic)).scalars()}
    assert len(before) == 2
    u = make_url(office.store.url)
    other = psycopg.connect(f"dbname={u.database} user={u.username or 'postgres'} host={u.host} port={u.port or 5432}")
    with other.cursor() as c:
        for tid in sorted(before):
            c.execute("UPDATE topics SET size = size + 10, submitters = submitters + 10, "
                      "last_seen = last_seen + interval '1 hour' WHERE id = %s", (tid,))
    done: dict = {}
    th = threading.Thread(target=lambda: done.setdefault("o", office.intake.submit_many(
        [Submission(Intake(text=TEXTS[3], submitter="a1")), Submission(Intake(text=TEXTS[4], submitter="a2"))],
        auto_recluster=False)))
    th.start()
    time.sleep(1.0)
    other.commit()
    other.close()
    th.join(30)
    assert all(isinstance(o, tuple) for o in done["o"])
    with office.store.session() as s:
        joined = [s.get(Suggestion, o[0].id).topic_id for o in done["o"]]
        after = {t.id: (t.size, t.submitters, t.last_seen) for t in s.execute(select(Topic)).scalars()}
    for tid, (size, people, seen) in before.items():
        n = joined.count(tid)
        assert after[tid][:2] == (size + 10 + n, people + 10 + n)
        assert after[tid][2] >= seen + dt.timedelta(hours=1)   # the other worker's time is kept


def test_a_group_and_a_staff_merge_on_another_worker_do_not_deadlock(make_office, monkeypatch, request, caplog):
    """PostgreSQL: a merge moves the lower topic's messages into the higher one (pointing them at it
    takes a key-share lock on it), then updates both topics; meanwhile a group joining both locks
    them in id order. The group's lock must not conflict with the key-share lock (FOR NO KEY UPDATE,
    as an UPDATE takes), or the two deadlock and the group waits a second to be written again."""
    if request.node.callspec.params["make_office"] != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite's writers take the whole file (BEGIN IMMEDIATE)")
    import logging
    import threading
    import time

    import triage.office.decisions as decisions
    from triage.office.common import Actor

    office = make_office()
    staff = Office(office.store, office.triage, encoder=get_encoder("hashing"))   # a second worker
    try:
        for k, t in enumerate([TEXTS[0], TEXTS[2], TEXTS[3], TEXTS[4]]):
            office.intake.submit(Intake(text=t, submitter=f"u{k}"), auto_recluster=False)
        with office.store.session() as s:
            lo, hi = sorted(s.execute(select(Topic.id)).scalars())
        monkeypatch.setattr(office.figures, "refresh", lambda *a, **k: None)
        real = decisions.submitters

        def slow(*args, **kwargs):   # the merge has moved the messages (a key-share lock on hi); it waits here
            time.sleep(1.5)
            return real(*args, **kwargs)

        monkeypatch.setattr(decisions, "submitters", slow)
        merged: dict = {}
        th = threading.Thread(target=lambda: merged.setdefault(
            "r", staff.decisions.decide(lo, "merge", Actor("staff", "staff"), "重复议题", into=hi)))
        caplog.set_level(logging.INFO)
        th.start()
        time.sleep(0.5)
        out = office.intake.submit_many([Submission(Intake(text=TEXTS[3], submitter="a1")),
                                         Submission(Intake(text=TEXTS[4], submitter="a2"))], auto_recluster=False)
        th.join(30)
        assert all(isinstance(o, tuple) for o in out) and merged["r"]["action"] == "merge"
        assert not [r for r in caplog.records if "deadlock" in r.getMessage()]
    finally:
        staff.close()


def test_a_message_for_a_topic_staff_merged_joins_the_topic_it_went_into(make_office, monkeypatch):
    """Until this worker's index is rebuilt after a merge, it still holds the merged topic: a message
    it places there joins the topic that one went into, not a topic staff no longer see."""
    from triage.office.common import Actor

    office = make_office()
    rows = [office.intake.submit(Intake(text=t, submitter=f"u{k}"), auto_recluster=False)[0]
            for k, t in enumerate([TEXTS[0], TEXTS[2], TEXTS[4]])]
    lamp, toilet = rows[0].topic_id, rows[1].topic_id
    assert lamp != toilet and rows[2].topic_id == toilet
    monkeypatch.setattr(office.index, "_rebuild", lambda gen: office.index._rebuilding.release())   # not landed yet
    office.decisions.decide(lamp, "merge", Actor("staff", "staff"), "重复议题", into=toilet)
    real, asked = office.intake._merged_target, []
    monkeypatch.setattr(office.intake, "_merged_target", lambda s, tid: asked.append(tid) or real(s, tid))
    out = office.intake.submit_many([Submission(Intake(text=TEXTS[3], submitter="u9"))], auto_recluster=False)
    assert asked == [toilet]   # the index did place it in the merged topic
    assert out[0][0].topic_id == toilet
    with office.store.session() as s:
        t = s.get(Topic, toilet)
        stored = s.execute(select(func.count()).select_from(Suggestion).where(Suggestion.topic_id == toilet)).scalar_one()
        assert t.status == "candidate" and t.size == stored == 4
        assert s.execute(select(func.count()).select_from(Suggestion).where(Suggestion.topic_id == lamp)).scalar_one() == 0
    # a chain that ends at a rejected topic leads nowhere: the message opens a topic of its own
    office.decisions.decide(toilet, "reject", Actor("staff", "staff"), "不属于协商范围")
    again = office.intake.submit_many([Submission(Intake(text=TEXTS[7], submitter="u8"))], auto_recluster=False)
    assert again[0][0].topic_id not in (lamp, toilet)


def test_a_refused_message_costs_only_itself_and_a_repeated_key_in_the_group_is_a_replay(make_office):
    office = make_office()
    outcomes = office.intake.submit_many([
        Submission(Intake(text=TEXTS[0]), idempotency_key="k1"),
        Submission(Intake(text="……")),                                  # nothing a model can read
        Submission(Intake(text=TEXTS[0]), idempotency_key="k1"),        # the same request again: a replay
        Submission(Intake(text=TEXTS[2]), idempotency_key="k1"),        # the same key, another body
        Submission(Intake(text=TEXTS[5])),
    ], auto_recluster=False)
    first, bad, again, conflict, last = outcomes
    assert first[2] is False and last[2] is False
    assert isinstance(bad, InvalidRequest) and isinstance(conflict, Conflict)
    assert again[2] is True and again[0].receipt == first[0].receipt
    with office.store.session() as s:
        assert s.execute(select(func.count()).select_from(Suggestion)).scalar_one() == 2
        assert s.execute(select(func.sum(Topic.size))).scalar_one() == 2


def test_a_key_stored_by_another_worker_meanwhile_is_answered_as_a_replay_and_the_rest_is_stored(make_office,
                                                                                                 monkeypatch):
    office = make_office()
    winner, _a, _r = office.intake.submit(Intake(text=TEXTS[0]), idempotency_key="k9", auto_recluster=False)
    # the race: this worker looked for the key before the other worker's row was committed
    real_replay, calls = office.intake._replay, []

    def late(idem, bh):
        calls.append(idem)
        return None if len(calls) == 1 else real_replay(idem, bh)

    monkeypatch.setattr(office.intake, "_replay", late)
    raced, fresh = office.intake.submit_many([Submission(Intake(text=TEXTS[0]), idempotency_key="k9"),
                                              Submission(Intake(text=TEXTS[5]))], auto_recluster=False)
    assert raced[2] is True and raced[0].receipt == winner.receipt   # the database refused it: a replay
    assert fresh[2] is False
    with office.store.session() as s:
        assert s.execute(select(func.count()).select_from(Suggestion)).scalar_one() == 2


class _Orig(Exception):
    """A driver error with a SQLSTATE, as psycopg raises them."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def test_a_database_failure_refuses_the_group_s_writes_only_and_stores_none_of_them(make_office, monkeypatch):
    office = make_office()
    first, _a, _r = office.intake.submit(Intake(text=TEXTS[5]), idempotency_key="kept", auto_recluster=False)
    real = office.intake._update_topics

    def locked(*args, **kwargs):   # after every row of the group is inserted
        raise OperationalError("UPDATE", {}, _Orig("55P03"))

    monkeypatch.setattr(office.intake, "_update_topics", locked)
    outcomes = office.intake.submit_many([Submission(Intake(text=TEXTS[5]), idempotency_key="kept"),
                                          *[Submission(Intake(text=t)) for t in TEXTS[:3]]], auto_recluster=False)
    assert outcomes[0][2] is True and outcomes[0][0].receipt == first.receipt   # settled before: still answered
    assert all(isinstance(o, OperationalError) for o in outcomes[1:])
    with office.store.session() as s:   # the savepoints were released, but nothing was committed
        assert s.execute(select(func.count()).select_from(Suggestion)).scalar_one() == 1
        assert s.execute(select(func.count()).select_from(Topic)).scalar_one() == 1
    monkeypatch.setattr(office.intake, "_update_topics", real)
    ok = office.intake.submit_many([Submission(Intake(text=t)) for t in TEXTS[:3]], auto_recluster=False)
    assert all(isinstance(o, tuple) for o in ok)   # and the retry is stored


def test_a_deadlock_writes_the_group_again(make_office, monkeypatch):
    office = make_office()
    real, calls = office.intake._update_topics, []

    def once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:   # PostgreSQL chose this group as a deadlock's victim
            raise OperationalError("UPDATE", {}, _Orig("40P01"))
        return real(*args, **kwargs)

    monkeypatch.setattr(office.intake, "_update_topics", once)
    outcomes = office.intake.submit_many([Submission(Intake(text=t)) for t in TEXTS[:4]], auto_recluster=False)
    assert len(calls) == 2 and all(isinstance(o, tuple) and not o[2] for o in outcomes)
    with office.store.session() as s:
        assert s.execute(select(func.count()).select_from(Suggestion)).scalar_one() == 4
        assert s.execute(select(func.sum(Topic.size))).scalar_one() == 4


def test_a_bug_on_one_message_costs_only_that_message(make_office, monkeypatch):
    office = make_office()
    real = office.intake.suggestion_row

    def fragile(data, *args, **kwargs):
        if "厕所" in data.text:
            raise ValueError("a bug on this message")
        return real(data, *args, **kwargs)

    monkeypatch.setattr(office.intake, "suggestion_row", fragile)
    outcomes = office.intake.submit_many([Submission(Intake(text=t)) for t in TEXTS[:5]], auto_recluster=False)
    assert [type(o).__name__ for o in outcomes] == ["tuple", "tuple", "ValueError", "tuple", "ValueError"]
    with office.store.session() as s:
        assert s.execute(select(func.count()).select_from(Suggestion)).scalar_one() == 3
        assert s.execute(select(func.sum(Topic.size))).scalar_one() == 3


def test_a_failed_group_never_hands_its_topic_ids_to_another_worker(make_office, monkeypatch):
    """A topic id rolled back and taken again elsewhere made this worker's index file later messages
    into the other worker's unrelated topic: the ids a group opens are reserved and committed first."""
    office = make_office()
    for t in TEXTS[:3]:   # the third builds this worker's index (from two stored), where the failed group's topics live on
        office.intake.submit(Intake(text=t), auto_recluster=False)
    assert office.index.latest is not None
    monkeypatch.setattr(office.intake, "_update_topics",
                        lambda *a, **k: (_ for _ in ()).throw(OperationalError("UPDATE", {}, _Orig("55P03"))))
    failed = office.intake.submit_many([Submission(Intake(text=TEXTS[5]))], auto_recluster=False)
    assert isinstance(failed[0], OperationalError)
    with office.store.session() as s:
        ghosts = set(office.index.latest.ids) - set(s.execute(select(Topic.id)).scalars())
    assert ghosts   # the failed group's new topic is in this worker's index, not in the store
    other = Office(office.store, office.triage, encoder=get_encoder("hashing"))   # a second worker
    try:
        row, _a, _r = other.intake.submit(Intake(text="城东菜市场垃圾堆积无人清理，气味难闻"), auto_recluster=False)
    finally:
        other.close()
    with office.store.session() as s:
        assert s.get(Suggestion, row.id).topic_id not in ghosts


def test_requests_that_arrive_while_a_group_is_written_form_the_next_group():
    """The batcher behind the group commit: the busier the service, the larger the groups."""
    import asyncio
    import threading

    from service.batching import MicroBatcher

    release, sizes = threading.Event(), []

    def write(items):
        sizes.append(len(items))
        release.wait(10)   # the first group is slow to write
        return [f"ok:{x}" if x != "bad" else ValueError(x) for x in items]

    batcher = MicroBatcher(write, max_texts=64)

    async def main():
        first = asyncio.create_task(batcher(["a"]))
        await asyncio.sleep(0.1)   # the first group is being written ...
        rest = [asyncio.create_task(batcher([x])) for x in ("b", "bad", "c", "d")]
        await asyncio.sleep(0.1)   # ... while four more arrive
        release.set()
        return await first, await asyncio.gather(*rest)

    try:
        first, rest = asyncio.run(main())
    finally:
        batcher.close()
    assert sizes == [1, 4]
    assert first == ["ok:a"] and [r[0] for r in rest][0::2] == ["ok:b", "ok:c"]
    assert isinstance(rest[1][0], ValueError)   # each caller gets its own outcome, the error only its own


def _office_before_a_re_clustering(make_office, monkeypatch, corpus) -> tuple[Office, dict, str]:
    """A PostgreSQL office with 40 corpus messages in their intake topics; the dict gets, once the
    re-clustering has computed its topics, the ids of the stored ones it keeps in the order its write
    reaches them (``kept``); and a libpq connection string for "another worker"."""
    from sqlalchemy.engine import make_url

    import triage.office.reclustering as rc

    office = make_office()
    for k, r in enumerate(corpus.sample(40, random_state=2).itertuples()):
        office.intake.submit(Intake(text=r.text, title=r.title, submitter=f"c{k}"), auto_recluster=False)
    seen: dict = {}
    real_snapshot = rc.cluster_snapshot

    def snapshot(*args, **kwargs):
        res = real_snapshot(*args, **kwargs)
        seen["kept"] = [t for t in res["topics"]["topic_id"] if t in res["previous"]]
        return res

    monkeypatch.setattr(rc, "cluster_snapshot", snapshot)
    u = make_url(office.store.url)
    return office, seen, f"dbname={u.database} user={u.username or 'postgres'} host={u.host} port={u.port or 5432}"


def test_a_re_clustering_write_and_a_re_ageing_do_not_deadlock(make_office, monkeypatch, request, corpus):
    """PostgreSQL: another worker's re-ageing holds a topic row (it locks rows in id order) and then
    updates a higher one; meanwhile the re-clustering writes its topics. Written in the clustering's
    order, the write held the higher row and waited for the lower: a deadlock, and PostgreSQL aborted
    one of the two. Locking the rows in id order first, the write waits and both finish."""
    if request.node.callspec.params["make_office"] != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite's writers take the whole file (BEGIN IMMEDIATE)")
    import threading
    import time

    import psycopg

    office, order, dsn = _office_before_a_re_clustering(make_office, monkeypatch, corpus)
    locked, other = threading.Event(), {}

    def reageing(low: str, high: str) -> None:
        try:
            with psycopg.connect(dsn) as c:
                c.execute("SELECT id FROM topics WHERE id = %s FOR NO KEY UPDATE", (low,))
                locked.set()
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:   # until the re-clustering waits for a row
                    with psycopg.connect(dsn, autocommit=True) as w:
                        if w.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND wait_event_type = 'Lock'").fetchone()[0]:
                            break
                    time.sleep(0.05)
                c.execute("UPDATE topics SET heat = heat WHERE id = %s", (high,))
            other["done"] = True
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            other["error"] = exc
            locked.set()

    real_hold = office.store.hold_writes

    def hold(s):
        real_hold(s)
        ids = order["kept"]
        # a topic the write reaches before a lower one: the pair a deadlock needs
        high, low = next((b, a) for i, b in enumerate(ids) for a in ids[i + 1:] if a < b)
        threading.Thread(target=reageing, args=(low, high), daemon=True).start()
        locked.wait(10)

    monkeypatch.setattr(office.store, "hold_writes", hold)
    result = office.reclustering.run(None)
    for _ in range(200):
        if other:
            break
        time.sleep(0.1)
    assert other == {"done": True}, other
    assert result["topics"] > 0 and "skipped" not in result


def test_a_staff_decision_committed_during_a_re_clustering_write_is_not_overwritten(make_office, monkeypatch,
                                                                                      request, corpus):
    """PostgreSQL: another worker's staff reroute a topic just as the re-clustering's write begins.
    The write checks for decisions under the topics' row locks, so the reroute waits for it and then
    stands; checked without locks, the reroute committed first and the write put the clustering's
    route back over it."""
    if request.node.callspec.params["make_office"] != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite's writers take the whole file (BEGIN IMMEDIATE)")
    import threading

    import psycopg

    office, seen, dsn = _office_before_a_re_clustering(make_office, monkeypatch, corpus)
    staff_thread: list[threading.Thread] = []

    def reroute() -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("UPDATE topics SET route_kind = 'department', committee = NULL, department = '住建局', "
                      "route_reason = 'staff reroute' WHERE id = %s", (seen["kept"][0],))

    real_hold = office.store.hold_writes

    def hold(s):
        real_hold(s)
        real_execute = s.execute

        def execute(statement, *args, **kwargs):   # the first statement after the hold: the decision check
            out = real_execute(statement, *args, **kwargs)
            if not staff_thread:
                staff_thread.append(threading.Thread(target=reroute, daemon=True))
                staff_thread[0].start()
                staff_thread[0].join(2)   # done at once unless a row lock makes it wait for the write
            return out

        monkeypatch.setattr(s, "execute", execute)

    monkeypatch.setattr(office.store, "hold_writes", hold)
    result = office.reclustering.run(None)
    staff_thread[0].join(20)
    assert not staff_thread[0].is_alive() and "skipped" not in result
    with office.store.session() as s:
        t = s.get(Topic, seen["kept"][0])
        assert (t.department, t.route_reason) == ("住建局", "staff reroute")
