"""The civic lexicon every text stage reads: jieba with the project's user dictionary, surnames, titles.

Masking (:mod:`triage.text.normalise`), the name NER (:mod:`triage.text.names`) and the place finder
(:mod:`triage.text.places`) all need these. They lived in ``text``, so ``names`` imported ``text`` while
``text`` imported ``names``: a cycle. Here, below all three, they are read by each and import none.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os

from triage.config import corpora_dir

log = logging.getLogger(__name__)

COMPOUND_SURNAMES = (
    "欧阳 司马 上官 诸葛 东方 皇甫 令狐 慕容 公孙 夏侯 尉迟 长孙 宇文 司徒 端木 独孤 南宫 西门 轩辕 呼延"
).split()
SURNAMES = set(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
    "姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
    "常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴"
    "霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚娄窦戚岑"
    "景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝"
)

# A surname followed by a title or an honorific is a person (胡书记, 张主任, 王大爷, 李先生), wherever it
# stands; masking keeps the title (the role matters to the complaint) and masks the surname.
TITLES = ("书记", "主任", "局长", "县长", "市长", "区长", "镇长", "乡长", "村长", "组长", "所长", "院长", "校长",
          "园长", "科长", "处长", "厅长", "部长", "队长", "站长", "行长", "董事长", "总经理", "经理", "老板", "老总",
          "警官", "医生", "律师", "会计", "女士", "先生", "老师", "师傅", "阿姨", "大爷", "大妈", "大姐", "大哥",
          "奶奶", "爷爷", "婆婆", "同志")


@functools.lru_cache(maxsize=1)
def tokenizer():
    """A private jieba Tokenizer with the civic user dictionary (not jieba's global instance), whose
    routes come from jieba-next's Rust dictionary where that is installed (:func:`_routed_class`)."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    tok = _routed_class()()
    userdict = corpora_dir() / "userdict.txt"
    if userdict.exists():
        tok.load_userdict(str(userdict))
    else:  # pragma: no cover - only when a custom TRIAGE_CORPORA lacks it
        log.warning("userdict not found at %s; segmenting with jieba's default dictionary", userdict)
    tok.use_fast_route()
    return tok


#: how many dictionary words jieba-next's Rust dictionary keeps starting at one position
RUST_MAX_ENDS = 12


class _Ends(list):
    """A clause's best route as jieba-next computes it: for each position, where its word ends."""


@functools.lru_cache(maxsize=1)
def _routed_class():
    """``jieba.Tokenizer`` whose best route through a clause is computed in Rust.

    jieba spends about two thirds of its time on each clause's DAG and the dynamic programming over
    it (``get_DAG``, ``calc``), in Python. jieba-next's ``PrefixDict`` does the same over a copy of
    this tokenizer's own dictionary (user words included). Everything else stays jieba's: the blocks,
    the HMM for unknown words and how single characters are buffered for it. So the words are
    jieba's, which the shipped model's vocabulary and every mask depend on: on the real messages
    (``bench/real_segmenter.py``) and in ``tests/test_text.py`` both give the same words.
    ``TRIAGE_FAST_ROUTE=0`` or a missing jieba-next keeps jieba's own route.
    """
    import jieba

    class RoutedTokenizer(jieba.Tokenizer):
        _route = None

        def use_fast_route(self) -> bool:
            if os.environ.get("TRIAGE_FAST_ROUTE", "1") == "0":
                return False
            try:
                from jieba_next import jieba_next_rust
            except ImportError:   # pragma: no cover - the wheel is a dependency; other platforms may lack it
                log.info("jieba-next is not installed; jieba computes its own routes")
                return False
            self.check_initialized()
            # the Rust dictionary keeps at most RUST_MAX_ENDS words starting at one position; a
            # dictionary with a longer chain of nested words (only a custom user dictionary could
            # have one) would lose words there, so it keeps jieba's own route
            longest = max((sum(1 for k in range(1, len(w) + 1) if self.FREQ.get(w[:k])) for w, f in self.FREQ.items()
                           if f and len(w) > RUST_MAX_ENDS), default=0)
            if longest > RUST_MAX_ENDS:
                log.warning("词典中有超过 %d 层嵌套的词，分词不用 Rust 路径 / a word nests %d dictionary words; "
                            "jieba computes its own routes", RUST_MAX_ENDS, longest)
                return False
            self._route = jieba_next_rust.PrefixDict(self.FREQ, float(self.total))
            return True

        def add_word(self, word, freq=None, tag=None):
            # the Rust dictionary is a copy of FREQ when the route was switched on: a word added or
            # removed later (del_word and suggest_freq come here too) goes back to jieba's own route
            super().add_word(word, freq, tag)
            if self._route is not None:
                log.info("词典已改动，分词改用 jieba 自身路径 / the dictionary changed; jieba computes its own routes")
                self._route = None

        def get_DAG(self, sentence):
            if self._route is None:
                return super().get_DAG(sentence)
            return _Ends(self._route.get_dag_and_calc(sentence))

        def calc(self, sentence, DAG, route):
            if not isinstance(DAG, _Ends):
                return super().calc(sentence, DAG, route)
            # jieba's cut reads only where each word ends (route[x][1])
            route.update(zip(range(len(DAG)), zip(itertools.repeat(0.0), DAG)))
            route[len(sentence)] = (0, 0)

        def _Tokenizer__cut_DAG(self, sentence):   # jieba's private __cut_DAG (cut with HMM), by its mangled name
            """jieba's cut of one block with the HMM, walking the Rust route: runs of single characters
            are buffered and, unless the run is a dictionary word, read by the HMM (:func:`_hmm_words`),
            exactly as jieba's own ``__cut_DAG`` does."""
            if self._route is None:
                yield from super()._Tokenizer__cut_DAG(sentence)
                return
            ends = self._route.get_dag_and_calc(sentence)
            freq = self.FREQ
            x, n, run = 0, len(sentence), -1
            while x < n:
                y = ends[x] + 1
                if y - x == 1:
                    if run < 0:
                        run = x
                else:
                    if run >= 0:
                        yield from _single_run(sentence[run:x], freq)
                        run = -1
                    yield sentence[x:y]
                x = y
            if run >= 0:
                yield from _single_run(sentence[run:], freq)

        def cut(self, sentence, cut_all=False, HMM=True, use_paddle=False):
            if (cut_all or use_paddle) and self._route is not None:
                raise ValueError("cut_all / paddle are not used here: the routed tokenizer gives routes, not DAGs")
            return super().cut(sentence, cut_all=cut_all, HMM=HMM, use_paddle=use_paddle)

    return RoutedTokenizer


def _single_run(run: str, freq: dict[str, int]):
    """A run of single-character words, as jieba yields it: one character alone, a dictionary word
    character by character, anything else through the HMM."""
    if len(run) == 1:
        yield run
    elif freq.get(run):
        yield from run
    else:
        yield from _hmm_words(run)


@functools.lru_cache(maxsize=1)
def _hmm_tables():
    """jieba's HMM tables, the characters all four states can emit, and jieba-next's Rust Viterbi."""
    from jieba import finalseg
    from jieba_next.jieba_next_rust import _viterbi

    emit = finalseg.emit_P
    known = frozenset(emit["B"]) & frozenset(emit["M"]) & frozenset(emit["E"]) & frozenset(emit["S"])
    return finalseg, known, _viterbi


def _hmm_words(text: str):
    """``jieba.finalseg.cut(text)``, with the Viterbi in Rust where that gives jieba's own path.

    jieba-next's Rust Viterbi finds the same best path as jieba's, but breaks exact ties otherwise
    (the first candidate, where jieba takes the larger state letter). Ties arise in two ways, and
    such blocks go to jieba's own Viterbi:

    * a character without an emission score in some state: jieba scores it -3.14e100, which swamps
      the sum (塅, 汚: 4.7 % of the real messages' HMM calls);
    * a repeated character: two paths that swap the states of two equal characters can sum the same
      terms to the same float (一一一一一 as BMEBE or BEBME). With every character distinct, two
      paths never hold the same terms.

    On the real messages' 227,931 HMM calls the Rust path and score were identical wherever it ran,
    six times faster. The Rust side keeps the first tables it is given for the whole process
    (jieba-next's own, equal to jieba's), so jieba's tables are the ones it uses either way.
    """
    finalseg, known, rust_viterbi = _hmm_tables()
    for blk in finalseg.re_han.split(text):
        if not finalseg.re_han.match(blk):
            yield from (x for x in finalseg.re_skip.split(blk) if x)
            continue
        distinct = len(set(blk)) == len(blk)
        viterbi = rust_viterbi if distinct and known.issuperset(blk) else finalseg.viterbi
        _prob, states = viterbi(blk, "BMES", finalseg.start_P, finalseg.trans_P, finalseg.emit_P)
        begin = nexti = 0
        for i, state in enumerate(states):
            if state == "B":
                begin = i
            elif state == "E":
                word = blk[begin:i + 1]
                nexti = i + 1
                if word in finalseg.Force_Split_Words:
                    yield from word
                else:
                    yield word
            elif state == "S":
                nexti = i + 1
                yield blk[i]
        if nexti < len(blk):
            word = blk[nexti:]
            if word in finalseg.Force_Split_Words:
                yield from word
            else:
                yield word
