import pytest

from tests.conftest import valid_id
from triage.text.normalise import clean, id_checksum_ok, luhn_ok, mask_pii, normalize, segment, tokens, unmask


def test_traditional_script_becomes_simplified():
    assert normalize("這個社區的電梯壞了，請儘快維修") == "这个社区的电梯坏了,请尽快维修"


def test_full_width_digits_and_letters_become_half_width():
    assert normalize("ＡＰＰ打不开，１２３４５热线") == "APP打不开,12345热线"


def test_html_residue_and_whitespace_are_cleaned():
    assert normalize("<p>路灯&nbsp;坏了</p><br/>\t\t请修  ") == "路灯 坏了\n请修"


def test_normalize_is_idempotent_on_escaped_markup():
    s = "a&amp;lt;b&amp;gt;c &lt;script&gt;x"
    assert normalize(normalize(s)) == normalize(s)


def test_normalize_accepts_non_strings():
    assert normalize(None) == ""
    assert normalize(12345) == "12345"


@pytest.mark.parametrize("raw", ["13908124471", "139 0812 4471", "139-0812-4471", "+86 13908124471", "１３９０８１２４４７１"])
def test_mobile_numbers_are_masked(raw):
    m = clean(f"电话{raw}谢谢")
    assert m.text == "电话〔手机号〕谢谢"
    assert m.kinds == ["mobile"]


def test_landline_is_masked():
    assert clean("座机0837-6623145").text == "座机〔固话〕"
    assert clean("座机(010)62345678").text == "座机〔固话〕"


def test_valid_id_number_is_masked_and_invalid_one_is_not():
    good = valid_id("51010219900101123")
    bad = good[:-1] + ("1" if good[-1] != "1" else "2")
    assert id_checksum_ok(good) and not id_checksum_ok(bad)
    assert clean(f"身份证{good}").text == "身份证〔身份证号〕"
    assert "〔身份证号〕" not in clean(f"订单号{bad}").text


def test_bank_card_needs_a_valid_luhn_digit():
    card = "6222021234567890128"
    assert luhn_ok(card)
    assert clean(f"卡号 {card}").text == "卡号 〔银行卡号〕"
    assert clean("金额 1234567890123456").text == "金额 1234567890123456"


def test_email_and_plate_are_masked():
    assert clean("邮箱 li.ming@example.com").text == "邮箱 〔邮箱〕"
    assert clean("车牌川J·5A821停在消防通道").text == "车牌〔车牌号〕停在消防通道"


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("我叫王秀英，住北辰社区", "我叫〔姓名〕,住北辰社区"),
        ("联系人：欧阳娜娜", "联系人:〔姓名〕"),
        ("本人张伟是退休职工", "本人〔姓名〕是退休职工"),
        ("本人今年七十岁了", "本人今年七十岁了"),
        ("我是一名乡村教师", "我是一名乡村教师"),
    ],
)
def test_names_after_trigger_words(raw, expected):
    assert clean(raw).text == expected


def test_unmask_restores_the_original():
    raw = "我叫李建国，电话13908124471，邮箱 a@b.cn，座机0837-6623145"
    m = clean(raw)
    assert "13908124471" not in m.text and "李建国" not in m.text
    assert unmask(m) == normalize(raw)


def test_masking_is_idempotent():
    m = clean("我叫王秀英 13908124471")
    assert mask_pii(m.text).text == m.text


def test_segmentation_keeps_every_character_and_uses_the_user_dictionary():
    s = "建议老旧小区改造时统一加装电梯"
    assert "".join(segment(s)) == s
    assert "老旧小区改造" in segment(s)
    assert "加装电梯" in segment(s) or "电梯" in segment(s)


def test_a_lettered_place_code_is_one_word_and_never_glues_to_its_neighbour():
    # public boards write every county as a code: jieba read A7县长龙街道 as "a7 县长 龙 街道"
    # (a county head) and A7县楚龙西路 as "a7 县楚龙 西路"
    for s in ["A7县长龙街道长龙村村民希望尽快解决建房问题", "A7县楚龙西路加宽请求", "〔姓名〕书记您好,C市A5区"]:
        assert "".join(segment(s)) == s
    assert tokens("A7县长龙街道长龙村")[:2] == ["a7县", "长龙"]
    assert "县长" not in tokens("A7县长龙街道长龙村")
    assert tokens("A7县楚龙西路加宽")[:2] == ["a7县", "楚龙"]
    assert tokens("投诉K10县搬迁项目")[1] == "k10县"
    # a letter before 区 is a zone of a compound (B区3栋), as places.py reads it, and letters inside
    # a longer word are no code
    assert "b区" not in tokens("小区B区3栋漏水") and "p区" not in tokens("VIP区")
    # nor where the unit begins another word (IT市场, S省钱, A5区域), nor inside a Latin word
    assert "市场" in tokens("IT市场很乱") and "省钱" in tokens("S省钱") and "区域" in tokens("A5区域")
    assert "fi市" not in tokens("Wi-Fi市")


def test_tokens_drop_stopwords_and_punctuation_but_keep_placeholders():
    toks = tokens("您好！我叫〔姓名〕，门口的路灯坏了。")
    assert "路灯" in toks
    assert "〔姓名〕" in toks
    assert "！" not in toks and "您好" not in toks


def test_excel_carriage_return_residue_becomes_a_line_break():
    from triage.text.normalise import normalize

    assert normalize("尊敬的领导：_x000D_您好！_x000d__x000D_路灯坏了") == "尊敬的领导:\n您好!\n路灯坏了"
    assert normalize("编号_x0041_不是控制字符") == "编号_x0041_不是控制字符"


@pytest.mark.parametrize("raw", ["_x\u200b000D_", "_x000D\ufeff_", "_x&zwj;000D_", "&am\u200bp;", "&am&#8203;p;"])
def test_an_escape_rebuilt_by_removing_an_invisible_character_is_decoded_once_and_for_all(raw):
    from triage.text.normalise import normalize

    once = normalize(raw)
    assert normalize(once) == once


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("王大爷说路灯坏了", "〔姓名〕大爷说路灯坏了"),
        ("尊敬的胡书记:您好!", "尊敬的〔姓名〕书记:您好!"),
        ("张主任不作为，高书记和李局长也不管", "〔姓名〕主任不作为,〔姓名〕书记和〔姓名〕局长也不管"),
        ("居民赵小红多次反映", "居民〔姓名〕多次反映"),
        # a title inside a word, or after a preposition, is no name
        ("公安局局长说学校校长和各位老师", "公安局局长说学校校长和各位老师"),
        ("向县长反映,市长热线", "向县长反映,市长热线"),
    ],
)
def test_a_surname_with_a_title_and_names_of_the_people_a_message_is_about(raw, expected):
    assert clean(raw).text == expected


def test_an_id_number_after_its_context_word_is_masked_even_mistyped():
    good = valid_id("43010219900101123")
    wrong_digit = good[:-1] + ("1" if good[-1] != "1" else "2")
    for raw in (f"身份证号{wrong_digit}", f"身份证号码:{good[:-1]}", f"证件号 {good[:10]} {good[10:]}"):
        m = clean(raw)
        assert "〔身份证号〕" in m.text and not any(c.isdigit() for c in m.text), m.text
        assert unmask(m) == normalize(raw)


def test_unmask_restores_names_found_two_ways_in_their_own_order():
    for raw in ("我叫张三,找王书记", "王大爷说,我叫李四", "本人张伟是退休职工,胡书记您好"):
        m = clean(raw)
        assert m.text.count("〔姓名〕") == 2
        assert unmask(m) == normalize(raw)


def test_unmask_restores_id_numbers_found_two_ways_in_their_own_order():
    good = valid_id("43010219900101123")
    bad = good[:-1] + ("1" if good[-1] != "1" else "2")
    for raw in (f"A {good} 身份证号 {bad}", f"身份证号{bad},另一人{good}"):
        m = clean(raw)
        assert m.text.count("〔身份证号〕") == 2 and unmask(m) == normalize(raw)


@pytest.mark.parametrize("mark", ["\u202e", "\u202d", "\u202a", "\u202b", "\u202c", "\u2066", "\u2067", "\u2068",
                                  "\u2069", "\u200e", "\u200f", "\u061c"])
def test_bidirectional_controls_are_removed_so_staff_read_what_was_written(mark):
    # a right-to-left override would show 路灯坏了 reversed on the review page
    assert normalize(f"北辰社区{mark}路灯坏了{mark}") == "北辰社区路灯坏了"


@pytest.mark.parametrize("text, name", [
    ("找了张伟军协调，他说不归他管", "张伟军"),            # a full name in no trigger context
    ("邻居王大明在楼道堆放杂物", "王大明"),
    ("其余的钱交到王伟军手里", "王伟军"),                # the NER stops after 王伟; jieba's unknown word completes it
    ("控告人张义家按审计规定将建筑款上交", "张义家"),      # a name ending in 家 (not a landform + 家)
    ("法院判决支持陈的诉讼请求", "陈"),                  # a person referred to by surname alone
])
def test_a_name_in_no_trigger_context_is_found_by_the_ner(text, name):
    m = clean(text)
    assert name not in m.text and "〔姓名〕" in m.text
    assert ("name", name) in m.found and unmask(m) == normalize(text)


@pytest.mark.parametrize("text", ["北辰社区3栋楼道灯坏了", "建议在黄花镇修一座桥", "陈家湾村的路烂了",
                                  "侯家塘的下水道堵了", "吴家坡的路坑坑洼洼", "联系电话打不通已经3天了",
                                  "张家界的景区门票太贵", "周末去王府井逛街", "我们向县长反映过",
                                  # real over-masks that reached topic labels: a landform + 家 village,
                                  # two words across a trigger's span, a lone character ending a word
                                  "B2区谭塅家公交停靠站相关问题", "反映E市杨垅家交通现状存隐患",
                                  "小区业主严重受到大货车噪音影响", "给本人解决属于自己的权利", "向您叫屈",
                                  "5.6亩责任田一起买下"])
def test_places_and_plain_words_are_not_masked_as_people(text):
    assert clean(text).text == normalize(text)


@pytest.mark.parametrize("text, hidden, kept", [
    ("希望易书记体察民情", "易", "书记"),                # a surname after a verb, not inside a word
    ("希望任书记重视此事", "任", "书记"),                # 任 is a surname too (电力局任局长 is the verb)
    ("我们的邓副镇长不但没有组织", "邓", "副镇长"),       # 副 + title
    ("同时开庭的还有一户姓李的", "李", "姓"),             # 姓 + surname standing for a person
    ("取现金后交给王伟军和王明正。", "王明正", "交给"),    # LAC stops after 王明: the third character
    ("尊敬的贺局长：您好", "贺", "局长"),                # LAC's 贺局: the title stays readable
])
def test_surnames_with_titles_and_cut_names_are_masked_whole(text, hidden, kept):
    m = clean(text)
    assert ("name", hidden) in m.found and kept in m.text and unmask(m) == normalize(text)


@pytest.mark.parametrize("text", ["他在那里当南郭先生充数", "你在电力局任局长也有几年了", "安排楚梅律师事务所的律师"])
def test_words_and_firms_that_look_like_a_titled_surname_are_not_names(text):
    assert clean(text).text == normalize(text)


def test_the_ner_reads_only_clauses_where_a_name_may_be():
    from triage.text.names import _name_like

    assert _name_like("路灯坏了一个月没人修") is None          # no surname character at all
    assert _name_like("小区的绿化带被占用了") is None            # surname characters, but only inside known words
    assert _name_like("找了张伟军协调") is not None


@pytest.mark.parametrize("text, kind, value", [
    ("驾驶车牌号为楚AP3B87的轿车", "plate", "楚AP3B87"),           # the real files' anonymised province
    ("驾驶牌照为LWS577的货车", "plate", "LWS577"),                # no province at all: the context says plate
    ("有事加qq30748522联系", "other_contact", "30748522"),
    ("邮箱:TXH*****@163.com", "email", "TXH*****@163.com"),
    ("电话:177****5612", "mobile", "177****5612"),                # starred, right after 电话
    ("客服热线:400-0745-333", "landline", "400-0745-333"),
    ("医院电话:0746—6222903", "landline", "0746—6222903"),         # a full-width dash
    ("工行卡号:621226", "bank_card", "621226"),                     # short after 卡号: fail closed
    ("院内电话:68469280000-00000000", "landline", "6846928"),       # a number glued to the stand-in
])
def test_numbers_found_on_the_real_number_sample_are_masked(text, kind, value):
    m = clean(text)
    assert (kind, value) in m.found and value not in m.text and unmask(m) == normalize(text)


@pytest.mark.parametrize("text", ["联系电话:0000-00000000", "电话:0000000", "卡号0000-000000002014"])
def test_the_organisers_stand_ins_are_left_as_they_are(text):
    assert clean(text).text == normalize(text) and not clean(text).found


def test_each_number_of_a_list_after_a_phone_word_is_masked():
    m = clean("电话:0000000、4380199、4380307")
    assert m.text == "电话:0000000、〔固话〕、〔固话〕" and unmask(m) == "电话:0000000、4380199、4380307"


@pytest.mark.parametrize("text, kind, value", [
    ("退款请打到银行卡6222020200112233445", "bank_card", "6222020200112233445"),   # fails Luhn: context wins
    ("卡号：6222 0202 0011 2233 445", "bank_card", "6222 0202 0011 2233 445"),
    ("我的电话1369876543，少打了一位", "mobile", "1369876543"),                     # a digit short
    ("家里电话是8888888", "landline", "8888888"),
])
def test_a_number_after_an_identifying_context_is_masked_whatever_its_checksum(text, kind, value):
    m = clean(text)
    assert value not in m.text and (kind, value) in m.found and unmask(m) == normalize(text)


def test_a_long_number_without_context_that_fails_its_checksum_stays(text="订单号1234567890123456789"):
    assert clean(text).text == normalize(text)


def test_a_mobile_with_its_middle_digits_starred_is_still_masked():
    m = clean("承包人(139-****-0929)签订合同")
    assert "0929" not in m.text and m.kinds == ["mobile"] and unmask(m) == "承包人(139-****-0929)签订合同"


@pytest.mark.parametrize("text, hidden, kept", [
    ("县人民医院院长赵明华态度恶劣", "赵明华", "院长"),          # a role, then the name running on into a word
    ("副镇长孙立先来处理此事", "孙立先", "副镇长"),
    ("店主韩小莉之子在门口", "韩小莉", "店主"),
    ("尊敬的冯奇厅长：您好", "冯奇", "厅长"),                   # a full name before a title
    ("社区钱坚书记、物业经理都来了", "钱坚", "书记"),
    ("原县水务局邓在要副局长回复", "邓在要", "副局长"),
])
def test_full_names_beside_a_role_or_a_title_are_masked(text, hidden, kept):
    m = clean(text)
    assert ("name", hidden) in m.found and hidden not in m.text and kept in m.text
    assert unmask(m) == normalize(text)


def test_a_name_found_once_is_masked_wherever_it_stands_again():
    # the NER sees the first 柴文博; the second, after a full stop, stands in no context a rule knows
    text = "居民柴文博多次殴打邻居。柴文博前几年就因此被拘留过。"
    m = clean(text)
    assert "柴文博" not in m.text and m.text.count("〔姓名〕") == 2 and unmask(m) == text


@pytest.mark.parametrize("text", [
    "医生和医院都有责任",               # 和 after a role: a conjunction
    "要将惩罚落到业主和孩子头上",
    "此事可找物业负责人查证",            # 查证 is a word
    "任命为村党总支副书记",              # a body before a title, not a name
    "彭公庙村高塘组组长私自决定",         # a village group before its head
    "希望书记明察此事",
])
def test_words_and_bodies_beside_roles_and_titles_are_not_names(text):
    assert clean(text).text == normalize(text)


@pytest.mark.parametrize("text, values", [
    ("煤气没了，打6727517叫人送气", ["6727517"]),                       # dialled a few words after 打
    ("先打了一个5324999，接了说你打5325888", ["5324999", "5325888"]),
    ("医保中心(0746-8353099、8367300)", ["0746-8353099", "8367300"]),   # a list after a landline
    ("线路车辆楚ED8300,8301,8302非法运营", ["楚ED8300", "8301", "8302"]),  # a fleet after one full plate
])
def test_numbers_dialled_or_listed_are_masked_each(text, values):
    m = clean(text)
    assert all(v not in m.text for v in values) and [v for _k, v in m.found] == values
    assert unmask(m) == normalize(text)


@pytest.mark.parametrize("text", ["工资打了5000000元到账", "公司车辆楚BY1700,2014年被改装", "打造3000000平方米园区"])
def test_amounts_and_years_near_a_number_context_stay(text):
    m = clean(text)
    assert "5000000" in m.text or "2014" in m.text or "3000000" in m.text


@pytest.mark.parametrize("text", ["投诉电话0731-12345等待", "后来拨打0731-12333咨询", "QQ邮箱:0000-@qq.com"])
def test_service_codes_and_stand_in_e_mails_stay(text):
    assert clean(text).text == normalize(text)


def test_a_mobile_with_its_middle_dashed_out_is_masked():
    m = clean("办理了一个189---6777的手机号")
    assert "6777" not in m.text and m.kinds == ["mobile"]


@pytest.mark.parametrize("text, hidden", [
    ("那个李姓导游一路上说要加价", ["李"]),                  # surname + 姓 + who
    ("\n向书记：您好，我们是", ["向"]),                     # a letter's salutation: 向 is the reader's surname
    ("尊敬的润华书记：我们是本村村民", ["润华"]),            # a given name + title heading a letter
    ("请求帮助我孙子黄*明入学", ["黄*明"]),                 # a partly starred given name
    ("代表电话:宋13812345678,曹0000-00000000", ["宋", "曹"]),  # surnames heading a list of numbers
    ("由段如海、段红日、周云清等人牵头", ["段如海", "段红日", "周云清"]),
])
def test_names_in_salutations_lists_and_starred_forms_are_masked(text, hidden):
    m = clean(text)
    names = [v for k, v in m.found if k == "name"]
    assert len(names) == len(hidden) and all(h in v for h, v in zip(hidden, names))
    assert not any(h in m.text for h in hidden) and unmask(m) == normalize(text)


@pytest.mark.parametrize("text", ["我们向书记反映了情况", "尊敬的市委书记：", "原任乡长程**送情", "老百姓都说好"])
def test_prepositions_offices_and_anonymised_names_stay(text):
    assert not [v for k, v in clean(text).found if k == "name"]


def test_a_number_in_brackets_after_its_phone_word_is_masked():
    m = clean("给了管理股的电话(4219399)，工作时间")
    assert "4219399" not in m.text and m.kinds == ["landline"]


def test_the_rust_route_gives_jiebas_own_words_on_our_corpus():
    """The tokenizer takes each clause's best route from jieba-next and keeps the rest jieba's: the
    shipped model's vocabulary and every mask depend on the words being the same as jieba's own."""
    import jieba
    import pandas as pd

    from triage.config import corpora_dir
    from triage.text.lexicon import tokenizer

    tok = tokenizer()
    assert tok._route is not None, "jieba-next is a dependency: the fast route should be on"
    plain = jieba.Tokenizer()
    plain.load_userdict(str(corpora_dir() / "userdict.txt"))
    texts = pd.read_csv(corpora_dir() / "suggestions.csv", dtype=str)["text"].fillna("").head(800).tolist()
    texts += ["每月1500--1800元，A7县长龙街道3栋2单元", "Wi-Fi信号差 iPhone15 〔电话〕 E12市内网吧",
              # characters the HMM has no emission score for in some state: jieba's own Viterbi reads them
              "董塅家的汚染了覌光，爆嗮的路面", "鲲鹏饕餮魑魅魍魉", "甲乙丙丁戊己庚辛壬癸", "丈丈丈丈丈",
              "一一一一一的丈丈丈丈丈丈丈"]
    for t in texts:
        assert tok.lcut(t) == plain.lcut(t), t
        assert tok.lcut(t, HMM=False) == plain.lcut(t, HMM=False), t
        assert tok.lcut_for_search(t) == plain.lcut_for_search(t), t


def test_the_rust_viterbi_gives_jiebas_hmm_words_and_respects_forced_splits(monkeypatch):
    """The HMM's Viterbi runs in Rust where every character has jieba's emission scores; the words,
    and a word jieba was told to split (``finalseg.add_force_split``), stay jieba's."""
    from jieba import finalseg

    from triage.text import lexicon

    _, known, _ = lexicon._hmm_tables()
    # 丈丈丈丈丈 / 一一一一一: two paths with the same score (equal characters in swapped states)
    runs = ["张伟明", "李晓华来了", "刘德华张学友", "塅家", "覌光台", "abc王五123", "鲁家垅冲", "丈丈丈丈丈",
            "一一一一一一一", "王王王"]
    for run in runs:
        assert list(lexicon._hmm_words(run)) == list(finalseg.cut(run)), run
    assert any(known.issuperset(r) for r in runs) and not all(known.issuperset(r) for r in runs)
    word = next(w for w in finalseg.cut("李晓华来了") if len(w) > 1)
    monkeypatch.setattr(finalseg, "Force_Split_Words", {word})
    assert list(lexicon._hmm_words("李晓华来了")) == list(finalseg.cut("李晓华来了"))
    assert word not in list(lexicon._hmm_words("李晓华来了"))


def test_a_word_added_after_the_rust_route_is_built_is_still_found():
    """The Rust dictionary is a copy taken once: a tokenizer whose dictionary changes later goes back
    to jieba's own route rather than miss the new word."""
    import jieba

    from triage.config import corpora_dir
    from triage.text.lexicon import _routed_class

    tok = _routed_class()()
    tok.load_userdict(str(corpora_dir() / "userdict.txt"))
    assert tok.use_fast_route() and tok._route is not None
    plain = jieba.Tokenizer()
    plain.load_userdict(str(corpora_dir() / "userdict.txt"))
    for t in (tok, plain):
        t.add_word("北辰新新小区", 100000)
    assert tok._route is None
    assert tok.lcut("北辰新新小区的路灯坏了") == plain.lcut("北辰新新小区的路灯坏了")
    assert "北辰新新小区" in tok.lcut("北辰新新小区的路灯坏了")
