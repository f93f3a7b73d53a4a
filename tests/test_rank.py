import pandas as pd

from triage.judge.rank import HeatConfig, heat

NOW = pd.Timestamp("2026-11-01")


def h(**kw):
    base = dict(voices=5, submitters=5, support=10, last_seen=NOW, this_period=5, previous_period=0,
                channels=2, places=1, principle_score=0.6, now=NOW, config=HeatConfig())
    base.update(kw)
    return heat(**base)


def test_every_term_is_shown_and_the_score_is_their_sum():
    r = h()
    assert set(r.terms) == {"volume", "submitters", "support", "recency", "growth", "breadth", "principles"}
    assert abs(r.score - sum(t["points"] for t in r.terms.values())) < 1e-3


def test_more_distinct_submitters_is_hotter():
    assert h(submitters=20).score > h(submitters=2).score


def test_recency_halves_after_the_half_life():
    assert abs(h(last_seen=NOW - pd.Timedelta(days=30)).terms["recency"]["scaled"] - 0.5) < 1e-6


def test_growth_against_the_previous_period_counts():
    assert h(this_period=10, previous_period=1).score > h(this_period=1, previous_period=10).score


def test_one_person_posting_five_times_is_cooler_than_five_people_posting_once():
    one_person = h(voices=5, submitters=1)
    five_people = h(voices=5, submitters=5)
    assert five_people.score - one_person.score > 0.1
    # the persistence term: posting again still counts for a little
    assert h(voices=5, submitters=1).score > h(voices=1, submitters=1).score


def test_a_problem_many_raise_outranks_one_persons_long_campaign():
    assert h(voices=6, submitters=6).score > h(voices=40, submitters=1, support=0).score


def test_modifiers_only_take_reach_away_and_the_points_still_sum_to_the_heat():
    r = h(last_seen=NOW - pd.Timedelta(days=200), principle_score=0.2)
    assert r.terms["recency"]["points"] < 0 and r.terms["principles"]["points"] < 0
    assert all(r.terms[k]["points"] >= 0 for k in ("submitters", "support", "volume"))
    assert abs(r.score - sum(t["points"] for t in r.terms.values())) < 1e-3
    ideal = h(last_seen=NOW, principle_score=1.0, this_period=50, previous_period=0, channels=20, places=0)
    reach = sum(ideal.terms[k]["points"] for k in ("submitters", "support", "volume"))
    assert abs(ideal.score - reach) < 1e-3   # nothing to take away from an ideal topic


def test_one_fresh_message_never_outranks_a_stale_problem_three_citizens_raised():
    fresh_one = h(voices=1, submitters=1, support=0, last_seen=NOW, this_period=1, previous_period=0,
                  channels=1, places=3, principle_score=1.0)
    stale_three = h(voices=3, submitters=3, support=0, last_seen=NOW - pd.Timedelta(days=300), this_period=0,
                    previous_period=0, channels=1, places=1, principle_score=0.5)
    assert stale_three.score > fresh_one.score


def test_support_says_many_agree_even_when_one_person_wrote():
    liked = h(voices=1, submitters=1, support=300)
    assert liked.score > h(voices=2, submitters=2, support=0).score


def test_ranking_config_rejects_modifiers_that_could_make_heat_negative(tmp_path):
    import pytest

    from triage.errors import ConfigError
    from triage.judge.rank import load_heat_config

    p = tmp_path / "ranking.yaml"
    p.write_text("weights:\n  recency: 0.8\n  principles: 0.5\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        load_heat_config(p)


def test_a_list_puts_more_citizens_first_and_heat_decides_among_equals():
    """A fresh problem two people raised last week has more heat than one three people raised last year,
    but the list puts the three first; between two three-citizen topics the hotter leads."""
    from triage.judge.rank import RANK_ORDER, rank_frame

    fresh_two = h(voices=2, submitters=2, support=0, last_seen=NOW - pd.Timedelta(days=3))
    stale_three = h(voices=3, submitters=3, support=0, last_seen=NOW - pd.Timedelta(days=365))
    stale_three_fresher = h(voices=3, submitters=3, support=0, last_seen=NOW - pd.Timedelta(days=300))
    assert fresh_two.score > stale_three.score
    topics = pd.DataFrame([
        {"topic_id": "two", "submitters": 2, "heat": fresh_two.score, "size": 2},
        {"topic_id": "three", "submitters": 3, "heat": stale_three.score, "size": 3},
        {"topic_id": "three-fresher", "submitters": 3, "heat": stale_three_fresher.score, "size": 3},
    ])
    ranked = rank_frame(topics)
    assert list(ranked["topic_id"]) == ["three-fresher", "three", "two"]
    assert list(ranked["rank"]) == [1, 2, 3] and RANK_ORDER[0] == "submitters"
