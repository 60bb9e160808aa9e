"""The demo city: every row except the sensor history, as plain tuples per table.

A `City` is built from (seed, number of hives, number of users, anchor, window) and the
ids of the reference rows (hive types, statuses, plans), and nothing else: the same
inputs give the same rows.  Every id is explicit (1, 2, 3 ... per table), every
timestamp is derived from the anchor, and each part of the city draws from its own
`random.Random` stream (seeded with the seed and the part's name), so changing how many
users there are does not change the hives.

The city is Berlin (a bounding box over the inner districts, real zip codes per
district, Europe/Berlin) plus a few hives of chains elsewhere (London, Lisbon, New York,
Mumbai: other zones, one with a half-hour offset).  `hive_plans` hands the history
simulator what it needs per hive with sensors.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from modules.mqtt_ingest.codec import (
    CounterReport,
    Event,
    EventReport,
    EventType,
    ReportType,
    encode_counter_report,
    encode_event_report,
    sensor_topic,
)
from modules.users.sentiment import Sentiment

from .history import CAPACITY, START, TIMEOUT, HivePlan, SensorPlan, Window

__all__ = ["City", "Reference", "Table", "build_city", "TABLE_COLUMNS"]

# Columns written per table, in load order (parents before children).
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "account": ("id", "name", "billing_email", "created_at", "updated_at"),
    "app_user": ("id", "firebase_uid", "nickname", "user_role", "created_at", "updated_at"),
    "account_member": ("account_id", "user_id", "member_role", "created_at"),
    "subscription": (
        "id",
        "subscription_type_id",
        "user_id",
        "account_id",
        "status",
        "store",
        "external_ref",
        "started_at",
        "expires_at",
        "cancelled_at",
        "created_at",
    ),
    "payment_transaction": (
        "id",
        "subscription_id",
        "kind",
        "status",
        "amount_cents",
        "currency",
        "provider",
        "provider_ref",
        "period_start",
        "period_end",
        "occurred_at",
        "created_at",
    ),
    "address": (
        "id",
        "street",
        "city",
        "zip",
        "country",
        "latitude",
        "longitude",
        "created_at",
        "updated_at",
    ),
    "hive": (
        "id",
        "account_id",
        "address_id",
        "hive_type_id",
        "status_id",
        "name",
        "description",
        "timezone",
        "capacity",
        "created_at",
        "updated_at",
    ),
    "hive_network": ("id", "hive_id", "kind", "name", "details", "created_at"),
    "hive_image": ("id", "hive_id", "kind", "url", "position", "caption", "created_at"),
    "deal": (
        "id",
        "hive_id",
        "kind",
        "title",
        "description",
        "terms",
        "valid_from",
        "valid_until",
        "created_at",
        "updated_at",
    ),
    "user_hive": ("user_id", "hive_id", "kind", "created_at", "last_seen_at"),
    "user_notification_def": (
        "id",
        "user_id",
        "hive_id",
        "kind",
        "threshold_percent",
        "enabled",
        "last_fired_at",
        "created_at",
        "updated_at",
    ),
    "user_message": (
        "id",
        "user_id",
        "hive_id",
        "direction",
        "kind",
        "content",
        "rating",
        "sentiment",
        "created_at",
        "read_at",
    ),
    "user_analytics": ("id", "user_id", "page_identifier", "action", "data", "created_at"),
    "modem": ("id", "imei", "iccid", "operator", "model", "created_at"),
    "sensor_network_config": (
        "id",
        "name",
        "apn",
        "apn_user",
        "broker_host",
        "broker_port",
        "use_tls",
        "keepalive_s",
        "created_at",
        "updated_at",
    ),
    "sensor_report_config": (
        "id",
        "name",
        "threshold_cm",
        "reporting_interval_min",
        "status_interval_min",
        "event_threshold",
        "created_at",
        "updated_at",
    ),
    "sensor_report_schedule": (
        "id",
        "report_config_id",
        "iso_weekday",
        "starts_at",
        "ends_at",
        "reporting_interval_min",
    ),
    "sensor": (
        "id",
        "external_id",
        "name",
        "firmware",
        "hive_id",
        "modem_id",
        "network_config_id",
        "report_config_id",
        "installed_at",
        "created_at",
        "updated_at",
    ),
    "sensor_config": (
        "id",
        "sensor_id",
        "report_config_id",
        "threshold_cm",
        "reporting_interval_min",
        "status_interval_min",
        "event_threshold",
        "state",
        "created_by",
        "created_at",
        "applied_at",
        "superseded_at",
    ),
    "sensor_status": (
        "sensor_id",
        "started_at",
        "battery_mv",
        "state_flags",
        "discarded_events",
        "csq",
        "firmware_version",
        "configuration_id",
        "received_at",
    ),
    "ingest_reject": (
        "id",
        "topic",
        "payload",
        "reason",
        "detail",
        "sensor_external_id",
        "received_at",
        "replayed_at",
    ),
}

HIVE_TYPES = ("bar", "restaurant", "cafe", "club", "store", "gym", "other")
TYPE_WEIGHTS = (18, 22, 20, 5, 22, 6, 7)
HIVE_STATUSES = ("draft", "active", "temporarily_closed", "closed")
PLANS = ("free", "basic", "premium", "business")

V2_SHARE = 0.12  # hives with one sensor: share on v2 firmware (the rest: legacy v1)
MULTI_DOOR = 250  # stores, clubs, gyms and others from this capacity may have two doors


@dataclass(frozen=True)
class Reference:
    """Ids of the reference rows, by code (looked up in the database)."""

    hive_type: dict[str, int]
    hive_status: dict[str, int]
    plan: dict[str, int]
    plan_price: dict[str, int]


@dataclass
class Table:
    name: str
    columns: tuple[str, ...]
    rows: list[tuple] = field(default_factory=list)


@dataclass
class City:
    tables: dict[str, Table]
    plans: list[HivePlan]  # hives with sensors, in hive id order
    hive_count: int
    sensor_count: int
    v1_sensors: int
    v2_sensors: int
    expiring_deals: int

    def rows(self, name: str) -> list[tuple]:
        return self.tables[name].rows


# ---------------------------------------------------------------------------------------
# Places
# ---------------------------------------------------------------------------------------

BERLIN_BOX = (52.44, 13.25, 52.58, 13.55)  # south, west, north, east
# (district, latitude, longitude, zip codes)
DISTRICTS = (
    ("Mitte", 52.5200, 13.4050, ("10115", "10117", "10119", "10178", "10179")),
    ("Kreuzberg", 52.4970, 13.4110, ("10961", "10967", "10969", "10997", "10999")),
    ("Friedrichshain", 52.5150, 13.4540, ("10243", "10245", "10247", "10249")),
    ("Prenzlauer Berg", 52.5390, 13.4240, ("10405", "10407", "10435", "10437", "10439")),
    ("Neukölln", 52.4810, 13.4350, ("12043", "12045", "12047", "12049", "12051")),
    ("Charlottenburg", 52.5160, 13.3040, ("10585", "10587", "10623", "10625", "10627")),
    ("Schöneberg", 52.4830, 13.3530, ("10777", "10779", "10781", "10783", "10827")),
    ("Wedding", 52.5500, 13.3600, ("13347", "13349", "13351", "13353")),
    ("Moabit", 52.5300, 13.3420, ("10551", "10553", "10555", "10557", "10559")),
    ("Tempelhof", 52.4660, 13.3850, ("12099", "12101", "12103")),
    ("Wilmersdorf", 52.4870, 13.3200, ("10707", "10709", "10711", "10713", "10715")),
    ("Pankow", 52.5690, 13.4020, ("13187", "13189")),
    ("Lichtenberg", 52.5150, 13.4990, ("10365", "10367", "10369")),
    ("Steglitz", 52.4570, 13.3250, ("12157", "12163", "12165", "12167")),
)
DISTRICT_WEIGHTS = (16, 13, 11, 11, 10, 8, 7, 5, 5, 3, 4, 3, 2, 2)
BERLIN_STREETS = (
    "Torstraße",
    "Oranienstraße",
    "Kastanienallee",
    "Sonnenallee",
    "Kantstraße",
    "Bergmannstraße",
    "Warschauer Straße",
    "Schönhauser Allee",
    "Karl-Marx-Straße",
    "Hermannstraße",
    "Friedrichstraße",
    "Kollwitzstraße",
    "Simon-Dach-Straße",
    "Weserstraße",
    "Turmstraße",
    "Müllerstraße",
    "Goltzstraße",
    "Akazienstraße",
    "Boxhagener Straße",
    "Wühlischstraße",
    "Invalidenstraße",
    "Rosenthaler Straße",
    "Alte Schönhauser Straße",
    "Wrangelstraße",
    "Skalitzer Straße",
    "Gneisenaustraße",
    "Pannierstraße",
    "Reuterstraße",
    "Savignyplatz",
    "Schlüterstraße",
    "Pestalozzistraße",
    "Potsdamer Straße",
    "Hauptstraße",
    "Badstraße",
    "Seestraße",
    "Frankfurter Allee",
    "Revaler Straße",
    "Stargarder Straße",
    "Greifswalder Straße",
    "Schloßstraße",
    "Tempelhofer Damm",
    "Breite Straße",
)


@dataclass(frozen=True)
class Elsewhere:
    city: str
    country: str
    timezone: str
    latitude: float
    longitude: float
    zips: tuple[str, ...]
    streets: tuple[str, ...]


ELSEWHERE = (
    Elsewhere(
        "London",
        "GB",
        "Europe/London",
        51.515,
        -0.090,
        ("EC2A 3AY", "E1 6AN", "N1 9GU"),
        ("Shoreditch High Street", "Brick Lane", "Upper Street"),
    ),
    Elsewhere(
        "Lisboa",
        "PT",
        "Europe/Lisbon",
        38.712,
        -9.140,
        ("1100-148", "1200-109"),
        ("Rua Augusta", "Rua da Rosa", "Rua do Norte"),
    ),
    Elsewhere(
        "New York",
        "US",
        "America/New_York",
        40.722,
        -73.990,
        ("10002", "10003", "11211"),
        ("Orchard Street", "Bedford Avenue", "St Marks Place"),
    ),
    Elsewhere(
        "Mumbai",
        "IN",
        "Asia/Kolkata",
        19.060,
        72.835,
        ("400050", "400001"),
        ("Hill Road", "Linking Road", "Colaba Causeway"),
    ),
)
ELSEWHERE_SHARE = 0.03

WORDS = (
    "Spree",
    "Kiez",
    "Linden",
    "Mauer",
    "Tiergarten",
    "Kastanie",
    "Bär",
    "Hafen",
    "Ostkreuz",
    "Morgenrot",
    "Zuckerfee",
    "Nachtfalter",
    "Goldelse",
    "Rosenthal",
    "Weltempfänger",
    "Kollwitz",
    "Ufer",
    "Fernsehturm",
    "Luise",
    "Brunnen",
    "Pfefferberg",
    "Rixdorf",
    "Wolke",
    "Eisvogel",
    "Kranich",
    "Fuchs",
    "Dachs",
    "Marzipan",
    "Mokka",
    "Holunder",
    "Lindwurm",
    "Sternschnuppe",
    "Hinterhof",
    "Laterne",
    "Zollpackhof",
    "Kiefer",
    "Möwe",
    "Ampelmann",
    "Bruno",
    "Emma",
    "Oskar",
    "Frieda",
    "Paul",
    "Greta",
    "Anton",
    "Mila",
    "Nord",
    "Süd",
    "Blau",
    "Grün",
    "Kupfer",
    "Silber",
    "Zimt",
    "Vanille",
    "Hopfen",
    "Malz",
    "Kirsch",
)
NAME_PATTERNS = {
    "cafe": ("Café {w}", "{w} Kaffee", "{w} Coffee", "Kaffeehaus {w}", "{w} Rösterei"),
    "bar": ("{w} Bar", "Bar {w}", "{w} Lounge", "Kneipe {w}", "{w}stube", "Weinbar {w}"),
    "restaurant": (
        "Trattoria {w}",
        "{w} Kitchen",
        "Restaurant {w}",
        "Bistro {w}",
        "{w} Imbiss",
        "Gasthaus {w}",
        "Ramen {w}",
    ),
    "club": ("Club {w}", "{w}", "{w} Klub", "Tresor {w}", "{w} Halle"),
    "store": (
        "{w} Store",
        "Späti {w}",
        "Buchhandlung {w}",
        "{w} Concept Store",
        "Plattenladen {w}",
        "{w} Markt",
    ),
    "gym": ("{w} Fitness", "{w} Gym", "Kletterhalle {w}", "{w} Yoga", "Boxclub {w}"),
    "other": ("Galerie {w}", "Museum {w}", "Bibliothek {w}", "{w} Coworking", "Kino {w}"),
}
DESCRIPTIONS = {
    "cafe": "Coffee, cake and a window seat. Busy before work and around lunch.",
    "bar": "Drinks and music in the evening; crowded late on weekends.",
    "restaurant": "Lunch and dinner; book ahead for Friday and Saturday nights.",
    "club": "Electronic music from Thursday night to Sunday morning.",
    "store": "Open Monday to Saturday; quietest in the morning.",
    "gym": "Training floor and classes; busiest before and after work.",
    "other": "Exhibitions, events and a quiet place to work.",
}
LEGAL = ("GmbH", "UG", "GbR", "e.K.", "OHG")
CHAINS = (
    ("Einstein Kaffee", "cafe"),
    ("Späti Brothers", "store"),
    ("KraftWerk Fitness", "gym"),
    ("Burger Bande", "restaurant"),
    ("Bücherbogen", "store"),
    ("Zapfhahn", "bar"),
)
FIRST_NAMES = (
    "alex",
    "mia",
    "leon",
    "emma",
    "noah",
    "lina",
    "finn",
    "ella",
    "paul",
    "clara",
    "ben",
    "lea",
    "jonas",
    "marie",
    "elias",
    "nora",
    "felix",
    "ida",
    "max",
    "zoe",
    "yusuf",
    "aylin",
    "mateo",
    "sofia",
    "kai",
    "lotta",
    "omar",
    "hanna",
    "timo",
    "jana",
)
ALNUM = string.ascii_letters + string.digits


def _luhn(digits: str) -> str:
    """`digits` with its Luhn check digit appended (IMEI, ICCID)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return digits + str((10 - total % 10) % 10)


def _slug(text: str) -> str:
    table = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "é": "e", "Ä": "ae"})
    text = text.translate(table).lower()
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").replace("--", "-")


def _add_months(moment: datetime, months: int) -> datetime:
    month0 = moment.month - 1 + months
    year, month = moment.year + month0 // 12, month0 % 12 + 1
    days = [
        31,
        29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28,
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ][month - 1]
    return moment.replace(year=year, month=month, day=min(moment.day, days))


# ---------------------------------------------------------------------------------------
# Building the city
# ---------------------------------------------------------------------------------------


class _Builder:
    def __init__(
        self, seed: int, hives: int, users: int, anchor: datetime, window: Window, ref: Reference
    ) -> None:
        self.seed, self.hive_total, self.user_total = seed, hives, users
        self.anchor, self.window, self.ref = anchor, window, ref
        self.window_start = datetime.fromtimestamp(window.start, UTC)
        self.tables = {name: Table(name, cols) for name, cols in TABLE_COLUMNS.items()}
        self.plans: list[HivePlan] = []
        # per hive: (type, capacity, status, timezone, name, listed, popularity)
        self.hives: list[dict] = []
        self.sensor_rows = 0
        self.expiring = 0

    def rng(self, part: str) -> random.Random:
        return random.Random(f"bizzyd-demo/{self.seed}/{part}")

    def add(self, table: str, *row: object) -> None:
        self.tables[table].rows.append(row)

    def ago(self, rng: random.Random, low_days: float, high_days: float) -> datetime:
        """A whole-second moment between `high_days` and `low_days` before the anchor."""
        seconds = int(rng.uniform(low_days, high_days) * 86400)
        return self.anchor - timedelta(seconds=seconds)

    # -- accounts, addresses, hives ------------------------------------------------------

    def build_hives(self) -> None:
        rng = self.rng("hives")
        hive_id = 0
        chains = list(CHAINS)
        rng.shuffle(chains)
        account_id = 0
        while hive_id < self.hive_total:
            account_id += 1
            left = self.hive_total - hive_id
            roll = rng.random()
            chain = None
            if roll < 0.03 and chains and left >= 5:
                chain = chains.pop()
                size = min(left, rng.randint(5, max(5, min(25, self.hive_total // 40))))
            elif roll < 0.25:
                size = min(left, rng.randint(2, 3))
            else:
                size = 1
            created = self.ago(rng, 400, 1500)
            if chain:
                name = f"{chain[0]} GmbH"
            else:
                name = f"{rng.choice(WORDS)} {rng.choice(('Gastro', 'Handel', 'Kultur', 'Betriebs', 'Kiez'))} {rng.choice(LEGAL)}"  # noqa: E501
            email = None if rng.random() < 0.1 else f"billing@{_slug(name)}-{account_id}.example"
            self.add(
                "account",
                account_id,
                name,
                email,
                created,
                created + timedelta(days=rng.randint(0, 300)),
            )
            kind = chain[1] if chain else None
            for branch in range(size):
                hive_id += 1
                self._hive(rng, hive_id, account_id, created, chain, kind, branch)

    def _hive(
        self,
        rng: random.Random,
        hive_id: int,
        account_id: int,
        account_created: datetime,
        chain: tuple[str, str] | None,
        kind: str | None,
        branch: int,
    ) -> None:
        kind = kind or rng.choices(HIVE_TYPES, TYPE_WEIGHTS)[0]
        low, high, mode = CAPACITY[kind]
        capacity = max(low, int(rng.triangular(low, high, mode)))
        elsewhere = rng.random() < ELSEWHERE_SHARE or (chain is not None and branch == 4)
        if elsewhere:
            place = rng.choice(ELSEWHERE)
            lat = place.latitude + rng.gauss(0, 0.012)
            lon = place.longitude + rng.gauss(0, 0.018)
            street, city, zip_code = rng.choice(place.streets), place.city, rng.choice(place.zips)
            country, tz, district = place.country, place.timezone, place.city
        else:
            district, d_lat, d_lon, zips = rng.choices(DISTRICTS, DISTRICT_WEIGHTS)[0]
            south, west, north, east = BERLIN_BOX
            lat = min(max(d_lat + rng.gauss(0, 0.008), south), north)
            lon = min(max(d_lon + rng.gauss(0, 0.012), west), east)
            street, city, zip_code = rng.choice(BERLIN_STREETS), "Berlin", rng.choice(zips)
            country, tz = "DE", "Europe/Berlin"
        number = f"{rng.randint(1, 180)}{rng.choice(('', '', '', 'a', 'b'))}"
        created = account_created + timedelta(days=rng.randint(0, 300))
        created = min(created, self.window_start - timedelta(days=30))
        self.add(
            "address",
            hive_id,
            f"{street} {number}",
            city,
            zip_code,
            country,
            round(lat, 6),
            round(lon, 6),
            created,
            created,
        )
        if chain:
            name = f"{chain[0]} {district}" + (f" {branch + 1}" if branch >= 3 else "")
        else:
            name = rng.choice(NAME_PATTERNS[kind]).format(w=rng.choice(WORDS))
        roll = rng.random()
        status = "draft" if roll < 0.03 else "temporarily_closed" if roll < 0.06 else "active"
        if hive_id == 1:
            status = "active"  # a small city still has something to show
        self.add(
            "hive",
            hive_id,
            account_id,
            hive_id,
            self.ref.hive_type[kind],
            self.ref.hive_status[status],
            name,
            DESCRIPTIONS[kind],
            tz,
            capacity,
            created,
            created + timedelta(days=rng.randint(0, 25)),
        )
        self.hives.append(
            {
                "id": hive_id,
                "kind": kind,
                "capacity": capacity,
                "status": status,
                "tz": tz,
                "name": name,
                "created": created,
                "listed": status != "draft",
                "popularity": min(max(rng.lognormvariate(0, 0.3), 0.4), 2.0),
            }
        )

    def build_hive_extras(self) -> None:
        rng = self.rng("hive-extras")
        image_id = network_id = deal_id = 0
        with_deals = 0
        for hive in self.hives:
            hid, created = hive["id"], hive["created"]
            for position in range(1 + rng.choice((0, 1, 1, 2, 2, 3, 4))):
                image_id += 1
                kind = "cover" if position == 0 else "secondary"
                url = f"https://images.bizzy.example/hives/{hid}/{rng.getrandbits(48):012x}.jpg"
                caption = (
                    None
                    if kind == "cover"
                    else rng.choice((None, "Inside", "Terrace", "At night", "The counter"))
                )
                self.add(
                    "hive_image",
                    image_id,
                    hid,
                    kind,
                    url,
                    position,
                    caption,
                    created + timedelta(hours=rng.randint(1, 2000)),
                )
            if hive["status"] != "draft":
                network_id += 1
                operator = rng.choice(("Telekom.de", "Vodafone.de", "o2 - de"))
                details = json.dumps({"band": "LTE-M", "signal": rng.choice(("good", "fair"))})
                self.add("hive_network", network_id, hid, "gprs", operator, details, created)
                if rng.random() < 0.4:
                    network_id += 1
                    ssid = f"{_slug(hive['name'])[:20]}-guest"
                    self.add(
                        "hive_network",
                        network_id,
                        hid,
                        "wifi",
                        ssid,
                        json.dumps({"security": "wpa2"}),
                        created,
                    )
            if hive["status"] != "active" or rng.random() > 0.35:
                continue
            with_deals += 1
            for n in range(rng.choice((1, 1, 2, 3))):
                deal_id += 1
                self._deal(rng, deal_id, hive, force_soon=(with_deals % 10 == 1 and n == 0))
        if self.expiring == 0 and self.hives:  # always something that expires soon
            deal_id += 1
            self._deal(rng, deal_id, self.hives[0], force_soon=True)

    def _deal(self, rng: random.Random, deal_id: int, hive: dict, force_soon: bool) -> None:
        anchor = self.anchor
        kinds = {
            "bar": ("happy_hour", "happy_hour", "event", "discount"),
            "club": ("event", "event", "promotion"),
            "restaurant": ("discount", "promotion", "happy_hour"),
            "cafe": ("promotion", "discount"),
            "store": ("discount", "discount", "promotion"),
            "gym": ("promotion", "discount"),
            "other": ("event", "promotion"),
        }[hive["kind"]]
        kind = rng.choice(kinds)
        title = {
            "happy_hour": rng.choice(
                ("Happy Hour: cocktails 2 for 1", "Half-price draught 17-19h")
            ),
            "event": rng.choice(("Live DJ night", "Quiz night", "Open air weekend", "Vernissage")),
            "discount": rng.choice(
                ("10 % off everything", "Student discount 15 %", "Second item half price")
            ),
            "promotion": rng.choice(
                (
                    "Free cookie with every coffee",
                    "Lunch special 9,90 EUR",
                    "Free trial week",
                    "Loyalty card: 10th visit free",
                )
            ),
        }[kind]
        roll = 0.3 if force_soon else rng.random()
        if roll < 0.2:  # already over
            start = anchor - timedelta(days=rng.randint(10, 30))
            until = anchor - timedelta(hours=rng.randint(2, 200))
        elif roll < 0.4:  # expires within the next 48 hours
            start = anchor - timedelta(days=rng.randint(1, 10))
            until = anchor + timedelta(hours=rng.randint(26, 47), minutes=rng.choice((0, 30)))
            self.expiring += 1
        elif roll < 0.85:  # running
            start = anchor - timedelta(days=rng.randint(1, 20))
            until = anchor + timedelta(days=rng.randint(3, 40))
        else:  # announced
            start = anchor + timedelta(days=rng.randint(2, 7))
            until = start + timedelta(days=rng.randint(1, 14))
        created = start - timedelta(days=rng.randint(1, 5))
        terms = rng.choice((None, "While stocks last.", "Not combinable with other offers."))
        self.add(
            "deal", deal_id, hive["id"], kind, title, None, terms, start, until, created, created
        )

    # -- sensors -------------------------------------------------------------------------

    def build_sensor_profiles(self) -> None:
        created = self.anchor - timedelta(days=800)
        networks = (
            ("telekom-m2m", "internet.m2m", None, "mqtt.bizzy.example", 8883, True, 120),
            ("vodafone-iot", "iot.vodafone.de", "iot", "mqtt.bizzy.example", 8883, True, 120),
            ("o2-iot", "internet.telefonica.de", None, "mqtt.bizzy.example", 8883, True, 120),
            (
                "legacy-plain",
                "internet.t-mobile",
                "t-mobile",
                "mqtt-legacy.bizzy.example",
                1883,
                False,
                300,
            ),
        )
        for i, row in enumerate(networks, 1):
            self.add("sensor_network_config", i, *row, created, created)
        self.report_profiles = {
            # name: (threshold cm, reporting min, status min, events per report)
            "default": (180, 30, 60, 5),
            "busy-door": (200, 15, 60, 10),
            "night-venue": (180, 30, 120, 5),
            "daytime-shop": (150, 30, 120, 5),
            "wide-entrance": (250, 20, 60, 8),
        }
        self.profile_id = {}
        for i, (name, values) in enumerate(self.report_profiles.items(), 1):
            self.profile_id[name] = i
            self.add("sensor_report_config", i, name, *values, created, created)
        windows = {  # profile: (iso weekdays, starts, ends, reporting minutes)
            "night-venue": [
                ((5, 6), time(20), time(23, 59, 59), 10),
                ((6, 7), time(0), time(5), 10),
            ],
            "daytime-shop": [((1, 2, 3, 4, 5, 6), time(10), time(20), 10)],
            "busy-door": [
                ((1, 2, 3, 4, 5), time(6), time(9), 5),
                ((1, 2, 3, 4, 5), time(17), time(21), 5),
            ],
            "wide-entrance": [((1, 2, 3, 4, 5, 6, 7), time(11), time(22), 10)],
        }
        schedule_id = 0
        for name, rows in windows.items():
            for days, starts, ends, minutes in rows:
                for day in days:
                    schedule_id += 1
                    self.add(
                        "sensor_report_schedule",
                        schedule_id,
                        self.profile_id[name],
                        day,
                        starts,
                        ends,
                        minutes,
                    )

    def _profile_for(self, kind: str, capacity: int) -> str:
        if capacity >= 250:
            return "wide-entrance"
        return {
            "bar": "night-venue",
            "club": "night-venue",
            "store": "daytime-shop",
            "gym": "busy-door",
        }.get(kind, "default")

    def build_sensors(self) -> None:
        rng = self.rng("sensors")
        window = self.window
        sensor_id = 0
        self.v1 = self.v2 = 0
        self.v2_sensors: list[tuple[int, str, datetime]] = []  # (id, profile, installed)
        for hive in self.hives:
            if hive["status"] == "draft":
                continue
            kind, capacity = hive["kind"], hive["capacity"]
            doors = 1
            if capacity >= MULTI_DOOR and kind in ("store", "club", "gym", "other"):
                doors = 2 if rng.random() < 0.4 else 1
            firmware = "v2" if doors > 1 or rng.random() < V2_SHARE else "v1"
            profile = self._profile_for(kind, capacity)
            threshold, reporting, _, per_report = self.report_profiles[profile]
            main_share = rng.uniform(0.6, 0.75)
            installed = self.ago(rng, 30 + (window.end - window.start) / 86400, 700)
            installed = max(installed, hive["created"])
            plans = []
            for door in range(doors):
                sensor_id += 1
                share = 1.0 if doors == 1 else main_share if door == 0 else 1 - main_share
                modem_id = sensor_id
                imei = self._modem(rng, modem_id, installed)
                label = ("Entrance", "Back door")[door] if doors > 1 else "Entrance"
                external = imei if firmware == "v1" else f"bz2-{sensor_id:06d}"
                network = 4 if firmware == "v1" and rng.random() < 0.5 else rng.randint(1, 3)
                self.add(
                    "sensor",
                    sensor_id,
                    external,
                    f"{hive['name'][:40]} · {label}",
                    firmware,
                    hive["id"],
                    modem_id,
                    network,
                    self.profile_id[profile],
                    installed,
                    installed - timedelta(days=rng.randint(1, 60)),
                    installed,
                )
                if firmware == "v1":
                    self.v1 += 1
                    plans.append(self._v1_plan(rng, sensor_id, share, hive))
                else:
                    self.v2 += 1
                    self.v2_sensors.append((sensor_id, profile, installed))
                    plans.append(
                        SensorPlan(
                            sensor_id,
                            "v2",
                            share,
                            counter=rng.randrange(256),
                            event_threshold=per_report,
                            flush_s=reporting * 60,
                            status_phase=rng.randrange(6 * 3600),
                            distance_mm=threshold * 10,
                        )
                    )
            self.plans.append(
                HivePlan(
                    hive["id"],
                    kind,
                    capacity,
                    hive["tz"],
                    rng.getrandbits(63),
                    popularity=hive["popularity"],
                    open=hive["status"] == "active",
                    sensors=tuple(plans),
                )
            )
        # spares in stock: no hive; most with a modem already fitted
        for _ in range(max(1, sensor_id // 50)):
            sensor_id += 1
            created = self.ago(rng, 10, 200)
            modem_id = None
            if rng.random() < 0.7:
                modem_id = sensor_id
                self._modem(rng, modem_id, created)
            firmware = "v2"
            self.add(
                "sensor",
                sensor_id,
                f"bz2-{sensor_id:06d}",
                "In stock",
                firmware,
                None,
                modem_id,
                1,
                self.profile_id["default"],
                None,
                created,
                created,
            )
        self.sensor_rows = sensor_id

    def _v1_plan(self, rng: random.Random, sensor_id: int, share: float, hive: dict) -> SensorPlan:
        roll = rng.random()
        if roll < 0.05:
            start_in = start_out = 0  # started just before the window: a restart report
        elif roll < 0.15:
            start_in = 65536 - rng.randint(50, 1500)  # wraps during the week
            start_out = start_in - rng.randint(0, 40)
        else:
            start_in = rng.randrange(100, 60000)
            start_out = start_in - rng.randint(0, 40)
        restart_at = None
        if rng.random() < 0.05:  # a power cut: the device restarts one night
            day = rng.randrange(1, max(2, (self.window.end - self.window.start) // 86400))
            local = datetime.fromtimestamp(self.window.start, UTC).date() + timedelta(days=day)
            moment = datetime(
                local.year,
                local.month,
                local.day,
                4,
                rng.randrange(60),
                tzinfo=ZoneInfo(hive["tz"]),
            )
            restart_at = int(moment.timestamp())
        return SensorPlan(
            sensor_id,
            "v1",
            share,
            start_in=start_in,
            start_out=start_out % 65536,
            timer_phase=rng.randrange(1800),
            restart_at=restart_at,
            restart_type=START if rng.random() < 0.6 else TIMEOUT,
        )

    def _modem(self, rng: random.Random, modem_id: int, created: datetime) -> str:
        tac = rng.choice(("86790504", "86681504", "35270011", "35935711"))
        serial = (modem_id * 7919 + 104729) % 1_000_000
        imei = _luhn(f"{tac}{serial:06d}")
        iccid = _luhn(f"894902{rng.randint(0, 9)}{(modem_id * 104723 + 7) % 10**11:011d}")
        operator, model = rng.choice(
            (
                ("Telekom", "Quectel BG95-M3"),
                ("Vodafone", "Quectel BG96"),
                ("Telefónica", "SIMCom SIM7080G"),
                ("Telekom", "u-blox SARA-R410M"),
            )
        )
        self.add("modem", modem_id, imei, iccid, operator, model, created - timedelta(days=3))
        return imei

    def build_sensor_configs(self, operators: list[int]) -> None:
        rng = self.rng("sensor-configs")
        config_id = 0
        anchor = self.anchor
        for sensor_id, profile, installed in self.v2_sensors:
            values = self.report_profiles[profile]
            by = rng.choice(operators) if operators and rng.random() < 0.5 else None
            if rng.random() < 0.3:  # an older configuration, replaced since
                config_id += 1
                old = (values[0] - 20, 30, 60, 5)
                self.add(
                    "sensor_config",
                    config_id,
                    sensor_id,
                    self.profile_id["default"],
                    *old,
                    "superseded",
                    by,
                    installed,
                    installed + timedelta(minutes=7),
                    installed + timedelta(days=rng.randint(3, 20)),
                )
                created = installed + timedelta(days=rng.randint(3, 20), minutes=-5)
            else:
                created = installed
            config_id += 1
            applied_id = config_id
            self.add(
                "sensor_config",
                config_id,
                sensor_id,
                self.profile_id[profile],
                *values,
                "applied",
                by,
                created,
                created + timedelta(minutes=rng.randint(1, 60)),
                None,
            )
            if rng.random() < 0.1:  # a newer one the sensor has not confirmed yet
                config_id += 1
                pending = (values[0], max(5, values[1] - 10), values[2], values[3])
                self.add(
                    "sensor_config",
                    config_id,
                    sensor_id,
                    self.profile_id[profile],
                    *pending,
                    "pending",
                    by,
                    anchor - timedelta(hours=rng.randint(1, 20)),
                    None,
                    None,
                )
            status_every = values[2] * 60
            received = anchor - timedelta(seconds=rng.randrange(1, status_every))
            started = installed + timedelta(days=rng.randint(0, 20), seconds=rng.randrange(86400))
            started = min(started, self.window_start - timedelta(hours=1))
            csq = 99 if rng.random() < 0.02 else rng.randint(8, 31)
            firmware = 2 << 24 | rng.randint(0, 3) << 16 | rng.randint(0, 12)
            self.add(
                "sensor_status",
                sensor_id,
                started,
                rng.randint(3450, 4150),
                rng.choice((0, 0, 0, 1, 4)),
                rng.choice((0, 0, 0, 1, 2, 7)),
                csq,
                firmware,
                applied_id,
                received,
            )

    def build_rejects(self) -> None:
        rng = self.rng("rejects")
        sensors = [row for row in self.tables["sensor"].rows if row[4] is not None]
        start = self.window.start
        span = self.window.end - self.window.start
        for reject_id in range(1, 4 + self.hive_total // 100 + 1):
            when = datetime.fromtimestamp(start + rng.randrange(span), UTC)
            local = when.replace(tzinfo=None, microsecond=0)
            reason = rng.choice(("unknown_sensor", "bad_marker", "bad_length", "bad_date"))
            sensor = rng.choice(sensors) if sensors else None
            external = sensor[1] if sensor else "860000000000000"
            report = CounterReport(
                rng.randint(1, 900), rng.randint(1, 900), local, ReportType.COUNT
            )
            payload = encode_counter_report(report)
            kind, detail = "counters", None
            if reason == "unknown_sensor":
                external = _luhn(f"35999999{rng.randrange(10**6):06d}")
                detail = f"no sensor {external}"
            elif reason == "bad_marker":
                payload = payload[:15] + b"\xfe" + payload[16:]
                detail = "counter report: marker = 254"
            elif reason == "bad_length":
                kind = "events"
                event = Event(
                    EventType.ENTRY, 1500, rng.randrange(256), when.replace(microsecond=0)
                )
                payload = encode_event_report(EventReport((event,)))[:-3]  # truncated on the way
                detail = (
                    f"event report: {len(payload)} bytes, expected a multiple of 8 from 8 to 512"
                )
            else:
                payload = payload[:9] + bytes([2, 30]) + payload[11:]  # 30 February
                detail = "counter report: day is out of range for month"
            self.add(
                "ingest_reject",
                reject_id,
                sensor_topic(external, kind),
                payload,
                reason,
                detail,
                external,
                when,
                None,
            )

    # -- users ---------------------------------------------------------------------------

    def build_users(self) -> list[int]:
        rng = self.rng("users")
        seen: set[str] = set()
        operators = []
        for user_id in range(1, self.user_total + 1):
            uid = "".join(rng.choices(ALNUM, k=28))
            while uid in seen:
                uid = "".join(rng.choices(ALNUM, k=28))
            seen.add(uid)
            nickname = None
            if rng.random() < 0.55:
                nickname = f"{rng.choice(FIRST_NAMES)}{rng.choice(('', '', rng.randint(1, 99)))}"
            role = "user"
            if user_id <= max(1, min(5, self.user_total // 200)):
                role = "operator"
                operators.append(user_id)
            created = self.ago(rng, 1, 900)
            updated = created
            if rng.random() < 0.3:  # changed since
                updated = min(created + timedelta(days=rng.randint(1, 30)), self.anchor)
            self.add("app_user", user_id, uid, nickname, role, created, updated)
        return operators

    def build_memberships(self) -> None:
        rng = self.rng("members")
        users = self.user_total
        for account in self.tables["account"].rows:
            account_id, created = account[0], account[3]
            people = rng.sample(range(1, users + 1), k=min(users, rng.choice((1, 1, 1, 2, 3))))
            for i, user_id in enumerate(people):
                role = "admin" if i == 0 else rng.choice(("manager", "viewer"))
                self.add(
                    "account_member",
                    account_id,
                    user_id,
                    role,
                    created + timedelta(days=i * rng.randint(1, 90)),
                )

    def build_subscriptions(self) -> None:
        rng = self.rng("subscriptions")
        anchor = self.anchor
        sub_id = pay_id = 0
        refs = {"apple": 0, "google": 0, "stripe": 0, "manual": 0}

        def ref(store: str) -> str:
            refs[store] += 1
            n = refs[store]
            return {
                "apple": f"{200000000000000 + n * 7919}",
                "google": f"GPA.{3300 + n % 97:04d}-{n:06d}-{rng.randrange(10**5):05d}",
                "stripe": f"sub_{''.join(rng.choices(ALNUM, k=14))}{n}",
                "manual": f"manual-{n}",
            }[store]

        def subscribe(plan: str, user_id: int | None, account_id: int | None, store: str) -> None:
            nonlocal sub_id, pay_id
            sub_id += 1
            price = self.ref.plan_price[plan]
            started = self.ago(rng, 2, 400).replace(microsecond=0)
            if price == 0:
                self.add(
                    "subscription",
                    sub_id,
                    self.ref.plan[plan],
                    user_id,
                    account_id,
                    "active",
                    "manual",
                    None,
                    started,
                    None,
                    None,
                    started,
                )
                return
            months = 0  # whole months from the start to the anchor
            while _add_months(started, months + 1) <= anchor:
                months += 1
            roll = rng.random()
            status = "active" if roll < 0.8 else "cancelled" if roll < 0.9 else "expired"
            if status == "expired" and months == 0:
                status = "active"  # too young to have run out
            # expired: the last period paid for ended before the anchor; else after it
            paid = max(1, months - rng.randint(0, 2)) if status == "expired" else months + 1
            expires = _add_months(started, paid)
            cancelled = None
            if status == "cancelled":
                cancelled = started + (min(expires, anchor) - started) * rng.random()
                cancelled = cancelled.replace(microsecond=0)
            self.add(
                "subscription",
                sub_id,
                self.ref.plan[plan],
                user_id,
                account_id,
                status,
                store,
                ref(store),
                started,
                expires,
                cancelled,
                started,
            )
            provider_ref = f"{store}-pay-{sub_id}"
            for period in range(paid):
                pay_id += 1
                begins, ends = _add_months(started, period), _add_months(started, period + 1)
                self.add(
                    "payment_transaction",
                    pay_id,
                    sub_id,
                    "purchase" if period == 0 else "renewal",
                    "succeeded",
                    price,
                    "EUR",
                    store,
                    f"{provider_ref}-{period}",
                    begins,
                    ends,
                    begins,
                    begins,
                )
            if status == "expired" and rng.random() < 0.5:
                pay_id += 1
                self.add(
                    "payment_transaction",
                    pay_id,
                    sub_id,
                    "renewal",
                    "failed",
                    price,
                    "EUR",
                    store,
                    f"{provider_ref}-failed",
                    expires,
                    _add_months(expires, 1),
                    expires,
                    expires,
                )

        for user_id in range(1, self.user_total + 1):
            roll = rng.random()
            plan = "free" if roll < 0.62 else "basic" if roll < 0.84 else "premium"
            store = rng.choice(("apple", "google", "google", "stripe"))
            subscribe(plan, user_id, None, store)
        for account in self.tables["account"].rows:
            if rng.random() < 0.55:
                subscribe("business", None, account[0], "stripe")

    def build_user_links(self) -> None:
        rng = self.rng("user-links")
        anchor = self.anchor
        listed = [h for h in self.hives if h["listed"]]
        analyser = Sentiment()
        scores = {text: analyser.score(text) for text, _ in FEEDBACK}
        if not listed:
            return
        weights = [h["popularity"] * (1 + h["capacity"] / 200) for h in listed]
        cum, total = [], 0.0
        for w in weights:
            total += w
            cum.append(total)
        notif_id = msg_id = event_id = 0
        pages = ("home", "map", "search", "hive_detail", "favourites", "deals", "settings")
        for user_id in range(1, self.user_total + 1):
            favourites = list(
                dict.fromkeys(
                    h["id"]
                    for h in rng.choices(listed, cum_weights=cum, k=rng.choice((0, 1, 2, 3, 5, 8)))
                )
            )
            recents = list(
                dict.fromkeys(
                    h["id"]
                    for h in rng.choices(listed, cum_weights=cum, k=rng.choice((0, 1, 3, 6, 10)))
                )
            )
            for hive_id in favourites:
                created = self.ago(rng, 2, 300)
                seen = created + (anchor - created) * rng.random()
                self.add(
                    "user_hive", user_id, hive_id, "favourite", created, seen.replace(microsecond=0)
                )
            for hive_id in recents:
                seen = self.ago(rng, 0.01, 14)
                self.add("user_hive", user_id, hive_id, "recent", seen, seen)
            created = self.ago(rng, 1, 200)
            if favourites and rng.random() < 0.3:
                notif_id += 1
                self.add(
                    "user_notification_def",
                    notif_id,
                    user_id,
                    favourites[0],
                    "occupancy_below",
                    rng.choice((30, 40, 50, 60)),
                    True,
                    self.ago(rng, 0.1, 6) if rng.random() < 0.6 else None,
                    created,
                    created,
                )
            if favourites and rng.random() < 0.15:
                notif_id += 1
                self.add(
                    "user_notification_def",
                    notif_id,
                    user_id,
                    favourites[-1],
                    "occupancy_above",
                    rng.choice((80, 90, 95)),
                    rng.random() < 0.9,
                    None,
                    created,
                    created,
                )
            for kind, share in (("new_deal", 0.25), ("deal_expiring", 0.1)):
                if rng.random() < share:
                    notif_id += 1
                    self.add(
                        "user_notification_def",
                        notif_id,
                        user_id,
                        None,
                        kind,
                        None,
                        True,
                        None,
                        created,
                        created,
                    )
            if rng.random() < 0.15:
                msg_id += 1
                hive_id = (favourites or recents or [None])[0]
                text, rating = rng.choice(FEEDBACK)
                sent = self.ago(rng, 0.5, 60)
                self.add(
                    "user_message",
                    msg_id,
                    user_id,
                    hive_id,
                    "from_user",
                    "feedback" if hive_id else "support",
                    text,
                    rating if hive_id and rng.random() < 0.8 else None,
                    scores[text],
                    sent,
                    None,
                )
            if rng.random() < 0.05:
                msg_id += 1
                sent = self.ago(rng, 0.5, 30)
                read = sent + timedelta(hours=rng.randint(1, 48)) if rng.random() < 0.6 else None
                if read is not None and read > anchor:
                    read = None
                self.add(
                    "user_message",
                    msg_id,
                    user_id,
                    None,
                    "to_user",
                    "notice",
                    "Your subscription renews soon.",
                    None,
                    None,
                    sent,
                    read,
                )
            for _ in range(rng.choice((0, 0, 1, 2, 4, 8))):
                event_id += 1
                page, action, data = _event(rng, pages, listed, recents)
                self.add(
                    "user_analytics",
                    event_id,
                    user_id,
                    page,
                    action,
                    json.dumps(data),
                    self.ago(rng, 0.01, 30),
                )


# (text, the rating its author would give); scored once with VADER (modules.users)
FEEDBACK = (
    ("Great place, but the app said it was empty and it was full.", 3),
    ("Love the live occupancy!", 5),
    ("Opening hours are wrong.", 2),
    ("Please add more pictures.", 4),
    ("Friendly staff and great music, we will come back.", 5),
    ("Way too crowded and the service was slow.", 2),
    ("Dirty tables and rude bartender. Terrible.", 1),
    ("Nice terrace, a bit expensive.", 4),
    ("We came on a Tuesday evening.", 3),
)


def _event(rng: random.Random, pages: tuple[str, ...], listed: list[dict],
           recents: list[int]) -> tuple[str, str, dict]:
    """(page, action, data) of one app event, as the app sends them to POST /v1/events
    (hive_viewed / deal_opened name the hive, search_made the hives it showed)."""
    page = rng.choice(pages)
    if page == "hive_detail" and recents:
        return page, "hive_viewed", {"hive_id": rng.choice(recents)}
    if page == "deals" and recents:
        return page, "deal_opened", {"hive_id": rng.choice(recents)}
    if page in ("search", "map") and listed:
        shown = rng.sample(listed, min(len(listed), rng.randint(3, 10)))
        return page, "search_made", {"hive_ids": [h["id"] for h in shown]}
    return page, "screen_viewed", {}


def build_city(
    seed: int, hives: int, users: int, anchor: datetime, window: Window, ref: Reference
) -> City:
    """Every row of the demo city except the sensor history."""
    b = _Builder(seed, hives, users, anchor, window, ref)
    b.build_hives()
    b.build_hive_extras()
    b.build_sensor_profiles()
    b.build_sensors()
    operators = b.build_users()
    b.build_memberships()
    b.build_subscriptions()
    b.build_user_links()
    b.build_sensor_configs(operators)
    b.build_rejects()
    return City(
        tables=b.tables,
        plans=b.plans,
        hive_count=len(b.hives),
        sensor_count=b.sensor_rows,
        v1_sensors=b.v1,
        v2_sensors=b.v2,
        expiring_deals=b.expiring,
    )


def months_between(first: date, last: date) -> int:
    """Number of calendar months from `first`'s month to `last`'s month, both included."""
    return (last.year - first.year) * 12 + last.month - first.month + 1
