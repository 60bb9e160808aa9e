"""The catalogue endpoints on a real bizzyd, Postgres+PostGIS and memcached: what they
answer (checked against Postgres), validation (400 problem+json naming the parameter),
404, ETag/304, gzip and CORS."""

from __future__ import annotations

import asyncio
import gzip
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from bizzyd_proc import wait_for
from modules.hives.testing import metric

pytestmark = pytest.mark.services


def db(dsn: str, sql: str, *args: object) -> list:
    async def run() -> list:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()
    return asyncio.run(run())


LISTED = "SELECT h.id FROM hive h JOIN hive_status s ON s.id = h.status_id WHERE s.listed"


def walk(client: httpx.Client, url: str) -> list[dict]:
    """Every item of a listing, following `next` (bounded)."""
    items: list[dict] = []
    for _ in range(100):
        r = client.get(url)
        assert r.status_code == 200, r.text
        page = r.json()
        items += page["items"]
        if page["next"] is None:
            return items
        url = page["next"]
    raise AssertionError("more than 100 pages")


def test_listing_pages_cover_every_listed_hive_once_sorted_by_name(catalogue, catalogue_dsn):
    r = catalogue.get("/v1/hives")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "public, max-age=30"
    first = r.json()
    assert len(first["items"]) == 20 and first["next"].startswith("/v1/hives?")
    items = walk(catalogue, "/v1/hives?limit=37")
    ids = [i["id"] for i in items]
    assert len(ids) == len(set(ids))
    assert set(ids) == {r["id"] for r in db(catalogue_dsn, LISTED)}
    names = db(catalogue_dsn, f"SELECT h.name, h.id FROM hive h WHERE h.id IN ({LISTED}) "
                              "ORDER BY h.name, h.id")
    assert ids == [r["id"] for r in names]
    one = items[0]
    assert set(one) >= {"id", "name", "type", "address", "capacity", "cover_image",
                        "occupancy", "active_deals", "updated_at"}
    assert "distance_m" not in one
    assert set(one["address"]) == {"street", "city", "zip", "country", "lat", "lon"}
    assert set(one["occupancy"]) == {"count", "capacity", "percent", "level", "as_of",
                                     "source"}


def test_near_is_radius_and_nearest_first(catalogue, catalogue_dsn):
    lat, lon, radius = 52.52, 13.405, 2500
    items = walk(catalogue, f"/v1/hives?near={lat},{lon}&radius={radius}&limit=25")
    assert items, "the demo city has hives in the centre"
    distances = [i["distance_m"] for i in items]
    assert distances == sorted(distances) and distances[-1] <= radius
    expected = db(catalogue_dsn, f"""
        SELECT h.id FROM hive h JOIN address a ON a.id = h.address_id
        WHERE h.id IN ({LISTED}) AND ST_Distance(a.geog,
              ST_SetSRID(ST_MakePoint($2, $1), 4326)::geography, false) <= $3""",
                  lat, lon, radius)
    assert {i["id"] for i in items} == {r["id"] for r in expected}
    nearest = catalogue.get(f"/v1/hives?near={lat},{lon}&type=bar&type=cafe&limit=5").json()
    assert {i["type"] for i in nearest["items"]} <= {"bar", "cafe"}


def test_name_search_ignores_case_and_accents_and_tolerates_prefixes_and_typos(
        catalogue, catalogue_dsn):
    name = db(catalogue_dsn, f"SELECT name, id FROM hive WHERE id IN ({LISTED}) "
                             "AND length(name) > 12 ORDER BY id LIMIT 1")[0]
    word = max(name["name"].split(), key=len)
    typo = word[:2] + word[3] + word[2] + word[4:]  # two letters swapped
    for q in (word.upper(), word[:-1], typo, name["name"].lower()):
        r = catalogue.get("/v1/hives", params={"q": q, "limit": 100})
        assert r.status_code == 200
        assert name["id"] in [i["id"] for i in r.json()["items"]], q
    accented = db(catalogue_dsn, f"SELECT name, id FROM hive WHERE id IN ({LISTED}) "
                                 "AND name ~ '[äöüé]' ORDER BY id LIMIT 1")
    if accented:  # the demo's names: Rösterei, Café ...
        plain = accented[0]["name"].translate(str.maketrans("äöüé", "aoue"))
        items = catalogue.get("/v1/hives", params={"q": plain, "limit": 100}).json()["items"]
        assert accented[0]["id"] in [i["id"] for i in items]
    exact = catalogue.get("/v1/hives", params={"q": name["name"]}).json()["items"]
    assert exact[0]["name"] == name["name"]  # the best match ranks first


def test_filters_combine(catalogue, catalogue_dsn):
    row = db(catalogue_dsn, f"SELECT a.zip FROM hive h JOIN address a ON a.id = h.address_id "
                            f"WHERE h.id IN ({LISTED}) AND a.city = 'Berlin' LIMIT 1")[0]
    for item in walk(catalogue, f"/v1/hives?zip={row['zip']}&city=BERLIN&limit=100"):
        assert item["address"]["zip"] == row["zip"] and item["address"]["city"] == "Berlin"
    box = (13.35, 52.49, 13.43, 52.53)
    inside = walk(catalogue, "/v1/hives?bbox=" + ",".join(map(str, box)) + "&limit=100")
    assert inside
    for item in inside:
        a = item["address"]
        assert box[0] <= a["lon"] <= box[2] and box[1] <= a["lat"] <= box[3]
    quiet = walk(catalogue, "/v1/hives?max_occupancy=30&sort=occupancy&limit=100")
    percents = [i["occupancy"]["percent"] for i in quiet]
    assert percents == sorted(percents) and max(percents) <= 30
    with_deal = walk(catalogue, "/v1/hives?has_deal=true&limit=100")
    assert with_deal and all(i["active_deals"] >= 1 for i in with_deal)
    without = walk(catalogue, "/v1/hives?has_deal=false&limit=100")
    assert all(i["active_deals"] == 0 for i in without)
    assert len(with_deal) + len(without) == len(db(catalogue_dsn, LISTED))


def test_detail_images_and_deals(catalogue, catalogue_dsn):
    hive_id = db(catalogue_dsn, f"""
        SELECT h.id FROM hive h WHERE h.id IN ({LISTED})
          AND (SELECT count(*) FROM hive_image i WHERE i.hive_id = h.id) >= 3
          AND EXISTS (SELECT 1 FROM deal d WHERE d.hive_id = h.id AND d.valid_until > now())
        ORDER BY h.id LIMIT 1""")[0]["id"]
    detail = catalogue.get(f"/v1/hives/{hive_id}").json()
    assert detail["id"] == hive_id and detail["timezone"]
    kinds = [i["kind"] for i in detail["images"]]
    assert kinds[0] == "cover" and set(kinds[1:]) == {"secondary"}
    positions = [i["position"] for i in detail["images"][1:]]
    assert positions == sorted(positions)
    assert detail["cover_image"] == detail["images"][0]["url"]
    now = datetime.now(UTC)
    for deal in detail["deals"]:
        start = datetime.fromisoformat(deal["valid_from"])
        assert datetime.fromisoformat(deal["valid_until"]) > now
        assert deal["status"] == ("active" if start <= now else "upcoming")
    assert detail["active_deals"] == sum(d["status"] == "active" for d in detail["deals"])
    images = catalogue.get(f"/v1/hives/{hive_id}/images").json()["items"]
    assert images == detail["images"]
    deals = catalogue.get(f"/v1/hives/{hive_id}/deals").json()["items"]
    assert deals == detail["deals"]
    active = catalogue.get(f"/v1/hives/{hive_id}/deals?status=active").json()["items"]
    assert [d for d in deals if d["status"] == "active"] == active
    soon = catalogue.get(f"/v1/hives/{hive_id}/deals?expiring_within=7d").json()["items"]
    for deal in soon:
        left = datetime.fromisoformat(deal["valid_until"]) - now
        assert deal["status"] == "active" and left.total_seconds() <= 7 * 86400


def test_unknown_and_unlisted_hives_are_404(catalogue, catalogue_dsn):
    draft = db(catalogue_dsn, "SELECT h.id FROM hive h JOIN hive_status s "
                              "ON s.id = h.status_id WHERE NOT s.listed LIMIT 1")
    ids = [999999, 2**63 - 1] + [r["id"] for r in draft]
    for hive_id in ids:
        for page in ("", "/images", "/deals"):
            r = catalogue.get(f"/v1/hives/{hive_id}{page}")
            assert r.status_code == 404, (hive_id, page)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["detail"] == "no such hive"


def test_hive_types_and_deal_feed(catalogue, catalogue_dsn):
    types = catalogue.get("/v1/hive-types").json()["items"]
    assert {t["slug"] for t in types} >= {"bar", "cafe", "restaurant"}
    assert sum(t["hives"] for t in types) == len(db(catalogue_dsn, LISTED))
    feed = walk(catalogue, "/v1/deals?limit=30")
    active = db(catalogue_dsn, f"SELECT d.id FROM deal d WHERE d.hive_id IN ({LISTED}) "
                               "AND d.valid_from <= now() AND d.valid_until > now()")
    assert sorted(i["deal"]["id"] for i in feed) == sorted(r["id"] for r in active)
    ends = [i["deal"]["valid_until"] for i in feed]
    assert ends == sorted(ends)
    near = walk(catalogue, "/v1/deals?near=52.52,13.405&radius=3000&sort=distance&type=bar")
    distances = [i["hive"]["distance_m"] for i in near]
    assert distances == sorted(distances) and all(d <= 3000 for d in distances)
    assert all(i["hive"]["type"] == "bar" for i in near)


BAD = [
    ("/v1/hives?near=91,13", "near"),
    ("/v1/hives?near=52.5", "near"),
    ("/v1/hives?near=52.5,abc", "near"),
    ("/v1/hives?near=52.5,13.4&radius=50001", "radius"),
    ("/v1/hives?near=52.5,13.4&radius=0", "radius"),
    ("/v1/hives?radius=100", "radius"),
    ("/v1/hives?limit=101", "limit"),
    ("/v1/hives?limit=0", "limit"),
    ("/v1/hives?limit=ten", "limit"),
    ("/v1/hives?sort=popularity", "sort"),
    ("/v1/hives?sort=distance", "sort"),
    ("/v1/hives?sort=relevance", "sort"),
    ("/v1/hives?type=spaceport", "type"),
    ("/v1/hives?type=Bar!", "type"),
    ("/v1/hives?bbox=13.5,52.4,13.3,52.6", "bbox"),
    ("/v1/hives?bbox=1,2,3", "bbox"),
    ("/v1/hives?max_occupancy=101", "max_occupancy"),
    ("/v1/hives?has_deal=yes", "has_deal"),
    ("/v1/hives?q=a", "q"),
    ("/v1/hives?zip=%3Bdrop", "zip"),
    ("/v1/hives?cursor=not-a-cursor", "cursor"),
    ("/v1/hives?limit=1&limit=2", "limit"),
    ("/v1/hives?colour=red", "colour"),
    ("/v1/hives/1/deals?status=expired", "status"),
    ("/v1/hives/1/deals?expiring_within=1y", "expiring_within"),
    ("/v1/hives/1/deals?status=upcoming&expiring_within=24h", "expiring_within"),
    ("/v1/deals?sort=distance", "sort"),
    ("/v1/deals?radius=10", "radius"),
    ("/v1/hive-types?x=1", "x"),
]


@pytest.mark.parametrize(("url", "param"), BAD)
def test_bad_parameters_are_400_problems_naming_the_parameter(catalogue, url, param):
    r = catalogue.get(url)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 400 and body["title"] == "Bad Request"
    assert body["type"] == "about:blank"
    assert [p["name"] for p in body["invalid_params"]] == [param]
    assert body["detail"].startswith(f"{param}: ")


def test_tampered_and_foreign_cursors_are_refused(catalogue):
    page = catalogue.get("/v1/hives?limit=5").json()
    token = page["next"].rsplit("cursor=", 1)[1]
    assert catalogue.get(page["next"]).status_code == 200
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert catalogue.get(f"/v1/hives?limit=5&cursor={flipped}").status_code == 400
    # the same cursor on another query (another sort or filter) is not accepted
    r = catalogue.get(f"/v1/hives?limit=6&cursor={token}")
    assert r.status_code == 400 and r.json()["invalid_params"][0]["name"] == "cursor"


def test_etag_304_gzip_and_cors(catalogue):
    r = catalogue.get("/v1/hives?limit=50", headers={"Origin": "https://app.example"})
    assert r.headers["access-control-allow-origin"] == "*"
    etag = r.headers["etag"]
    again = catalogue.get("/v1/hives?limit=50", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    raw = httpx.get(str(catalogue.base_url) + "/v1/hives?limit=50",
                    headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.json() == r.json()  # httpx decodes; the body was smaller on the wire
    assert len(gzip.compress(r.content)) < len(r.content)


def test_live_occupancy_overlays_cached_answers(catalogue, catalogue_dsn):
    hive_id = catalogue.get("/v1/hives?limit=1").json()["items"][0]["id"]
    before = catalogue.get(f"/v1/hives/{hive_id}").json()
    assert before["occupancy"]["source"] == "zone"
    capacity = before["capacity"]
    target = (before["occupancy"]["count"] + 7) % (capacity + 1)
    db(catalogue_dsn, "UPDATE hive_occupancy SET occupancy = $2, updated_at = now() "
                      "WHERE hive_id = $1", hive_id, target)
    # the cache manager reconciles the zone from Postgres (every second here)
    wait_for(lambda: catalogue.get(f"/v1/hives/{hive_id}/occupancy").json()["occupancy"]
             == target, timeout=10, what="the zone to take the new occupancy")
    fills = metric(catalogue, "fills_total")
    after = catalogue.get(f"/v1/hives/{hive_id}").json()
    assert after["occupancy"]["count"] == target
    assert after["occupancy"]["percent"] == round(100 * target / capacity)
    assert metric(catalogue, "fills_total") == fills  # served from the cache
    listed = catalogue.get("/v1/hives?limit=1").json()["items"][0]
    assert listed["id"] == hive_id and listed["occupancy"]["count"] == target


def test_openapi_document_describes_every_route_from_the_declarations(catalogue):
    from modules.hives.api import HANDLERS

    doc = catalogue.get("/v1/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    routes = [h.route for h in HANDLERS.values()]
    assert set(doc["paths"]) == {r.path for r in routes}
    schemas = doc["components"]["schemas"]
    for route in routes:
        op = doc["paths"][route.path]["get"]
        assert [p["name"] for p in op["parameters"]] == [p.name for p in route.params]
        ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.rsplit("/", 1)[1] == route.response.__name__ in schemas
        assert "application/problem+json" in op["responses"]["400"]["content"]
    limit = next(p for p in doc["paths"]["/v1/hives"]["get"]["parameters"]
                 if p["name"] == "limit")
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 100,
                               "default": 20}


def test_other_methods_and_paths_are_problems(catalogue):
    r = catalogue.request("DELETE", "/v1/hives/1")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    assert r.headers["content-type"] == "application/problem+json"
    r = catalogue.get("/v1/hivez")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert catalogue.head("/v1/hives/1").status_code == 200


def test_docs_api_md_names_every_path_and_parameter_of_the_document(catalogue):
    from bizzyd_proc import ROOT

    text = (ROOT / "docs" / "api.md").read_text()
    doc = catalogue.get("/v1/openapi.json").json()
    for path, ops in doc["paths"].items():
        assert f"`GET {path}`" in text, path
        for p in ops["get"]["parameters"]:
            assert f"`{p['name']}`" in text, (path, p["name"])
