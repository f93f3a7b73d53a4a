from triage.text.search import document, fts5_query, query_phrases, terms


def test_terms_are_character_bigrams_of_han_runs_and_lowercased_words():
    assert terms("路灯不亮") == ["路灯", "灯不", "不亮"]
    assert terms("K3县，桥") == ["k3", "县", "桥"]
    assert terms("〔手机号〕") == ["手机", "机号"]


def test_no_bigram_spans_two_texts_or_punctuation():
    assert document("小区", "路灯") == "小区 路灯"
    assert "区路" not in document("小区。路灯").split()


def test_a_query_is_one_phrase_per_run_and_a_lone_character_has_none():
    assert query_phrases("路灯不亮") == [["路灯", "灯不", "不亮"]]
    assert query_phrases("路灯 K3") == [["路灯"], ["k3"]]
    assert query_phrases("灯") is None and query_phrases("路灯 灯") == [["路灯"]]   # 灯 is only scanned for
    assert query_phrases("%_*") is None
    # only letters, digits and Han reach the MATCH expression: no FTS5 syntax can be injected
    assert fts5_query(query_phrases('路灯" OR x*') or []) == '"路灯" AND "or" AND "x"'
