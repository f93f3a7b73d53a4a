"""Places named in a message: gazetteer names (with their parent chain) plus suffix patterns.

Topics are "one problem at one place", so place extraction decides which messages may share a
topic. The gazetteer (corpora/gazetteer.yaml) gives canonical names, aliases and the hierarchy;
suffix patterns (…村, …小区, …路) catch the many places no gazetteer lists. Two messages are
place-compatible when their most specific places are equal or one contains the other.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from triage.config import corpora_dir
from triage.errors import ConfigError
from triage.text.lexicon import tokenizer as _tokenizer

log = logging.getLogger(__name__)

LEVELS = ("province", "city", "county", "town", "village", "estate", "site", "road")
#: how specific a level is (bigger = more specific); roads and sites are point-like
SPECIFICITY = {"province": 0, "city": 1, "county": 2, "town": 3, "road": 4, "site": 4, "village": 5, "estate": 5}

_SUFFIXES = [
    ("街道", "town"), ("社区", "village"), ("小区", "estate"), ("花园", "estate"), ("新村", "estate"),
    ("家园", "estate"), ("公寓", "estate"), ("宿舍", "estate"), ("大道", "road"), ("公路", "road"),
    ("省道", "road"), ("国道", "road"), ("小学", "site"), ("中学", "site"), ("幼儿园", "site"),
    ("医院", "site"), ("卫生院", "site"), ("菜市场", "site"), ("市场", "site"), ("广场", "site"), ("公园", "site"),
    ("汽车站", "site"), ("车站", "site"), ("派出所", "site"), ("卫生室", "site"), ("敬老院", "site"),
    ("养老院", "site"), ("公司", "site"), ("集团", "site"), ("学校", "site"), ("学院", "site"), ("大学", "site"), ("中专", "site"),
    ("酒店", "site"), ("宾馆", "site"), ("超市", "site"), ("商场", "site"), ("停车场", "site"), ("大厦", "estate"), ("新城", "estate"), ("名城", "estate"),
    ("华府", "estate"), ("华庭", "estate"), ("山庄", "estate"), ("公馆", "estate"), ("苑", "estate"),
    ("大桥", "site"), ("桥", "site"), ("城铁", "site"), ("地铁", "site"), ("高铁", "site"), ("镇", "town"), ("乡", "town"), ("村", "village"), ("路", "road"), ("街", "road"),
    ("巷", "road"),
]
# 省/市/县/区 are left to the gazetteer: as bare suffixes they match far more words (城市, 返县, 城区)
# than names an office does not already list.
# A gazetteer name followed by one of these is a site inside it (石桥镇卫生院, 龙潭村卫生室).
_SITE_AFTER = ("中心卫生院", "卫生院", "卫生室", "人民医院", "医院", "中心学校", "中心小学", "小学", "中学", "职业中专", "幼儿园", "派出所",
               "敬老院", "养老院", "便民服务中心", "服务中心", "菜市场", "市场", "汽车站", "车站", "广场", "公园")
_GENERIC_ENDINGS = ("农村公路", "乡村公路", "通村公路", "农村道路", "高速公路", "农资市场", "农贸市场", "批发市场",
                    "人才市场", "劳务市场", "零工市场", "文明小区", "老旧小区", "停车区",
                    # a kind of company or school, not one: 物业公司 is every compound's
                    "物业公司", "房地产公司", "开发公司", "保险公司", "电力公司", "供电公司", "自来水公司", "劳务公司",
                    "建筑公司", "装修公司", "快递公司", "网络公司", "科技公司", "有限公司", "公交公司", "出租车公司",
                    "担保公司", "贷款公司", "金融公司", "培训学校", "民办学校", "公办学校", "职业学校", "中小学校",
                    "驾驶学校", "该公司", "本公司", "大酒店", "新城", "历史名城", "文化名城", "户口村", "房地产市场",
                    "廊桥", "天桥", "立交桥", "高架桥", "便桥", "危桥", "小桥", "大超市", "小超市", "大型超市",
                    "地下停车场", "公共停车场", "大商场", "停车场", "生活超市", "坐地铁", "乘地铁", "修地铁", "坐高铁",
                    "乘高铁", "坐城铁", "乘城铁", "有限责任公司", "责任公司", "限责任公司",
                    # what a road or bridge is made of, not its name (修水泥路, 变泥泞路, 六孔石拱桥)
                    "水泥路", "烂泥路", "泥泞路", "砂石路", "泥巴路", "石拱桥", "村级公路")
# characters before a village/town suffix that make a common word, not a name (农村, 城乡, 返乡, 信用村)
_NOT_BEFORE_ADMIN = set("农城返回下家老山地园景辖片郊厂校都超全本该各报到去送进出因驻每邻用范通乡县市书")
_SUFFIXES_LONGEST = sorted(_SUFFIXES + [(s, "site") for s in _SITE_AFTER], key=lambda x: -len(x[0]))
_SUFFIX_RE = "|".join(re.escape(s) for s, _ in _SUFFIXES)
# What kind of site a name ends in (城铁, 医院, 小学, 公司): part of the problem, not of the place
# (长株潭城铁增开车次 and 63路公交车增开班次 differ in 城铁 / 公交车, the rest is one wording)
SITE_KINDS = frozenset(s for s, lv in _SUFFIXES_LONGEST if lv == "site" and len(s) >= 2)
_SUFFIX_LEVEL = dict(_SUFFIXES)
# 2-5 Han characters (or digits for 3号路) before a suffix
_PATTERN = re.compile(rf"([\u4e00-\u9fa5A-Za-z0-9]{{2,6}}?)({_SUFFIX_RE})")
# Words that look like "…村/…区/…路" but are not places, and prefixes that are not names.
_NOT_NAME_START = set("我你他她它们这那哪每各本该全此某其有在到从去回往和与及或的了是就也都还很太更最没不一两几多个些使")
# Characters that do not occur inside place names: the name starts after the last of them
# ("周边有两所中小学" → no name, "最近的站在科创大道" → 科创大道).
_NOT_IN_NAME = set("的了在到要去把被给让对为以于从往向有是和与及或等个所每周天年月日最近站过设增现辖就都也还很太更没不"
                   "我你他她它们这那哪什么啥怎咋俺说讲问看找想住离靠经谢感请帮围绕推致时处并且至")
# Administrative units (省/市/县/区) named without a gazetteer entry: 2-3 Han characters or a short
# letters-and-digits code before the unit character. As bare suffixes they match common words (城市,
# 小区, 返县), so a Han name counts only after a boundary (start, punctuation, a function word or another
# unit: 湖南省长沙市) and not with a last character that makes a common word (老城区, 超市, 节省).
_ADMIN_LEVEL = {"省": "province", "市": "city", "县": "county", "区": "county"}
_ADMIN_NOT_LAST = {
    "区": set("小社景园校片辖城郊山矿厂营学街灾范发护务住宅业开新老域牧居商盲误禁专风库站景港林"
             "车客货游戏息餐烟物场厅队点览验检待停候乘教办宿装卸堆放舍心税"),
    "市": set("城超菜夜早门股集上都黑花鱼级"),
    "县": set("郡州全本该各外区困壁"),
    "省": set("节反全本该各外")}
_ADMIN_NOT_NEXT = {"市": set("场民值面容貌价"), "区": set("域别分"), "省": set("钱事力心"), "县": set("长")}
_NUMERALS = set("一二三四五六七八九十")
_NUMBERED_SCHOOL = re.compile(r"县?[一二三四五六七八九十]{1,2}[中小](?![学心间期型部午])")
#: a Han-named province outside the gazetteer counts only when it is one of these (原先省, 节省 are not)
_PROVINCES = set("北京 天津 上海 重庆 河北 山西 辽宁 吉林 黑龙江 江苏 浙江 安徽 福建 江西 山东 河南 湖北 湖南 广东 海南 四川 贵州 云南 "
                 "陕西 甘肃 青海 台湾 内蒙古 广西 西藏 宁夏 新疆 香港 澳门".split())
# "…乡" followed by these is a word, not a township (乡亲, 乡下, 乡村, 乡镇)
_NOT_AFTER_TOWNSHIP = set("亲下村镇里间土音愁情")
_BOUNDARY = _NOT_IN_NAME | _NOT_NAME_START | set("报诉映省市县区")
# verbs a clause starts with, which the name pattern would otherwise swallow
_LEAD_VERBS = ("建议", "希望", "要求", "反映", "呼吁", "请求", "恳请", "投诉", "举报", "咨询", "鼓励", "支持", "加强", "推进",
               "拆除", "修建", "开通", "打通", "整治", "安装", "增加", "取消", "彻查", "撤出", "毁坏", "挖掘",
               # function words the lazy pattern swallows before a name (如果城铁公司, 特别镇, 原先省)
               "如果", "但是", "因为", "所以", "而且", "虽然", "已经", "目前", "现在", "还有", "特别", "直达", "原先",
               "位于", "靠近", "附近", "通往", "前往", "包括", "例如", "比如", "导致", "造成", "尤其", "只有", "即将",
               "公布", "村部", "强行", "变相", "出租", "租用", "清运", "整片", "即将将", "影响", "严重", "解决", "关系",
               # quantifiers: 部分村民 (some villagers), 部分小区 (some compounds) name no place
               "部分")
# "…路" words that are not roads (线路, 马路, 网路, 出路 …)
_NOT_ROAD_END = set("线道马走出思网电门公铁水套回来去上下心里号满指修筑铺让带")
# "…路" followed by these is another word (路灯, 路面, 路况, 路费, 路过)
_NOT_AFTER_ROAD = set("灯面况费政由径人过牌标障基远滑")
_NOT_PLACE = {
    "生活区", "农村", "乡村", "城区", "社区", "小区", "街道", "市区", "城市", "县城", "郊区", "景区", "园区", "片区", "辖区",
    "山区", "校区", "老城区", "新城区", "城乡", "下乡", "回乡", "家乡", "老乡", "同乡", "城镇", "乡镇", "村镇",
    "马路", "道路", "公路", "走路", "出路", "思路", "线路", "电路", "网路", "门路", "路上", "大街", "上街", "逛街",
    "市场", "超市", "菜市", "城市", "上市", "夜市", "早市", "门市", "股市", "集市", "市民",
    "全县", "本县", "全市", "本市", "全区", "本区", "全镇", "全村", "本村", "该村", "邻村", "各村", "外村",
    "医院", "大医院", "中学", "小学", "广场", "公园", "车站", "街巷", "背街小巷", "小巷", "地区", "专区", "禁区",
    "片区", "盲区", "误区", "学区", "新区", "旧区", "主城区", "开发区", "示范区", "保护区", "服务区", "居住区",
    "行政村", "自然村", "通村公路", "村道", "乡道", "县道", "中小学", "小区", "老小区", "新小区", "高速公路",
    "城中村", "空心村", "贫困村", "示范村", "农贸市场", "菜市场", "人行道", "斑马线", "十字路", "丁字路",
    "老旧小区", "老旧社区", "城市社区", "农村社区", "各社区",
    # kinds of compound, not one: a message naming "安置小区" names no particular place
    "安置小区", "还建小区", "回迁小区", "住宅小区", "居民小区", "商品房小区", "高档小区", "新建小区", "保障房小区",
    "公租房小区", "廉租房小区", "拆迁安置小区", "开放式小区", "封闭式小区", "居民区", "安置房小区", "县医院", "市医院", "大医院", "人民医院", "中医院", "妇幼医院", "私立医院", "民办小学", "公办小学",
    # kinds of site, named by what they are (read on the real board's place sample: bench/real_places.py)
    "中心学校", "专科医院", "眼科专科医院", "综合医院", "三级综合医院", "高层次医院",
    "开发商公司", "建筑工程公司", "施工公司", "当地派出所", "商业街", "步行街", "整条街",
    "景观桥", "生态村", "上学路", "开放性小区",
}


@dataclass(frozen=True)
class Place:
    name: str
    level: str
    start: int = -1
    known: bool = False          # from the gazetteer (has a parent chain)


@dataclass
class Gazetteer:
    parent: dict[str, str] = field(default_factory=dict)
    level: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def chain(self, name: str) -> list[str]:
        """The place and its ancestors, most specific first."""
        out, seen = [name], {name}
        while name in self.parent and self.parent[name] not in seen:
            name = self.parent[name]
            out.append(name)
            seen.add(name)
        return out


def load_gazetteer(path: str | Path | None = None) -> Gazetteer:
    p = Path(path) if path else corpora_dir() / "gazetteer.yaml"
    if not p.exists():
        return Gazetteer()
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    g = Gazetteer()
    for i, item in enumerate(data.get("places") or []):
        if not isinstance(item, dict) or not item.get("name"):
            raise ConfigError(str(p), f"places[{i}]", "每项需要 name（以及 level，可选 parent）")
        lvl = item.get("level", "site")
        if lvl not in LEVELS:
            raise ConfigError(str(p), f"places[{i}].level", f"{lvl!r} 不是 {', '.join(LEVELS)} 之一")
        g.level[item["name"]] = lvl
        if item.get("parent"):
            g.parent[item["name"]] = item["parent"]
    for alias, canon in (data.get("aliases") or {}).items():
        if canon not in g.level:
            raise ConfigError(str(p), f"aliases.{alias}", f"指向未登记的地名 {canon!r}")
        g.aliases[str(alias)] = str(canon)
    return g


@functools.lru_cache(maxsize=1)
def default_gazetteer() -> Gazetteer:
    return load_gazetteer()


#: characters that never start a name, whatever word they begin (的, 在, 我 …)
# determiners and causatives never begin a name, whatever word they make with the next character
# (锁了全邦华小区电梯: 全邦 is in the dictionary; 使华邦小区全体业主)
_NEVER_STARTS = set("的了在到是和与及或我你他她它们这那哪有把被给让对为于从往向就都也还很更没不全每各本该此某其使")


#: characters that end time expressions or are adverbs (三月, 两天, 每周, 太远) and begin many names
#: (月湖, 天河, 周家, 太湖)
_CALENDAR = set("年月日天周太")


def _starts_a_name(stem: str, k: int) -> bool:
    """Whether ``stem[k]``, a character that usually ends a name (太, 月, 周 …), here begins one: when
    it makes a dictionary word with the next character (太阳, 太子, 月湖) and the rest of the stem is
    not itself a common word (周边, 所有). "太阳山小区" lost its 太 and "月湖大市场" its 月 before.
    When that word is the whole rest of the stem, it must be an uncommon noun starting with a
    calendar character (:data:`_CALENDAR`), and the name begins with it."""
    if stem[k] in _NEVER_STARTS or k + 2 > len(stem):
        return False
    tok = _tokenizer()
    tok.check_initialized()
    word = tok.FREQ.get(stem[k:k + 2]) or 0
    if k + 2 == len(stem):
        # the word is the whole rest of the stem (月湖 of 月湖小区): a name when it starts with a
        # character of the calendar (三月, 两天, 每周 end there; 月湖, 天河, 天马, 太湖 begin there) and
        # is a noun that is not a common word (A市月湖小区 was found as A市 alone). Other characters that
        # never sit inside a name begin only sentence words here (现任村支书, 围观村民, 住户路)
        return stem[k] in _CALENDAR and 50 <= word < 1000 and stem[k:] in _noun_pairs()
    return word >= 50 and (tok.FREQ.get(stem[k:]) or 0) < 100


def transposed(a: str, b: str) -> bool:
    """Whether two names differ only by two neighbouring characters swapped (华邦小区 / 邦华小区).

    Citizens retype a compound's name and swap two characters; two real places whose names are the
    same characters in another order are rare enough that the swap is read as a misspelling (nothing
    says they are the same place, and nothing that they differ). One changed character (东湖小区 /
    西湖小区) is a different place and stays one.
    """
    if len(a) != len(b) or len(a) < 3 or a == b:
        return False
    diff = [k for k in range(len(a)) if a[k] != b[k]]
    if not (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]):
        return False
    # digits and letters swapped are other numbers (A12区 / A21区, 12号楼 / 21号楼), not a misspelling
    return all("\u4e00" <= a[k] <= "\u9fff" for k in diff)


#: parts of speech (jieba's tags) of words that belong to the sentence around a name, not to it: verbs,
#: adverbs, conjunctions, prepositions, pronouns, time and direction words, particles, idioms
_CLAUSE_POS = frozenset("v vd ad d c p r t f u uj ul uz ug ud uv y e o i".split())
#: ... of a single particle (承载着山水湾小区, 布着恒大翡翠华庭). Other single characters jieba tags as
#: prepositions or particles (比, 之, 地, 顺) are as often part of a brand name it does not know
#: (比华利山小区, 之字港村, 金地格林公馆), so only :data:`_FUNCTION_CHARS` join these
_CLAUSE_POS_ONE = frozenset("uj ul uz ug ud".split())
#: how common a word must be (jieba's dictionary count) to be read as the sentence's: rarer verbs are
#: often names themselves (育才小学, 致远路), so a whole stem is dropped only for a very common word;
#: cutting a word off the front keeps a name of two characters or more and may go further
_CLAUSE_FREQ = 1000
_CLAUSE_FREQ_CUT = 200
#: ... and for a verb right before the suffix (see :func:`_clause_words`): as for a whole stem, only a
#: very common verb; at 200, on the real board, 金色摇篮幼儿园 and 心萌芽幼儿园 went with 134 fragments
_CLAUSE_FREQ_VERB = 1000


#: single characters that the dictionary tags otherwise (沿 as a direction, 且 as a morpheme) but that
#: before a name are the sentence's prepositions and conjunctions (沿盼盼路, 且铭壕公司, 由丰恒公司, 跟黄星大道)
_FUNCTION_CHARS = frozenset("沿由因且但而自距及并朝跟用按据除凭")
#: words jieba tags as verbs, time or direction words that name roads, villages, schools and compounds
#: all over the country (解放西路, 前进村, 创新大道, 南方医院, 未来漫城小区): never the sentence's
_NAME_WORDS = frozenset("解放 前进 胜利 团结 和平 光明 红旗 建设 振兴 幸福 友谊 长征 东风 创新 联合 奋斗 起义 独立 实践 开放 "
                        "沿海 飞行 警察 初中 当代 现代 未来 春秋 南方 北方 东方 西方 中央 大同 大连 西部 东部 南部 北部 "
                        "中部 前锋 先锋 育才 求实 树人 振华 复兴 新华 人民 文化 科技".split())
#: after 大学/中学/小学, 生 starts another word here (长郡中学生物老师, 湘潭大学生活区), not 学生
_NOT_STUDENT = frozenset("物活态源命均产意日长成存病理育殖效前")
#: kinds of site whose name ends in a verb and its suffix (X县教师进修学校, E市中西医结合医院)
_VERB_KINDS = frozenset({"进修学校", "进修学院", "结合医院", "安置小区", "还建小区", "回迁小区", "保障小区", "度假酒店",
                         "度假村", "度假区"})
#: kinds of place (and kinds named after a verb): a common verb before their suffix is part of them
_KINDS = frozenset(_NOT_PLACE | _VERB_KINDS)
#: a verb ending in one of these moves someone to the place that follows (抵达学校, 驶入小区, 赶赴医院,
#: 考入学校): the place is its object, however rare the verb, and the name is missing
_TOWARDS = frozenset("入进达赴至")
#: suffixes of organisations and markets, which are named by their trade, often a verb (拍卖公司,
#: 放映公司, 投资集团, 古玩收藏市场)
_NAMED_BY_TRADE = frozenset({"公司", "集团", "市场"})
#: verbs that say what a place is for, and so name it (滨江休闲广场, 龙湖度假山庄, 开元接待宾馆)
_PURPOSE_VERBS = frozenset("休闲 度假 接待 收藏 拍卖 维修 锻炼 实验 游乐 娱乐 健身 养老 养生 培训 展览 批发 购物 停车 "
                           "居住 安置".split())


@functools.lru_cache(maxsize=1)
def _dictionary_tags() -> tuple[dict[str, str], frozenset[str]]:
    """What the place finder reads from jieba's dictionary file, in one read of it: the tag of every
    word that could be the sentence's (the tags of :data:`_CLAUSE_POS`), and the two-character words
    tagged as nouns or names. A regular-expression pass over the file is a fraction of the time
    jieba.posseg takes to load every word's tag."""
    try:
        with _tokenizer().get_dict_file() as f:
            text = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        # places are still found, only without trimming sentence words: better than no intake at all
        log.warning("无法读取 jieba 词典（%s），地名不再剔除句中词 / jieba's dictionary unreadable", exc)
        text = ""
    pattern = re.compile(r"^(\S+) \d+ (%s)$" % "|".join(sorted(_CLAUSE_POS, key=len, reverse=True)), re.M)
    tags = {w: t for w, t in pattern.findall(text) if w not in _NAME_WORDS}
    tags.update((c, "c") for c in _FUNCTION_CHARS)
    nouns = frozenset(re.findall(r"^(\S{2}) \d+ (?:n|ns|nz|nt|nr|nrt)$", text, re.M))
    return tags, nouns


def _noun_pairs() -> frozenset[str]:
    """Two-character words jieba's dictionary tags as nouns or names (月湖 n, 天河 ns). A numeral or a
    sentence word that makes a word with the next character (一组, 几家, 现任, 时任, 围观) is none of them."""
    return _dictionary_tags()[1]


def _clause_tags() -> dict[str, str]:
    """jieba's dictionary tag of every word that could be the sentence's, the rest left out."""
    return _dictionary_tags()[0]


@functools.lru_cache(maxsize=1)
def _clause_vocabulary() -> frozenset[str]:
    """Every word :func:`_clause_words` could read as the sentence's: a quick test before segmenting."""
    tok = _tokenizer()
    tok.check_initialized()
    freq = tok.FREQ
    return frozenset(w for w, f in _clause_tags().items()
                     if (len(w) == 1 and (f in _CLAUSE_POS_ONE or w in _FUNCTION_CHARS)) or f == "i"
                     or (len(w) >= 2 and (freq.get(w) or 0) >= _CLAUSE_FREQ_CUT))


@functools.lru_cache(maxsize=65536)
def _clause_words(stem: str, suffix: str) -> int | None:
    """How many leading characters of ``stem`` are words of the sentence rather than the name (0 when
    none), or None when the stem is nothing but such words.

    The suffix pattern takes up to six characters before 小区/路/公司, and the characters that cannot be
    inside a name (:data:`_NOT_IN_NAME`) stop it only where a sentence has one of them: on a city's
    real board the extracted "places" included 告诉公路, 承载着山水湾小区, 老板认识涌泉派出所, 然后村 and
    走投无路. Such a false primary place hides the real one (a county) and makes two messages about one
    compound look like two places. A word counts as the sentence's when jieba tags it as a verb,
    adverb, conjunction, preposition, pronoun, time or direction word, particle or idiom and it is a
    common word: rare "verbs" are often names (育才小学). What is left must still be a name of two
    characters or more; a stem whose every word is the sentence's is no place at all, unless a name
    word precedes a verb that is part of it (泉塘安置小区, 解放西路 stay whole).

    Words and tags come from jieba's dictionary (no HMM), and only names holding such a word are
    segmented at all: tagging in context with jieba.posseg cost four times as much (half a
    millisecond a message, and places are found twice: for topics and to keep place names from being
    masked as person names) for a few single prepositions that :data:`_FUNCTION_CHARS` covers. On
    the real board this changed the places of about 840 of 5,227 messages; read through, the names it
    removed were sentence words (进入小区, 然后村).
    """
    text = stem + suffix
    vocab = _clause_vocabulary()
    if not any(text[a:a + n] in vocab for a in range(len(text)) for n in (1, 2, 3, 4)):
        return 0   # most names hold no word that could be the sentence's: no segmenting needed
    tok, tags = _tokenizer(), _clause_tags()
    tok.check_initialized()
    freq = tok.FREQ
    if len(stem) == 2:
        # one word or two characters: nothing can be cut (a name keeps two characters), only a stem
        # that is one sentence word is dropped, and its dictionary tag says so (jieba.posseg's tagging
        # in context costs a millisecond a name, most of them this short)
        flag = tags.get(stem, "x")
        n = freq.get(stem) or 0
        return None if flag in _CLAUSE_POS and (n >= _CLAUSE_FREQ or (flag == "v" and stem[-1] in _TOWARDS)) else 0
    cut, pos = 0, 0
    junk_only = True
    for word in tok.lcut(text, HMM=False):
        flag = tags.get(word, "x")
        end = pos + len(word)
        if end > len(stem):
            # a word across the stem's end: an idiom swallowing the suffix (走投无路) is no name
            if flag == "i" and pos == 0:
                return None
            break
        n = freq.get(word) or 0
        one = len(word) == 1 and (word in _FUNCTION_CHARS or flag in _CLAUSE_POS_ONE)
        many = flag in _CLAUSE_POS and len(word) >= 2
        clause = one or (many and n >= _CLAUSE_FREQ)
        if (one or (many and n >= _CLAUSE_FREQ_CUT)) and len(stem) - end >= 2:
            cut, junk_only = end, True   # what follows the cut is judged on its own
        elif clause and junk_only and end == len(stem):
            return None
        elif (end == len(stem) and flag == "v" and len(word) >= 2
              and (n >= _CLAUSE_FREQ_VERB or word[-1] in _TOWARDS)
              and suffix not in _NAMED_BY_TRADE and word not in _PURPOSE_VERBS and word + suffix not in _KINDS):
            # a common verb right before the suffix governs it: 告知村(委), 占用学校, 利用学校, 搬入小区
            # are the sentence's. A kind of place named after a verb (泉塘安置小区, 教师进修学校,
            # 中西医结合医院) stays a name, and so does a company named by its trade (彩泉拍卖公司)
            return None
        else:
            junk_only = junk_only and clause
        pos = end
    return cut


class PlaceExtractor:
    """Finds places; longest match wins, gazetteer names before patterns."""

    def __init__(self, gazetteer: Gazetteer | None = None) -> None:
        self.gaz = gazetteer if gazetteer is not None else default_gazetteer()
        names = sorted(set(self.gaz.level) | set(self.gaz.aliases), key=len, reverse=True)
        self._gaz_re = re.compile("|".join(map(re.escape, names))) if names else None
        self._kind: dict[str, str | None] = {}
        self._compatible: dict[tuple[str, str], bool | None] = {}   # few distinct pairs, asked millions of times
        self._within: dict[str, frozenset[str]] = {}   # a name and the gazetteer places it lies in

    def extract(self, text: str) -> list[Place]:
        taken = [False] * len(text)
        found: list[Place] = []

        def claim(s: int, e: int) -> bool:
            if any(taken[s:e]):
                return False
            for k in range(s, e):
                taken[k] = True
            return True

        # 1. pattern matches that extend a gazetteer name ("北辰社区3栋" no; "石桥村" yes) are handled by
        #    matching gazetteer names first, longest first
        if self._gaz_re is not None:
            for m in self._gaz_re.finditer(text):
                name = m.group(0)
                canon = self.gaz.aliases.get(name, name)
                # an alias glued to more name characters is part of another name (临河中学 ≠ 临河县)
                if name in self.gaz.aliases and m.end() < len(text) and re.match(_SUFFIX_RE, text[m.end():]):
                    continue
                site = next((x for x in _SITE_AFTER if text.startswith(x, m.end())), None)
                if site and name == canon and claim(m.start(), m.end() + len(site)):
                    found.append(Place(canon + site, "site", m.start(), False))
                elif claim(m.start(), m.end()):
                    found.append(Place(canon, self.gaz.level[canon], m.start(), True))
        # 2. administrative units the gazetteer does not list (K3县, 宁乡县 after a boundary)
        units: dict[int, str] = {}   # where a unit ends → the unit, for names that follow it
        for e, unit in ((k, ch) for k, ch in enumerate(text) if ch in _ADMIN_LEVEL):
            s = self._admin_start(text, e, unit)
            if s is not None and claim(s, e + 1):
                found.append(Place(text[s:e + 1], _ADMIN_LEVEL[unit], s, False))
                units[e + 1] = text[s:e + 1]
                school = _NUMBERED_SCHOOL.match(text, e + 1)   # K9县二中, L4县一中: the county's own schools
                if school and claim(e + 1, school.end()):
                    found.append(Place(text[s:school.end()], "site", e + 1, False))
        # 3. suffix patterns for places the gazetteer does not know
        pos = 0
        while (m := _PATTERN.search(text, pos)) is not None:
            pos = m.end()
            stem, suffix = m.group(1), m.group(2)
            # the name starts after the last character that cannot be inside a name
            i = 0
            for k, ch in enumerate(stem):
                if ch in _NOT_IN_NAME or (ch in _NOT_NAME_START and not (ch == "一" and k and stem[k - 1] in _NUMERALS)):
                    if not _starts_a_name(stem, k):
                        i = k + 1   # (五一桥, 十一中 keep their 一)
                    elif k + 2 == len(stem) and k and (stem[k - 1] in _NOT_IN_NAME or stem[k - 1] in _NOT_NAME_START):
                        # the calendar word that is the rest begins the name after a time word
                        # (每天天河小区 → 天河小区), not after a name's own character (望月湖小区, 涔天河镇)
                        i = k
            # a unit already found (A5区, 宁乡县) is the place's parent, not part of its name: the lazy
            # pattern starts before or inside it ("映A5区中央" + 华府 for "反映A5区中央华府小区")
            for k in range(i, len(stem)):
                if taken[m.start() + k] or stem[k] in _ADMIN_LEVEL:
                    i = k + 1
            # the retry below is for a name cut short by a unit or a place already found (E12市秦…),
            # not by a word that never sits in a name (和平路 after 住 stays 和平路, not 平路)
            after_unit = i if i and (taken[m.start() + i - 1] or stem[i - 1] in _ADMIN_LEVEL) else -1
            # "建议北辰社区…" names 北辰社区, "广大市民反映小区…" and "建议社区…" name nothing
            cut = max((stem.rfind(lead) + len(lead) for lead in _LEAD_VERBS if lead in stem[i:]), default=i)
            i = max(i, cut)
            stem = stem[i:]
            # a number before a Han name is a code or a count, not part of it (A1区020万客莱餐饮公司),
            # unless it numbers the place itself (3号路, 2期小区)
            lead = re.match(r"[0-9]+(?=[\u4e00-\u9fa5]{2})", stem)
            if lead and stem[lead.end()] not in "号栋期组队楼单幢":
                i += lead.end()
                stem = stem[lead.end():]
            end = m.end()
            ext = re.match(_SUFFIX_RE, text[end:])
            if ext and ext.group(0) != suffix and ext.group(0) in ("小区", "社区", "新村", "公寓", "宿舍", "大道", "公路", "街道"):
                suffix, end = suffix + ext.group(0), end + len(ext.group(0))  # 阳光花园小区
            s0 = m.start() + i   # where the name began before any sentence words were cut off
            cut = _clause_words(stem, suffix)
            if cut is None:
                continue   # 准备小区, 然后村, 走投无路: words of the sentence, no name
            i, stem = i + cut, stem[cut:]
            name = stem + suffix
            if (len(stem) < 2 and 0 < i == after_unit < m.end() - m.start() - len(m.group(2))
                    and re.match(_SUFFIX_RE, text[m.end():])):
                # what is left after a unit is the start of the next name, and this match took a
                # character of it as its suffix, since another suffix follows: "E12市秦桥镇东路村"
                # matched "E12市秦" + 桥, and 镇东路 came next (秦桥镇 and 东路村 lost). Search again
                # where the name would begin.
                pos = m.start() + i
                continue
            if len(stem) < 2 or name in _NOT_PLACE or stem in _NOT_PLACE or stem.isdigit():
                continue
            if suffix in ("路", "街", "巷") and (stem[-1] in _NOT_ROAD_END or stem[-1].isdigit()
                                                or (suffix == "路" and text[end:end + 1] in _NOT_AFTER_ROAD)):
                continue  # 线路, 公里路, 28路 (a bus line), 加装路灯
            if suffix in ("大学", "中学", "小学") and text[end:end + 1] == "生" and text[end + 1:end + 2] not in _NOT_STUDENT:
                continue  # 大学生, 小学生: who, not where (B市政府大学生人才政策 named "政府大学")
            if suffix == "中专" and (text[end:end + 2].startswith(("生", "毕", "学历"))
                                   or not (units.get(m.start() + i) or units.get(s0))):
                # 中专生, 大中专毕业生, 中专学历: who or what degree, not where; and a 中专 is one school
                # only after its county or city (K9县职业中专), a kind of school otherwise (考上中专,
                # 一所职业中专, 公办中专)
                continue
            if suffix in ("村", "乡", "镇") and stem[-1] in _NOT_BEFORE_ADMIN:
                continue
            if suffix == "乡" and text[end:end + 1] in _NOT_AFTER_TOWNSHIP:
                continue
            if name.endswith(_GENERIC_ENDINGS):
                continue
            s = m.start() + i
            level = _SUFFIX_LEVEL.get(suffix, _SUFFIX_LEVEL.get(suffix[-2:], "site"))
            if claim(s, end):
                # a compound or school right after its county is named with it: K9县第一中学 and K3县第一中学
                # are two schools, 中央华府小区 and A5区中央华府小区 one (see compatible)
                unit = (units.get(s) or units.get(s0)
                        or (units.get(s0 - 1) if s0 and text[s0 - 1] in _ADMIN_LEVEL else None))
                found.append(Place(unit + name if unit and level in ("site", "estate") else name, level, s, False))
        found.sort(key=lambda p: p.start)
        return found

    @staticmethod
    def _admin_start(text: str, e: int, unit: str) -> int | None:
        """Where the name of the unit at ``text[e]`` starts, or None when it is no unit's name."""
        if e + 1 < len(text) and text[e + 1] in _ADMIN_NOT_NEXT.get(unit, ()):
            return None
        k = e
        while k > 0 and e - k < 4 and text[k - 1].isascii() and text[k - 1].isalnum():
            k -= 1
        if k < e and any(c.isalpha() for c in text[k:e]) and (unit != "区" or any(c.isdigit() for c in text[k:e])):
            # a code such as K3县, A5区, E市; a bare letter before 区 is a zone (B区3栋, 门诊B区), not a district
            return k if k == 0 or not (text[k - 1].isascii() and text[k - 1].isalnum()) else None
        for length in (3, 2):
            s = e - length
            stem = text[s:e] if s >= 0 else ""
            if len(stem) != length or not all("\u4e00" <= c <= "\u9fa5" for c in stem):
                continue
            if stem[0] in _BOUNDARY or any(c in _ADMIN_LEVEL or c in _NOT_IN_NAME for c in stem):
                continue
            if stem[-1] in _ADMIN_NOT_LAST.get(unit, ()) or stem + unit in _NOT_PLACE or stem in _NOT_PLACE:
                continue
            if unit == "省" and stem not in _PROVINCES and stem[-2:] not in _PROVINCES:
                continue
            if s == 0 or not ("\u4e00" <= text[s - 1] <= "\u9fa5") or text[s - 1] in _BOUNDARY:
                return s
        return None

    def names_and_primary(self, texts: Sequence[str], workers: int = 1) -> tuple[list[list[str]], list[str | None]]:
        """Every text's place names (in order) and its primary place, on ``workers`` forked processes
        for at least :data:`PARALLEL_MIN` texts.

        A topic run read the places of every message in one process after preparing them on every
        core: about 0.7 ms a message, 3.7 s of the real 5,227-message board's run on one core of two.
        """
        texts = list(texts)
        if workers > 1 and len(texts) >= PARALLEL_MIN:
            from triage.parallel import chunked_map

            parts = chunked_map(_names_and_primary, texts, workers, self)
            return [n for p in parts for n in p[0]], [q for p in parts for q in p[1]]
        return _names_and_primary(texts, self)

    def primary(self, places: list[Place]) -> Place | None:
        """The most specific place (ties: the first mentioned).

        Tried and left: preferring the places of a title (the first short line). On the real board
        titles mostly name the county or city, so two messages about different compounds of one
        county stopped disagreeing: member F1 0.859 → 0.832 (``bench/real_topics.py``).
        """
        if not places:
            return None
        return max(places, key=lambda p: (SPECIFICITY.get(p.level, 0), -p.start))

    def kind(self, name: str) -> str | None:
        """What kind of place a name is (a key of :data:`SPECIFICITY`): its gazetteer level, else its
        suffix's; None when nothing says."""
        k = self._kind.get(name, "")
        if k == "":  # memo: a few thousand names, asked about for every pair of place keys
            lvl = self.gaz.level.get(self.gaz.aliases.get(name, name))
            if lvl is None:
                lvl = next((lv for suf, lv in _SUFFIXES_LONGEST if name.endswith(suf)), None)
            if lvl is None and name[-1:] in _ADMIN_LEVEL:
                lvl = _ADMIN_LEVEL[name[-1]]
            if lvl is None and re.search(r"[一二三四五六七八九十][中小]$", name):
                lvl = "site"
            k = self._kind[name] = lvl
        return k

    def specificity(self, name: str) -> int:
        """How specific a place name is (:data:`SPECIFICITY`): its gazetteer level, else its suffix's."""
        return SPECIFICITY.get(self.kind(name) or "", 0)

    def compatible(self, a: str | None, b: str | None) -> bool | None:
        """True/False when both are known to agree/disagree; None when either is unknown."""
        if not a or not b:
            return None
        if a == b:
            return True
        key = (a, b)
        if key not in self._compatible:
            self._compatible[key] = self._compare(a, b)
        return self._compatible[key]

    def related(self, xs: Iterable[str], ys: Iterable[str]) -> bool:
        """Whether some name of ``xs`` and some of ``ys`` are one place or nest (:meth:`compatible` is
        True) or are one name with two characters swapped (:func:`transposed`).

        The same answer as asking every pair, without asking every pair: two messages' place sets
        are compared for each distinct pair of them that the clustering meets (about 90,000 on a
        city's 5,000 messages), and pair by pair that was a third of the clustering's time.
        :meth:`compatible` says True exactly when one name is the other's or one of its gazetteer
        ancestors (sets, compared once per side) or one name holds the other (a substring test).
        """
        xs, ys = [x for x in xs if x], [y for y in ys if y]
        if not xs or not ys:
            return False
        around_x = frozenset().union(*map(self._places_within, xs))
        if any(y in around_x for y in ys):
            return True
        around_y = frozenset().union(*map(self._places_within, ys))
        if any(x in around_y for x in xs):
            return True
        return any(x in y or y in x or (len(x) == len(y) and transposed(x, y)) for x in xs for y in ys)

    def _places_within(self, name: str) -> frozenset[str]:
        """The name and every gazetteer place that holds it (its chain)."""
        out = self._within.get(name)
        if out is None:
            out = self._within[name] = frozenset(self.gaz.chain(name))
        return out

    def _compare(self, a: str, b: str) -> bool | None:
        # :meth:`related` relies on this saying True only through the chain or a substring: keep them in step
        ca, cb = self.gaz.chain(a), self.gaz.chain(b)
        if a in cb or b in ca:
            return True
        if a in b or b in a:  # "上庄村" and "石桥镇上庄村"
            return True
        if transposed(a, b) and not (a in self.gaz.level and b in self.gaz.level):
            return None   # two gazetteer places are two places, however their names read
        la, lb = self.gaz.level.get(a), self.gaz.level.get(b)
        if la and lb and SPECIFICITY.get(la, 0) == SPECIFICITY.get(lb, 0):
            return False
        if not la or not lb:
            # names found by pattern: two different places of one administrative level (K3县 / K5县)
            # cannot be the same; two point-like places of one kind (two compounds, two roads, two
            # companies) neither names the other are different places. Of different kinds they may
            # adjoin or nest (a compound on a road, a crossing by a park, a company's office in a
            # building): on a city's real board the same problem's messages often chose different
            # such places as their primary, and calling them different split whole groups (the
            # crossing of 滨湖路 by 松雅湖湿地公园; a compound and the road of its bus line).
            # Anything else may nest (a county and a village)
            sa, sb = self.specificity(a), self.specificity(b)
            if sa >= 4 and sb >= 4 and self.kind(a) == self.kind(b):
                return False
            if sa == sb and a[-1] in _ADMIN_LEVEL and b[-1] in _ADMIN_LEVEL:
                return False
        return None


#: below this many texts one process reads their places sooner than forked workers start
PARALLEL_MIN = 500


def _names_and_primary(texts: Sequence[str], finder: PlaceExtractor) -> tuple[list[list[str]], list[str | None]]:
    """One chunk of :meth:`PlaceExtractor.names_and_primary` (a forked worker's share, or all of it)."""
    names, primary = [], []
    for t in texts:
        found = finder.extract(t)
        names.append([p.name for p in found])
        best = finder.primary(found)
        primary.append(best.name if best else None)
    return names, primary
