"""The NER read in batches (triage.text.names.tag_clauses, triage.text.normalise.clean_many) gives what one call per
clause and one text at a time give."""

from __future__ import annotations

import pandas as pd

from triage.text.names import _lac, name_clauses, tag_clauses
from triage.text.normalise import clean, clean_many, mask_pii

_MADE_UP = ["我叫王建国，住在阳光花园小区，电话13812345678", "找了张某某协调，李华说不管", "村民赵小红和刘德明反映修路问题",
            "请胡书记关注周何圆家的房子", "", "没有名字的一句话", "王明正、陈晓丽、孙立等人到场"]


def test_clauses_read_together_get_the_tags_each_gets_alone(corpus: pd.DataFrame) -> None:
    texts = [*_MADE_UP, *corpus.sample(150, random_state=11)["text"]]
    clauses = [c for t in texts for _, c, _ in name_clauses(clean(t).text)]
    clauses += ["王明", "李", "张三在北京市工作", "张三在北京市上班"]   # equal lengths in one call
    assert len(clauses) > 40
    lac = _lac()
    assert tag_clauses(clauses) == [lac.run(c) for c in clauses]
    assert tag_clauses([]) == [] and tag_clauses([""]) == [[]]


def test_many_texts_masked_together_are_masked_exactly_as_one_by_one(corpus: pd.DataFrame) -> None:
    texts = [*_MADE_UP, *corpus.sample(120, random_state=12)["text"], None, 12345]
    together = clean_many(texts)
    alone = [clean(t) for t in texts]
    assert [m.text for m in together] == [m.text for m in alone]
    assert [m.found for m in together] == [m.found for m in alone]
    assert any(k == "name" for m in together for k, _ in m.found)   # the sample does hold names
    assert mask_pii("李华说不管").text == clean_many(["李华说不管"])[0].text
