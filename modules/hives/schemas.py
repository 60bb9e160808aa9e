"""The response schemas of the catalogue API, defined once: msgspec encodes them and the
OpenAPI document describes them (modules.api.openapi)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

Level = Literal["quiet", "moderate", "busy", "full"]


class Address(Struct):
    street: str
    city: str
    zip: str | None
    country: Annotated[str, Meta(description="ISO 3166-1 alpha-2")]
    lat: float | None
    lon: float | None


class Occupancy(Struct):
    """Live occupancy, taken from the node's shared zone when the response is sent."""

    count: Annotated[int, Meta(ge=0, description="people inside now")]
    capacity: Annotated[int, Meta(gt=0)]
    percent: Annotated[int, Meta(ge=0, description="count / capacity, rounded")]
    level: Annotated[Level, Meta(description="quiet < 40 % <= moderate < 75 % <= busy "
                                             "< 100 % <= full")]
    as_of: Annotated[datetime | None, Meta(description="last change; null: never reported")]
    source: Annotated[Literal["zone", "database"], Meta(
        description="zone: this node's shared memory (live); database: Postgres when the "
                    "cached answer was filled")]


class Image(Struct):
    id: int
    url: str
    kind: Literal["cover", "secondary"]
    position: Annotated[int, Meta(ge=0)]
    caption: str | None


class DealDaily(Struct):
    """A daily deal: on these ISO weekdays (1 = Monday), between hive-local times (an end
    at or before the start ends on the next day)."""

    weekdays: list[int]
    start: Annotated[str, Meta(examples=["17:00"])]
    end: Annotated[str, Meta(examples=["19:00"])]


class DealOccurrence(Struct):
    starts_at: datetime
    ends_at: datetime


class Deal(Struct):
    id: int
    hive_id: int
    kind: Literal["discount", "promotion", "happy_hour", "event"]
    title: str
    description: str | None
    terms: str | None
    valid_from: datetime
    valid_until: datetime
    status: Annotated[Literal["active", "upcoming"], Meta(
        description="active: valid now; upcoming: starts later")]
    daily: Annotated[DealDaily | None, Meta(
        description="set for a deal that recurs daily; null: valid the whole window")] = None
    next_occurrence: Annotated[DealOccurrence | None, Meta(
        description="the current or next window (daily deals: in the hive's time zone, "
                    "DST-correct); as of when the cached answer was filled")] = None


class HiveBase(Struct):
    """What every hive answer has."""

    id: int
    name: str
    type: str
    address: Address
    capacity: Annotated[int, Meta(gt=0)]
    cover_image: str | None
    occupancy: Occupancy
    active_deals: Annotated[int, Meta(ge=0)]
    updated_at: datetime


class HiveItem(HiveBase, omit_defaults=True):
    """A hive in a listing."""

    distance_m: Annotated[float, Meta(
        ge=0, description="metres from `near` (only when `near` is given)")] | None = None


class HiveList(Struct):
    items: list[HiveItem]
    next: Annotated[str | None, Meta(description="the next page's URL; null: last page")]


class HiveDetail(HiveBase):
    """A hive with everything the app shows on its page."""

    description: str | None
    timezone: Annotated[str, Meta(description="IANA time zone, e.g. Europe/Berlin")]
    images: Annotated[list[Image], Meta(description="cover first, then secondary in order")]
    deals: Annotated[list[Deal], Meta(description="active and upcoming, soonest first")]


class ImageList(Struct):
    items: list[Image]


class DealList(Struct):
    items: list[Deal]


class HiveType(Struct):
    slug: str
    name: str
    hives: Annotated[int, Meta(ge=0, description="listed hives of this type")]


class HiveTypeList(Struct):
    items: list[HiveType]


class DealHive(Struct, omit_defaults=True):
    id: int
    name: str
    type: str
    distance_m: Annotated[float, Meta(ge=0)] | None = None


class DealItem(Struct):
    deal: Deal
    hive: DealHive


class DealFeed(Struct):
    items: list[DealItem]
    next: str | None


__all__ = [n for n, v in list(globals().items()) if isinstance(v, type)
           and issubclass(v, msgspec.Struct) and v not in (Struct, HiveBase)]
