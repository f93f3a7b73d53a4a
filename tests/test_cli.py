import json

import pandas as pd
import pytest

from triage.cli import main

from .conftest import ROOT


def _run(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_classify_keeps_columns_and_order_and_reports_bad_rows(tmp_path, small_model_dir, capsys):
    src = tmp_path / "in.csv"
    pd.DataFrame({"编号": ["a", "b", "c", "d"], "内容": ["门口路灯坏了半个月没人修", "", "12345", "孩子上学没有校车"],
                  "备注": ["x", "y", "z", "w"]}).to_csv(src, index=False)
    out = tmp_path / "out.csv"
    rc, stdout, _ = _run(capsys, "classify", "--model", str(small_model_dir), str(src), "-o", str(out), "--workers", "1")
    assert rc == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["processed"] == 2 and summary["failed"] == 2 and summary["total"] == 4
    res = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert res["编号"].tolist() == ["a", "b", "c", "d"]
    assert {"备注", "domain", "domain_confidence", "scope", "scope_confidence", "committee", "department"} <= set(res.columns)
    assert res.loc[0, "domain"] and not res.loc[1, "domain"]
    errors = pd.read_csv(tmp_path / "out.errors.csv")
    assert errors["line"].tolist() == [3, 4]
    assert not res["domain_evidence"].any()        # the fast path: asked for with --evidence only
    rc, _, _ = _run(capsys, "classify", "--model", str(small_model_dir), str(src), "-o", str(tmp_path / "ev.csv"),
                    "--workers", "1", "--evidence")
    ev = pd.read_csv(tmp_path / "ev.csv", dtype=str, keep_default_na=False)
    assert rc == 0 and ev.loc[0, "domain_evidence"] and not ev.loc[1, "domain_evidence"]
    assert ev["domain"].tolist() == res["domain"].tolist()


def test_classify_with_a_missing_text_column_says_which_columns_exist(tmp_path, small_model_dir, capsys):
    src = tmp_path / "in.csv"
    pd.DataFrame({"foo": ["路灯坏了"]}).to_csv(src, index=False)
    rc, _, err = _run(capsys, "classify", "--model", str(small_model_dir), str(src), "-o", str(tmp_path / "o.csv"),
                      "--text-col", "body")
    assert rc == 2 and "body" in err and "foo" in err


def test_classify_rejects_an_unknown_extension(tmp_path, small_model_dir, capsys):
    src = tmp_path / "in.txt"
    src.write_text("路灯坏了", encoding="utf-8")
    rc, _, err = _run(capsys, "classify", "--model", str(small_model_dir), str(src), "-o", str(tmp_path / "o.csv"))
    assert rc == 2 and "不支持的文件类型" in err


@pytest.mark.parametrize("ext", [".xlsx", ".jsonl", ".parquet"])
def test_classify_reads_and_writes_every_format(tmp_path, small_model_dir, capsys, ext):
    from triage.io.tables import read_table, write_table

    src = tmp_path / f"in{ext}"
    write_table(pd.DataFrame({"text": ["门口路灯坏了", "公交车班次太少了"], "n": ["1", "2"]}), src)
    out = tmp_path / f"out{ext}"
    rc, _, _ = _run(capsys, "classify", "--model", str(small_model_dir), str(src), "-o", str(out), "--workers", "1")
    assert rc == 0
    assert read_table(out).frame["n"].tolist() == ["1", "2"]


def test_train_accepts_an_office_own_label_set(tmp_path, small_corpus, capsys):
    coarse = {"教育": "民生", "卫生健康": "民生", "社会保障": "民生", "养老托育": "民生", "营商环境": "经济",
              "就业创业": "经济", "市场监管": "经济"}
    df = small_corpus.assign(类别=small_corpus["domain"].map(coarse).fillna("城乡"))
    data = tmp_path / "own.xlsx"
    df[["title", "text", "类别"]].to_excel(data, index=False)
    rc, stdout, _ = _run(capsys, "train", "--data", str(data), "--text-col", "text", "--label-col", "类别",
                         "--no-eval", "--out", str(tmp_path / "own"))
    assert rc == 0
    m = json.loads((tmp_path / "own" / "manifest.json").read_text(encoding="utf-8"))
    assert m["labels"]["domain"] == ["城乡", "民生", "经济"]
    rc, stdout, _ = _run(capsys, "evaluate", "--model", str(tmp_path / "own"), "--data", str(data),
                         "--text-col", "text", "--label-col", "类别")
    assert rc == 0 and json.loads(stdout)["domain"]["accuracy"] > 0.5


def test_evaluate_cv_reports_macro_f1_with_topics_held_out(tmp_path, small_corpus, capsys):
    data = tmp_path / "d.csv"
    small_corpus.to_csv(data, index=False)
    rc, stdout, _ = _run(capsys, "evaluate", "--cv", "--folds", "3", "--data", str(data), "--text-col", "text",
                         "--label-col", "domain", "--scope-col", "scope", "--group-col", "topic")
    rep = json.loads(stdout)
    assert rc == 0 and 0 <= rep["domain"]["macro_f1"] <= 1 and "per_class_f1" in rep["scope"]


def test_demo_prints_domain_scope_and_route(small_model_dir, capsys):
    rc, stdout, _ = _run(capsys, "demo", "--model", str(small_model_dir))
    assert rc == 0 and "领域" in stdout and "委员会" in stdout


def test_topics_writes_ranked_topics_members_and_themes(tmp_path, small_model_dir, capsys):
    rows = [
        ("a1", "北辰社区3栋楼道灯坏了一个月没人修，老人晚上摸黑上下楼", "2026-10-01", "u1", "网上表单"),
        ("a2", "北辰社区3栋的楼道灯还是不亮，物业推社区社区推物业", "2026-10-03", "u2", "二维码"),
        ("a3", "北辰社区老楼楼道灯坏了好久了，建议统一换成声控灯", "2026-10-06", "u3", "意见箱"),
        ("b1", "上庄村到石桥镇的公交一天只有两趟，老人看病太不方便", "2026-10-02", "u4", "网上表单"),
        ("b2", "上庄村公交班次太少了，等一趟车要大半天，建议加班次", "2026-10-04", "u5", "二维码"),
        ("c1", "我的养老金这个月少发了两百块，帮我查一下", "2026-10-05", "u6", "网上表单"),
        ("c2", "", "2026-10-05", "u7", "网上表单"),
    ]
    src = tmp_path / "msgs.csv"
    pd.DataFrame(rows, columns=["id", "text", "submitted_at", "submitter", "channel"]).to_csv(src, index=False)
    out = tmp_path / "topics.csv"
    rc, stdout, _ = _run(capsys, "topics", "--model", str(small_model_dir), str(src), "-o", str(out), "--quiet")
    assert rc == 0
    topics = pd.read_csv(out)
    members = pd.read_csv(tmp_path / "topics.members.csv", dtype=str, keep_default_na=False)
    assert topics["rank"].tolist() == list(range(1, len(topics) + 1))
    keys = list(zip(topics["submitters"], topics["heat"], topics["size"]))
    assert keys == sorted(keys, reverse=True)          # distinct citizens first, then heat
    assert {"label", "keywords", "places", "verdict", "principles", "heat_terms", "representative"} <= set(topics.columns)
    assert members["id"].tolist() == ["a1", "a2", "a3", "b1", "b2", "c1", "c2"]
    ids = dict(zip(members["id"], members["topic_id"]))
    assert ids["a1"] == ids["a2"] == ids["a3"] and ids["b1"] == ids["b2"] and ids["a1"] != ids["b1"]
    assert ids["c2"] == ""  # the empty message is reported, not clustered


def test_classify_reads_a_gbk_file_and_reports_broken_rows(tmp_path, small_model_dir, capsys):
    src = tmp_path / "gbk.csv"
    src.write_bytes("编号,留言内容\n1,小区门口路灯坏了半个月\n2,多出一列,x\n3,孩子上学没有校车\n".encode("gbk"))
    out = tmp_path / "out.xlsx"
    rc, stdout, _ = _run(capsys, "classify", "--model", str(small_model_dir), str(src), "-o", str(out), "--workers", "1")
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert rc == 0 and summary["encoding"] == "gb18030"
    assert (summary["processed"], summary["failed"], summary["total"]) == (2, 1, 3)
    assert pd.read_excel(out)["编号"].tolist() == [1, 3]
    assert pd.read_csv(tmp_path / "out.xlsx.errors.csv")["line"].tolist() == [3]


def test_keys_create_prints_the_key_as_its_last_line_and_only_its_hash_is_stored(tmp_path, capsys) -> None:
    from triage.cli import main
    from triage.store.database import Store

    url = f"sqlite:///{tmp_path / 'k.db'}"
    assert main(["keys", "--database", url, "create", "--role", "staff", "--name", "办公室"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith("tri_s_")
    row = Store(url).find_key(key)
    assert row is not None and row.role == "staff" and row.name == "办公室"
    assert key not in (tmp_path / "k.db").read_bytes().decode("latin-1")
    assert main(["keys", "--database", url, "revoke", str(row.id)]) == 0
    assert Store(url).find_key(key) is None
    assert main(["keys", "--database", url, "revoke", str(row.id)]) == 2


def test_evaluate_scores_the_department_it_is_given_and_refuses_options_it_would_ignore(tmp_path, corpus, capsys):
    """--department-col was read and thrown away; --encoder/--cache applied only with --topics."""
    petitions = corpus[corpus["department"].fillna("") != ""]
    df = pd.concat([corpus.groupby("domain").sample(8, random_state=0),
                    petitions.groupby("department").head(6)]).drop_duplicates("id")
    data = tmp_path / "d.csv"
    df.to_csv(data, index=False)
    base = ["evaluate", "--data", str(data), "--text-col", "title", "--text-col", "text", "--label-col", "domain"]
    rc, stdout, _ = _run(capsys, *base, "--cv", "--folds", "3", "--group-col", "topic", "--department-col", "department")
    rep = json.loads(stdout)
    assert rc == 0 and rep["department"]["macro_f1"] > 0 and set(rep["department"]["per_class_f1"]) <= set(
        petitions["department"])
    rc, stdout, _ = _run(capsys, *base, "--model", str(ROOT / "models" / "default"), "--department-col", "department")
    assert rc == 0 and json.loads(stdout)["department"]["accuracy"] > 0.5
    rc, _, err = _run(capsys, *base, "--cv", "--encoder", "hashing")
    assert rc == 2 and "--topics" in err


def test_alerts_run_decides_and_delivers_once_per_call(tmp_path, capsys) -> None:
    from triage.office.alerts import create_subscription
    from triage.store.database import Alert, Store, Topic

    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = Store(url)
    with store.session() as s:
        s.add(Topic(id="T000001", label="北辰社区 · 楼道灯坏了", status="candidate", heat=0.5, size=3, submitters=3))
    create_subscription(store, "clerk", None, "staff", "读者", "atom", "", "now", {}, {"heat_above": 0.4})
    assert main(["alerts", "run", "--database", url]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"created": 1, "sent": 1, "retry": 0, "failed": 0}
    assert main(["alerts", "run", "--database", url]) == 0   # a second run (cron again) finds it decided and sent
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"created": 0, "sent": 0, "retry": 0, "failed": 0}
    with store.session() as s:
        assert s.query(Alert).count() == 1
