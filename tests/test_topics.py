import numpy as np
import pandas as pd
import pytest

from triage.embed.encoders import get_encoder
from triage.text.places import PlaceExtractor
from triage.text.normalise import clean, tokens
from triage.topics.builder import TopicBuilder, match_ids, make_label


def frame(rows):
    px = PlaceExtractor()
    out = []
    for i, r in enumerate(rows):
        text = clean(r["text"]).text
        ps = px.extract(text)
        out.append({"id": r.get("id", f"m{i}"), "text": text, "tokens": " ".join(tokens(text)),
                    "submitted_at": pd.Timestamp(r.get("at", "2026-10-01")), "channel": r.get("channel", "网上表单"),
                    "submitter": r.get("who", f"u{i}"), "support": r.get("support", 0), "scope": r.get("scope", "group"),
                    "domain": r.get("domain", "城乡建设"), "places": [p.name for p in ps],
                    "place": px.primary(ps).name if ps else None})
    return pd.DataFrame(out)


LAMPS = [
    "北辰社区3栋楼道灯坏了一个月没人修，老人晚上摸黑上下楼",
    "北辰社区3栋的楼道灯还是不亮，物业推社区社区推物业",
    "北辰社区老楼楼道灯坏了好久了，建议统一换成声控灯",
]
BUS = [
    "上庄村到石桥镇的公交一天只有两趟，老人看病太不方便",
    "上庄村公交班次太少了，等一趟车要大半天，建议加班次",
    "俺们上庄村去镇上的公交车太少，娃儿上学没车坐",
]


def build(rows, **kw):
    f = frame(rows)
    return TopicBuilder(**kw).fit(f, get_encoder("use").encode(f["text"].tolist()))


def test_same_problem_same_place_is_one_topic_and_different_problems_are_not():
    b = build([{"text": t} for t in LAMPS] + [{"text": t, "domain": "交通运输"} for t in BUS])
    topic = b.topic_of_
    assert len({topic[f"m{i}"] for i in range(3)}) == 1
    assert len({topic[f"m{i}"] for i in range(3, 6)}) == 1
    assert topic["m0"] != topic["m3"]


def test_same_problem_at_another_place_is_another_topic():
    other = [t.replace("上庄村", "龙潭村").replace("石桥镇", "龙潭乡") for t in BUS]
    b = build([{"text": t, "domain": "交通运输"} for t in BUS + other])
    assert b.topic_of_["m0"] != b.topic_of_["m3"]


def test_identical_texts_at_two_places_that_cannot_be_one_fall_below_the_threshold_even_the_same_day():
    """The place penalty's promise, on the similarity itself: the same vectors (lexical and semantic
    1.0) plus the same-day time bonus, at two villages, score under the merge threshold."""
    import numpy as np
    import scipy.sparse as sp

    from triage.topics.cluster import Points, Similarity, SimilarityConfig
    from triage.text.places import PlaceExtractor

    cfg = SimilarityConfig()
    e = np.ones((2, 4), dtype=np.float32) / 2.0
    lex = sp.csr_matrix(np.ones((2, 3)) / np.sqrt(3))
    p = Points(e, lex, ["上庄村", "龙潭村"], np.zeros(2), mentions=[frozenset({"上庄村"}), frozenset({"龙潭村"})])
    s = Similarity(cfg, PlaceExtractor()).pairs(p, np.array([0]), np.array([1]))[0]
    assert s < cfg.threshold, s


def test_same_problem_months_apart_is_another_topic():
    rows = [{"text": t, "at": "2025-03-01"} for t in LAMPS] + [{"text": t, "at": "2025-12-01"} for t in LAMPS]
    b = build(rows)
    assert b.topic_of_["m0"] != b.topic_of_["m3"]


def test_near_duplicates_count_as_one_voice_and_campaigns_are_flagged():
    text = "强烈要求北辰社区3栋楼道灯马上修好，否则我们就一直投诉！"
    rows = [{"text": text, "who": "u1", "channel": "二维码"}, {"text": text + "！", "who": "u1", "channel": "网上表单"},
            {"text": text + "！！", "who": "u2"}, {"text": text, "who": "u2"}]
    b = build(rows)
    t = b.topics_[0]
    assert len(b.topics_) == 1 and t.size == 4 and t.voices == 1 and t.duplicates == 3
    assert t.campaign


def test_topic_is_readable_label_keywords_places_representative():
    b = build([{"text": t} for t in LAMPS])
    t = b.topics_[0]
    assert t.label.startswith("北辰社区 · ")
    assert "楼道灯" in t.keywords or "楼道" in "".join(t.keywords)
    assert t.place == "北辰社区" and t.representative in t.members


def test_topic_ids_are_stable_across_reclustering():
    rows = [{"text": t} for t in LAMPS] + [{"text": t, "domain": "交通运输"} for t in BUS]
    first = build(rows)
    previous = {t.id: t.members for t in first.topics_}
    more = rows + [{"text": "北辰社区楼道灯坏了能不能快点修", "id": "new1"}]
    f = frame(more)
    second = TopicBuilder().fit(f, get_encoder("use").encode(f["text"].tolist()), previous)
    assert second.topic_of_["m0"] == first.topic_of_["m0"]
    assert second.topic_of_["m3"] == first.topic_of_["m3"]
    assert second.topic_of_["new1"] == first.topic_of_["m0"]


def test_match_ids_gives_new_clusters_fresh_numbers():
    ids = match_ids(np.array([0, 0, 1]), ["a", "b", "c"], {"T000007": ["a", "b"]}, 0.3, "T")
    assert ids[0] == "T000007" and ids[1] == "T000008"


def test_themes_roll_up_the_same_problem_across_places():
    other = [t.replace("上庄村", "龙潭村").replace("石桥镇", "龙潭乡") for t in BUS]
    b = build([{"text": t, "domain": "交通运输"} for t in BUS + other])
    assert b.topics_[0].theme is not None
    assert b.topics_[0].theme == b.topics_[1].theme


def test_make_label_drops_filler_and_place():
    assert make_label("上庄村", "建议上庄村增加公交班次，老人出行难", ["公交", "班次"]) == "上庄村 · 增加公交班次"


def test_absorbing_stored_messages_counts_them_and_opens_unknown_topics():
    from triage.topics.builder import TopicIndex

    rows = [{"text": t} for t in LAMPS] + [{"text": t, "domain": "交通运输"} for t in BUS]
    b = build(rows)
    index = TopicIndex(b)
    enc = get_encoder("use")
    lamp = b.topic_of_["m0"]
    k = index.ids.index(lamp)
    size = index.count[k]
    m = frame([{"text": "北辰社区楼道灯又坏了", "at": "2026-10-05"}, {"text": "锦绣家园地下车库漏水严重", "at": "2026-10-06"}])
    vecs = enc.encode(m["text"].tolist())
    # a missing place arrives from pandas as NaN: it must be stored as "no place", not break scoring
    index.absorb([(lamp, m["tokens"][0], vecs[0], m["place"][0], m["submitted_at"][0], []),
                  ("T999999", m["tokens"][1], vecs[1], float("nan"), m["submitted_at"][1], [])])
    assert index.count[k] == size + 1 and index.ids[-1] == "T999999" and index.place[-1] is None
    tid, _, new = index.assign(m["text"][1], m["tokens"][1], vecs[1], None, m["submitted_at"][1])
    assert tid == "T999999" and not new


def test_absorbing_rows_together_gives_the_index_absorbing_them_one_by_one_gives():
    """absorb vectorises its rows in one call: the index must come out as with one call per row."""
    import copy

    from triage.topics.builder import TopicIndex

    rows = [{"text": t} for t in LAMPS] + [{"text": t, "domain": "交通运输"} for t in BUS]
    b = build(rows)
    together = TopicIndex(b)
    lamp = b.topic_of_["m0"]
    m = frame([{"text": t, "at": f"2026-10-0{k + 1}"} for k, t in
               enumerate(["北辰社区楼道灯又坏了", "锦绣家园地下车库漏水严重", "北辰社区路灯晚上不亮", "锦绣家园车库又漏水了"])])
    vecs = get_encoder("use").encode(m["text"].tolist())
    places = [["北辰社区"], [], [], ["锦绣家园"]]
    got = [(lamp if k % 2 == 0 else "T999999", m["tokens"][k], vecs[k], m["place"][k], m["submitted_at"][k], places[k],
            k == 3) for k in range(4)]
    one = copy.deepcopy(together)
    together.absorb(got)
    for row in got:
        one.absorb([row])
    assert together.ids == one.ids and together.place == one.place
    assert np.array_equal(together.E, one.E) and np.array_equal(together.count, one.count)
    assert np.array_equal(together.petitions, one.petitions)
    assert len(together._joined) == len(one._joined) >= 2   # rows joined known and newly opened topics
    for (k1, a), (k2, c) in zip(together._joined, one._joined):
        assert k1 == k2 and (a != c).nnz == 0
    x = frame([{"text": "北辰社区楼道灯一直不亮", "at": "2026-10-09"}])
    e = get_encoder("use").encode(x["text"].tolist())[0]
    assert (together.assign(x["text"][0], x["tokens"][0], e, None, x["submitted_at"][0])
            == one.assign(x["text"][0], x["tokens"][0], e, None, x["submitted_at"][0]))


def test_incremental_assignment_joins_the_right_topic_or_opens_a_new_one():
    from triage.topics.builder import TopicIndex

    rows = [{"text": t} for t in LAMPS] + [{"text": t, "domain": "交通运输"} for t in BUS]
    b = build(rows)
    index = TopicIndex(b)
    enc = get_encoder("use")

    def add(text, at="2026-10-05"):
        m = frame([{"text": text, "at": at}]).iloc[0]
        return index.assign(m["text"], m["tokens"], enc.encode([m["text"]])[0], m["place"], m["submitted_at"])

    tid, _, new = add("北辰社区3栋楼道灯坏了，晚上黑漆漆的")
    assert tid == b.topic_of_["m0"] and not new
    tid2, _, new2 = add("青山县第二小学门口没有红绿灯，孩子过马路很危险")
    assert new2 and tid2 not in {t.id for t in b.topics_}
    tid3, _, new3 = add("青山县第二小学门口需要装红绿灯，接孩子太危险了")
    assert tid3 == tid2 and not new3


def test_themes_are_ranked_by_the_heat_of_all_their_places(small_model_dir):
    from triage.candidates import build_candidates
    from triage.pipeline import Triage

    villages = ["上庄村", "龙潭村", "下河村"]
    rows = [{"id": f"b{v}{i}", "text": t.replace("上庄村", v), "submitted_at": "2026-10-0" + str(i + 1),
             "submitter": f"{v}{i}", "channel": "二维码"} for v in villages for i, t in enumerate(BUS)]
    rows += [{"id": f"l{i}", "text": t, "submitted_at": "2026-10-05", "submitter": f"l{i}", "channel": "网上表单"}
             for i, t in enumerate(LAMPS)]
    res = build_candidates(Triage.load(small_model_dir), pd.DataFrame(rows), ["text"], encoder=get_encoder("use"))
    assert len(res.themes) >= 1
    top = res.themes.iloc[0]
    assert top["rank"] == 1 and top["heat"] > 0 and top["submitters"] >= 6
    # the same problem at several villages rolls up into one theme (which villages share a theme
    # depends on the tiny test model's domain guesses for these one-line messages)
    assert len(set(top["places"]) & set(villages)) >= 2
    keys = list(zip(res.themes["submitters"], res.themes["heat"]))
    assert keys == sorted(keys, reverse=True)


def test_a_topic_run_is_a_list_of_stages_that_a_caller_may_change(small_model_dir):
    from triage.candidates import FROM_STORE, FROM_TEXT, Stage, build_candidates
    from triage.pipeline import Triage

    tri = Triage.load(small_model_dir)
    rows = pd.DataFrame([{"id": f"m{i}", "text": t} for i, t in enumerate(LAMPS + BUS)])
    seen: list[tuple[str, int, int]] = []
    full = build_candidates(tri, rows, ["text"], encoder=get_encoder("use"),
                            progress=lambda p: seen.append((p["stage"], p["step"], p["steps"])))
    assert [s.name for s in FROM_TEXT] == list(full.seconds) and [k for _, k, _ in seen] == list(range(1, 7))
    assert {n for _, _, n in seen} == {6} and seen[-1][0] == "主题归并"
    # a stage added (after clustering, before judging) sees what the stages before it added
    clusters: list[int] = []
    added = (*FROM_TEXT[:4], Stage("count", lambda run: clusters.append(len(run.builder.topics_))), *FROM_TEXT[4:])
    seen.clear()
    res = build_candidates(tri, rows, ["text"], encoder=get_encoder("use"), stages=added,
                           progress=lambda p: seen.append((p["stage"], p["step"], p["steps"])))
    assert clusters == [len(res.topics)] and list(res.seconds) == [s.name for s in added]
    assert seen[4] == ("count", 5, 7) and [k for _, k, _ in seen] == list(range(1, 8)) and {n for *_, n in seen} == {7}
    with pytest.raises(ValueError):   # two stages of one name would mix up their times
        build_candidates(tri, rows, ["text"], encoder=get_encoder("use"), stages=(*FROM_TEXT, FROM_TEXT[-1]))
    assert res.topics["topic_id"].tolist() == full.topics["topic_id"].tolist()
    # a stage dropped: no themes
    res = build_candidates(tri, rows, ["text"], encoder=get_encoder("use"), stages=FROM_TEXT[:5])
    assert res.themes is None and len(res.topics) == len(full.topics)
    # a re-clustering reads what intake stored instead of preparing and classifying again
    assert [s.name for s in FROM_STORE] == [s.name for s in FROM_TEXT]
    from triage.text.normalise import clean, tokens

    masked = [clean(t).text for t in rows["text"]]
    stored = full.members.assign(text=masked, tokens=[" ".join(tokens(t)) for t in masked])[["text", "tokens", "domain", "scope"]]
    corrected = next(d for d in tri.taxonomy.domain_names if d not in set(full.members["domain"]))
    stored["domain"] = corrected   # as if staff corrected every message: a new classification would undo it

    def never(*_a, **_k):
        raise AssertionError("a re-clustering must not segment or classify stored messages again")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tri, "prepare", never)
        mp.setattr(tri, "assess_frame", never)
        res = build_candidates(tri, rows, ["text"], encoder=get_encoder("use"), stored=stored)
    assert set(res.members["domain"]) == {corrected} and len(res.topics) == len(full.topics)
    with pytest.raises(ValueError):
        build_candidates(tri, rows, ["text"], encoder=get_encoder("use"), stages=FROM_STORE)   # no stored


def test_topic_building_embeds_each_message_once_and_only_its_opening(shipped_model_dir):
    from triage.candidates import build_candidates
    from triage.embed.encoders import CachedEncoder
    from triage.pipeline import Triage
    from triage.judge.principles import default_plan

    tri = Triage.load(shipped_model_dir)
    assert tri.encoder is None  # the shipped classifier is lexical: the encoder serves topic building only
    rows = [{"id": f"m{i}", "text": t} for i, t in enumerate(LAMPS + BUS)]
    enc = CachedEncoder(get_encoder("use"))
    build_candidates(tri, pd.DataFrame(rows), ["text"], encoder=enc)
    # one opening per message, plus the annual plan's reference sentences: never a text twice
    assert enc.misses <= len(rows) + len(default_plan().items)


@pytest.mark.parametrize("analyzer", ["char_wb", "word"])
def test_the_topics_tfidf_fit_equals_scikit_learns(analyzer):
    """Character n-grams are counted with array operations, words by forked workers: either way the
    matrix, the vocabulary and later transforms are scikit-learn's own, and its errors too."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from triage.topics import builder as T

    docs = [f"{w} 楼道 灯 坏了 {i}" for i, w in enumerate(["北辰", "上庄", "公交", "班次", "电梯"] * 40)]
    if analyzer == "char_wb":
        mk = lambda: TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 3), sublinear_tf=True, max_df=0.5,
                                     dtype=np.float32)
    else:
        mk = lambda: TfidfVectorizer(token_pattern=r"\S+", lowercase=False, sublinear_tf=True, max_df=0.5,
                                     dtype=np.float32)
    serial = mk()
    a = serial.fit_transform(docs)
    par = mk()
    old, T.PARALLEL_MIN_TEXTS = T.PARALLEL_MIN_TEXTS, 10
    try:
        b = T.fit_tfidf(par, docs, workers=2)
    finally:
        T.PARALLEL_MIN_TEXTS = old
    assert par.vocabulary_ == serial.vocabulary_
    assert abs(a - b).max() == 0
    if analyzer == "char_wb":   # below the forked size: each row's entries in scikit-learn's order too
        c = T.fit_tfidf(mk(), docs, workers=2)
        assert np.array_equal(c.indices, a.indices) and np.array_equal(c.data, a.data)
    assert abs(serial.transform(docs[:5]) - par.transform(docs[:5])).max() == 0
    # nothing to count; every term in more than half the documents; not a list of texts; a missing text
    for bad in (["", " "], ["楼道 灯"] * 3, "楼道 灯 坏了", ["楼道 灯", np.nan]):
        with pytest.raises(ValueError) as ours:
            T.fit_tfidf(mk(), bad)
        with pytest.raises(ValueError) as theirs:
            mk().fit_transform(bad)
        assert str(ours.value) == str(theirs.value)
    with pytest.raises(ValueError):   # scikit-learn's parameter check (an InvalidParameterError)
        T.fit_tfidf(TfidfVectorizer(analyzer=analyzer, max_df=1.5), docs)


def test_heat_counts_citizens_not_posts_with_the_boards_own_column_names(small_model_dir):
    """One person's four posts about lamps rank below three people's bus complaints (留言用户, 点赞数, 反对数)."""
    from triage.candidates import build_candidates
    from triage.pipeline import Triage

    rows = [{"留言编号": f"l{i}", "留言详情": t, "留言时间": "2026-10-05", "留言用户": "U-same", "点赞数": 0, "反对数": 0}
            for i, t in enumerate(LAMPS + [LAMPS[0] + "，还是没人管"])]
    rows += [{"留言编号": f"b{i}", "留言详情": t, "留言时间": "2026-10-05", "留言用户": f"U-{i}", "点赞数": 3, "反对数": 1}
             for i, t in enumerate(BUS)]
    res = build_candidates(Triage.load(small_model_dir), pd.DataFrame(rows), ["留言详情"], encoder=get_encoder("use"))
    lamp = res.members.loc[res.members["留言编号"] == "l0", "topic_id"].iat[0]
    bus = res.members.loc[res.members["留言编号"] == "b0", "topic_id"].iat[0]
    t = res.topics.set_index("topic_id")
    assert t.at[lamp, "submitters"] == 1 and t.at[bus, "submitters"] == 3
    assert t.at[bus, "heat"] > t.at[lamp, "heat"]
    card = res.scorecards[bus]["heat"]
    assert card["support"]["value"] == 6        # (3 likes − 1 opposition) × 3 messages


def test_people_columns_are_renamed_to_what_the_topic_stages_read():
    import argparse

    from triage.cli import _people_columns
    from triage.errors import InputFileError

    df = pd.DataFrame({"作者": ["a", "b"], "赞": [1, 2], "submitter": ["x", "y"], "text": ["甲", "乙"]})
    args = argparse.Namespace(user_col="作者", support_col="赞", oppose_col=None, time_col=None)
    out = _people_columns(df, args)
    assert list(out["submitter"]) == ["a", "b"] and list(out["support"]) == [1, 2]
    with pytest.raises(InputFileError, match="作者X"):
        _people_columns(df, argparse.Namespace(user_col="作者X", support_col=None, oppose_col=None, time_col=None))


def test_a_titled_message_is_labelled_by_its_title_without_lead_verbs_or_a_repeated_place():
    assert make_label("K9县二中", "投诉K9县二中强制补课\n正文很长……", ["补课"],
                      title="投诉K9县二中强制补课") == "K9县二中 · 强制补课"
    assert make_label("L10县金域华府", "x", [], title="L10县县金域华府居民请求尽快通自来水") == "L10县金域华府 · 居民请求尽快通自来水"
    # an untitled message still gets the clause that names the problem
    assert make_label("上庄村", "建议上庄村增加公交班次，老人出行难", ["公交", "班次"], title="") == "上庄村 · 增加公交班次"


def test_the_lexical_view_counts_a_messages_opening_twice():
    from triage.topics.builder import gist_doc

    assert gist_doc("电梯 坏了 维修 背景 历史", gist_tokens=2) == "电梯 坏了 维修 背景 历史 电梯 坏了"
    assert gist_doc("", gist_tokens=2) == ""


def test_the_index_scores_a_message_by_its_mean_similarity_to_the_members_as_average_linkage_does():
    from triage.topics.builder import TopicIndex

    b = build([{"text": t} for t in LAMPS] + [{"text": t, "domain": "交通运输"} for t in BUS])
    index = TopicIndex(b)
    lamp = index.ids.index(b.topic_of_["m0"])
    members = [i for i, m in enumerate(b.msgs_["id"]) if b.topic_of_[m] == b.topic_of_["m0"]]
    probe = frame([{"text": "北辰社区楼道灯一直不亮", "at": "2026-10-05"}]).iloc[0]
    lv = index.lexical([probe["tokens"]], [[]])[0]
    mean_dot = float(np.mean([(b.lex_[i] @ lv.T).toarray()[0, 0] for i in members]))
    assert abs(index._lex_sims(lv)[lamp] - mean_dot) < 1e-5
    # a message that joins moves the mean at once, before any fold
    joined = frame([{"text": "北辰社区的楼道灯坏了好几天", "at": "2026-10-06"}]).iloc[0]
    jv = index.lexical([joined["tokens"]], [[]])[0]
    index._join(lamp, np.zeros(index.E.shape[1], np.float32), 20000.0, jv)
    expect = (mean_dot * len(members) + float((jv @ lv.T).toarray()[0, 0])) / (len(members) + 1)
    assert abs(index._lex_sims(lv)[lamp] - expect) < 1e-5
    index._fold()
    assert abs(index._lex_sims(lv)[lamp] - expect) < 1e-5


def test_a_label_never_cuts_a_word_bound_to_its_place_nor_eats_the_first_character():
    assert make_label("A4区", "x", [], title="A4区在职教师交社保3年多") == "A4区 · 在职教师交社保3年多"
    assert make_label("E12市", "x", [], title="E12市内网吧已是无管理状态") == "E12市 · E12市内网吧已是无管理状态"


def test_the_lexical_view_keeps_what_kind_of_site_a_place_is():
    from triage.topics.builder import _strip_places

    # the name says where (长株潭), the kind says what the problem is about (城铁, not 公交车)
    assert _strip_places("长株潭 城铁 增开 车次", ["长株潭城铁"]) == "城铁 增开 车次"
    # a compound is where, not what: its name goes whole
    assert _strip_places("华邦 小区 电梯 坏 了", ["华邦小区"]) == "电梯 坏 了"


def test_the_lexical_view_takes_out_lettered_place_codes():
    from triage.text.normalise import tokens
    from triage.topics.builder import _strip_places

    # tokens are lower-cased and names are not: C市's code stayed in every C市 message's lexical
    # view and joined unrelated questions of one city (bench/real_topics.py)
    assert _strip_places("c 市 大学生 档案 存放", ["C市"]) == "市 大学生 档案 存放"
    assert _strip_places("投诉 j 市邦 装修 公司", ["J市"]) == "投诉 市邦 装修 公司"
    # a code is a place even where the place list missed it (A7县长龙街道: 县长 kept the county out)
    assert _strip_places(" ".join(tokens("A7县长龙街道托塘组安装自来水")), ["长龙街道"]) == "托塘组 安装 自来水"


def test_an_index_rebuilt_without_descriptions_is_the_same_index():
    # the service rebuilds its index from the stored membership with describe=False (members and
    # places only); it must assign exactly as an index from the fully described topics would
    from triage.topics.builder import TopicIndex

    rows = [{"text": t} for t in LAMPS] + [{"text": t, "domain": "交通运输"} for t in BUS]
    f = frame(rows)
    emb = get_encoder("use").encode(f["text"].tolist())
    full = TopicBuilder().fit(f, emb)
    labels = np.array([full.topics_.index(next(t for t in full.topics_ if m in t.members)) for m in f["id"]])
    previous = {t.id: t.members for t in full.topics_}
    light = TopicBuilder().fit(f, emb, previous, labels=labels, describe=False)
    assert light.themes_ == [] and all(t.label == "" for t in light.topics_)
    a, b = TopicIndex(full), TopicIndex(light)
    assert a.ids == b.ids and a.count == b.count and a.place == b.place and a.mentions == b.mentions
    assert np.allclose(a.E[:len(a.ids)], b.E[:len(b.ids)]) and (a.L != b.L).nnz == 0


def test_two_individual_petitions_clear_a_higher_bar_than_group_issues_in_batch_and_live():
    # my pension, my purchase permit: two petitions share a topic when they ask the same thing, not
    # because they share a policy's words; the batch clustering and the live index pay the same
    import copy

    from triage.topics.builder import TopicIndex

    rows = ([{"text": t} for t in LAMPS]
            + [{"text": t, "domain": "交通运输", "scope": "individual"} for t in BUS])
    b = build(rows)
    p, sim = b.points_, b.sim_
    cost = sim.cfg.petition_pair
    assert cost > 0 and p.petition.tolist() == [False] * 3 + [True] * 3
    i, j = np.array([0, 0, 3, 4]), np.array([1, 3, 4, 5])   # group-group, group-petition, two petition pairs
    plain = copy.copy(p)
    plain.petition = None
    assert np.allclose(sim.pairs(plain, i, j) - sim.pairs(p, i, j), [0, 0, cost, cost])
    full = sim.matrix(p, np.arange(6))
    assert np.allclose(full[i, j], sim.pairs(p, i, j), atol=1e-5)

    index = TopicIndex(b)
    bus = index.ids.index(b.topic_of_["m3"])
    assert index.petitions[bus] == 3 and index.count[bus] == 3
    probe = frame([{"text": "上庄村的公交车太少了，我家老人去镇上看病不方便", "at": "2026-10-02"}]).iloc[0]
    args = (probe["text"], probe["tokens"], get_encoder("use").encode([probe["text"]])[0], probe["place"],
            probe["submitted_at"], probe["places"])
    _, as_group, _ = copy.deepcopy(index).assign(*args)
    live = copy.deepcopy(index)
    tid, as_petition, new = live.assign(*args, petition=True)
    assert abs((as_group - as_petition) - cost) < 1e-6
    if not new:   # joined: the topic's share of petitions is kept for the next message
        k = live.ids.index(tid)
        assert live.petitions[k] == 4 and live._pshare[k] == 1.0


def test_absorbed_stored_petitions_count_towards_their_topics_share():
    from triage.topics.builder import TopicIndex

    b = build([{"text": t} for t in LAMPS] + [{"text": t, "domain": "交通运输", "scope": "individual"} for t in BUS])
    index = TopicIndex(b)
    lamp = index.ids.index(b.topic_of_["m0"])
    f = frame([{"text": "北辰社区楼道灯一直不亮，我家老人摔了一跤"}]).iloc[0]
    emb = get_encoder("use").encode([f["text"]])[0]
    grown = [(f"T{900 + k:06d}", f["tokens"], emb, f["place"], f["submitted_at"], f["places"], True) for k in range(70)]
    index.absorb([(index.ids[lamp], f["tokens"], emb, f["place"], f["submitted_at"], f["places"], True)] + grown)
    assert index.petitions[lamp] == 1 and index.count[lamp] == 4 and abs(index._pshare[lamp] - 0.25) < 1e-9
    # new topics past the buffers' first size keep their share (rows without the element: no petition)
    assert all(index._pshare[index.ids.index(t[0])] == 1.0 for t in grown)
    index.absorb([(index.ids[lamp], f["tokens"], emb, f["place"], f["submitted_at"], f["places"])])
    assert index.petitions[lamp] == 1 and abs(index._pshare[lamp] - 0.2) < 1e-9


def test_a_place_leaves_a_label_as_the_pattern_took_it_out():
    """make_label takes a place and the words hanging on it out without compiling a pattern per place:
    the same text as the regular expression it replaced, on random texts built from those words."""
    import random
    import re

    from triage.topics.builder import _drop_place

    def pattern(text: str, place: str) -> str:
        return re.sub(rf"(?:住在|位于|家住|在){re.escape(place)}(?:的|这边|那边|那个|这个|里)?|{re.escape(place)}"
                      r"(?:的|这边|那边|那个|这个)?", "", text)

    rng = random.Random(7)
    pieces = list("住在位于家的这边那个里市区.*(") + ["在", "住在", "这个", "那边"]
    for _ in range(20000):
        place = "".join(rng.choice(["X", "市", "区", ".", "*", "(", "X市", "在", "的"]) for _ in range(rng.randint(1, 3)))
        text = "".join(rng.choice(pieces + [place, place]) for _ in range(rng.randint(0, 14)))
        assert _drop_place(text, place) == pattern(text, place), (text, place)
    assert _drop_place("上庄村的路灯", "") == "上庄村的路灯"


def test_candidate_search_in_threads_finds_what_one_thread_finds():
    import scipy.sparse as sp

    from triage.topics.cluster import scored_candidates

    rng = np.random.default_rng(3)
    emb = rng.normal(size=(700, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    lex = sp.random(700, 300, density=0.05, format="csr", random_state=4, dtype=np.float32)
    blocks = rng.choice(["a", "b", "c"], size=700).tolist()
    for bl in (None, blocks):
        one = scored_candidates(emb, lex, 5, 3, bl, chunk=64, threads=1)
        two = scored_candidates(emb, lex, 5, 3, bl, chunk=64, threads=2)
        for x, y in zip(one, two):
            assert np.array_equal(x, y)
