"""A bizzyd serving the dashboard on a demo city (with its demo business user), MQTT
ingest from the local mosquitto, and Chromium driven by playwright."""

from __future__ import annotations

import asyncio
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from modules.analytics.testing import add_analytics
from modules.business.testing import business_config
from modules.dashboard.testing import DIST, WEB, dashboard_locations
from modules.demo_data.business_user import DEMO_EMAIL, DEMO_PASSWORD
from modules.kpis.testing import kpis_config
from modules.mqtt_ingest.codec import (
    CounterReport,
    Event,
    EventReport,
    EventType,
    ReportType,
    encode_counter_report,
    encode_event_report,
    sensor_topic,
)
from modules.mqtt_ingest.testing import DEFAULT_MQTT_PORT

AXE = WEB / "node_modules" / "axe-core" / "axe.min.js"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
LIMIT = {"rate": "1000r/s", "burst": 5000, "address_rate": "1000r/s", "address_burst": 5000}
# the live and insights locations of conf/demo.yaml (analytics and kpis: their testing.py)
OCCUPANCY = [
    {"location": "~ ^/v1/hives/(?<id>[0-9]+)/occupancy/stream$", "content": "occupancy_stream"},
    {"location": "= /v1/occupancy", "content": "occupancy_many"},
    {"location": "= /v1/occupancy/stream", "content": "occupancy_stream_many"},
    {"location": "~ ^/v1/hives/(?<id>[0-9]+)/popular-times$", "content": "popular_times"},
    {"location": "~ ^/v1/hives/(?<id>[0-9]+)/forecast$", "content": "forecast",
     "auth": "optional"},
]


def built() -> None:
    """The bundle must exist: `make dashboard` (make test depends on it)."""
    if not (DIST / "index.html").exists() or not AXE.exists():
        raise AssertionError(f"{DIST}/index.html or {AXE} is missing: run `make dashboard`")


def dashboard_config(port: int, dsn: str, emulator: str, project: str, images: str,
                     tag: str) -> dict[str, Any]:
    """The business config (with MQTT ingest, topics under `tag`) plus live streams,
    analytics, insights, kpis and the dashboard, as in conf/demo.yaml."""
    firebase = {"project_id": project, "emulator": emulator, "features_ttl": "0s"}
    config = business_config(port, dsn, os.environ.get("BIZZYD_MEMCACHED", "127.0.0.1:21211"),
                             firebase, LIMIT, images)
    config["modules"] += ["modules.insights", "modules.dashboard"]
    # ingest (business_config has it for the configuration push) on topics of our own
    config["mqtt"].update(host="127.0.0.1", port=DEFAULT_MQTT_PORT, topic_prefix=tag,
                          client_id=tag, processes=1)
    locations = config["http"]["servers"][0]["locations"]
    at = next(i for i, loc in enumerate(locations) if loc.get("content") == "api_not_found")
    locations[at:at] = [*OCCUPANCY, *dashboard_locations()]
    add_analytics(config, LIMIT)
    return kpis_config(config)


async def _fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


def run_async(coro: Any) -> Any:
    """asyncio.run in a thread of its own: playwright's sync API keeps an event loop
    running in the test's thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(60)


def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    return run_async(_fetch(dsn, query, *args))


SENSOR = """
SELECT s.external_id, s.firmware, h.timezone, st.last_total_in, st.last_total_out,
       st.last_counter
FROM sensor s JOIN hive h ON h.id = s.hive_id
LEFT JOIN sensor_ingest_state st ON st.sensor_id = s.id
WHERE s.hive_id = $1 ORDER BY s.id LIMIT 1"""


def report_entries(dsn: str, hive_id: int, tag: str, entries: int) -> None:
    """Publish a report of `entries` people coming in at a sensor of the hive, as its
    firmware sends it (v1: cumulative totals; v2: entry events), to the local mosquitto."""
    row = fetch(dsn, SENSOR, hive_id)[0]
    if row["firmware"] == "v1":
        local = datetime.now(ZoneInfo(row["timezone"])).replace(tzinfo=None, microsecond=0)
        payload = encode_counter_report(CounterReport(
            (row["last_total_in"] or 0) + entries, row["last_total_out"] or 0, local,
            ReportType.COUNT))
        topic = sensor_topic(row["external_id"], "counters", tag)
    else:
        now = datetime.now(UTC).replace(microsecond=0)
        first = (row["last_counter"] or 0) + 1
        payload = encode_event_report(EventReport(tuple(
            Event(EventType.ENTRY, 1500, (first + i) % 256, now) for i in range(entries))))
        topic = sensor_topic(row["external_id"], "events", tag)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{tag}-pub-{secrets.token_hex(2)}",
                         protocol=paho.MQTTv5)
    client.connect("127.0.0.1", DEFAULT_MQTT_PORT)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass
class PageWatch:
    """Console errors, uncaught exceptions and requests of a page."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> Any:
        page.on("console", lambda m: self.errors.append(f"console: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("request", lambda r: self.requests.append(r.url))
        return page

    def foreign(self, *origins: str) -> list[str]:
        """Requests to anywhere but `origins` (data: URLs are no requests out)."""
        return [u for u in self.requests
                if not u.startswith(("data:", *(o.rstrip("/") + "/" for o in origins)))]


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """Serious and critical axe-core violations of the page as it is now."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


# counts the pixels of a canvas drawn in a series' colour (uPlot draws axes and grid in
# greys): a chart with no data has none.  The colours: the first series' blue, and the
# "today" chart's usual (#6b3fa0) and expected (#2a7d2e) lines, which have data at any
# hour (today's own line is empty just after the hive's local midnight)
SERIES_PIXELS = """(figure) => {
  const canvas = figure.querySelector('canvas');
  if (!canvas || !canvas.width) return 0;
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const near = (r, g, b, R, G, B) => Math.abs(r - R) + Math.abs(g - G) + Math.abs(b - B) < 60;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
    if (a > 200 && ((b > 150 && r < 90 && g > 60 && g < 130) || near(r, g, b, 0x6b, 0x3f, 0xa0)
                    || near(r, g, b, 0x2a, 0x7d, 0x2e))) n++;
  }
  return n;
}"""


def chart_report(page: Any) -> dict[str, tuple[int, int]]:
    """Each line chart's title: (data points, pixels of its series)."""
    out = {}
    for figure in page.locator("figure.chart").all():
        out[figure.get_attribute("data-chart")] = (
            int(figure.get_attribute("data-points") or 0), figure.evaluate(SERIES_PIXELS))
    return out


def save(page: Any, directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(browser: Any, server: Any, viewport: dict[str, int] = DESKTOP,
            watch: PageWatch | None = None) -> Any:
    """A new page signed in as the demo business user, on the overview."""
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(10000)
    if watch is not None:
        watch.attach(page)
    page.goto(server.url)
    page.fill("#email", DEMO_EMAIL)
    page.fill("#password", DEMO_PASSWORD)
    page.click("#signin")
    page.wait_for_selector(".hive-list")
    return page
