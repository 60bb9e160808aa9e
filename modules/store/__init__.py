"""Store server notifications: subscriptions bought in the App Store.

    modules: [modules.database, modules.api, modules.store, ...]
    store:
      apple_root_certificate: /etc/bizzyd/AppleRootCA-G3.cer
      apple_bundle_id: app.bizzy
      apple_environment: Production
    http:
      servers:
        - locations:
            - location: = /v1/store/apple
              content: store_apple
              client_max_body_size: 64k

`POST /v1/store/apple` takes an App Store Server Notification V2 (`{"signedPayload":
JWS}`), verifies it (apple.py) and applies SUBSCRIBED, DID_RENEW, EXPIRED,
DID_FAIL_TO_RENEW and REFUND to `subscription` and `payment_transaction` in one
transaction.  Replays change nothing: the notification's UUID is recorded
(`store_notification`), subscriptions are unique per original transaction and payments
per transaction.  The buyer is the app_user whose `store_account_token` the app passed
as appAccountToken; the plan is `store_product`'s for the product id.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from msgspec import Meta, Struct

from bizzyd.config.schema import Block, ConfigError, Directive
from bizzyd.config.types import Enum, Str
from bizzyd.module import Module, ProcessContext
from modules.api import Call, Problem, Route, endpoint
from modules.auth import user_changed
from modules.database import database

from . import apple

NAME = "store"
HANDLED = ("SUBSCRIBED", "DID_RENEW", "EXPIRED", "DID_FAIL_TO_RENEW", "REFUND")

DIRECTIVES = (
    Directive(NAME, Block((
        Directive("apple_root_certificate", Str(allow_empty=True), "", path=True,
                  doc="Apple Root CA G3 (PEM or DER) that notification chains must end "
                      "in; empty: POST /v1/store/apple answers 503."),
        Directive("apple_bundle_id", Str(), "app.bizzy",
                  doc="The app's bundle id: notifications of other apps are refused."),
        Directive("apple_environment", Enum("Production", "Sandbox", "any"), "Production",
                  doc="Which App Store environment's notifications are applied."),
    )), doc="Store server notifications (modules.store)."),
)


class AppleNotification(Struct):
    signedPayload: Annotated[str, Meta(min_length=1, max_length=60000)]  # noqa: N815


class Outcome(Struct):
    result: Annotated[str, Meta(description="applied, duplicate or ignored")]


APPLE = Route("POST", "/v1/store/apple", "App Store Server Notifications V2", Outcome,
              body=AppleNotification, tags=("subscriptions",), max_age=0,
              errors=(400, 413, 422, 503),
              description="Called by Apple. A JWS whose x5c chain ends in the configured "
                          "root; replays change nothing.")

NEW_NOTIFICATION = """
INSERT INTO store_notification (store, external_id, kind) VALUES ('apple', $1, $2)
ON CONFLICT DO NOTHING RETURNING true
"""
USER = "SELECT id FROM app_user WHERE store_account_token = $1::text::uuid"
PLAN = "SELECT subscription_type_id FROM store_product WHERE store = 'apple' " \
       "AND product_id = $1"
SUBSCRIBE = """
INSERT INTO subscription (subscription_type_id, user_id, status, store, external_ref,
                          started_at, expires_at)
VALUES ($1, $2, 'active', 'apple', $3, $4, $5)
ON CONFLICT (store, external_ref) DO UPDATE
SET subscription_type_id = EXCLUDED.subscription_type_id, status = 'active',
    expires_at = greatest(subscription.expires_at, EXCLUDED.expires_at), cancelled_at = NULL
RETURNING id
"""
SUBSCRIPTION = "SELECT id, user_id FROM subscription WHERE store = 'apple' " \
               "AND external_ref = $1"
SET_STATUS = "UPDATE subscription SET status = $2, cancelled_at = $3 WHERE id = $1"
PAYMENT = """
INSERT INTO payment_transaction (subscription_id, kind, status, amount_cents, currency,
    provider, provider_ref, period_start, period_end, occurred_at)
VALUES ($1, $2, $3, $4, $5, 'apple', $6, $7, $8, $9)
ON CONFLICT (provider, provider_ref) DO NOTHING
"""


def _time(ms: Any) -> dt.datetime | None:
    return None if ms is None else dt.datetime.fromtimestamp(int(ms) / 1000, dt.UTC)


def _field(claims: dict[str, Any], name: str, where: str) -> Any:
    value = claims.get(name)
    if value in (None, ""):
        raise Problem(422, "missing", param=f"{where}.{name}")
    return value


def _verified(call: Call) -> tuple[dict[str, Any], dict[str, Any]]:
    """The notification and its transaction info, both verified."""
    settings = call.process.state[NAME]
    if settings["root"] is None:
        raise Problem(503, "store notifications are not configured")
    try:
        note = apple.verify(call.body.signedPayload, settings["root"])
        data = note.get("data") or {}
        signed = data.get("signedTransactionInfo")
        tx = apple.verify(signed, settings["root"]) if signed else {}
    except apple.Refused as exc:
        raise Problem(400, f"not a verified App Store notification: {exc}",
                      param="signedPayload") from None
    if data.get("bundleId") != settings["bundle_id"]:
        raise Problem(422, "another app's notification", param="data.bundleId")
    wanted = settings["environment"]
    if wanted != "any" and data.get("environment") != wanted:
        raise Problem(422, f"not a {wanted} notification", param="data.environment")
    return note, tx


async def _apply(conn: Any, kind: str, subtype: str | None, note: dict, tx: dict
                 ) -> int | None:
    """Apply a notification; the id of the user whose plan changed."""
    original = str(_field(tx, "originalTransactionId", "transaction"))
    transaction = str(_field(tx, "transactionId", "transaction"))
    if kind in ("SUBSCRIBED", "DID_RENEW"):
        user = await conn.fetchval(USER, str(_field(tx, "appAccountToken", "transaction")))
        if user is None:
            raise Problem(422, "no user has this token", param="transaction.appAccountToken")
        plan = await conn.fetchval(PLAN, _field(tx, "productId", "transaction"))
        if plan is None:
            raise Problem(422, "unknown product", param="transaction.productId")
        start = _time(tx.get("originalPurchaseDate") or tx.get("purchaseDate"))
        expires = _time(_field(tx, "expiresDate", "transaction"))
        sub = await conn.fetchval(SUBSCRIBE, plan, user, original, start, expires)
        await _payment(conn, sub, "purchase" if kind == "SUBSCRIBED" else "renewal",
                       "succeeded", transaction, tx)
        return user
    found = await conn.fetchrow(SUBSCRIPTION, original)
    if found is None:
        raise Problem(422, "no subscription has this original transaction",
                      param="transaction.originalTransactionId")
    sub = found["id"]
    if kind == "EXPIRED":
        await conn.execute(SET_STATUS, sub, "expired", None)
    elif kind == "DID_FAIL_TO_RENEW":
        if subtype != "GRACE_PERIOD":  # in a grace period the plan still holds
            await conn.execute(SET_STATUS, sub, "pending", None)
        await _payment(conn, sub, "renewal", "failed", f"failed:{note['notificationUUID']}",
                       tx)
    elif kind == "REFUND":
        revoked = _time(tx.get("revocationDate")) or dt.datetime.now(dt.UTC)
        await conn.execute(SET_STATUS, sub, "cancelled", revoked)
        await _payment(conn, sub, "refund", "succeeded", f"refund:{transaction}", tx)
    return found["user_id"]


async def _payment(conn: Any, sub: int, kind: str, status: str, ref: str, tx: dict) -> None:
    price = int(tx.get("price") or 0)  # milliunits of the currency
    await conn.execute(PAYMENT, sub, kind, status, price // 10, tx.get("currency") or "EUR",
                       ref, _time(tx.get("purchaseDate")), _time(tx.get("expiresDate")),
                       _time(tx.get("signedDate")) or dt.datetime.now(dt.UTC))


@endpoint(APPLE)
async def store_apple(call: Call) -> Outcome:
    note, tx = _verified(call)
    kind = str(_field(note, "notificationType", "payload"))
    uuid = str(_field(note, "notificationUUID", "payload"))
    async with database(call.process).connection() as conn, conn.transaction():
        if not await conn.fetchval(NEW_NOTIFICATION, uuid, kind):
            return Outcome("duplicate")
        if kind not in HANDLED:
            return Outcome("ignored")
        user = await _apply(conn, kind, note.get("subtype"), note, tx)
    if user is not None:
        user_changed(call.process, user)
    call.process.log.notice(f"*{call.request.conn_id} app store: {kind} applied "
                            f"(notification {uuid})")
    return Outcome("applied")


def check(config: Any) -> None:
    for needed in ("database", "api"):
        if config.get(needed) is None:
            raise ConfigError(f"modules.store needs modules.{needed}", ("modules",),
                              config.mark(("modules",)))
    path = config[NAME]["apple_root_certificate"]
    if path:
        try:
            apple.load_root(path)
        except (OSError, ValueError) as exc:
            key = (NAME, "apple_root_certificate")
            raise ConfigError(f"cannot read a certificate from {path}: {exc}", key,
                              config.mark(key)) from None


def init_worker(ctx: ProcessContext) -> None:
    settings = ctx.config[NAME]
    path = settings["apple_root_certificate"]
    ctx.state[NAME] = {"root": apple.load_root(path) if path else None,
                       "bundle_id": settings["apple_bundle_id"],
                       "environment": settings["apple_environment"]}


module = Module(
    name=NAME,
    directives=DIRECTIVES,
    check=check,
    init_worker=init_worker,
    content_handlers={"store_apple": store_apple},
    doc=__doc__ or "",
)

__all__ = ["module"]
