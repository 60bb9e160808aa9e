"""The Hive Analytics Dashboard in headless Chromium (Debian's chromium, driven by
playwright) against a real bizzyd, the Firebase Auth emulator and mosquitto: sign-in,
live occupancy over SSE, deals, charts at desktop and phone sizes, accessibility
(axe-core), error states, caching and the page weight."""

from __future__ import annotations

import gzip
import re
import time
from typing import Any

import pytest
from dash_support import (
    DESKTOP,
    PHONE,
    PageWatch,
    axe_violations,
    chart_report,
    report_entries,
    save,
    sign_in,
)

from bizzyd_proc import wait_for
from modules.auth.testing import emulator_token

pytestmark = [pytest.mark.services, pytest.mark.slow]
JS_BUDGET = 300 * 1024
CHARTS = ("Average occupancy per hour, last 7 days",
          "Today: actual, usual and expected occupancy",
          "Comparison, average occupancy per hour")


def assets(server: Any) -> list[str]:
    index = server.api.get("/dashboard/").text
    return re.findall(r'(?:src|href)="(assets/[^"]+)"', index)


def test_the_index_is_revalidated_and_fingerprinted_assets_are_cached_for_a_year(
        server: Any, city: Any) -> None:
    r = server.api.get("/dashboard/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-cache"
    names = assets(server)
    assert {n.rsplit(".", 1)[1] for n in names} == {"js", "css"}
    for name in names:
        assert re.fullmatch(r"assets/app-[A-Z0-9]{8}\.(js|css)", name), name
        a = server.api.get(f"/dashboard/{name}")
        assert a.status_code == 200
        assert a.headers["cache-control"] == "public, max-age=31536000, immutable"
    config = server.api.get("/dashboard/config.json")
    assert config.headers["cache-control"] == "no-cache"
    assert config.json() == {"firebase": {"apiKey": "fake-api-key", "projectId": "demo-bizzy",
                                          "authDomain": None},
                             "authEmulator": f"http://{city.emulator}", "liveStreams": 4}
    assert server.api.post("/dashboard/config.json").status_code == 405


def test_the_javascript_weighs_at_most_300_kb_gzipped(server: Any) -> None:
    scripts = [n for n in assets(server) if n.endswith(".js")]
    total = sum(len(gzip.compress(server.api.get(f"/dashboard/{n}").content, 9))
                for n in scripts)
    assert scripts and total <= JS_BUDGET, f"{total} bytes gzipped"


def test_signs_in_and_every_hive_of_the_account_is_shown_live(
        page: Any, server: Any, city: Any) -> None:
    shown = [int(x) for x in page.locator(".hive-list .live").evaluate_all(
        "els => els.map(e => e.dataset.hive)")]
    assert shown == list(city.hive_ids)
    # every hive got its state from its stream: a number, a level, a freshness
    page.wait_for_function("() => [...document.querySelectorAll('.hive-list .live')]"
                           ".every(e => e.dataset.occupancy !== undefined)")
    for hive in city.hive_ids:
        live = page.locator(f".hive-list .live[data-hive='{hive}']")
        api = server.api.get(f"/v1/hives/{hive}/occupancy").json()
        assert live.locator("[data-testid=count]").inner_text() == str(api["occupancy"])
        assert live.get_attribute("data-level") in ("quiet", "busy", "full")
        assert "updated" in live.locator("[data-testid=fresh]").inner_text()


def test_a_sensor_report_moves_the_number_on_the_page_within_2_s(
        page: Any, server: Any, city: Any) -> None:
    hive = city.hive_ids[0]
    count = page.locator(f".hive-list .live[data-hive='{hive}'] [data-testid=count]")
    page.wait_for_function(f"() => document.querySelector(\".live[data-hive='{hive}']\")"
                           ".dataset.occupancy !== undefined")
    before = count.inner_text()
    report_entries(city.dsn, hive, server.tag, 7)
    started = time.monotonic()
    page.wait_for_function(
        "([sel, before]) => document.querySelector(sel).textContent !== before",
        arg=[f".hive-list .live[data-hive='{hive}'] [data-testid=count]", before],
        timeout=2000)
    elapsed = time.monotonic() - started
    print(f"the page showed the report {elapsed:.3f} s after it was published")
    assert count.inner_text() == str(server.api.get(f"/v1/hives/{hive}/occupancy")
                                     .json()["occupancy"])
    assert elapsed < 2.0


def test_a_deal_created_on_the_page_is_in_the_public_listing(
        page: Any, server: Any, city: Any) -> None:
    hive = city.hive_ids[1]
    page.goto(f"{server.url}#/deals/{hive}")
    page.wait_for_selector("#deal-form")
    title = f"Dashboard happy hour {int(time.time())}"
    page.fill("#deal-title", title)
    page.select_option("#deal-kind", "happy_hour")
    page.check("#deal-daily")
    page.fill("#deal-start", "17:00")
    page.fill("#deal-end", "19:00")
    page.click("#deal-save")
    page.wait_for_selector(f"text=Saved “{title}”")
    # the public listing is cached: it follows the write once the catalogue's NOTIFY
    # reaches the worker (at once, but asynchronously)
    deal = listed_deal(server, hive, lambda d: d["title"] == title)
    assert deal["kind"] == "happy_hour"
    assert deal["daily"] == {"weekdays": [1, 2, 3, 4, 5], "start": "17:00", "end": "19:00"}
    assert page.locator(f"li[data-deal='{deal['id']}']").count() == 1

    # edited on the page, then ended: the listing follows
    page.click(f"li[data-deal='{deal['id']}'] button.edit")
    page.fill("#deal-title", title + " (edited)")
    page.click("#deal-save")
    page.wait_for_selector(f"text=Saved “{title} (edited)”")
    listed_deal(server, hive, lambda d: d["id"] == deal["id"] and d["title"].endswith("(edited)"))
    page.click(f"li[data-deal='{deal['id']}'] button.end")
    page.wait_for_selector(f"li[data-deal='{deal['id']}']", state="detached")
    wait_for(lambda: deal["id"] not in [
        d["id"] for d in server.api.get(f"/v1/hives/{hive}/deals").json()["items"]],
        timeout=5, what="the ended deal to leave the public listing")


def listed_deal(server: Any, hive: int, match: Any) -> dict:
    """The first deal of the hive's public listing that `match`es, waiting up to 5 s."""
    found: list[dict] = []

    def look() -> bool:
        found[:] = [d for d in server.api.get(f"/v1/hives/{hive}/deals").json()["items"]
                    if match(d)]
        return bool(found)
    wait_for(look, timeout=5, what="the deal in the public listing")
    return found[0]


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_every_chart_is_drawn_with_the_demo_data(browser: Any, server: Any, city: Any,
                                                 artifacts: Any, size: str) -> None:
    watch = PageWatch()
    page = sign_in(browser, server, DESKTOP if size == "desktop" else PHONE, watch)
    try:
        page.wait_for_selector("#kpis .kpi")
        save(page, artifacts, f"overview-{size}")
        page.goto(f"{server.url}#/hive/{city.hive_ids[0]}")
        for title in CHARTS:
            page.wait_for_selector(f"figure.chart[data-chart='{title}']")
        page.wait_for_selector("table.heatmap")
        page.wait_for_selector("#sensors")
        page.wait_for_timeout(300)  # the charts take their width on the next frame
        charts = chart_report(page)
        assert set(charts) == set(CHARTS)
        for title, (points, pixels) in charts.items():
            assert points > 0 and pixels > 20, (title, points, pixels)
        cells = int(page.locator("table.heatmap").get_attribute("data-points"))
        assert cells == 7 * 24
        page.wait_for_selector("#feedback .senti-bar")
        assert int(page.locator("#feedback .senti-bar").get_attribute("data-points")) >= 3
        assert page.locator("#feedback ul.feedback li .stars").count() >= 3
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= page.viewport_size["width"], "the page scrolls sideways"
        save(page, artifacts, f"hive-{size}")
        page.goto(f"{server.url}#/deals")
        page.wait_for_selector("#deal-list ul, #deal-list p:not(.loading)")
        save(page, artifacts, f"deals-{size}")
        page.goto(f"{server.url}#/members")
        page.wait_for_selector("#members")
        save(page, artifacts, f"members-{size}")
    finally:
        page.context.close()
    assert watch.errors == []


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_no_serious_or_critical_accessibility_violations_on_any_page(
        browser: Any, server: Any, city: Any, size: str) -> None:
    viewport = DESKTOP if size == "desktop" else PHONE
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(10000)
    try:
        page.goto(server.url)
        page.wait_for_selector("#signin")
        found = {"sign-in": axe_violations(page)}
        page.close()
        page = sign_in(browser, server, viewport)
        page.wait_for_selector("#kpis .kpi, #kpis [data-state]")
        found["overview"] = axe_violations(page)
        page.goto(f"{server.url}#/hive/{city.hive_ids[0]}")
        page.wait_for_selector("table.heatmap, #popular [data-state]")
        page.wait_for_selector("#sensors, #health [data-state]")
        found["hive"] = axe_violations(page)
        page.goto(f"{server.url}#/deals")
        page.wait_for_selector("#deal-form")
        found["deals"] = axe_violations(page)
        page.goto(f"{server.url}#/members")
        page.wait_for_selector("#members")
        found["members"] = axe_violations(page)
    finally:
        context.close()
        page.context.close()
    assert {k: v for k, v in found.items() if v} == {}


def test_a_viewer_sees_no_members_page_and_no_editing(browser: Any, server: Any,
                                                      city: Any) -> None:
    email = f"viewer-{int(time.time() * 1000)}@example.com"
    token = emulator_token(city.emulator, email, "viewer-pw-1")
    viewer = server.api.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).json()["id"]
    admin = emulator_token(city.emulator, "demo@business.example", "bizzy-demo")
    r = server.api.put(f"/v1/accounts/{city.account_id}/members/{viewer}",
                       json={"role": "viewer"}, headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 200, r.text
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(10000)
    try:
        page.goto(server.url)
        page.fill("#email", email)
        page.fill("#password", "viewer-pw-1")
        page.click("#signin")
        page.wait_for_selector(".hive-list")
        assert page.locator("#nav a").all_inner_texts() == ["Overview", "Deals"]
        page.goto(f"{server.url}#/deals")
        page.wait_for_selector("#deal-list ul, #deal-list p:not(.loading)")
        assert page.locator("#deal-form, button.edit, button.end").count() == 0
        page.goto(f"{server.url}#/members")
        page.wait_for_selector("text=Only admins manage members")
        page.goto(f"{server.url}#/hive/{city.hive_ids[0]}")
        page.wait_for_selector("#corrections h3, #corrections [data-state]")
        assert page.locator("#corr-occupancy, #sched-from").count() == 0
    finally:
        context.close()


def test_a_wrong_password_is_told_and_nothing_else_shows(browser: Any, server: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(10000)
    try:
        page.goto(server.url)
        page.fill("#email", "demo@business.example")
        page.fill("#password", "not-the-password")
        page.click("#signin")
        page.wait_for_selector("#signin-error:has-text('Wrong email or password')")
        assert page.locator(".hive-list").count() == 0
    finally:
        context.close()


def test_the_api_down_shows_an_error_and_the_page_recovers(browser: Any, server: Any) -> None:
    watch = PageWatch()
    page = sign_in(browser, server, DESKTOP, watch)
    try:
        page.route("**/v1/hives/*/deals", lambda route: route.abort("connectionrefused"))
        page.evaluate("() => { location.hash = '#/deals'; }")
        page.wait_for_selector("#banner[data-state=error]")
        assert "cannot be reached" in page.locator("#banner").inner_text()
        assert "cannot be reached" in page.locator("#deal-list [data-state=error]").inner_text()
        page.unroute("**/v1/hives/*/deals")
        page.evaluate("() => { location.hash = '#/'; }")
        page.wait_for_selector("#kpis .kpi")
        page.wait_for_function("() => document.querySelector('#banner').textContent === ''")
    finally:
        page.context.close()
    # the refused request is the browser's own log line, nothing else
    assert [e for e in watch.errors if "ERR_CONNECTION_REFUSED" not in e] == []


def test_an_expired_session_asks_to_sign_in_again(browser: Any, server: Any) -> None:
    watch = PageWatch()
    page = sign_in(browser, server, DESKTOP, watch)
    try:
        # every API call now carries a token bizzyd refuses (401), also after a refresh
        page.route("**/v1/**", lambda route: route.continue_(headers={
            **route.request.headers, "authorization": "Bearer expired"}))
        page.evaluate("() => { location.hash = '#/deals'; }")
        page.wait_for_selector("#signin")
        assert "session has expired" in page.locator("#banner").inner_text()
    finally:
        page.context.close()
    # the 401s are the browser's own log lines for refused requests, nothing else
    assert [e for e in watch.errors if "401" not in e] == []


def test_a_manager_corrects_the_count_and_schedules_a_capacity_on_the_hive_page(
        page: Any, server: Any, city: Any) -> None:
    hive = city.hive_ids[2]
    page.goto(f"{server.url}#/hive/{hive}")
    page.wait_for_selector("#corr-occupancy")
    page.fill("#corr-occupancy", "12")
    page.fill("#corr-reason", "door sensor missed a group")
    page.click("#corr-submit")
    page.wait_for_selector("#correction-list li:has-text('door sensor missed a group'), "
                           "#corrections p.error:not(:empty)")
    assert page.locator("#corrections p.error:not(:empty)").all_inner_texts() == []
    token = emulator_token(city.emulator, "demo@business.example", "bizzy-demo")
    auth = {"Authorization": f"Bearer {token}"}
    newest = server.api.get(f"/v1/hives/{hive}/corrections", headers=auth).json()
    assert (newest["corrections"][0]["occupancy"], newest["corrections"][0]["reason"]) == (
        12, "door sensor missed a group")

    page.fill("#sched-from", "2030-06-01T18:00")
    page.fill("#sched-to", "2030-06-02T02:00")
    page.fill("#sched-capacity", "300")
    page.fill("#sched-label", "Concert night")
    page.click("#sched-submit")
    page.wait_for_selector("#schedule-list li:has-text('Concert night'), "
                           "#corrections p.error:not(:empty)")
    assert page.locator("#corrections p.error:not(:empty)").all_inner_texts() == []
    schedule = server.api.get(f"/v1/hives/{hive}/capacity-schedule", headers=auth).json()
    assert [(e["capacity"], e["label"]) for e in schedule["entries"]] == [(300, "Concert night")]
