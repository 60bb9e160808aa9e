"""Request and response bodies of the signed-in endpoints (msgspec Structs: decoding
validates them, and the OpenAPI document shows them as JSON Schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

MAX_ID = (1 << 63) - 1
HiveId = Annotated[int, Meta(ge=1, le=MAX_ID)]
Nickname = Annotated[str, Meta(min_length=1, max_length=50, pattern=r"^\S(.*\S)?$",
                               description="no leading or trailing spaces")]
DealKind = Literal["discount", "promotion", "happy_hour", "event"]
Margin = Annotated[int, Meta(ge=0, le=100_000, description=(
    "occupancy alerts: how far (in the threshold's unit) occupancy must cross back "
    "before the alert can fire again"))]
Cooldown = Annotated[int, Meta(ge=0, le=604_800, description=(
    "occupancy alerts: the least time between two alerts, in seconds"))]
ClockTime = Annotated[str, Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
                                examples=["22:00"])]


class Subscription(Struct):
    plan: str
    status: str | None
    store: str | None
    started_at: datetime | None
    expires_at: datetime | None


class Me(Struct):
    """The signed-in user: the app stores nothing else about the person."""

    id: int
    uid: Annotated[str, Meta(description="the Firebase uid")]
    nickname: str | None
    created_at: datetime
    subscription: Subscription
    features: list[str]
    store_account_token: Annotated[str | None, Meta(
        description="pass as appAccountToken to the App Store when buying a plan")]


class MePatch(Struct, forbid_unknown_fields=True):
    nickname: Nickname | None


class UserHive(Struct):
    hive_id: int
    name: str
    at: Annotated[datetime, Meta(description="added (favourites) or last viewed (recent)")]


class UserHiveList(Struct):
    items: list[UserHive]


class QuietHours(Struct, forbid_unknown_fields=True):
    start: ClockTime
    end: ClockTime


class NotificationIn(Struct, forbid_unknown_fields=True):
    """An alert: `occupancy` (needs `hive_id`, `direction` and exactly one of
    `threshold_percent` / `threshold_count`) or a deal alert (`new_deal`,
    `deal_expiring`: no threshold; no `hive_id` means "my favourites")."""

    kind: Literal["occupancy", "new_deal", "deal_expiring"]
    hive_id: HiveId | None = None
    direction: Literal["rises_above", "falls_below"] | None = None
    threshold_percent: Annotated[int, Meta(ge=0, le=100)] | None = None
    threshold_count: Annotated[int, Meta(ge=0, le=100_000)] | None = None
    quiet_hours: QuietHours | None = None
    time_zone: Annotated[str, Meta(min_length=1, max_length=64,
                                   examples=["Europe/Berlin"])] = "UTC"
    deal_kinds: Annotated[list[DealKind], Meta(max_length=4)] = []
    enabled: bool = True
    margin: Margin = 5
    cooldown_seconds: Cooldown = 900


class NotificationPatch(Struct, forbid_unknown_fields=True):
    """Fields to change (null clears one); the others keep their values. The result is
    checked as a whole, as a new setting would be."""

    direction: Literal["rises_above", "falls_below"] | None | UnsetType = UNSET
    threshold_percent: Annotated[int, Meta(ge=0, le=100)] | None | UnsetType = UNSET
    threshold_count: Annotated[int, Meta(ge=0, le=100_000)] | None | UnsetType = UNSET
    quiet_hours: QuietHours | None | UnsetType = UNSET
    time_zone: Annotated[str, Meta(min_length=1, max_length=64)] | UnsetType = UNSET
    deal_kinds: Annotated[list[DealKind], Meta(max_length=4)] | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    margin: Margin | UnsetType = UNSET
    cooldown_seconds: Cooldown | UnsetType = UNSET


class Notification(Struct):
    id: int
    kind: str
    hive_id: int | None
    direction: str | None
    threshold_percent: int | None
    threshold_count: int | None
    quiet_hours: QuietHours | None
    time_zone: str
    deal_kinds: list[str]
    enabled: bool
    updated_at: datetime
    margin: int
    cooldown_seconds: int


class NotificationList(Struct):
    items: list[Notification]


class DeviceIn(Struct, forbid_unknown_fields=True):
    platform: Literal["ios", "android", "web"]


class MessageIn(Struct, forbid_unknown_fields=True):
    """Feedback to a hive (or to Bizzy, without `hive_id`)."""

    text: Annotated[str, Meta(min_length=1, max_length=2000)]
    hive_id: HiveId | None = None
    rating: Annotated[int, Meta(ge=1, le=5)] | None = None


class Message(Struct):
    id: int
    hive_id: int | None
    direction: str
    kind: str
    text: str
    rating: int | None
    created_at: datetime
    read_at: datetime | None


class MessageList(Struct):
    items: list[Message]


EventType = Literal["hive_viewed", "search_made", "favourite_added", "favourite_removed",
                    "deal_opened", "screen_viewed", "notification_opened", "map_moved"]


class Event(Struct, forbid_unknown_fields=True):
    type: EventType
    page: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_./-]+$")]
    hive_id: HiveId | None = None
    data: Annotated[dict[str, Any], Meta(max_length=20)] = {}


class EventBatch(Struct, forbid_unknown_fields=True):
    events: Annotated[list[Event], Meta(min_length=1, max_length=100)]


class Accepted(Struct):
    accepted: int


class SubscriptionType(Struct):
    code: str
    name: str
    price_cents: int
    currency: str
    billing_period: str
    features: list[str]


class SubscriptionTypeList(Struct):
    items: list[SubscriptionType]
