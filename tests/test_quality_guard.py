"""Quality figures the README states, guarded: a change that loses more than a small margin fails CI.

Each test runs the README's own command on the shipped corpus (whole topics held out) and compares
with the README's figure minus ``MARGIN``. They are slow (minutes together) and marked so.
"""

from __future__ import annotations

import json

import pytest

from triage.cli import main

from .conftest import CORPUS

MARGIN = 0.03
DATA = ["--data", str(CORPUS), "--text-col", "title", "--text-col", "text"]


def _report(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_domain_and_scope_under_group_kfold_hold_the_readme_figures(capsys):
    # README: lexical model, group 5-fold by topic: domain macro-F1 0.76, scope macro-F1 0.93
    rep = _report(capsys, "evaluate", "--cv", *DATA, "--label-col", "domain", "--scope-col", "scope",
                  "--group-col", "topic")
    assert rep["domain"]["macro_f1"] >= 0.76 - MARGIN, rep["domain"]
    assert rep["scope"]["macro_f1"] >= 0.93 - MARGIN, rep["scope"]


@pytest.mark.slow
def test_topic_clustering_and_place_extraction_hold_the_readme_figures(capsys):
    # README: ARI 0.72 on messages with a topic; places lenient P 0.74 / R 0.74
    rep = _report(capsys, "evaluate", "--topics", "--data", str(CORPUS), "--group-col", "topic", "--place-col", "place")
    assert rep["topics"]["topic_messages"]["ari"] >= 0.72 - MARGIN, rep["topics"]
    assert rep["places"]["lenient"]["precision"] >= 0.74 - MARGIN, rep["places"]
    assert rep["places"]["lenient"]["recall"] >= 0.74 - MARGIN, rep["places"]
