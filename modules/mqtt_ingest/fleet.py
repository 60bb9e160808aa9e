"""The sensor fleet as the simulator sees it: read from Postgres, or created for a demo.

`load_fleet` reads every sensor installed in a hive (its external id, firmware, the
hive's time zone, capacity and type).  `create_fleet` inserts a small synthetic fleet
(an account, hives with addresses, sensors) for demos, tests and the benchmark; its
external ids start with a prefix so several fleets can live in one database.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import asyncpg

TIMEZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "Europe/London",
             "Australia/Sydney")
TYPES = ("bar", "restaurant", "cafe", "store", "club", "gym")


@dataclass(frozen=True)
class FleetSensor:
    id: int
    external_id: str
    firmware: str  # v1 | v2
    hive_id: int
    timezone: str
    capacity: int
    hive_type: str


LOAD_SQL = """
SELECT s.id, s.external_id, s.firmware, s.hive_id, h.timezone, h.capacity, t.code
FROM sensor s JOIN hive h ON h.id = s.hive_id JOIN hive_type t ON t.id = h.hive_type_id
WHERE ($1::text IS NULL OR starts_with(s.external_id, $1))
ORDER BY s.id
"""


async def load_fleet(conn: asyncpg.Connection, prefix: str | None = None,
                     limit: int | None = None) -> list[FleetSensor]:
    rows = await conn.fetch(LOAD_SQL, prefix)
    fleet = [FleetSensor(r["id"], r["external_id"], r["firmware"], r["hive_id"],
                         r["timezone"], r["capacity"], r["code"]) for r in rows]
    return fleet[:limit] if limit else fleet


async def create_fleet(conn: asyncpg.Connection, hives: int, sensors_per_hive: int = 2,
                       v2_share: float = 0.5, prefix: str = "sim", seed: int = 1,
                       timezones: tuple[str, ...] = TIMEZONES,
                       types: tuple[str, ...] = TYPES) -> list[FleetSensor]:
    """Insert `hives` hives with `sensors_per_hive` sensors each; returns the sensors."""
    rng = random.Random(seed)
    async with conn.transaction():
        account = await conn.fetchval(
            "INSERT INTO account (name) VALUES ($1) RETURNING id", f"{prefix} venues")
        status = await conn.fetchval("SELECT id FROM hive_status WHERE code = 'active'")
        type_ids = {r["code"]: r["id"] for r in await conn.fetch("SELECT id, code FROM hive_type")}
        for h in range(hives):
            address = await conn.fetchval(
                "INSERT INTO address (street, city, country) VALUES ($1, 'Simcity', 'DE') "
                "RETURNING id", f"{prefix} street {h}")
            kind = types[h % len(types)]
            hive = await conn.fetchval(
                "INSERT INTO hive (account_id, address_id, hive_type_id, status_id, name, "
                "timezone, capacity) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                account, address, type_ids[kind], status, f"{prefix} {kind} {h}",
                timezones[h % len(timezones)], rng.choice((40, 80, 150, 300)))
            for n in range(sensors_per_hive):
                firmware = "v2" if rng.random() < v2_share else "v1"
                await conn.execute(
                    "INSERT INTO sensor (external_id, name, firmware, hive_id, installed_at) "
                    "VALUES ($1, $2, $3, $4, now())",
                    f"{prefix}-{h}-{n}", f"door {n}", firmware, hive)
    return await load_fleet(conn, f"{prefix}-")
