import pandas as pd

from triage.rank import HeatConfig, heat

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
