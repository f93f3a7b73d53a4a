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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from triage.config import corpora_dir
from triage.text.lexicon import COMPOUND_SURNAMES, SURNAMES, TITLES, tokenizer

log = logging.getLogger(__name__)

#: Typed placeholders. They are single jieba tokens (see corpora/userdict.txt) and contain no digits,
#: so masking is idempotent and later patterns never match inside them.
#: Changes whenever what masking hides changes (rules, the NER, its gates), how the masked text is
#: segmented or which places are found in it. A store records the version its masked texts, tokens and
#: places were made with; ``triage remask`` brings older rows up to this one.
MASKER_VERSION = "2026-12-07.8"

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

# Characters that end a name: a name is 1-2 given-name characters followed by one of these or by
# punctuation/space/digit/end. Keeps "本人今年70岁" and "我是一名教师" unmasked.
_NAME_STOP = set("是今住在的家电手联反男女年现系从一想要和与我也来已因对就说去有于及多等向找打给被让称投举带到经曾都又还告讲问送，,。.:：;；!！?？ \n")
_HONORIFICS = ("女士", "先生", "老师", "师傅", "阿姨", "大爷", "大妈", "同志")
# Words before a name: the writer's own, a contact, and the people a message is about (居民赵小红,
# 请联系李先生). Real messages name neighbours, officials and the accused far more often than after
# 我叫; each of these is a context in which a following surname + given name is a person.
_NAME_TRIGGER_RE = re.compile(r"(我叫|我名叫|本人叫|我名|名叫|起名|取名|本人|联系人|姓名|我是|署名|请联系|联系|居民|村民|业主|户主|举报人|投诉人|"
                              r"申请人|当事人|负责人|家属|患者|老人|员工|职工|工人)[:：\s]*")
# A surname followed by a title or an honorific is a person too (胡书记, 张主任, 王大爷, 李先生), wherever it
# stands; the title stays (the role matters to the complaint), the surname is masked.
_TITLED_NAME_RE = re.compile(
    "(" + "|".join(sorted(COMPOUND_SURNAMES, key=len, reverse=True)) + "|[" + "".join(sorted(SURNAMES)) + "])"
    "(?=副?(?:" + "|".join(sorted(TITLES, key=len, reverse=True)) + "))")   # 邓副镇长 too
_TITLES_LONGEST_FIRST = sorted(TITLES, key=len, reverse=True)
#: 姓 + a surname standing for a person (姓李的, 姓谢的庭长, 一位姓王的师傅); not 姓名, 百姓, 同姓
_SURNAME_ONLY_RE = re.compile("(?<![百老同贵])姓([" + "".join(sorted(SURNAMES)) + "])(?=的|同志|先生|女士|师傅)")
#: a surname + 姓 + who (那个王姓导游, 一名李姓男子): the surname is who
_SURNAME_THEN_XING_RE = re.compile("([" + "".join(sorted(SURNAMES)) + "])姓(?=[\u4e00-\u9fff])(?!名|氏|人|的|者)")
#: a surname with the given name partly starred (汤*程): still a name; a surname + stars alone (程**) is
#: as anonymous as 王某
_STARRED_NAME_RE = re.compile("[" + "".join(sorted(SURNAMES)) + "][*＊][\u4e00-\u9fff]")
#: a lone surname heading a contact in a list of numbers (代表电话:宋0000-…,曹〔手机号〕): who the line is
_SURNAME_BEFORE_NUMBER_RE = re.compile(r"(?<=[:：,，、;；\s])([" + "".join(sorted(SURNAMES)) + r"])(?=\d{5,}|\d{3,4}-\d|〔手机号〕|〔固话〕)")
# what may stand right before a titled surname: not another Han character that would make the surname
# part of a word (公安局局长, 学校校长, 各位老师, 这位大爷)
_TITLED_BEFORE_OK = set("，,。.:：;；!！?？、 \n（(“\"《对向找给被让跟和与请问告诉说是的了有个位")


def _han(c: str) -> bool:
    return "\u4e00" <= c <= "\u9fff"


def _name_at(s: str, i: int) -> int:
    """Length of a person's name starting at s[i], or 0."""
    n = len(s)
    if s[i : i + 2] in COMPOUND_SURNAMES:
        j = i + 2
    elif i < n and s[i] in SURNAMES:
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


def _mask_numbers(text: str, found: list[tuple[str, str]]) -> str:
    """Every kind of personal data but names, masked (what :func:`mask_pii` does before the names)."""
    s = _sub(_EMAIL_RE, "email", text, found, keep=lambda v: not _stand_in_email(v))
    # after 身份证号 (or 证件号码) a number is an ID number whatever its check digit or length: citizens
    # mistype, and a wrong digit must not put the rest of the number in clear (fail closed)
    s = _ID_ANY_RE.sub(lambda m: _hide_id(m, found), s)   # one pass: ``found`` keeps text order
    # after 银行卡/卡号/账号 a long number is a card whatever its Luhn digit, after 电话/手机/联系方式 a
    # number is a phone one digit short or long: the context wins over the checksum (fail closed)
    s = _CARD_ANY_RE.sub(lambda m: _hide_card(m, found), s)
    s = _PHONE_ANY_RE.sub(lambda m: _hide_phone(m, found), s)
    s = _PLATE_LIST_RE.sub(lambda m: _hide_plates(m, found), s)
    s = _PLATE_CONTEXT_RE.sub(lambda m: _hide_after(m, "plate", found), s)   # 牌照为LWS577
    s = _CONTACT_RE.sub(lambda m: _hide_after(m, "other_contact", found), s)  # QQ 12345678, 微信号 abc_123
    return s


def mask_pii(text: str) -> Masked:
    """Replace personal data with typed placeholders (〔手机号〕 …).

    Expects normalised text (ASCII digits). ID numbers are masked only when their check digit
    is valid; an 18-digit run that fails it but passes Luhn is masked as a bank card, and any
    other long digit run is left alone (order numbers, amounts).
    """
    found: list[tuple[str, str]] = []
    s = _mask_numbers(text, found)
    return Masked(_mask_names(s, found), found)


def mask_pii_many(texts: Sequence[str]) -> list[Masked]:
    """:func:`mask_pii` of each text, the same results, with the NER reading the clauses of all the
    texts together (:func:`triage.text.names.persons_many`): about twice as fast in its share of the work."""
    from triage.text.names import persons_many

    found = [[] for _ in texts]
    masked = [_mask_numbers(t, f) for t, f in zip(texts, found)]
    persons = persons_many(masked)
    return [Masked(_mask_names(s, f, p), f) for s, f, p in zip(masked, found, persons)]


# a fleet listed after one full plate gives the others by their tails (楚ED8378,8387,8333): each is a plate
# (a year after a plate is not one: 楚BY1798,2014被公司…)
_PLATE_LIST_RE = re.compile(f"(?:{_PLATE_RE.pattern})"
                            f"(?:[,，、/] ?(?!(?:19|20)[0-9]{{2}}(?![A-Za-z0-9]))[A-Za-z0-9]{{4,5}}(?![A-Za-z0-9年月日号元万个次辆人%]))*")


def _hide_plates(m: re.Match[str], found: list[tuple[str, str]]) -> str:
    out = []
    for part in re.split(r"([,，、/] ?)", m.group(0)):
        if not part or re.fullmatch(r"[,，、/] ?", part):
            out.append(part)
            continue
        found.append(("plate", part))
        out.append(PLACEHOLDERS["plate"])
    return "".join(out)


_PLATE_CONTEXT_RE = re.compile(r"(车牌号码|车牌号|车牌|牌照|号牌|牌号)([:：\s是为“\"]{0,3})([A-Za-z0-9]{5,7})(?![A-Za-z0-9])")
_CONTACT_RE = re.compile(r"(QQ号?|qq号?|Qq|微信号?)([:：\s是为]{0,3})([0-9]{5,12}|[A-Za-z][A-Za-z0-9_\-]{5,19})(?![A-Za-z0-9_])")


def _hide_after(m: re.Match[str], kind: str, found: list[tuple[str, str]]) -> str:
    """What follows a context word (牌照, QQ, 微信号): the value is the kind the word says."""
    if not any(c.isdigit() for c in m.group(3)):
        return m.group(0)   # 微信公众号, 车牌号码查询: words, not values
    found.append((kind, m.group(3)))
    return m.group(1) + m.group(2) + PLACEHOLDERS[kind]


_GLUED_STAND_IN_RE = re.compile(r"0{4}[\-—–]?0{7,8}$")


#: a national service code behind an area code (0731-12345, 0731-12333): a public line, not a person's
_SERVICE_CODE_RE = re.compile(r"(?:0\d{2,3}[ \-—–]?)?1\d{4}")


def _stand_in_email(value: str) -> bool:
    """An e-mail whose local part is the organisers' zeros (0000-@qq.com): nothing left to hide."""
    return _placeholder(re.sub(r"\D", "", value.split("@", 1)[0])) and not re.search(r"[A-Za-z1-9]", value.split("@", 1)[0])


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
    r"(电话|手机|联系方式|联系号码|手机号|拨打|致电|热线)((?:号码|号)?[:：\s是为(（]{0,3})"
    r"(\+?[0-9]{2,4}(?:[ \-—–]?[0-9]{3,8}){0,3}(?:[、,，/或和][0-9]{7,8}(?![0-9]))*)(?![0-9*])")
# a mobile with its middle digits starred (139-****-0929) still names a line: seven digits are left
# (or dashed out: 189---6777)
_STARRED_MOBILE = r"(?<!\d)1[3-9]\d[ -]?(?:\*{4}|-{3,4})[ -]?\d{4}(?!\d)"
# a local number dialled a few words after 打 (打电话去问4310205, 先打了一个5324333, 你打5325191): seven or
# eight digits starting 2-8, not an amount or a count (打了5000000元, 打造3000000平方米)
_DIALLED = r"(?P<dial>打[^\d。！？!?\n，,；;]{0,8}?)(?P<dialed>(?<!\d)[2-8]\d{6,7})(?![\d元万块千百次人年号米个平%．.])"
# further local numbers listed after a landline: (0746-8353066、8367386)
_LANDLINE_LIST = r"(?:[、,，/或和][2-8]\d{6,7}(?!\d))*"
_PHONE_ANY_RE = re.compile(f"{_PHONE_CONTEXT_RE.pattern}|(?P<mobile>{_MOBILE_RE.pattern}|{_STARRED_MOBILE})"
                           f"|(?P<landline>(?:{_LANDLINE_RE.pattern}){_LANDLINE_LIST})|{_DIALLED}")


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
    if m.group("dialed") is not None:
        found.append(("landline", m.group("dialed")))
        return m.group("dial") + PLACEHOLDERS["landline"]
    if m.group("mobile") is not None:
        if _placeholder(re.sub(r"\D", "", m.group("mobile"))):
            return m.group("mobile")
        found.append(("mobile", m.group("mobile")))
        return PLACEHOLDERS["mobile"]
    if m.group("landline") is not None:
        out = []
        for part in re.split(r"([、,，/或和])", m.group("landline")):
            if not re.search(r"\d", part) or _placeholder(re.sub(r"\D", "", part)):
                out.append(part)
                continue
            found.append(("landline", part))
            out.append(PLACEHOLDERS["landline"])
        return "".join(out)
    out, hid = [], False
    for part in re.split(r"([、,，/或和])", m.group(3)):   # 电话：8353066、8367386: each number of a list
        stand_in = _GLUED_STAND_IN_RE.search(part)   # 68469280000-00000000: a number, then 0000-00000000
        if stand_in and stand_in.start() >= 6:
            tail, part = part[stand_in.start():], part[:stand_in.start()]
        else:
            tail = ""
        digits = re.sub(r"\D", "", part)
        if not digits or _placeholder(digits) or not 6 <= len(digits) <= 15 or _SERVICE_CODE_RE.fullmatch(part.strip()):
            out.append(part)   # 电话2023-10-15: a date, not a number; 0000-00000000: a stand-in
            continue
        kind = "mobile" if digits.startswith(("1", "861", "+861")) and 10 <= len(digits) <= 13 else "landline"
        found.append((kind, part))
        out.append(PLACEHOLDERS[kind] + tail)
        hid = True
    return m.group(1) + m.group(2) + "".join(out) if hid else m.group(0)


#: triggers after which a name is all but certain (the writer names themself or a contact)
_SELF_NAMING = {"我叫", "我名叫", "我名", "本人叫", "本人", "我是", "姓名", "联系人", "署名"}   # fail closed: 本人李娜


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
_REN_AS_VERB_AFTER = set("局委部院所厅处办镇乡县市区村司曾现兼出升调继担就原新")


def _name_spans(s: str, persons: list[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
    """(start, end) of every name: after a trigger word (我叫张三, 居民赵小红), a surname before a
    title (胡书记: the surname only), and what the NER calls a person (triage.text.names), in text order,
    overlapping finds merged."""
    spans = []
    for m in _NAME_TRIGGER_RE.finditer(s):
        # a name that runs on into the next word (村民张国庆身上) when the plain rule finds none
        length = _name_at(s, m.end()) or (_name_length(s, m.end()) if s[m.end():m.end() + 1] in SURNAMES
                                          and m.group(1) not in _SELF_NAMING and not _not_places_at(s, m.end())
                                          else 0)
        if length and m.group(1) not in _SELF_NAMING and (_common_word(s[m.end():m.end() + length])
                                                           or s[m.end()] in _SURNAME_ALSO_WORD
                                                           or _surname_starts_word(s[m.end():m.end() + 2])):
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
        if m.group(1) in _SURNAME_ALSO_WORD and not _salutation(s, i, m.end() + len(title)):
            continue   # 向县长反映, 和书记谈 (but a letter's "向书记:" names its reader)
        if m.group(1) == "任" and i > 0 and s[i - 1] in _REN_AS_VERB_AFTER:
            continue
        if s.startswith("书记录", m.end()):      # 文书记录
            continue
        spans.append((i, m.end()))
    for m in _SURNAME_ONLY_RE.finditer(s):   # 一户姓李的, 法院姓谢的庭长: the surname is who
        spans.append((m.start(1), m.end(1)))
    for m in _SURNAME_THEN_XING_RE.finditer(s):
        if not (m.start() and _word_freq(s[m.start() - 1:m.end()]) >= 5):   # 百家姓, 老百姓
            spans.append((m.start(1), m.end(1)))
    spans += [(m.start(), m.end()) for m in _STARRED_NAME_RE.finditer(s)]
    spans += [(m.start(1), m.end(1)) for m in _SURNAME_BEFORE_NUMBER_RE.finditer(s)]
    spans += _role_then_name(s)
    spans += _name_then_title(s)
    if persons is None:
        from triage.text.names import person_spans   # the NER, where a cheap test says a name may be

        persons = person_spans(s)
    spans += persons
    spans = _merge(spans + _repeats(s, _merge(spans)))
    return _merge(spans + _listed_with(s, spans))


_LIST_SEP = "、,，"


def _listed_with(s: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Names listed beside a name already found (金娥雪、金娇丽、王权思等人; 肖和均,肖利红): an item of
    two or three Han characters between list separators (or before 等), starting with a surname, is a
    name when a neighbouring item is one. Walks outwards from every name found, both ways."""
    found = set(spans)
    out: list[tuple[int, int]] = []
    todo = list(spans)
    while todo:
        a, b = todo.pop()
        for start, end in (_next_item(s, b), _previous_item(s, a)):
            if start is None or (start, end) in found:
                continue
            item = s[start:end]
            # the list is the context: 王权思 is listed as a person even though 王权 is a word
            if item[0] in SURNAMES and item[0] not in _SURNAME_ALSO_WORD and not _common_word(item) \
                    and not _org_or_place(item) and all(_han(c) for c in item):
                found.add((start, end))
                out.append((start, end))
                todo.append((start, end))
    return _not_places(s, out)


def _next_item(s: str, b: int) -> tuple[int | None, int]:
    if b >= len(s) or s[b] not in _LIST_SEP:
        return None, 0
    k = b + 1
    e = k
    while e < len(s) and e - k < 3 and _han(s[e]) and s[e] not in "等":
        e += 1
    if 2 <= e - k <= 3 and (e >= len(s) or s[e] in _LIST_SEP or s[e] in "等。.;；)）\n"):
        return k, e
    return None, 0


def _previous_item(s: str, a: int) -> tuple[int | None, int]:
    if a == 0 or s[a - 1] not in _LIST_SEP:
        return None, 0
    e = a - 1
    k = e
    while k > 0 and e - k < 3 and _han(s[k - 1]):
        k -= 1
    if 2 <= e - k <= 3 and (k == 0 or s[k - 1] in _LIST_SEP or not _han(s[k - 1]) or s[k - 1] in "如有和与及由"
                            or s[k - 1] in _TITLED_BEFORE_OK):
        return k, e
    return None, 0


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start < out[-1][1]:   # found two ways: one name, as wide as both say
            out[-1] = (out[-1][0], max(out[-1][1], end))
            continue
        out.append((start, end))
    return out


def _repeats(s: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Every other place in ``s`` where a full name found once stands again: a message names the
    accused or a neighbour several times, and a rule or the NER often sees only one of them (the
    second 邹民爱 after a full stop, 罗威 in a bracket). Two characters at least, and not a common word."""
    names = {s[a:b] for a, b in spans if b - a >= 2 and all(_han(c) for c in s[a:b]) and _word_freq(s[a:b]) < 5
             and s[a] not in _SURNAME_ALSO_WORD and not _org_or_place(s[a:b])}
    out = []
    for name in names:
        k = s.find(name)
        while k >= 0:
            if s[k + len(name):k + len(name) + 1] not in _NOT_IN_GIVEN:   # 成安组 is a place
                out.append((k, k + len(name)))
            k = s.find(name, k + len(name))
    return out


#: roles that stand right before the name of the person holding them (院长张丽华, 副镇长邓科先,
#: 店主李丽小, 控告人李生正, 总经理欧阳荣救): the role is kept, the name after it masked
_ROLES_BEFORE = tuple(sorted(set(TITLES) - {"女士", "先生", "阿姨", "大爷", "大妈", "同志", "大哥", "大姐", "奶奶",
                                               "爷爷", "婆婆", "老板", "老总", "会计"} | {
    "总指挥", "指挥长", "店主", "老板娘", "控告人", "被告人", "原告", "被告", "求助人", "收费员", "工作人员", "干部",
    "主席", "委员", "支书", "会长", "社长", "秘书", "司机", "护士", "教师", "班主任", "同学", "同事", "丈夫", "妻子",
    "老婆", "老公", "儿子", "女儿", "母亲", "父亲", "哥哥", "姐姐", "弟弟", "妹妹", "主人", "领导", "姑父", "姑妈",
    "舅舅", "叔叔", "伯伯", "岳父", "岳母", "女婿", "媳妇", "侄子", "外甥"}, key=len, reverse=True))
_ROLE_BEFORE_RE = re.compile("(?:" + "|".join(_ROLES_BEFORE) + r")[:：\s]?(?=[" + "".join(sorted(SURNAMES)) + "])")


#: surname characters that far more often start an ordinary word (查证, 严查, 明察, 管理, 成安组)
_WEAK_SURNAMES = set("查严明管和于向从及与成任方安文时费付金田高白石常关全应边师商车连宁尚包单司易能解万马")


def _surname_starts_word(pair: str) -> bool:
    """Whether a surname character and the next make a word rather than the start of a name: any
    dictionary word for the weak surnames, a frequent one for the rest (李强 159 and 李宁 60 are
    names in jieba's dictionary, 张口 361 and 周末 654 are not)."""
    return _word_freq(pair) >= (5 if pair[0] in _WEAK_SURNAMES else 200)


#: characters a given name is not made of: those of bodies and places (党总支, 高塘组, 金侨城, 温氏)
_NOT_IN_GIVEN = set("总支部委办会组村镇乡县市区局厅处室队站所司城氏湖塘垅冲")


def _org_or_place(name: str) -> bool:
    return any(c in _NOT_IN_GIVEN for c in name[1:])


def _name_length(s: str, i: int) -> int:
    """Length of a full name (surname + one or two given characters) at ``s[i]`` where the name runs on
    into the next word (院长张丽华态度恶劣, 村民张国庆身上): the given name ends where a common word or a
    particle begins. 0 when the characters read as a word (张口, 周末) or as nothing name-like."""
    j = i + 2 if s[i:i + 2] in COMPOUND_SURNAMES else i + 1
    if s[i] in _SURNAME_ALSO_WORD or (j == i + 1 and _surname_starts_word(s[i:i + 2])):
        return 0   # 和孩子, 严查, 查证, 管理: a word, not a surname and a given name
    for given in (2, 1):
        e = j + given
        if e > len(s) or not all(_han(c) and c not in _NAME_STOP for c in s[j:e]) or _common_word(s[i:e]) \
                or _org_or_place(s[i:e + 1]):
            continue
        if _word_freq(s[j:e + 1]) >= 100 or (given == 2 and _word_freq(s[j + 1:e + 1]) >= 100 and e < len(s)
                                              and _han(s[e])):
            continue   # a given character that makes a word with the next: not where the name ends
        nxt = s[e:e + 2]
        if e >= len(s) or not _han(s[e]) or s[e] in _NAME_STOP or s[e] in "之同副" or _word_freq(nxt) >= 100 \
                or any(s.startswith(t, e) for t in TITLES):
            return e - i
    return 0


def _role_then_name(s: str) -> list[tuple[int, int]]:
    """A name right after the role its holder plays (see :data:`_ROLES_BEFORE`)."""
    out = []
    for m in _ROLE_BEFORE_RE.finditer(s):
        length = _name_length(s, m.end())
        if length:
            out.append((m.end(), m.end() + length))
    return _not_places(s, out)


_TITLE_AFTER_RE = re.compile("副?(?:" + "|".join(t for t in _TITLES_LONGEST_FIRST if t not in _HONORIFICS) + ")")


def _salutation(s: str, i: int, end: int) -> bool:
    """Whether the name + title at ``s[i:end]`` opens a letter or a paragraph (向书记: …, 尊敬的衡华书记!):
    it stands at the start of a line or after 尊敬的/敬爱的, and a colon or an exclamation follows."""
    opens = i == 0 or s[i - 1] in "\n \t" or s[:i].endswith(("尊敬的", "敬爱的", "亲爱的"))
    return opens and s[end:end + 1] in (":", "：", "!", "！", ";", "；", ",", "，")


def _name_then_title(s: str) -> list[tuple[int, int]]:
    """A full name before a title (尊敬的胡奇厅长, 社区周坚书记, 张在要副局长): the title's surname rule
    masks only one character before it; here two or three are, when they start with a surname, make no
    common word and stand after a boundary or a role."""
    out = []
    for m in _TITLE_AFTER_RE.finditer(s):
        t = m.start()
        for length in (3, 2):
            i = t - length
            if i < 0 or not all(_han(c) for c in s[i:t]):
                continue
            if s[i] not in SURNAMES:
                # a given name + title heading a letter (尊敬的衡华书记:): the given name (not 尊敬的市委书记)
                if length == 2 and _salutation(s, i, m.end()) and _word_freq(s[i:t]) < 5 and not _org_or_place(" " + s[i:t]):
                    out.append((i, t))
                    break
                continue
            if _common_word(s[i:t]) or (length == 3 and _word_freq(s[i + 1:t]) >= 100) or _surname_starts_word(s[i:i + 2]) \
                    or s[i] in _SURNAME_ALSO_WORD or _org_or_place(s[i:t]):
                continue
            before = s[i - 1] if i else ""
            if before and _han(before) and before not in _TITLED_BEFORE_OK and not s[:i].endswith(_ROLES_BEFORE) \
                    and not s[:i].endswith(("社区", "村", "镇", "局", "县", "市", "区", "敬的")):
                continue
            out.append((i, t))
            break
    return _not_places(s, out)


def _not_places_at(s: str, i: int) -> bool:
    """Whether a place name covers ``s[i]``."""
    from triage.text.names import place_spans

    return any(a <= i < b for a, b in place_spans(s))


def _not_places(s: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` less those that overlap a place name (张家湾村 is where, not who)."""
    if not spans:
        return spans
    from triage.text.names import place_spans

    places = place_spans(s)
    return [(a, b) for a, b in spans if not any(x < b and a < y for x, y in places)]


def _mask_names(s: str, found: list[tuple[str, str]], persons: list[tuple[int, int]] | None = None) -> str:
    """Names replaced by 〔姓名〕 in one pass, so that ``found`` lists them in text order (unmask
    restores placeholders in that order). ``persons``: the NER's finds, when worked out already."""
    out, pos = [], 0
    for start, end in _name_spans(s, persons):
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


def clean_many(texts: Sequence[object]) -> list[Masked]:
    """:func:`clean` of each text (the same results), faster for many texts (:func:`mask_pii_many`)."""
    return mask_pii_many([normalize(t) for t in texts])


# --------------------------------------------------------------------------- segmentation

_PUNCT_RE = re.compile(r"^[\W_]+$")


_tokenizer = tokenizer   # this module's own name for it (and what tests patch)


@functools.lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    path: Path = corpora_dir() / "stopwords.txt"
    if not path.exists():
        return frozenset()
    return frozenset(w.strip() for w in path.read_text(encoding="utf-8").splitlines() if w.strip())


_PLACEHOLDER_ALT = "|".join(map(re.escape, PLACEHOLDERS.values()))
#: a place written as a code of letters and digits and its unit (A市, K10县, A5区; 区 only after a
#: digit, as places.py reads it: B区 is a zone of a compound). Public message boards anonymise every
#: city, county and district this way. jieba reads the code, the unit and the following name as words:
#: A7县长龙街道 became "a7 县长 龙 街道" (a county head), A7县楚龙西路 "a7 县楚龙 西路", so the code's
#: unit glued itself to a neighbour and two messages about different roads of one county shared
#: "县楚龙"-like words that no place list could take out (bench/real_topics.py).
#: Not before the characters that make the unit part of another word, as places.py reads them too
#: (IT市场, C市值, S省钱, A5区域), nor inside a longer Latin word (Wi-Fi市). 县长 is let through:
#: "A7县长龙街道" is far likelier than a county head addressed by code.
PLACE_CODE_RE = re.compile(r"(?<![A-Za-z0-9._\-])[A-Za-z]{1,2}[0-9]{0,3}"
                           r"(?:市(?![场值面容貌价])|省(?![钱事力心])|县|(?<=[0-9])区(?![域别分]))")
#: what jieba must not cut: a placeholder or a place code (one group: split puts each at an odd index)
_PIECES_RE = re.compile(f"({_PLACEHOLDER_ALT}|{PLACE_CODE_RE.pattern})")


def _cut(text: str):
    """jieba over the text, with masking placeholders kept whole (jieba would split at 〔 〕) and
    lettered place codes (:data:`PLACE_CODE_RE`) cut out as one word each."""
    tok = _tokenizer()
    for k, piece in enumerate(_PIECES_RE.split(text)):
        if not piece:
            continue
        if k % 2:
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
