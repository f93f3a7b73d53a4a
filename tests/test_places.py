from triage.text.places import PlaceExtractor


def names(text):
    px = PlaceExtractor()
    return [p.name for p in px.extract(text)]


def test_gazetteer_names_and_full_chains_are_found():
    assert names("云川市临河县石桥镇上庄村到镇上") == ["云川市", "临河县", "石桥镇", "上庄村"]


def test_aliases_map_to_canonical_names():
    assert names("北辰那边的路灯不亮") == ["北辰社区"]


def test_unknown_places_are_found_by_suffix():
    assert names("东风村和阳光花园小区之间") == ["东风村", "阳光花园小区"]


def test_pronoun_places_are_not_places():
    assert names("我们村的路坏了，农村公交也少") == []


def test_a_conjunction_never_begins_a_name():
    # real board: "离职几年,且前公司对接人员也离职" named a company "且前公司" and labelled the topic with it
    assert names("本人从广东离职几年,且前公司对接人员也离职不在了") == []
    # nor a quantifier or a verb (the staff list's top 20 showed 部分村 and 租用社区 as places)
    assert names("征收10多年现有情况:部分村民的安置房没有拿到") == []
    assert names("一个租用社区用房办民办学校的教育机构") == []
    assert names("石桥村民反映路灯不亮") == ["石桥村"]


def test_a_town_whose_name_holds_a_suffix_character_is_found_after_its_county():
    # "E12市秦桥镇东路村" matched "E12市秦" + 桥 first; 秦 alone is no name, and 镇东路 (a road) came
    # next: the town and the village were lost, and a topic was labelled with a road that isn't there
    assert names("请求修缮E12市秦桥镇东路村孩子们的上下学之路")[:3] == ["E12市", "秦桥镇", "东路村"]
    assert names("K3县高桥镇范林村的村民") == ["K3县", "高桥镇", "范林村"]
    # only where another suffix follows: 北 of C5市北路 is not the start of a school's name
    assert names("C5市北路舜德小学门口") == ["C5市", "舜德小学"]
    # and only after a unit or a place already found: a word that never sits in a name (者, 前, 座)
    # cuts a fragment, not the start of a name
    for text in ["或者镇卫生院", "以前镇卫生院", "这座桥村里人"]:
        assert names(text) == [], text


def test_primary_place_is_the_most_specific():
    px = PlaceExtractor()
    assert px.primary(px.extract("临河县石桥镇上庄村")).name == "上庄村"


def test_nested_places_are_compatible_and_sibling_villages_are_not():
    px = PlaceExtractor()
    assert px.compatible("上庄村", "石桥镇") is True
    assert px.compatible("上庄村", "龙潭村") is False
    assert px.compatible("上庄村", None) is None


def test_common_words_ending_like_places_are_not_places():
    assert names("加强农村公路建设，完善城乡公交，支持返乡创业，坐28路车") == []


def test_a_site_inside_a_known_place_is_one_place():
    assert names("石桥镇卫生院晚上没有医生") == ["石桥镇卫生院"]


def test_a_conflict_of_primary_places_is_forgiven_only_when_the_other_names_that_place():
    from triage.topics.cluster import Similarity, SimilarityConfig

    sim = Similarity(SimilarityConfig(), PlaceExtractor())
    # the proposal's primary is the village, but it names the clinic the complaint is about
    assert sim.place_term("龙潭乡卫生院", "松林村", frozenset({"龙潭乡卫生院"}), frozenset({"松林村", "龙潭乡卫生院"})) == 0.0
    # naming only the town both villages lie in is no evidence: still a conflict
    assert sim.place_term("上庄村", "龙潭村", frozenset({"上庄村", "石桥镇"}), frozenset({"龙潭村", "石桥镇"})) < 0
    assert sim.place_term("上庄村", "龙潭村") < 0


def test_administrative_units_without_a_gazetteer_entry_are_places_and_parents():
    # an office's gazetteer never lists every county; the organisers' anonymised codes look the same
    assert names("湖南省长沙市雨花区东塘街道") == ["湖南省", "长沙市", "雨花区", "东塘街道"]
    assert names("反映K5区中央华府小区停车难") == ["K5区", "K5区中央华府小区"]
    assert names("举报D10县安平镇酒厂拖欠工资") == ["D10县", "安平镇"]
    assert names("投诉K9县县第二中学强制补课") == ["K9县", "K9县第二中学"]
    assert names("L4县一中要求学生有偿补课") == ["L4县", "L4县一中"]


def test_a_school_or_compound_named_with_its_county_is_told_from_its_namesake_elsewhere():
    px = PlaceExtractor()
    assert px.compatible("K9县第一中学", "K3县第一中学") is False
    assert px.compatible("K9县二中", "K3县二中") is False
    assert px.compatible("K5区中央华府小区", "中央华府小区") is True


def test_words_ending_like_administrative_units_are_not_places():
    assert names("老城区和开发区的超市，广大市民反映小区门口太乱，节省开支，城市管理") == []
    assert names("建议北辰社区加装路灯") == ["北辰社区"]


def test_two_counties_are_different_places_and_a_county_may_hold_a_village():
    px = PlaceExtractor()
    assert px.compatible("K9县", "L3县") is False
    assert px.compatible("K9县", "东村") is None
    assert px.compatible("长沙市", "雨花区") is None


def test_a_bridge_keeps_its_numeral():
    assert "五一桥" in names("反对K7县拆除五一桥来建商业廊桥")


def test_sharing_only_a_city_is_no_evidence_but_sharing_a_compound_is():
    from triage.topics.cluster import Similarity, SimilarityConfig

    cfg = SimilarityConfig()
    sim = Similarity(cfg, PlaceExtractor())
    assert sim.place_term("K5市", "K5市") == 0.0
    assert sim.place_term("上庄村", "上庄村") == cfg.place_bonus
    # two places of different kinds that nothing relates (a county, a company elsewhere) count against
    assert sim.place_term("K10县", "J市邦万装修公司") == -cfg.place_unrelated
    # …unless the messages name a place in common
    assert sim.place_term("K10县", "J市邦万装修公司", frozenset({"J市"}), frozenset({"J市"})) == 0.0


def test_point_like_places_of_one_kind_differ_but_of_different_kinds_may_adjoin():
    from triage.topics.cluster import Similarity, SimilarityConfig

    px = PlaceExtractor()
    assert px.kind("幸福里小区") == "estate" and px.kind("东三路") == "road" and px.kind("松雅湖湿地公园") == "site"
    assert px.compatible("幸福里小区", "华邦小区") is False     # two compounds
    assert px.compatible("东四路", "滨湖路") is False            # two roads
    assert px.compatible("幸福里小区", "东三路") is None          # a compound on a road
    assert px.compatible("东四路", "松雅湖湿地公园") is None      # a crossing by a park
    cfg = SimilarityConfig()
    sim = Similarity(cfg, PlaceExtractor())
    # nothing in common: counted against, but no veto (two kindergartens' texts are not the same place)
    assert sim.place_term("幸福里小区", "东三路") == -cfg.place_unrelated
    # sharing only the district both lie in is no evidence for two point-like places...
    assert sim.place_term("恒大城小区", "星摇篮幼儿园", frozenset({"A5区", "恒大城小区"}),
                          frozenset({"A5区", "星摇篮幼儿园"})) == -cfg.place_unrelated
    # ...sharing a town or anything more specific is
    assert sim.place_term("幸福里小区", "东三路", frozenset({"泉塘街道", "幸福里小区"}),
                          frozenset({"泉塘街道", "东三路"})) == 0.0


def test_a_common_verb_before_the_suffix_is_the_sentences_unless_the_kind_is_named_after_it():
    assert names("多次召开村民大会") == [] and names("学生进入学校后被拦") == []
    assert names("泉塘安置小区停水") == ["泉塘安置小区"]
    assert "E市中西医结合医院" in names("E市中西医结合医院乱收费")
    assert "B市彩泉拍卖公司" in names("B市彩泉拍卖公司违规拍卖")     # a company named by its trade
    assert "F市金色摇篮幼儿园" in names("F市金色摇篮幼儿园收费太高")   # 摇篮: a rare "verb"
    # a verb that says what the place is for names it (a review's examples)
    assert names("滨江休闲广场晚上太吵") == ["滨江休闲广场"] and names("龙湖度假山庄违建") == ["龙湖度假山庄"]
    assert names("古玩收藏市场占道") == ["古玩收藏市场"]
    assert names("龙潭乡中心学校缺老师") == ["龙潭乡中心学校"]


def test_what_a_road_is_made_of_and_unnamed_kinds_of_site_are_not_places():
    assert names("村里修了一条水泥路") == [] and names("沿途变泥泞路") == []
    assert names("当地派出所不管") == [] and names("附近没有中心学校") == []


def test_a_kind_of_compound_is_not_a_place():
    assert names("经开区安置小区分下来，去超市买菜") == []
    assert names("投诉B9市人人乐超市收费") == ["B9市", "B9市人人乐超市"]


def test_a_rail_line_is_a_place_but_riding_one_is_not():
    assert names("呼吁长株潭城铁增开上下班高峰期车次") == ["长株潭城铁"]
    assert names("我每天坐地铁上班") == []


def test_a_name_that_starts_with_a_character_that_usually_ends_one_keeps_it():
    # 太 and 月 usually end a name's left context (太远, 每月); here they begin dictionary words
    assert "太阳山小区" in names("A4区青竹湖镇太阳山小区房主乱建")
    assert "太子庙镇" in names("G4县太子庙镇校车收费")
    # …but a common word is still no name: 周边小区, 所有小区
    assert names("周边小区和所有小区都停水") == []


def test_a_determiner_or_causative_never_begins_a_name():
    # 全邦 is a dictionary word, yet 全 here means "the whole": the compound is 邦华小区
    assert names("2018年锁了全邦华小区电梯") == ["邦华小区"]
    assert names("恳请领导为民作主，使华邦小区全体业主过上正常生活") == ["华邦小区"]


def test_a_name_with_two_characters_swapped_is_not_another_place():
    from triage.topics.cluster import Similarity, SimilarityConfig
    from triage.text.places import transposed

    assert transposed("华邦小区", "邦华小区") and transposed("J10县华邦小区", "J10县邦华小区")
    assert not transposed("东湖小区", "西湖小区") and not transposed("华邦小区", "华邦小区")
    assert not transposed("A12区", "A21区") and not transposed("12号楼", "21号楼")   # other numbers
    sim = Similarity(SimilarityConfig(), PlaceExtractor())
    # one citizen's retyped name is neither a penalty nor a bonus
    assert sim.place_term("邦华小区", "华邦小区") == 0.0
    # one changed character is another compound
    assert sim.place_term("东湖小区", "西湖小区") < 0.0


def test_a_number_before_a_name_is_not_part_of_it_and_neither_is_a_verb():
    assert names("A1区020万客莱餐饮公司卖的餐车无法使用") == ["A1区", "万客莱餐饮公司"]
    assert names("噪声很大，严重影响渌水大桥附近居民休息") == ["渌水大桥"]


def test_words_of_the_sentence_before_a_suffix_are_not_part_of_the_name():
    # a verb, adverb, conjunction or particle in front is the sentence's (real-board extractions)
    assert names("承载着山水湾小区业主的希望") == ["山水湾小区"]
    assert names("老板认识涌泉派出所的人") == ["涌泉派出所"]
    assert names("连接江南大道的那段") == ["江南大道"]
    # a stem made only of such words names no place: no false compound shared by two messages
    assert names("车辆随意进入小区") == []
    assert names("我已经走投无路了") == []
    assert names("然后村里不管") == []


def test_a_name_that_holds_a_verb_or_a_rare_verb_like_word_stays_whole():
    assert names("泉塘安置小区停水") == ["泉塘安置小区"]
    assert names("解放西路修路") == ["解放西路"]
    assert names("育才小学门口拥堵") == ["育才小学"]
    assert names("实验小学门口拥堵") == ["实验小学"]


def test_a_student_is_not_a_school():
    assert names("咨询B市政府大学生人才政策问题") == ["B市"]
    assert names("明德中学门口拥堵") == ["明德中学"]


def test_a_vocational_school_is_a_school_and_its_graduates_are_not():
    # K9县职业中专 and K9县二中 are two schools of one county: read as only "K9县", one school's
    # complaint joined the other school's topic on a real board (sentences here are our own)
    assert names("K9县职业中专国庆假期要求学生返校上课") == ["K9县", "K9县职业中专"]
    assert PlaceExtractor().compatible("K9县职业中专", "K9县二中") is False
    assert names("统招中专毕业生的档案怎么转") == []
    assert names("招聘对象为大中专毕业生") == []
    assert names("报名要求具有中专学历") == []
    # without its county or city, 中专 is a kind of school, not one
    for kind in ("孩子考上中专", "初中毕业读中专", "一所职业中专", "该职业中专的学生", "公办中专和民办中专"):
        assert names(kind) == [], kind


def test_cutting_sentence_words_keeps_the_offset_and_the_county():
    px = PlaceExtractor()
    found = px.extract("车辆承载着山水湾小区")
    assert [(p.name, p.start) for p in found] == [("山水湾小区", 5)]
    # the county before the sentence words still names the compound: two counties' schools stay two
    a = [p.name for p in px.extract("K9县随意进入星城小区")]
    assert "K9县星城小区" in a


def test_names_jieba_mistags_and_brand_names_stay_whole():
    assert names("前进路和联合村") == ["前进路", "联合村"]
    assert names("南方医院门诊") == ["南方医院"]
    assert names("金地格林公馆物业") == ["金地格林公馆"]
    assert names("顺丰速运公司送货慢") == ["顺丰速运公司"]
    assert names("之字港村修路") == ["之字港村"]


def test_a_school_followed_by_another_word_in_sheng_is_still_a_school():
    assert names("长郡中学生物老师") == ["长郡中学"]
    assert names("湘潭大学生活区停水") == ["湘潭大学"]


def test_an_unreadable_dictionary_leaves_places_untrimmed_not_broken(monkeypatch):
    from triage.text import normalise as text
    from triage.text import places

    def forget() -> None:
        for cached in (places._dictionary_tags, places._clause_vocabulary, places._clause_words):
            cached.cache_clear()

    def broken():
        raise OSError("no dictionary")

    forget()
    monkeypatch.setattr(text._tokenizer(), "get_dict_file", broken)
    try:
        assert names("阳光花园小区停水") == ["阳光花园小区"]
    finally:
        monkeypatch.undo()
        forget()
    assert names("车辆随意进入小区") == []


def test_related_place_sets_are_what_asking_every_pair_says():
    # the clustering asks about sets of names (a fast path); it must agree with the pairwise reading
    from itertools import product

    from triage.text.places import transposed

    px = PlaceExtractor()
    names = ["临河县", "石桥镇", "上庄村", "石桥镇上庄村", "云川市", "江北区", "华邦小区", "邦华小区", "东湖小区",
             "西湖小区", "K9县", "K9县二中", "K3县二中", "A12区", "A21区", "幸福里小区", "东三路", "临河中学"]
    sets = [frozenset(c) for c in product(names[:6], names[6:12])] + [frozenset([n]) for n in names]
    for xs, ys in product(sets, repeat=2):
        pairwise = any(px.compatible(x, y) is True or transposed(x, y) for x in xs for y in ys)
        assert px.related(xs, ys) is pairwise, (xs, ys)


def test_a_name_that_begins_with_a_calendar_word_keeps_it_and_a_road_far_or_slippery_is_none():
    # 月 ends 三月 and begins 月湖: a compound of that name after its city was found as the city alone
    assert names("A市月湖小区二期电梯老是坏") == ["A市", "A市月湖小区"]
    assert names("天河小区停水") == ["天河小区"]
    # the sentence's words stay out (numerals, 现任, 周边) and so do roads that are only far or wet
    assert names("周边小区很吵") == [] and names("现任村支书") == [] and names("走几段路") == []
    assert names("冬天天黑路远，家长还要来接") == [] and names("天黑路滑") == []
    # the calendar word begins the name: the time word before it stays out
    assert names("每天天河小区停水") == ["天河小区"] and names("一天天河路堵三次") == ["天河路"]


def test_a_verb_that_moves_someone_somewhere_is_no_part_of_the_name_however_rare():
    # a verb of arrival before 学校 put a false place into a staff label on a real board
    assert names("检查组上午十点才抵达学校") == []
    assert names("把户口迁入小区") == [] and names("考入学校") == []
    # names that hold such characters stay whole
    assert names("宏达小区停电") == ["宏达小区"] and names("前进路修路") == ["前进路"]


def test_places_of_many_texts_are_the_same_on_forked_workers_as_in_one_process():
    """A topic run reads every message's places on every core from PARALLEL_MIN texts: the names and
    primaries must not depend on how the texts were cut into chunks."""
    from triage.text.places import PARALLEL_MIN, PlaceExtractor

    stems = ["北辰社区楼道灯坏了", "上庄村到镇上的公交太少", "滨江路夜市油烟太大", "临河中学一个班七十多人",
             "石桥镇卫生院缺医生", "幸福里小区门口占道经营", "没有地点的一句话"]
    texts = [f"{stems[k % len(stems)]}，第{k}次反映" for k in range(PARALLEL_MIN + 40)]
    one = PlaceExtractor().names_and_primary(texts, workers=1)
    two = PlaceExtractor().names_and_primary(texts, workers=2)
    assert one == two and len(one[0]) == len(texts)
    assert "北辰社区" in one[0][0] and one[1][0] == "北辰社区" and one[1][6] is None
