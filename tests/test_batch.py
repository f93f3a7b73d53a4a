"""Batch reclassification: resume after a kill, row accounting in every format, encodings, change
report, database tables, the Dask engine and the serial/parallel paths all giving the same output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from triage.batch.runner import BatchConfig, classify_file
from triage.errors import InputFileError, OutputFileError, ResumeError

ROOT = Path(__file__).resolve().parent.parent


def rows(corpus: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` messages drawn from the corpus, each varied a little, with their true domain."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(corpus), n)
    suffix = rng.choice(["", "。", " 谢谢", "，盼回复"], n)
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)], "title": corpus["title"].to_numpy()[idx],
                         "text": corpus["text"].to_numpy()[idx] + suffix,
                         "old_domain": corpus["domain"].to_numpy()[idx]})


def classify(src: Path, out: Path, model: Path, **kw) -> dict:
    kw.setdefault("quiet", True)
    kw.setdefault("workers", 1)
    return classify_file(str(src), str(out), config=BatchConfig(model_dir=str(model), **kw))


def test_the_batch_output_is_the_same_serial_parallel_and_in_one_chunk(tmp_path, corpus, small_model_dir):
    src = tmp_path / "in.csv"
    rows(corpus, 900).to_csv(src, index=False)
    classify(src, tmp_path / "serial.csv", small_model_dir, chunk_rows=100)
    classify(src, tmp_path / "parallel.csv", small_model_dir, chunk_rows=100, workers=2)
    classify(src, tmp_path / "one.csv", small_model_dir, chunk_rows=5000)
    serial = (tmp_path / "serial.csv").read_bytes()
    assert serial == (tmp_path / "parallel.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert not (tmp_path / "serial.csv.partial.d").exists()


def _classify_cmd(src: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "triage.cli", "classify", "--model", str(model), str(src), "-o", str(out),
            "--chunk-rows", "100", "--quiet", *extra]


#: 75 chunks of 20 for 1,500 rows: an interruption sent after the first few parts lands mid-run even
#: when this test process is scheduled late on a busy machine (with 15 chunks, a clean-clone run at
#: nice 19 saw the whole run finish before its Ctrl-C arrived)
SMALL_CHUNKS = ("--chunk-rows", "20")


def _wait_for_parts(work: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if work.exists() and len(list(work.glob("part-*.json"))) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be interrupted: {proc.stderr.read()}")
        time.sleep(0.02)
    pytest.fail("no parts appeared")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_run_killed_with_sigkill_resumes_and_writes_what_an_uninterrupted_run_writes(
        tmp_path, corpus, small_model_dir, workers):
    src = tmp_path / "in.csv"
    rows(corpus, 1500).to_csv(src, index=False)
    ref = tmp_path / "ref.csv"
    assert subprocess.run(_classify_cmd(src, ref, small_model_dir, "--workers", workers, *SMALL_CHUNKS),
                          cwd=ROOT).returncode == 0

    out = tmp_path / "out.csv"
    cmd = _classify_cmd(src, out, small_model_dir, "--workers", workers, *SMALL_CHUNKS)
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True)
    work = tmp_path / "out.csv.partial.d"
    _wait_for_parts(work, 3, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group, workers too: as a power loss would
    proc.wait()
    assert not out.exists()  # the output appears only when complete
    kept = len(list(work.glob("part-*.json")))
    assert 3 <= kept < 75

    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "resuming" in res.stderr
    assert out.read_bytes() == ref.read_bytes()
    assert json.loads(res.stdout)["total"] == 1500
    assert not work.exists()


def test_ctrl_c_leaves_a_resumable_run_and_says_so(tmp_path, corpus, small_model_dir):
    src = tmp_path / "in.csv"
    rows(corpus, 1500).to_csv(src, index=False)
    out = tmp_path / "out.csv"
    cmd = _classify_cmd(src, out, small_model_dir, "--workers", "2", *SMALL_CHUNKS)
    # A shell without job control starts background jobs with SIGINT ignored, and children inherit
    # that (Python then installs no KeyboardInterrupt handler): give the run the default, as a
    # terminal would, or a test suite run with `make test &` sees Ctrl-C ignored.
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_parts(tmp_path / "out.csv.partial.d", 2, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "rerun the same command to resume" in err and not out.exists()
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode == 0
    assert len(pd.read_csv(out)) == 1500


def test_a_work_directory_of_another_run_is_refused_unless_restarted(tmp_path, corpus, small_model_dir):
    src = tmp_path / "in.csv"
    rows(corpus, 50).to_csv(src, index=False)
    work = tmp_path / "out.csv.partial.d"
    work.mkdir()
    (work / "manifest.json").write_text(json.dumps({"format": 1, "input": {"path": "/elsewhere.csv"}}))
    with pytest.raises(ResumeError, match="--restart"):
        classify(src, tmp_path / "out.csv", small_model_dir)
    assert classify(src, tmp_path / "out.csv", small_model_dir, restart=True)["processed"] == 50


def _accounted(summary: dict) -> None:
    assert summary["processed"] + summary["failed"] + summary["skipped"] == summary["total"]


def test_csv_rows_that_cannot_be_processed_are_each_reported_once(tmp_path, small_model_dir):
    src = tmp_path / "in.csv"
    body = ("id,text\n"
            "1,小区门口路灯坏了半个月没人修\n"          # line 2 ok
            "2,多出一列,x\n"                             # line 3 wrong field count
            "3,\n"                                       # line 4 empty text
            "\n"                                         # line 5 blank: not a record
            f"4,{'很长' * 60}\n"                          # line 6 over-long (limit 100)
            "5,12345\n").encode("utf-8")                 # line 7 no words
    src.write_bytes(body + b"6,\xff\xfe broken\n" + "7,公交班次太少\n".encode("utf-8"))  # line 8 bad bytes
    s = classify(src, tmp_path / "out.csv", small_model_dir, max_chars=100, chunk_rows=3)
    assert (s["total"], s["processed"], s["failed"], s["skipped"]) == (7, 2, 5, 0)
    errors = pd.read_csv(tmp_path / "out.errors.csv")
    assert errors["line"].tolist() == [3, 4, 6, 7, 8]
    reasons = dict(zip(errors["line"], errors["reason"]))
    assert "wrong number of fields" in reasons[3] and "empty" in reasons[4]
    assert "too long" in reasons[6] and "undecodable" in reasons[8]
    out = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    assert out["id"].tolist() == ["1", "3", "4", "5", "7"]  # unreadable records have no columns to keep


def test_jsonl_rows_that_cannot_be_processed_are_each_reported_once(tmp_path, small_model_dir):
    src = tmp_path / "in.jsonl"
    lines = ['{"id": 1, "text": "小区门口路灯坏了半个月没人修"}', "{not json}", "[1, 2]", '{"id": 4}',
             '{"id": 5, "text": ""}', '{"id": 6, "text": "公交班次太少了"}']
    src.write_bytes("\n".join(lines).encode("utf-8") + b'\n{"id": 7, "text": "\xff\xfe"}\n')
    s = classify(src, tmp_path / "out.jsonl", small_model_dir, chunk_rows=2)
    _accounted(s)
    assert (s["total"], s["processed"], s["failed"]) == (7, 2, 5)
    errors = pd.read_csv(tmp_path / "out.jsonl.errors.csv")
    assert errors["line"].tolist() == [2, 3, 4, 5, 7]
    assert "text column missing" in errors["reason"][2] and "invalid JSON" in errors["reason"][0]
    out = pd.read_json(tmp_path / "out.jsonl", lines=True, dtype=False)
    assert out["id"].tolist() == ["1", "4", "5", "6"]  # read as text, like every input column


def test_xlsx_rows_that_cannot_be_processed_are_each_reported_once(tmp_path, small_model_dir):
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    for r in (["id", "text"], [1, "小区门口路灯坏了半个月没人修"], [2, None], [None, None], [3, "x" * 150],
              [4, "公交班次太少", "多余"], [5, "孩子上学没有校车"]):
        ws.append(r)
    src = tmp_path / "in.xlsx"
    wb.save(src)
    s = classify(src, tmp_path / "out.xlsx", small_model_dir, max_chars=100, chunk_rows=2)
    _accounted(s)
    assert (s["total"], s["processed"], s["failed"]) == (5, 2, 3)
    assert pd.read_csv(tmp_path / "out.xlsx.errors.csv")["line"].tolist() == [3, 5, 6]  # sheet rows
    assert pd.read_excel(tmp_path / "out.xlsx")["id"].tolist() == [1, 2, 3, 5]


def test_parquet_rows_that_cannot_be_processed_are_each_reported_once(tmp_path, small_model_dir):
    src = tmp_path / "in.parquet"
    pd.DataFrame({"id": [1, 2, 3, 4, 5], "text": ["小区门口路灯坏了半个月没人修", None, "", "长" * 150, "公交班次太少"]}
                 ).to_parquet(src)
    s = classify(src, tmp_path / "out.parquet", small_model_dir, max_chars=100, chunk_rows=2)
    _accounted(s)
    assert (s["total"], s["processed"], s["failed"]) == (5, 2, 3)
    assert pd.read_csv(tmp_path / "out.parquet.errors.csv")["line"].tolist() == [2, 3, 4]
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert out["id"].tolist() == ["1", "2", "3", "4", "5"]
    assert out["domain_confidence"].dtype == np.float64


def test_skipped_rows_are_left_as_they_were_and_counted(tmp_path, small_model_dir):
    src = tmp_path / "in.csv"
    pd.DataFrame({"id": ["a", "b", "c"], "text": ["小区门口路灯坏了半个月没人修", "公交班次太少", ""],
                  "domain": ["城乡建设", "", ""]}).to_csv(src, index=False)
    s = classify(src, tmp_path / "out.csv", small_model_dir, skip_existing="domain")
    assert (s["total"], s["processed"], s["failed"], s["skipped"]) == (3, 1, 1, 1)
    out = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    assert out["domain"][0] == "城乡建设" and out["triage_error"][0] == "" and out["domain"][1]


def test_gb18030_input_is_detected_and_read_across_chunks(tmp_path, small_model_dir):
    src = tmp_path / "gb.csv"
    # 䶮 and 𠀾 are outside GBK: only GB18030 encodes them
    text = "编号,留言内容\n" + "".join(f"{i},䶮𠀾小区门口路灯坏了第{i}天没人修\n" for i in range(30))
    src.write_bytes(text.encode("gb18030"))
    s = classify(src, tmp_path / "out.csv", small_model_dir, chunk_rows=7)
    assert s["encoding"] == "gb18030" and (s["total"], s["processed"]) == (30, 30)
    out = pd.read_csv(tmp_path / "out.csv", dtype=str)
    assert out["留言内容"][29] == "䶮𠀾小区门口路灯坏了第29天没人修"


def test_utf8_with_bom_is_read(tmp_path, small_model_dir):
    src = tmp_path / "bom.csv"
    src.write_bytes("\ufeff内容\n小区门口路灯坏了\n".encode("utf-8"))
    s = classify(src, tmp_path / "out.csv", small_model_dir)
    assert s["encoding"] == "utf-8-sig" and s["processed"] == 1


def test_the_change_report_counts_moves_with_masked_examples(tmp_path, corpus, small_model_dir):
    df = rows(corpus, 300)
    df.loc[0, "title"] = "电话13812345678 " + df.loc[0, "title"]
    df.loc[0, "old_domain"] = "不存在的领域"
    src = tmp_path / "in.csv"
    df.to_csv(src, index=False)
    s = classify(src, tmp_path / "out.csv", small_model_dir, previous={"domain": "old_domain"}, chunk_rows=50)
    ch = s["changes"]["domain"]
    assert ch["compared"] == 300 and ch["moved"] + ch["unchanged"] == 300 and ch["moved"] >= 1
    report = pd.read_csv(tmp_path / "out.changes.csv", dtype=str, keep_default_na=False)
    out = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    expected = pd.crosstab(out["old_domain"], out["domain"]).stack()
    got = {(r["from"], r["to"]): int(r["count"]) for _, r in report.iterrows()}
    assert got == {k: int(v) for k, v in expected.items() if v}
    first = report[report["from"] == "不存在的领域"].iloc[0]
    assert first["moved"] == "yes" and first["examples"].startswith("第2行：")
    assert "13812345678" not in first["examples"] and "〔手机号〕" in first["examples"]
    # moves first, the largest first
    moved = report[report["moved"] == "yes"]["count"].astype(int).tolist()
    assert moved == sorted(moved, reverse=True)


def test_an_unknown_previous_column_is_a_clear_error(tmp_path, small_model_dir):
    src = tmp_path / "in.csv"
    pd.DataFrame({"text": ["路灯坏了"]}).to_csv(src, index=False)
    with pytest.raises(InputFileError, match="原分类列 'old'"):
        classify(src, tmp_path / "out.csv", small_model_dir, previous={"domain": "old"})


@pytest.mark.parametrize("ext", [".xlsx", ".jsonl", ".parquet", ".tsv"])
def test_every_output_format_holds_the_same_rows_as_csv(tmp_path, corpus, small_model_dir, ext):
    from triage.io.tables import read_table

    src = tmp_path / "in.csv"
    rows(corpus, 120).to_csv(src, index=False)
    classify(src, tmp_path / "ref.csv", small_model_dir, chunk_rows=50)
    classify(src, tmp_path / f"out{ext}", small_model_dir, chunk_rows=50)
    ref = read_table(tmp_path / "ref.csv").frame
    got = read_table(tmp_path / f"out{ext}").frame
    assert got.columns.tolist() == ref.columns.tolist()
    for c in ("id", "domain", "scope", "committee", "department", "route_reason"):
        assert got[c].fillna("").tolist() == ref[c].fillna("").tolist()
    assert np.allclose(got["domain_confidence"].astype(float), ref["domain_confidence"].astype(float))


def test_the_local_engine_runs_without_dask_installed(tmp_path, small_model_dir):
    src = tmp_path / "in.csv"
    pd.DataFrame({"text": ["小区门口路灯坏了"] * 5}).to_csv(src, index=False)
    code = f"""
import sys
class NoDask:  # as if neither package were installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("dask", "distributed"):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, NoDask())
from triage.batch.runner import classify_file
s = classify_file({str(src)!r}, {str(tmp_path / 'o.csv')!r}, model_dir={str(small_model_dir)!r}, quiet=True)
assert s["processed"] == 5 and "triage.batch.dask_engine" not in sys.modules
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


# --------------------------------------------------------------------------- databases

def _db_roundtrip(url: str, corpus: pd.DataFrame, model: Path, tmp_path: Path) -> None:
    from sqlalchemy import create_engine, inspect

    df = rows(corpus, 230)
    df.loc[5, "text"] = ""
    df.loc[5, "title"] = None
    engine = create_engine(url)
    df.to_sql("letters", engine, index=False, if_exists="replace")
    engine.dispose()
    cfg = BatchConfig(model_dir=str(model), workers=1, quiet=True, chunk_rows=100,
                      previous={"domain": "old_domain"}, work_dir=str(tmp_path / "work"))
    from triage.batch.runner import classify_source
    from triage.io.databases import DbSource, table_target

    s = classify_source(DbSource(url, "SELECT * FROM letters ORDER BY id"),
                        table_target(url, "letters_2026", work_dir=str(tmp_path / "work")), cfg)
    assert (s["total"], s["processed"], s["failed"]) == (230, 229, 1)
    assert pd.read_csv(tmp_path / "letters_2026.errors.csv")["line"].tolist() == [df["id"].sort_values().tolist().index("r5") + 1]
    engine = create_engine(url)
    try:
        got = pd.read_sql("SELECT * FROM letters_2026 ORDER BY row_number", engine)
        assert got["id"].tolist() == sorted(df["id"])
        assert got["domain"].notna().sum() == 229 and "letters_2026__triage_partial" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    with pytest.raises(OutputFileError, match="--replace"):
        table_target(url, "letters_2026")
    table_target(url, "letters_2026", replace=True)
    with pytest.raises(InputFileError, match="ORDER BY"):
        DbSource(url, "SELECT * FROM letters")
    # what "ORDER BY a unique key" means is checked, not just that the words appear somewhere
    for q in ("SELECT * FROM (SELECT * FROM letters ORDER BY id) t", "SELECT * FROM letters ORDER BY lower(id)",
              "SELECT * FROM letters -- ORDER BY id", "SELECT * FROM letters /* ORDER BY id */"):
        with pytest.raises(InputFileError, match="ORDER BY"):
            DbSource(url, q)
    assert sum(len(c.frame) for c in DbSource(url, "SELECT * FROM letters ORDER BY id LIMIT 20")._chunks(8)) == 20
    with pytest.raises(InputFileError, match="不在查询结果"):
        list(DbSource(url, "SELECT title, text FROM letters ORDER BY id")._chunks(50))
    with pytest.raises(InputFileError, match=r"第 \d+ 行.*排序键"):   # many letters share a domain
        list(DbSource(url, "SELECT * FROM letters ORDER BY old_domain")._chunks(50))


def test_a_query_is_classified_into_a_new_sqlite_table(tmp_path, corpus, small_model_dir):
    _db_roundtrip(f"sqlite:///{tmp_path / 'office.db'}", corpus, small_model_dir, tmp_path)


def test_a_query_is_classified_into_a_new_postgresql_table(tmp_path, corpus, small_model_dir):
    from tests.conftest import _drop_postgres, _postgres_url

    url = _postgres_url()
    if url is None:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (database test): PostgreSQL batch test skipped")
    try:
        _db_roundtrip(url, corpus, small_model_dir, tmp_path)
    finally:
        from sqlalchemy import create_engine

        create_engine(url).dispose()
        _drop_postgres(url)


# --------------------------------------------------------------------------- Dask

def test_the_dask_engine_writes_what_the_local_engine_writes(tmp_path, corpus, small_model_dir):
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    src = tmp_path / "in.csv"
    rows(corpus, 600).to_csv(src, index=False)
    classify(src, tmp_path / "local.csv", small_model_dir, chunk_rows=100, previous={"domain": "old_domain"})
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        classify(src, tmp_path / "dask.csv", small_model_dir, chunk_rows=100, previous={"domain": "old_domain"},
                 engine="dask", scheduler=cluster.scheduler_address)
    assert (tmp_path / "dask.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert (tmp_path / "dask.changes.csv").read_bytes() == (tmp_path / "local.changes.csv").read_bytes()


def test_a_gb18030_file_whose_first_megabyte_is_ascii_is_still_detected(tmp_path, small_model_dir):
    src = tmp_path / "late.csv"
    head = "".join(f"{i},2019-01-01 ref-{i:08d}\n" for i in range(40000)).encode("ascii")  # > 1 MB
    assert len(head) > 1 << 20
    src.write_bytes(b"id,text\n" + head + "40000,小区门口路灯坏了没人修\n".encode("gb18030"))
    s = classify(src, tmp_path / "out.csv", small_model_dir, chunk_rows=20000)
    assert s["encoding"] == "gb18030" and s["total"] == 40001
    assert pd.read_csv(tmp_path / "out.csv", dtype=str)["text"].iloc[-1] == "小区门口路灯坏了没人修"
