"""The real-message bench skips with its reason where ../shared/realdata is absent (a fresh clone)."""

from __future__ import annotations

import importlib.util

from tests.conftest import ROOT


def _load(name: str):
    """A bench script as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bench():
    return _load("real_classify")


def test_real_bench_skips_with_the_reason_when_the_real_messages_are_absent(tmp_path, monkeypatch, capsys):
    bench = _bench()
    monkeypatch.setattr(bench, "REAL", tmp_path / "no-realdata")
    assert bench.main(["--rows", "shipped"]) == 0
    assert "skipped" in capsys.readouterr().out


def test_domain_mapping_names_only_our_domains_and_their_seven_classes():
    from triage.config import load_taxonomy

    bench = _bench()
    assert set(bench.DOMAIN_MAP) <= set(load_taxonomy().domain_names)
    assert set(bench.DOMAIN_MAP.values()) == {"城乡建设", "交通运输", "教育文体", "卫生计生", "劳动和社会保障",
                                             "环境保护", "商贸旅游"}


def _topics_bench():
    return _load("real_topics")


def test_hot_issue_bench_skips_with_the_reason_when_the_real_messages_are_absent(tmp_path, monkeypatch, capsys):
    bench = _topics_bench()
    monkeypatch.setattr(bench, "REAL", tmp_path / "no-realdata")
    assert bench.main([]) == 0
    assert "skipped" in capsys.readouterr().out


def test_hot_issue_scores_count_outsiders_splits_and_where_the_most_raised_groups_rank():
    import pandas as pd

    bench = _topics_bench()
    board = pd.DataFrame({"id": list("abcdefg"), "user": ["u1", "u2", "u3", "u4", "u4", "u5", "u6"]})
    gold = pd.DataFrame({"id": list("abcde"), "group": ["g1", "g1", "g1", "g2", "g2"]})
    # g1 (3 citizens) found with one outsider; g2 (one citizen posting twice) split in two
    topic_of = {"a": "T1", "b": "T1", "c": "T1", "f": "T1", "d": "T2", "e": "T3", "g": "T4"}
    topics = pd.DataFrame({"topic_id": ["T1", "T2", "T3", "T4"], "rank": [1, 2, 3, 4],
                           "size": [4, 1, 1, 1], "submitters": [4, 1, 1, 1]})
    run = {"topics": topics, "topic_of": topic_of, "rank": {"T1": 1, "T2": 2, "T3": 3, "T4": 4},
           "seconds": 0.0, "peak_mib": None}
    s = bench.score(run, board, gold, set(board["id"]))
    assert s["per_group"]["g1"]["precision"] == 0.75 and s["per_group"]["g1"]["recall"] == 1.0
    assert s["split_groups"] == 1 and s["wrong_merges"] == 0
    assert list(s["ranks_by_submitters"]) == ["g1", "g2"]          # three citizens before one
    assert s["top10_ranks"]["g1"] == 1 and s["top20_single_message"] == 3
    assert abs(s["member_f1"] - (3 * (2 * 0.75 / 1.75) + 2 * (2 / 3)) / 5) < 1e-3


def test_live_topic_bench_skips_with_the_reason_when_the_real_messages_are_absent(tmp_path, monkeypatch, capsys):
    bench = _load("real_live_topics")
    monkeypatch.setattr(bench, "REAL", tmp_path / "no-realdata")
    assert bench.main([]) == 0
    assert "skipped" in capsys.readouterr().out


def test_personal_data_bench_skips_with_the_reason_when_the_real_messages_are_absent(tmp_path, monkeypatch, capsys):
    bench = _load("real_pii")
    monkeypatch.setattr(bench, "REAL", tmp_path / "no-realdata")
    assert bench.main([]) == 0
    assert "skipped" in capsys.readouterr().out


def test_personal_data_scores_count_a_span_only_when_every_character_is_masked():
    import pandas as pd

    bench = _load("real_pii")
    docs = {"m1": "胡书记说张三的电话13812345678", "m2": "路灯坏了"}
    gold = pd.DataFrame({"id": ["m1", "m1", "m1", "m2"], "kind": ["name", "name", "mobile", "none"],
                         "start": ["0", "4", "9", ""], "end": ["1", "6", "20", ""], "check": ["", "", "", ""]})
    # 胡 masked, 张三 half masked (counts as missed), the phone masked; one masked region is no label
    masked = {"m1": "〔姓名〕书记说〔姓名〕三的电话〔手机号〕", "m2": "〔姓名〕坏了"}
    row = bench.score("t", masked, docs, gold, {"m1": "cued", "m2": "random"}, 0.0)[0]
    assert row["name_recall"].startswith("1/2") and row["mobile_recall"].startswith("1/1")
    assert row["masked_regions"] == 4 and row["precision"] == 0.75


def test_encoder_bench_skips_with_the_reason_when_the_real_messages_are_absent(tmp_path, monkeypatch, capsys):
    bench = _load("real_encoders")
    monkeypatch.setattr(bench, "REAL", tmp_path / "no-realdata")
    assert bench.main([]) == 0
    assert "skipped" in capsys.readouterr().out


def test_place_bench_skips_with_the_reason_when_the_real_messages_are_absent(tmp_path, monkeypatch, capsys):
    bench = _load("real_places")
    monkeypatch.setattr(bench, "REAL", tmp_path / "no-realdata")
    assert bench.main([]) == 0
    assert "skipped" in capsys.readouterr().out


def test_place_scores_are_lenient_about_a_compounds_county_and_count_the_primary():
    bench = _load("real_places")
    gold = {"m1": {"K5区中央华府小区"}, "m2": {"东路村", "秦桥镇"}, "m3": set()}
    found = {"m1": ["K5区", "K5区中央华府小区"], "m2": ["东路村", "镇东路"], "m3": ["抵达学校"]}
    primary = {"m1": "K5区中央华府小区", "m2": "镇东路", "m3": "抵达学校"}
    s = bench.score(found, primary, gold)
    # found: 5 names, 3 within a labelled one (K5区 and the compound, 东路村); labelled: 3, 2 found
    assert (s["found"], s["labelled"]) == (5, 3)
    assert s["precision"] == round(3 / 5, 3) and s["recall"] == round(2 / 3, 3)
    assert s["exact_precision"] == round(2 / 5, 3) and s["exact_recall"] == round(2 / 3, 3)
    assert (s["primary_right"], s["with_primary"]) == (1, 3)


def test_segmenter_bench_skips_with_the_reason_when_the_real_messages_are_absent(tmp_path, monkeypatch, capsys):
    bench = _load("real_segmenter")
    monkeypatch.setattr(bench, "REAL", tmp_path / "no-realdata")
    assert bench.main([]) == 0
    assert "skipped" in capsys.readouterr().out
