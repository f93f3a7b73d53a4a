"""The real-message bench skips with its reason where ../shared/realdata is absent (a fresh clone)."""

from __future__ import annotations

import importlib.util

from tests.conftest import ROOT


def _bench():
    spec = importlib.util.spec_from_file_location("real_classify", ROOT / "bench" / "real_classify.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
