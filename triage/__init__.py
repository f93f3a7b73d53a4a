"""triage: sort citizen suggestions into ranked, routed candidate consultation topics.

Every stage is usable on its own; :mod:`triage.pipeline` composes them.
"""

__version__ = "0.1.0"
