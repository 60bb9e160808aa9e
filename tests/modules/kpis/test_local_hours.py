"""The period's figures and peak hours, grouped by local hour in SQL, agree with a row
by row computation over a window that starts and ends inside a day and spans the end of
DST in two zones (Berlin on 25 October, New York on 1 November 2026)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from zoneinfo import ZoneInfo

import httpx
import pytest
from kpis_support import business, expect, sql

pytestmark = pytest.mark.services

START = dt.datetime(2026, 10, 20, 5, tzinfo=dt.UTC)
FROM, TO = dt.datetime(2026, 10, 22, 7, 30, tzinfo=dt.UTC), dt.datetime(2026, 11, 3, 17,
                                                                         tzinfo=dt.UTC)
ROWS = """
INSERT INTO hive_occupancy_hourly (hive_id, hour, entries, exits, peak_occupancy,
                                   avg_occupancy)
SELECT $1, h, e, e, e + 3, (e % 13) / 4.0
FROM generate_series($2::timestamptz, $3::timestamptz, interval '1 hour') AS h,
     LATERAL (SELECT (abs(hashint8($1 * 7919 + extract(epoch FROM h)::bigint)) % 50)::int
              AS e) AS x"""


def expected(rows: list[dict], zone: str) -> dict:
    inside = [r for r in rows if FROM <= r["hour"] < TO]
    by_hour: dict[int, list[float]] = defaultdict(lambda: [0.0, 0])
    for r in inside:
        cell = by_hour[r["hour"].astimezone(ZoneInfo(zone)).hour]
        cell[0] += r["avg_occupancy"]
        cell[1] += 1
    means = {h: s / n for h, (s, n) in by_hour.items()}
    ranked = sorted((h for h, m in means.items() if m > 0), key=lambda h: (-means[h], h))
    return {"visits": sum(r["entries"] for r in inside),
            "avg_occupancy": round(sum(r["avg_occupancy"] for r in inside) / len(inside), 2),
            "peak_occupancy": max(r["peak_occupancy"] for r in inside),
            "peak_hours": ranked[:3]}


def test_figures_by_local_hour_across_dst_with_partial_days(biz: httpx.Client) -> None:
    h, account, (berlin, new_york) = business(biz)
    sql(biz.dsn, "UPDATE hive SET timezone = 'America/New_York' WHERE id = $1", new_york)
    zones = {berlin: "Europe/Berlin", new_york: "America/New_York"}
    for hive in zones:
        sql(biz.dsn, ROWS, hive, START, START + dt.timedelta(days=20))
    query = f"?from={FROM:%Y-%m-%dT%H:%M:%SZ}&to={TO:%Y-%m-%dT%H:%M:%SZ}"
    body = expect(biz.get(f"/v1/accounts/{account}/kpis{query}", headers=h), 200)
    got = {x["hive_id"]: x for x in body["hives"]}
    for hive, zone in zones.items():
        rows = sql(biz.dsn, "SELECT hour, entries, peak_occupancy, avg_occupancy::float8 "
                            "FROM hive_occupancy_hourly WHERE hive_id = $1", hive)
        want = expected(rows, zone)
        assert {k: got[hive][k] for k in want} == want, zone
    assert got[berlin]["peak_hours"] != got[new_york]["peak_hours"]  # the zones count
