"""The in-app inbox: `GET /v1/me/notifications/inbox` (what the notifier sent the
signed-in user, newest first, optionally only the unread), `PATCH
/v1/me/notifications/inbox/{id}` (`{"read": true|false}`) and `POST
/v1/me/notifications/inbox/read` (mark everything read). Every query names the user."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from msgspec import Meta, Struct

from modules.api import Bool, Call, IntParam, Param, Problem, Route, endpoint, methods
from modules.auth import identity
from modules.database import database

MAX_ID = (1 << 63) - 1
TAGS = ("me",)
ERRORS = (400, 401, 413, 429)


class InboxItem(Struct):
    id: int
    kind: Annotated[str, Meta(description="occupancy_above, occupancy_below, new_deal, "
                                          "deal_expiring, subscription_renewed or "
                                          "subscription_expiring")]
    title: str
    body: str
    hive_id: int | None
    deal_id: int | None
    pushed: Annotated[bool, Meta(description="false: held back (quiet hours) or no device")]
    created_at: datetime
    read_at: datetime | None


class Inbox(Struct):
    items: list[InboxItem]
    unread: Annotated[int, Meta(ge=0, description="unread notifications in all")]
    next_before: Annotated[int | None, Meta(description="pass as `before` for the next page")]


class ReadIn(Struct, forbid_unknown_fields=True):
    read: bool


class Updated(Struct):
    updated: Annotated[int, Meta(ge=0)]


_COLUMNS = "id, kind, title, body, hive_id, deal_id, pushed, created_at, read_at"
LIST = f"""
SELECT {_COLUMNS} FROM user_inbox
WHERE user_id = $1 AND id < $2 AND (NOT $3 OR read_at IS NULL)
ORDER BY id DESC LIMIT $4
"""
UNREAD = "SELECT count(*) FROM user_inbox WHERE user_id = $1 AND read_at IS NULL"
MARK = f"""
UPDATE user_inbox SET read_at = CASE WHEN $3 THEN COALESCE(read_at, now()) END
WHERE user_id = $1 AND id = $2 RETURNING {_COLUMNS}
"""
MARK_ALL = "UPDATE user_inbox SET read_at = now() WHERE user_id = $1 AND read_at IS NULL"

INBOX = Route("GET", "/v1/me/notifications/inbox", "My notifications, newest first", Inbox,
              params=(Param("unread", Bool(), "only the unread ones", default=False),
                      Param("before", IntParam(min=1, max=MAX_ID),
                            "only those with a smaller id (paging)"),
                      Param("limit", IntParam(min=1, max=100), "at most this many",
                            default=50)),
              tags=TAGS, errors=ERRORS, auth=True, max_age=0)
INBOX_PATCH = Route("PATCH", "/v1/me/notifications/inbox/{id}",
                    "Mark a notification read or unread", InboxItem,
                    params=(Param("id", IntParam(min=1, max=MAX_ID), "the notification",
                                  where="path"),),
                    body=ReadIn, tags=TAGS, errors=(*ERRORS, 404, 422), auth=True,
                    max_age=0)
INBOX_READ_ALL = Route("POST", "/v1/me/notifications/inbox/read",
                       "Mark all my notifications read", Updated, tags=TAGS, errors=ERRORS,
                       auth=True, max_age=0)


def _item(r: Any) -> InboxItem:
    return InboxItem(r["id"], r["kind"], r["title"], r["body"], r["hive_id"], r["deal_id"],
                     r["pushed"], r["created_at"], r["read_at"])


@endpoint(INBOX)
async def list_inbox(call: Call) -> Inbox:
    user, p = identity(call.request).user_id, call.params
    async with database(call.process).connection() as conn:
        rows = await conn.fetch(LIST, user, p["before"] or MAX_ID, p["unread"], p["limit"])
        unread = await conn.fetchval(UNREAD, user)
    more = rows[-1]["id"] if len(rows) == p["limit"] else None
    return Inbox([_item(r) for r in rows], unread, more)


@endpoint(INBOX_PATCH)
async def patch_inbox(call: Call) -> InboxItem:
    async with database(call.process).connection() as conn:
        row = await conn.fetchrow(MARK, identity(call.request).user_id, call.params["id"],
                                  call.body.read)
    if row is None:
        raise Problem(404, "no such notification", param="id")
    return _item(row)


@endpoint(INBOX_READ_ALL)
async def read_all(call: Call) -> Updated:
    async with database(call.process).connection() as conn:
        done = await conn.execute(MARK_ALL, identity(call.request).user_id)
    return Updated(int(done.split()[-1]))


HANDLERS = {"me_inbox": list_inbox, "me_inbox_item": methods(patch_inbox),
            "me_inbox_read": read_all}
