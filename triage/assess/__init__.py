"""Stage 2, assess: each message's domain and scope (group issue or individual petition), with evidence.

* ``features``: messages → the model's input frame (word and character n-grams; ``ngrams`` counts them).
* ``classify``: the domain (and department) classifier; ``scope``: group issue vs petition.
* ``model``: the model bundle: train, save, load (skops, manifest); ``baseline``: the plain TF-IDF
  recipe every classifier is measured against; ``retrain``: corpus + staff corrections, gated.

Reads ``triage.text`` and ``triage.embed``; ``retrain`` reads corrections from ``triage.store``.
"""
