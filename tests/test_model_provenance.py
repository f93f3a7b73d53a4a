"""The shipped models were trained on our own corpus and nothing else (never on real messages)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import CORPUS, ROOT


@pytest.fixture(scope="module")
def corpus_training_hash() -> str:
    from triage.cli import _frame_for_training, build_parser
    from triage.assess.model import data_hash

    args = build_parser().parse_args(
        ["train", "--data", str(CORPUS), "--text-col", "title", "--text-col", "text", "--label-col", "domain",
         "--scope-col", "scope", "--department-col", "department", "--group-col", "topic", "--out", "unused"])
    prepared, y, scope, dept, _groups, _cues = _frame_for_training(args)
    return data_hash(prepared["text"].tolist(), y, scope, dept)


@pytest.mark.parametrize("model", ["default"])
def test_shipped_model_was_trained_on_corpora_alone(model, corpus_training_hash):
    manifest = json.loads((ROOT / "models" / model / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["source"].endswith("corpora/suggestions.csv")
    assert manifest["training_data_sha256"] == corpus_training_hash, (
        f"models/{model} was not trained on corpora/suggestions.csv as it is now: run `make model`")
