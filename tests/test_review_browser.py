"""The review page in a real browser: Playwright driving Debian's Chromium against a live server.

Skipped, with the reason, where Chromium or Playwright is absent. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from .conftest import ROOT, serving

CHROMIUM = os.environ.get("TRIAGE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'

pytestmark = [pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason=f"Chromium not found at {CHROMIUM} (apt-get install chromium): browser tests skipped")]
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: browser tests skipped")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    from service.app import create_app
    from service.runtime import Runtime, Settings
    from triage.office.common import Intake

    home = tmp_path_factory.mktemp("review")
    saved = os.environ.get("TRIAGE_HOME")
    rt = Runtime(Settings(database_url=f"sqlite:///{home / 'r.db'}", home=str(home), recluster_every=10_000, recluster_quiet_s=0))
    demo = pd.read_csv(ROOT / "corpora" / "demo.csv", dtype=str, keep_default_na=False)
    for t in (f"北辰社区3栋楼道灯坏了一个月没人修{XSS}", f"北辰社区楼道灯还是不亮{XSS}",
              f"我叫张三，我家的低保被取消了，请帮我查一下{XSS}"):
        rt.office.intake.submit(Intake(text=t, place="北辰社区", channel="网上征题"), auto_recluster=False)
    rt.office.history.import_frame(demo, ["title", "text"])
    _row, key = rt.store.create_key("staff", "审核员", can_unmask=True)
    served = serving(create_app(runtime=rt))
    root = served.__enter__()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pw = playwright_api.sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    yield SimpleNamespace(base=f"{root}/review", key=key, rt=rt, browser=browser)
    browser.close()
    pw.stop()
    served.__exit__(None, None, None)
    rt.close()
    if saved is None:
        os.environ.pop("TRIAGE_HOME", None)
    else:
        os.environ["TRIAGE_HOME"] = saved


@pytest.fixture()
def page(site):
    ctx = site.browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    p = ctx.new_page()
    p.dialogs = []
    p.on("dialog", lambda d: (p.dialogs.append(d.message), d.dismiss()))
    p.goto(f"{site.base}/login")
    p.fill("input[name=key]", site.key)
    p.click("button[type=submit]")
    p.wait_for_url(f"{site.base}/?**")
    yield p
    assert not p.dialogs, f"a script ran: {p.dialogs}"
    assert p.evaluate("window.__xss") is None
    ctx.close()


def rows(page) -> list:
    return page.locator("#topics tbody tr[data-topic]").all()


def messages_in(row) -> int:
    """The message count of a list row: its cell reads "N 位群众 / M 条留言"."""
    import re

    cell = row.locator("td.num").nth(2).inner_text()
    m = re.search(r"(\d+)\s*条留言", cell)
    assert m and re.search(r"\d+\s*位群众", cell), cell
    return int(m.group(1))


def test_a_staff_key_logs_in_and_sees_topics_ranked_by_citizens_then_heat(page) -> None:
    import re

    assert len(rows(page)) > 5
    keys = [(int(re.search(r"(\d+)\s*位群众", r.locator("td.num").nth(2).inner_text()).group(1)),
             float(r.locator("td.num").nth(1).inner_text())) for r in rows(page)]
    assert keys == sorted(keys, reverse=True)
    assert page.locator("#topics .badge").count() >= 5 * len(rows(page))
    page.screenshot(path=str(ARTIFACTS / "review-list.png"), full_page=True)


def test_a_wrong_key_stays_on_the_login_page(site) -> None:
    ctx = site.browser.new_context()
    p = ctx.new_page()
    p.goto(f"{site.base}/login")
    p.fill("input[name=key]", "tri_s_wrong")
    p.click("button[type=submit]")
    assert "/login" in p.url and "密钥无效" in p.inner_text("body")
    p.goto(f"{site.base}/")
    assert "/login" in p.url
    ctx.close()


def test_filtering_by_domain_and_searching_narrow_the_list(page, site) -> None:
    dom = rows(page)[0].locator("td").nth(6).inner_text()
    page.select_option("select[name=domain]", dom)
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state()
    assert rows(page) and all(r.locator("td").nth(6).inner_text() == dom for r in rows(page))
    page.goto(page.url.split("?")[0])
    page.fill("input[name=q]", "公交")
    page.press("input[name=q]", "Enter")
    page.wait_for_load_state()
    assert rows(page)
    # the search reads labels and the members' (masked) texts: every hit says 公交 in one or the other
    from sqlalchemy import select

    from triage.store.database import Suggestion

    with site.rt.store.session() as s:
        for r in rows(page):
            tid = r.get_attribute("data-topic")
            texts = s.execute(select(Suggestion.text).where(Suggestion.topic_id == tid)).scalars().all()
            assert "公交" in r.locator("a.label").inner_text() or any("公交" in t for t in texts), tid


def open_first(page, nth: int = 0) -> str:
    link = rows(page)[nth].locator("a.label")
    link.click()
    page.wait_for_load_state()
    return page.url.split("/topics/")[1].split("?")[0]


def test_opening_a_topic_shows_its_evidence_and_accepting_it_persists(page, site) -> None:
    tid = open_first(page)
    assert page.locator("#members tbody tr").count() >= 1 and "五大原则" in page.inner_text("body")
    page.screenshot(path=str(ARTIFACTS / "review-topic.png"), full_page=True)
    form = page.locator("form[data-action=accept]")
    form.locator("input[name=reason]").fill("群众反映集中，列入本季度协商")
    form.locator("button").click()
    page.wait_for_load_state()
    assert "已采纳" in page.locator("#status").inner_text()
    page.reload()
    assert "已采纳" in page.locator("#status").inner_text() and page.locator("#stage").inner_text() == "确定议题"
    assert "群众反映集中" in page.inner_text("body")   # the decision record shows the reason
    with site.rt.store.session() as s:
        from triage.store.database import Topic

        assert s.get(Topic, tid).status == "accepted"


def test_merging_two_topics_moves_the_members_and_persists(page) -> None:
    page.goto(page.url.split("?")[0] + "?status=candidate")
    a_id = rows(page)[-1].get_attribute("data-topic")
    b_id = rows(page)[-2].get_attribute("data-topic")
    b_size = messages_in(rows(page)[-2])
    a_size = messages_in(rows(page)[-1])
    page.goto(page.url.split("?")[0] + f"topics/{a_id}")
    form = page.locator("form[data-action=merge]")
    form.locator("input[name=into]").fill(b_id)
    form.locator("input[name=reason]").fill("同一个问题")
    form.locator("button").click()
    page.wait_for_url(f"**/topics/{b_id}?**")
    page.reload()
    assert page.locator("#members tbody tr").count() == a_size + b_size
    page.goto(page.url.split("/topics/")[0] + f"/topics/{a_id}")
    assert "已合并" in page.locator("#status").inner_text()


def test_correcting_a_label_is_shown_after_a_reload(page) -> None:
    open_first(page, 1)
    form = page.locator("form[data-action=relabel]")
    form.locator("input[name=label]").fill("幸福村 · 公交班次太少（已核实）")
    form.locator("input[name=reason]").fill("标签更准确")
    form.locator("button").click()
    page.wait_for_load_state()
    page.reload()
    assert page.locator("#label").inner_text() == "幸福村 · 公交班次太少（已核实）"
    page.goto(page.url.split("/topics/")[0] + "/")
    assert "幸福村 · 公交班次太少（已核实）" in page.inner_text("#topics")


def test_splitting_the_ticked_members_opens_a_new_topic(page) -> None:
    big = next(r for r in rows(page) if messages_in(r) >= 3)
    big.locator("a.label").click()
    page.wait_for_load_state()
    before = page.locator("#members tbody tr").count()
    page.locator("input.member").first.check()
    form = page.locator("form[data-action=split]")
    form.locator("input[name=reason]").fill("这一条说的是另一件事")
    form.locator("button").click()
    page.wait_for_load_state()
    assert "已拆出新议题" in page.inner_text("body") and page.locator("#members tbody tr").count() == 1
    page.go_back()
    page.reload()
    assert page.locator("#members tbody tr").count() == before - 1


def test_a_message_with_an_xss_payload_is_text_in_every_view(page, site) -> None:
    from sqlalchemy import select

    from triage.store.database import Suggestion

    with site.rt.store.session() as s:
        tids = {t for t in s.execute(select(Suggestion.topic_id).where(Suggestion.raw_text.contains("<script>"))).scalars()}
    views = ["/", "/queue", "/petitions", "/overview", "/export?status=candidate",
             *[f"/topics/{t}" for t in tids], *[f"/topics/{t}?unmask=1&reason=核实" for t in tids]]
    shown = 0
    for v in views:
        page.goto(site.base + v)
        page.wait_for_load_state()
        assert page.evaluate("window.__xss") is None, v
        assert page.locator("main script, main img[src=x]").count() == 0, v
        shown += "<script>" in page.inner_text("body")
    assert shown >= 3   # the payload is visible, as text, where the messages are


def test_keyboard_shortcuts_move_and_open(page) -> None:
    page.keyboard.press("j")
    page.keyboard.press("j")
    assert page.locator("tr.sel").count() == 1
    target = page.locator("tr.sel").get_attribute("data-topic")
    page.keyboard.press("o")
    page.wait_for_url(f"**/topics/{target}")
    page.keyboard.press("a")
    assert page.evaluate("document.activeElement.name") == "reason"


def test_the_needs_review_queue_petitions_and_overview_render(page, site) -> None:
    page.goto(site.base + "/queue")
    assert page.locator("#queue tbody tr").count() >= 1
    page.goto(site.base + "/petitions")
    assert "件" in page.inner_text("main")
    page.goto(site.base + "/overview")
    assert page.locator("main svg rect").count() > 3


def test_the_export_is_printable_and_downloads_as_csv(page, site) -> None:
    page.goto(site.base + "/export?status=accepted")
    assert page.locator(".card").count() >= 1
    page.emulate_media(media="print")
    assert page.locator("p.noprint").first.is_hidden()
    r = page.request.get(site.base + "/export?status=accepted&format=csv")
    assert r.ok and "编号" in r.text()


def test_the_pages_fit_a_tablet_width(site) -> None:
    ctx = site.browser.new_context(viewport={"width": 768, "height": 1024})
    p = ctx.new_page()
    p.goto(f"{site.base}/login")
    p.fill("input[name=key]", site.key)
    p.click("button[type=submit]")
    p.wait_for_load_state()
    assert p.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    p.screenshot(path=str(ARTIFACTS / "review-list-tablet.png"))
    ctx.close()


def test_five_hundred_topics_render_and_the_time_is_recorded(page, site) -> None:
    """Not a timing assertion: the time is written to tests/artifacts/review-timing.json for the notes."""
    from triage.store.database import Suggestion, Topic, utcnow

    with site.rt.store.session() as s:
        tmpl = s.query(Topic).filter(Topic.scorecard != None).first()  # noqa: E711 - SQL NULL test
        for i in range(500):
            tid = f"T9{i:05d}"
            s.add(Topic(id=tid, label=f"合成议题 {i} · 路灯不亮", keywords=["路灯", "不亮"], domain=tmpl.domain,
                        committee=tmpl.committee, committee_id=tmpl.committee_id, heat=0.3 + i / 10000,
                        heat_terms=tmpl.heat_terms, scorecard=tmpl.scorecard, verdict=tmpl.verdict, size=2,
                        submitters=2, last_seen=utcnow(), first_seen=utcnow()))
            s.flush()
            for k in range(2):
                s.add(Suggestion(receipt=f"SYN{i:05d}{k}", submitted_at=utcnow(), raw_text="路灯不亮", text="路灯不亮",
                                 topic_id=tid, domain=tmpl.domain, scope="group"))
    t0 = time.perf_counter()
    page.goto(site.base + "/?limit=500")
    page.wait_for_load_state("load")
    wall = time.perf_counter() - t0
    nav = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0].toJSON())")
    n = len(rows(page))
    assert n == 500
    timing = json.loads(nav)
    out = {"rows": n, "wall_seconds": round(wall, 3), "response_end_ms": round(timing["responseEnd"], 1),
           "load_event_end_ms": round(timing["loadEventEnd"], 1)}
    (ARTIFACTS / "review-timing.json").write_text(json.dumps(out, indent=2))
    print("review list, 500 topics:", out)


def test_a_message_sent_through_the_api_shows_up_fresh_and_searchable_without_a_reclustering(page, site) -> None:
    import httpx

    _row, portal = site.rt.store.create_key("portal", "门户")
    base = site.base.rsplit("/review", 1)[0]
    for k, text in enumerate(["西津渡口的趸船栏杆锈断了，坐船的人很容易掉下去",
                              "西津渡口趸船的栏杆断了两个月没人修，太危险了"]):
        r = httpx.post(f"{base}/api/v1/suggestions", json={"text": text, "submitter": f"ferry-{k}", "channel": "二维码"},
                       headers={"X-API-Key": portal}, timeout=60)
        assert r.status_code == 201, r.text
    page.goto(f"{site.base}/?q=趸船栏杆")
    page.wait_for_load_state()
    found = rows(page)
    assert found, "a word of the members' text finds their topic"
    row = found[0]
    assert float(row.locator("td.num").nth(1).inner_text()) > 0          # heat at once, not 0.000
    assert row.locator(".badge").count() >= 5                              # the 五大原则 badges at once
    page.screenshot(path=str(ARTIFACTS / "review-fresh-topic.png"), full_page=True)


def test_the_api_docs_render_with_the_network_cut(site) -> None:
    """Government networks are offline: every file of /docs comes from the service itself."""
    ctx = site.browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    root = site.base.rsplit("/review", 1)[0]
    outside: list[str] = []

    def only_local(route) -> None:
        if route.request.url.startswith(root):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    ctx.route("**/*", only_local)
    p = ctx.new_page()
    p.goto(root + "/docs")
    p.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
    assert p.locator(".swagger-ui .opblock").count() >= 15   # every operation drawn (not a blank page)
    assert "/api/v1/suggestions" in p.content()
    p.screenshot(path=str(ARTIFACTS / "api_docs.png"))
    ctx.close()
    assert outside == [], outside


def test_chinese_text_is_drawn_with_real_glyphs_not_boxes(page) -> None:
    """Without a CJK font Chromium draws every Chinese character as the same empty box, and every
    other browser test still passes. Two different characters drawn in the page's own font must
    differ, pixel for pixel (apt-get install fonts-wqy-zenhei; .ci/run installs it)."""
    same = page.evaluate("""() => {
        const font = getComputedStyle(document.body).fontFamily;
        const draw = (ch) => {
            const c = document.createElement('canvas'); c.width = c.height = 48;
            const g = c.getContext('2d'); g.font = `40px ${font}`; g.fillText(ch, 2, 40);
            return Array.from(g.getImageData(0, 0, 48, 48).data).join(',');
        };
        return draw('政') === draw('协');
    }""")
    assert not same, "Chinese characters render as boxes: no CJK font is installed"


def test_subscriptions_are_created_listed_with_their_alerts_and_deleted(page, site) -> None:
    from triage.office.alerts import AlertEngine, AlertsConfig

    page.goto(f"{site.base}/subscriptions")
    page.fill("#new-subscription input[name=name]", "楼道灯提醒")
    page.select_option("#new-subscription select[name=channel]", "atom")
    page.fill("#new-subscription input[name=keyword]", "楼道灯")
    page.fill("#new-subscription input[name=heat_above]", "0.01")
    assert page.locator("#new-subscription select[name=verdict] option").count() == 5   # 不限 + the four verdicts
    page.click("#new-subscription button[type=submit]")
    page.wait_for_url("**/subscriptions?ok=*")
    row = page.locator("#subscriptions tr[data-sub]", has_text="楼道灯提醒")
    assert row.count() == 1 and "还没有提醒" in row.inner_text() and "关键词：楼道灯" in row.inner_text()
    # the service's alert round (run here at once instead of waiting for its interval)
    AlertEngine(site.rt.store, AlertsConfig(public_url=site.base.rsplit("/review", 1)[0])).run_once()
    page.reload()
    alerts = page.locator("#subscriptions tr[data-sub]", has_text="楼道灯提醒").locator(".alert")
    assert alerts.count() >= 1 and "楼道灯" in alerts.first.inner_text() and "已发送" in alerts.first.inner_text()
    feed = page.locator("#subscriptions tr[data-sub]", has_text="楼道灯提醒").locator("a", has_text="订阅源").get_attribute("href")
    assert page.request.get(site.base.rsplit("/review", 1)[0] + feed).status == 200
    page.screenshot(path=str(ARTIFACTS / "review_subscriptions.png"), full_page=True)
    page.locator("#subscriptions tr[data-sub]", has_text="楼道灯提醒").locator("button", has_text="删除").click()
    page.wait_for_url("**/subscriptions?ok=*")
    assert page.locator("#subscriptions tr[data-sub]", has_text="楼道灯提醒").count() == 0
    bad = page.goto(f"{site.base}/subscriptions")
    page.fill("#new-subscription input[name=name]", "没有收件地址")
    page.click("#new-subscription button[type=submit]")
    page.wait_for_url("**/subscriptions?err=*")
    assert "收件地址" in page.inner_text("body") and bad.status == 200   # e-mail is the default channel


def test_a_digest_e_mail_renders_in_chinese_in_the_browser(site) -> None:
    """The HTML part of a weekly digest e-mail as a mail client shows it (tests/artifacts/digest_email.png)."""
    from triage.office.alerts import AlertsConfig, committee_digest, render
    from triage.store.database import Alert, Subscription, utcnow

    now = utcnow()
    with site.rt.store.session() as s:
        d = committee_digest(s, None, now - __import__("datetime").timedelta(days=7), now, "http://triage.test")
    sub = Subscription(id=1, name="主席会议周报", channel="email", schedule="weekly")
    subject, text, html_page = render(sub, [Alert(id=1, trigger="digest", title="[每周摘要] 全部专委会", payload=d,
                                                 created_at=now)])
    assert "每周摘要" in subject or "主席会议周报" in html_page
    ctx = site.browser.new_context(viewport={"width": 800, "height": 900}, locale="zh-CN")
    p = ctx.new_page()
    p.set_content(html_page)
    assert p.locator("table tr").count() == len(d["topics"]) + 1 and "位群众" in p.inner_text("body")
    p.screenshot(path=str(ARTIFACTS / "digest_email.png"), full_page=True)
    # the CJK font draws the text: glyphs of different widths, not tofu boxes of one (measured after the
    # screenshot: the probes are added to the page)
    widths = p.evaluate("""() => ['主', '1', 'i'].map(c => { const s = document.createElement('span');
        s.textContent = c; document.body.appendChild(s); return s.getBoundingClientRect().width; })""")
    assert widths[0] > widths[1] > widths[2] > 0
    ctx.close()
