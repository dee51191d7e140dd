"""The dashboard in a real headless Chromium (Playwright) against a live sidecar on a real
PostgreSQL: loads clean, filters, pages, live refresh, user page, token, phone width."""

import datetime as dt
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import live_api

from xray_pipeline.api.routers.logs import SEARCH_COUNT_LIMIT
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.ingest.oneshot import ingest_files
from xray_pipeline.core.privacy.geoip import GeoIP
from xray_pipeline.core.privacy.policy import RowPolicy
from xray_pipeline.core.synthetic.generate import GeneratorConfig, write_log
from xray_pipeline.core.synthetic.mmdb import write_synthetic_geoip

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# as the machine notes say: without the background-networking flags Chromium keeps trying to
# reach hosts a closed network refuses
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(os.environ.get("XRAY_SCREENSHOT_DIR", ".xray/screenshots"))
TOKEN = "dashboard-test-token"


def chromium_path() -> str | None:
    for name in (os.environ.get("XRAY_CHROMIUM"), "chromium", "chromium-browser"):
        if name and (path := shutil.which(name)):
            return path
    return None


@pytest.fixture(scope="module")
def data_url(db_url: str, tmp_path_factory) -> str:
    # two days of lines ending about now, so every range and the recent-IPs signal have data
    start = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=2)
    folder = Path(tmp_path_factory.mktemp("dashboard"))
    log = folder / "access.log"
    write_log(GeneratorConfig(lines=3_000, days=2, users=20, start=start), log)
    policy = RowPolicy(geoip=GeoIP(*write_synthetic_geoip(folder)))
    with connect(db_url) as conn:
        ingest_files(conn, [log], timezone="UTC", batch_size=256 * 1024, policy=policy)
    return db_url


@pytest.fixture(scope="module")
def base_url(data_url: str) -> Iterator[str]:
    with live_api(data_url) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium: .ci/run installs Debian's chromium package for these tests")
        pytest.skip(
            "the dashboard's browser tests need Chromium (apt-get install chromium, or set "
            "XRAY_CHROMIUM to its path)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser) -> Iterator[Callable]:
    """open_page(url, width) -> (page, errors): console errors and page errors collected."""
    contexts = []

    def opener(url: str, width: int = 1280):
        context = browser.new_context(viewport={"width": width, "height": 900})
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        return page, errors

    yield opener
    for context in contexts:
        context.close()


def loads(page) -> int:
    return int(page.evaluate("Number(document.body.dataset.loads || 0)"))


def settle(page, after: int = 0) -> None:
    """Wait until the page finished more loads than `after` and nothing is pending."""
    page.wait_for_function(
        f"() => Number(document.body.dataset.loads || 0) > {after} "
        "&& !document.body.hasAttribute('aria-busy')",
        timeout=20_000,
    )


def act(page, action: Callable[[], object]) -> None:
    before = loads(page)
    action()
    settle(page, before)


def show_all(page) -> None:
    settle(page)
    page.uncheck("#live")
    act(page, lambda: page.select_option("#range", "all"))


def count(url: str, where: str = "true", params: tuple = ()) -> int:
    with connect(url) as conn:
        return conn.execute(
            f"SELECT count(*) FROM logs l LEFT JOIN users u ON u.id = l.user_id WHERE {where}",
            params,
        ).fetchone()[0]


def cells(page, column: int) -> list[str]:
    return page.locator(f"#logs-table tbody tr td:nth-child({column})").all_inner_texts()


def test_overview_loads_clean_with_cards_chart_and_distributions(open_page, base_url, data_url):
    page, errors = open_page(base_url)
    show_all(page)
    assert page.inner_text("#card-connections").replace(",", "") == str(count(data_url))
    rejected = count(data_url, "l.status = 'rejected'")
    assert page.inner_text("#card-rejected").replace(",", "") == str(rejected)
    assert page.inner_text("#card-lag") != "–"
    assert not page.is_visible("#nodes-panel") and not page.is_visible("#node")  # no fleet
    # the chart drew on its canvas (non-transparent pixels), with both series in the legend
    painted = page.evaluate(
        """() => {
            const canvas = document.querySelector('#chart canvas');
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            let n = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
            return n;
        }"""
    )
    assert painted > 1000
    assert "connections" in page.inner_text("#chart .u-legend")
    assert page.locator("#dist-protocols li").count() >= 2
    assert page.locator("#logs-table tbody tr").count() == 50
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1280, "height": 1500})
    page.screenshot(path=SCREENSHOTS / "overview.png")
    assert errors == []


def test_filters_change_the_table(open_page, base_url, data_url):
    page, errors = open_page(base_url)
    show_all(page)
    all_rows = page.inner_text("#page-info")
    page.select_option("select[name=status]", "rejected")
    act(page, lambda: page.click("#filters button[type=submit]"))
    statuses = cells(page, 7)
    assert statuses and set(statuses) == {"rejected"}
    rejected = count(data_url, "l.status = 'rejected'")
    assert page.inner_text("#page-info").endswith(f"of {rejected:,}")

    act(page, lambda: page.click("#filters button[type=reset]"))
    assert page.inner_text("#page-info") == all_rows
    # keyboard: type a user and press Enter in the field
    email = cells(page, 2)[0]
    page.fill("input[name=user]", email)
    act(page, lambda: page.press("input[name=user]", "Enter"))
    assert set(cells(page, 2)) == {email}
    expected = count(data_url, "u.email = %s", (email,))
    assert page.inner_text("#page-info").endswith(f"of {expected:,}")
    assert errors == []


def test_pagination_moves_and_live_refresh_keeps_the_place(open_page, base_url, data_url):
    page, errors = open_page(base_url)
    show_all(page)
    first_page = cells(page, 1)
    act(page, lambda: page.click("#older"))
    assert page.inner_text("#page-info").startswith("51–100 of")
    second_page = page.locator("#logs-table tbody tr").all_inner_texts()
    assert cells(page, 1)[0] <= first_page[-1]
    assert not page.is_disabled("#newer")

    # a newer row arrives while live refresh is on: page two stays page two
    with connect(data_url) as conn:
        conn.execute(
            "INSERT INTO logs (ts, source_id, byte_offset, status) "
            "SELECT now(), id, 987654321, 'accepted' FROM sources LIMIT 1"
        )
        conn.commit()
    try:
        page.check("#live")
        before = loads(page)
        settle(page, before + 1)  # two refreshes (the summary and the table)
        assert page.inner_text("#page-info").startswith("51–100 of")
        assert page.locator("#logs-table tbody tr").all_inner_texts() == second_page
        page.uncheck("#live")
        act(page, lambda: page.click("#newer"))
        assert page.inner_text("#page-info").startswith("1–50 of")
        assert cells(page, 1)[1:] == first_page[:-1]  # the new row on top, the rest moved down
    finally:
        with connect(data_url) as conn:
            conn.execute("DELETE FROM logs WHERE byte_offset = 987654321")
            conn.commit()
    assert errors == []


def test_countries_and_networks_panels_and_the_country_filter(open_page, base_url, data_url):
    page, errors = open_page(base_url)
    show_all(page)
    placed = "logs l JOIN ip_places p ON p.address = coalesce(host(l.src_ip), l.src_host)"
    with connect(data_url) as conn:
        top_country, top_n = conn.execute(
            f"SELECT p.country, count(*) FROM {placed} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1"
        ).fetchone()
        networks = conn.execute(f"SELECT count(DISTINCT p.asn) FROM {placed}").fetchone()[0]
    first = page.locator("#dist-countries li").first.inner_text()
    assert first.split()[0] == top_country and f"{top_n:,}" in first
    assert "Synthetic" in page.inner_text("#countries-note")
    shown = page.locator("#dist-networks li").count()
    assert shown == min(networks, 10) + (networks > 10) + 1  # + other, + unknown (sockets)
    assert page.locator("#dist-networks li", has_text="other").count() == (networks > 10)
    page.fill("#filters input[name=country]", top_country.lower())
    act(page, lambda: page.click("#filters button[type=submit]"))
    info = page.inner_text("#page-info")
    if top_n <= SEARCH_COUNT_LIMIT:
        assert info.endswith(f"of {top_n:,}")
    else:  # a place filter counts exactly up to SEARCH_COUNT_LIMIT, then says "about"
        assert "of about" in info
    assert errors == []


def test_user_page_opens_with_activity(open_page, base_url, data_url):
    page, errors = open_page(base_url)
    show_all(page)
    link = page.locator("#logs-table tbody a").first
    email = link.inner_text()
    act(page, link.click)
    assert page.url.endswith(f"#/user/{email}")
    assert page.inner_text("#user-title") == email
    expected = count(data_url, "u.email = %s", (email,))
    assert page.inner_text("#u-connections").replace(",", "") == str(expected)
    with connect(data_url) as conn:
        ips = conn.execute(
            "SELECT count(DISTINCT coalesce(host(src_ip), src_host)) FROM logs l "
            "JOIN users u ON u.id = l.user_id WHERE u.email = %s",
            (email,),
        ).fetchone()[0]
    assert page.locator("#u-ip-table tbody tr").count() == ips
    countries = page.locator("#u-ip-table tbody tr td:nth-child(2)").all_inner_texts()
    assert any(len(c) == 2 for c in countries)  # the synthetic database places them
    assert page.inner_text("#u-countries") != "–"
    assert page.locator("#u-sess-table tbody tr").count() >= 1
    assert page.locator("#u-dest-table tbody tr").count() >= 1
    page.fill("#window-minutes", "2880")
    act(page, lambda: page.click("#window-form button"))
    assert "distinct IP" in page.inner_text("#window-summary")
    assert page.locator("#window-ips li").count() >= 1
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "user.png", full_page=True)
    act(page, lambda: page.click("text=← Overview"))
    assert page.is_visible("#overview-view") and not page.is_visible("#user-view")
    assert errors == []


def test_token_is_asked_once_and_kept_for_the_tab(open_page, data_url):
    with live_api(data_url, token=TOKEN) as url:
        page, errors = open_page(url)
        page.wait_for_selector("#token-dialog[open]")
        page.fill("#token-input", "wrong")
        page.press("#token-input", "Enter")
        page.wait_for_selector("#token-dialog[open]")  # asked again
        page.fill("#token-input", TOKEN)
        page.press("#token-input", "Enter")
        settle(page)
        assert page.inner_text("#card-connections") != "–"
        assert page.evaluate("sessionStorage.getItem('xray_api_token')") == TOKEN
        page.reload()
        settle(page)
        assert not page.is_visible("#token-dialog")
    # the wrong token's 401 is the one console error a browser prints for it
    assert all("401" in e for e in errors)


def test_keyboard_and_phone_width(open_page, base_url):
    page, errors = open_page(base_url, width=390)
    settle(page)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1
    for control in ("#range", "input[name=search]", "select[name=protocol]", "#older"):
        label = page.evaluate(
            f"""() => {{
                const el = document.querySelector('{control}');
                return (el.labels && el.labels.length) || el.textContent.trim().length;
            }}"""
        )
        assert label, f"{control} has no label"
    assert errors == []


def test_nodes_panel_and_node_filter(open_page, fresh_db_url, tmp_path):
    from xray_pipeline.core.fleet.landing import record_contact
    from xray_pipeline.core.fleet.nodes import add_node

    start = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=1)
    with connect(fresh_db_url) as conn:
        for i, node in enumerate(("edge-1", "edge-2")):
            log = tmp_path / f"{node}.log"
            write_log(GeneratorConfig(lines=400 + 300 * i, days=1, start=start, seed=i), log)
            ingest_files(conn, [log], timezone="UTC", batch_size=256 * 1024, node=node)
            add_node(conn, node)
    record_contact(tmp_path / "landed", "edge-2", "xray-pipeline-ship/0.1.0")
    with live_api(fresh_db_url, landing_dir=tmp_path / "landed") as url:
        page, errors = open_page(url)
        show_all(page)
        rows = page.locator("#nodes-table tbody tr").all_inner_texts()
        assert [r.split("\t")[0] for r in rows] == ["edge-1", "edge-2"]
        assert "never" in rows[0] and "xray-pipeline-ship/0.1.0" in rows[1]
        everyone = page.inner_text("#card-connections").replace(",", "")
        assert everyone == str(count(fresh_db_url))
        act(page, lambda: page.click("#nodes-table >> text=edge-2"))
        assert page.input_value("#node") == "edge-2"
        edge2 = count(
            fresh_db_url,
            "l.source_id IN (SELECT id FROM sources WHERE node = %s)",
            ("edge-2",),
        )
        assert page.inner_text("#card-connections").replace(",", "") == str(edge2)
        assert 0 < edge2 < int(everyone)
        total = page.inner_text("#page-info").split(" of ")[-1].replace(",", "")
        assert total == str(edge2)
        act(page, lambda: page.select_option("#node", ""))
        assert page.inner_text("#card-connections").replace(",", "") == everyone
    assert errors == []


def test_incidents_panel_and_the_user_badge(open_page, base_url, data_url):
    from xray_pipeline.core.rules.detect import Breach
    from xray_pipeline.core.rules.incidents import record

    now = dt.datetime.now(dt.UTC)
    with connect(data_url) as conn:
        sharer, honest = [r[0] for r in conn.execute("SELECT email FROM users ORDER BY id LIMIT 2")]
        evidence = [
            {"unit": f"192.0.2.{i}", "nodes": ["edge-a"], "connections": 2} for i in range(5)
        ]
        record(conn, [Breach("ip_limit", sharer, now, now, 5, 3, evidence),
                      Breach("rejected", "203.0.113.9", now, now, 150, 100,
                             [{"unit": "203.0.113.9", "nodes": ["edge-b"]}])],
               now=now, quiet_minutes=30)  # fmt: skip
    try:
        page, errors = open_page(base_url)
        show_all(page)
        assert page.inner_text("#incidents-open") == "(2 open)"
        rows = page.locator("#incidents-table tbody tr").all_inner_texts()
        assert len(rows) == 2
        assert any("IP limit" in r and sharer in r and "5 / 3" in r and "edge-a" in r for r in rows)
        assert any("rejected storm" in r and "203.0.113.9" in r for r in rows)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.locator("#incidents-panel").screenshot(path=SCREENSHOTS / "incidents.png")
        act(page, lambda: page.locator("#incidents-table tbody a", has_text=sharer).click())
        assert page.inner_text("#user-title") == sharer
        badge = page.locator("#u-incidents")
        assert badge.is_visible() and "IP limit: 5 over a limit of 3" in badge.inner_text()
        act(page, lambda: page.goto(f"{base_url}/#/user/{honest}"))
        assert page.inner_text("#user-title") == honest and not badge.is_visible()
        assert errors == []
    finally:
        with connect(data_url) as conn:
            conn.execute("DELETE FROM incidents")
            conn.commit()
