"""Quality measures for topics and places, reported by ``triage evaluate --topics``."""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.metrics import adjusted_rand_score, homogeneity_completeness_v_measure


def topic_quality(pred: Sequence[str | None], gold: Sequence[str]) -> dict:
    """ARI and V-measure against gold topic ids; a message with no gold topic is its own cluster.

    Reported twice: over all messages, and over the messages that have a gold topic (the harder view:
    singletons are easy to get right and inflate the first number).
    """
    g = [x if x else f"_single{i}" for i, x in enumerate(gold)]
    p = [x if x else f"_none{i}" for i, x in enumerate(pred)]
    h, c, v = homogeneity_completeness_v_measure(g, p)
    inside = [i for i, x in enumerate(gold) if x]
    gi, pi = [g[i] for i in inside], [p[i] for i in inside]
    h2, c2, v2 = homogeneity_completeness_v_measure(gi, pi) if inside else (0, 0, 0)
    return {
        "all_messages": {"n": len(g), "ari": round(adjusted_rand_score(g, p), 4), "v_measure": round(v, 4),
                         "homogeneity": round(h, 4), "completeness": round(c, 4)},
        "topic_messages": {"n": len(gi), "ari": round(adjusted_rand_score(gi, pi), 4) if inside else 0.0,
                           "v_measure": round(v2, 4), "homogeneity": round(h2, 4), "completeness": round(c2, 4)},
        "gold_topics": len(set(x for x in gold if x)), "predicted_topics": len(set(p)),
    }


def place_quality(pred: Sequence[str | None], gold: Sequence[str]) -> dict:
    """Precision/recall of the extracted primary place against the annotated place.

    strict: the same string; lenient: one contains the other (石桥镇上庄村 vs 上庄村).
    """
    tp_s = tp_l = n_pred = n_gold = 0
    for p, g in zip(pred, gold):
        p, g = (p or "").strip(), (g or "").strip()
        n_pred += bool(p)
        n_gold += bool(g)
        if p and g:
            tp_s += p == g
            tp_l += (p in g) or (g in p)
    def pr(tp: int) -> dict:
        prec = tp / n_pred if n_pred else 0.0
        rec = tp / n_gold if n_gold else 0.0
        f = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        return {"precision": round(prec, 4), "recall": round(rec, 4), "f1": round(f, 4)}
    return {"annotated": n_gold, "extracted": n_pred, "strict": pr(tp_s), "lenient": pr(tp_l)}


def member_f1(pred: Sequence[str | None], gold: Sequence[str | None]) -> dict:
    """Per gold group, the F1 of the predicted topic that holds it best; and their size-weighted mean.

    This is what staff feel: a hot issue found whole and alone scores 1; one spread over several topics
    loses recall, one drowned in a topic of other problems loses precision. Rows with no gold group
    still count against a topic's precision (a topic that pulls in unrelated messages is worse), so
    ``pred``/``gold`` should cover every message that was annotated, not only the groups' members.
    """
    from collections import Counter, defaultdict

    topic_size = Counter(p for p in pred if p)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(gold):
        if g:
            groups[g].append(i)
    per: dict[str, dict] = {}
    for g, rows in groups.items():
        hits = Counter(pred[i] for i in rows if pred[i])
        best, f_best, p_best, r_best = None, 0.0, 0.0, 0.0
        for t, inter in hits.items():
            p, r = inter / topic_size[t], inter / len(rows)
            f = 2 * p * r / (p + r)
            if f > f_best or (f == f_best and best is not None and str(t) < str(best)):
                best, f_best, p_best, r_best = t, f, p, r
        per[g] = {"topic": best, "f1": round(f_best, 4), "precision": round(p_best, 4), "recall": round(r_best, 4),
                  "size": len(rows), "topics": len(hits)}
    total = sum(v["size"] for v in per.values())
    weighted = sum(v["f1"] * v["size"] for v in per.values()) / total if total else 0.0
    return {"weighted_f1": round(weighted, 4), "groups": per}
