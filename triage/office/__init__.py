"""The office's day over the store: small services, one module each, wired by ``office``.

* ``office``: :class:`~triage.office.office.Office`, one worker's services built on one shared state.
* ``intake``: validation, idempotency, analysis, assignment to a topic; the portal's live hints.
* ``views``: a citizen's receipt, the staff topic list and one topic, the 回音壁.
* ``decisions``: the eight staff actions and the lifecycle (收集议题 → … → 成果转化).
* ``clustering``: when and who re-clusters (triggers, the store's lease, settle runs);
  ``reclustering``: one run (read, cluster, write).
* ``index``: this worker's topic index and where dropped topics went; ``figures``: a topic's figures at intake.
* ``history``: bulk import of past suggestions, re-masking; ``common``: requests, errors, config, state.
* ``review``: read-only views for the review page; ``alerts``: subscriptions, alerts, digests.

The service's routes call these; they call the stages below and the store, never the service.
"""
