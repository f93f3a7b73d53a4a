"""The store on SQLite and on PostgreSQL: migrations, keys, sequences, the audit trail."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import func, inspect, select, text

from triage.errors import TriageError
from triage.store.database import ApiKey, AuditEvent, Store, hash_key


@pytest.fixture(scope="module")
def store(db_url: str) -> Store:
    return Store(db_url)


def test_migrations_create_every_table_at_the_newest_revision(store: Store) -> None:
    tables = set(inspect(store.engine).get_table_names())
    assert {"suggestions", "assessments", "topics", "audit_log", "api_keys", "jobs", "corrections",
            "settings", "counters", "leases", "alembic_version"} <= tables
    with store.engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0008"


def test_the_migrations_match_the_models(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from triage.store.database import Base

    def modelled(name, kind, _parents) -> bool:
        # the full-text index lives outside the ORM model, made and kept by migration 0003: SQLite's FTS5
        # table with its shadow tables, PostgreSQL's expression index
        return not (kind == "table" and name.startswith("suggestion_fts")) and name != "ix_suggestions_search"

    with store.engine.connect() as c:
        ctx = MigrationContext.configure(c, opts={"include_name": modelled})
        assert compare_metadata(ctx, Base.metadata) == []


def test_upgrading_from_0001_keeps_rows_adds_empty_embeddings_and_indexes_them_for_search(tmp_path) -> None:
    from alembic import command
    from alembic.config import Config
    from pathlib import Path

    import triage.store.database as ts

    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = Store(url, migrate=False)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(ts.__file__).with_name("migrations")))
    with old.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    with old.engine.begin() as conn:
        conn.execute(text("INSERT INTO suggestions (receipt, created_at, submitted_at, channel, title, raw_text, text,"
                          " tokens, pii_kinds, places, support, submitter, body_hash, route_kind) VALUES ('YS1',"
                          " '2026-01-01', '2026-01-01', '', '', '路灯坏了', '路灯坏了', '路灯 坏', '[]', '[]', 0, '',"
                          " '', 'none')"))
    new = Store(url)   # upgrades to the newest revision
    with new.engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0008"
        row = c.execute(text("SELECT raw_text, embedding, embedding_model, search_doc FROM suggestions")).one()
        # the rows stored before full-text search are in its index
        found = c.execute(text("SELECT rowid FROM suggestion_fts WHERE suggestion_fts MATCH '\"路灯\"'")).all()
    assert tuple(row) == ("路灯坏了", None, None, "路灯 灯坏 坏了")
    assert len(found) == 1


def test_a_lease_has_one_holder_until_released_or_stale(store: Store) -> None:
    name = f"job{threading.get_ident() % 1000}"
    assert store.claim(name, "a", 60) == 0
    assert store.claim(name, "b", 60) is None
    assert store.claim(name, "b", 60, stale=lambda h: False) is None
    store.release(name, "b", mark=9)          # not the holder: nothing changes
    assert store.claim(name, "c", 60) is None
    store.release(name, "a", mark=7)
    assert store.claim(name, "b", 60) == 7
    assert store.claim(name, "c", 60, stale=lambda h: h == "b") == 7   # b's process is gone
    assert store.claim(name, "d", 60) is None


def test_concurrent_claims_have_one_winner(store: Store) -> None:
    wins: list[str] = []

    def claim(who: str) -> None:
        if store.claim("race", who, 60) is not None:
            wins.append(who)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


def test_upgrading_twice_changes_nothing(store: Store) -> None:
    store.upgrade()
    with store.engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1


def test_keys_are_stored_hashed_and_found_by_the_key_itself(store: Store) -> None:
    row, key = store.create_key("staff", "clerk", can_unmask=True)
    with store.session() as s:
        stored = s.get(ApiKey, row.id)
        assert stored.key_hash == hash_key(key) and key not in (stored.key_hash, stored.prefix, stored.name)
    assert store.find_key(key).id == row.id
    assert store.find_key(key + "x") is None


def test_a_revoked_key_no_longer_opens_anything_and_the_revocation_is_audited(store: Store) -> None:
    row, key = store.create_key("portal")
    assert store.revoke_key(row.id, "admin#1")
    assert store.find_key(key) is None
    assert not store.revoke_key(row.id, "admin#1")
    with store.session() as s:
        n = s.execute(select(func.count()).select_from(AuditEvent)
                      .where(AuditEvent.action == "key_revoked", AuditEvent.target_id == str(row.id))).scalar_one()
    assert n == 1


def test_portal_keys_never_get_the_unmasking_permission(store: Store) -> None:
    row, _ = store.create_key("portal", can_unmask=True)
    assert row.can_unmask is False


def test_an_unknown_role_is_refused_with_the_roles_that_exist(store: Store) -> None:
    with pytest.raises(TriageError, match="portal"):
        store.create_key("superuser")


def test_the_topic_sequence_never_hands_out_a_number_twice_across_threads(store: Store) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(10):
            with store.session() as s:
                v = store.next_value(s, "seqtest")
            with lock:
                got.append(v)

    with store.session() as s:   # create the counter first: concurrent first inserts are a different race
        store.next_value(s, "seqtest")
    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 40 and len(set(got)) == 40


def test_a_failed_transaction_leaves_no_row_behind(store: Store) -> None:
    with store.session() as s:
        before = s.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    with pytest.raises(RuntimeError):
        with store.session() as s:
            s.add(AuditEvent(actor="t", action="x", target_type="t", target_id="1"))
            s.flush()
            raise RuntimeError("boom")
    with store.session() as s:
        assert s.execute(select(func.count()).select_from(AuditEvent)).scalar_one() == before


def test_settings_round_trip_json(store: Store) -> None:
    with store.session() as s:
        store.set_setting(s, "active_model", {"dir": "/m", "version": "v1"})
    assert store.get_setting("active_model") == {"dir": "/m", "version": "v1"}
    assert store.get_setting("missing", 7) == 7


def test_readiness_ping_is_true_on_a_live_database(store: Store) -> None:
    assert store.ping()


def test_the_first_number_of_a_sequence_is_taken_once_when_workers_race(store: Store) -> None:
    got: list[int] = []
    barrier = threading.Barrier(6)

    def take() -> None:
        barrier.wait()
        for _ in range(5):
            with store.session() as s:
                got.append(store.next_value(s, "race-seq"))

    threads = [threading.Thread(target=take) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 31))


def test_the_last_active_admin_key_is_never_revoked(tmp_path) -> None:
    from triage.store.database import LastAdminKey

    st = Store(f"sqlite:///{tmp_path / 'k.db'}")
    a, _ = st.create_key("admin", "a")
    b, _ = st.create_key("admin", "b")
    assert st.revoke_key(a.id, "b")
    with pytest.raises(LastAdminKey, match="最后一把"):
        st.revoke_key(b.id, "b")
    assert st.find_key(_) is not None


def test_remask_brings_tokens_and_places_up_to_date_where_the_text_is_unchanged(tmp_path) -> None:
    """Segmentation and place finding improve without the masked text changing; a re-clustering reads
    the stored tokens and places, so remask refreshes them too (it compared the text only)."""
    from triage.office.common import Intake
    from triage.office.office import Office
    from triage.pipeline import Triage
    from triage.store.database import Suggestion
    from triage.text.normalise import tokens

    office = Office(Store(f"sqlite:///{tmp_path / 'r.db'}"), Triage.load())
    row, *_ = office.intake.submit(Intake(title="A7县楚龙西路加宽请求", text="部分村民出行困难,请问A7县楚龙西路有没有拓宽计划"),
                            auto_recluster=False)
    with office.store.session() as s:   # as an older segmenter and place finder left it
        r = s.get(Suggestion, row.id)
        fresh = (r.tokens, r.place, list(r.places))
        r.tokens, r.place, r.places = "a7 县楚龙 西路 加宽 请求", "部分村", ["部分村", "楚龙西路"]
    assert office.history.remask()["changed"] == 1
    with office.store.session() as s:
        r = s.get(Suggestion, row.id)
        assert (r.tokens, r.place, list(r.places)) == fresh
        assert r.tokens.split()[:2] == tokens("A7县楚龙西路")[:2] == ["a7县", "楚龙"]
        assert "部分村" not in r.places and r.place == "楚龙西路"
    assert office.history.remask()["changed"] == 0


def test_triage_remask_reclusters_when_rows_changed_so_topics_follow_them(tmp_path, capsys) -> None:
    from triage.cli import main
    from triage.office.common import Intake
    from triage.office.office import Office
    from triage.pipeline import Triage
    from triage.store.database import Suggestion, Topic

    url = f"sqlite:///{tmp_path / 'r.db'}"
    office = Office(Store(url), Triage.load())
    row, *_ = office.intake.submit(Intake(title="A7县楚龙西路加宽请求", text="请问A7县楚龙西路有没有拓宽计划"),
                            auto_recluster=False)
    with office.store.session() as s:   # a row and its topic as an older place finder left them
        r = s.get(Suggestion, row.id)
        r.place, r.places = "部分村", ["部分村"]
        t = s.get(Topic, r.topic_id)
        t.place, t.places = "部分村", ["部分村"]
    assert main(["remask", "--database", url]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] == 1 and out["recluster"]["topics"] >= 1
    with office.store.session() as s:
        r = s.get(Suggestion, row.id)
        t = s.get(Topic, r.topic_id)
        assert t.place == "楚龙西路" and "部分村" not in (t.places or []) and "部分村" not in (t.label or "")
    assert main(["remask", "--database", url]) == 0
    assert "recluster" not in json.loads(capsys.readouterr().out)


def test_remask_brings_messages_masked_by_an_older_masker_up_to_date(tmp_path) -> None:
    """Rows stored before a masker change keep what it left in clear (here: a name in the title and
    the body) until `triage remask`: then text, tokens, search and kinds follow today's masker; the raw
    columns stay; a second run changes nothing."""
    from triage.cli import main
    from triage.office.common import Intake
    from triage.office.office import Office
    from triage.pipeline import Triage
    from triage.store.database import Suggestion
    from triage.text.normalise import MASKER_VERSION

    url = f"sqlite:///{tmp_path / 'r.db'}"
    office = Office(Store(url), Triage.load())
    row, *_ = office.intake.submit(Intake(title="王大明反映楼道灯坏了", text="邻居王大明说北辰社区3栋的楼道灯坏了"),
                            auto_recluster=False)
    with office.store.session() as s:   # as an older masker left it
        r = s.get(Suggestion, row.id)
        r.text, r.tokens, r.pii_kinds = "王大明反映楼道灯坏了\n邻居王大明说北辰社区3栋的楼道灯坏了", "王大明 楼道 灯", []
    assert main(["remask", "--database", url]) == 0
    with office.store.session() as s:
        r = s.get(Suggestion, row.id)
        assert "王大明" not in r.text and "〔姓名〕" in r.text.split("\n")[0] and "王大明" not in r.tokens
        assert set(r.pii_kinds) == {"name"} and "王大明" in r.raw_text and r.title == "王大明反映楼道灯坏了"
        assert "王大" not in r.search_doc
    assert office.store.get_setting("masker_version") == MASKER_VERSION
    assert office.history.remask()["changed"] == 0
