"""Stage 1, text: what every later stage reads about a message's words.

* ``normalise``: Traditional→Simplified, width, whitespace; personal data masked (phones, ID and card
  numbers, addresses, names); jieba tokens. Intake and batch call :func:`~triage.text.normalise.clean` (normalise + mask) and :func:`~triage.text.normalise.tokens`.
* ``names``: person names by a Chinese NER, where a cheap test says one may be (used by masking).
* ``places``: place names with their kind and parent chain (gazetteer + suffix patterns).
* ``lexicon``: jieba with the civic dictionary, surnames and titles, shared by the three above.
* ``search``: character bigrams for the store's full-text search.
* ``ngram_counts``: character and word n-grams of many texts counted with arrays, as scikit-learn's
  vectorisers would count them when they fit (the topics' lexical view, near-duplicates, keywords).

Imports only the foundations (``triage.config``, ``triage.errors``); every other stage may import it.
"""
