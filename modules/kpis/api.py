"""The kpis endpoints: a hive's sensor health, an account's KPIs and its feedback.

Who may read them: a viewer (or more) of the hive's account, or an operator; the rule
of modules.business (non-members 404, roles too low 403).  Every figure comes from a
counter kept at write time (queries.py), so a call costs a few index range scans.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from modules.api import Call, IntParam, Kind, Param, Problem, Route, endpoint
from modules.business.api import allow
from modules.database import database

from . import queries
from .hours import LocalHours
from .schemas import (
    Changes,
    DoorImbalance,
    Feedback,
    FeedbackMessage,
    FeedbackTotals,
    Figures,
    Health,
    HiveFigures,
    Kpis,
    SensorConfigState,
    SensorHealth,
)

NAME = "kpis"
MAX_ID = (1 << 63) - 1
PEAK_HOURS = 3
TAGS = ("business",)
ERRORS = (400, 401, 403, 404, 422, 429)


EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)  # windows reach back as far again
LATEST = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)


class Instant(Kind):
    """An ISO 8601 date-time with a UTC offset (`Z` or `+01:00`)."""

    def convert(self, text: str) -> dt.datetime:
        try:
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"expected an ISO 8601 date-time, got {text[:40]!r}") from None
        if value.tzinfo is None:
            raise ValueError("needs a UTC offset, e.g. 2026-12-01T00:00:00Z")
        value = value.astimezone(dt.UTC)
        if not EARLIEST <= value <= LATEST:
            raise ValueError(f"must be between {EARLIEST.year} and {LATEST.year}")
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "date-time",
                "examples": ["2026-12-01T00:00:00Z"]}

    def canonical(self, value: Any) -> str:
        return value.isoformat()


def _id(what: str) -> Param:
    return Param("id", IntParam(min=1, max=MAX_ID), what, where="path")


def _at(name: str, doc: str) -> Param:
    return Param(name, Instant(), doc)


def _route(path: str, summary: str, response: type, params: tuple, doc: str) -> Route:
    return Route("GET", path, summary, response, params, description=doc, tags=TAGS,
                 errors=ERRORS, auth=True, max_age=0)


HEALTH = _route("/v1/hives/{id}/health", "Sensor health of a hive (viewer)", Health,
                (_id("the hive"),),
                "Per sensor: battery, signal, last seen, offline (silent for 3 x its "
                "reporting interval), counter gaps, pending/applied configuration, and "
                "the door imbalance of the hive's last complete local day.")
WINDOW = (_at("from", "start (inclusive); default `to` minus the default window"),
          _at("to", "end (exclusive); default now"))
KPIS = _route("/v1/accounts/{id}/kpis", "Business KPIs of an account's hives (viewer)", Kpis,
              (_id("the account"), *WINDOW,
               _at("compare_from", "start of the comparison period; default: the "
                   "equal-length period just before `from`"),
               _at("compare_to", "end of the comparison period (with compare_from)"),
               Param("hives", IntParam(min=1, max=MAX_ID), "hive ids of the account "
                     "(default: all of them)", repeated=200)),
              "Visits (entries), average and peak occupancy, peak local hours, average "
              "dwell by Little's law (average occupancy / arrival rate), favourites "
              "gained, detail views, search impressions and deal opens, per hive and in "
              "total, with the relative change against the comparison period.  From the "
              "hourly rollups, never raw reports.")
FEEDBACK = _route("/v1/accounts/{id}/feedback", "Feedback about an account's hives "
                  "(viewer)", Feedback,
                  (_id("the account"), *WINDOW,
                   Param("hive", IntParam(min=1, max=MAX_ID), "only this hive of the "
                         "account"),
                   Param("limit", IntParam(min=1, max=500), "messages at most (totals "
                         "count every message of the window)", default=100)),
                  "Feedback messages, newest first, with their rating and VADER sentiment "
                  "(-1..1, labelled positive >= 0.05, negative <= -0.05), and totals per "
                  "hive.")


@asynccontextmanager
async def _tx(call: Call) -> AsyncIterator[Any]:
    async with database(call.process).connection() as conn, conn.transaction(readonly=True):
        yield conn


def _settings(call: Call) -> dict[str, Any]:
    return call.process.config[NAME]


# -- health -------------------------------------------------------------------------------

def _battery(mv: int | None, settings: dict[str, Any]) -> int | None:
    if mv is None:
        return None
    empty, full = settings["battery_empty_mv"], settings["battery_full_mv"]
    return max(0, min(100, round(100 * (mv - empty) / (full - empty))))


def _sensor(r: Any, settings: dict[str, Any]) -> SensorHealth:
    threshold = settings["door_imbalance_threshold"]
    net = None if r["day"] is None else r["entries"] - r["exits"]
    door = DoorImbalance(net is not None and abs(net) > threshold, net, r["entries"] or 0,
                         r["exits"] or 0, r["day"], threshold)
    config = SensorConfigState(r["pending_id"] is not None, r["pending_id"],
                               r["pending_since"], r["applied_id"], r["applied_at"])
    return SensorHealth(
        r["id"], r["external_id"], r["name"], r["firmware"],
        _battery(r["battery_mv"], settings), r["battery_mv"],
        None if r["csq"] is None else -113 + 2 * r["csq"], r["csq"], r["last_seen"],
        r["interval_min"] * 60, r["offline"], r["lost_events"], r["restarts"],
        r["anomalies"], config, door)


@endpoint(HEALTH)
async def health(call: Call) -> Health:
    settings, hive_id = _settings(call), call.params["id"]
    async with _tx(call) as conn:
        await allow(call, conn, await conn.fetchval(queries.HIVE_ACCOUNT, hive_id), "viewer")
        rows = await conn.fetch(queries.HEALTH, hive_id)
    return Health(hive_id, dt.datetime.now(dt.UTC), [_sensor(r, settings) for r in rows])


# -- windows ------------------------------------------------------------------------------

def _period(p: dict[str, Any], names: tuple[str, str], settings: dict[str, Any],
            default: tuple[dt.datetime, dt.datetime]) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) from two optional parameters: 422 naming the field when the start is
    not before the end or the window is longer than `kpis.max_window`."""
    start, end = p[names[0]], p[names[1]]
    if start is None and end is None:
        start, end = default
    elif start is None or end is None:
        missing = names[0] if start is None else names[1]
        raise Problem(422, f"{names[0]} and {names[1]} go together", param=missing)
    if start >= end:
        raise Problem(422, f"{names[0]} must be before {names[1]}", param=names[0])
    limit = dt.timedelta(seconds=settings["max_window"])
    if end - start > limit:
        raise Problem(422, f"the window from {names[0]} to {names[1]} is longer than "
                           f"{limit.days} days (kpis.max_window)", param=names[0])
    return start, end


def _window(p: dict[str, Any], settings: dict[str, Any],
            default_span: int) -> tuple[dt.datetime, dt.datetime]:
    end = p["to"] or dt.datetime.now(dt.UTC)
    start = p["from"] or end - dt.timedelta(seconds=default_span)
    return _period({"from": start, "to": end}, ("from", "to"), settings, (start, end))


async def _hives_of(conn: Any, account_id: int, wanted: list[int] | None,
                    param: str) -> dict[int, Any]:
    """The account's hives (id -> row), or the `wanted` ones: 422 for any other id."""
    hives = {r["id"]: r for r in await conn.fetch(queries.ACCOUNT_HIVES, account_id)}
    if not wanted:
        return hives
    unknown = [i for i in wanted if i not in hives]
    if unknown:
        raise Problem(422, "not hives of this account: " + ",".join(map(str, unknown[:20])),
                      param=param)
    return {i: hives[i] for i in wanted}


# -- KPIs ---------------------------------------------------------------------------------

@dataclass
class Tally:
    """One hive (or the total) in one period."""

    visits: int = 0
    occupancy_hours: float = 0.0  # sum of hourly average occupancies
    hours: int = 0  # hours with a rollup row
    peak: int | None = None
    by_hour: dict[int, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    usage: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add_rollup(self, r: Any, local_hour: int | None = None) -> None:
        self.visits += r["entries"]
        self.occupancy_hours += r["occupancy_hours"]
        self.hours += r["hours"]
        self.peak = r["peak"] if self.peak is None else max(self.peak, r["peak"])
        if local_hour is None:
            return
        cell = self.by_hour[local_hour]
        cell[0] += r["occupancy_hours"]
        cell[1] += r["hours"]

    def avg(self) -> float | None:
        return self.occupancy_hours / self.hours if self.hours else None

    def arrival_rate(self) -> float:
        return self.visits / self.hours if self.hours else 0.0

    def hour_means(self) -> dict[int, float]:
        return {h: s / n for h, (s, n) in self.by_hour.items() if n}


def _peak_hours(means: dict[int, float]) -> list[int]:
    ranked = sorted((h for h, m in means.items() if m > 0), key=lambda h: (-means[h], h))
    return ranked[:PEAK_HOURS]


def _figures(t: Tally, avg: float | None, dwell_hours: float | None,
             peak_hours: list[int]) -> dict[str, Any]:
    return {"visits": t.visits, "avg_occupancy": None if avg is None else round(avg, 2),
            "peak_occupancy": t.peak, "peak_hours": peak_hours,
            "avg_dwell_minutes": None if dwell_hours is None else round(dwell_hours * 60, 1),
            "favourites_gained": t.usage["favourites"], "detail_views": t.usage["detail_views"],
            "search_impressions": t.usage["search_impressions"],
            "deal_opens": t.usage["deal_opens"]}


def _hive_figures(t: Tally) -> dict[str, Any]:
    dwell = t.occupancy_hours / t.visits if t.visits else None  # Little's law: L / λ
    return _figures(t, t.avg(), dwell, _peak_hours(t.hour_means()))


def _total_figures(tallies: list[Tally]) -> dict[str, Any]:
    total = Tally()
    means: dict[int, float] = defaultdict(float)
    avgs = [a for t in tallies if (a := t.avg()) is not None]
    for t in tallies:
        total.visits += t.visits
        if t.peak is not None:
            total.peak = t.peak if total.peak is None else max(total.peak, t.peak)
        for key, n in t.usage.items():
            total.usage[key] += n
        for h, m in t.hour_means().items():
            means[h] += m
    rate = sum(t.arrival_rate() for t in tallies)
    avg = sum(avgs) if avgs else None
    dwell = avg / rate if avg is not None and rate else None
    return _figures(total, avg, dwell, _peak_hours(means))


def _change(now: dict[str, Any], before: dict[str, Any]) -> Changes:
    def rel(key: str) -> float | None:
        a, b = now[key], before[key]
        return None if a is None or not b else round((a - b) / b, 4)

    return Changes(*(rel(k) for k in Changes.__struct_fields__))


async def _fetch(db: Any, query: str, *args: Any) -> list[Any]:
    async with db.connection() as conn:
        return await conn.fetch(query, *args)


async def _tallies(db: Any, hives: dict[int, Any],
                   bounds: tuple) -> dict[tuple[int, bool], Tally]:
    """The four independent queries at once, each on its own pooled connection (none
    is held while waiting for another, so concurrent calls cannot starve the pool)."""
    ids = list(hives)
    tallies: dict[tuple[int, bool], Tally] = {(i, c): Tally() for i in ids for c in (True, False)}
    hours = LocalHours((h["timezone"] for h in hives.values()), bounds[0], bounds[1])
    shifts = hours.shifts({i: h["timezone"] for i, h in hives.items()})
    occupancy, totals, usage, favourites = await asyncio.gather(
        _fetch(db, queries.OCCUPANCY, ids, bounds[0], bounds[1], hours.thresholds, *shifts),
        _fetch(db, queries.OCCUPANCY_TOTALS, ids, bounds[2], bounds[3]),
        _fetch(db, queries.USAGE, ids, *bounds),
        _fetch(db, queries.FAVOURITES, ids, *bounds))
    for r in occupancy:
        tallies[(r["hive_id"], True)].add_rollup(r, r["local_hour"])
    for r in totals:
        tallies[(r["hive_id"], False)].add_rollup(r)
    for r in usage:
        tally = tallies[(r["hive_id"], r["current"])].usage
        for key in ("detail_views", "search_impressions", "deal_opens"):
            tally[key] += r[key]
    for r in favourites:
        tallies[(r["hive_id"], r["current"])].usage["favourites"] += r["n"]
    return tallies


async def report(db: Any, account_id: int, wanted: list[int] | None,
                 bounds: tuple[dt.datetime, dt.datetime, dt.datetime, dt.datetime]) -> Kpis:
    """The KPIs of the account's hives (or the `wanted` ones) for [from, to) against
    [compare_from, compare_to), read through `db` (anything with modules.database's
    `connection()`); the caller has checked access (bench/kpis_bench.py's peer serves
    the same function).  The queries run outside one transaction: each reads other
    rows, so no figure mixes two snapshots."""
    async with db.connection() as conn:
        hives = await _hives_of(conn, account_id, wanted, "hives")
    ids = list(hives)
    tallies = await _tallies(db, hives, bounds) if ids else {}
    items = []
    for i in ids:
        now, before = _hive_figures(tallies[(i, True)]), _hive_figures(tallies[(i, False)])
        items.append(HiveFigures(**now, change=_change(now, before), hive_id=i,
                                 name=hives[i]["name"]))
    now = _total_figures([tallies[(i, True)] for i in ids])
    before = _total_figures([tallies[(i, False)] for i in ids])
    return Kpis(account_id=account_id, from_=bounds[0], to=bounds[1],
                compare_from=bounds[2], compare_to=bounds[3],
                total=Figures(**now, change=_change(now, before)), hives=items)


def kpi_bounds(p: dict[str, Any], settings: dict[str, Any]) -> tuple[dt.datetime, ...]:
    """(from, to, compare_from, compare_to) from the parameters, defaults filled."""
    start, end = _window(p, settings, settings["default_window"])
    return (start, end, *_period(p, ("compare_from", "compare_to"), settings,
                                 (start - (end - start), start)))


@endpoint(KPIS)
async def kpis(call: Call) -> Kpis:
    bounds = kpi_bounds(call.params, _settings(call))
    async with _tx(call) as conn:
        await allow(call, conn, call.params["id"], "viewer")
    return await report(database(call.process), call.params["id"], call.params["hives"],
                        bounds)


# -- feedback -----------------------------------------------------------------------------

def _message(r: Any) -> FeedbackMessage:
    score = None if r["sentiment"] is None else round(r["sentiment"], 4)  # real: float32
    return FeedbackMessage(r["id"], r["hive_id"], r["user_id"], r["rating"], r["content"],
                           score, r["sentiment_label"], r["created_at"])


def _totals(r: Any) -> FeedbackTotals:
    def rounded(v: float | None) -> float | None:
        return None if v is None else round(v, 3)

    return FeedbackTotals(r["hive_id"], r["count"], r["rated"], rounded(r["avg_rating"]),
                          rounded(r["avg_sentiment"]), r["positive"], r["neutral"],
                          r["negative"])


@endpoint(FEEDBACK)
async def feedback(call: Call) -> Feedback:
    p, settings, account_id = call.params, _settings(call), call.params["id"]
    start, end = _window(p, settings, settings["feedback_window"])
    async with _tx(call) as conn:
        await allow(call, conn, account_id, "viewer")
        wanted = None if p["hive"] is None else [p["hive"]]
        ids = list(await _hives_of(conn, account_id, wanted, "hive"))
        rows = await conn.fetch(queries.FEEDBACK, ids, start, end, p["limit"])
        totals = await conn.fetch(queries.FEEDBACK_TOTALS, ids, start, end)
    return Feedback(account_id=account_id, from_=start, to=end,
                    messages=[_message(r) for r in rows], totals=[_totals(r) for r in totals])


HANDLERS = {"hive_health": health, "account_kpis": kpis, "account_feedback": feedback}

__all__ = ["HANDLERS", "NAME"]
