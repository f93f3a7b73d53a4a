"""Tiny fixtures built from data the project ships."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpora" / "suggestions.csv"


def valid_id(prefix17: str) -> str:
    """An 18-character ID number with a correct check digit (test data, not a real person)."""
    w = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return prefix17 + "10X98765432"[sum(int(c) * k for c, k in zip(prefix17, w)) % 11]


@pytest.fixture(scope="session")
def corpus() -> pd.DataFrame:
    return pd.read_csv(CORPUS, dtype=str, keep_default_na=False)


@pytest.fixture(scope="session")
def small_corpus(corpus: pd.DataFrame) -> pd.DataFrame:
    """12 messages per domain: enough to train a model in seconds."""
    return corpus.groupby("domain").sample(12, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory: pytest.TempPathFactory, small_corpus: pd.DataFrame) -> Path:
    from triage.cli import main

    d = tmp_path_factory.mktemp("model")
    data = d / "train.csv"
    small_corpus.to_csv(data, index=False)
    rc = main(["train", "--data", str(data), "--text-col", "title", "--text-col", "text", "--label-col", "domain",
               "--scope-col", "scope", "--department-col", "department", "--group-col", "topic",
               "--no-eval", "--out", str(d / "m")])
    assert rc == 0
    return d / "m"


@pytest.fixture(scope="session")
def shipped_model_dir() -> Path:
    return ROOT / "models" / "default"
