import pandas as pd
import pytest

from triage.judge.principles import FAILS, FORWARD, MEETS, PROPOSE, RESEARCH, UNSUITABLE, PrincipleJudge
from triage.text.normalise import tokens
from triage.topics.builder import Topic


def topic(**kw):
    base = dict(id="T1", members=["a", "b", "c", "d", "e", "f"], size=6, voices=6, submitters=6,
                channels=["网上表单", "二维码", "委员荐题"], places=["北辰社区", "江北区"], place="北辰社区",
                group_share=1.0, domain="城乡建设")
    base.update(kw)
    return Topic(**base)


ELEVATOR = [
    "北辰社区老楼没有电梯，建议老旧小区改造时加装电梯，涉及三栋楼近两百户居民",
    "老旧小区加装电梯费用怎么分摊，低层住户不同意怎么办，希望出台政策",
    "我们北辰社区老人多，爬六楼太难了，加装电梯的事拖了两年",
]


@pytest.fixture(scope="module")
def judge():
    return PrincipleJudge()  # lexical plan matching only; the encoder adds semantics in production


def card(judge, t, texts):
    return judge.judge(t, texts, [" ".join(tokens(x)) for x in texts])


def by_name(c):
    return {p.name: p for p in c.principles}


def test_a_broad_group_issue_on_the_annual_plan_is_proposed(judge):
    c = card(judge, topic(), ELEVATOR)
    p = by_name(c)
    assert p["政治性"].verdict == MEETS and "老旧小区" in p["政治性"].evidence[0]
    assert p["前瞻性"].verdict in (MEETS, "部分符合")
    assert p["群众性"].verdict == MEETS and any("两百户" in e for e in p["群众性"].evidence)
    assert c.verdict == PROPOSE


def test_mostly_individual_petitions_are_forwarded_with_the_reason(judge):
    texts = ["我的养老金这个月少发了两百，帮我查一下", "我妈的低保停了，请帮忙恢复", "我的医保报销还没到账"]
    c = card(judge, topic(group_share=0.0, submitters=3, domain="社会保障"), texts)
    assert by_name(c)["群众性"].verdict == FAILS
    assert c.verdict == FORWARD and "个人诉求" in c.reason


def test_matters_in_litigation_are_not_for_consultation(judge):
    texts = ["开发商逾期交房，我们已经向法院起诉，判决下来了还不执行", "小区业主集体诉讼开发商，法院判决后执行难",
             "交房纠纷已进入诉讼程序，希望法院尽快执行"]
    c = card(judge, topic(), texts)
    assert by_name(c)["可行性"].verdict == FAILS
    assert c.verdict == UNSUITABLE and "诉讼" in c.reason


def test_one_citizen_saying_how_they_escalated_does_not_exclude_a_group_issue(judge):
    """Real boards are full of "已向纪委反映" and "多次报警" told as the story of a complaint: the matter
    is excluded only when most of the messages are that case, and a minority mention stays as evidence."""
    texts = ["物业公司锁电梯、停水停电，全楼老人上下楼困难", "西南物业违规锁电梯停水，业主希望县纪委查一查房产局"]
    c = card(judge, topic(), texts)   # half the messages mention 纪委: a third sufficed before
    assert c.verdict != UNSUITABLE
    assert by_name(c)["可行性"].verdict != FAILS
    assert any("纪检" in e for e in by_name(c)["可行性"].evidence)
    noise = ["酒吧夜里噪音扰民，我们多次报警也没用", "楼下酒吧音响太吵到凌晨两点"]
    assert card(judge, topic(), noise).verdict != UNSUITABLE
    two_of_three = texts[:1] + ["业主向纪委举报房产局局长收受物业好处", "请纪委调查房产局领导与物业的利益输送"]
    assert card(judge, topic(), two_of_three).verdict == UNSUITABLE


def test_a_copy_paste_campaign_scores_low_on_democracy_and_is_flagged(judge):
    t = topic(size=6, voices=1, duplicates=5, submitters=2, channels=["二维码"], places=["北辰社区"], campaign=True)
    c = card(judge, t, ELEVATOR)
    demo = by_name(c)["民主性"]
    assert demo.score < 0.35 and any("复制粘贴" in e for e in demo.evidence)
    assert c.verdict == RESEARCH


def test_a_narrow_issue_off_the_plan_needs_more_research(judge):
    texts = ["文化街的宠物店门口总有狗粪", "文化街宠物店外面狗粪没人清理"]
    c = card(judge, topic(size=2, voices=2, submitters=2, channels=["二维码"], places=["文化街"], domain="社区治理"), texts)
    assert c.verdict == RESEARCH
    assert all(p.evidence for p in c.principles)


def test_feasibility_is_the_remit_of_a_committee_of_this_office(judge):
    """可行性 claimed "within remit" but checked only that a domain existed."""
    c = card(judge, topic(domain="教育"), ["学校门口早晚接送拥堵", "学校门口接送孩子的车太多"])
    feas = by_name(c)["可行性"]
    assert feas.verdict == MEETS and "教科卫体委员会" in feas.evidence[0] and "教育" in feas.evidence[0]
    c = card(judge, topic(domain="月球开发"), ["建议在月球上建社区", "月球社区建设"])
    feas = by_name(c)["可行性"]
    assert feas.verdict != MEETS and "职责范围" in feas.evidence[0]
