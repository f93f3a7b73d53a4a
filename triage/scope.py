"""Group issue (群众性问题) vs individual petition (个人诉求).

The same calibrated linear model as the domain classifier over the shared features, which include
the counts of explicit cue families from ``scope_cues.yaml`` (personal, remedy, collective,
public_change). Cues are features, not rules: the model learns how much "我家" weighs against
"建议增设", so a group issue told through one family is not forced into the petition box. Evidence
lists the cue phrases found and the terms that weighed most.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from triage.classify import TextClassifier
from triage.features import CueMatcher

GROUP = "group"
INDIVIDUAL = "individual"


@dataclass
class ScopeEvidence:
    cues: dict[str, list[str]] = field(default_factory=dict)
    terms: list[tuple[str, float]] = field(default_factory=list)


def explain_scope(clf: TextClassifier, cues: CueMatcher, X: sp.spmatrix, texts: Sequence[str],
                  labels: Sequence[str], names: np.ndarray, k: int = 5) -> list[ScopeEvidence]:
    terms = clf.evidence(X, labels, names, k)
    return [ScopeEvidence(cues.matches(t), ev) for t, ev in zip(texts, terms)]
