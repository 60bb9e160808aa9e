"""Request and response bodies of the business endpoints (msgspec Structs: decoding
validates them and names the refused field; the OpenAPI document shows them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

MAX_ID = (1 << 63) - 1
Name = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$",
                           description="no leading or trailing spaces")]
Email = Annotated[str, Meta(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
Text = Annotated[str, Meta(max_length=4000)]
Role = Literal["admin", "manager", "viewer"]
DealKind = Literal["discount", "promotion", "happy_hour", "event"]
HiveStatus = Literal["draft", "active", "temporarily_closed", "closed"]
Capacity = Annotated[int, Meta(ge=1, le=1_000_000, description="people; > 0")]
TimeZone = Annotated[str, Meta(min_length=1, max_length=64, examples=["Europe/Berlin"],
                               description="an IANA time zone name")]
ClockTime = Annotated[str, Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
                                examples=["17:00"], description="hive-local HH:MM")]
Instant = Annotated[datetime, Meta(tz=True, description="with a UTC offset")]
Weekday = Annotated[int, Meta(ge=1, le=7, description="ISO weekday, 1 = Monday")]


class AccountIn(Struct, forbid_unknown_fields=True):
    name: Name
    billing_email: Email | None = None


class AccountPatch(Struct, forbid_unknown_fields=True):
    name: Name | UnsetType = UNSET
    billing_email: Email | None | UnsetType = UNSET


class Account(Struct):
    id: int
    name: str
    billing_email: str | None
    role: Annotated[str, Meta(description="the caller's role here (operator: Bizzy staff)")]
    created_at: datetime
    updated_at: datetime


class MemberIn(Struct, forbid_unknown_fields=True):
    role: Role


class Member(Struct):
    user_id: int
    role: Role
    nickname: str | None
    created_at: datetime


class MemberList(Struct):
    items: list[Member]


class AddressIn(Struct, forbid_unknown_fields=True):
    street: Annotated[str, Meta(min_length=1, max_length=200, pattern=r"\S")]
    city: Annotated[str, Meta(min_length=1, max_length=100, pattern=r"\S")]
    country: Annotated[str, Meta(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]
    zip: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9 -]{0,15}$")] | None = None
    latitude: Annotated[float, Meta(ge=-90, le=90)] | None = None
    longitude: Annotated[float, Meta(ge=-180, le=180)] | None = None


class HiveIn(Struct, forbid_unknown_fields=True):
    name: Name
    type: Annotated[str, Meta(max_length=40, description="a hive type slug (/v1/hive-types)")]
    capacity: Capacity
    timezone: TimeZone
    address: AddressIn
    description: Text | None = None
    status: HiveStatus = "draft"


class HivePatch(Struct, forbid_unknown_fields=True):
    name: Name | UnsetType = UNSET
    type: Annotated[str, Meta(max_length=40)] | UnsetType = UNSET
    capacity: Capacity | UnsetType = UNSET
    timezone: TimeZone | UnsetType = UNSET
    address: AddressIn | UnsetType = UNSET
    description: Text | None | UnsetType = UNSET
    status: HiveStatus | UnsetType = UNSET


class Address(Struct):
    street: str
    city: str
    country: str
    zip: str | None
    latitude: float | None
    longitude: float | None


class ManagedHive(Struct):
    id: int
    account_id: int
    name: str
    type: str
    status: str
    capacity: int
    timezone: str
    description: str | None
    address: Address
    updated_at: datetime


class ManagedHiveList(Struct):
    items: list[ManagedHive]


class Daily(Struct, forbid_unknown_fields=True):
    """A deal that recurs on these weekdays between two hive-local times (an end at or
    before the start ends on the next day)."""

    weekdays: Annotated[list[Weekday], Meta(min_length=1, max_length=7)]
    start: ClockTime
    end: ClockTime


class DealIn(Struct, forbid_unknown_fields=True):
    title: Name
    valid_from: Instant
    valid_until: Instant
    kind: DealKind = "promotion"
    description: Text | None = None
    terms: Text | None = None
    daily: Daily | None = None


class DealPatch(Struct, forbid_unknown_fields=True):
    title: Name | UnsetType = UNSET
    valid_from: Instant | UnsetType = UNSET
    valid_until: Instant | UnsetType = UNSET
    kind: DealKind | UnsetType = UNSET
    description: Text | None | UnsetType = UNSET
    terms: Text | None | UnsetType = UNSET
    daily: Daily | None | UnsetType = UNSET


class Occurrence(Struct):
    starts_at: datetime
    ends_at: datetime


class ManagedDeal(Struct):
    id: int
    hive_id: int
    kind: str
    title: str
    description: str | None
    terms: str | None
    valid_from: datetime
    valid_until: datetime
    daily: Daily | None
    next_occurrence: Annotated[Occurrence | None, Meta(
        description="the current or next window (none left: null)")]


class AuditEntry(Struct):
    id: int
    at: datetime
    user_id: int | None
    action: str
    entity_id: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditList(Struct):
    items: list[AuditEntry]


class SensorConfig(Struct):
    id: Annotated[int, Meta(description="the protocol's 32-bit configuration id")]
    threshold_cm: int
    reporting_interval_min: int
    status_interval_min: int
    event_threshold: int
    created_at: datetime
    applied_at: datetime | None


class Sensor(Struct):
    external_id: Annotated[str, Meta(description="the id in its MQTT topics")]
    name: str | None
    firmware: Literal["v1", "v2"]
    status: Annotated[Literal["ok", "silent", "never_seen"], Meta(
        description="silent: no status message for twice its status interval (the "
                    "applied configuration's, else a day)")]
    battery_mv: int | None
    signal_csq: Annotated[int | None, Meta(description="GSM CSQ 0..31; null: unknown")]
    firmware_version: str | None
    last_seen: datetime | None
    installed_at: datetime | None
    pending: SensorConfig | None
    applied: SensorConfig | None


class SensorList(Struct):
    items: list[Sensor]


class SensorConfigIn(Struct, forbid_unknown_fields=True):
    """The four values of the protocol's configuration message."""

    threshold_cm: Annotated[int, Meta(ge=1, le=1000)]
    reporting_interval_min: Annotated[int, Meta(ge=1, le=1440)]
    status_interval_min: Annotated[int, Meta(ge=1, le=10080)]
    event_threshold: Annotated[int, Meta(ge=1, le=1000)]


class SensorConfigState(Struct):
    sensor: Annotated[str, Meta(description="the sensor's external id")]
    pending: SensorConfig | None
    applied: SensorConfig | None
    reported_configuration_id: Annotated[int | None, Meta(
        description="the configuration id the sensor's last status message reported")]
    status_received_at: datetime | None


class SensorConfigPushed(Struct):
    sensor: str
    pending: SensorConfig
    topic: Annotated[str, Meta(description="the MQTT topic it was published on, retained")]
    published: bool


class ImageUrlIn(Struct, forbid_unknown_fields=True):
    """An image hosted elsewhere (JSON body instead of the image's bytes)."""

    url: Annotated[str, Meta(max_length=2000, pattern=r"^https?://\S+$")]
    caption: Annotated[str, Meta(max_length=500)] | None = None


class ImagePatch(Struct, forbid_unknown_fields=True):
    kind: Literal["cover", "secondary"] | UnsetType = UNSET
    position: Annotated[int, Meta(ge=0, le=32767)] | UnsetType = UNSET
    caption: Annotated[str, Meta(max_length=500)] | None | UnsetType = UNSET


class ManagedImage(Struct):
    id: int
    hive_id: int
    url: str
    kind: Literal["cover", "secondary"]
    position: int
    caption: str | None
