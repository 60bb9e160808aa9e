"""The business endpoints: accounts, members, hives and deals of an account, its audit.

Who may do what (docs/api.md "Business accounts"): a member's role in the account
(viewer < manager < admin), or `app_user.user_role = operator` (Bizzy staff: everything).
A signed-in user who is not a member of the account gets **404**, as for an account,
hive or deal that does not exist: ids of other businesses do not reveal that they exist.
A member whose role is too low gets 403.  Every write runs in one transaction with its
`account_audit` row; the catalogue's triggers (migration 0005) announce the change of a
hive or deal, which changes the public cache keys (modules.hives).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import msgspec

from modules.api import Call, IntParam, Param, Problem, Route, StrParam, endpoint, methods
from modules.auth import identity
from modules.database import database
from modules.hives.api import HANDLERS as PUBLIC
from modules.mqtt_ingest.config_push import publish_config, read_config, store_config

from . import images, queries
from .schemas import (
    Account,
    AccountIn,
    AccountList,
    AccountPatch,
    Address,
    AuditEntry,
    AuditList,
    Daily,
    DealIn,
    DealPatch,
    HiveIn,
    HivePatch,
    ImagePatch,
    ImageUrlIn,
    ManagedDeal,
    ManagedHive,
    ManagedHiveList,
    ManagedImage,
    Member,
    MemberIn,
    MemberList,
    Occurrence,
    Sensor,
    SensorConfig,
    SensorConfigIn,
    SensorConfigPushed,
    SensorConfigState,
    SensorList,
)

NAME = "business"
RANK = {"viewer": 1, "manager": 2, "admin": 3, "operator": 4}
MAX_ID = (1 << 63) - 1
TAGS = ("business",)
AUTH_ERRORS = (400, 401, 403, 404, 413, 429)


def _id(name: str, what: str) -> Param:
    return Param(name, IntParam(min=1, max=MAX_ID), what, where="path")


ACCOUNT_ID, HIVE_ID, DEAL_ID = _id("id", "the account"), _id("id", "the hive"), _id("id",
                                                                                   "the deal")
USER_ID = _id("user_id", "the member's app user id")


def _route(method: str, path: str, summary: str, response: type | None, **kw: Any) -> Route:
    errors = tuple(sorted({*AUTH_ERRORS, *kw.pop("errors", ())}))
    return Route(method, path, summary, response, kw.pop("params", ()), tags=TAGS,
                 errors=errors, auth=True, max_age=0, **kw)


ACCOUNT_LIST = _route("GET", "/v1/accounts", "Your business accounts and your role in each "
                      "(any signed-in user; operators: their own memberships)", AccountList)
ACCOUNT_POST = _route("POST", "/v1/accounts", "Open a business account (you become its admin)",
                      Account, body=AccountIn, status=201, errors=(422,))
ACCOUNT_GET = _route("GET", "/v1/accounts/{id}", "A business account (viewer)", Account,
                     params=(ACCOUNT_ID,))
ACCOUNT_PATCH = _route("PATCH", "/v1/accounts/{id}", "Change an account (admin)", Account,
                       params=(ACCOUNT_ID,), body=AccountPatch, errors=(422,))
MEMBERS = _route("GET", "/v1/accounts/{id}/members", "The account's members (viewer)",
                 MemberList, params=(ACCOUNT_ID,))
MEMBER_PUT = _route("PUT", "/v1/accounts/{id}/members/{user_id}",
                    "Add a member or change a role (admin)", Member,
                    params=(ACCOUNT_ID, USER_ID), body=MemberIn, errors=(409, 422))
MEMBER_DELETE = _route("DELETE", "/v1/accounts/{id}/members/{user_id}",
                       "Remove a member (admin; not the last admin)", None, status=204,
                       params=(ACCOUNT_ID, USER_ID), errors=(409,))
AUDIT = _route("GET", "/v1/accounts/{id}/audit", "The account's audit trail, newest first "
               "(admin)", AuditList, params=(ACCOUNT_ID, Param(
                   "limit", IntParam(min=1, max=500), "entries at most", default=100)))
HIVE_POST = _route("POST", "/v1/accounts/{id}/hives", "Add a hive (manager)", ManagedHive,
                   params=(ACCOUNT_ID,), body=HiveIn, status=201, errors=(422,))
HIVE_LIST = _route("GET", "/v1/accounts/{id}/hives", "The account's hives, drafts and "
                   "closed ones included (viewer)", ManagedHiveList, params=(ACCOUNT_ID,))
HIVE_PATCH = _route("PATCH", "/v1/hives/{id}", "Change a hive (manager)", ManagedHive,
                    params=(HIVE_ID,), body=HivePatch, errors=(422,))
HIVE_DELETE = _route("DELETE", "/v1/hives/{id}", "Close a hive (manager)", None, status=204,
                     params=(HIVE_ID,),
                     description="Hives are retired, not deleted (their reports stay): the "
                                 "status becomes closed and the hive leaves the catalogue.")
DEAL_POST = _route("POST", "/v1/hives/{id}/deals", "Add a deal (manager)", ManagedDeal,
                   params=(HIVE_ID,), body=DealIn, status=201, errors=(422,))
DEAL_PATCH = _route("PATCH", "/v1/deals/{id}", "Change a deal (manager)", ManagedDeal,
                    params=(DEAL_ID,), body=DealPatch, errors=(422,))
SENSORS = _route("GET", "/v1/hives/{id}/sensors", "A hive's sensors (viewer)", SensorList,
                 params=(HIVE_ID,), description="Status, battery, signal, last seen, and "
                 "the pending and applied configuration of each sensor in the hive.")
SENSOR = Param("sensor", StrParam(max_length=64, pattern=r"[A-Za-z0-9_.-]{1,64}",
                                  strip=False), "the sensor's external id", where="path")
_PUSH = ("Members of the account whose hive has the sensor, and operators; callers "
         "without a token from an address in business.sensor_config_trusted (operators' "
         "tools on the host) too.")
SENSOR_CONFIG_GET = _route("GET", "/v1/sensors/{sensor}/config", "A sensor's pending and "
                           "applied configuration (viewer)", SensorConfigState,
                           params=(SENSOR,), description=_PUSH)
SENSOR_CONFIG_PUT = _route("PUT", "/v1/sensors/{sensor}/config", "Push a configuration to a "
                           "sensor (manager)", SensorConfigPushed, params=(SENSOR,),
                           body=SensorConfigIn, status=201, errors=(422, 503),
                           description="Stored as pending (superseding a pending one) and "
                           "published retained with QoS 1 on the sensor's command topic; "
                           "it becomes applied when the sensor reports its id. 503 with "
                           "Retry-After when the broker did not acknowledge in "
                           "mqtt.publish_timeout (the configuration stays pending). "
                           + _PUSH)
IMAGE_ID = _id("id", "the image")
IMAGE_POST = _route("POST", "/v1/hives/{id}/images", "Add an image (manager)", ManagedImage,
                    params=(HIVE_ID,), status=201, errors=(415, 422),
                    description="The body is the image's bytes (JPEG, PNG or WebP, told "
                                "from the bytes; at most business.image_max_bytes and "
                                "business.image_max_pixels), or, with Content-Type "
                                "application/json, {\"url\": \"https://...\"} of an image "
                                "hosted elsewhere. The hive's first image is its cover.")
IMAGE_PATCH = _route("PATCH", "/v1/images/{id}", "Make an image the cover, move or caption "
                     "it (manager)", ManagedImage, params=(IMAGE_ID,), body=ImagePatch,
                     errors=(422,))
IMAGE_DELETE = _route("DELETE", "/v1/images/{id}", "Remove an image (manager)", None,
                      status=204, params=(IMAGE_ID,))
DEAL_DELETE = _route("DELETE", "/v1/deals/{id}", "Delete a deal (manager)", None,
                     status=204, params=(DEAL_ID,))


# -- access and audit -----------------------------------------------------------------

@asynccontextmanager
async def _tx(call: Call) -> AsyncIterator[Any]:
    async with database(call.process).connection() as conn, conn.transaction():
        yield conn


async def _allow(call: Call, conn: Any, account_id: int | None, need: str) -> str:
    """The caller's role in the account if it is at least `need`; 404 for non-members
    and missing accounts, 403 for a role too low."""
    if account_id is None:
        raise Problem(404, "not found")
    return judge(await conn.fetchrow(queries.ACCESS, identity(call.request).user_id,
                                     account_id), need)


def judge(row: Any, need: str, where: str = "the account") -> str:
    """The role of an access row (`user_role`, `member_role`; None: no such account or
    resource) if it is at least `need`: 404 for non-members, 403 for a role too low."""
    if row is None:
        raise Problem(404, "not found")
    role = "operator" if row["user_role"] == "operator" else row["member_role"]
    if role is None:
        raise Problem(404, "not found")
    if RANK[role] < RANK[need]:
        raise Problem(403, f"this needs the role {need} in {where} (yours: {role})")
    return role


allow = _allow  # for other modules that authorize by membership (modules.kpis)


async def _audit(call: Call, conn: Any, account_id: int, action: str, entity_id: int | None,
                 before: Any, after: Any) -> None:
    user = call.request.ctx.get("user")  # None: a trusted operators' tool
    await conn.execute(queries.AUDIT_INSERT, account_id, user and user.user_id,
                       action, entity_id, _json(before), _json(after))


def _json(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()


def _changes(patch: msgspec.Struct) -> dict[str, Any]:
    return {f: v for f in patch.__struct_fields__
            if (v := getattr(patch, f)) is not msgspec.UNSET}


def _set(changes: dict[str, Any], columns: dict[str, str], first: int) -> tuple[str, list]:
    parts, args = [], []
    for name, column in columns.items():
        if name in changes:
            args.append(changes[name])
            parts.append(f"{column} = ${first + len(args) - 1}")
    return ", ".join(parts), args


# -- accounts and members ----------------------------------------------------------------

def _account(row: Any, role: str) -> Account:
    return Account(row["id"], row["name"], row["billing_email"], role, row["created_at"],
                   row["updated_at"])


@endpoint(ACCOUNT_POST)
async def account_post(call: Call) -> Account:
    body: AccountIn = call.body
    async with _tx(call) as conn:
        row = await conn.fetchrow(queries.ACCOUNT_INSERT, body.name, body.billing_email)
        await conn.execute(queries.MEMBER_UPSERT, row["id"], identity(call.request).user_id,
                           "admin")
        account = _account(row, "admin")
        await _audit(call, conn, row["id"], "account.create", row["id"], None, account)
    return account


@endpoint(ACCOUNT_LIST)
async def account_list(call: Call) -> AccountList:
    async with database(call.process).connection() as conn:
        rows = await conn.fetch(queries.MY_ACCOUNTS, identity(call.request).user_id)
    return AccountList([_account(r, r["member_role"]) for r in rows])


@endpoint(ACCOUNT_GET)
async def account_get(call: Call) -> Account:
    async with _tx(call) as conn:
        role = await _allow(call, conn, call.params["id"], "viewer")
        return _account(await conn.fetchrow(queries.ACCOUNT, call.params["id"]), role)


@endpoint(ACCOUNT_PATCH)
async def account_patch(call: Call) -> Account:
    account_id = call.params["id"]
    async with _tx(call) as conn:
        role = await _allow(call, conn, account_id, "admin")
        before = _account(await conn.fetchrow(queries.ACCOUNT + " FOR UPDATE", account_id),
                          role)
        sets, args = _set(_changes(call.body), {"name": "name",
                                                "billing_email": "billing_email"}, 2)
        row = (await conn.fetchrow(f"UPDATE account SET {sets} WHERE id = $1 RETURNING *",
                                   account_id, *args) if sets
               else await conn.fetchrow(queries.ACCOUNT, account_id))
        after = _account(row, role)
        await _audit(call, conn, account_id, "account.update", account_id, before, after)
    return after


def _member(row: Any) -> Member:
    return Member(row["user_id"], row["member_role"], row["nickname"], row["created_at"])


async def _rows_of_account(call: Call, need: str, query: str, *args: Any) -> list[Any]:
    """The rows of `query` about the account of the path (`$1`), for a role ≥ `need`."""
    async with _tx(call) as conn:
        await _allow(call, conn, call.params["id"], need)
        return await conn.fetch(query, call.params["id"], *args)


@endpoint(MEMBERS)
async def members(call: Call) -> MemberList:
    return MemberList([_member(r) for r in await _rows_of_account(call, "viewer",
                                                                  queries.MEMBERS)])


async def _last_admin(conn: Any, account_id: int, user_id: int) -> bool:
    """Whether `user_id` is the account's only admin (the account row is locked first,
    so that two concurrent demotions cannot both pass)."""
    await conn.execute("SELECT 1 FROM account WHERE id = $1 FOR UPDATE", account_id)
    admins = await conn.fetch(queries.ADMINS, account_id)
    return [r["user_id"] for r in admins] == [user_id]


@endpoint(MEMBER_PUT)
async def member_put(call: Call) -> Member:
    account_id, user_id, role = call.params["id"], call.params["user_id"], call.body.role
    async with _tx(call) as conn:
        await _allow(call, conn, account_id, "admin")
        if await conn.fetchval("SELECT 1 FROM app_user WHERE id = $1", user_id) is None:
            raise Problem(404, "no such user", param="user_id")
        if role != "admin" and await _last_admin(conn, account_id, user_id):
            raise Problem(409, "the last admin of an account stays admin")
        before = await conn.fetchrow(queries.MEMBER, account_id, user_id)
        await conn.execute(queries.MEMBER_UPSERT, account_id, user_id, role)
        after = _member(await conn.fetchrow(queries.MEMBER, account_id, user_id))
        await _audit(call, conn, account_id, "member.put", user_id,
                     before and _member(before), after)
    return after


@endpoint(MEMBER_DELETE)
async def member_delete(call: Call) -> None:
    account_id, user_id = call.params["id"], call.params["user_id"]
    async with _tx(call) as conn:
        await _allow(call, conn, account_id, "admin")
        if await _last_admin(conn, account_id, user_id):
            raise Problem(409, "the last admin of an account cannot be removed")
        before = await conn.fetchrow(queries.MEMBER, account_id, user_id)
        if before is None:
            raise Problem(404, "not a member of this account", param="user_id")
        await conn.execute("DELETE FROM account_member WHERE account_id = $1 AND user_id = $2",
                           account_id, user_id)
        await _audit(call, conn, account_id, "member.delete", user_id, _member(before), None)


@endpoint(AUDIT)
async def audit(call: Call) -> AuditList:
    rows = await _rows_of_account(call, "admin", queries.AUDIT, call.params["limit"])
    return AuditList([AuditEntry(r["id"], r["at"], r["user_id"], r["action"], r["entity_id"],
                                 _decode(r["before"]), _decode(r["after"])) for r in rows])


def _decode(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


# -- hives -----------------------------------------------------------------------------

def _hive(row: Any) -> ManagedHive:
    address = Address(row["street"], row["city"], row["country"], row["zip"],
                      row["latitude"], row["longitude"])
    return ManagedHive(row["id"], row["account_id"], row["name"], row["type"], row["status"],
                       row["capacity"], row["timezone"], row["description"], address,
                       row["updated_at"])


def _check_zone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise Problem(422, f"{name!r} is not an IANA time zone name",
                      param="timezone") from None


def _check_address(body: Any) -> None:
    address = body.address
    if address is not msgspec.UNSET and (address.latitude is None) != (
            address.longitude is None):
        raise Problem(422, "give latitude and longitude together, or neither",
                      param="address.longitude")


async def _lookup(conn: Any, table: str, field: str, code: str) -> int:
    found = await conn.fetchval(f"SELECT id FROM {table} WHERE code = $1", code)
    if found is None:
        raise Problem(422, f"unknown {field} {code!r}", param=field)
    return found


@asynccontextmanager
async def _refused_by_db() -> AsyncIterator[None]:
    """CHECKs the database makes (the time zone trigger knows tzdata's list) as 422s."""
    try:
        yield
    except asyncpg.CheckViolationError as exc:
        field = queries.CHECK_FIELDS.get(exc.constraint_name or "", "body")
        raise Problem(422, f"refused ({exc.constraint_name})", param=field) from None


@endpoint(HIVE_POST)
async def hive_post(call: Call) -> ManagedHive:
    body: HiveIn = call.body
    _check_zone(body.timezone)
    _check_address(body)
    a = body.address
    async with _tx(call) as conn, _refused_by_db():
        await _allow(call, conn, call.params["id"], "manager")
        type_id = await _lookup(conn, "hive_type", "type", body.type)
        status_id = await _lookup(conn, "hive_status", "status", body.status)
        address_id = await conn.fetchval(queries.ADDRESS_INSERT, a.street, a.city, a.zip,
                                         a.country, a.latitude, a.longitude)
        hive_id = await conn.fetchval(queries.HIVE_INSERT, call.params["id"], address_id,
                                      type_id, status_id, body.name, body.description,
                                      body.timezone, body.capacity)
        after = _hive(await conn.fetchrow(queries.HIVE, hive_id))
        await _audit(call, conn, after.account_id, "hive.create", hive_id, None, after)
    return after


@endpoint(HIVE_LIST)
async def hive_list(call: Call) -> ManagedHiveList:
    rows = await _rows_of_account(call, "viewer", queries.ACCOUNT_HIVES)
    return ManagedHiveList([_hive(r) for r in rows])


async def _hive_for(call: Call, conn: Any, need: str) -> ManagedHive:
    row = await conn.fetchrow(queries.HIVE + " FOR UPDATE OF h", call.params["id"])
    await _allow(call, conn, row and row["account_id"], need)
    return _hive(row)


@endpoint(HIVE_PATCH)
async def hive_patch(call: Call) -> ManagedHive:
    changes = _changes(call.body)
    if "timezone" in changes:
        _check_zone(changes["timezone"])
    _check_address(call.body)
    async with _tx(call) as conn, _refused_by_db():
        before = await _hive_for(call, conn, "manager")
        if "type" in changes:
            changes["type"] = await _lookup(conn, "hive_type", "type", changes["type"])
        if "status" in changes:
            changes["status"] = await _lookup(conn, "hive_status", "status", changes["status"])
        if "address" in changes:
            a = changes["address"]
            await conn.execute(queries.ADDRESS_UPDATE, before.id, a.street, a.city, a.zip,
                               a.country, a.latitude, a.longitude)
        sets, args = _set(changes, queries.HIVE_COLUMNS, 2)
        if sets:
            await conn.execute(f"UPDATE hive SET {sets} WHERE id = $1", before.id, *args)
        after = _hive(await conn.fetchrow(queries.HIVE, before.id))
        await _audit(call, conn, after.account_id, "hive.update", before.id, before, after)
    return after


@endpoint(HIVE_DELETE)
async def hive_delete(call: Call) -> None:
    async with _tx(call) as conn:
        before = await _hive_for(call, conn, "manager")
        await conn.execute(queries.HIVE_CLOSE, before.id)
        after = _hive(await conn.fetchrow(queries.HIVE, before.id))
        await _audit(call, conn, after.account_id, "hive.close", before.id, before, after)


_CONFIG = msgspec.json.Decoder(SensorConfig | None)


@endpoint(SENSORS)
async def sensors(call: Call) -> SensorList:
    async with _tx(call) as conn:
        account_id = await conn.fetchval("SELECT account_id FROM hive WHERE id = $1",
                                         call.params["id"])
        await _allow(call, conn, account_id, "viewer")
        rows = await conn.fetch(queries.SENSORS, call.params["id"])
    return SensorList([Sensor(
        r["external_id"], r["name"], r["firmware"], r["status"], r["battery_mv"], r["csq"],
        r["firmware_version"], r["received_at"], r["installed_at"],
        _CONFIG.decode(r["pending"] or "null"), _CONFIG.decode(r["applied"] or "null"))
        for r in rows])


# -- sensor configuration push ---------------------------------------------------------

def _trusted(call: Call) -> bool:
    """A caller without a token from an address of business.sensor_config_trusted."""
    if call.request.ctx.get("user") is not None:
        return False
    client = call.request.client
    if client == "unix:":
        return True
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    address = getattr(address, "ipv4_mapped", None) or address
    return any(address in net for net in call.process.config[NAME]["sensor_config_trusted"])


async def _sensor_access(call: Call, conn: Any, need: str) -> int | None:
    """The account of the hive the sensor is in (None: in stock), if the caller may act
    on the sensor with role `need`: 401 without a token (unless trusted), 404 for
    non-members and unknown sensors, 403 for a role too low."""
    sensor = call.params["sensor"]
    trusted = _trusted(call)
    user = None if trusted else identity(call.request)
    row = await conn.fetchrow(queries.SENSOR_ACCOUNT, sensor)
    if row is None:
        raise Problem(404, f"no sensor {sensor!r}")
    if trusted:
        return row["account_id"]
    if row["account_id"] is None:
        if not await conn.fetchval(queries.IS_OPERATOR, user.user_id):
            raise Problem(404, f"no sensor {sensor!r}")
        return None
    await _allow(call, conn, row["account_id"], need)
    return row["account_id"]


@endpoint(SENSOR_CONFIG_GET)
async def sensor_config_get(call: Call) -> SensorConfigState:
    async with _tx(call) as conn:
        await _sensor_access(call, conn, "viewer")
        state = await read_config(conn, call.params["sensor"])
    return msgspec.convert(state, SensorConfigState, strict=False)


@endpoint(SENSOR_CONFIG_PUT)
async def sensor_config_put(call: Call) -> SensorConfigPushed:
    sensor, values = call.params["sensor"], msgspec.structs.asdict(call.body)
    async with _tx(call) as conn:
        account_id = await _sensor_access(call, conn, "manager")
        before = await read_config(conn, sensor)
        row = await store_config(conn, sensor, values)
        if account_id is not None:
            await _audit(call, conn, account_id, "sensor.config", row["id"],
                         before and before["pending"], {"sensor": sensor, **values})
    topic, failure = await publish_config(call.process, sensor, row)
    if failure is not None:
        raise Problem(503, f"configuration {row['id']} is stored as pending but was not "
                      f"published: {failure}", headers=[("Retry-After", "5")])
    return SensorConfigPushed(sensor, msgspec.convert(dict(row), SensorConfig), topic, True)


# -- images ----------------------------------------------------------------------------

def _image(row: Any) -> ManagedImage:
    return ManagedImage(row["id"], row["hive_id"], row["url"], row["kind"], row["position"],
                        row["caption"])


_URL_BODY = msgspec.json.Decoder(ImageUrlIn)


def _url_body(body: bytes) -> ImageUrlIn:
    try:
        return _URL_BODY.decode(body)
    except msgspec.ValidationError as exc:
        path = str(exc).rpartition(" - at `$.")[2].rstrip("`") or "body"
        raise Problem(422, str(exc), param=path) from None
    except msgspec.DecodeError as exc:
        raise Problem(400, f"malformed JSON: {exc}") from None


@endpoint(IMAGE_POST)
async def image_post(call: Call) -> ManagedImage:
    settings = call.process.config[NAME]
    body: bytes = call.request.body or b""
    async with _tx(call) as conn:
        account_id = await conn.fetchval("SELECT account_id FROM hive WHERE id = $1",
                                         call.params["id"])
        await _allow(call, conn, account_id, "manager")
        if (call.request.header("Content-Type") or "").startswith("application/json"):
            given = _url_body(body)
            url, caption, name = given.url, given.caption, None
        else:
            extension = await asyncio.to_thread(images.inspect, body,
                                                settings["image_max_bytes"],
                                                settings["image_max_pixels"])
            name = images.name_of(body, extension)
            url, caption = f"{settings['images_url'].rstrip('/')}/{name}", None
        image_id = await conn.fetchval(queries.IMAGE_INSERT, call.params["id"], url, caption)
        after = _image(await conn.fetchrow(queries.IMAGE, image_id))
        await _audit(call, conn, account_id, "image.create", image_id, None, after)
        if name is not None:  # last: a refused row leaves no file behind
            await asyncio.to_thread(images.store, settings["images_dir"], name, body)
    return after


async def _image_for(call: Call, conn: Any) -> tuple[int, ManagedImage]:
    row = await conn.fetchrow(queries.IMAGE + " FOR UPDATE OF i", call.params["id"])
    await _allow(call, conn, row and row["account_id"], "manager")
    return row["account_id"], _image(row)


@endpoint(IMAGE_PATCH)
async def image_patch(call: Call) -> ManagedImage:
    changes = _changes(call.body)
    async with _tx(call) as conn:
        account_id, before = await _image_for(call, conn)
        if changes.get("kind") == "cover":
            await conn.execute("UPDATE hive_image SET kind = 'secondary' WHERE hive_id = $1 "
                               "AND kind = 'cover' AND id <> $2", before.hive_id, before.id)
        sets, args = _set(changes, {"kind": "kind", "position": "position",
                                    "caption": "caption"}, 2)
        if sets:
            await conn.execute(f"UPDATE hive_image SET {sets} WHERE id = $1", before.id, *args)
        after = _image(await conn.fetchrow(queries.IMAGE, before.id))
        await _audit(call, conn, account_id, "image.update", before.id, before, after)
    return after


@endpoint(IMAGE_DELETE)
async def image_delete(call: Call) -> None:
    async with _tx(call) as conn:
        account_id, before = await _image_for(call, conn)
        await conn.execute("DELETE FROM hive_image WHERE id = $1", before.id)
        await _audit(call, conn, account_id, "image.delete", before.id, before, None)


# -- deals -----------------------------------------------------------------------------

def _clock(text: str) -> dt.time:
    return dt.time.fromisoformat(text)


def _deal(row: Any) -> ManagedDeal:
    daily = None
    if row["daily_weekdays"] is not None:
        daily = Daily(list(row["daily_weekdays"]), row["daily_start"].strftime("%H:%M"),
                      row["daily_end"].strftime("%H:%M"))
    occurrence = (None if row["starts_at"] is None
                  else Occurrence(row["starts_at"], row["ends_at"]))
    return ManagedDeal(row["id"], row["hive_id"], row["kind"], row["title"],
                       row["description"], row["terms"], row["valid_from"],
                       row["valid_until"], daily, occurrence)


def _deal_values(values: dict[str, Any]) -> dict[str, Any]:
    """The columns of a deal's fields; 422 for a window that ends before it starts."""
    if values["valid_until"] <= values["valid_from"]:
        raise Problem(422, "the deal must end after it starts (valid_from)",
                      param="valid_until")
    daily = values.pop("daily")
    if daily is not None and daily.start == daily.end:
        raise Problem(422, "a daily deal must not start and end at the same time",
                      param="daily.end")
    values["daily_weekdays"] = None if daily is None else sorted(set(daily.weekdays))
    values["daily_start"] = None if daily is None else _clock(daily.start)
    values["daily_end"] = None if daily is None else _clock(daily.end)
    return values


@endpoint(DEAL_POST)
async def deal_post(call: Call) -> ManagedDeal:
    values = _deal_values({f: getattr(call.body, f) for f in call.body.__struct_fields__})
    async with _tx(call) as conn:
        account_id = await conn.fetchval("SELECT account_id FROM hive WHERE id = $1",
                                         call.params["id"])
        await _allow(call, conn, account_id, "manager")
        deal_id = await conn.fetchval(queries.DEAL_INSERT, call.params["id"],
                                      *(values[c] for c in queries.DEAL_COLUMNS))
        after = _deal(await conn.fetchrow(queries.DEAL, deal_id))
        await _audit(call, conn, account_id, "deal.create", deal_id, None, after)
    return after


async def _deal_for(call: Call, conn: Any) -> tuple[int, Any]:
    row = await conn.fetchrow(queries.DEAL + " FOR UPDATE OF d", call.params["id"])
    await _allow(call, conn, row and row["account_id"], "manager")
    return row["account_id"], row


@endpoint(DEAL_PATCH)
async def deal_patch(call: Call) -> ManagedDeal:
    async with _tx(call) as conn:
        account_id, row = await _deal_for(call, conn)
        before = _deal(row)
        current = {f: getattr(before, f) for f in DealPatch.__struct_fields__}
        values = _deal_values({**current, **_changes(call.body)})
        sets, args = _set(values, {c: c for c in queries.DEAL_COLUMNS}, 2)
        await conn.execute(f"UPDATE deal SET {sets} WHERE id = $1", before.id, *args)
        after = _deal(await conn.fetchrow(queries.DEAL, before.id))
        await _audit(call, conn, account_id, "deal.update", before.id, before, after)
    return after


@endpoint(DEAL_DELETE)
async def deal_delete(call: Call) -> None:
    async with _tx(call) as conn:
        account_id, row = await _deal_for(call, conn)
        await conn.execute("DELETE FROM deal WHERE id = $1", row["id"])
        await _audit(call, conn, account_id, "deal.delete", row["id"], _deal(row), None)


def _signed_in(handler: Any) -> Any:
    """401 before the body is validated: on the public hive locations (`auth:
    optional`) an anonymous write must not learn how its body would be judged."""

    async def checked(request: Any) -> Any:
        try:
            identity(request)
        except Problem as exc:
            return exc.response(request.path)
        return await handler(request)

    checked.route = handler.route  # type: ignore[attr-defined]
    return checked


def _with_quick(dispatch: Any, public: Any) -> Any:
    """Keep the public GET's quick hook (docs/modules.md) on a shared location."""
    quick = getattr(public, "quick", None)
    if quick is not None:
        dispatch.quick = quick
    return dispatch


HANDLERS = {
    "accounts": methods(account_list, account_post),
    "account": methods(account_get, account_patch),
    "account_members": members,
    "account_member": methods(member_put, member_delete),
    "account_audit": audit,
    "account_hives": methods(hive_list, hive_post),
    "hive_managed": _with_quick(methods(PUBLIC["hive"], _signed_in(hive_patch),
                                        _signed_in(hive_delete)), PUBLIC["hive"]),
    "hive_deals_managed": methods(PUBLIC["hive_deals"], _signed_in(deal_post)),
    "deal": methods(deal_patch, deal_delete),
    "hive_sensors": sensors,
    "hive_images_managed": methods(PUBLIC["hive_images"], _signed_in(image_post)),
    "image": methods(image_patch, image_delete),
    "sensor_config_managed": methods(sensor_config_get, sensor_config_put),
}
