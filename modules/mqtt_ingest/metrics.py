"""Ingest metrics: one row per ingest process slot in the zone `metrics.mqtt_ingest`.

Each ingest process counts in a Python list and copies it into its own row of the
zone after every batch and once a second (one writer per row; a reader summing rows
may see a row mid-copy, which for monotonic counters only means a value a few
messages old).  A respawned process continues from its row, so counters survive
`kill -9`; a change of `mqtt.processes` recreates the zone (counters restart at 0).

Field naming: the convention of the status module's `_module_metrics`, which
exports every `metrics.*` zone summed over its rows:

    <metric>                         e.g. received_total
    <metric>{<label>="<value>",...}  e.g. rejects_total{reason="bad_length"}

* Prometheus name: ``bizzyd_<zone name minus "metrics.", dots as _>_<metric>``:
  ``bizzyd_mqtt_ingest_received_total``,
  ``bizzyd_mqtt_ingest_rejects_total{reason="bad_length"}``.
* ``_total``: a counter.  ``<family>_bucket{le="..."}`` (CUMULATIVE counts, ``+Inf``
  last), ``<family>_sum``, ``<family>_count``: one histogram (TYPE histogram on the
  family; the exporter currently types them as gauges, which Prometheus accepts but a
  histogram type is better).  Anything else is a gauge.
* Durations are integer microseconds, named so (``ack_latency_microseconds``): no unit
  conversion is needed anywhere.
* Summing over rows is right for every field here: gauges are additive too
  (``connected`` = connected processes, ``queue_depth`` = messages waiting on this
  node); ``lag_microseconds`` summed is only meaningful with one process (it is the age
  of the oldest message a process holds unacknowledged).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from bizzyd.shm import Zone, ZoneSpec

from .codec import RejectReason

ZONE = "metrics.mqtt_ingest"
STORE_FAILED = "store_failed"  # a message the database refused even alone
REJECT_REASONS = (*(r.value for r in RejectReason), STORE_FAILED)

BATCH_BOUNDS = (1, 10, 50, 100, 250, 500, 1000, 5000)
LATENCY_US_BOUNDS = (1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
                     1000000, 2500000, 10000000)

GAUGES = ("connected", "queue_depth", "lag_microseconds", "last_commit_seconds")
COUNTERS = (
    "received_total",          # PUBLISH packets received from the broker
    "redelivered_total",       # ... of which carried the dup flag
    "acked_total",             # acknowledged to the broker (after the commit)
    "reports_stored_total",    # sensor_report rows written (v1 reports + v2 events)
    "duplicates_total",        # reports/events dropped: already stored (natural key)
    "late_total",              # reports/events that arrived after later ones
    "status_total",            # status messages stored
    "configs_applied_total",   # pending configurations a status message confirmed
    "anomalies_total",         # v1 deltas above max_delta (not applied)
    "lost_events_total",       # v2 counter gaps
    "clamps_total",            # commits that left a hive's net below zero
    "resets_total",            # daily occupancy resets done by this process
    "occupancy_updates_total",  # OCCUPANCY_UPDATE pushed on the bus
    "bus_dropped_total",       # ... dropped because the bus queue was full
    "db_errors_total",         # failed transactions (the batch is retried)
    "connects_total",          # successful MQTT connects (CONNACK accepted)
    "disconnects_total",       # lost or closed MQTT connections
)


def _histogram(family: str, bounds: Sequence[int]) -> tuple[str, ...]:
    buckets = [f'{family}_bucket{{le="{b}"}}' for b in bounds]
    return (*buckets, f'{family}_bucket{{le="+Inf"}}', f"{family}_sum", f"{family}_count")


HISTOGRAMS = {
    "batch_size": BATCH_BOUNDS,                    # messages per transaction
    "ack_latency_microseconds": LATENCY_US_BOUNDS,  # received -> acknowledged
    "commit_microseconds": LATENCY_US_BOUNDS,       # one batch transaction
}
FIELDS = (
    *GAUGES,
    *COUNTERS,
    *(f'rejects_total{{reason="{reason}"}}' for reason in REJECT_REASONS),
    *(name for family, bounds in HISTOGRAMS.items() for name in _histogram(family, bounds)),
)
INDEX = {name: i for i, name in enumerate(FIELDS)}


def zone_spec(processes: int) -> ZoneSpec:
    return ZoneSpec(ZONE, tuple((name, "q") for name in FIELDS), max(1, processes))


class Metrics:
    """A process's counters; `flush()` copies them into its zone row."""

    def __init__(self, zone: Zone | None, row: int) -> None:
        usable = zone is not None and 0 <= row < zone.spec.capacity
        self.zone, self.row = (zone, row) if usable else (None, 0)
        self.values = list(zone.read(row)) if usable else [0] * len(FIELDS)  # type: ignore
        for name in GAUGES:
            self.values[INDEX[name]] = 0
        self._hist = {}
        for family, bounds in HISTOGRAMS.items():
            names = _histogram(family, bounds)
            self._hist[family] = (bounds, [INDEX[n] for n in names[:-2]],
                                  INDEX[names[-2]], INDEX[names[-1]])

    def inc(self, name: str, n: int = 1) -> None:
        self.values[INDEX[name]] += n

    def set(self, name: str, value: int) -> None:
        self.values[INDEX[name]] = value

    def get(self, name: str) -> int:
        return self.values[INDEX[name]]

    def reject(self, reason: str, n: int = 1) -> None:
        key = f'rejects_total{{reason="{reason}"}}'
        if key not in INDEX:
            key = f'rejects_total{{reason="{STORE_FAILED}"}}'
        self.values[INDEX[key]] += n

    def observe(self, family: str, value: int, n: int = 1) -> None:
        """`n` observations of `value` (cumulative buckets, as Prometheus has them)."""
        bounds, buckets, sum_i, count_i = self._hist[family]
        values = self.values
        for bound, i in zip(bounds, buckets, strict=False):
            if value <= bound:
                values[i] += n
        values[buckets[-1]] += n  # +Inf
        values[sum_i] += int(value) * n
        values[count_i] += n

    def flush(self) -> None:
        if self.zone is not None:
            self.zone.write(self.row, self.values)

    def close(self) -> None:
        for name in ("connected", "queue_depth", "lag_microseconds"):
            self.values[INDEX[name]] = 0
        self.flush()

    def committed(self) -> None:
        self.values[INDEX["last_commit_seconds"]] = int(time.time())


def summed(zone: Zone) -> dict[str, int]:
    """Every field summed over the rows (for tests and simple readers)."""
    totals = dict.fromkeys(FIELDS, 0)
    for row in zone.rows():
        for name, value in zip(FIELDS, row, strict=True):
            totals[name] += value
    return totals
