"""Stage 4, topics: messages → candidate topics (议题): one problem, one place, one period.

* ``cluster``: the pairwise similarity (words, sentence vectors, place, time) and average linkage.
* ``builder``: :class:`~triage.topics.builder.TopicBuilder` (batch clustering, labels, keywords,
  representatives, themes) and :class:`~triage.topics.builder.TopicIndex` (intake's incremental assignment).
* ``evaluation``: member F1 and place measures against hand-found groups.

Reads ``triage.text`` (tokens, places). Judging, ranking and routing the topics is ``triage.judge``;
composing the stages for a whole file is ``triage.candidates``.
"""
