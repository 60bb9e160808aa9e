"""The analytics endpoints: occupancy history and the count at an instant (public; more
than 24 h back needs the feature `occupancy_history`), corrections and the capacity
schedule (business: viewer reads, manager writes, operators everything; non-members
404, a role too low 403, as modules.business).  docs/api.md "Occupancy analytics".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from modules.api import (
    Call,
    IntParam,
    Param,
    Problem,
    Reply,
    Route,
    StrParam,
    endpoint,
    methods,
)
from modules.auth import auth_state, identity, user_version
from modules.business.api import judge
from modules.database import database
from modules.mqtt_ingest.day import day_start, zone
from modules.mqtt_ingest.settings import reset_clock as ingest_clock

from . import queries, series
from .cache import Bodies
from .live import publish, refresh
from .schemas import (
    At,
    Bucket,
    Correction,
    CorrectionIn,
    CorrectionList,
    History,
    Schedule,
    ScheduleEntry,
    ScheduleIn,
)

NAME = "analytics"
FEATURE = "occupancy_history"
DEFAULT_WINDOW = timedelta(hours=24)
SETTLED = timedelta(hours=1)  # windows ending this long ago are cached (analytics.cache_*)
ENCODER = msgspec.json.Encoder()
FUTURE_SKEW = timedelta(seconds=60)  # a correction "now" from a client clock a bit ahead
LIVE_SKEW = timedelta(seconds=5)  # a correction this close to now applies to the live row
MAX_CORRECTION_AGE = timedelta(days=400)
MAX_ID = (1 << 63) - 1
HOURS_CHUNK = 2208  # 92 days of 1h buckets per query (history._hours)
TAGS = ("analytics",)
AUTH_ERRORS = (400, 401, 403, 404, 429)

HIVE_ID = Param("id", IntParam(min=1, max=MAX_ID), "the hive", where="path")
TIME = StrParam(min_length=1, max_length=40)
HISTORY = Route(
    "GET", "/v1/hives/{id}/occupancy/history", "A hive's occupancy history in buckets",
    History, (HIVE_ID,
              Param("from", TIME, "start (ISO 8601 with offset or Z; default: to - 24 h)"),
              Param("to", TIME, "end (ISO 8601; default: now)"),
              Param("bucket", StrParam(max_length=8), "5m, 15m, 1h or 1d", default="1h")),
    description="Buckets with average (time-weighted), minimum and maximum occupancy, "
                "entries, exits and utilization against the capacity in force (capacity "
                "schedule); empty buckets (nothing counted) are present with empty: true; "
                "`corrected` holds the values with corrections applied. Longest windows: "
                "5m 7 days, 15m 31 days, 1h 400 days, 1d 3660 days. More than 24 h back "
                "needs the feature occupancy_history.",
    tags=TAGS, errors=(400, 401, 403, 404, 422), max_age=0)
AT = Route(
    "GET", "/v1/hives/{id}/occupancy/at", "A hive's count at a past instant", At,
    (HIVE_ID, Param("t", TIME, "the instant (ISO 8601; default: now)")),
    description="From the rollups: the last point of the occupancy curve at or before t "
                "(5-minute level while kept, then hourly, then daily; `resolution` says "
                "which), 0 after the day's reset. More than 24 h back needs the feature "
                "occupancy_history.",
    tags=TAGS, errors=(400, 401, 403, 404, 422), max_age=0)


def _route(method: str, path: str, summary: str, response: type | None, **kw: Any) -> Route:
    errors = tuple(sorted({*AUTH_ERRORS, *kw.pop("errors", ())}))
    return Route(method, path, summary, response, kw.pop("params", (HIVE_ID,)), tags=TAGS,
                 errors=errors, auth=True, max_age=0, **kw)


CORRECTION_POST = _route(
    "POST", "/v1/hives/{id}/corrections", "Correct a hive's count (manager)", Correction,
    body=CorrectionIn, status=201, errors=(422,),
    description="`the count was occupancy at at (default now), because reason`. Applied to "
                "the corrected series from `at` until the day's reset (or the day's next "
                "correction) and, for the current day, to the live count. Raw values stay.")
CORRECTION_LIST = _route("GET", "/v1/hives/{id}/corrections",
                         "A hive's corrections, newest first (viewer)", CorrectionList)
SCHEDULE_PUT = _route(
    "PUT", "/v1/hives/{id}/capacity-schedule", "Replace a hive's capacity schedule (manager)",
    Schedule, body=ScheduleIn, errors=(422,),
    description="Capacity by time range (event nights); outside every range the hive's "
                "capacity holds. Entries must not overlap. The live occupancy (its "
                "`capacity` and what follows from it) switches to a range's capacity when "
                "the range starts and back when it ends, on every node.")
SCHEDULE_GET = _route("GET", "/v1/hives/{id}/capacity-schedule",
                      "A hive's capacity schedule (viewer)", Schedule)


# -- helpers ---------------------------------------------------------------------------

def reset_clock(config: Any) -> time:
    """The daily reset clock ingest uses (occupancy.reset_at, mqtt.reset_at, else 04:00)."""
    occupancy = config.get("occupancy")
    if config.get("mqtt") is None and not (isinstance(occupancy, dict)
                                           and occupancy.get("reset_at") is not None):
        return time(4, 0)
    return ingest_clock(config)


@asynccontextmanager
async def _tx(call: Call) -> AsyncIterator[Any]:
    async with database(call.process).connection() as conn, conn.transaction():
        yield conn


def _time(text: str | None, name: str, default: datetime) -> datetime:
    if text is None:
        return default
    try:
        value = datetime.fromisoformat(text.replace(" ", "+"))
    except ValueError:
        raise Problem(422, "not an ISO 8601 time (e.g. 2026-12-01T00:00:00Z)",
                      param=name) from None
    if value.tzinfo is None:
        raise Problem(422, "give an offset or Z", param=name)
    return value.astimezone(UTC)


async def _hive(conn: Any, hive_id: int) -> Any:
    row = await conn.fetchrow(queries.HIVE, hive_id)
    if row is None:
        raise Problem(404, "no such hive")
    return row


async def _need_history(call: Call, since: datetime, now: datetime) -> None:
    """More than analytics.free_history back: the caller's plan must include
    occupancy_history (nobody's, without modules.auth)."""
    if since >= now - timedelta(seconds=call.process.config[NAME]["free_history"]):
        return
    user = call.request.ctx.get("user")
    if user is None:
        raise Problem(401, f"this far back needs sign-in and the feature {FEATURE!r}",
                      headers=[("WWW-Authenticate", "Bearer")])
    ctx = call.process
    if ctx.state.get("firebase") is None:  # no modules.auth: no plans
        raise Problem(403, f"this far back needs the feature {FEATURE!r}",
                      param=FEATURE)
    plan = await auth_state(ctx).features.get(database(ctx), user.user_id,
                                              user_version(ctx, user.user_id))
    if FEATURE not in plan.features:
        raise Problem(403, f"this far back needs the feature {FEATURE!r}",
                      param=FEATURE)


async def _allow(call: Call, conn: Any, need: str) -> None:
    """The caller's role for the hive's account must be at least `need` (operators:
    everything); 404 for non-members and missing hives, 403 for a role too low."""
    judge(await conn.fetchrow(queries.ACCESS, identity(call.request).user_id,
                              call.params["id"]), need, "the hive's account")


def _spans(rows: list[Any]) -> list[series.Span]:
    return [series.Span(r["s"], r["e"], r["capacity"]) for r in rows]


# -- history ---------------------------------------------------------------------------

LEVELS = {"5m": queries.FIVE_MINUTES, "15m": queries.FIVE_MINUTES, "1d": queries.DAILY}


def _window(call: Call, now: datetime) -> tuple[datetime, datetime, str]:
    bucket = call.params["bucket"]
    if bucket not in series.BUCKETS:
        raise Problem(422, f"unknown bucket {bucket!r} (5m, 15m, 1h or 1d)", param="bucket")
    to = _time(call.params["to"], "to", now)
    start = _time(call.params["from"], "from", to - DEFAULT_WINDOW)
    if start >= to:
        raise Problem(422, "from must be before to", param="from")
    limit = series.MAX_WINDOW[bucket]
    if to - start > limit:
        raise Problem(422, f"at most {limit.days} days with bucket {bucket}", param="to")
    return start, to, bucket


@endpoint(HISTORY)
async def history(call: Call) -> Reply:
    now = datetime.now(UTC)
    start, to, bucket = _window(call, now)
    await _need_history(call, start, now)
    async with database(call.process).connection() as conn:
        hive = await conn.fetchrow(queries.HIVE_VERSION, call.params["id"])
        if hive is None:
            raise Problem(404, "no such hive")
        tz = zone(hive["timezone"])
        bounds = series.edges(start, to, bucket, tz)
        key = None
        if bounds[-1] <= (now - SETTLED).timestamp():
            key = (hive["id"], bucket, bounds[0], bounds[-1], hive["version"])
        bodies: Bodies = call.process.state[f"{NAME}.bodies"]
        body = bodies.get(key)
        if body is None:
            days: Bodies = call.process.state[f"{NAME}.days"]
            body = await _history_body(conn, hive, bucket, bounds, now, days)
            bodies.put(key, body)
    return Reply(body)


async def _history_body(conn: Any, hive: Any, bucket: str, bounds: list[int],
                        now: datetime, days: Bodies) -> bytes:
    """The answer's JSON: its buckets are pieces of at most a day, whole settled UTC
    days from `days` when they are there, the rest rendered from rows fetched for each
    run of missing pieces (so a warm year of hours fetches and renders about a day)."""
    lo, hi = (datetime.fromtimestamp(b, UTC) for b in (bounds[0], bounds[-1]))
    capacities = await conn.fetch(queries.SCHEDULE_IN, hive["id"], lo, hi)
    corrections = await conn.fetch(queries.CORRECTIONS_IN, hive["id"], lo, hi)
    spans = series.correction_spans([tuple(r) for r in corrections])
    ctx = series.Context(zone(hive["timezone"]), now.timestamp(), hive["capacity"],
                         _spans(capacities), spans)
    head = ENCODER.encode(History(
        hive["id"], hive["timezone"], bucket, series.iso(bounds[0]) + "Z",
        series.iso(bounds[-1]) + "Z", bool(spans), []))
    step = series.regular(bounds)
    plan = ([(0, len(bounds) - 1, None)] if step is None or not days.max_bytes else
            series.day_plan(bounds, step, (now - SETTLED).timestamp()))
    keys = [None if day is None else (hive["id"], step, day, hive["version"])
            for _, _, day in plan]
    pieces = [days.get(key) for key in keys]
    k = 0
    while k < len(plan):
        m = k
        while m < len(plan) and pieces[m] is None:
            m += 1
        if m > k:  # plan[k:m] missing: one fetch and render for the run
            first, end = plan[k][0], plan[m - 1][1]
            buckets = await _render(conn, hive["id"], bucket, bounds[first:end + 1], ctx)
            for n in range(k, m):
                i, j, _ = plan[n]
                pieces[n] = ENCODER.encode(buckets[i - first:j - first])[1:-1]
                days.put(keys[n], pieces[n])
        k = m + 1
    return b"".join((head[:-2], b",".join(pieces), b"]}"))  # type: ignore[arg-type]


async def _render(conn: Any, hive_id: int, bucket: str, bounds: list[int],
                  ctx: series.Context) -> list[Bucket]:
    if bucket == "1h":
        return await _hours(conn, hive_id, bounds, ctx)
    lo, hi = (datetime.fromtimestamp(b, UTC) for b in (bounds[0], bounds[-1]))
    return series.render(bounds, await conn.fetch(LEVELS[bucket], hive_id, lo, hi), ctx)


async def _hours(conn: Any, hive_id: int, bounds: list[int], ctx: series.Context
                 ) -> list[Bucket]:
    """1h buckets in chunks, each chunk's query sent before the previous one is rendered:
    Postgres works on the next quarter of a year while this process renders one."""
    chunks = [bounds[i:i + HOURS_CHUNK + 1] for i in range(0, len(bounds) - 1, HOURS_CHUNK)]

    def fetch(chunk: list[int]) -> asyncio.Task[list[Any]]:
        lo, hi = (datetime.fromtimestamp(b, UTC) for b in (chunk[0], chunk[-1]))
        return asyncio.ensure_future(conn.fetch(queries.HOURS, hive_id, lo, hi, ctx.now))

    out: list[Bucket] = []
    pending = fetch(chunks[0])
    try:
        for k, chunk in enumerate(chunks):
            rows = await pending
            if k + 1 < len(chunks):
                pending = fetch(chunks[k + 1])
                await asyncio.sleep(0)  # the task sends its query
            out += series.render_hours(chunk, rows, ctx)
    finally:
        pending.cancel()
    return out


# -- the count at an instant -----------------------------------------------------------

async def raw_at(conn: Any, hive: Any, t: datetime, clock: Any) -> tuple[int, str | None]:
    """The raw count at t from the rollups, and the level it came from."""
    found = await conn.fetchrow(queries.AT, hive["id"], t)
    if found is None or found["last_at"] < day_start(t, zone(hive["timezone"]), clock):
        return 0, None if found is None else found["resolution"]
    return found["last_occupancy"], found["resolution"]


async def _offset_at(conn: Any, hive_id: int, t: datetime) -> int:
    rows = await conn.fetch(queries.CORRECTIONS_IN, hive_id, t - timedelta(days=2),
                            t + timedelta(microseconds=1))
    return series.offset_at(series.correction_spans([tuple(r) for r in rows]), t.timestamp())


@endpoint(AT)
async def occupancy_at(call: Call) -> At:
    now = datetime.now(UTC)
    t = _time(call.params["t"], "t", now)
    if t > now:
        raise Problem(422, "t must not be in the future", param="t")
    await _need_history(call, t, now)
    async with database(call.process).connection() as conn:
        hive = await _hive(conn, call.params["id"])
        raw, resolution = await raw_at(conn, hive, t, reset_clock(call.process.config))
        offset = await _offset_at(conn, hive["id"], t)
    return At(hive["id"], t, raw, max(raw + offset, 0), "rollup", resolution, None)


# -- corrections -----------------------------------------------------------------------

def _correction(row: Any) -> Correction:
    return Correction(row["id"], row["hive_id"], row["at"], row["occupancy"], row["previous"],
                      row["delta"], row["reason"], row["created_by"], row["created_at"],
                      row["day_end"])


def _day_end(at: datetime, tz: ZoneInfo, clock: Any) -> datetime:
    """The first reset boundary after `at`."""
    return day_start(day_start(at, tz, clock) + timedelta(hours=26), tz, clock)


@endpoint(CORRECTION_POST)
async def correction_post(call: Call) -> Correction:
    body: CorrectionIn = call.body
    now = datetime.now(UTC)
    at = now if body.at is None else _aware(body.at)
    if at > now + FUTURE_SKEW:
        raise Problem(422, "a correction cannot be in the future", param="at")
    if at < now - MAX_CORRECTION_AGE:
        raise Problem(422, f"at most {MAX_CORRECTION_AGE.days} days back", param="at")
    if not body.reason.strip():
        raise Problem(422, "say why", param="reason")
    at = min(at, now)
    clock = reset_clock(call.process.config)
    async with _tx(call) as conn:
        await _allow(call, conn, "manager")
        hive = await _hive(conn, call.params["id"])
        tz = zone(hive["timezone"])
        live = await conn.fetchrow(queries.LOCK_LIVE, hive["id"])
        today = day_start(now, tz, clock)
        current = live["day_start"] is not None and live["day_start"] >= today
        if at >= now - LIVE_SKEW:
            raw = max(live["day_in"] - live["day_out"], 0) if current else 0
        else:
            raw = (await raw_at(conn, hive, at, clock))[0]
        previous = max(raw + await _offset_at(conn, hive["id"], at), 0)
        row = await conn.fetchrow(queries.CORRECTION_INSERT, hive["id"], at,
                                  _day_end(at, tz, clock), body.occupancy, previous,
                                  body.occupancy - raw, body.reason.strip(),
                                  identity(call.request).user_id)
        state = None
        if at >= today:
            state = await _correct_live(conn, live, current, today, now)
    if state is not None:
        publish(call.process, state)
    return _correction(row)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise Problem(422, "give an offset or Z", param="at")
    return value.astimezone(UTC)


async def _correct_live(conn: Any, live: Any, current: bool, today: datetime,
                        now: datetime) -> Any:
    """The live row follows the day's latest correction (occupancy = raw + offset)."""
    offset = await conn.fetchval(queries.LATEST_OF_DAY, live["hive_id"], today, now) or 0
    day_in, day_out = (live["day_in"], live["day_out"]) if current else (0, 0)
    occupancy = max(max(day_in - day_out, 0) + offset, 0)
    return await conn.fetchrow(queries.LIVE_CORRECT, live["hive_id"], offset, occupancy,
                               today, day_in, day_out)


@endpoint(CORRECTION_LIST)
async def correction_list(call: Call) -> CorrectionList:
    async with _tx(call) as conn:
        await _allow(call, conn, "viewer")
        rows = await conn.fetch(queries.CORRECTIONS, call.params["id"], 500)
    return CorrectionList([_correction(r) for r in rows])


# -- capacity schedule -----------------------------------------------------------------

def _check_schedule(entries: list[ScheduleEntry]) -> list[ScheduleEntry]:
    for i, e in enumerate(entries):
        for name in ("from_", "to"):
            if getattr(e, name).tzinfo is None:
                raise Problem(422, "give an offset or Z",
                              param=f"entries[{i}].{name.rstrip('_')}")
        if e.to <= e.from_:
            raise Problem(422, "to must be after from", param=f"entries[{i}].to")
    ordered = sorted(range(len(entries)), key=lambda i: entries[i].from_)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if entries[b].from_ < entries[a].to:
            raise Problem(422, f"overlaps entries[{a}]", param=f"entries[{b}].from")
    return [entries[i] for i in ordered]


async def _schedule(conn: Any, hive: Any) -> Schedule:
    rows = await conn.fetch(queries.SCHEDULE, hive["id"])
    return Schedule(hive["id"], hive["capacity"],
                    [ScheduleEntry(r["from"], r["to"], r["capacity"], r["label"])
                     for r in rows])


@endpoint(SCHEDULE_PUT)
async def schedule_put(call: Call) -> Schedule:
    entries = _check_schedule(call.body.entries)
    async with _tx(call) as conn:
        await _allow(call, conn, "manager")
        hive = await _hive(conn, call.params["id"])
        await conn.execute(queries.SCHEDULE_DELETE, hive["id"])
        if entries:
            await conn.execute(queries.SCHEDULE_INSERT, hive["id"],
                               [e.from_ for e in entries], [e.to for e in entries],
                               [e.capacity for e in entries], [e.label for e in entries])
        schedule = await _schedule(conn, hive)
    refresh(call.process, hive["id"])  # the live capacity follows the schedule
    return schedule


@endpoint(SCHEDULE_GET)
async def schedule_get(call: Call) -> Schedule:
    async with _tx(call) as conn:
        await _allow(call, conn, "viewer")
        return await _schedule(conn, await _hive(conn, call.params["id"]))


HANDLERS = {
    "occupancy_history": history,
    "occupancy_at": occupancy_at,
    "hive_corrections": methods(correction_post, correction_list),
    "capacity_schedule": methods(schedule_put, schedule_get),
}

__all__ = ["HANDLERS", "NAME"]
