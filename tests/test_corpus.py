"""The shipped corpus meets the shape the product needs (it trains and evaluates the models)."""

import re

from triage.config import load_taxonomy


def test_corpus_size_and_per_domain_minimum(corpus):
    assert corpus["text"].nunique() >= 1200
    counts = corpus["domain"].value_counts()
    assert set(counts.index) <= set(load_taxonomy().domain_names)
    assert len(counts) >= 12 and counts.min() >= 60


def test_both_scopes_are_well_represented(corpus):
    share = corpus["scope"].value_counts(normalize=True)
    assert share["individual"] >= 0.35 and share["group"] >= 0.40


def test_every_channel_appears(corpus):
    assert {"意见箱", "二维码", "网上表单", "委员荐题", "党政交题", "社情民意"} <= set(corpus["channel"])


def test_at_least_150_topics_have_three_or_more_messages(corpus):
    sizes = corpus[corpus["topic"] != ""].groupby("topic").size()
    assert (sizes >= 3).sum() >= 150


def test_lengths_range_from_short_notes_to_long_proposals(corpus):
    lengths = corpus["text"].str.len()
    assert lengths.min() <= 15 and (lengths >= 600).sum() >= 10


def test_some_messages_are_in_traditional_script(corpus):
    from triage.text.normalise import to_simplified

    trad = sum(1 for t in corpus["text"] if to_simplified(t) != t)
    assert trad >= 40


def test_places_are_taken_from_the_text(corpus):
    rows = corpus[corpus["place"] != ""]
    inside = [p in f"{ti}\n{te}" for p, ti, te in zip(rows["place"], rows["title"], rows["text"])]
    assert sum(inside) / len(rows) >= 0.95


def test_committee_column_matches_the_taxonomy(corpus):
    tax = load_taxonomy()
    for dom, com in zip(corpus["domain"], corpus["committee"]):
        assert tax.committee_for(dom).name == com


def test_ids_are_unique_and_dates_parse(corpus):
    assert corpus["id"].is_unique
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", d) for d in corpus["submitted_at"])


def test_suggestions_csv_is_the_merge_of_the_hand_written_slices():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    rc = subprocess.run([sys.executable, str(root / "corpora" / "build_corpus.py"), "--check"],
                        capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr


def test_the_corpus_reads_like_real_messages_not_only_short_notes(corpus):
    """Real boards: median ~216 characters, 10 % over 900, salutations, Excel residue (slices L-U)."""
    lengths = corpus["text"].str.len()
    assert (lengths >= 400).mean() >= 0.10 and (lengths >= 900).sum() >= 50
    salutation = corpus["text"].str.contains(r"^(?:尊敬的|各位|[\u4e00-\u9fff]{1,3}(?:书记|市长|局长|主任|厅长|县长)|领导)", regex=True)
    assert salutation.mean() >= 0.10
    assert corpus["text"].str.contains("_x000D_", regex=False).sum() >= 20
