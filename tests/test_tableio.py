import json

import pandas as pd
import pytest

from triage.errors import InputFileError
from triage.io.tables import detect_encoding, read_table, resolve_text_columns, write_table


def test_csv_in_gbk_is_detected_and_read(tmp_path):
    p = tmp_path / "gbk.csv"
    p.write_bytes("text,domain\n路灯坏了请维修,城乡建设\n公交班次太少,交通运输\n".encode("gbk"))
    t = read_table(p)
    assert t.encoding == "gb18030"
    assert t.frame["text"].tolist() == ["路灯坏了请维修", "公交班次太少"]
    assert t.lines == [2, 3]


def test_csv_with_bom_is_read(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes("\ufefftext\n你好世界\n".encode("utf-8"))
    assert read_table(p).frame.columns.tolist() == ["text"]


def test_broken_csv_rows_are_reported_with_line_numbers_and_the_rest_kept(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text('text,place\n"路灯坏了",北辰\n多了一列,北辰,多余\n"多行\n留言",南门\n公交太少,石桥\n', encoding="utf-8")
    t = read_table(p)
    assert t.frame["text"].tolist() == ["路灯坏了", "多行\n留言", "公交太少"]
    assert t.lines == [2, 4, 6]
    assert [e.line for e in t.errors] == [3]
    assert t.total_rows == 4


def test_invalid_json_lines_are_reported(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"text": "路灯坏了"}\n{not json}\n[1,2]\n{"text": "公交少", "n": 3}\n', encoding="utf-8")
    t = read_table(p)
    assert t.frame["text"].tolist() == ["路灯坏了", "公交少"]
    assert t.frame["n"].tolist()[1] == "3"
    assert [e.line for e in t.errors] == [2, 3]


def test_undecodable_bytes_fail_only_their_row(tmp_path):
    p = tmp_path / "mixed.csv"
    p.write_bytes("text\n路灯坏了\n".encode("utf-8") + b"\xff\xfe\xfa broken\n" + "公交太少\n".encode("utf-8"))
    t = read_table(p)
    assert len(t.frame) + len(t.errors) == 3
    assert "路灯坏了" in t.frame["text"].tolist()


@pytest.mark.parametrize("ext", [".xlsx", ".parquet", ".jsonl", ".csv"])
def test_every_format_round_trips(tmp_path, ext):
    df = pd.DataFrame({"text": ["路灯坏了", "公交太少"], "place": ["北辰", None]})
    p = tmp_path / f"t{ext}"
    write_table(df, p)
    t = read_table(p)
    assert t.frame["text"].tolist() == ["路灯坏了", "公交太少"]


def test_unknown_extension_is_a_clear_error(tmp_path):
    with pytest.raises(InputFileError, match="不支持的文件类型 .doc"):
        read_table(tmp_path / "x.doc")


def test_text_columns_are_detected_from_common_names():
    df = pd.DataFrame({"留言主题": ["a"], "留言详情": ["b"], "x": [1]})
    assert resolve_text_columns(df, None) == ["留言主题", "留言详情"]
    with pytest.raises(InputFileError, match="找不到文本列 body"):
        resolve_text_columns(df, ["body"])


def test_detect_encoding_prefers_utf8():
    assert detect_encoding("中文".encode("utf-8")) == "utf-8"
