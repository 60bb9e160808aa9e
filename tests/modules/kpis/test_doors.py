"""Ingest keeps sensor_door_daily (entries and exits per sensor and local day) equal to
the sum of the stored reports' deltas, late events included (real Postgres)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from datetime import time as clock

import asyncpg
import pytest

from modules.mqtt_ingest.codec import (
    Event,
    EventReport,
    EventType,
    encode_event_report,
    sensor_topic,
)
from modules.mqtt_ingest.counting import CountingParams
from modules.mqtt_ingest.fleet import create_fleet
from modules.mqtt_ingest.store import Incoming, StoreSettings, classify, store_batch
from modules.mqtt_ingest.testing import create_database, drop_database

pytestmark = pytest.mark.services

SETTINGS = StoreSettings(CountingParams(), clock(4, 0), "UTC")
# Berlin's midnight (23:00Z) falls inside the events: two local days
START = datetime(2024, 3, 14, 22, 40, tzinfo=UTC)
FROM_REPORTS = """
SELECT sensor_id, (reported_at AT TIME ZONE 'Europe/Berlin')::date AS day,
       sum(delta_in)::int AS entries, sum(delta_out)::int AS exits
FROM sensor_report GROUP BY 1, 2 HAVING sum(delta_in) <> 0 OR sum(delta_out) <> 0
ORDER BY 1, 2"""


def events(external_id: str, kinds: str, first: int) -> list[tuple[str, bytes]]:
    """One message per event: `kinds` is a string of i (entry) and o (exit), 10 min apart."""
    out = []
    for n, kind in enumerate(kinds):
        event = Event(EventType.ENTRY if kind == "i" else EventType.EXIT, 500,
                      (first + n) % 256, START + timedelta(minutes=10 * n))
        out.append((sensor_topic(external_id, "events"),
                    encode_event_report(EventReport((event,)))))
    return out


def test_door_counters_follow_the_reports() -> None:
    async def run() -> tuple[list, list]:
        dsn = await create_database()
        conn = await asyncpg.connect(dsn)
        try:
            sensors = await create_fleet(conn, 1, 2, prefix="d",
                                         timezones=("Europe/Berlin",))
            await conn.execute("UPDATE sensor SET firmware = 'v2'")
            one, two = (s.external_id for s in sensors)
            first = events(one, "iiiioiiiio", 0)
            second = events(two, "ooio", 100)
            # the sensor's messages out of order: late ones are recomputed into history
            batches = [first[:3] + first[6:], first[3:6], second[2:], second[:2]]
            for batch in batches:
                async with conn.transaction():
                    await store_batch(conn, [classify(Incoming(t, p, time.time()))
                                             for t, p in batch], SETTINGS, START)
            doors = await conn.fetch("SELECT sensor_id, day, entries, exits "
                                     "FROM sensor_door_daily ORDER BY 1, 2")
            return [tuple(r) for r in doors], [tuple(r) for r in await conn.fetch(FROM_REPORTS)]
        finally:
            await conn.close()
            await drop_database(dsn)

    doors, reports = asyncio.run(run())
    assert doors == reports
    assert len({day for _, day, _, _ in doors}) == 2 and sum(d[2] for d in doors) > 0
