"""GET /v1/accounts/{id}/kpis and /feedback, and their bad input, on real services."""

from __future__ import annotations

import asyncio
import datetime as dt
from zoneinfo import ZoneInfo

import httpx
import pytest
from kpis_support import business, expect, signed_in, sql

from bizzyd_proc import wait_for
from modules.kpis import backfill

pytestmark = pytest.mark.services

ROLLUP = """
INSERT INTO hive_occupancy_hourly (hive_id, hour, entries, exits, peak_occupancy,
                                   avg_occupancy)
VALUES ($1, $2, $3, $3, $4, $5)"""


def local_hour(t: dt.datetime) -> int:
    return t.astimezone(ZoneInfo("Europe/Berlin")).hour


def kpis(biz: httpx.Client, h: dict[str, str], account: int, query: str = "") -> dict:
    return expect(biz.get(f"/v1/accounts/{account}/kpis{query}", headers=h), 200)


def test_kpis_per_hive_and_total_with_change(biz: httpx.Client) -> None:
    h, account, (a, b) = business(biz)
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    # this week: a has 10 then 30 visitors (average 5 and 15 people), b 4 (2 people)
    sql(biz.dsn, ROLLUP, a, hour - dt.timedelta(hours=3), 30, 20, 15.0)
    sql(biz.dsn, ROLLUP, a, hour - dt.timedelta(hours=2), 10, 8, 5.0)
    sql(biz.dsn, ROLLUP, b, hour - dt.timedelta(hours=5), 4, 3, 2.0)
    # the week before: a had 20 visitors (10 people on average); b nothing
    sql(biz.dsn, ROLLUP, a, hour - dt.timedelta(days=8), 20, 12, 10.0)
    # a row outside both periods counts nowhere
    sql(biz.dsn, ROLLUP, a, hour - dt.timedelta(days=20), 999, 999, 999.0)
    body = kpis(biz, h, account)
    assert body["account_id"] == account
    start, end = (dt.datetime.fromisoformat(body[k]) for k in ("from", "to"))
    assert end - start == dt.timedelta(days=7) and body["compare_to"] == body["from"]
    first, second = body["hives"]
    assert (first["hive_id"], second["hive_id"], first["name"]) == (a, b, "Bee Bar 0")
    assert (first["visits"], first["avg_occupancy"], first["peak_occupancy"]) == (40, 10.0, 20)
    # Little's law: average occupancy 10 / arrival rate 20 per hour = 0.5 h
    assert first["avg_dwell_minutes"] == 30.0
    three, two, five = (local_hour(hour - dt.timedelta(hours=n)) for n in (3, 2, 5))
    assert first["peak_hours"] == [three, two]
    assert first["change"]["visits"] == 1.0 and first["change"]["avg_occupancy"] == 0.0
    assert first["change"]["peak_occupancy"] == round(8 / 12, 4)
    assert second["visits"] == 4 and second["change"]["visits"] is None  # nothing before
    total = body["total"]
    assert (total["visits"], total["avg_occupancy"], total["peak_occupancy"]) == (44, 12.0, 20)
    # 12 people on average over arrival rates 20/h + 4/h
    assert total["avg_dwell_minutes"] == 30.0
    assert total["peak_hours"] == [three, two, five]
    # one hive only, and an explicit comparison period
    query = (f"?hives={b}&from={(hour - dt.timedelta(hours=6)).isoformat()}"
             f"&to={hour.isoformat()}&compare_from=2026-01-01T00:00:00Z"
             "&compare_to=2026-01-02T00:00:00Z")
    only = kpis(biz, h, account, query.replace("+00:00", "Z"))
    assert [x["hive_id"] for x in only["hives"]] == [b] and only["total"]["visits"] == 4
    assert only["compare_from"] == "2026-01-01T00:00:00Z"


def test_app_usage_and_favourites(biz: httpx.Client) -> None:
    h, account, (a, b) = business(biz)
    user, _ = signed_in(biz)
    events = ([{"type": "hive_viewed", "page": "hive_detail", "hive_id": a}] * 3
              + [{"type": "deal_opened", "page": "deal", "hive_id": a}]
              + [{"type": "search_made", "page": "search", "data": {"hive_ids": [a, b]}}] * 2
              # free-form data: what is not a hive id is ignored, the rest still counts
              + [{"type": "search_made", "page": "search",
                  "data": {"hive_ids": ["x", 1.5, a, {"id": b}]}},
                 {"type": "hive_viewed", "page": "hive_detail", "data": {"hive_id": "nope"}},
                 {"type": "screen_viewed", "page": "hive_detail", "hive_id": a}])
    expect(biz.post("/v1/events", json={"events": events}, headers=user), 202)
    for fan in (user, signed_in(biz)[0]):
        expect(biz.put(f"/v1/me/favourites/{a}", headers=fan), 204)

    def figures() -> dict:
        return {x["hive_id"]: x for x in kpis(biz, h, account)["hives"]}

    wait_for(lambda: figures()[a]["detail_views"] == 3, what="the events to be written")
    got = figures()
    assert (got[a]["deal_opens"], got[a]["search_impressions"], got[a]["favourites_gained"]) \
        == (1, 3, 2)
    assert (got[b]["detail_views"], got[b]["search_impressions"]) == (0, 2)
    total = kpis(biz, h, account)["total"]
    assert (total["detail_views"], total["search_impressions"], total["deal_opens"],
            total["favourites_gained"]) == (3, 5, 1, 2)


def test_kpis_bad_input(biz: httpx.Client) -> None:
    h, account, (a, _) = business(biz)
    _, other_account, (foreign, _) = business(biz)
    url = f"/v1/accounts/{account}/kpis"
    cases = [
        ("?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),      # from after to
        ("?from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),      # > max_window
        (f"?hives={a},{foreign}", "hives"),                                   # not ours
        ("?hives=999999999", "hives"),                                        # no such hive
        ("?compare_from=2026-01-01T00:00:00Z", "compare_to"),                 # half a period
        ("?compare_from=2026-01-05T00:00:00Z&compare_to=2026-01-01T00:00:00Z",
         "compare_from"),
    ]
    for query, field in cases:
        expect(biz.get(url + query, headers=h), 422, field)
    for query, field in (("?from=yesterday", "from"), ("?to=2026-01-01T00:00:00", "to"),
                         ("?hives=x", "hives"), ("?bucket=1h", "bucket")):
        expect(biz.get(url + query, headers=h), 400, field)
    stranger, _ = signed_in(biz)
    expect(biz.get(url, headers=stranger), 404)
    expect(biz.get(url), 401)
    expect(biz.get(f"/v1/accounts/{account}/feedback?hive={foreign}", headers=h), 422, "hive")
    expect(biz.get(f"/v1/accounts/{account}/feedback?from=2026-02-01T00:00:00Z"
                   "&to=2026-01-01T00:00:00Z", headers=h), 422, "from")
    assert other_account != account


def test_who_may_read_an_accounts_kpis_and_feedback(biz: httpx.Client) -> None:
    h, account, (hive, _) = business(biz)
    viewer, viewer_id = signed_in(biz)
    operator, operator_id = signed_in(biz)
    outsider, _ = signed_in(biz)
    _, other, _ = business(biz)  # another business: our viewer is nobody there
    expect(biz.put(f"/v1/accounts/{account}/members/{viewer_id}", json={"role": "viewer"},
                   headers=h), 200)
    sql(biz.dsn, "UPDATE app_user SET user_role = 'operator' WHERE id = $1", operator_id)
    for path in (f"/v1/accounts/{account}/kpis", f"/v1/accounts/{account}/feedback",
                 f"/v1/hives/{hive}/health"):
        for who, status in ((h, 200), (viewer, 200), (operator, 200), (outsider, 404),
                            ({}, 401)):
            expect(biz.get(path, headers=who), status)
    expect(biz.get(f"/v1/accounts/{other}/kpis", headers=viewer), 404)
    expect(biz.get("/v1/accounts/999999999/kpis", headers=operator), 404)


def test_feedback_with_ratings_and_sentiment(biz: httpx.Client) -> None:
    h, account, (a, b) = business(biz)
    user, user_id = signed_in(biz)
    for text, hive, rating in (("Great place, loved the music!", a, 5),
                               ("Terrible service and dirty tables.", a, 1),
                               ("We came on a Tuesday.", b, None)):
        body = {"text": text, "hive_id": hive} | ({} if rating is None else {"rating": rating})
        expect(biz.post("/v1/me/messages", json=body, headers=user), 201)
    expect(biz.post("/v1/me/messages", json={"text": "x", "hive_id": a, "rating": 6},
                    headers=user), 422, "rating")
    expect(biz.post("/v1/me/messages", json={"text": "x", "hive_id": a, "rating": 0},
                    headers=user), 422, "rating")
    got = expect(biz.get(f"/v1/accounts/{account}/feedback", headers=h), 200)
    labels = {m["content"]: (m["rating"], m["label"], m["user_id"]) for m in got["messages"]}
    assert labels == {"Great place, loved the music!": (5, "positive", user_id),
                      "Terrible service and dirty tables.": (1, "negative", user_id),
                      "We came on a Tuesday.": (None, "neutral", user_id)}
    assert all(-1 <= m["sentiment"] <= 1 for m in got["messages"])
    totals = {t["hive_id"]: t for t in got["totals"]}
    assert (totals[a]["count"], totals[a]["rated"], totals[a]["avg_rating"]) == (2, 2, 3.0)
    assert (totals[a]["positive"], totals[a]["negative"], totals[b]["neutral"]) == (1, 1, 1)
    only_b = expect(biz.get(f"/v1/accounts/{account}/feedback?hive={b}", headers=h), 200)
    assert [m["hive_id"] for m in only_b["messages"]] == [b]
    # a message stored without a score (before migration 0011) is scored by the backfill
    sql(biz.dsn, "INSERT INTO user_message (user_id, hive_id, direction, kind, content, "
                 "rating) VALUES ($1, $2, 'from_user', 'feedback', 'Awful, never again.', 2)",
        user_id, b)
    assert asyncio.run(backfill(biz.dsn)) >= 1
    got = expect(biz.get(f"/v1/accounts/{account}/feedback?hive={b}", headers=h), 200)
    assert {m["content"]: m["label"] for m in got["messages"]}["Awful, never again."] \
        == "negative"
