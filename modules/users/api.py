"""The signed-in endpoints: profile, favourites, recents, notification settings, devices,
messages, analytics events, and the plan list.

Every query names the signed-in user's `app_user` id (`identity(request).user_id`) in
its WHERE clause or its INSERT: one user can neither read nor change another's rows
(a row of someone else answers 404, as a missing one does).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import msgspec

from modules.api import Call, IntParam, Param, Problem, Route, StrParam, endpoint, methods
from modules.auth import CHALLENGE, auth_state, identity, user_changed, user_version
from modules.database import database

from . import queries
from .buffer import BufferFull
from .schemas import (
    Accepted,
    DeviceIn,
    EventBatch,
    Me,
    MePatch,
    Message,
    MessageIn,
    MessageList,
    Notification,
    NotificationIn,
    NotificationList,
    NotificationPatch,
    QuietHours,
    Subscription,
    SubscriptionType,
    SubscriptionTypeList,
    UserHive,
    UserHiveList,
)

NAME = "users"
TAGS = ("me",)
MAX_ID = (1 << 63) - 1
HIVE_ID = Param("hive_id", IntParam(min=1, max=MAX_ID), "a hive's id", where="path")
NOTE_ID = Param("id", IntParam(min=1, max=MAX_ID), "the notification setting's id",
                where="path")
FCM = Param("fcm_token", StrParam(min_length=1, max_length=4096,
                                  pattern="[A-Za-z0-9_:.-]+", strip=False),
            "the device's FCM registration token", where="path")
AUTH_ERRORS = (400, 401, 413, 429)


def _route(method: str, path: str, summary: str, response: type | None, **kw: Any) -> Route:
    errors = tuple(sorted({*AUTH_ERRORS, *kw.pop("errors", ())}))
    return Route(method, path, summary, response, kw.pop("params", ()), tags=TAGS,
                 errors=errors, auth=True, max_age=0, **kw)


ME_GET = _route("GET", "/v1/me", "The signed-in user", Me)
ME_PATCH = _route("PATCH", "/v1/me", "Change the nickname", Me, body=MePatch, errors=(422,))
ME_DELETE = _route("DELETE", "/v1/me", "Delete my data", None, status=204,
                   description="Removes favourites, recents, notification settings, "
                               "messages and devices; analytics events are anonymised.")
FAV_LIST = _route("GET", "/v1/me/favourites", "My favourite hives", UserHiveList)
FAV_PUT = _route("PUT", "/v1/me/favourites/{hive_id}", "Add a favourite (idempotent)", None,
                 status=204, params=(HIVE_ID,), errors=(404,))
FAV_DELETE = _route("DELETE", "/v1/me/favourites/{hive_id}",
                    "Remove a favourite (idempotent)", None, status=204, params=(HIVE_ID,))
RECENT = _route("GET", "/v1/me/recent", "Hives I viewed, newest first", UserHiveList)
NOTE_LIST = _route("GET", "/v1/me/notifications", "My notification settings",
                   NotificationList)
NOTE_POST = _route("POST", "/v1/me/notifications", "Add a notification setting",
                   Notification, body=NotificationIn, status=201, errors=(409, 422))
NOTE_PATCH = _route("PATCH", "/v1/me/notifications/{id}", "Change a notification setting",
                    Notification, body=NotificationPatch, params=(NOTE_ID,),
                    errors=(404, 409, 422))
NOTE_DELETE = _route("DELETE", "/v1/me/notifications/{id}", "Remove a notification setting",
                     None, status=204, params=(NOTE_ID,), errors=(404,))
DEVICE_PUT = _route("PUT", "/v1/me/devices/{fcm_token}", "Register a push device", None,
                    status=204, params=(FCM,), body=DeviceIn, errors=(422,))
DEVICE_DELETE = _route("DELETE", "/v1/me/devices/{fcm_token}", "Unregister a push device",
                       None, status=204, params=(FCM,))
MSG_POST = _route("POST", "/v1/me/messages", "Send feedback", Message, body=MessageIn,
                  status=201, errors=(422,))
MSG_LIST = _route("GET", "/v1/me/messages", "My messages, newest first", MessageList)
EVENTS = _route("POST", "/v1/events", "Record app usage events (at most 100)", Accepted,
                body=EventBatch, status=202, errors=(422, 503))
PLANS = Route("GET", "/v1/subscription-types", "Plans and their features",
              SubscriptionTypeList, tags=("subscriptions",), max_age=300)


def _db(call: Call) -> Any:
    return database(call.process)


@contextlib.asynccontextmanager
async def _conn(call: Call) -> AsyncIterator[Any]:
    """A pooled connection; a write naming a user deleted meanwhile (DELETE /v1/me in
    another worker, whose token cache still knew the user) is a 401, and this worker
    forgets the token so that the next call signs in afresh."""
    try:
        async with database(call.process).connection() as conn:
            yield conn
    except asyncpg.ForeignKeyViolationError as exc:
        if "user_id" not in (exc.constraint_name or ""):
            raise
        user = identity(call.request)
        auth_state(call.process).verifier.forget_uid(user.uid)
        raise Problem(401, "this account was deleted; sign in again",
                      headers=[("WWW-Authenticate", CHALLENGE)]) from None


async def _me(call: Call, user_id: int) -> Me:
    version = user_version(call.process, user_id)
    plan = await auth_state(call.process).features.get(_db(call), user_id, version)
    profiles = call.process.state[NAME].profiles
    row = profiles.get(user_id, version)
    if row is None:
        async with _conn(call) as conn:
            row = await conn.fetchrow(queries.ME, user_id)
        if row is not None:
            profiles.put(user_id, version, row)
    if row is None:
        auth_state(call.process).verifier.forget_uid(identity(call.request).uid)
        raise Problem(401, "this account was deleted; sign in again",
                      headers=[("WWW-Authenticate", CHALLENGE)])
    sub = Subscription(plan.code, plan.status, plan.store, plan.started_at, plan.expires_at)
    return Me(user_id, row["firebase_uid"], row["nickname"], row["created_at"], sub,
              list(plan.features), _text(row["store_account_token"]))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


@endpoint(ME_GET)
async def get_me(call: Call) -> Me:
    return await _me(call, identity(call.request).user_id)


@endpoint(ME_PATCH)
async def patch_me(call: Call) -> Me:
    user = identity(call.request)
    async with _conn(call) as conn:
        await conn.execute(queries.SET_NICKNAME, user.user_id, call.body.nickname)
    user_changed(call.process, user.user_id)
    return await _me(call, user.user_id)


@endpoint(ME_DELETE)
async def delete_me(call: Call) -> None:
    user = identity(call.request)
    async with _conn(call) as conn, conn.transaction():
        for sql in queries.DELETE_ME:
            await conn.execute(sql, user.user_id)
    user_changed(call.process, user.user_id)
    auth_state(call.process).verifier.forget_uid(user.uid)


async def _mine(call: Call, sql: str) -> list[Any]:
    """The rows of a query of the signed-in user's ($1) rows."""
    async with _conn(call) as conn:
        return await conn.fetch(sql, identity(call.request).user_id)


async def _user_hives(call: Call, sql: str) -> UserHiveList:
    rows = await _mine(call, sql)
    return UserHiveList([UserHive(r["hive_id"], r["name"], r["at"]) for r in rows])


@endpoint(FAV_LIST)
async def list_favourites(call: Call) -> UserHiveList:
    return await _user_hives(call, queries.FAVOURITES)


@endpoint(FAV_PUT)
async def put_favourite(call: Call) -> None:
    async with _conn(call) as conn:
        found = await conn.fetchval(queries.ADD_FAVOURITE, identity(call.request).user_id,
                                    call.params["hive_id"])
    if not found:
        raise Problem(404, "no such hive", param="hive_id")


@endpoint(FAV_DELETE)
async def delete_favourite(call: Call) -> None:
    async with _conn(call) as conn:
        await conn.execute(queries.REMOVE_FAVOURITE, identity(call.request).user_id,
                           call.params["hive_id"])


@endpoint(RECENT)
async def list_recent(call: Call) -> UserHiveList:
    return await _user_hives(call, queries.RECENT)


def _notification(row: Any) -> Notification:
    kind, direction = row["kind"], None
    if kind.startswith("occupancy_"):
        direction = "rises_above" if kind == "occupancy_above" else "falls_below"
        kind = "occupancy"
    quiet = (QuietHours(row["quiet_start"].strftime("%H:%M"), row["quiet_end"].strftime("%H:%M"))
             if row["quiet_start"] is not None else None)
    return Notification(row["id"], kind, row["hive_id"], direction, row["threshold_percent"],
                        row["threshold_count"], quiet, row["time_zone"], list(row["deal_kinds"]),
                        row["enabled"], row["updated_at"], row["margin"],
                        row["cooldown_seconds"])


def _checked(note: NotificationIn) -> tuple:
    """The row of a notification setting, its rules checked together (422 naming the
    field)."""
    try:
        ZoneInfo(note.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise Problem(422, f"unknown IANA time zone {note.time_zone[:64]!r}",
                      param="time_zone") from None
    if note.kind == "occupancy":
        if note.hive_id is None:
            raise Problem(422, "an occupancy alert needs a hive", param="hive_id")
        if note.direction is None:
            raise Problem(422, "rises_above or falls_below", param="direction")
        if (note.threshold_percent is None) == (note.threshold_count is None):
            raise Problem(422, "give exactly one of threshold_percent and threshold_count",
                          param="threshold_percent")
        if note.deal_kinds:
            raise Problem(422, "only deal alerts have deal kinds", param="deal_kinds")
        kind = "occupancy_above" if note.direction == "rises_above" else "occupancy_below"
    else:
        for name in ("direction", "threshold_percent", "threshold_count"):
            if getattr(note, name) is not None:
                raise Problem(422, "only occupancy alerts have it", param=name)
        kind = note.kind
    quiet = note.quiet_hours
    start = dt.time.fromisoformat(quiet.start) if quiet else None
    end = dt.time.fromisoformat(quiet.end) if quiet else None
    if quiet and start == end:
        raise Problem(422, "start and end must differ", param="quiet_hours")
    deal_kinds = sorted(set(note.deal_kinds))
    return (note.hive_id, kind, note.threshold_percent, note.threshold_count, start, end,
            note.time_zone, deal_kinds, note.enabled, note.margin, note.cooldown_seconds)


async def _save_note(call: Call, sql: str, *args: Any) -> Notification:
    try:
        async with _conn(call) as conn:
            row = await conn.fetchrow(sql, *args)
    except asyncpg.UniqueViolationError:
        raise Problem(409, "you already have this notification setting") from None
    except asyncpg.ForeignKeyViolationError:
        raise Problem(422, "no such hive", param="hive_id") from None
    if row is None:
        raise Problem(404, "no such notification setting", param="id")
    return _notification(row)


@endpoint(NOTE_LIST)
async def list_notifications(call: Call) -> NotificationList:
    return NotificationList([_notification(r) for r in await _mine(call, queries.NOTIFICATIONS)])


@endpoint(NOTE_POST)
async def post_notification(call: Call) -> Notification:
    return await _save_note(call, queries.ADD_NOTIFICATION, identity(call.request).user_id,
                            *_checked(call.body))


@endpoint(NOTE_PATCH)
async def patch_notification(call: Call) -> Notification:
    user_id = identity(call.request).user_id
    async with _conn(call) as conn:
        row = await conn.fetchrow(queries.NOTIFICATION, user_id, call.params["id"])
    if row is None:
        raise Problem(404, "no such notification setting", param="id")
    current = msgspec.to_builtins(_notification(row))
    changes = {k: v for k, v in msgspec.structs.asdict(call.body).items()
               if v is not msgspec.UNSET}
    fields = {k: current[k] for k in NotificationIn.__struct_fields__ if k in current}
    merged = msgspec.convert({**fields, **msgspec.to_builtins(changes)}, NotificationIn)
    return await _save_note(call, queries.UPDATE_NOTIFICATION, user_id, call.params["id"],
                            *_checked(merged))


@endpoint(NOTE_DELETE)
async def delete_notification(call: Call) -> None:
    async with _conn(call) as conn:
        done = await conn.fetchval(queries.DELETE_NOTIFICATION,
                                   identity(call.request).user_id, call.params["id"])
    if done is None:
        raise Problem(404, "no such notification setting", param="id")


@endpoint(DEVICE_PUT)
async def put_device(call: Call) -> None:
    async with _conn(call) as conn:
        await conn.execute(queries.PUT_DEVICE, call.params["fcm_token"],
                           identity(call.request).user_id, call.body.platform)


@endpoint(DEVICE_DELETE)
async def delete_device(call: Call) -> None:
    async with _conn(call) as conn:
        await conn.execute(queries.DELETE_DEVICE, call.params["fcm_token"],
                           identity(call.request).user_id)


def _message(row: Any) -> Message:
    return Message(row["id"], row["hive_id"], row["direction"], row["kind"], row["content"],
                   row["rating"], row["created_at"], row["read_at"])


@endpoint(MSG_POST)
async def post_message(call: Call) -> Message:
    body: MessageIn = call.body
    if not body.text.strip():
        raise Problem(422, "must not be blank", param="text")
    if body.rating is not None and body.hive_id is None:
        raise Problem(422, "a rating needs a hive", param="rating")
    try:
        async with _conn(call) as conn:
            row = await conn.fetchrow(queries.ADD_MESSAGE, identity(call.request).user_id,
                                      body.hive_id, body.text, body.rating,
                                      call.process.state[NAME].sentiment.score(body.text))
    except asyncpg.ForeignKeyViolationError:
        raise Problem(422, "no such hive", param="hive_id") from None
    return _message(row)


@endpoint(MSG_LIST)
async def list_messages(call: Call) -> MessageList:
    return MessageList([_message(r) for r in await _mine(call, queries.MESSAGES)])


@endpoint(EVENTS)
def post_events(call: Call) -> Accepted:
    user_id = identity(call.request).user_id
    rows = []
    for e in call.body.events:
        data = dict(e.data)
        if e.hive_id is not None:
            data["hive_id"] = e.hive_id
        text = msgspec.json.encode(data).decode()
        if "\\u0000" in text:
            raise Problem(422, "must not contain NUL characters", param="events.data")
        rows.append((user_id, e.page, e.type, text))
    try:
        call.process.state[NAME].events.add(rows)
    except BufferFull:
        raise Problem(503, "events cannot be stored right now, send them again later",
                      headers=[("Retry-After", "10")]) from None
    return Accepted(len(rows))


@endpoint(PLANS)
async def list_plans(call: Call) -> SubscriptionTypeList:
    async with _conn(call) as conn:
        rows = await conn.fetch(queries.PLANS)
    return SubscriptionTypeList([SubscriptionType(
        r["code"], r["name"], r["price_cents"], r["currency"], r["billing_period"],
        list(r["features"])) for r in rows])


HANDLERS = {
    "me": methods(get_me, patch_me, delete_me),
    "me_favourites": list_favourites,
    "me_favourite": methods(put_favourite, delete_favourite),
    "me_recent": list_recent,
    "me_notifications": methods(list_notifications, post_notification),
    "me_notification": methods(patch_notification, delete_notification),
    "me_device": methods(put_device, delete_device),
    "me_messages": methods(list_messages, post_message),
    "events": post_events,
    "subscription_types": list_plans,
}
