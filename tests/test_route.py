import numpy as np

from triage.config import load_taxonomy
from triage.judge.route import Router, RoutingMemory, route_topic


def router():
    return Router(load_taxonomy())


def test_group_issue_goes_to_the_domain_committee_with_a_reason():
    r = router().route("教育", "group")
    assert r.kind == "committee" and r.name == "教科卫体委员会" and "教育" in r.reason


def test_individual_petition_goes_to_a_department():
    r = router().route("社会保障", "individual", "医保", 0.8)
    assert r.kind == "department" and r.name == "医疗保障局" and "医疗保障局" in r.reason


def test_unsure_department_falls_back_to_the_domain_default():
    r = router().route("社会保障", "individual", "医保", 0.1)
    assert r.name == "人力资源和社会保障局"


def test_a_topic_follows_what_staff_decided_for_a_similar_topic():
    memory = RoutingMemory(min_similarity=0.8)
    v = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    memory.remember(v, "nongye", "T000042")
    r = route_topic(router(), "交通运输", 1.0, np.array([0.95, 0.31, 0.0], dtype=np.float32), memory)
    assert r.name == "农业和农村委员会" and "T000042" in r.reason
    far = route_topic(router(), "交通运输", 1.0, np.array([0.0, 1.0, 0.0], dtype=np.float32), memory)
    assert far.name == "经济委员会"


def test_a_topic_of_mostly_petitions_is_routed_to_a_department():
    r = route_topic(router(), "就业创业", 0.2)
    assert r.kind == "department" and "个人诉求" in r.reason
