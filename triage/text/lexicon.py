"""The civic lexicon every text stage reads: jieba with the project's user dictionary, surnames, titles.

Masking (:mod:`triage.text.normalise`), the name NER (:mod:`triage.text.names`) and the place finder
(:mod:`triage.text.places`) all need these. They lived in ``text``, so ``names`` imported ``text`` while
``text`` imported ``names``: a cycle. Here, below all three, they are read by each and import none.
"""

from __future__ import annotations

import functools
import logging

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
