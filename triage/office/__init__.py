"""The office's day over the store: intake, topics, staff decisions, lifecycle, alerts.

* ``office``: :class:`~triage.office.office.Office` (intake, re-clustering, decisions, 回音壁).
* ``review``: read-only views for the review page; ``alerts``: subscriptions, alerts, digests.

The service's routes call these; they call the stages below and the store, never the service.
"""
