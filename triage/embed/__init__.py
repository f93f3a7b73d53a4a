"""Stage 3, embed: sentence encoders behind one interface (``embed(texts) -> array``), and a cache.

``encoders``: the Universal Sentence Encoder (the default, numpy), a local sentence-transformers
directory, a hashing encoder (no model), and the SQLite cache keyed by text hash. Only the topic
stages and the principles judge use it; classification is lexical. Imports only the foundations.
"""
