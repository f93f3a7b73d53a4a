"""Full-text search terms for Chinese text: overlapping character bigrams, as the CJK analysers of
Lucene and Elasticsearch index it.

Why not the stored jieba tokens: a word segmenter cuts a phrase differently alone and in context, and
often not where a searcher would. "路灯不亮" is segmented 路 / 灯不亮, so a search for 路灯 would never
find it. Bigrams need no dictionary: every two-character word a clerk types is a term of the index, and
a longer query is the phrase of its bigrams in order (路灯不亮 → "路灯 灯不 不亮"), which both SQLite
FTS5 (a quoted phrase) and PostgreSQL (``phraseto_tsquery``) match as consecutive terms.

The document indexed is the masked text (title and body), never the raw one: a search must not find a
message by a citizen's name or phone number. A one-character query has no bigram; the caller falls
back to a substring scan. The index only narrows: the caller keeps a message only if it holds every
run of the query as written (bigrams do not see punctuation).
"""

from __future__ import annotations

import re

# runs of Han characters, and runs of letters/digits (K3县 → "k3", 县 is Han); everything else separates
_RUNS = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[A-Za-z0-9]+")


def _is_han(run: str) -> bool:
    return not run[0].isascii()


def terms(text: str) -> list[str]:
    """The index terms of ``text`` in order: bigrams of each Han run (a lone character as itself),
    letter-digit words lowercased."""
    out: list[str] = []
    for m in _RUNS.finditer(text or ""):
        run = m.group(0)
        if not _is_han(run):
            out.append(run.lower())
        elif len(run) == 1:
            out.append(run)
        else:
            out.extend(run[k:k + 2] for k in range(len(run) - 1))
    return out


def document(*texts: str | None) -> str:
    """What the search index stores for a message: its terms, space-separated (texts joined by a
    separator, so no bigram spans the title and the body)."""
    return " ".join(t for text in texts if text for t in terms(text))


def query_runs(q: str) -> list[str]:
    """The query's Han and letter-digit runs, each of which a hit must contain as written."""
    return [m.group(0) for m in _RUNS.finditer(q or "")]


def query_phrases(q: str) -> list[list[str]] | None:
    """The query's indexable runs as phrases of terms (all must match), or None when no run has a
    bigram (only single Han characters): the caller then scans for substrings alone.

    The index narrows; the caller still checks each run as a substring, because the bigrams of
    "路灯，灯不亮" are those of "路灯不亮" (the index does not see punctuation)."""
    phrases = [terms(run) for run in query_runs(q) if not (_is_han(run) and len(run) < 2)]
    return phrases or None


def fts5_query(phrases: list[list[str]]) -> str:
    """An FTS5 MATCH expression: each phrase quoted (terms are letters, digits or Han only, so no
    quoting inside), all phrases required."""
    return " AND ".join('"' + " ".join(p) + '"' for p in phrases)


def tsquery_text(phrase: list[str]) -> str:
    """One phrase as ``phraseto_tsquery('simple', …)`` input."""
    return " ".join(phrase)
