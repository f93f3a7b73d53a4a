"""Text normalisation, personal-data masking and segmentation.

Order matters and is fixed here once: HTML residue → NFKC (full/half width) → Traditional→Simplified
(OpenCC) → whitespace → PII masking → jieba. Masking runs after NFKC so that full-width digits
(１３８…) are caught, and before everything else downstream so that no later stage, log or model
ever sees a raw phone number, ID number or name.
"""

from __future__ import annotations

import functools
import html
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from triage.config import corpora_dir

log = logging.getLogger(__name__)

#: Typed placeholders. They are single jieba tokens (see corpora/userdict.txt) and contain no digits,
#: so masking is idempotent and later patterns never match inside them.
#: Changes whenever what masking hides changes (rules, the NER, its gates). A store records the version
#: its masked texts were made with; ``triage remask`` brings older rows up to this one.
MASKER_VERSION = "2026-12-06.4"

PLACEHOLDERS: dict[str, str] = {
    "email": "〔邮箱〕",
    "id_number": "〔身份证号〕",
    "bank_card": "〔银行卡号〕",
    "mobile": "〔手机号〕",
    "landline": "〔固话〕",
    "plate": "〔车牌号〕",
    "other_contact": "〔社交账号〕",
    "name": "〔姓名〕",
}

_TAG_RE = re.compile(r"<\s*/?\s*[a-zA-Z][^<>]{0,200}>")
# control and invisible characters, bidirectional ones included (U+202A-202E embeddings and overrides,
# U+2066-2069 isolates, U+200E/200F/061C marks): a right-to-left override kept in stored text reverses
# what staff read on the page ("款退求要" shown for a text that says otherwise)
_CTRL_RE = re.compile(r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e"
                      r"\u2060-\u2064\u2066-\u2069\ufeff]")
#: Excel's escape of a control character inside a cell (``_x000D_`` for a carriage return), left in
#: text by spreadsheet exports: real message boards are full of it
_EXCEL_ESCAPE_RE = re.compile(r"_x(000[9AaDd])_")
_WS_RE = re.compile(r"[ \t\u3000\u00a0]+")
_NL_RE = re.compile(r"\s*\n\s*")


@functools.lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    """Traditional → Simplified with OpenCC's phrase-aware t2s table."""
    return _t2s().convert(text)


def normalize(text: object) -> str:
    """Clean one raw message: HTML residue, width, script, control characters, whitespace.

    Idempotent: ``normalize(normalize(x)) == normalize(x)``. Non-strings (NaN from a spreadsheet,
    numbers) become their string form, ``None`` becomes "". One pass can build a new escape out of
    pieces that an invisible character kept apart (``_x`` U+200B ``000D_``, ``&am`` U+200B ``p;``), so passes
    repeat until the text stops changing where the raw text had entities, tags or invisible characters.
    """
    if text is None:
        return ""
    raw = text if isinstance(text, str) else str(text)
    s = _normalize_once(raw)
    if "&" in raw or "<" in raw or _CTRL_RE.search(raw):  # only these can leave a rebuilt escape
        for _ in range(8):
            before, s = s, _normalize_once(s)
            if s == before:
                break
    return s


def _normalize_once(s: str) -> str:
    s = unicodedata.normalize("NFKC", s)
    while "<" in s or "&" in s:  # unescape and strip until stable
        before = s
        s = re.sub(r"(?i)<\s*br\s*/?\s*>|</\s*p\s*>", "\n", s)
        s = _TAG_RE.sub(" ", s)
        s = unicodedata.normalize("NFKC", html.unescape(s))
        if s == before:
            break
    s = to_simplified(s)
    s = unicodedata.normalize("NFKC", s)  # OpenCC output may re-introduce compatibility forms
    s = _EXCEL_ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), s)
    s = s.replace("\r\n", "\n").replace("\r", "\n")
    s = _CTRL_RE.sub("", s)
    s = _WS_RE.sub(" ", s)
    s = _NL_RE.sub("\n", s)
    return s.strip()


# --------------------------------------------------------------------------- PII

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def id_checksum_ok(number: str) -> bool:
    """GB 11643 check digit of an 18-character resident ID number."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    total = sum(int(c) * w for c, w in zip(number[:17], _ID_WEIGHTS))
    return _ID_CHECK[total % 11] == number[17].upper()


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if len(digits) < 12:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+*-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,10}")
# 18-char IDs, optionally written 6-8-4 with spaces or hyphens.
_ID_RE = re.compile(r"(?<![0-9A-Za-z])(\d{6})[ -]?(\d{8})[ -]?(\d{3}[0-9Xx])(?![0-9A-Za-z])")
# Long digit runs (bank cards: 16-19 digits, maybe grouped by 4).
_CARD_RE = re.compile(r"(?<!\d)(?:\d[ -]?){15,18}\d(?!\d)")
_MOBILE_RE = re.compile(r"(?<!\d)(?:(?:\+|00)?86[ -]?)?1[3-9]\d(?:[ -]?\d){8}(?!\d)")
_LANDLINE_RE = re.compile(
    r"(?<!\d)(?:(?:\(0\d{2,3}\)\s?|0\d{2,3}[ \-—–])\d{3,4}[ \-—–]?\d{4}(?:[ -]?(?:转|ext\.?)\s?\d{1,5})?"
    r"|[48]00[ \-—–]?\d{3,4}[ \-—–]?\d{3,4})(?!\d)"   # 400/800 service lines too
)
# the real-message files anonymise the province character of a plate as 楚 or 空: plates still
_PLATE_RE = re.compile(
    r"[京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼楚空][A-HJ-NP-Za-hj-np-z][·•.\- ]?[A-HJ-NP-Za-hj-np-z0-9]{5,6}(?![A-Za-z0-9])"
)

_COMPOUND_SURNAMES = (
    "欧阳 司马 上官 诸葛 东方 皇甫 令狐 慕容 公孙 夏侯 尉迟 长孙 宇文 司徒 端木 独孤 南宫 西门 轩辕 呼延"
).split()
_SURNAMES = set(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
    "姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
    "常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴"
    "霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚娄窦戚岑"
    "景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝"
)
# Characters that end a name: a name is 1-2 given-name characters followed by one of these or by
# punctuation/space/digit/end. Keeps "本人今年70岁" and "我是一名教师" unmasked.
_NAME_STOP = set("是今住在的家电手联反男女年现系从一想要和与我也来已因对就说去有于及多等向找打给被让称投举带到经曾都又还告讲问送，,。.:：;；!！?？ \n")
_HONORIFICS = ("女士", "先生", "老师", "师傅", "阿姨", "大爷", "大妈", "同志")
# Words before a name: the writer's own, a contact, and the people a message is about (居民赵小红,
# 请联系李先生). Real messages name neighbours, officials and the accused far more often than after
# 我叫; each of these is a context in which a following surname + given name is a person.
_NAME_TRIGGER_RE = re.compile(r"(我叫|我名叫|本人叫|本人|联系人|姓名|我是|署名|请联系|联系|居民|村民|业主|户主|举报人|投诉人|"
                              r"申请人|当事人|负责人|家属|患者|老人|员工|职工|工人)[:：\s]*")
# A surname followed by a title or an honorific is a person too (胡书记, 张主任, 王大爷, 李先生), wherever it
# stands; the title stays (the role matters to the complaint), the surname is masked.
_TITLES = ("书记", "主任", "局长", "县长", "市长", "区长", "镇长", "乡长", "村长", "组长", "所长", "院长", "校长",
           "园长", "科长", "处长", "厅长", "部长", "队长", "站长", "行长", "董事长", "总经理", "经理", "老板", "老总",
           "警官", "医生", "律师", "会计", "女士", "先生", "老师", "师傅", "阿姨", "大爷", "大妈", "大姐", "大哥",
           "奶奶", "爷爷", "婆婆", "同志")
_TITLED_NAME_RE = re.compile(
    "(" + "|".join(sorted(_COMPOUND_SURNAMES, key=len, reverse=True)) + "|[" + "".join(sorted(_SURNAMES)) + "])"
    "(?=副?(?:" + "|".join(sorted(_TITLES, key=len, reverse=True)) + "))")   # 邓副镇长 too
_TITLES_LONGEST_FIRST = sorted(_TITLES, key=len, reverse=True)
#: 姓 + a surname standing for a person (姓李的, 姓谢的庭长, 一位姓王的师傅); not 姓名, 百姓, 同姓
_SURNAME_ONLY_RE = re.compile("(?<![百老同贵])姓([" + "".join(sorted(_SURNAMES)) + "])(?=的|同志|先生|女士|师傅)")
# what may stand right before a titled surname: not another Han character that would make the surname
# part of a word (公安局局长, 学校校长, 各位老师, 这位大爷)
_TITLED_BEFORE_OK = set("，,。.:：;；!！?？、 \n（(“\"《对向找给被让跟和与请问告诉说是的了有个位")


def _han(c: str) -> bool:
    return "\u4e00" <= c <= "\u9fff"


def _name_at(s: str, i: int) -> int:
    """Length of a person's name starting at s[i], or 0."""
    n = len(s)
    if s[i : i + 2] in _COMPOUND_SURNAMES:
        j = i + 2
    elif i < n and s[i] in _SURNAMES:
        j = i + 1
    else:
        return 0
    for h in _HONORIFICS:
        if s.startswith(h, j):
            return j + len(h) - i
    k = j
    while k < n and k - j < 2 and _han(s[k]) and s[k] not in _NAME_STOP:
        k += 1
    if k == j:
        return 0
    if k < n and _han(s[k]) and s[k] not in _NAME_STOP:
        # A third unbroken Han character: "本人张家湾村民" is not a name followed by a boundary.
        # Only accept when the given name is 2 chars and the next char starts a common clause.
        return 0
    return k - i


@dataclass
class Masked:
    """A masked text and the values it hid, in order of appearance per kind.

    ``found`` is what an authorised, audited unmasking restores; it must never be logged.
    """

    text: str
    found: list[tuple[str, str]] = field(default_factory=list)

    @property
    def kinds(self) -> list[str]:
        return [k for k, _ in self.found]


def _sub(pattern: re.Pattern[str], kind: str, s: str, found: list[tuple[str, str]], keep=None) -> str:
    def repl(m: re.Match[str]) -> str:
        value = m.group(0)
        if keep is not None and not keep(value):
            return value
        found.append((kind, value))
        return PLACEHOLDERS[kind]

    return pattern.sub(repl, s)


def mask_pii(text: str) -> Masked:
    """Replace personal data with typed placeholders (〔手机号〕 …).

    Expects normalised text (ASCII digits). ID numbers are masked only when their check digit
    is valid; an 18-digit run that fails it but passes Luhn is masked as a bank card, and any
    other long digit run is left alone (order numbers, amounts).
    """
    found: list[tuple[str, str]] = []
    s = _sub(_EMAIL_RE, "email", text, found)
    # after 身份证号 (or 证件号码) a number is an ID number whatever its check digit or length: citizens
    # mistype, and a wrong digit must not put the rest of the number in clear (fail closed)
    s = _ID_ANY_RE.sub(lambda m: _hide_id(m, found), s)   # one pass: ``found`` keeps text order
    # after 银行卡/卡号/账号 a long number is a card whatever its Luhn digit, after 电话/手机/联系方式 a
    # number is a phone one digit short or long: the context wins over the checksum (fail closed)
    s = _CARD_ANY_RE.sub(lambda m: _hide_card(m, found), s)
    s = _PHONE_ANY_RE.sub(lambda m: _hide_phone(m, found), s)
    s = _sub(_PLATE_RE, "plate", s, found)
    s = _PLATE_CONTEXT_RE.sub(lambda m: _hide_after(m, "plate", found), s)   # 牌照为LWS577
    s = _CONTACT_RE.sub(lambda m: _hide_after(m, "other_contact", found), s)  # QQ 12345678, 微信号 abc_123

    return Masked(_mask_names(s, found), found)


_PLATE_CONTEXT_RE = re.compile(r"(车牌号码|车牌号|车牌|牌照|号牌|牌号)([:：\s是为“\"]{0,3})([A-Za-z0-9]{5,7})(?![A-Za-z0-9])")
_CONTACT_RE = re.compile(r"(QQ号?|qq号?|Qq|微信号?)([:：\s是为]{0,3})([0-9]{5,12}|[A-Za-z][A-Za-z0-9_\-]{5,19})(?![A-Za-z0-9_])")


def _hide_after(m: re.Match[str], kind: str, found: list[tuple[str, str]]) -> str:
    """What follows a context word (牌照, QQ, 微信号): the value is the kind the word says."""
    if not any(c.isdigit() for c in m.group(3)):
        return m.group(0)   # 微信公众号, 车牌号码查询: words, not values
    found.append((kind, m.group(3)))
    return m.group(1) + m.group(2) + PLACEHOLDERS[kind]


_GLUED_STAND_IN_RE = re.compile(r"0{4}[\-—–]?0{7,8}$")


def _placeholder(digits: str) -> bool:
    """The organisers' (or a form's) stand-in: all zeros, or eight zeros in front (0000-00000000 glued
    to a year). Nothing to hide, and masking it only blurs the text."""
    return bool(digits) and (set(digits) == {"0"} or digits.startswith("00000000"))


_ID_CONTEXT_RE = re.compile(r"((?:公民)?身份(?:证|号)(?:号码|号|码)?|证件号(?:码)?)([:：\s是为]{0,3})([0-9][0-9Xx \-]{12,22}[0-9Xx])(?![0-9A-Za-z])")


_ID_ANY_RE = re.compile(f"{_ID_CONTEXT_RE.pattern}|(?P<bare>{_ID_RE.pattern})")


def _hide_id(m: re.Match[str], found: list[tuple[str, str]]) -> str:
    """An ID after its context word, whatever its digits; a bare 18-character one only with a valid
    check digit (an order number is not an ID)."""
    if m.group("bare") is not None:
        value = m.group("bare")
        if not id_checksum_ok(re.sub(r"[ -]", "", value)):
            return value
        found.append(("id_number", value))
        return PLACEHOLDERS["id_number"]
    found.append(("id_number", m.group(3)))
    return m.group(1) + m.group(2) + PLACEHOLDERS["id_number"]


_CARD_CONTEXT_RE = re.compile(r"((?:银行)?卡号|银行卡|账号|帐号|账户|帐户)((?:号码|号)?[:：\s是为]{0,3})([0-9][0-9 \-]{3,26}[0-9])(?!\d)")
_CARD_ANY_RE = re.compile(f"{_CARD_CONTEXT_RE.pattern}|(?P<bare>{_CARD_RE.pattern})")
_PHONE_CONTEXT_RE = re.compile(
    r"(电话|手机|联系方式|联系号码|手机号|拨打|致电|热线)((?:号码|号)?[:：\s是为]{0,3})"
    r"(\+?[0-9]{2,4}(?:[ \-—–]?[0-9]{3,8}){0,3}(?:[、,，/或和][0-9]{7,8}(?![0-9]))*)(?![0-9*])")
# a mobile with its middle digits starred (139-****-0929) still names a line: seven digits are left
_STARRED_MOBILE = r"(?<!\d)1[3-9]\d[ -]?\*{4}[ -]?\d{4}(?!\d)"
_PHONE_ANY_RE = re.compile(f"{_PHONE_CONTEXT_RE.pattern}|(?P<mobile>{_MOBILE_RE.pattern}|{_STARRED_MOBILE})"
                           f"|(?P<landline>{_LANDLINE_RE.pattern})")


def _hide_card(m: re.Match[str], found: list[tuple[str, str]]) -> str:
    """A card number after its context word, whatever its check digit; a bare 16-19 digit run only
    when it passes Luhn and is no mobile (an order number is not a card)."""
    if m.group("bare") is not None:
        value = m.group("bare")
        if not luhn_ok(value) or _MOBILE_RE.fullmatch(value) or _placeholder(re.sub(r"\D", "", value)):
            return value
        found.append(("bank_card", value))
        return PLACEHOLDERS["bank_card"]
    if _placeholder(re.sub(r"\D", "", m.group(3))):
        return m.group(0)
    found.append(("bank_card", m.group(3)))
    return m.group(1) + m.group(2) + PLACEHOLDERS["bank_card"]


def _hide_phone(m: re.Match[str], found: list[tuple[str, str]]) -> str:
    """Mobiles and landlines in one pass (``found`` keeps text order); after 电话/手机 a 6-15 digit
    number is a phone even when mistyped: a mobile if it starts with 1 and is about mobile length."""
    for kind in ("mobile", "landline"):
        if m.group(kind) is not None:
            if _placeholder(re.sub(r"\D", "", m.group(kind))):
                return m.group(kind)
            found.append((kind, m.group(kind)))
            return PLACEHOLDERS[kind]
    out, hid = [], False
    for part in re.split(r"([、,，/或和])", m.group(3)):   # 电话：8353066、8367386: each number of a list
        stand_in = _GLUED_STAND_IN_RE.search(part)   # 68469280000-00000000: a number, then 0000-00000000
        if stand_in and stand_in.start() >= 6:
            tail, part = part[stand_in.start():], part[:stand_in.start()]
        else:
            tail = ""
        digits = re.sub(r"\D", "", part)
        if not digits or _placeholder(digits) or not 6 <= len(digits) <= 15:
            out.append(part)   # 电话2023-10-15: a date, not a number; 0000-00000000: a stand-in
            continue
        kind = "mobile" if digits.startswith(("1", "861", "+861")) and 10 <= len(digits) <= 13 else "landline"
        found.append((kind, part))
        out.append(PLACEHOLDERS[kind] + tail)
        hid = True
    return m.group(1) + m.group(2) + "".join(out) if hid else m.group(0)


#: triggers after which a name is all but certain (the writer names themself or a contact)
_SELF_NAMING = {"我叫", "我名叫", "本人叫", "本人", "我是", "姓名", "联系人", "署名"}   # fail closed: 本人李娜


def _word_freq(span: str) -> int:
    tok = _tokenizer()
    tok.check_initialized()
    return tok.FREQ.get(span) or 0


def _common_word(span: str) -> bool:
    """Whether ``span`` is a common word in jieba's dictionary (付出 1,517, 明确 5,812), not a name
    (王芳 0, 王小明 3): the other triggers are followed by ordinary words as often as by names."""
    return _word_freq(span) >= 100


#: surnames that are also prepositions or conjunctions before a title (向县长反映, 和书记, 于主任处)
_SURNAME_ALSO_WORD = set("向和于从及与")
#: 任 after these is the verb "serve as" (电力局任局长, 曾任书记, 现任主任), not the surname 任
_REN_AS_VERB_AFTER = set("局委部院所厅处办镇乡县市区村司曾现兼出升调继担就")


def _name_spans(s: str) -> list[tuple[int, int]]:
    """(start, end) of every name: after a trigger word (我叫张三, 居民赵小红), a surname before a
    title (胡书记: the surname only), and what the NER calls a person (triage.names), in text order,
    overlapping finds merged."""
    spans = []
    for m in _NAME_TRIGGER_RE.finditer(s):
        length = _name_at(s, m.end())
        if length and m.group(1) not in _SELF_NAMING and _common_word(s[m.end():m.end() + length]):
            length = 0   # 员工付出, 居民安宁, 本人车辆: a word that starts with a surname character
        if length == 3 and _common_word(s[m.end():m.end() + 2]) and _common_word(s[m.end() + 2:m.end() + 4]):
            length = 0   # 业主严重受到: two words (严重 受到) across the span, not a three-character name
        if length:
            spans.append((m.end(), m.end() + length))
    for m in _TITLED_NAME_RE.finditer(s):
        i = m.start()
        at = m.end() + (s[m.end()] == "副")
        title = s[m.end():at] + next(t for t in _TITLES_LONGEST_FIRST if s.startswith(t, at))
        if i > 0 and _han(s[i - 1]) and s[i - 1] not in _TITLED_BEFORE_OK and (
                _word_freq(s[i - 1:m.end()]) >= 5 or _word_freq(s[i - 1:m.end() + len(title)]) >= 5):
            continue   # inside a word: 公安局局长, 城区区长, 南郭先生 (but 希望易书记, 建议曾书记 are names)
        if s.startswith("事务所", m.end() + len(title)):   # 楚梅律师事务所: a firm
            continue
        if m.group(1) in _SURNAME_ALSO_WORD:   # 向县长反映, 和书记谈
            continue
        if m.group(1) == "任" and i > 0 and s[i - 1] in _REN_AS_VERB_AFTER:
            continue
        if s.startswith("书记录", m.end()):      # 文书记录
            continue
        spans.append((i, m.end()))
    for m in _SURNAME_ONLY_RE.finditer(s):   # 一户姓李的, 法院姓谢的庭长: the surname is who
        spans.append((m.start(1), m.end(1)))
    from triage.names import person_spans   # the NER, where a cheap test says a name may be

    spans += person_spans(s)
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start < out[-1][1]:   # found two ways: one name, as wide as both say
            out[-1] = (out[-1][0], max(out[-1][1], end))
            continue
        out.append((start, end))
    return out


def _mask_names(s: str, found: list[tuple[str, str]]) -> str:
    """Names replaced by 〔姓名〕 in one pass, so that ``found`` lists them in text order (unmask
    restores placeholders in that order)."""
    out, pos = [], 0
    for start, end in _name_spans(s):
        out.append(s[pos:start])
        found.append(("name", s[start:end]))
        out.append(PLACEHOLDERS["name"])
        pos = end
    out.append(s[pos:])
    return "".join(out)


def unmask(masked: Masked) -> str:
    """Restore the original values (authorised staff only; callers audit every use)."""
    s = masked.text
    for kind, value in masked.found:
        s = s.replace(PLACEHOLDERS[kind], value, 1) if kind != "name" else s
    # Names are restored last and in order; they never overlap the other kinds.
    for kind, value in masked.found:
        if kind == "name":
            s = s.replace(PLACEHOLDERS["name"], value, 1)
    return s


def clean(text: object) -> Masked:
    """normalize + mask_pii: what every downstream stage receives."""
    return mask_pii(normalize(text))


# --------------------------------------------------------------------------- segmentation

_PUNCT_RE = re.compile(r"^[\W_]+$")


@functools.lru_cache(maxsize=1)
def _tokenizer():
    """A private jieba Tokenizer with the civic user dictionary (not jieba's global instance)."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    tok = jieba.Tokenizer()
    userdict = corpora_dir() / "userdict.txt"
    if userdict.exists():
        tok.load_userdict(str(userdict))
    else:  # pragma: no cover - only when a custom TRIAGE_CORPORA lacks it
        log.warning("userdict not found at %s; segmenting with jieba's default dictionary", userdict)
    return tok


@functools.lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    path: Path = corpora_dir() / "stopwords.txt"
    if not path.exists():
        return frozenset()
    return frozenset(w.strip() for w in path.read_text(encoding="utf-8").splitlines() if w.strip())


_PLACEHOLDER_RE = re.compile("(" + "|".join(map(re.escape, PLACEHOLDERS.values())) + ")")


def _cut(text: str):
    """jieba over the text, with masking placeholders kept whole (jieba would split at 〔 〕)."""
    tok = _tokenizer()
    for piece in _PLACEHOLDER_RE.split(text):
        if not piece:
            continue
        if piece in _PLACEHOLDER_SET:
            yield piece
        else:
            yield from tok.cut(piece, HMM=True)


_PLACEHOLDER_SET = frozenset(PLACEHOLDERS.values())


def segment(text: str) -> list[str]:
    """All tokens, in order; ``"".join(segment(t)) == t`` always holds."""
    return list(_cut(text))


def _content_token(t: str) -> str | None:
    """The token as models see it, or None for stopwords, whitespace, punctuation and bare digits."""
    if t in _PLACEHOLDER_SET:
        return t
    t = t.strip().lower()
    if not t or t in stopwords() or _PUNCT_RE.match(t) or t.isdigit():
        return None
    return t


#: token → :func:`_content_token` (a pure function of the token; a language has few distinct
#: tokens, so the rules run once per word instead of once per occurrence)
_CONTENT: dict[str, str | None] = {}
_CONTENT_MAX = 500_000
_MISS = object()


def tokens(text: str) -> list[str]:
    """Content tokens for models and keywords: no stopwords, whitespace, punctuation or bare digits."""
    memo = _CONTENT
    out = []
    for t in _cut(text):
        v = memo.get(t, _MISS)
        if v is _MISS:
            v = _content_token(t)
            if len(memo) < _CONTENT_MAX:
                memo[t] = v
        if v is not None:
            out.append(v)
    return out
