"""Stages 5–6, judge: what a candidate topic is worth and where it goes.

* ``principles``: the 五大原则 scorecard (政治性, 群众性, 前瞻性, 民主性, 可行性), each with evidence.
* ``rank``: heat, a transparent score (distinct citizens first; every term visible).
* ``route``: a group issue to a CPPCC committee, an individual petition to a department.

Reads ``triage.topics``, ``triage.assess``, ``triage.text``.
"""
