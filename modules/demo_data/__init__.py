"""Demo data: `bizzyd demo-data` fills the database with a plausible city.

Hive types, addresses in a city-sized box with zip codes, accounts, hives (capacity,
IANA time zone), images, deals, v1 and v2 sensors with modems, profiles and schedules,
users with subscriptions, payments, favourites and recents, and a week of sensor
history stored as ingest would have stored it (`sensor_report` rows, per-sensor ingest
state, current and hourly occupancy).  Deterministic per `--seed` and anchor (`--now`,
default today 00:00 UTC).  Needs `modules.database` in the config (for `database.dsn`)
unless `--dsn` is given.  See `bizzyd demo-data --help` and `generate.py`.
"""

from __future__ import annotations

from bizzyd.module import Module

from .generate import main

module = Module(
    name="demo_data",
    commands={"demo-data": main},
    doc=__doc__ or "",
)

__all__ = ["main", "module"]
