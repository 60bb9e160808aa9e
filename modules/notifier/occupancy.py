"""Occupancy alerts: the settings of every enabled occupancy alert in memory, by hive,
checked against each occupancy change from the bus (`hive.<id>` from the cache manager).

Per setting (`Alert`), with T its threshold (percent of capacity, or people) and M its
margin, for "rises above" (mirrored for "falls below"):

- the first occupancy seen is a baseline: it arms the alert unless T is already
  reached (only a crossing alerts, not a hive that is full when the alert is set);
- armed and occupancy >= T: the alert fires and disarms;
- disarmed and occupancy < T - M: it re-arms (hysteresis: wobbling around T sends nothing);
- a firing within `cooldown_seconds` of the last one is dropped (the crossing is used
  up: no late alert once the cooldown ends);
- a firing in the user's quiet hours goes to the inbox without a push.

The state (armed, fired_count, last_fired_at) is written back to Postgres after the jobs
of a round are queued (by a task of its own, in batches: the bus loop never waits for
it): a notifier that dies in between fires again after its restart with the same
`fired_count`, hence the same idempotency key, and the sender drops the repeat. A
baseline is not written: a setting never crossed takes the hive's occupancy at load
(`hive_occupancy`) or its first change as its baseline again.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from .jobs import Job, _zone, in_quiet_hours

DEFS = """
SELECT n.id, n.user_id, n.hive_id, n.kind, n.threshold_percent, n.threshold_count,
       n.margin, n.cooldown_seconds, n.quiet_start, n.quiet_end, n.time_zone, n.armed,
       n.fired_count, extract(epoch FROM n.last_fired_at) AS last_fired, h.name AS hive_name,
       h.capacity, o.occupancy
FROM user_notification_def n JOIN hive h ON h.id = n.hive_id
LEFT JOIN hive_occupancy o ON o.hive_id = n.hive_id
WHERE n.enabled AND n.kind IN ('occupancy_above', 'occupancy_below')
"""
ALL_DEFS = DEFS
SOME_DEFS = DEFS + " AND n.id = ANY($1::bigint[])"
SAVE_STATE = """
UPDATE user_notification_def n
SET armed = s.armed, fired_count = s.fired, last_fired_at = to_timestamp(s.last_fired)
FROM unnest($1::bigint[], $2::boolean[], $3::integer[], $4::double precision[])
     AS s (id, armed, fired, last_fired)
WHERE n.id = s.id
"""


@dataclass(slots=True)
class Alert:
    """One occupancy alert setting and its trigger state."""

    id: int
    user_id: int
    hive_id: int
    hive_name: str
    above: bool
    percent: int | None
    count: int | None
    margin: int
    cooldown: float
    quiet_start: dt.time | None
    quiet_end: dt.time | None
    tz: ZoneInfo
    armed: bool | None      # None: no occupancy seen yet
    fired: int
    last_fired: float

    @classmethod
    def from_row(cls, r: Any) -> Alert:
        """An alert from its row; one never seen yet takes the hive's occupancy in the
        row as its baseline."""
        alert = cls(r["id"], r["user_id"], r["hive_id"], r["hive_name"],
                    r["kind"] == "occupancy_above", r["threshold_percent"],
                    r["threshold_count"], r["margin"], float(r["cooldown_seconds"]),
                    r["quiet_start"], r["quiet_end"], _zone(r["time_zone"]), r["armed"],
                    r["fired_count"], float(r["last_fired"] or 0.0))
        if alert.armed is None and r["occupancy"] is not None:
            alert.step(r["occupancy"], r["capacity"] or 0, 0.0)
        return alert

    def level(self, occupancy: int, capacity: int) -> float | None:
        """Occupancy in the threshold's unit; None when a percentage has no capacity."""
        if self.count is not None:
            return float(occupancy)
        return occupancy * 100.0 / capacity if capacity > 0 else None

    def step(self, occupancy: int, capacity: int, now: float, at: float = 0.0
             ) -> Job | None:
        """Apply one occupancy value (reported at `at`); the job to send when the alert
        fires. Changes the state (the caller saves it when `step` returned a job or
        re-armed)."""
        level = self.level(occupancy, capacity)
        if level is None:
            return None
        threshold = self.count if self.count is not None else self.percent
        crossed = level >= threshold if self.above else level <= threshold
        if self.armed is None:  # the first value seen: a baseline, no crossing
            self.armed = not crossed
            return None
        if not self.armed:
            back = level < threshold - self.margin if self.above \
                else level > threshold + self.margin
            if back:
                self.armed = True
            return None
        if not crossed:
            return None
        self.armed = False
        if self.last_fired and now - self.last_fired < self.cooldown:
            return None
        self.fired += 1
        self.last_fired = now
        return self._job(occupancy, capacity, threshold, now, at or now)

    def _job(self, occupancy: int, capacity: int, threshold: int, now: float, at: float
             ) -> Job:
        unit = "people" if self.count is not None else "% of capacity"
        way = "above" if self.above else "below"
        title = f"{self.hive_name} is {'filling up' if self.above else 'emptying'}"
        body = (f"{occupancy} people now ({occupancy * 100 // max(capacity, 1)}% full), "
                f"{way} your alert at {threshold}{' ' if self.count is not None else ''}"
                f"{unit}.")
        push = not in_quiet_hours(self.quiet_start, self.quiet_end, self.tz, now)
        return Job(f"occ:{self.id}:{self.fired}", self.user_id,
                   "occupancy_above" if self.above else "occupancy_below",
                   title[:200], body, push, self.hive_id, None, at)


class Alerts:
    """Every enabled occupancy alert, by hive."""

    def __init__(self) -> None:
        self.by_id: dict[int, Alert] = {}
        self.by_hive: dict[int, list[Alert]] = {}

    def __len__(self) -> int:
        return len(self.by_id)

    def replace_all(self, rows: Iterable[Any]) -> None:
        self.by_id = {}
        self.by_hive = {}
        for r in rows:
            self._add(Alert.from_row(r))

    def update(self, ids: Iterable[int], rows: Iterable[Any]) -> None:
        """Reload the alerts `ids` from their current rows (absent: deleted/disabled)."""
        for i in ids:
            old = self.by_id.pop(i, None)
            if old is not None:
                self.by_hive[old.hive_id].remove(old)
        for r in rows:
            self._add(Alert.from_row(r))

    def _add(self, alert: Alert) -> None:
        self.by_id[alert.id] = alert
        self.by_hive.setdefault(alert.hive_id, []).append(alert)

    def change(self, hive_id: int, occupancy: int, capacity: int, now: float | None = None,
               at: float = 0.0) -> tuple[list[Job], list[Alert]]:
        """The jobs of one occupancy change (reported at `at`), and the alerts whose
        state changed."""
        now = time.time() if now is None else now
        jobs, changed = [], []
        for alert in self.by_hive.get(hive_id, ()):
            before = (alert.armed, alert.fired)
            job = alert.step(occupancy, capacity, now, at)
            if job is not None:
                jobs.append(job)
            # a baseline is not saved: after a restart the occupancy then is the baseline
            if before[0] is not None and (alert.armed, alert.fired) != before:
                changed.append(alert)
        return jobs, changed


def state_rows(alerts: Iterable[Alert]) -> tuple[list, list, list, list]:
    """Arguments of SAVE_STATE."""
    unique = {a.id: a for a in alerts}.values()
    return ([a.id for a in unique], [a.armed for a in unique], [a.fired for a in unique],
            [a.last_fired or None for a in unique])
