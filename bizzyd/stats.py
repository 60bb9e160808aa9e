"""Request and connection statistics, one shared-memory row per process.

Each worker counts in plain Python integers (per location, on the compiled
`Location` objects it inherited, so counting costs one list increment) and copies
its counters into its own row of the `stats` zone on every engine tick.  Readers
(the status module) sum the rows.  When a child exits, the master adds its row
into row 0 ("retired") and clears it, so totals survive worker restarts.  The
`restarts` zone holds the master's per-slot count of unexpected worker deaths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .shm import Zone, ZoneSpec

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CLASSES = 5  # 1xx .. 5xx
# a location's counters: status classes 1..5, then histogram buckets (+Inf last),
# then the duration sum (kept as integer microseconds to share one list)
LOC_WIDTH = CLASSES + len(BUCKETS) + 1 + 1
HIST = CLASSES
DURATION_US = CLASSES + len(BUCKETS) + 1
GAUGES = ("pid", "active", "reading", "writing", "waiting")  # not summed into row 0
COUNTERS = ("accepted", "handled")
ROWS = 256
RESTART_SLOTS = 256


def location_labels(servers: Sequence[Any]) -> list[tuple[str, str]]:
    """(server, location) labels in the order of `Location.stats_index`."""
    labels = [("", "(none)")]
    for server in servers:
        name = server.names[0] if server.names else "_"
        labels += [(name, loc.match) for loc in server.locations]
    return labels


def stats_spec(location_count: int) -> ZoneSpec:
    fields = [(name, "q") for name in GAUGES + COUNTERS]
    fields += [(f"l{i}_{j}", "q") for i in range(location_count) for j in range(LOC_WIDTH)]
    return ZoneSpec("stats", tuple(fields), ROWS)


RESTARTS = ZoneSpec("restarts", (("restarts", "q"),), RESTART_SLOTS)


def empty_counters() -> list[int]:
    return [0] * LOC_WIDTH


def bucket_of(seconds: float) -> int:
    for i, bound in enumerate(BUCKETS):
        if seconds <= bound:
            return HIST + i
    return HIST + len(BUCKETS)


def fold_row(zone: Zone, row: int) -> None:
    """Add a finished process's counters into row 0 and clear its row."""
    done = zone.read(row)
    total = list(zone.read(0))
    skip = len(GAUGES)  # gauges of a dead process are not added
    for i in range(skip, len(done)):
        total[i] += done[i]
    total[:skip] = [0] * skip
    zone.write(0, total)
    zone.clear(row)


def summed(zone: Zone) -> list[int]:
    """Every field summed over the rows that are in use (pid set) plus row 0."""
    total = list(zone.read(0))
    for row in range(1, zone.spec.capacity):
        values = zone.read(row)
        if values[0]:
            for i, v in enumerate(values):
                total[i] += v
    return total
